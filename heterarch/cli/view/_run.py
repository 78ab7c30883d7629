"""One run read from its spans: what the page shows, computed once (no HTML here).

The input is span-file records (``runtime._observe.tracing.span_to_dict``; Jaeger's JSON read by
``jaeger_to_spans`` gives the same). Everything is derived from the spans alone, so a span file,
a trace saved from Jaeger and a run still writing its file all read the same way.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from actors._semconv import (
    ATTR_COST_USD,
    ATTR_ERROR_TYPE,
    ATTR_GENAI_INPUT_MESSAGES,
    ATTR_GENAI_INPUT_TOKENS,
    ATTR_GENAI_OPERATION,
    ATTR_GENAI_OUTPUT_MESSAGES,
    ATTR_GENAI_OUTPUT_TOKENS,
    ATTR_GENAI_TOOL_ARGUMENTS,
    ATTR_GENAI_TOOL_NAME,
    ATTR_GENAI_TOOL_RESULT,
    ATTR_HARDWARE,
    ATTR_POOL,
)

from ..trace_show import as_float, as_int

Span = dict[str, Any]

STRAGGLER_FACTOR = 2.0
"""A model call is a straggler when it took this many times its pool's median, or more."""


def attrs(span: Span) -> dict[str, Any]:
    a: dict[str, Any] = span.get("attributes") or {}
    return a


def start(span: Span) -> int:
    return as_int(span.get("start_ns"))


def end(span: Span) -> int:
    return max(as_int(span.get("end_ns")), start(span))


def seconds(span: Span) -> float:
    return (end(span) - start(span)) / 1e9




def operation(span: Span) -> str:
    return str(attrs(span).get(ATTR_GENAI_OPERATION, ""))


def failed(span: Span) -> bool:
    return span.get("status") == "ERROR"


def error_type(span: Span) -> str:
    """The span's ``error.type`` (``ERROR`` when it failed without one; "" when it did not)."""
    if not failed(span):
        return ""
    return str(attrs(span).get(ATTR_ERROR_TYPE) or "error")


def message_text(value: Any) -> str:
    """The text of a GenAI messages attribute (the conventions' ``parts`` JSON), joined."""
    if not value:
        return ""
    try:
        messages = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError:
        return str(value)
    texts = []
    for message in messages if isinstance(messages, list) else []:
        for part in (message or {}).get("parts") or []:
            if part.get("type") == "text":
                texts.append(str(part.get("content", "")))
            elif part.get("type") == "uri":
                texts.append(f"[{part.get('modality', 'file')}]")
    return "\n".join(texts)


def last_user_text(value: Any) -> str:
    """The last user message of an input messages attribute."""
    try:
        messages = json.loads(value) if isinstance(value, str) else value
    except (json.JSONDecodeError, TypeError):
        return ""
    users = [m for m in messages or [] if isinstance(m, dict) and m.get("role") == "user"]
    return message_text([users[-1]]) if users else ""


@dataclass
class Cell:
    span: Span
    index: int
    code: str
    output: str
    error: str
    sub_calls: list[Span]  # the callbacks it made (llm_query_batched, rlm_query, ...)


@dataclass
class Iteration:
    number: int
    chat: Span | None
    reply: str
    cells: list[Cell] = field(default_factory=list)


@dataclass
class PoolStats:
    pool: str
    hardware: str = ""
    instances: set[str] = field(default_factory=set)
    calls: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    busy_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    error_types: Counter[str] = field(default_factory=Counter)
    peak_concurrency: int = 0

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) if self.latencies else 0.0

    @property
    def p95(self) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


@dataclass
class Bar:
    """One model call on the timeline: where (pool, instance, slot) and when."""

    span: Span
    pool: str
    instance: str
    slot: int
    queued_ns: int      # the part of the call spent waiting for the pool's concurrency limit
    straggler: bool
    sub_call: bool      # a sub-call (not the root agent writing code)


