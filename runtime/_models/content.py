"""Complexity learned from content: P(right) per pool from the text of a sub-task's items.

What makes a sub-task hard for a model is in its content, not in its instruction's keywords.
This module predicts, per pool, the chance that each *item* of a prompt is answered right:

- **Items.** A prompt of numbered lines (``3: <record>``, what chunk-and-label programs send)
  has one item per line; any other prompt is one item (its first 2,000 characters).
- **Features.** Hashed word unigrams and bigrams of the item (``DIMS`` buckets, CRC32: stable
  across processes and Python versions). No vocabulary to ship, nothing to download.
- **Model.** Per pool, a logistic regression (scikit-learn, imported only to fit) of "this
  pool's answer agrees with the reference pool's" on those features. Why this class: it is
  what routers of this kind use first (RouteLLM's matrix-factorisation and BERT routers beat
  it only with large preference data), it is calibrated by construction (log loss), it fits
  in well under a second on thousands of labels on two cores, and a decision is a sparse dot
  product per item (tens of microseconds), where an embedding model would need a forward pass
  per item and a download. Measured on held-out question kinds and seeds in ``bench/hetero.py``.
- **Labels without a person.** A label is the *agreement* of a pool's answer with the
  reference pool's (the strongest one) on the same item: a budgeted fraction of sub-calls is
  shadowed on the other side (``Learner.shadow_of``); nobody grades anything.

``QualityRouter`` then sends each sub-call to the cheapest pool whose predicted quality (the
mean predicted agreement over its items) meets the target, and says in the reason what it
predicted. ``Learner`` keeps the labels, refits as they accumulate and reports the measured
agreement per pool.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import re
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._config import PoolConfig
from ..errors import RuntimeConfigError
from .routing import PoolStats, RouteDecision, Router, Task, accepts

FORMAT = "heterarch-content-router/1"
DIMS = 1 << 15
_WORD = re.compile(r"[a-z0-9]+")
_NUMBERED = re.compile(r"^\s*(\d+)\s*:\s?(.*)$")


def items_of(prompt: str) -> list[str]:
    """The items of a prompt: its numbered lines' texts, or the whole prompt (its head)."""
    found = [m.group(2).strip() for line in prompt.splitlines()
             if (m := _NUMBERED.match(line)) is not None and m.group(2).strip()]
    return found or [prompt[:2000]]


def answers_of(reply: str) -> dict[int, str]:
    """``<number>: <answer>`` lines of a reply, by number (normalised: lower case, stripped)."""
    out: dict[int, str] = {}
    for line in reply.splitlines():
        m = _NUMBERED.match(line)
        if m is not None:
            out[int(m.group(1))] = m.group(2).strip().lower()
    return out


def hashed(text: str) -> list[int]:
    """The feature buckets of one item: hashed words and word pairs (sorted, distinct)."""
    words = _WORD.findall(text.lower())
    tokens = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
    return sorted({zlib.crc32(t.encode()) & (DIMS - 1) for t in tokens})


def agreement(prompt: str, reply: str, reference: str) -> list[tuple[str, bool]]:
    """Per item of ``prompt``: (its text, whether ``reply`` answered it as ``reference`` did).

    Numbered items are compared line by line (items the reference left out are skipped);
    any other prompt is one item, compared as whole normalised replies."""
    numbered = [(int(m.group(1)), m.group(2).strip()) for line in prompt.splitlines()
                if (m := _NUMBERED.match(line)) is not None and m.group(2).strip()]
    if not numbered:
        same = " ".join(reply.lower().split()) == " ".join(reference.lower().split())
        return [(prompt[:2000], same)]
    mine, theirs = answers_of(reply), answers_of(reference)
    return [(text, mine.get(n) == theirs[n]) for n, text in numbered if n in theirs]


@dataclass
class PoolModel:
    """One pool's fitted predictor: ``P(agree) = sigmoid(intercept + sum of weights)``."""

    intercept: float
    weights: dict[int, float] = field(default_factory=dict)
    labels: int = 0
    agreement: float = 0.0  # measured on its training labels
    # A monotone map of the raw probability (isotonic, fitted out of fold): breakpoints.
    calibration: tuple[list[float], list[float]] = ([], [])

    def p(self, buckets: Sequence[int]) -> float:
        z = self.intercept + sum(self.weights.get(b, 0.0) for b in buckets)
        raw = 1.0 / (1.0 + math.exp(-max(-40.0, min(40.0, z))))
        xs, ys = self.calibration
        if not xs:
            return raw
        if raw <= xs[0]:
            return ys[0]
        if raw >= xs[-1]:
            return ys[-1]
        i = bisect.bisect_right(xs, raw)
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        return y0 if x1 == x0 else y0 + (y1 - y0) * (raw - x0) / (x1 - x0)


