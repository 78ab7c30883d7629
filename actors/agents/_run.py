"""The loop of an RLM run: the model's turns, the cells they write, and the final answer.

``Run`` puts the parts of one query together: the shared ``RunState``, the ``Repl`` (sandbox and
cells), the ``SubCalls`` (``llm_query``...) and the ``Recursion`` (``rlm_query``...), the last
two being the sandbox's callbacks.
"""

from __future__ import annotations

import json
import time
from functools import partial
from typing import Any

import anyio
from opentelemetry import trace

from .._actor import Actor
from .._context import Context
from .._semconv import (
    ATTR_GENAI_CONVERSATION_ID,
    ATTR_GENAI_INPUT_MESSAGES,
    ATTR_GENAI_OUTPUT_MESSAGES,
    content_capture_enabled,
    genai_messages,
)
from ..errors import BudgetExceeded
from ._messages import (
    Answer,
    CheckAnswer,
    PoolUsage,
    Query,
    Step,
    ToolResult,
    add_cancelled,
    call_usage,
    merge_usage,
    total_cost,
    total_tokens,
)
from ._ports import ChatMessage, Completion, cached_completion
from ._prompts import (
    ANSWER_SCHEMA_NOTE,
    CODE_BLOCK,
    FINAL,
    FINAL_VAR,
    IMAGE_CONTEXT_NOTE,
    SYSTEM_PROMPT,
    context_preview,
    sub_window_note,
    tools_note,
)
from ._recursion import Recursion
from ._repl import Repl
from ._spans import mark_outcome, note_route, usage_attributes
from ._state import RunState
from ._subcalls import SubCalls
from ._tools import Tools