@dataclass
class Lane:
    """A row group of the timeline: one pool on one worker process."""

    pool: str
    hardware: str
    instance: str
    slots: int
    bars: list[Bar]

    def waiting(self) -> list[tuple[int, int]]:
        """(time, calls waiting for the pool's limit from then on), a step function."""
        changes: list[tuple[int, int]] = []
        for bar in self.bars:
            if bar.queued_ns > 0:
                changes += [(start(bar.span), 1), (start(bar.span) + bar.queued_ns, -1)]
        steps, depth = [], 0
        for t, delta in sorted(changes):
            depth += delta
            steps.append((t, depth))
        return steps


@dataclass
class Run:
    trace_id: str
    spans: list[Span]
    root: Span | None
    agent: Span | None          # the root agent (the one that writes code)
    start_ns: int
    end_ns: int
    question: str
    answer: str
    stop_reason: str
    status: str
    iterations: list[Iteration]
    pools: dict[str, PoolStats]
    lanes: list[Lane]
    phases: list[tuple[str, Span]]  # the root agent's own work: (kind, span) on its row
    errors: list[Span]
    events: list[tuple[Span, dict[str, Any]]]  # retries, fallbacks, escalations
    complete: bool               # the root span has ended (a run still writing: False)
    children: list[tuple[Span, list[Iteration]]] = field(default_factory=list)
    # the other RLM agents (rlm_query children), each with its iterations, in start order

    @property
    def wall_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    @property
    def cost_usd(self) -> float:
        return sum(p.cost_usd for p in self.pools.values())

    @property
    def tokens(self) -> int:
        return sum(p.input_tokens + p.output_tokens for p in self.pools.values())

    def starting(self) -> list[tuple[str, float]]:
        """What happened before the root agent's first model call: its spawn, then what it did
        before asking the model (loading the context); in seconds."""
        if self.agent is None or not self.phases:
            return []
        out = []
        created = next((s for s in self.spans if s["span_id"] == self.agent.get(
            "parent_span_id") and operation(s) == "create_agent"), None)
        if created is not None:
            out.append((f"spawning the root agent ({created.get('name')})",
                        (start(self.agent) - start(created)) / 1e9))
        first = min(start(s) for _, s in self.phases)
        out.append(("the root agent getting ready (context, sandbox) before its first model "
                    "call", (first - start(self.agent)) / 1e9))
        return out

    def time_split(self) -> list[tuple[str, float]]:
        """Where the root agent's wall time went: starting (spawn, context, sandbox), the model
        writing code, code running, waiting on sub-calls; in seconds, in that order."""
        if self.agent is None:
            return []
        model = sum(seconds(s) for kind, s in self.phases if kind == "model")
        cells = sum(seconds(s) for kind, s in self.phases if kind == "cell")
        waiting = sum(seconds(s) for kind, s in self.phases if kind == "sub-calls")
        first = min((start(s) for _, s in self.phases), default=start(self.agent))
        begin = start(self.root) if self.root is not None else start(self.agent)
        starting = max(0.0, (first - begin) / 1e9)
        return [("starting", starting), ("model writes code", model),
                ("code runs", max(0.0, cells - waiting)), ("sub-calls", waiting)]


def children_index(spans: list[Span]) -> dict[str, list[Span]]:
    out: dict[str, list[Span]] = {}
    for s in sorted(spans, key=start):
        out.setdefault(str(s.get("parent_span_id") or ""), []).append(s)
    return out


def descendants(span: Span, index: dict[str, list[Span]]) -> list[Span]:
    out: list[Span] = []
    todo = list(index.get(span["span_id"], []))
    while todo:
        s = todo.pop()
        out.append(s)
        todo.extend(index.get(s["span_id"], []))
    return out


def subtree_usage(span: Span, index: dict[str, list[Span]]) -> tuple[int, float, int]:
    """(tokens, dollars, failed model calls) of the model calls in ``span``'s subtree."""
    tokens, cost, errors = 0, 0.0, 0
    for s in [span, *descendants(span, index)]:
        if operation(s) != "chat":
            continue
        a = attrs(s)
        tokens += as_int(a.get(ATTR_GENAI_INPUT_TOKENS)) + as_int(a.get(ATTR_GENAI_OUTPUT_TOKENS))
        cost += as_float(a.get(ATTR_COST_USD))
        errors += failed(s)
    return tokens, cost, errors


