"""The asker's side of an RLM run: the user's tools and the check of a typed final answer.

A ``RunHost`` actor lives in the asking process for one question. The agents of the run (on any
worker) ask it to run a tool (``CallTool``) or to check a final answer (``CheckAnswer``); both
run here, where the functions and types are.
"""

from __future__ import annotations

import contextlib
import inspect
import keyword
import typing
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import anyio
import msgspec

from actors import Actor, ActorRef, Restart
from actors.agents._messages import CallTool, CheckAnswer, ToolResult, ToolSpec

from ._system import ActorSystem
from .errors import RuntimeConfigError

Tools = Sequence[Callable[..., Any]] | Mapping[str, Callable[..., Any]]
ToolTable = dict[str, tuple[ToolSpec, Callable[..., Any]]]

#: Names the REPL already gives a meaning (the tools may not take them).
RESERVED = {"context", "answer", "FINAL", "FINAL_VAR", "llm_query", "llm_query_batched",
            "rlm_query", "rlm_query_batched", "call_tool", "print", "crop", "zoom", "grid",
            "annotate"}


def tool_table(tools: Tools) -> ToolTable:
    """Each tool's spec (name, signature, doc) and function; ``RuntimeConfigError`` for a name
    the REPL cannot take."""
    items = tools.items() if isinstance(tools, Mapping) else [
        (getattr(fn, "__name__", ""), fn) for fn in tools]
    table: ToolTable = {}
    for name, fn in items:
        if not callable(fn):
            raise RuntimeConfigError(f"tool {name!r} is not callable")
        if not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_") \
                or name in RESERVED:
            raise RuntimeConfigError(
                f"tool name {name!r} must be a Python identifier, not private and not one of "
                f"the REPL's own names ({', '.join(sorted(RESERVED))})")
        try:  # annotations as the reader wrote them, also under `from __future__ import ...`
            signature = str(inspect.signature(fn, eval_str=True)).replace("typing.", "")
        except Exception:  # annotations that do not resolve: as written
            try:
                signature = str(inspect.signature(fn))
            except (TypeError, ValueError):
                signature = "(*args, **kwargs)"
        table[name] = (ToolSpec(name=name, signature=signature,
                                doc=inspect.getdoc(fn) or ""), fn)
    return table


class AnswerCheck:
    """The type a final answer must have: a msgspec-convertible type (a ``msgspec.Struct``,
    a dataclass, ``list[int]``...) or a JSON schema (a dict; checked with ``jsonschema``)."""

    def __init__(self, wanted: Any) -> None:
        self.wanted = wanted
        if isinstance(wanted, Mapping):
            self.schema: dict[str, Any] = dict(wanted)
            try:
                import jsonschema
            except ImportError:
                raise RuntimeConfigError("a JSON schema answer_type needs the jsonschema "
                                         "package (pip install jsonschema); or pass a "
                                         "msgspec.Struct type") from None
            self._validator = jsonschema.Draft202012Validator(self.schema)
        else:
            try:
                self.schema = msgspec.json.schema(wanted)
            except (TypeError, ValueError) as exc:
                raise RuntimeConfigError(f"answer_type {wanted!r}: {exc}") from None

    def check(self, value: Any) -> ToolResult:
        """``value`` as JSON data of the type, or the error that says why it is not one."""
        if isinstance(self.wanted, Mapping):
            errors = sorted(self._validator.iter_errors(value), key=str)
            if errors:
                where = "/".join(str(p) for p in errors[0].absolute_path) or "the answer"
                return ToolResult(error=f"at {where}: {errors[0].message}")
            return ToolResult(value=value)
        try:
            converted = msgspec.convert(value, self.wanted, strict=False)
        except msgspec.ValidationError as exc:
            return ToolResult(error=str(exc))
        return ToolResult(value=msgspec.to_builtins(converted))

    def convert(self, value: Any) -> Any:
        """Checked data, as the type (a JSON schema's data stays as it is)."""
        if isinstance(self.wanted, Mapping):
            return value
        return msgspec.convert(value, self.wanted, strict=False)


def answer_check(wanted: Any) -> AnswerCheck | None:
    return None if wanted is None else AnswerCheck(wanted)


class RunHost(Actor):
    """Runs the tools and checks the answers of one question, in the asking process. Tools
    that are plain functions run in a worker thread; coroutine functions on the loop."""

    def __init__(self) -> None:
        self.tools: ToolTable = {}
        self.answer: AnswerCheck | None = None

    async def call(self, msg: CallTool) -> ToolResult:
        found = self.tools.get(msg.name)
        if found is None:
            return ToolResult(error=f"no tool {msg.name!r}")
        _, fn = found
        try:
            args, kwargs = _typed_arguments(fn, msg.args, msg.kwargs)
            if inspect.iscoroutinefunction(fn):
                value = await fn(*args, **kwargs)
            else:
                value = await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))
            return ToolResult(value=msgspec.to_builtins(value))
        except Exception as exc:  # the model's code sees it and goes on
            return ToolResult(error=f"{type(exc).__name__}: {exc}")

    async def check(self, msg: CheckAnswer) -> ToolResult:
        if self.answer is None:
            return ToolResult(value=msg.value)
        return self.answer.check(msg.value)


def _typed_arguments(fn: Callable[..., Any], args: list[Any],
                     kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """The arguments converted to the function's annotations (``TypeError`` naming the
    argument that does not fit)."""
    signature = inspect.signature(fn)
    bound = signature.bind(*args, **kwargs)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # annotations that do not resolve: the values as they came
        hints = {}
    for name, value in list(bound.arguments.items()):
        kind = signature.parameters[name].kind
        hint = hints.get(name)
        if hint is None or kind in (inspect.Parameter.VAR_POSITIONAL,
                                    inspect.Parameter.VAR_KEYWORD):
            continue
        try:
            bound.arguments[name] = msgspec.convert(value, hint, strict=False)
        except msgspec.ValidationError as exc:
            raise TypeError(f"argument {name!r}: {exc}") from None
    return list(bound.args), dict(bound.kwargs)


@contextlib.asynccontextmanager
async def run_host(system: ActorSystem, tools: ToolTable,
                   answer: AnswerCheck | None) -> AsyncIterator[ActorRef[Any] | None]:
    """A ``RunHost`` for one question while it runs (none when there is nothing to host)."""
    if not tools and answer is None:
        yield None
        return
    ref = await system.spawn(RunHost, name="rlm-host", supervision=Restart.TEMPORARY)
    host = system.node.cells[ref.actor_id].actor
    assert isinstance(host, RunHost)
    host.tools, host.answer = tools, answer
    try:
        yield ref
    finally:
        with anyio.CancelScope(shield=True):
            await system.stop(ref)
