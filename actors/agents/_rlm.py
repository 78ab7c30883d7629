"""``RLMAgent``: the recursive REPL loop (a Recursive Language Model over heterogeneous pools).

The agent keeps its context as the variable ``context`` in a sandboxed Python REPL. Its model
writes ```repl code blocks; the agent runs them and feeds the (truncated) output back. Code can
call ``llm_query``/``llm_query_batched`` (a plain completion, on the pool the router picks) and
``rlm_query``/``rlm_query_batched`` (a child RLM agent with its own sandbox, until ``max_depth``;
beyond it a plain completion). The run ends with ``FINAL(text)``, ``FINAL_VAR(name)`` or the
sandbox dict ``answer`` with ``answer["ready"] = True`` - or a typed stop reason.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import anyio
from opentelemetry import context as otel_context
from opentelemetry import trace

from .._actor import Actor
from .._semconv import (
    ATTR_GENAI_CONVERSATION_ID,
    ATTR_GENAI_INPUT_MESSAGES,
    ATTR_GENAI_OUTPUT_MESSAGES,
    ATTR_GENAI_TOOL_ARGUMENTS,
    ATTR_GENAI_TOOL_RESULT,
    content_capture_enabled,
    genai_messages,
    truncate_content,
)
from .._supervision import Backoff, SupervisorStrategy
from ..errors import ActorDead, AskTimeout, BudgetExceeded, InvalidImage
from ._budget import Ledger, Reservation
from ._images import store_wire_images, wire_images
from ._lanes import Lanes
from ._llm_agent import LLMAgent
from ._messages import (
    Answer,
    ImageRef,
    LLMReply,
    PoolUsage,
    Prompt,
    PromptOutcome,
    Query,
    RunProgress,
    Usage,
    add_lost,
    merge_usage,
    total_cost,
    total_tokens,
)
from ._ports import (
    AgentSandbox,
    AgentServices,
    BlobStore,
    CellResult,
    Completion,
    LosesState,
    PoolInfo,
    RouteStats,
    SandboxCallback,
)
from ._spans import mark_exception, mark_failed, mark_outcome, note_route, usage_attributes
from ._timeouts import child_timeout, prompts_timeout

tracer = trace.get_tracer("heterarch")

CODE_BLOCK = re.compile(r"```repl[^\n]*\n(.*?)```", re.DOTALL)
FINAL_VAR = re.compile(r"^\s*FINAL_VAR\((.*?)\)\s*$", re.MULTILINE)
FINAL = re.compile(r"^\s*FINAL\((.*)\)\s*$", re.MULTILINE | re.DOTALL)

SYSTEM_PROMPT = """\
You answer a question about a context that is far too large to read at once. The context is \
loaded in a Python REPL as the string variable `context` ({context_chars:,} characters, \
{context_lines:,} lines). Explore it with code, and delegate reading to sub-models:

- `llm_query(prompt: str) -> str`: ask a language model one question (it sees only `prompt`; \
it can read about 100,000 characters well).
- `llm_query_batched(prompts: list[str]) -> list[str]`: many at once, run concurrently. Prefer \
this for chunk-by-chunk work.
- `rlm_query(prompt: str, context: str = "") -> str` and `rlm_query_batched(prompts, contexts)`: \
delegate to a recursive agent like you, with its own REPL and `context`.
- `print(...)` shows you values; output longer than {output_limit:,} characters is truncated.