def _find_root(spans: list[Span]) -> Span | None:
    ids = {s["span_id"] for s in spans}
    tops = [s for s in spans if not s.get("parent_span_id") or s["parent_span_id"] not in ids]
    tops.sort(key=lambda s: (bool(s.get("parent_span_id")), start(s)))
    return tops[0] if tops else None


def _find_agent(spans: list[Span], index: dict[str, list[Span]]) -> Span | None:
    """The root agent: the shallowest agent that called a model itself and ran cells."""
    best: tuple[int, int, Span] | None = None
    for s in spans:
        if operation(s) != "invoke_agent":
            continue
        kids = index.get(s["span_id"], [])
        if not any(attrs(k).get(ATTR_GENAI_TOOL_NAME) == "repl" for k in kids):
            continue
        key = (as_int(attrs(s).get("heterarch.depth")), start(s))
        if best is None or key < best[:2]:
            best = (*key, s)
    return best[2] if best is not None else None


def _iterations(agent: Span, index: dict[str, list[Span]]) -> tuple[
        list[Iteration], list[tuple[str, Span]]]:
    iterations: list[Iteration] = []
    phases: list[tuple[str, Span]] = []
    for s in index.get(agent["span_id"], []):
        if operation(s) == "chat":
            a = attrs(s)
            reply = message_text(a.get(ATTR_GENAI_OUTPUT_MESSAGES))
            iterations.append(Iteration(len(iterations) + 1, s, reply))
            phases.append(("model", s))
        elif attrs(s).get(ATTR_GENAI_TOOL_NAME) == "repl":
            if not iterations:
                iterations.append(Iteration(1, None, ""))
            a = attrs(s)
            calls = [k for k in index.get(s["span_id"], []) if operation(k) == "execute_tool"]
            iterations[-1].cells.append(Cell(
                s, as_int(a.get("heterarch.cell.index")) or len(iterations[-1].cells) + 1,
                str(a.get(ATTR_GENAI_TOOL_ARGUMENTS) or ""),
                str(a.get(ATTR_GENAI_TOOL_RESULT) or ""), error_type(s), calls))
            phases.append(("cell", s))
            phases.extend(("sub-calls", k) for k in calls)
    return iterations, phases


def _lanes(chats: list[Span], agent: Span | None) -> tuple[list[Lane], dict[str, float]]:
    """Model calls packed into rows per (pool, instance): a call takes the first free row, so
    the rows a pool needs are the calls it ran at once. Stragglers: STRAGGLER_FACTOR x the
    median of their pool's sub-calls, or more."""
    medians: dict[str, float] = {}
    by_pool: dict[str, list[float]] = {}
    agent_id = agent["span_id"] if agent is not None else ""
    for s in chats:
        if s.get("parent_span_id") != agent_id:
            by_pool.setdefault(str(attrs(s).get(ATTR_POOL, "?")), []).append(seconds(s))
    for pool, values in by_pool.items():
        medians[pool] = statistics.median(values)
    groups: dict[tuple[str, str], list[Span]] = {}
    for s in chats:
        groups.setdefault((str(attrs(s).get(ATTR_POOL, "?")), str(s.get("instance") or "")),
                          []).append(s)
    lanes = []
    for (pool, instance), members in sorted(groups.items()):
        free_at: list[int] = []
        bars = []
        def running(s: Span) -> int:  # after its wait for the pool's concurrency limit
            return start(s) + min(int(as_float(attrs(s).get("heterarch.queue_ms")) * 1e6),
                                  end(s) - start(s))

        for s in sorted(members, key=running):
            slot = next((i for i, t in enumerate(free_at) if t <= running(s)), len(free_at))
            if slot == len(free_at):
                free_at.append(0)
            free_at[slot] = end(s)
            queued = running(s) - start(s)
            sub_call = s.get("parent_span_id") != agent_id
            straggler = (sub_call and len(by_pool.get(pool, [])) >= 3
                         and seconds(s) >= STRAGGLER_FACTOR * medians.get(pool, 0.0) > 0)
            bars.append(Bar(s, pool, instance, slot, min(queued, end(s) - start(s)),
                            straggler, sub_call))
        hardware = next((str(attrs(s).get(ATTR_HARDWARE)) for s in members
                         if attrs(s).get(ATTR_HARDWARE)), "")
        lanes.append(Lane(pool, hardware, instance, len(free_at), bars))
    return lanes, medians