class Run:
    """One query: the loop, with the sandbox, the sub-calls, the children, the budget and the
    usage roll-up. ``child_class``: the agent class of ``rlm_query``'s children."""

    def __init__(self, ctx: Context, query: Query, *, output_limit: int, lanes_per_pool: int,
                 child_class: type[Actor]) -> None:
        self.state = RunState(ctx, query, output_limit=output_limit,
                            lanes_per_pool=lanes_per_pool)
        self.sub_calls = SubCalls(self.state)
        self.recursion = Recursion(self.state, self.sub_calls, child_class)
        self.tools = Tools(self.state)
        self.repl = Repl(self.state, {
            "llm_query": self.sub_calls.llm_query,
            "llm_query_batched": self.sub_calls.llm_query_batched,
            "rlm_query": self.recursion.rlm_query,
            "rlm_query_batched": self.recursion.rlm_query_batched,
            "call_tool": self.tools.call_tool,
        })
        self.value: Any = None  # the final answer as data (a typed run)
        self.rejected = ""  # why the last final answer did not fit its type

    async def execute(self) -> Answer:
        run = self.state
        q = run.query
        self._describe_run()
        stop_reason = "max_iterations"
        final: str | None = None
        wall = q.budget.wall_s
        try:
            await run.report("loading the context")
            context = await self.repl.load_context()
            system = q.system_prompt or SYSTEM_PROMPT.format(
                context_chars=len(context), context_lines=context.count("\n") + 1,
                output_limit=run.output_limit, depth=q.depth, max_depth=q.max_depth,
                sub_window=sub_window_note(self._sub_windows()),
            )
            if q.images:
                system += IMAGE_CONTEXT_NOTE.format(count=len(q.images), sizes=", ".join(
                    f"{i.width}x{i.height}" for i in q.images[:8]))
            if q.tools:
                system += tools_note(q.tools)
            if q.answer_schema:
                system += ANSWER_SCHEMA_NOTE.format(schema=json.dumps(q.answer_schema))
            if q.instructions:
                system += "\n\n" + q.instructions
            messages: list[ChatMessage] = [
                {"role": "system", "content": system},
                {"role": "user", "content": f"Question: {q.question}"
                 + ("" if q.images else context_preview(context))},
            ]
            failure: Exception | None = None
            async with anyio.create_task_group() as tg:
                # The sandbox starts while the root model writes its first reply.
                tg.start_soon(self.repl.start_soon, context)
                with anyio.move_on_after(wall if wall > 0 else None) as wall_scope:
                    try:
                        final, stop_reason = await self._loop(messages)
                    except Exception as exc:  # raised below, outside the task group
                        failure = exc
            if failure is not None:
                raise failure
            if wall_scope.cancelled_caught:
                stop_reason = f"budget: wall time {wall:g}s exceeded"
        except BudgetExceeded as exc:
            stop_reason = run.ledger.stop_reason(exc)
        except Exception as exc:
            stop_reason = f"error: {type(exc).__name__}: {exc}"
        except anyio.get_cancelled_exc_class():
            # Stopped, interrupted or past its deadline: no answer, but the asker's live view
            # learns what was spent up to the stop (cancelled calls at their estimate).
            with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                await run.count_unanswered_children()
            with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                await run.report("interrupted")
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await self._close()
        text = final if final is not None else self.repl.best_partial
        self._record_rollups(stop_reason if final is None else "final", text)
        return Answer(
            text=text,
            ok=final is not None,
            stop_reason="final" if final is not None else stop_reason,
            iterations=run.iterations,
            usage=run.usage,
            cost_usd=total_cost(run.usage),
            wall_s=time.monotonic() - run.started,
            agents_by_depth=run.agents_by_depth,
            trace_id=_trace_id(),
            # The root's own iterations (a child's would travel to its parent for nothing:
            # each of its sub-calls is in the parent's step already).
            trajectory=run.trajectory if q.depth == 0 else [],
            value=self.value if final is not None else None,
        )

    def _sub_windows(self) -> dict[str, int]:
        """The context windows (tokens) of the pools this run's sub-calls may use."""
        q = self.state.query
        pools = self.state.pools
        if q.pool_override:
            allowed = [q.pool_override]
        else:
            allowed = [name for name in (q.pools or pools) if name in pools]
        return {name: pools[name].context_window for name in allowed
                if name in pools and pools[name].model}

    def _describe_run(self) -> None:
        """What this agent was asked, on its span: the run's id, why it runs on this pool, the
        question (content capture only)."""
        run = self.state
        span = trace.get_current_span()
        if not span.is_recording():
            return
        q = run.query
        if q.conversation_id:
            span.set_attribute(ATTR_GENAI_CONVERSATION_ID, q.conversation_id)
        note_route(q.route_reason)
        if content_capture_enabled():
            span.set_attribute(ATTR_GENAI_INPUT_MESSAGES, genai_messages(
                [{"role": "user", "content": q.question}]))

    def _record_rollups(self, stop_reason: str, text: str) -> None:
        """Totals of the whole subtree on this agent's span (the root's span: the whole run),
        its status (ERROR with ``error.type`` when it did not answer), the answer (opt-in)."""
        run = self.state
        span = trace.get_current_span()
        if not span.is_recording():
            return
        attributes: dict[str, Any] = {
            **usage_attributes(run.usage),
            "heterarch.usage.tokens": total_tokens(run.usage),
            "heterarch.stop_reason": stop_reason,
            "heterarch.iterations": run.iterations,
        }
        for depth, n in run.agents_by_depth.items():
            attributes[f"heterarch.agents.depth_{depth}"] = n
        if content_capture_enabled():
            attributes[ATTR_GENAI_OUTPUT_MESSAGES] = genai_messages(
                [{"role": "assistant", "content": text}], finish_reason=stop_reason)
        span.set_attributes(attributes)
        mark_outcome(span, stop_reason)

    async def _loop(self, messages: list[ChatMessage]) -> tuple[str | None, str]:
        run = self.state
        for _ in range(run.query.max_iterations):
            run.iterations += 1
            run.check_budget()
            await run.report("waiting for the model")
            run.calls = []
            before = _own_usage(run.usage.get(run.ctx.pool))
            sent = time.monotonic()
            reply = await self._own_completion(messages)
            latency = time.monotonic() - sent
            own = {k: v - before[k] for k, v in _own_usage(run.usage.get(run.ctx.pool)).items()}
            messages.append({"role": "assistant", "content": reply})
            blocks = CODE_BLOCK.findall(reply)
            outputs: list[str] = []
            step = partial(self._step, reply, blocks, outputs, own, latency)
            try:
                outputs += [await self.repl.run_cell(i, code) for i, code in enumerate(blocks, 1)]
                final = await self._final_answer(reply)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await run.end_step(step(""))
                raise
            if final is not None:
                await run.end_step(step(""))
                return final, "final"
            if outputs:
                feedback = "\n\n".join(outputs)
            else:
                feedback = ("No ```repl block and no FINAL(...) in your reply. Write code, or "
                            "finish with FINAL(answer).")
            if self.rejected:  # a final answer of the wrong type: the model tries again
                feedback = (f"{feedback}\n\n" if outputs else "") + (
                    f"Your final answer does not fit the required type: {self.rejected}\n"
                    "Fix it and finish again.")
            await run.end_step(step(feedback))
            messages.append({"role": "user", "content": feedback})
        return None, "max_iterations"

    def _step(self, reply: str, code: list[str], outputs: list[str], own: dict[str, float],
              latency: float, feedback: str) -> Step:
        """This iteration's record: the model's reply (with its own call's usage and latency),
        the code, what the model saw next, and the sub-calls the code made."""
        run = self.state
        return Step(
            agent_id=run.ctx.self_ref.actor_id, depth=run.query.depth,
            iteration=run.iterations, pool=run.ctx.pool, reply=reply, code=list(code),
            output=feedback or "\n\n".join(outputs), sub_calls=list(run.calls),
            input_tokens=int(own["input_tokens"]), output_tokens=int(own["output_tokens"]),
            cost_usd=own["cost_usd"], latency_s=latency)

    async def _own_completion(self, messages: list[ChatMessage]) -> str:
        run = self.state
        pool = run.ctx.pool
        held = run.ledger.reserve(run.ledger.estimate(
            pool, "\n".join(m["content"] for m in messages), None))
        try:
            llm = run.services.require_llm()
            if run.cache_scope:
                completion = await llm.complete(messages, cache_scope=run.cache_scope,
                                                cache_across_runs=run.query.cache_across_runs,
                                                cache_owner=run.cache_owner())
            else:
                completion = await llm.complete(messages)
        except anyio.get_cancelled_exc_class():
            run.ledger.settle(held)
            add_cancelled(run.usage, pool, held.tokens, held.dollars)
            raise
        except BaseException:
            run.ledger.settle(held)
            raise
        self._account(pool, completion)
        paid = not cached_completion(completion)[0]
        run.ledger.settle(held, pool=pool, output_tokens=completion.output_tokens if paid else 0)
        return completion.text

    def _account(self, pool: str, completion: Completion) -> None:
        run = self.state
        own = run.services.pool_info
        merge_usage(run.usage, {pool: call_usage(completion,
                                                 hardware=own.hardware if own else "")})

    async def _final_answer(self, reply: str) -> str | None:
        """The final answer the reply (or its code) gave, as text; for a typed run, only one
        that the asker's check accepts (``self.value``: it as data; ``self.rejected``: why
        the last one was refused)."""
        self.rejected = ""
        found, raw = await self._raw_final(reply)
        if not found:
            return None
        q = self.state.query
        if not q.answer_schema:
            return str(raw)
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError:
                pass
        value: Any = raw
        if q.host is not None:
            checked: ToolResult = await q.host.ask(CheckAnswer(value=raw),
                                                   timeout=q.cell_timeout_s)
            if checked.error:
                self.rejected = checked.error
                sandbox = await self.repl.ready()
                await sandbox.exec('answer["ready"] = False', timeout=30)
                return None
            value = checked.value
        self.value = value
        return json.dumps(value, ensure_ascii=False)

    async def _raw_final(self, reply: str) -> tuple[bool, Any]:
        """``(True, value)`` for a final answer in the reply or the REPL, else ``(False, _)``."""
        answer = await (await self.repl.ready()).get_var("answer")
        if isinstance(answer, dict) and answer.get("ready"):
            return True, answer.get("content", "")
        prose = CODE_BLOCK.sub("", reply)
        match = FINAL_VAR.search(prose)
        if match:
            name = match.group(1).strip().strip("'\"")
            try:
                return True, await (await self.repl.ready()).get_var(name)
            except Exception:
                return False, None
        match = FINAL.search(prose)
        if match:
            return True, match.group(1).strip()
        return False, None

    async def _close(self) -> None:
        await self.repl.close()
        await self.sub_calls.lanes.close()
        await self.recursion.lanes.close()


def _own_usage(usage: PoolUsage | None) -> dict[str, float]:
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}
    return {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            "cost_usd": usage.cost_usd}


def _trace_id() -> str:
    ctx = trace.get_current_span().get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else ""
