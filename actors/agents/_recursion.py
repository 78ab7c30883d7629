"""The recursion of an RLM run: ``rlm_query`` and ``rlm_query_batched`` from the sandbox.

Each call is a child RLM agent (its own sandbox and ``context``) on a pool the router picks, on
lanes of at most ``CHILD_LANES`` per pool, with an equal share of the budget left. At the last
level (``max_depth``) it is a plain sub-call instead.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import anyio

from .._actor import Actor
from ._budget import Reservation
from ._lanes import Lanes
from ._messages import Answer, Query, merge_usage
from ._state import RunState, item_error
from ._subcalls import SubCalls
from ._timeouts import child_timeout

#: Child agents one run keeps per pool.
CHILD_LANES = 4


class Recursion:
    """The child agents of one run, of ``agent_class`` (the RLM agent)."""

    def __init__(self, run: RunState, sub_calls: SubCalls, agent_class: type[Actor]) -> None:
        self.run = run
        self.sub_calls = sub_calls
        self.lanes = Lanes(run.ctx, agent_class, limit_of=lambda pool: CHILD_LANES)

    async def rlm_query(self, prompt: str, context: str = "", **options: Any) -> str:
        with self.run.tool_span("rlm_query"):
            return await self._sub_rlm(str(prompt), str(context), options)

    async def rlm_query_batched(
        self, prompts: list[str], contexts: list[str] | None = None, **options: Any
    ) -> list[str]:
        contexts = contexts or [""] * len(prompts)
        if len(contexts) != len(prompts):
            raise ValueError("rlm_query_batched needs one context per prompt")
        with self.run.tool_span("rlm_query_batched", batch=len(prompts)):
            pairs = zip(prompts, contexts, strict=True)
            return await _gather(
                [partial(self._sub_rlm, str(p), str(c), options, len(prompts)) for p, c in pairs]
            )

    async def _sub_rlm(self, prompt: str, context: str, options: dict[str, Any],
                       ways: int = 1) -> str:
        """A child agent with one of ``ways`` equal shares of the budget left (its siblings
        in the batch take the others)."""
        run = self.run
        q = run.query
        if q.depth + 1 >= q.max_depth:
            text = prompt if not context else f"{prompt}\n\n{context}"
            return await self.sub_calls.sub_llm(text, options)
        run.check_budget()
        pool, reason = self.sub_calls.route(prompt + context[:2000], "rlm", dict(options), set())
        share = run.ledger.share(ways)
        held = run.ledger.reserve(Reservation(share.tokens, share.dollars, share.calls))
        child_query = Query(
            question=prompt, context=context, max_depth=q.max_depth,
            max_iterations=q.max_iterations, depth=q.depth + 1, budget=share,
            pool_override=q.pool_override, cell_timeout_s=q.cell_timeout_s, pools=q.pools,
            route_reason=reason, conversation_id=q.conversation_id, tools=q.tools, host=q.host,
            cache_calls=q.cache_calls, cache_scope=run.cache_scope,
            cache_across_runs=q.cache_across_runs, run_id=run.run_id,
            incarnation=run.incarnation, branch=q.branch or uuid.uuid4().hex,
        )
        sent = time.monotonic()
        run.pending_branches.add(child_query.branch)
        try:
            async with self.lanes.lane(pool) as lane:
                run.count_agent(lane)
                answer: Answer = await lane.ask(child_query, timeout=child_timeout(
                    run.pools.get(pool), max_iterations=q.max_iterations,
                    cell_timeout_s=q.cell_timeout_s, wall_s=share.wall_s))
            merge_usage(run.usage, answer.usage)
            run.pending_branches.discard(child_query.branch)
        except Exception as exc:
            run.record_call("rlm", prompt, sent, pool=pool, error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            run.ledger.settle(held)
        run.record_call("rlm", prompt, sent, pool=pool, text=answer.text, usage=answer.usage,
                        error="" if answer.ok else answer.stop_reason)
        for depth, n in answer.agents_by_depth.items():
            run.agents_by_depth[depth] = run.agents_by_depth.get(depth, 0) + n
        return answer.text if answer.ok else f"[{answer.stop_reason}] {answer.text}"


async def _gather(calls: list[Callable[[], Awaitable[str]]]) -> list[str]:
    """Run ``calls`` concurrently; a call that fails gives its error as its text."""
    results: list[str] = [""] * len(calls)

    async def one(i: int) -> None:
        try:
            results[i] = await calls[i]()
        except Exception as exc:  # this item's own error; the batch goes on
            results[i] = item_error(exc)

    async with anyio.create_task_group() as tg:
        for i in range(len(calls)):
            tg.start_soon(one, i)
    return results