def _pool_stats(chats: list[Span], lanes: list[Lane]) -> dict[str, PoolStats]:
    pools: dict[str, PoolStats] = {}
    for s in chats:
        a = attrs(s)
        pool = str(a.get(ATTR_POOL, "?"))
        p = pools.setdefault(pool, PoolStats(pool))
        p.hardware = p.hardware or str(a.get(ATTR_HARDWARE) or "")
        if s.get("instance"):
            p.instances.add(str(s["instance"]))
        if failed(s):
            p.errors += 1
            p.error_types[error_type(s)] += 1
        else:
            p.calls += 1
            p.latencies.append(seconds(s))
        p.input_tokens += as_int(a.get(ATTR_GENAI_INPUT_TOKENS))
        p.output_tokens += as_int(a.get(ATTR_GENAI_OUTPUT_TOKENS))
        p.cost_usd += as_float(a.get(ATTR_COST_USD))
        p.busy_s += seconds(s)
    for lane in lanes:
        p = pools[lane.pool]
        p.peak_concurrency = max(p.peak_concurrency, lane.slots)
    return dict(sorted(pools.items(), key=lambda kv: -kv[1].cost_usd))


def build_run(spans: list[Span]) -> Run:
    """The run of one trace's spans (any order; spans of a run still going are fine)."""
    spans = sorted(spans, key=start)
    index = children_index(spans)
    root = _find_root(spans)
    agent = _find_agent(spans, index)
    iterations, phases = _iterations(agent, index) if agent is not None else ([], [])
    children = [(s, _iterations(s, index)[0]) for s in spans
                if s is not agent and operation(s) == "invoke_agent"
                and any(attrs(k).get(ATTR_GENAI_TOOL_NAME) == "repl"
                        for k in index.get(s["span_id"], []))]
    chats = [s for s in spans if operation(s) == "chat"]
    lanes, _ = _lanes(chats, agent)
    pools = _pool_stats(chats, lanes)
    start_ns = min((start(s) for s in spans), default=0)
    end_ns = max((end(s) for s in spans), default=0)
    a = attrs(root) if root is not None else {}
    question = message_text(a.get(ATTR_GENAI_INPUT_MESSAGES)) or str(a.get("input.value") or "")
    if not question and iterations and iterations[0].chat is not None:
        question = last_user_text(attrs(iterations[0].chat).get(ATTR_GENAI_INPUT_MESSAGES))
    answer = message_text(a.get(ATTR_GENAI_OUTPUT_MESSAGES)) or str(a.get("output.value") or "")
    events = [(s, e) for s in spans for e in s.get("events") or []
              if e.get("name") in ("retry", "route.fallback", "cascade.escalate", "exception")]
    return Run(
        trace_id=str(spans[0]["trace_id"]) if spans else "",
        spans=spans, root=root, agent=agent, start_ns=start_ns, end_ns=end_ns,
        question=question, answer=answer,
        stop_reason=str(a.get("heterarch.stop_reason") or ""),
        status=str(root.get("status", "")) if root is not None else "",
        iterations=iterations, pools=pools, lanes=lanes, phases=phases,
        errors=[s for s in spans if failed(s)], events=events,
        complete=root is not None and not root.get("parent_span_id")
        and bool(root.get("end_ns")),
        children=children,
    )