@dataclass
class ContentModel:
    """Predictors of agreement with ``reference`` (the strongest pool), per pool."""

    reference: str
    pools: dict[str, PoolModel] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "reference": self.reference, "dims": DIMS, "pools": {
            name: {"intercept": m.intercept, "labels": m.labels, "agreement": m.agreement,
                   "weights": {str(k): round(v, 5) for k, v in m.weights.items()},
                   "calibration": [m.calibration[0], m.calibration[1]]}
            for name, m in self.pools.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ContentModel:
        if data.get("format") != FORMAT or data.get("dims") != DIMS:
            raise RuntimeConfigError(f"not a content router model (format "
                                     f"{data.get('format')!r}, expected {FORMAT!r})")
        return cls(str(data["reference"]), {
            name: PoolModel(float(m["intercept"]), {int(k): float(v)
                                                    for k, v in m["weights"].items()},
                            int(m.get("labels", 0)), float(m.get("agreement", 0.0)),
                            _breakpoints(m.get("calibration")))
            for name, m in data["pools"].items()})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json()), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> ContentModel:
        try:
            return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError) as exc:
            raise RuntimeConfigError(f"cannot read the content router model {str(path)!r}: "
                                     f"{exc}") from None


def _breakpoints(raw: Any) -> tuple[list[float], list[float]]:
    if not raw:
        return [], []
    xs, ys = raw
    return [float(v) for v in xs], [float(v) for v in ys]


@dataclass(frozen=True)
class ItemLabel:
    """One shadowed item: did ``pool`` answer it as the reference pool did. ``routed``: the
    router had chosen ``pool`` for it (so this is the quality the run got)."""

    pool: str
    text: str
    agree: bool
    routed: bool = False


def fit_content(labels: Sequence[ItemLabel], *, reference: str, c: float = 1.0,
                min_labels: int = 20) -> ContentModel:
    """Fit one logistic regression per pool on the labels (scikit-learn, imported here).

    A pool with fewer than ``min_labels`` labels is left out (unknown: the router does not
    rely on it); one whose labels are all alike gets a constant (Laplace-smoothed)."""
    import numpy as np
    from scipy.sparse import csr_matrix
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    model = ContentModel(reference)
    for pool in sorted({x.pool for x in labels} - {reference}):
        mine = [x for x in labels if x.pool == pool]
        if len(mine) < min_labels:
            continue
        y = np.array([int(x.agree) for x in mine])
        rate = float(y.mean())
        if y.min() == y.max():
            p = (y.sum() + 1) / (len(y) + 2)
            model.pools[pool] = PoolModel(math.log(p / (1 - p)), {}, len(y), rate)
            continue
        rows, cols = [], []
        for i, x in enumerate(mine):
            for b in hashed(x.text):
                rows.append(i)
                cols.append(b)
        matrix = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(mine), DIMS))
        fitted = LogisticRegression(C=c, max_iter=2000).fit(matrix, y)
        # Calibrated on out-of-fold predictions (isotonic): the penalty shrinks items towards
        # the mean, under-confident just where a pool is nearly always right, which is where
        # routing decides. The monotone map is kept as breakpoints and applied per item.
        calibration: tuple[list[float], list[float]] = ([], [])
        if min(int(y.sum()), len(y) - int(y.sum())) >= 3:
            folds = min(3, int(y.sum()), len(y) - int(y.sum()))
            held = cross_val_predict(LogisticRegression(C=c, max_iter=2000), matrix, y,
                                     cv=folds, method="predict_proba")[:, 1]
            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(held, y)
            calibration = ([float(v) for v in iso.X_thresholds_],
                           [float(v) for v in iso.y_thresholds_])
        coef = fitted.coef_[0]
        used = sorted(set(cols))
        model.pools[pool] = PoolModel(float(fitted.intercept_[0]),
                                      {b: float(coef[b]) for b in used if abs(coef[b]) > 1e-6},
                                      len(y), rate, calibration)
    return model


@dataclass(frozen=True)
class Reliability:
    """Calibration of predictions against held-out labels: per bin (mean predicted, observed
    rate, count), the expected calibration error, the Brier score, and the share of items
    whose thresholded prediction (>= 0.5) matched the label."""

    bins: list[tuple[float, float, int]]
    ece: float
    brier: float
    accuracy: float
    n: int


