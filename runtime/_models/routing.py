"""The automation layer: which pool should run a sub-task.

``Router.route(task) -> RouteDecision(pool, reason)``. Built in:

- ``StaticRouter``: bespoke rules (a tag or a regex -> a pool), e.g. "zoom goes to vision".
- ``ComplexityRouter``: estimates the information complexity of the instruction (constant
  lookup, linear aggregation, pairwise/quadratic or ambiguous), the prompt's size and depth, and
  picks the cheapest pool whose tier suffices and whose recent latency and queue meet the goal.
- ``BudgetAwareRouter``: downgrades one tier when the remaining budget is thin.
- ``ChainRouter``: the first router with an answer wins.

Plug in your own by subclassing ``Router``. Each decision carries a human-readable reason,
recorded on the span as ``heterarch.route.reason``.
"""

from __future__ import annotations

import enum
import re
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from actors.errors import HeterarchError

from .._config import PoolConfig
from .windows import pool_window


class Complexity(enum.IntEnum):
    CONSTANT = 1  # look one thing up
    LINEAR = 2  # read everything once, aggregate
    QUADRATIC = 3  # compare pairs, or judge ambiguous items carefully


class Task(msgspec.Struct, frozen=True, kw_only=True):
    """What the router sees of a sub-call.

    ``prompt``: the text (may be empty when only ``tokens`` is known); ``kind``: ``"llm"`` (a
    plain completion) or ``"rlm"`` (a recursive agent); ``depth``: 1 for the root's children;
    ``tag``: a caller's label for static rules (``"zoom"``); ``budget_left``: fraction of the
    run's budget still unspent; ``tokens``: a token estimate overriding the prompt's length;
    ``hint``: ``"easy"`` or ``"hard"`` when the caller knows better than the keywords;
    ``images``: how many images the call carries (only pools with ``"image"`` in their
    ``modalities`` may take it); ``text_px``: the height of the smallest text the call must read,
    in the pixels of its images (0: not said), and ``image_sizes`` their sizes: with both, only
    vision pools that read text of that height at the size they see the image are candidates
    (``PoolConfig.legible_px``, ``image_resize``), and a global visual task then needs no more
    than the easy tier: what makes a page hard for a model is text too small for it to read.
    """

    prompt: str = ""
    kind: str = "llm"
    depth: int = 1
    tag: str = ""
    budget_left: float = 1.0
    tokens: int = 0
    hint: str = ""
    images: int = 0
    text_px: float = 0.0
    image_sizes: tuple[tuple[int, int], ...] = ()

    @property
    def prompt_tokens(self) -> int:
        return self.tokens or max(1, len(self.prompt) // 4)


class RouteDecision(msgspec.Struct, frozen=True):
    pool: str
    reason: str


class NoPoolFits(HeterarchError, LookupError):
    """No router chose a pool for a task (none configured, or all excluded after failures)."""

    def __init__(self, task: Task, why: str) -> None:
        self.task = task
        self.why = why
        super().__init__(f"no pool can take this {task.kind} call: {why}")


class PromptTooLong(NoPoolFits):
    """The prompt fits the context window of none of the pools it may go to: split it.
    ``prompt_tokens`` is the estimate, ``largest_window`` the largest usable window (tokens)
    and ``largest_pool`` its pool."""

    def __init__(self, task: Task, largest_pool: str, largest_window: int) -> None:
        self.prompt_tokens = task.prompt_tokens
        self.largest_pool = largest_pool
        self.largest_window = largest_window
        super().__init__(task, f"the prompt is about {task.prompt_tokens:,} tokens and the "
                               f"largest window of the pools it may use is {largest_window:,} "
                               f"tokens ({largest_pool}, room for about "
                               f"{usable_tokens(largest_window) * 4:,} characters of prompt): "
                               "split the prompt")

    def __reduce__(self) -> tuple[object, ...]:
        return (_prompt_too_long, (self.task, self.largest_pool, self.largest_window))


def _prompt_too_long(task: Task, pool: str, window: int) -> PromptTooLong:
    return PromptTooLong(task, pool, window)


def usable_tokens(window: int) -> int:
    """Prompt tokens a window of ``window`` tokens takes: room is left for the answer and the
    error of a four-characters-a-token estimate (an eighth, at most 4,096 tokens)."""
    return window - min(4096, window // 8)


def fits(window: int, prompt_tokens: int) -> bool:
    """Whether a prompt of about ``prompt_tokens`` fits a window (0: unknown, assumed to)."""
    return not window or prompt_tokens <= usable_tokens(window)


class Router(ABC):
    @abstractmethod
    def route(self, task: Task, *, exclude: Iterable[str] = ()) -> RouteDecision | None:
        """A pool for ``task`` (never one in ``exclude``), or None to let another router decide."""


@dataclass
class Rule:
    """Send what matches to ``pool``: a ``tag`` the code gave, a ``pattern`` in the prompt, a
    recursion ``depth`` (0: the root agent, 1: its sub-calls; negative: any) and a ``kind``
    (``"llm"`` or ``"rlm"``; empty: any). ``Rule("frontier", depth=0)`` puts the root there."""

    pool: str
    tag: str = ""
    pattern: str = ""
    depth: int = -1
    kind: str = ""

    def matches(self, task: Task) -> bool:
        if self.tag and task.tag != self.tag:
            return False
        if self.depth >= 0 and task.depth != self.depth:
            return False
        if self.kind and task.kind != self.kind:
            return False
        return not (self.pattern and re.search(self.pattern, task.prompt, re.I) is None)

    def describe(self) -> str:
        parts = [f"tag {self.tag!r}" if self.tag else "",
                 f"pattern {self.pattern!r}" if self.pattern else "",
                 f"depth {self.depth}" if self.depth >= 0 else "",
                 f"kind {self.kind}" if self.kind else ""]
        return ", ".join(p for p in parts if p) or "any call"


class StaticRouter(Router):
    def __init__(self, rules: Sequence[Rule], *, default: str | None = None) -> None:
        self.rules = list(rules)
        self.default = default

    def route(self, task: Task, *, exclude: Iterable[str] = ()) -> RouteDecision | None:
        excluded = set(exclude)
        for rule in self.rules:
            if rule.matches(task) and rule.pool not in excluded:
                return RouteDecision(rule.pool,
                                     f"static rule: {rule.describe()} -> {rule.pool}")
        if self.default and self.default not in excluded:
            return RouteDecision(self.default, f"static default -> {self.default}")
        return None


_QUADRATIC = re.compile(
    r"\b(ambiguous|reason carefully|every pair|each pair|pairs of|compare each|pairwise|"
    r"all combinations|contradict)", re.I)
_LINEAR = re.compile(r"\b(label each|classify|count|how many|list all|sum|aggregate|each "
                     r"record|every record|summari[sz]e)", re.I)


# Image sub-calls: reading a crop is a lookup; planning over a whole page is global reasoning.
_GLOBAL_VISION = re.compile(
    r"\b(layout|locate|where on|which (region|part|block)|whole (page|screen)|plan|navigate)",
    re.I)


def accepts(pool: PoolConfig, task: Task) -> bool:
    """Whether ``pool``'s model reads everything ``task`` carries (text; images if any)."""
    return not task.images or "image" in pool.modalities


def model_scale(rule: str, width: int, height: int, max_pixels: int = 16_777_216) -> float:
    """How much a provider's resize scales an image of this size before its model sees it:
    ``"openai-tiles"`` fits it in 2048 x 2048, then its short side to at most 768;
    ``"qwen-patches"`` keeps its resolution up to ``max_pixels``; ``""``: unknown, kept."""
    if width < 1 or height < 1:
        return 1.0
    if rule == "openai-tiles":
        scale = min(1.0, 2048 / max(width, height))
        return scale * min(1.0, 768 / (min(width, height) * scale))
    if rule == "qwen-patches" and width * height > max_pixels:
        return float((max_pixels / (width * height)) ** 0.5)
    return 1.0


def seen_text_px(pool: PoolConfig, task: Task) -> float:
    """The height ``task``'s smallest text has in the pixels ``pool``'s model sees (the worst
    of its images)."""
    return task.text_px * min((model_scale(pool.image_resize, w, h)
                               for w, h in task.image_sizes), default=1.0)


def estimate_complexity(prompt: str) -> Complexity:
    """Keyword and structure features of the instruction (the first 2,000 characters)."""
    head = prompt[:2000]
    if _QUADRATIC.search(head):
        return Complexity.QUADRATIC
    if _LINEAR.search(head) or prompt.count("\n") > 20:
        return Complexity.LINEAR
    return Complexity.CONSTANT


@dataclass
class PoolStats:
    """Recent latency and queue depth per pool, fed by the runtime after each call."""

    window: int = 50
    _latency: dict[str, deque[float]] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=dict)
    errors: dict[str, deque[float]] = field(default_factory=dict)
    cluster_in_flight: dict[str, float] = field(default_factory=dict)
    # Pools with a live worker -> their free actor slots (from membership's heartbeats); None:
    # not known here (every pool counts as live).
    live: Callable[[], Mapping[str, int] | None] | None = None

    def is_live(self, pool: str) -> bool:
        """Whether some live worker serves ``pool`` (True when this node cannot tell)."""
        if self.live is None:
            return True
        try:
            known = self.live()
        except Exception:  # membership not running (a closed node): do not guess
            return True
        return known is None or pool in known

    def started(self, pool: str) -> None:
        self.in_flight[pool] = self.in_flight.get(pool, 0) + 1

    def finished(self, pool: str, latency_s: float, ok: bool) -> None:
        self.in_flight[pool] = max(0, self.in_flight.get(pool, 0) - 1)
        self._latency.setdefault(pool, deque(maxlen=self.window)).append(latency_s)
        if not ok:
            self.errors.setdefault(pool, deque(maxlen=self.window)).append(time.monotonic())

    def observe_cluster(self, in_flight: Mapping[str, float]) -> None:
        """Calls in flight per pool per node across the cluster (from the workers' stats)."""
        self.cluster_in_flight = dict(in_flight)

    def load(self, pool: str) -> float:
        """Calls in flight on ``pool``: this node's, or the cluster's per node if higher."""
        return max(float(self.in_flight.get(pool, 0)), self.cluster_in_flight.get(pool, 0.0))

    def latency(self, pool: str) -> float | None:
        samples = self._latency.get(pool)
        return sum(samples) / len(samples) if samples else None

    def recent_errors(self, pool: str, within_s: float = 30.0) -> int:
        now = time.monotonic()
        return sum(1 for t in self.errors.get(pool, ()) if now - t < within_s)


class ComplexityRouter(Router):
    """Cheapest pool whose tier suffices for the estimated complexity and size.

    Required tier: constant or linear work -> ``easy_tier``; quadratic or ambiguous ->
    ``hard_tier``; prompts over ``long_prompt_tokens`` -> at least ``long_tier``; recursive
    agents (``kind="rlm"``) -> at least ``agent_tier``; ``task.hint`` ("easy"/"hard")
    overrides the keyword estimate. Among the pools of a sufficient tier, cheapest first: a
    pool with ``error_limit`` or more failures in the last 30 s (``PoolStats``) is skipped
    when another fits, and so is one whose expected wait (recent latency x (queue /
    concurrency + 1)) exceeds ``latency_goal_s``. Only pools with a model are candidates.
    If no pool is strong enough, the strongest left is used (the reason says so).
    """

    def __init__(self, pools: Mapping[str, PoolConfig], *, stats: PoolStats | None = None,
                 easy_tier: int = 1, hard_tier: int = 3, long_tier: int = 2,
                 agent_tier: int = 2, long_prompt_tokens: int = 32_000,
                 latency_goal_s: float | None = None, error_limit: int = 3) -> None:
        self.pools = {n: p for n, p in pools.items() if p.model}
        self.error_limit = error_limit
        self.stats = stats or PoolStats()
        self.easy_tier, self.hard_tier, self.long_tier = easy_tier, hard_tier, long_tier
        self.agent_tier = agent_tier
        self.long_prompt_tokens = long_prompt_tokens
        self.latency_goal_s = latency_goal_s

    def required_tier(self, task: Task) -> tuple[int, str]:
        """The tier ``task`` needs, and why (the start of the decision's reason)."""
        if task.hint in ("easy", "hard"):
            complexity = Complexity.QUADRATIC if task.hint == "hard" else Complexity.LINEAR
            why = f"caller says {task.hint}"
        elif task.images and _GLOBAL_VISION.search(task.prompt[:2000]):
            complexity, why = Complexity.QUADRATIC, "global visual reasoning"
        elif task.images:
            complexity, why = Complexity.CONSTANT, "crop-and-read"
        else:
            complexity = estimate_complexity(task.prompt)
            why = f"{complexity.name.lower()} instruction"
        tier = self.hard_tier if complexity is Complexity.QUADRATIC else self.easy_tier
        if task.prompt_tokens > self.long_prompt_tokens and tier < self.long_tier:
            tier, why = self.long_tier, f"{why}, long prompt ({task.prompt_tokens} tokens)"
        if task.kind == "rlm" and tier < self.agent_tier:
            tier, why = self.agent_tier, f"{why}, recursive agent"
        return tier, why

    def _legibility(self, task: Task, candidates: list[PoolConfig], tier: int,
                    why: str) -> tuple[list[PoolConfig], int, str]:
        """Only the pools that read the task's text at the size they see it; with one, the
        easy tier suffices (reading was the hard part). None: the tier rule stands."""
        known = [p for p in candidates if p.legible_px > 0]
        seen = {p.name: seen_text_px(p, task) for p in known}
        readable = [p for p in known if seen[p.name] >= p.legible_px]
        detail = "; ".join(f"{p.name} sees {seen[p.name]:.1f} px, reads >= {p.legible_px:g}"
                           for p in known)
        why += f", text {task.text_px:g} px ({detail or 'no pool states what it reads'})"
        if not readable:
            return candidates, tier, why + ": legible to none"
        floor = self.agent_tier if task.kind == "rlm" else self.easy_tier
        return (readable, min(tier, max(self.easy_tier, floor)),
                why + ": legible to " + ", ".join(p.name for p in readable))

    def _price(self, pool: PoolConfig, task: Task) -> float:
        inp = pool.input_price_per_mtok or 0.0
        out = pool.output_price_per_mtok or 0.0
        return (task.prompt_tokens * inp + task.prompt_tokens / 4 * out) / 1e6

    def _expected_wait(self, pool: PoolConfig) -> float | None:
        latency = self.stats.latency(pool.name)
        if latency is None:
            return None
        return latency * (self.stats.load(pool.name) / pool.max_concurrency + 1)

    def route(self, task: Task, *, exclude: Iterable[str] = ()) -> RouteDecision | None:
        excluded = set(exclude)
        tier, why = self.required_tier(task)
        candidates = [p for p in self.pools.values() if p.name not in excluded
                      and accepts(p, task)]
        live = [p for p in candidates if self.stats.is_live(p.name)]
        if live and len(live) < len(candidates):  # never wait for a worker that is not there
            why += "; no live worker: " + ", ".join(
                sorted(p.name for p in candidates if p not in live))
            candidates = live
        if task.images:
            why += f" ({task.images} image(s): vision pools only)"
        if task.images and task.text_px > 0 and task.image_sizes:
            candidates, tier, why = self._legibility(task, candidates, tier, why)
        fitting = sorted((p for p in candidates if p.tier >= tier),
                         key=lambda p: (self._price(p, task), -p.tier))
        if not fitting:  # nothing strong enough left: take the strongest there is
            fitting = sorted(candidates, key=lambda p: -p.tier)
            why += f"; no pool of tier {tier} available, using the strongest"
        if not fitting:
            return None
        healthy = [p for p in fitting if self.stats.recent_errors(p.name) < self.error_limit]
        if healthy and healthy[0] is not fitting[0]:
            why += f"; {fitting[0].name} failing lately, skipped"
        fitting = healthy or fitting
        choice = fitting[0]
        if self.latency_goal_s is not None:
            for p in fitting:
                wait = self._expected_wait(p)
                if wait is None or wait <= self.latency_goal_s:
                    if p is not choice:
                        why += f"; {choice.name} too slow now, next cheapest"
                    choice = p
                    break
        return RouteDecision(choice.name, f"{why} needs tier {tier}: cheapest fit is "
                                          f"{choice.name} (tier {choice.tier})")


class BudgetAwareRouter(Router):
    """Asks ``inner``; when less than ``threshold`` of the budget is left, one tier cheaper."""

    def __init__(self, inner: ComplexityRouter, *, threshold: float = 0.2) -> None:
        self.inner = inner
        self.threshold = threshold

    @property
    def stats(self) -> PoolStats:
        """The inner router's live statistics (what ``RouteService`` feeds)."""
        return self.inner.stats

    def route(self, task: Task, *, exclude: Iterable[str] = ()) -> RouteDecision | None:
        decision = self.inner.route(task, exclude=exclude)
        if decision is None or task.budget_left >= self.threshold:
            return decision
        current = self.inner.pools[decision.pool]
        cheaper = sorted((p for p in self.inner.pools.values()
                          if p.tier == current.tier - 1 and p.name not in set(exclude)
                          and accepts(p, task)),
                         key=lambda p: self.inner._price(p, task))
        if not cheaper:
            return decision
        return RouteDecision(cheaper[0].name, f"budget thin ({task.budget_left:.0%} left): "
                                              f"downgraded {current.name} -> {cheaper[0].name}")


class ChainRouter(Router):
    def __init__(self, routers: Sequence[Router]) -> None:
        self.routers = list(routers)

    def route(self, task: Task, *, exclude: Iterable[str] = ()) -> RouteDecision | None:
        for router in self.routers:
            decision = router.route(task, exclude=exclude)
            if decision is not None:
                return decision
        return None


class RouteService:
    """What agents call (``ctx.agent_services.router(prompt=..., ...)``): a router plus live
    stats (it satisfies the agents' ``SubCallRouter``).

    With ``pools`` (the config), no decision ever sends images to a pool whose modalities
    lack ``"image"``, whichever router made it: such a pool is excluded and the task routed
    again. Nor a prompt to a pool whose context window it does not fit (``windows``: the
    config's ``context_window``, else litellm's model map); a prompt that fits no pool it may
    use raises ``PromptTooLong`` at once, before any router decides.
    """

    def __init__(self, router: Router, stats: PoolStats | None = None, *,
                 pools: Mapping[str, PoolConfig] | None = None, learner: Any = None) -> None:
        self.router = router
        self.stats = stats or getattr(router, "stats", None) or PoolStats()
        self.pools = dict(pools or {})
        self.windows = {name: pool_window(pool) for name, pool in self.pools.items()
                        if pool.model}
        self.learner = learner  # a ``content.Learner``: shadow draws, labels, refits
        self._refitting = False

    def _too_small(self, task: Task, excluded: set[str]) -> set[str]:
        """Pools the prompt does not fit; raises ``PromptTooLong`` when it fits none of the
        pools it may use."""
        usable = {name: window for name, window in self.windows.items() if name not in excluded}
        small = {name for name, window in usable.items() if not fits(window, task.prompt_tokens)}
        if small and small == set(usable):
            largest = max(small, key=lambda name: usable[name])
            raise PromptTooLong(task, largest, usable[largest])
        return small

    def shadow_of(self, prompt: str, pool: str, *, exclude: Iterable[str] = ()) -> str | None:
        """The pool to shadow this plain sub-call on (routed to ``pool``), or None: for the
        drawn fraction, the reference (strongest live) pool when ``pool`` is cheaper, else the
        cheapest other live pool. What the two answer is a label (``learn``)."""
        if self.learner is None or not self.learner.draws_shadow(prompt):
            return None
        from .content import strongest

        excluded = set(exclude)
        candidates = [p for p in self.pools.values() if p.model and p.name not in excluded
                      and "text" in p.modalities and self.stats.is_live(p.name)]
        reference = strongest(candidates)
        if reference is None or pool not in {p.name for p in candidates}:
            return None
        if pool != reference.name:
            return reference.name
        others = sorted((p for p in candidates if p.name != pool),
                        key=lambda p: ((p.input_price_per_mtok or 0.0)
                                       + (p.output_price_per_mtok or 0.0)))
        return others[0].name if others else None

    def is_reference(self, pool: str, *, exclude: Iterable[str] = ()) -> bool:
        from .content import strongest

        excluded = set(exclude)
        reference = strongest(p for p in self.pools.values() if p.model
                              and p.name not in excluded and self.stats.is_live(p.name))
        return reference is not None and reference.name == pool

    async def learn(self, prompt: str, routed: tuple[str, str], shadow: tuple[str, str], *,
                    exclude: Iterable[str] = ()) -> list[Any]:
        """Label a shadowed sub-call: ``routed`` and ``shadow`` are (pool, reply). The pool
        that is not the reference is labelled by its agreement with the reference's reply;
        refits (in a thread) once enough new labels came in. Returns the new labels."""
        if self.learner is None:
            return []
        new: list[Any]
        if self.is_reference(shadow[0], exclude=exclude):
            new = self.learner.record(routed[0], prompt, routed[1], shadow[1], routed=True)
            reference = shadow[0]
        else:
            new = self.learner.record(shadow[0], prompt, shadow[1], routed[1], routed=False)
            reference = routed[0]
        if self.learner.due() and not self._refitting:
            self._refitting = True
            try:
                import anyio

                await anyio.to_thread.run_sync(self.learner.refit, reference)
            finally:
                self._refitting = False
        return new

    def agreement(self) -> dict[str, float]:
        """Measured agreement with the reference pool per pool, over the labels kept."""
        if self.learner is None:
            return {}
        return {pool: agreed / n for pool, (agreed, n)
                in self.learner.agreement_by_pool().items() if n}

    def __call__(self, *, prompt: str, kind: str = "llm", depth: int = 1, tag: str = "",
                 exclude: Iterable[str] = (), budget_left: float = 1.0, tokens: int = 0,
                 hint: str = "", images: int = 0, text_px: float = 0.0,
                 image_sizes: Iterable[tuple[int, int]] = ()) -> RouteDecision:
        """Route one sub-call. Raises ``NoPoolFits`` when no router chose a pool."""
        task = Task(prompt=prompt, kind=kind, depth=depth, tag=tag, budget_left=budget_left,
                    tokens=tokens, hint=hint, images=images, text_px=float(text_px),
                    image_sizes=tuple((int(w), int(h)) for w, h in image_sizes))
        excluded = set(exclude)
        excluded |= self._too_small(task, excluded)
        while True:
            decision = self.router.route(task, exclude=excluded)
            if decision is None:
                raise NoPoolFits(task, "no router chose a pool (are any pools with a model "
                                       "and the modalities it needs configured, and not all "
                                       "failing?)")
            pool = self.pools.get(decision.pool)
            if pool is None or (accepts(pool, task)
                                and fits(self.windows.get(decision.pool, 0), task.prompt_tokens)):
                return decision
            if decision.pool in excluded:  # a router that ignores `exclude`
                raise NoPoolFits(task, f"the router insists on {decision.pool!r}, which "
                                       "does not accept images or whose window is too small")
            excluded.add(decision.pool)  # a text-only pool chosen for images: never sent
