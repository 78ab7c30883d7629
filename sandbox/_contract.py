"""The sandbox contract every backend implements: lifecycle, cells, variables, callbacks."""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import msgspec

from ._callbacks import Callback
from ._frames import DEFAULT_MAX_FRAME, Callbacks, Exec, GetVar, Request, SetVar, SetVarFile
from ._link import Channel, Link, LinkLost
from .errors import (
    SandboxClosed,
    SandboxCrashed,
    SandboxError,
    SandboxRequestError,
    SandboxTimeout,
    SandboxUnavailable,
)

#: How long past a request's timeout the host waits for the in-sandbox watchdog before it kills.
HARD_KILL_GRACE = 2.0
#: Strings longer than this go to the server through a file, not a frame.
FILE_THRESHOLD = 1_000_000



#: How long ``close()`` waits for a start or restart in progress before killing regardless.
_CLOSE_WAIT_S = 30.0

class CellError(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    type: str
    message: str
    traceback: str = ""


class ExecResult(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What one cell did. ``error`` is set when the code raised (the REPL itself is fine)."""

    stdout: str
    stderr: str
    error: CellError | None
    duration: float
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


class Sandbox(ABC):
    """A stateful Python REPL for untrusted code, with callbacks into the host.

    >>> async with DockerSandbox() as sb:  # doctest: +SKIP
    ...     sb.register_callback("llm_query", my_llm_query)
    ...     await sb.exec("x = 21")
    ...     print((await sb.exec("print(x * 2)")).stdout)
    42

    Variables persist between ``exec`` calls. Callbacks registered before ``start`` become
    functions inside; ``<name>_batched(list)`` exists for each and runs them concurrently here.

    Nothing that comes out of the REPL is trusted: frames over ``max_frame`` bytes or of the
    wrong shape are a protocol violation (the sandbox is killed and restarted, the caller gets
    ``SandboxCrashed("protocol violation: ...")``); at most ``max_callbacks`` callbacks run at
    once (more wait) and a ``*_batched`` call takes at most ``max_batch`` items.
    """

    def __init__(
        self,
        *,
        output_limit: int = 20_000,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_callbacks: int = 1_000,
        max_batch: int = 10_000,
    ) -> None:
        if min(output_limit, max_frame, max_callbacks, max_batch) < 1:
            raise ValueError("output_limit, max_frame, max_callbacks and max_batch must be >= 1")
        self.output_limit = output_limit
        self.max_frame = max_frame
        self.max_callbacks = max_callbacks
        self.max_batch = max_batch
        self.restarts = 0
        self._callbacks: dict[str, Callback] = {}
        self._link: Link | None = None
        self._closed = False
        self._lifecycle = anyio.Lock()
        self._exec_lock = anyio.Lock()

    # -- what backends provide --------------------------------------------------------------------
    @abstractmethod
    async def _launch(self) -> Channel:
        """Start a fresh REPL server process and return its channel (clean up if it fails)."""

    @abstractmethod
    async def _wait_exit(self) -> None:
        """Return when the process ``_launch`` started has exited."""

    @abstractmethod
    async def _kill(self) -> None:
        """Kill the REPL server process and remove what it was given (its state is gone)."""

    async def _crash_reason(self) -> SandboxCrashed:
        return SandboxCrashed("the REPL process exited")

    @abstractmethod
    async def _write_file(self, name: str, text: str) -> str:
        """Put ``text`` where the server can read it; return the path inside."""

    # -- lifecycle --------------------------------------------------------------------------------
    def register_callback(self, name: str, fn: Callback) -> None:
        """Make ``name(*args, **kwargs)`` inside call ``await fn(*args, **kwargs)`` here."""
        if not name.isidentifier():
            raise ValueError(f"callback name must be an identifier, not {name!r}")
        if self._link is not None:
            raise SandboxError("register callbacks before start()")
        self._callbacks[name] = fn

    async def start(self) -> None:
        """Start the REPL. A closed sandbox stays closed (``SandboxClosed``)."""
        if self._closed:
            raise SandboxClosed()
        async with self._lifecycle:
            if self._link is None:
                await self._boot()

    async def _boot(self) -> None:
        channel = await self._launch()
        link = Link(
            channel, self._callbacks, self._wait_exit, self._kill, max_frame=self.max_frame,
            max_callbacks=self.max_callbacks, max_batch=self.max_batch,
        )
        names = sorted({*self._callbacks, *(f"{n}_batched" for n in self._callbacks)})
        try:
            await link.open(timeout=60)
            await link.request(Callbacks(names=names), timeout=30)
        except (LinkLost, TimeoutError) as exc:
            await link.close(SandboxClosed())
            await self._kill()
            raise SandboxUnavailable(f"the REPL server did not start: {exc}") from None
        except BaseException:
            with anyio.CancelScope(shield=True):
                await link.close(SandboxClosed())
                await self._kill()
            raise
        self._link = link

    async def _teardown(self, error: BaseException) -> None:
        link, self._link = self._link, None
        with anyio.CancelScope(shield=True):
            if link is not None:
                await link.close(error)
                await self._kill()

    async def _recover(self, link: Link) -> None:
        """Replace the process behind ``link`` with a fresh one (once, however many ask)."""
        async with self._lifecycle:
            if self._link is not link or self._closed:
                return
            self.restarts += 1
            await self._teardown(LinkLost("the sandbox was restarted"))
            await self._boot()

    async def close(self) -> None:
        """Kill the REPL and remove its container and files. Final: it cannot start again."""
        self._closed = True
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(_CLOSE_WAIT_S) as waited:
                async with self._lifecycle:
                    await self._teardown(SandboxClosed())
            if waited.cancelled_caught:  # a start or restart that never finished: kill it anyway
                await self._teardown(SandboxClosed())
                await self._kill()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def is_running(self) -> bool:
        """True while a live REPL process serves this sandbox."""
        return self._link is not None and self._link.lost is None

    # -- operations -------------------------------------------------------------------------------
    async def exec(self, code: str, *, timeout: float = 60.0) -> ExecResult:
        """Run ``code`` in the persistent namespace.

        A cell over ``timeout`` is stopped inside the sandbox (``error.type == "TimeoutError"``,
        state kept); if that fails, the sandbox is killed and restarted and ``SandboxTimeout``
        (``state_lost=True``) is raised. A cell that kills the process raises ``SandboxCrashed``
        (``SandboxOOM`` when it ran out of memory), after the restart; so does a REPL that
        broke the protocol or died since the last call.
        """
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, not {type(code).__name__}")
        _check_timeout(timeout)
        async with self._exec_lock:
            value = await self._request(Exec(code=code, timeout=timeout), timeout=timeout)
        try:
            result = msgspec.convert(value, ExecResult)
        except msgspec.ValidationError as exc:
            raise await self._violated(f"a malformed exec result: {exc}") from None
        longest = 2 * self.output_limit + 10_000  # head + tail of print and of fds, markers
        texts = [result.stdout, result.stderr]
        if result.error is not None:
            texts += [result.error.type, result.error.message, result.error.traceback]
        if max(map(len, texts)) > longest:
            raise await self._violated(f"an exec result over the output limit of {longest:,}")
        return result

    async def set_var(self, name: str, value: Any) -> None:
        """Set a variable to a JSON-able value (``str`` of any size is fine)."""
        _check_name(name)
        if isinstance(value, str) and len(value) > FILE_THRESHOLD:
            await self.set_text(name, value)
            return
        try:
            await self._request(SetVar(name=name, value=value), timeout=120)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"set_var needs a JSON-able value: {exc}") from None

    async def set_text(self, name: str, source: str | bytes | os.PathLike[str]) -> None:
        """Set ``name`` to a (large) text read from a host file or given as UTF-8 bytes.

        The text travels as a file the server reads, never through a frame.
        Example: ``await sb.set_text("context", Path("book.txt"))``.
        """
        _check_name(name)
        if isinstance(source, bytes):
            text = source.decode("utf-8")
        elif isinstance(source, os.PathLike):
            text = await anyio.to_thread.run_sync(Path(source).read_text, "utf-8")
        elif isinstance(source, str):
            text = source
        else:
            raise TypeError(f"set_text needs str, bytes or a path, not {type(source).__name__}")
        text.encode("utf-8")  # a lone surrogate is not text: UnicodeEncodeError, nothing sent
        await self._live_link()
        path = await self._write_file(name, text)
        await self._request(SetVarFile(name=name, path=path), timeout=120)

    async def get_var(self, name: str, *, timeout: float = 60.0) -> Any:
        """A variable's value (JSON-able, at most ``max_frame`` bytes as JSON).

        ``SandboxRequestError`` if it is missing, not JSON-able or too big, or if encoding it
        takes over ``timeout`` (the watchdog stops it; state kept).
        """
        _check_name(name)
        _check_timeout(timeout)
        frame = GetVar(name=name, timeout=timeout, limit=self.max_frame - 1024)
        return await self._request(frame, timeout=timeout)

    # -- one request, with recovery --------------------------------------------------------------
    async def _live_link(self) -> Link:
        """The current link; a REPL that died since the last call is restarted first."""
        link = self._link
        if self._closed or link is None:
            raise SandboxClosed()
        if link.lost is not None:
            error = await self._error_for(link.lost, link)
            await self._recover(link)
            raise error
        return link

    async def _request(self, frame: Request, *, timeout: float) -> Any:
        link = await self._live_link()
        try:
            result = await link.request(frame, timeout=timeout + HARD_KILL_GRACE)
        except TimeoutError:
            await self._recover(link)
            raise SandboxTimeout(timeout, state_lost=True) from None
        except LinkLost as lost:
            if self._closed:
                raise SandboxClosed() from None
            error = await self._error_for(lost, link)
            await self._recover(link)
            raise error from None
        if not result.ok:
            error_type = result.error.type if result.error else "Error"
            message = result.error.message if result.error else "the request failed"
            raise SandboxRequestError(error_type[:200], message[: self.output_limit])
        return result.value

    async def _error_for(self, lost: LinkLost, link: Link) -> SandboxCrashed:
        if lost.violation:
            return SandboxCrashed(f"protocol violation: {lost.reason}")
        if self._link is not link:  # another call restarted it already: nothing to inspect
            return SandboxCrashed(lost.reason)
        return await self._crash_reason()

    async def _violated(self, reason: str) -> SandboxCrashed:
        """A well-formed frame with a bad body: the same treatment as any violation."""
        link = self._link
        if link is not None:
            link.mark_lost(reason, violation=True)
            await self._recover(link)
        return SandboxCrashed(f"protocol violation: {reason}")


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"variable name must be an identifier, not {name!r}")


def _check_timeout(timeout: float) -> None:
    if not (isinstance(timeout, int | float) and timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