def reliability(model: ContentModel, labels: Sequence[ItemLabel], *,
                edges: Sequence[float] = (0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995,
                                          1.0001)) -> Reliability:
    """How well ``model``'s P(agree) matches what happened on ``labels`` (held out)."""
    pairs = [(model.pools[x.pool].p(hashed(x.text)), x.agree) for x in labels
             if x.pool in model.pools]
    bins: list[tuple[float, float, int]] = []
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        inside = [(p, a) for p, a in pairs if lo <= p < hi]
        if inside:
            mean_p = sum(p for p, _ in inside) / len(inside)
            rate = sum(a for _, a in inside) / len(inside)
            bins.append((mean_p, rate, len(inside)))
            ece += len(inside) * abs(mean_p - rate)
    n = max(1, len(pairs))
    return Reliability(bins, ece / n, sum((p - a) ** 2 for p, a in pairs) / n,
                       sum((p >= 0.5) == a for p, a in pairs) / n, len(pairs))


def strongest(pools: Iterable[PoolConfig]) -> PoolConfig | None:
    """The reference pool: the highest tier, then the dearest (its price says it is the
    provider's best)."""
    return max(pools, key=lambda p: (p.tier, (p.output_price_per_mtok or 0.0),
                                     (p.input_price_per_mtok or 0.0)), default=None)


def _price(pool: PoolConfig, task: Task) -> float:
    return (task.prompt_tokens * (pool.input_price_per_mtok or 0.0)
            + task.prompt_tokens / 4 * (pool.output_price_per_mtok or 0.0))


class Learner:
    """The labels a node has gathered, the model fitted from them, and the shadow draw.

    ``shadow_fraction`` of plain sub-calls (a deterministic draw on the prompt) are also run
    on the other side: a call routed to a cheaper pool on the reference pool (whose answer
    then stands, it was paid for), a call routed to the reference on the cheapest other pool
    (its answer only labels). ``labels_path``: a JSON-lines file every label is appended to
    (and read back at start), so the next run (or ``heterarch route fit``) learns from it.
    After ``refit_every`` new labels the model is fitted again (0: never online)."""

    def __init__(self, *, model: ContentModel | None = None, shadow_fraction: float = 0.03,
                 labels_path: str | Path | None = None, refit_every: int = 500,
                 max_labels: int = 200_000) -> None:
        self.model = model
        self.shadow_fraction = shadow_fraction
        self.labels_path = Path(labels_path) if labels_path else None
        self.refit_every = refit_every
        self.max_labels = max_labels
        self.labels: list[ItemLabel] = []
        self.fresh = 0
        if self.labels_path is not None and self.labels_path.exists():
            self.labels = read_labels(self.labels_path)[-max_labels:]

    def draws_shadow(self, prompt: str) -> bool:
        if self.shadow_fraction <= 0:
            return False
        return zlib.crc32(prompt.encode()) / 2**32 < self.shadow_fraction

    def record(self, pool: str, prompt: str, reply: str, reference_reply: str, *,
               routed: bool) -> list[ItemLabel]:
        """Label ``pool``'s answer by the reference's; returns the new labels."""
        new = [ItemLabel(pool, text, agree, routed)
               for text, agree in agreement(prompt, reply, reference_reply)]
        self.labels.extend(new)
        del self.labels[:-self.max_labels]
        self.fresh += len(new)
        if self.labels_path is not None and new:
            with self.labels_path.open("a", encoding="utf-8") as f:
                f.write("".join(json.dumps({"pool": x.pool, "text": x.text, "agree": x.agree,
                                            "routed": x.routed}) + "\n" for x in new))
        return new

    def due(self) -> bool:
        return self.refit_every > 0 and self.fresh >= self.refit_every

    def refit(self, reference: str) -> ContentModel:
        """Fit on every label kept (blocking: run it in a thread); the new model is used."""
        self.fresh = 0
        self.model = fit_content(self.labels, reference=reference)
        return self.model

    def agreement_by_pool(self, *, routed_only: bool = False) -> dict[str, tuple[int, int]]:
        """Per pool: (items that agreed with the reference, items labelled)."""
        out: dict[str, tuple[int, int]] = {}
        for x in self.labels:
            if routed_only and not x.routed:
                continue
            agreed, n = out.get(x.pool, (0, 0))
            out[x.pool] = (agreed + x.agree, n + 1)
        return out


