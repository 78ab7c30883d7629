"""A router that learns from outcomes: per pool, P(a sub-task is answered right) and latency.

``fit_router(spans, label=...)`` reads recorded runs (span dicts from a span file or Jaeger JSON,
recorded with content capture on), takes every ``chat`` span of a pool (its prompt, reply and
duration), asks ``label(prompt, reply)`` which of the sub-task's items were answered right (for
the OOLONG generator: each numbered record against the task's truth), and fits with
scikit-learn, per pool, a logistic regression of P(right) and a linear regression of the
latency on features of the prompt. ``heterarch route fit SPANS... --out router.json`` writes
the result; ``LearnedRouter`` (``--router router.json`` for workers and the CLI) picks the
cheapest pool whose predicted P(right) meets the target accuracy and whose predicted latency
meets the goal, and says why.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._config import PoolConfig
from ..errors import RuntimeConfigError
from .routing import Complexity, RouteDecision, Router, Task, estimate_complexity

FORMAT = "heterarch-router/1"
FEATURES = ("constant", "linear", "quadratic", "log_prompt_tokens")
Label = Callable[[str, str], list[bool]]  # (prompt, reply) -> right or wrong, per item


def features(prompt: str, tokens: int = 0) -> list[float]:
    """What the learned router sees of a prompt (``FEATURES``)."""
    complexity = estimate_complexity(prompt)
    return [float(complexity is c) for c in Complexity] + [
        math.log1p(tokens or max(1, len(prompt) // 4))]


@dataclass(frozen=True)
class Outcome:
    """One recorded sub-call: its pool, prompt, latency, and which items were right."""

    pool: str
    prompt: str
    latency_s: float
    right: list[bool]


def outcomes_from_spans(spans: Iterable[Mapping[str, Any]], label: Label) -> list[Outcome]:
    """Every model call in ``spans`` with content, labelled (calls ``label`` cannot judge,
    an empty list, are left out)."""
    found = []
    for span in spans:
        attributes = span.get("attributes") or {}
        if not str(span.get("name", "")).startswith("chat "):
            continue
        pool = attributes.get("heterarch.pool")
        prompt_raw = attributes.get("gen_ai.input.messages")
        reply = attributes.get("gen_ai.output.messages")
        if not (isinstance(pool, str) and isinstance(prompt_raw, str) and isinstance(reply, str)):
            continue
        prompt = _prompt_text(prompt_raw)
        right = label(prompt, _prompt_text(reply))
        if right:
            latency = (int(span.get("end_ns", 0)) - int(span.get("start_ns", 0))) / 1e9
            found.append(Outcome(pool, prompt, max(0.0, latency), right))
    return found


def _prompt_text(raw: str) -> str:
    """The text of captured ``gen_ai.input.messages`` / ``gen_ai.output.messages`` (GenAI
    messages with ``parts``, or plain ``content``; JSON, possibly truncated)."""
    try:
        messages = json.loads(raw)
    except ValueError:
        head = re.sub(r"\.\.\. \[\d+ more\]$", "", raw.split('"content": "', 1)[-1])
        head = head[:head.rfind("\\n")]  # the last line may be cut: keep the whole ones
        try:
            return str(json.loads(f'"{head}"'))
        except ValueError:
            return ""
    if isinstance(messages, str):
        return messages
    texts = []
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, dict):
            continue
        if isinstance(message.get("content"), str):
            texts.append(message["content"])
        for part in message.get("parts") or []:
            if isinstance(part, dict) and isinstance(part.get("content"), str):
                texts.append(part["content"])
    return "\n".join(texts)


def load_spans(path: str | Path) -> list[dict[str, Any]]:
    """Spans of a span file (JSON lines, ``HETERARCH_TRACE_FILE``) or a Jaeger JSON export."""
    from .._observe.span_files import jaeger_to_spans

    text = Path(path).read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("{") and '"data"' in stripped[:200]:
        return jaeger_to_spans(json.loads(text))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def fit_router(outcomes: Sequence[Outcome], *, target_accuracy: float = 0.97) -> dict[str, Any]:
    """Fit P(right) and latency per pool with scikit-learn; the JSON-able router model."""
    from sklearn.linear_model import LinearRegression, LogisticRegression

    pools: dict[str, Any] = {}
    for pool in sorted({o.pool for o in outcomes}):
        mine = [o for o in outcomes if o.pool == pool]
        x_items = [features(o.prompt) for o in mine for _ in o.right]
        y_items = [int(r) for o in mine for r in o.right]
        if len(set(y_items)) < 2:  # always right (or always wrong): nothing to separate
            accuracy: dict[str, Any] = {
                "constant": (sum(y_items) + 1) / (len(y_items) + 2)}  # Laplace
        else:
            model = LogisticRegression(max_iter=1000).fit(x_items, y_items)
            accuracy = {"coef": [float(c) for c in model.coef_[0]],
                        "intercept": float(model.intercept_[0])}
        speed = LinearRegression().fit([[features(o.prompt)[-1]] for o in mine],
                                       [o.latency_s for o in mine])
        pools[pool] = {"accuracy": accuracy,
                       "latency": {"coef": [float(c) for c in speed.coef_],
                                   "intercept": float(speed.intercept_)},
                       "calls": len(mine), "items": len(y_items),
                       "observed_accuracy": sum(y_items) / max(1, len(y_items))}
    return {"format": FORMAT, "features": list(FEATURES), "target_accuracy": target_accuracy,
            "pools": pools}


class LearnedRouter(Router):
    """The cheapest pool predicted to answer right often enough, and fast enough.

    Plain sub-calls only (``kind="llm"`` without images): for anything else it returns None,
    so chain it before a ``ComplexityRouter``. ``target_accuracy`` and ``latency_goal_s``
    default to the model's."""

    def __init__(self, model: Mapping[str, Any], pools: Mapping[str, PoolConfig], *,
                 target_accuracy: float | None = None,
                 latency_goal_s: float | None = None) -> None:
        if model.get("format") != FORMAT:
            raise RuntimeConfigError(f"not a router model (format {model.get('format')!r}; "
                                     f"expected {FORMAT!r}: make one with `heterarch route fit`)")
        self.model = dict(model["pools"])
        self.pools = {n: p for n, p in pools.items() if p.model and n in self.model}
        self.target = float(target_accuracy or model.get("target_accuracy", 0.97))
        self.latency_goal_s = latency_goal_s

    @classmethod
    def load(cls, path: str | Path, pools: Mapping[str, PoolConfig],
             **options: Any) -> LearnedRouter:
        try:
            model = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RuntimeConfigError(f"cannot read the router model {str(path)!r}: {exc}") \
                from None
        if not isinstance(model, dict) or not isinstance(model.get("pools"), dict):
            raise RuntimeConfigError(f"{path}: not a router model (no pools)")
        return cls(model, pools, **options)

    def p_right(self, pool: str, x: Sequence[float]) -> float:
        fitted = self.model[pool]["accuracy"]
        if "constant" in fitted:
            return float(fitted["constant"])
        z = float(fitted["intercept"]) + sum(c * v for c, v in zip(fitted["coef"], x,
                                                                     strict=True))
        return 1 / (1 + math.exp(-z))

    def latency(self, pool: str, x: Sequence[float]) -> float:
        fitted = self.model[pool]["latency"]
        return float(fitted["intercept"]) + float(fitted["coef"][0]) * x[-1]

    def route(self, task: Task, *, exclude: Iterable[str] = ()) -> RouteDecision | None:
        if task.kind != "llm" or task.images or task.tag:
            return None
        excluded = set(exclude)
        x = features(task.prompt, task.tokens)
        cheaper: list[str] = []
        for pool in sorted((p for p in self.pools.values() if p.name not in excluded),
                           key=lambda p: _price(p, task)):
            p, seconds = self.p_right(pool.name, x), self.latency(pool.name, x)
            slow = self.latency_goal_s is not None and seconds > self.latency_goal_s
            if p >= self.target and not slow:
                why = (f"learned: {pool.name}, the cheapest pool with P(right) >= "
                       f"{self.target:g} (P={p:.3f}, ~{seconds:.2f}s)")
                if cheaper:
                    why += "; cheaper: " + ", ".join(cheaper)
                return RouteDecision(pool.name, why)
            cheaper.append(f"{pool.name} P={p:.3f}" + (f" ~{seconds:.2f}s too slow"
                                                         if slow else ""))
        return None  # none predicted good enough: let the next router decide


def _price(pool: PoolConfig, task: Task) -> float:
    return (task.prompt_tokens * (pool.input_price_per_mtok or 0.0)
            + task.prompt_tokens / 4 * (pool.output_price_per_mtok or 0.0))