Write code in fenced blocks that start with ```repl. Variables persist between blocks. When you \
know the answer, end with one of: a line `FINAL(your answer)`; a line `FINAL_VAR(name)` to \
return a REPL variable; or in code `answer["content"] = ...; answer["ready"] = True`.
Recursion depth: {depth} of at most {max_depth}."""

IMAGE_CONTEXT_NOTE = """
`context` is a list of {count} screenshots (Pillow images; sizes {sizes}). Their text is \
small: models see a whole page scaled down and misread it. Helpers: `crop(img, box)`, \
`zoom(img, box, factor)`, `grid(img, rows, cols)` (a list of (box, crop)), `annotate(img, \
boxes, labels)`. `llm_query(prompt, images=[...])` and `llm_query_batched(prompts, \
images=[[...], ...])` send images (Pillow images, PNG/JPEG bytes or paths): reading a crop goes \
to a small vision model, a prompt about the layout of a whole page to a frontier one."""

#: What the prelude imports, run ahead in a warm sandbox (the import is the slow part; the
#: prelude itself must run once per fresh namespace: it wraps the callbacks).
SANDBOX_IMPORTS = """\
try:
    import heterarch_vision
    del heterarch_vision
except ImportError:
    pass
"""

SANDBOX_PRELUDE = """\
try:
    import heterarch_vision as _heterarch_vision
    _heterarch_vision.install(globals())
except ImportError:  # a sandbox image without Pillow: no image helpers
    pass
answer = {"content": "", "ready": False}
def FINAL(value):
    answer["content"] = str(value)
    answer["ready"] = True
def FINAL_VAR(name):
    FINAL(globals()[name] if isinstance(name, str) else name)
"""


def truncate(text: str, limit: int) -> str:
    """Keep the head and the tail of ``text`` with a marker between when over ``limit``."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    return f"{text[:head]}\n... [{len(text) - limit:,} characters truncated] ...\n{text[-tail:]}"


class RLMAgent(Actor):
    """Answers ``Query`` by the recursive REPL loop; see the module docstring."""

    # Dozens of lanes may live on one worker: losing it restarts them all at once, which must
    # not count as a crash loop.
    supervisor_strategy = SupervisorStrategy(max_restarts=512, period=10.0,
                                             backoff=Backoff(initial=0.01, maximum=1.0))

    def __init__(self, output_limit: int = 8000, lanes_per_pool: int = 64) -> None:
        self.output_limit = output_limit
        self.lanes_per_pool = lanes_per_pool

    async def query(self, msg: Query) -> Answer:
        run = _Run(self, msg)
        return await run.execute()


class _Run:
    """One query: the loop, the sandbox, the children, the budget and the usage roll-up."""

    def __init__(self, agent: RLMAgent, query: Query) -> None:
        self.agent = agent
        self.ctx = agent.ctx
        self.query = query
        self.usage: Usage = {}
        self.started = time.monotonic()
        self.iterations = 0
        self.agents_by_depth: dict[int, int] = {}
        self.best_partial = ""
        self.services: AgentServices = self.ctx.agent_services
        pools = self.services.pools

        def limit_of(pool: str) -> int:
            config = pools.get(pool)
            limit = config.max_concurrency if config is not None else 16
            return min(limit, agent.lanes_per_pool)

        def timeout_of(pool: str, in_flight: int) -> float:
            return prompts_timeout(pools.get(pool), in_flight)

        self.llm_lanes = Lanes(self.ctx, LLMAgent, limit_of=limit_of, timeout_of=timeout_of)
        self.rlm_lanes = Lanes(self.ctx, RLMAgent, limit_of=lambda pool: 4)
        self.sandbox: AgentSandbox | None = None
        self._sandbox_ready = anyio.Event()
        self._sandbox_failure: Exception | None = None
        self.seen_lanes: set[str] = set()
        self.phase = "starting"
        self.sub_calls_started = 0
        self.sub_calls_done = 0
        self._callback_context: Any = None
        self._context = ""
        self.ledger = Ledger(query.budget, spent=self._spent, prices=self._prices,
                             started=self.started)

    def _spent(self) -> tuple[int, float]:
        return total_tokens(self.usage), total_cost(self.usage)

    def _prices(self, pool: str) -> tuple[float, float]:
        config = self._pools().get(pool)
        if config is None:
            return 0.0, 0.0
        return config.input_price_per_mtok, config.output_price_per_mtok

    def _stats(self) -> RouteStats | None:
        """The router's live per-pool statistics on this node (None without a router)."""
        router = self.services.router
        return router.stats if router is not None else None

    def _pools(self) -> Mapping[str, PoolInfo]:
        return self.services.pools

    # -- the loop ---------------------------------------------------------------------------------
    async def execute(self) -> Answer:
        q = self.query
        self._describe_run()
        stop_reason = "max_iterations"
        final: str | None = None
        wall = q.budget.wall_s
        try:
            context = await self._load_context()
            system = SYSTEM_PROMPT.format(
                context_chars=len(context), context_lines=context.count("\n") + 1,
                output_limit=self.agent.output_limit, depth=q.depth, max_depth=q.max_depth,
            )
            if q.images:
                system += IMAGE_CONTEXT_NOTE.format(count=len(q.images), sizes=", ".join(
                    f"{i.width}x{i.height}" for i in q.images[:8]))
            messages = [
                {"role": "system", "content": system},
                {"role": "user", "content": f"Question: {q.question}"},
            ]
            failure: Exception | None = None
            async with anyio.create_task_group() as tg:
                # The sandbox starts while the root model writes its first reply.
                tg.start_soon(self._start_sandbox_soon, context)
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
            stop_reason = self.ledger.stop_reason(exc)
        except Exception as exc:
            stop_reason = f"error: {type(exc).__name__}: {exc}"
        finally:
            with anyio.CancelScope(shield=True):
                await self._cleanup()
        text = final if final is not None else self.best_partial
        self._record_rollups(stop_reason if final is None else "final", text)
        return Answer(
            text=text,
            ok=final is not None,
            stop_reason="final" if final is not None else stop_reason,
            iterations=self.iterations,
            usage=self.usage,
            cost_usd=total_cost(self.usage),
            wall_s=time.monotonic() - self.started,
            agents_by_depth=self.agents_by_depth,
            trace_id=_trace_id(),
        )

    def _describe_run(self) -> None:
        """What this agent was asked, on its span: the run's id, why it runs on this pool, the
        question (content capture only)."""
        span = trace.get_current_span()
        if not span.is_recording():
            return
        q = self.query
        if q.conversation_id:
            span.set_attribute(ATTR_GENAI_CONVERSATION_ID, q.conversation_id)
        note_route(q.route_reason)
        if content_capture_enabled():
            span.set_attribute(ATTR_GENAI_INPUT_MESSAGES, genai_messages(
                [{"role": "user", "content": q.question}]))

    def _record_rollups(self, stop_reason: str, text: str) -> None:
        """Totals of the whole subtree on this agent's span (the root's span: the whole run),
        its status (ERROR with ``error.type`` when it did not answer), the answer (opt-in)."""
        span = trace.get_current_span()
        if not span.is_recording():
            return
        attributes: dict[str, Any] = {
            **usage_attributes(self.usage),
            "heterarch.usage.tokens": total_tokens(self.usage),
            "heterarch.stop_reason": stop_reason,
            "heterarch.iterations": self.iterations,
        }
        for depth, n in self.agents_by_depth.items():
            attributes[f"heterarch.agents.depth_{depth}"] = n
        if content_capture_enabled():
            attributes[ATTR_GENAI_OUTPUT_MESSAGES] = genai_messages(
                [{"role": "assistant", "content": text}], finish_reason=stop_reason)
        span.set_attributes(attributes)
        mark_outcome(span, stop_reason)

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
                sub_calls_started=self.sub_calls_started))
        except Exception:  # the view misses one frame; the run is not its business
            pass

    async def _loop(self, messages: list[dict[str, str]]) -> tuple[str | None, str]:
        for _ in range(self.query.max_iterations):
            self.iterations += 1
            self.check_budget()
            await self.report("the model writes code")
            reply = await self._own_completion(messages)
            messages.append({"role": "assistant", "content": reply})
            blocks = CODE_BLOCK.findall(reply)
            outputs = [await self._run_cell(i, code) for i, code in enumerate(blocks, 1)]
            final = await self._final_answer(reply)
            if final is not None:
                return final, "final"
            if outputs:
                feedback = "\n\n".join(outputs)
            else:
                feedback = ("No ```repl block and no FINAL(...) in your reply. Write code, or "
                            "finish with FINAL(answer).")
            messages.append({"role": "user", "content": feedback})
        return None, "max_iterations"

    async def _own_completion(self, messages: list[dict[str, str]]) -> str:
        pool = self.ctx.pool
        held = self.ledger.reserve(self.ledger.estimate(
            pool, "\n".join(m["content"] for m in messages), None))
        try:
            completion = await self.services.require_llm().complete(list(messages))
        except BaseException:
            self.ledger.settle(held)
            raise
        self._account(pool, completion)
        self.ledger.settle(held, pool=pool, output_tokens=completion.output_tokens)
        return completion.text

    def _account(self, pool: str, completion: Completion) -> None:
        own = self.services.pool_info
        u = self.usage.setdefault(pool, PoolUsage(hardware=own.hardware if own else ""))
        u.calls += 1
        u.input_tokens += completion.input_tokens
        u.output_tokens += completion.output_tokens
        u.cost_usd += completion.cost_usd

    async def _final_answer(self, reply: str) -> str | None:
        answer = await (await self._ready_sandbox()).get_var("answer")
        if isinstance(answer, dict) and answer.get("ready"):
            return str(answer.get("content", ""))
        prose = CODE_BLOCK.sub("", reply)
        match = FINAL_VAR.search(prose)
        if match:
            name = match.group(1).strip().strip("'\"")
            try:
                return str(await (await self._ready_sandbox()).get_var(name))
            except Exception:
                return None
        match = FINAL.search(prose)
        if match:
            return match.group(1).strip()
        return None

    # -- the sandbox ------------------------------------------------------------------------------
    async def _load_context(self) -> str:
        q = self.query
        if q.context_ref:
            data = await self.services.blobs.get_blob(q.context_ref)
            return data.decode("utf-8", errors="replace")
        return q.context

    async def _start_sandbox_soon(self, context: str) -> None:
        """Start the sandbox; its failure is raised where the sandbox is first needed."""
        try:
            await self._start_sandbox(context)
        except Exception as exc:
            self._sandbox_failure = exc
        finally:
            self._sandbox_ready.set()

    async def _ready_sandbox(self) -> AgentSandbox:
        await self._sandbox_ready.wait()
        if self._sandbox_failure is not None:
            raise self._sandbox_failure
        assert self.sandbox is not None
        return self.sandbox

    async def _start_sandbox(self, context: str) -> None:
        # a worker's sandboxes: one is started ahead
        self.sandbox = await self.services.require_sandboxes().take(self._callbacks())
        await self._load_state(self.sandbox, context)

    async def _load_state(self, sandbox: AgentSandbox, context: str) -> None:
        self._context = context
        await sandbox.set_var("context", context)
        await sandbox.exec(SANDBOX_PRELUDE, timeout=30)
        if self.query.images:  # an image context: a list of Pillow images, loaded by file
            wire = await wire_images(self.services.blobs, self.query.images)
            await sandbox.set_var("_context_images", json.dumps(wire))
            loaded = await sandbox.exec(
                "import json as _json\n"
                "context = _heterarch_vision.images_from_wire(_json.loads(_context_images))\n"
                "del _context_images", timeout=120)
            if loaded.error is not None:  # no image helpers in this sandbox, or bad images
                raise InvalidImage(f"the image context did not load in the sandbox: "
                                   f"{loaded.error.type}: {loaded.error.message}")

    async def _run_cell(self, index: int, code: str) -> str:
        self.check_budget()
        await self.report(f"running cell {index}")
        sandbox = await self._ready_sandbox()  # a sandbox that did not start ends the run
        with tracer.start_as_current_span(
            "execute_tool repl",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "repl",
                "heterarch.actor.id": self.ctx.self_ref.actor_id,
                "heterarch.depth": self.query.depth,
                "heterarch.cell.index": index,
                "heterarch.cell.chars": len(code),
            },
        ) as span:
            capture = content_capture_enabled() and span.is_recording()
            if capture:
                span.set_attribute(ATTR_GENAI_TOOL_ARGUMENTS, truncate_content(code))
            self._callback_context = otel_context.get_current()
            try:
                result = await sandbox.exec(code, timeout=self.query.cell_timeout_s)
            except Exception as exc:
                if isinstance(exc, BudgetExceeded):
                    raise
                mark_exception(span, exc)
                lost = isinstance(exc, LosesState) and exc.state_lost
                if lost:
                    await self._load_state(sandbox, self._context)
                note = " The REPL was restarted: variables are gone, `context` is reloaded." \
                    if lost else ""
                return f"[cell {index}] {type(exc).__name__}: {exc}.{note}"
            output = self._describe(index, result)
            error = result.error
            if error:  # the model's code raised: the tool call failed, the agent goes on
                mark_failed(span, error.type or type(error).__name__,
                            error.message or str(error))
            if capture:
                span.set_attribute(ATTR_GENAI_TOOL_RESULT, truncate_content(output))
            return output

    def _describe(self, index: int, result: CellResult) -> str:
        parts = []
        stdout = result.stdout or ""
        stderr = result.stderr or ""
        if stdout:
            parts.append(stdout)
            self.best_partial = stdout.strip()[-2000:]
        if stderr:
            parts.append(f"[stderr]\n{stderr}")
        error = result.error
        if error:
            etype = error.type or type(error).__name__
            emsg = error.message or str(error)
            tb = error.traceback or ""
            parts.append(f"[error] {etype}: {emsg}\n{tb[-1500:]}")
        body = "\n".join(parts) if parts else "(no output)"
        return f"[cell {index} output]\n{truncate(body, self.agent.output_limit)}"

    # -- callbacks from the sandbox ---------------------------------------------------------------
    def _callbacks(self) -> dict[str, SandboxCallback]:
        return {
            "llm_query": self.llm_query,
            "llm_query_batched": self.llm_query_batched,
            "rlm_query": self.rlm_query,
            "rlm_query_batched": self.rlm_query_batched,
        }

    async def llm_query(self, prompt: str, images: Any = None, **options: Any) -> str:
        """``images``: as the REPL helpers send them; checked and put in the blob store."""
        with self._tool_span("llm_query", images=len(images or ())):
            return await self._sub_llm(str(prompt), options, images)

    async def llm_query_batched(
        self, prompts: list[str], pools: list[str] | None = None, images: Any = None,
        **options: Any
    ) -> list[str]:
        """``pools`` (optional) names a pool per prompt; else ``pool=`` or the router decides.
        ``images`` (optional): one list of images per prompt."""
        if pools is not None and len(pools) != len(prompts):
            raise ValueError("llm_query_batched needs one pool per prompt in `pools`")
        if images is not None and (not isinstance(images, list) or len(images) != len(prompts)):
            raise InvalidImage("llm_query_batched needs one list of images per prompt")
        per_prompt = [dict(options, pool=pools[i]) if pools else options
                      for i in range(len(prompts))]
        if images is None:
            with self._tool_span("llm_query_batched", batch=len(prompts)):
                return await self._reported_batch([str(p) for p in prompts], per_prompt)
        blobs = self.services.blobs
        stored: list[list[ImageRef]] = []
        try:  # every image is checked and stored before any prompt goes out
            for items in images:
                stored.append(await store_wire_images(blobs, items))
            with self._tool_span("llm_query_batched", batch=len(prompts),
                                 images=sum(len(refs) for refs in stored)):
                return await self._reported_batch([str(p) for p in prompts], per_prompt,
                                                  stored)
        finally:  # the images lived for this batch
            with anyio.CancelScope(shield=True):
                await _delete_images(blobs, [ref for refs in stored for ref in refs])

    async def _reported_batch(self, prompts: list[str], options: list[dict[str, Any]],
                              images: list[list[ImageRef]] | None = None) -> list[str]:
        """``_batched``, with the live view told: sub-calls started, then done."""
        self.sub_calls_started += len(prompts)
        await self.report(f"{len(prompts)} sub-calls")
        results = await self._batched(prompts, options, images)
        self.sub_calls_done += len(prompts)
        await self.report("sub-calls done")
        return results

    async def _batched(self, prompts: list[str], options: list[dict[str, Any]],
                       images: list[list[ImageRef]] | None = None) -> list[str]:
        """Route each prompt, then send each pool its share in chunks (``Lanes.run_batch``).
        Prompts that no lane answered, or whose model call failed, go one by one
        (``_sub_llm_refs``: another pool, unless the code or the run named one)."""
        self.check_budget()
        results = [""] * len(prompts)
        by_pool: dict[str, list[int]] = {}
        held: dict[int, Reservation] = {}
        reasons: list[str] = []
        pictures = images or [[] for _ in prompts]
        for i, (prompt, opts) in enumerate(zip(prompts, options, strict=True)):
            pool, reason = self._route(prompt, "llm", dict(opts), set(), pictures[i])
            reasons.append(reason)
            try:  # reserved before dispatch: past the budget, the prompt is not sent
                held[i] = self._reserve(pool, prompt, opts.get("max_tokens"))
            except BudgetExceeded as exc:
                results[i] = item_error(exc)
                continue
            by_pool.setdefault(pool, []).append(i)
        span = trace.get_current_span()
        if span.is_recording():  # where the batch went; each sub-call's span says why
            span.set_attribute("heterarch.route.pools",
                               [f"{pool}={len(ix)}" for pool, ix in by_pool.items()])
        stats = self._stats()

        async def pool_share(pool: str, indices: list[int]) -> None:
            sent = time.monotonic()
            for _ in indices:
                if stats is not None:
                    stats.started(pool)

            def finished(outcome: PromptOutcome) -> None:
                if stats is not None:
                    stats.finished(pool, time.monotonic() - sent, outcome.reply is not None)

            outcomes = await self.llm_lanes.run_batch(
                pool, [prompts[i] for i in indices], on_lane=self._count_agent,
                on_outcome=finished, max_tokens=options[indices[0]].get("max_tokens"),
                reasons=[reasons[i] for i in indices],
                images=[pictures[i] for i in indices] if images else (),
                on_lost=lambda j, n: self._lost(pool, prompts[indices[j]],
                                                options[indices[j]].get("max_tokens"), n))
            if stats is not None:  # prompts no lane answered are no longer in flight here
                for outcome in outcomes:
                    if outcome is None:
                        stats.finished(pool, time.monotonic() - sent, False)
            again: list[tuple[int, set[str]]] = []
            for i, outcome in zip(indices, outcomes, strict=True):
                if outcome is not None and outcome.reply is not None:
                    merge_usage(self.usage, outcome.reply.usage)
                    self._settle(held.pop(i), pool, outcome.reply)
                    results[i] = outcome.reply.text
                    if self._fails_check(results[i], options[i]):  # cascade: a stronger pool
                        escalated.add(i)
                        again.append((i, {pool}))
                    continue
                self.ledger.settle(held.pop(i))
                if outcome is None:  # no lane answered: try again, one by one
                    again.append((i, set()))
                    continue
                self.usage.setdefault(pool, PoolUsage()).errors += 1
                if self.query.pool_override or "pool" in options[i]:
                    results[i] = f"[error] {outcome.error_type}: {outcome.error}"
                    continue
                again.append((i, {pool}))
            async with anyio.create_task_group() as tg:
                for i, failed in again:
                    tg.start_soon(one_by_one, i, failed)

        escalated: set[int] = set()

        async def one_by_one(i: int, failed: set[str]) -> None:
            opts = dict(options[i], hint="hard") if i in escalated else options[i]
            if i in escalated:
                trace.get_current_span().add_event("cascade.escalate", {
                    "from": ",".join(sorted(failed)), "check": str(opts["escalate_if"])})
            try:
                results[i] = await self._sub_llm_refs(prompts[i], opts, pictures[i], failed)
            except Exception as exc:  # this prompt's own error, as text; the batch goes on
                results[i] = item_error(exc)

        async with anyio.create_task_group() as tg:
            for pool, indices in by_pool.items():
                tg.start_soon(pool_share, pool, indices)
        return results

    async def rlm_query(self, prompt: str, context: str = "", **options: Any) -> str:
        with self._tool_span("rlm_query"):
            return await self._sub_rlm(str(prompt), str(context), options)

    async def rlm_query_batched(
        self, prompts: list[str], contexts: list[str] | None = None, **options: Any
    ) -> list[str]:
        contexts = contexts or [""] * len(prompts)
        if len(contexts) != len(prompts):
            raise ValueError("rlm_query_batched needs one context per prompt")
        with self._tool_span("rlm_query_batched", batch=len(prompts)):
            pairs = zip(prompts, contexts, strict=True)
            return await self._gather(
                [partial(self._sub_rlm, str(p), str(c), options, len(prompts)) for p, c in pairs]
            )

    async def _gather(self, calls: list[Any]) -> list[str]:
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

    def _tool_span(self, name: str, **attributes: Any) -> Any:
        return tracer.start_as_current_span(
            f"execute_tool {name}",
            context=self._callback_context,
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": name,
                "heterarch.depth": self.query.depth,
                **{f"heterarch.{k}": v for k, v in attributes.items()},
            },
        )

    def _route(self, prompt: str, kind: str, options: dict[str, Any],
               exclude: set[str], pictures: Sequence[ImageRef] = ()) -> tuple[str, str]:
        images = len(pictures)
        explicit = options.pop("pool", None)
        if explicit:
            return self._image_pool(str(explicit), images), "pool named by the code"
        if self.query.pool_override:
            pool = self._image_pool(self.query.pool_override, images)
            return pool, "pool override of this run"
        route = self.services.require_router()
        extra: dict[str, Any] = {"images": images} if images else {}
        if images and options.get("text_px"):  # how small the text is: pools that read it
            extra.update(text_px=float(options.pop("text_px")),
                         image_sizes=[(p.width, p.height) for p in pictures])
        if self.query.pools:  # this run may use only these pools
            exclude = exclude | (set(self._pools()) - set(self.query.pools))
        decision = route(
            prompt=prompt, kind=kind, depth=self.query.depth + 1, tag=options.pop("tag", ""),
            exclude=exclude, budget_left=self._budget_left_fraction(),
            hint=options.pop("hint", ""), **extra,
        )
        return decision.pool, decision.reason

    def _image_pool(self, pool: str, images: int) -> str:
        """``pool``, unless images would go to a pool whose model does not read them."""
        config = self._pools().get(pool)
        if images and config is not None and not config.reads_images:
            raise InvalidImage(f"pool {pool!r} is text-only (modalities "
                               f"{list(config.modalities)}); images need a vision pool")
        return pool

    async def _sub_llm(self, prompt: str, options: dict[str, Any], images: Any = None) -> str:
        self.check_budget()
        if not images:
            return await self._sub_llm_refs(prompt, options, [])
        blobs = self.services.blobs
        refs = await store_wire_images(blobs, images)
        try:
            return await self._sub_llm_refs(prompt, options, refs)
        finally:  # the images lived for this one call
            with anyio.CancelScope(shield=True):
                await _delete_images(blobs, refs)

    async def _sub_llm_refs(self, prompt: str, options: dict[str, Any],
                            images: list[ImageRef], failed: set[str] | None = None) -> str:
        options = dict(options)
        max_tokens = options.pop("max_tokens", None)
        failed = set(failed or ())
        stats = self._stats()
        answered: str | None = None  # a reply that failed the check, kept until a better one
        while True:
            try:
                pool, reason = self._route(prompt, "llm", dict(options), failed, images)
            except LookupError:  # NoPoolFits: no stronger pool left to escalate to
                if answered is None:
                    raise
                return answered
            span = trace.get_current_span()
            held = self._reserve(pool, prompt, max_tokens)
            sent = time.monotonic()
            if stats is not None:
                stats.started(pool)
            message = Prompt(prompt=prompt, max_tokens=max_tokens, images=images,
                             route_reason=reason)
            resent = 0

            def again(message: Prompt = message) -> Prompt:
                nonlocal resent
                resent += 1  # the attempt before was lost with its lane
                return message

            try:
                async with self.llm_lanes.lane(pool) as lane:
                    self._count_agent(lane)
                    reply: LLMReply = await lane.ask(
                        message, timeout=prompts_timeout(self._pools().get(pool)), resend=again)
            except Exception as exc:
                # an attempt that got no answer at all may have been made (and billed)
                self._lost(pool, prompt, max_tokens,
                           resent + isinstance(exc, AskTimeout | ActorDead))
                self.ledger.settle(held)
                if stats is not None:
                    stats.finished(pool, time.monotonic() - sent, False)
                failed.add(pool)
                self.usage.setdefault(pool, PoolUsage()).errors += 1
                if self.query.pool_override or len(failed) >= 3 or "pool" in options:
                    raise
                span.add_event("route.fallback", {"pool": pool, "error": str(exc)[:300]})
                continue
            if stats is not None:
                stats.finished(pool, time.monotonic() - sent, True)
            self._lost(pool, prompt, max_tokens, resent)
            merge_usage(self.usage, reply.usage)
            self._settle(held, pool, reply)
            if (self._fails_check(reply.text, options) and "hint" not in options
                    and "pool" not in options and not self.query.pool_override):
                # the cascade: a cheap pool answered first; its answer failed the check
                span.add_event("cascade.escalate", {"from": pool,
                                                    "check": str(options["escalate_if"])})
                answered, options = reply.text, dict(options, hint="hard")
                failed.add(pool)
                continue
            return reply.text

    @staticmethod
    def _fails_check(text: str, options: dict[str, Any]) -> bool:
        """``escalate_if`` (a regex the code passed): the answer needs a stronger pool."""
        check = options.get("escalate_if")
        return bool(check) and re.search(str(check), text, re.MULTILINE) is not None

    def _reserve(self, pool: str, prompt: str, max_tokens: int | None) -> Reservation:
        """Hold this call's estimate against the budget (``BudgetExceeded`` if it won't fit)."""
        stats = self._stats()
        latency = stats.latency(pool) if stats is not None else None
        return self.ledger.reserve(self.ledger.estimate(pool, prompt, max_tokens),
                                   seconds=latency or 0.0)

    def _lost(self, pool: str, prompt: str, max_tokens: int | None, attempts: int) -> None:
        """``attempts`` calls of ``prompt`` on ``pool`` whose replies were lost: counted in the
        usage (and so the budget) at their estimate, as their reservation was."""
        if attempts > 0:
            held = self.ledger.estimate(pool, prompt, max_tokens)
            add_lost(self.usage, pool, held.tokens, held.dollars, attempts)

    def _settle(self, held: Reservation, pool: str, reply: LLMReply) -> None:
        usage = reply.usage.get(pool)
        self.ledger.settle(held, pool=pool,
                           output_tokens=usage.output_tokens if usage is not None else 0)

    async def _sub_rlm(self, prompt: str, context: str, options: dict[str, Any],
                       ways: int = 1) -> str:
        """A child agent with one of ``ways`` equal shares of the budget left (its siblings
        in the batch take the others)."""
        q = self.query
        if q.depth + 1 >= q.max_depth:
            text = prompt if not context else f"{prompt}\n\n{context}"
            return await self._sub_llm(text, options)
        self.check_budget()
        pool, reason = self._route(prompt + context[:2000], "rlm", dict(options), set())
        share = self.ledger.share(ways)
        held = self.ledger.reserve(Reservation(share.tokens, share.dollars))
        child_query = Query(
            question=prompt, context=context, max_depth=q.max_depth,
            max_iterations=q.max_iterations, depth=q.depth + 1, budget=share,
            pool_override=q.pool_override, cell_timeout_s=q.cell_timeout_s, pools=q.pools,
            route_reason=reason, conversation_id=q.conversation_id,
        )
        try:
            async with self.rlm_lanes.lane(pool) as lane:
                self._count_agent(lane)
                answer: Answer = await lane.ask(child_query, timeout=child_timeout(
                    self._pools().get(pool), max_iterations=q.max_iterations,
                    cell_timeout_s=q.cell_timeout_s, wall_s=share.wall_s))
            merge_usage(self.usage, answer.usage)
        finally:
            self.ledger.settle(held)
        for depth, n in answer.agents_by_depth.items():
            self.agents_by_depth[depth] = self.agents_by_depth.get(depth, 0) + n
        return answer.text if answer.ok else f"[{answer.stop_reason}] {answer.text}"

    def _count_agent(self, lane: Any) -> None:
        if lane.actor_id not in self.seen_lanes:
            self.seen_lanes.add(lane.actor_id)
            depth = self.query.depth + 1
            self.agents_by_depth[depth] = self.agents_by_depth.get(depth, 0) + 1

    # -- budget -----------------------------------------------------------------------------------
    def check_budget(self) -> None:
        self.ledger.check()

    def _budget_left_fraction(self) -> float:
        return self.ledger.fraction_left()

    async def _cleanup(self) -> None:
        if self.sandbox is not None:
            try:
                await self.sandbox.close()
            except Exception:
                pass
        await self.llm_lanes.close()
        await self.rlm_lanes.close()


async def _delete_images(blobs: BlobStore, images: list[ImageRef]) -> None:
    for image in images:
        try:
            await blobs.delete_blob(image.ref)
        except Exception:  # already gone: nothing left to free
            pass


def item_error(exc: BaseException) -> str:
    """What one failed item of a batch returns to the model's code, in place of its answer."""
    return f"[error] {type(exc).__name__}: {exc}"


def _trace_id() -> str:
    ctx = trace.get_current_span().get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else ""
