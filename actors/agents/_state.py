"""What the parts of one RLM run share: the query, the engine's services, the usage, the budget,
the agents it started, and the live view of the asker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import anyio
from opentelemetry import context as otel_context
from opentelemetry import trace

from .._context import Context
from .._ref import ActorRef
from ._budget import Ledger, Reservation
from ._messages import (
    LLMReply,
    PoolUsage,
    Query,
    RunProgress,
    Step,
    SubCall,
    Usage,
    add_cancelled,
    add_lost,
    merge_usage,
    total_cost,
    total_tokens,
)
from ._ports import AgentServices, PoolInfo, RouteStats
from ._spans import mark_exception, mark_ok, tool_attributes

tracer = trace.get_tracer("heterarch")


class RunState:
    """One query's shared state. ``output_limit``: characters of a cell's output the model
    sees; ``lanes_per_pool``: most lane agents one run keeps on a pool."""

    def __init__(self, ctx: Context, query: Query, *, output_limit: int,
                 lanes_per_pool: int) -> None:
        self.ctx = ctx
        self.query = query
        self.output_limit = output_limit
        self.lanes_per_pool = lanes_per_pool
        self.services: AgentServices = ctx.agent_services
        self.usage: Usage = {}
        self.started = time.monotonic()
        self.iterations = 0
        self.agents_by_depth: dict[int, int] = {}
        self.seen_lanes: set[str] = set()
        self.phase = "starting"
        self.sub_calls_started = 0
        self.sub_calls_done = 0
        self.pool_progress: dict[str, list[int]] = {}  # pool -> [sub-calls done, sent]
        #: The trace context of the cell running now: the parent of its callbacks' spans.
        self.callback_context: otel_context.Context | None = None
        self.ledger = Ledger(query.budget, spent=self._spent, prices=self._prices,
                             started=self.started, calls=self._calls)
        self.trajectory: list[Step] = []  # the iterations so far (``Answer.trajectory``)
        self.calls: list[SubCall] = []  # the sub-calls of the current iteration's code
        #: Whose spend this tree's calls are: the run (the root's id, the same through its
        #: restarts) and this life of the root (children inherit both).
        self.run_id = query.run_id or ctx.self_ref.actor_id
        self.incarnation = query.incarnation or uuid.uuid4().hex
        #: The root's children asked and not answered yet (their ``Query.branch``).
        self.pending_branches: set[str] = set()

    def cache_owner(self, call: str = "") -> str:
        """``CallOwner`` (as text) of a call of this run: ``call`` names one logical call
        (the same through re-sends), "" for the agent's own turns; in a child's subtree, the
        call is ``<branch>:<call>``."""
        if self.query.branch:
            call = f"{self.query.branch}:{call}"
        return f"{self.run_id}|{self.incarnation}|{call}"

    @property
    def cache_scope(self) -> str:
        """The run's call cache: its ``Query.cache_scope``, else its ``conversation_id``, else
        this (root) agent's id; "" when the query turned the cache off."""
        q = self.query
        if not q.cache_calls:
            return ""
        return q.cache_scope or q.conversation_id or self.ctx.self_ref.actor_id

    # -- what the engine says ---------------------------------------------------------------------
    @property
    def pools(self) -> Mapping[str, PoolInfo]:
        return self.services.pools

    def stats(self) -> RouteStats | None:
        """The router's live per-pool statistics on this node (None without a router)."""
        router = self.services.router
        return router.stats if router is not None else None

    # -- the budget -------------------------------------------------------------------------------
    def _spent(self) -> tuple[int, float]:
        return total_tokens(self.usage), total_cost(self.usage)

    def _calls(self) -> int:
        return sum(u.calls + u.lost_calls for u in self.usage.values())

    def _prices(self, pool: str) -> tuple[float, float]:
        config = self.pools.get(pool)
        if config is None:
            return 0.0, 0.0
        return config.input_price_per_mtok, config.output_price_per_mtok

    def check_budget(self) -> None:
        self.ledger.check()

    def reserve(self, pool: str, prompt: str, max_tokens: int | None) -> Reservation:
        """Hold this call's estimate against the budget (``BudgetExceeded`` if it won't fit)."""
        stats = self.stats()
        latency = stats.latency(pool) if stats is not None else None
        return self.ledger.reserve(self.ledger.estimate(pool, prompt, max_tokens),
                                   seconds=latency or 0.0)

    def lost(self, pool: str, prompt: str, max_tokens: int | None, attempts: int, *,
             cancelled: bool = False) -> None:
        """``attempts`` calls of ``prompt`` on ``pool`` whose replies were lost (or that were
        in flight when the run was cancelled): counted in the usage (and so the budget) at
        their estimate, as their reservation was."""
        if attempts > 0:
            held = self.ledger.estimate(pool, prompt, max_tokens)
            add = add_cancelled if cancelled else add_lost
            add(self.usage, pool, held.tokens, held.dollars, attempts)

    async def count_unanswered_children(self) -> None:
        """Add what the children that will never answer (the run is cancelled) paid, as the
        run's call cache has it (calls that completed; those cut off in flight are not)."""
        cache = getattr(self.services.llm, "cache", None)
        if cache is None or not self.cache_scope or not self.pending_branches:
            return
        for paid in await cache.paid_by(self.cache_scope, self.run_id, self.incarnation,
                                        set(self.pending_branches)):
            merge_usage(self.usage, {paid.pool: PoolUsage(
                calls=1, input_tokens=paid.input_tokens, output_tokens=paid.output_tokens,
                cost_usd=paid.cost_usd, cached_input_tokens=paid.cached_tokens)})
        self.pending_branches.clear()

    def settle(self, held: Reservation, pool: str, reply: LLMReply) -> None:
        usage = reply.usage.get(pool)
        self.ledger.settle(held, pool=pool,
                           output_tokens=usage.output_tokens if usage is not None else 0)

    # -- the record of the run --------------------------------------------------------------------
    def record_call(self, kind: str, prompt: str, sent: float, *, pool: str = "",
                    reply: LLMReply | None = None, text: str = "", error: str = "",
                    name: str = "", usage: Usage | None = None) -> None:
        """One sub-call of this iteration's code, for its ``Step``: a model call (``reply``:
        its usage on ``pool``), a child agent (``usage``: its whole tree's) or a tool."""
        used = PoolUsage()
        if reply is not None:
            used = reply.usage.get(pool, used)
        for u in (usage or {}).values():
            used.input_tokens += u.input_tokens
            used.output_tokens += u.output_tokens
            used.cost_usd += u.cost_usd
        self.calls.append(SubCall(
            kind=kind, name=name, pool=pool, prompt=prompt,
            reply=reply.text if reply is not None else text,
            input_tokens=used.input_tokens, output_tokens=used.output_tokens,
            cost_usd=used.cost_usd, latency_s=time.monotonic() - sent, error=error))

    async def end_step(self, step: Step) -> None:
        """Keep ``step`` and send it to the asker's run log, if any (best effort: the answer
        carries every step anyway)."""
        self.trajectory.append(step)
        if self.query.steps is not None:
            try:
                await self.ctx.send_to_inbox(self.query.steps, step)
            except Exception:  # the log misses a line; the answer still has it
                pass

    # -- the agents it started, and the live view -------------------------------------------------
    def count_agent(self, lane: ActorRef[Any]) -> None:
        if lane.actor_id not in self.seen_lanes:
            self.seen_lanes.add(lane.actor_id)
            depth = self.query.depth + 1
            self.agents_by_depth[depth] = self.agents_by_depth.get(depth, 0) + 1

    async def report(self, phase: str) -> None:
        """Tell the asker's live view where the run stands (root agents asked with a
        ``progress`` inbox only). Best effort: a lost report changes nothing."""
        q = self.query
        if q.progress is None:
            return
        self.phase = phase
        errors = sum(u.errors for u in self.usage.values())
        try:
            await self.ctx.send_to_inbox(q.progress, RunProgress(
                agent_id=self.ctx.self_ref.actor_id, iteration=self.iterations,
                max_iterations=q.max_iterations, phase=phase, usage=dict(self.usage),
                errors=errors, sub_calls_done=self.sub_calls_done,
                sub_calls_started=self.sub_calls_started,
                pools={pool: (n[0], n[1]) for pool, n in self.pool_progress.items()}))
        except Exception:  # the view misses one frame; the run is not its business
            pass

    async def report_sub_calls(self) -> None:
        """Tell the live view how a batch goes while it runs (every half second at most,
        when something changed); cancelled when the batch ends."""
        last: tuple[int, int] | None = None
        while True:
            now = (self.sub_calls_done, sum(n[0] for n in self.pool_progress.values()))
            if now != last:
                last = now
                await self.report(
                    f"sub-calls {self.sub_calls_done} of {self.sub_calls_started} done")
            await anyio.sleep(0.5)

    def sub_call_sent(self, pool: str, n: int = 1) -> None:
        self.pool_progress.setdefault(pool, [0, 0])[1] += n

    def sub_call_finished(self, pool: str) -> None:
        self.pool_progress.setdefault(pool, [0, 0])[0] += 1

    @contextmanager
    def tool_span(self, name: str, **attributes: str | int) -> Iterator[trace.Span]:
        """The span of one callback from the sandbox, a child of the cell that made it: OK,
        or ERROR with ``error.type``."""
        with tracer.start_as_current_span(
            f"execute_tool {name}",
            context=self.callback_context,
            record_exception=False, set_status_on_exception=False,
            attributes={
                **tool_attributes(name, "function"),
                "heterarch.depth": self.query.depth,
                **{f"heterarch.{k}": v for k, v in attributes.items()},
            },
        ) as span:
            try:
                yield span
            except Exception as exc:
                mark_exception(span, exc)
                raise
            mark_ok(span)


def item_error(exc: BaseException) -> str:
    """What one failed item of a batch returns to the model's code, in place of its answer."""
    return f"[error] {type(exc).__name__}: {exc}"