def read_labels(path: str | Path) -> list[ItemLabel]:
    """The labels of a JSON-lines labels file (lines that do not parse are skipped)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            d = json.loads(line)
            out.append(ItemLabel(str(d["pool"]), str(d["text"]), bool(d["agree"]),
                                 bool(d.get("routed", False))))
        except (ValueError, KeyError, TypeError):
            continue
    return out


class QualityRouter(Router):
    """The cheapest pool whose predicted quality meets the target; then the fastest.

    Quality is the mean predicted agreement with the reference pool (the strongest among the
    candidates, quality 1 by definition) over the prompt's items. ``target``: an absolute
    quality (0.99: one item in a hundred may differ from the reference); None: match the
    strongest pool, within ``tolerance``. A pool the model has no labels for is not relied
    on. Only plain sub-calls (``kind="llm"``, no images, tag or hint; the others go to the
    next router); without a fitted model it returns None. Pools with no live worker are
    skipped (``PoolStats.live``), and so, among equals in price, slower ones."""

    def __init__(self, pools: Mapping[str, PoolConfig], learner: Learner, *,
                 target: float | None = None, tolerance: float = 0.01,
                 stats: PoolStats | None = None, cache: int = 4096) -> None:
        self.pools = {n: p for n, p in pools.items() if p.model}
        self.learner = learner
        self.target = target
        self.tolerance = tolerance
        self.stats = stats or PoolStats()
        self._buckets: OrderedDict[str, list[int]] = OrderedDict()
        self._cache = cache
        self._p: dict[tuple[str, str], float] = {}  # (pool, item) -> P(agree), this model
        self._model_seen: ContentModel | None = None

    def _features(self, text: str) -> list[int]:
        found = self._buckets.get(text)
        if found is None:
            found = self._buckets[text] = hashed(text)
            if len(self._buckets) > self._cache:
                self._buckets.popitem(last=False)
        return found

    def predict(self, prompt: str, pools: Iterable[str]) -> dict[str, list[float]]:
        """Per pool the model knows: predicted agreement of each item of ``prompt``."""
        model = self.learner.model
        if model is None:
            return {}
        if model is not self._model_seen:  # a refit: earlier predictions are stale
            self._p.clear()
            self._model_seen = model
        out: dict[str, list[float]] = {}
        for name in pools:
            fitted = model.pools.get(name)
            if fitted is None:
                continue
            ps = out[name] = []
            for text in items_of(prompt):
                p = self._p.get((name, text))
                if p is None:
                    p = self._p[(name, text)] = fitted.p(self._features(text))
                ps.append(p)
        if len(self._p) > 4 * self._cache:
            self._p.clear()
        return out

    def route(self, task: Task, *, exclude: Iterable[str] = ()) -> RouteDecision | None:
        model = self.learner.model
        if model is None or task.kind != "llm" or task.images or task.tag or task.hint:
            return None
        excluded = set(exclude)
        candidates = [p for p in self.pools.values() if p.name not in excluded
                      and accepts(p, task)]
        live = [p for p in candidates if self.stats.is_live(p.name)]
        why_live = ""
        if live and len(live) < len(candidates):
            why_live = "; no live worker: " + ", ".join(
                sorted(p.name for p in candidates if p not in live))
        candidates = live or candidates
        reference = strongest(candidates)
        if reference is None:
            return None
        predicted = self.predict(task.prompt, [p.name for p in candidates])
        quality = {name: sum(ps) / len(ps) for name, ps in predicted.items() if ps}
        quality[reference.name] = 1.0
        target = self.target if self.target is not None else 1.0 - self.tolerance
        meets = [p for p in candidates if quality.get(p.name, -1.0) >= target]
        meets.sort(key=lambda p: (_price(p, task), self.stats.latency(p.name) or 0.0))
        choice = meets[0] if meets else reference
        shown = ", ".join(f"{p.name} {quality[p.name]:.3f}" if p.name in quality
                          else f"{p.name} unknown" for p in sorted(
                              candidates, key=lambda p: _price(p, task)))
        worst = min(predicted.get(choice.name, [1.0]))
        goal = (f"match {reference.name} within {self.tolerance:g}" if self.target is None
                else f"{target:g}")
        return RouteDecision(choice.name, (
            f"quality target {target:.3f} ({goal}); predicted agreement with "
            f"{reference.name} over {len(items_of(task.prompt))} item(s): {shown}; cheapest "
            f"meeting it: {choice.name} (least sure item {worst:.3f}){why_live}"))


def learned_router_for(pools: Mapping[str, PoolConfig], *, model_path: str = "",
                       labels_path: str = "", shadow_fraction: float = 0.03,
                       refit_every: int = 500, target: float | None = None,
                       tolerance: float = 0.01,
                       stats: PoolStats | None = None) -> QualityRouter:
    """A ``QualityRouter`` with its ``Learner`` from the ``[routing]`` settings."""
    model = ContentModel.load(model_path) if model_path else None
    learner = Learner(model=model, shadow_fraction=shadow_fraction,
                      labels_path=labels_path or None, refit_every=refit_every)
    reference = strongest(p for p in pools.values() if p.model)
    if model is None and learner.labels and reference is not None:  # learn what runs left
        learner.refit(reference.name)
    return QualityRouter(pools, learner, target=target, tolerance=tolerance, stats=stats)

