"""The REPL of an RLM run: its sandbox, the context loaded into it, and the cells it runs.

The sandbox starts while the root model writes its first reply; a sandbox that did not start
ends the run where it is first needed. Its callbacks (``llm_query`` and its kin) call the run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import anyio
from opentelemetry import context as otel_context
from opentelemetry import trace

from .._semconv import (
    ATTR_GENAI_TOOL_ARGUMENTS,
    ATTR_GENAI_TOOL_RESULT,
    content_capture_enabled,
    truncate_content,
)
from ..errors import BudgetExceeded, InvalidImage
from ._images import wire_images
from ._ports import AgentSandbox, CellResult, LosesState, SandboxCallback
from ._prompts import SANDBOX_PRELUDE, tool_definitions, truncate
from ._spans import mark_exception, mark_failed, mark_ok, tool_attributes
from ._state import RunState

tracer = trace.get_tracer("heterarch")


class Repl:
    """The sandbox of one run, started once (``start_soon``) and closed with the run."""

    def __init__(self, run: RunState, callbacks: Mapping[str, SandboxCallback]) -> None:
        self.run = run
        self._callbacks = dict(callbacks)
        self.sandbox: AgentSandbox | None = None
        self._sandbox_ready = anyio.Event()
        self._sandbox_failure: Exception | None = None
        self._context = ""
        #: The end of the last output a cell printed: the answer of a run that found no other.
        self.best_partial = ""

    async def load_context(self) -> str:
        q = self.run.query
        if q.context_ref:
            data = await self.run.services.blobs.get_blob(q.context_ref)
            return data.decode("utf-8", errors="replace")
        return q.context

    async def start_soon(self, context: str) -> None:
        """Start the sandbox; its failure is raised where the sandbox is first needed."""
        try:
            await self._start(context)
        except Exception as exc:
            self._sandbox_failure = exc
        finally:
            self._sandbox_ready.set()

    async def ready(self) -> AgentSandbox:
        await self._sandbox_ready.wait()
        if self._sandbox_failure is not None:
            raise self._sandbox_failure
        assert self.sandbox is not None
        return self.sandbox

    async def _start(self, context: str) -> None:
        # a worker's sandboxes: one is started ahead
        self.sandbox = await self.run.services.require_sandboxes().take(self._callbacks)
        await self._load_state(self.sandbox, context)

    async def _load_state(self, sandbox: AgentSandbox, context: str) -> None:
        self._context = context
        await sandbox.set_var("context", context)
        await sandbox.exec(SANDBOX_PRELUDE, timeout=30)
        if self.run.query.tools:  # the user's tools, as functions of the REPL
            defined = await sandbox.exec(tool_definitions(self.run.query.tools), timeout=30)
            if defined.error is not None:
                raise RuntimeError(f"the tools did not load in the sandbox: "
                                   f"{defined.error.type}: {defined.error.message}")
        if self.run.query.images:  # an image context: a list of Pillow images, loaded by file
            wire = await wire_images(self.run.services.blobs, self.run.query.images)
            await sandbox.set_var("_context_images", json.dumps(wire))
            loaded = await sandbox.exec(
                "import json as _json\n"
                "context = _heterarch_vision.images_from_wire(_json.loads(_context_images))\n"
                "del _context_images", timeout=120)
            if loaded.error is not None:  # no image helpers in this sandbox, or bad images
                raise InvalidImage(f"the image context did not load in the sandbox: "
                                   f"{loaded.error.type}: {loaded.error.message}")

    async def run_cell(self, index: int, code: str) -> str:
        self.run.check_budget()
        if not self._sandbox_ready.is_set():  # the live view: what the wait is for
            await self.run.report("loading the context into the sandbox")
            await self._sandbox_ready.wait()
        await self.run.report(f"running cell {index}")
        sandbox = await self.ready()  # a sandbox that did not start ends the run
        with tracer.start_as_current_span(
            "execute_tool repl",
            attributes={
                **tool_attributes("repl", "extension"),
                "heterarch.actor.id": self.run.ctx.self_ref.actor_id,
                "heterarch.depth": self.run.query.depth,
                "heterarch.cell.index": index,
                "heterarch.cell.chars": len(code),
            },
        ) as span:
            capture = content_capture_enabled() and span.is_recording()
            if capture:
                span.set_attribute(ATTR_GENAI_TOOL_ARGUMENTS, truncate_content(code))
            self.run.callback_context = otel_context.get_current()
            try:
                result = await sandbox.exec(code, timeout=self.run.query.cell_timeout_s)
            except Exception as exc:
                if isinstance(exc, BudgetExceeded):
                    raise
                mark_exception(span, exc)
                lost = isinstance(exc, LosesState) and exc.state_lost
                if lost:
                    await self._load_state(sandbox, self._context)
                note = " The REPL was restarted: variables are gone, `context` is reloaded." \
                    if lost else ""
                said = f"[cell {index}] {type(exc).__name__}: {exc}.{note}"
                if capture:  # what the model saw of a cell that took its sandbox down
                    span.set_attribute(ATTR_GENAI_TOOL_RESULT, truncate_content(said))
                return said
            output = self._describe(index, result)
            error = result.error
            if error:  # the model's code raised: the tool call failed, the agent goes on
                mark_failed(span, error.type or type(error).__name__,
                            error.message or str(error))
            else:
                mark_ok(span)
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
        return f"[cell {index} output]\n{truncate(body, self.run.output_limit)}"

    async def close(self) -> None:
        if self.sandbox is not None:
            try:
                await self.sandbox.close()
            except Exception:
                pass
