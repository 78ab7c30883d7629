"""The user's tools of an RLM run: functions of the asker, called from the REPL.

The model's code calls ``name(...)`` in the sandbox; the call reaches the agent as the callback
``call_tool``, which asks the asker's host (``Query.host``) to run it where it was registered,
within the same bounds as a sub-call: the run's budget is checked first, the cell's timeout
bounds it, and it gets an ``execute_tool {name}`` span and a place in the iteration's record.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ._messages import CallTool, ToolResult
from ._state import RunState


class ToolFailed(Exception):
    """A user tool raised, or could not be reached; the model's code sees this message."""


class Tools:
    """The ``call_tool`` callback of one run."""

    def __init__(self, run: RunState) -> None:
        self.run = run

    async def call_tool(self, name: str, args: list[Any] | None = None,
                        kwargs: dict[str, Any] | None = None) -> Any:
        run = self.run
        q = run.query
        if q.host is None or name not in {t.name for t in q.tools}:
            raise ToolFailed(f"no tool {name!r} in this run")
        run.check_budget()
        arguments = json.dumps({"args": args or [], "kwargs": kwargs or {}},
                               ensure_ascii=False, default=str)
        sent = time.monotonic()
        with run.tool_span(name):
            try:
                result: ToolResult = await q.host.ask(
                    CallTool(name=name, args=list(args or []), kwargs=dict(kwargs or {})),
                    timeout=q.cell_timeout_s)
            except Exception as exc:
                run.record_call("tool", arguments, sent, name=name,
                                error=f"{type(exc).__name__}: {exc}")
                raise ToolFailed(f"tool {name!r} was not reached: {type(exc).__name__}: "
                                 f"{exc}") from None
            if result.error:
                run.record_call("tool", arguments, sent, name=name, error=result.error)
                raise ToolFailed(f"tool {name!r} failed: {result.error}")
        run.record_call("tool", arguments, sent, name=name,
                        text=json.dumps(result.value, ensure_ascii=False, default=str))
        return result.value
