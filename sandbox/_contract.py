"""The sandbox contract, and the frame protocol every backend shares."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import struct
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import msgspec

from .errors import (
    SandboxClosed,
    SandboxCrashed,
    SandboxError,
    SandboxRequestError,
    SandboxTimeout,
)

log = logging.getLogger("heterarch.sandbox")

Callback = Callable[..., Awaitable[Any]]

#: How long past a cell's timeout the host waits for the in-sandbox watchdog before it kills.
HARD_KILL_GRACE = 2.0


class CellError(msgspec.Struct, frozen=True):
    type: str
    message: str
    traceback: str = ""


class ExecResult(msgspec.Struct, frozen=True, kw_only=True):
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


class Channel(ABC):
    """A byte stream to one REPL server process."""

    @abstractmethod
    async def read_exactly(self, n: int) -> bytes:
        """Raises ``EOFError`` when the process is gone."""

    @abstractmethod
    async def write(self, data: bytes) -> None: ...


class Sandbox(ABC):
    """A stateful Python REPL for untrusted code, with callbacks into the host.

    >>> async with DockerSandbox() as sb:  # doctest: +SKIP
    ...     sb.register_callback("llm_query", my_llm_query)
    ...     await sb.exec("x = 21")
    ...     print((await sb.exec("print(x * 2)")).stdout)
    42

    Variables persist between ``exec`` calls. Callbacks registered before ``start`` become
    functions inside; ``<name>_batched(list)`` exists for each and runs them concurrently here.
    """

    def __init__(self, *, output_limit: int = 20_000) -> None:
        self.output_limit = output_limit
        self._callbacks: dict[str, Callback] = {}
        self._channel: Channel | None = None
        self._pending: dict[int, anyio.Event] = {}
        self._results: dict[int, dict[str, Any]] = {}
        self._next_id = 0
        self._write_lock = anyio.Lock()
        self._exec_lock = anyio.Lock()
        self._reader_task: asyncio.Task[None] | None = None
        self.restarts = 0

    # -- what backends provide --------------------------------------------------------------------
    @abstractmethod
    async def _launch(self) -> Channel:
        """Start a fresh REPL server process and return its channel."""

    @abstractmethod
    async def _kill(self) -> None:
        """Kill the REPL server process (its state is gone)."""

    async def _crash_reason(self) -> SandboxCrashed:
        return SandboxCrashed("the REPL process exited")

    async def _write_file(self, name: str, text: str) -> str:
        """Put ``text`` where the server can read it; return the path inside."""
        raise NotImplementedError

    # -- lifecycle --------------------------------------------------------------------------------
    def register_callback(self, name: str, fn: Callback) -> None:
        """Make ``name(*args, **kwargs)`` inside call ``await fn(*args, **kwargs)`` here."""
        if not name.isidentifier():
            raise ValueError(f"callback name must be an identifier, not {name!r}")
        self._callbacks[name] = fn
        if self._channel is not None:
            raise SandboxError("register callbacks before start()")

    async def start(self) -> None:
        if self._channel is not None:
            return
        await self._boot()

    async def _boot(self) -> None:
        channel = await self._launch()
        try:
            with anyio.fail_after(60):
                ready = await self._read_frame(channel)
        except (EOFError, OSError, ValueError, TimeoutError) as exc:
            await self._kill()
            raise SandboxError(f"the REPL server did not start: {exc!r}") from None
        if ready.get("op") != "ready":
            await self._kill()
            raise SandboxError(f"the REPL server did not start: {ready}")
        self._channel = channel
        # The reader owns the callback tasks; the sandbox owns the reader (cancelled on close).
        self._reader_task = asyncio.get_running_loop().create_task(self._reader(channel))
        names = set(self._callbacks)
        names |= {f"{n}_batched" for n in self._callbacks}
        await self._request({"op": "callbacks", "names": sorted(names)}, timeout=30)

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        with anyio.CancelScope(shield=True):
            if channel is not None:
                await self._kill()
            await self._stop_reader()
        self._fail_pending(SandboxClosed())

    async def _stop_reader(self) -> None:
        task, self._reader_task = self._reader_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

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
        return self._channel is not None

    # -- operations -------------------------------------------------------------------------------
    async def exec(self, code: str, *, timeout: float = 60.0) -> ExecResult:
        """Run ``code`` in the persistent namespace.

        A cell over ``timeout`` is stopped inside the sandbox (``error.type == "TimeoutError"``,
        state kept); if that fails, the sandbox is killed and restarted and ``SandboxTimeout``
        (``state_lost=True``) is raised. A cell that kills the process raises ``SandboxCrashed``
        (``SandboxOOM`` when it ran out of memory), after the restart.
        """
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, not {type(code).__name__}")
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        async with self._exec_lock:
            try:
                value = await self._request(
                    {"op": "exec", "code": code, "timeout": timeout},
                    timeout=timeout + HARD_KILL_GRACE,
                )
            except TimeoutError:
                await self._restart()
                raise SandboxTimeout(timeout, state_lost=True) from None
            except SandboxCrashed:
                reason = await self._crash_reason()
                await self._restart()
                raise reason from None
        return msgspec.convert(value, ExecResult)

    async def set_var(self, name: str, value: Any) -> None:
        """Set a variable to a JSON-able value (``str`` of any size is fine)."""
        if not name.isidentifier():
            raise ValueError(f"variable name must be an identifier, not {name!r}")
        if isinstance(value, str) and len(value) > 1_000_000:
            path = await self._write_file(name, value)
            await self._request({"op": "set_var_file", "name": name, "path": path}, timeout=120)
            return
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"set_var needs a JSON-able value: {exc}") from None
        await self._request({"op": "set_var", "name": name, "value": value}, timeout=120)

    async def set_text(self, name: str, source: str | bytes | os.PathLike[str]) -> None:
        """Set ``name`` to a (large) text read from a host file or given as UTF-8 bytes.

        The text travels as a file the server reads, never through a frame.
        Example: ``await sb.set_text("context", Path("book.txt"))``.
        """
        if not name.isidentifier():
            raise ValueError(f"variable name must be an identifier, not {name!r}")
        if isinstance(source, bytes):
            text = source.decode("utf-8")
        elif isinstance(source, os.PathLike):
            text = await anyio.to_thread.run_sync(Path(source).read_text, "utf-8")
        elif isinstance(source, str):
            text = source
        else:
            raise TypeError(f"set_text needs str, bytes or a path, not {type(source).__name__}")
        if self._channel is None:
            raise SandboxClosed()
        path = await self._write_file(name, text)
        await self._request({"op": "set_var_file", "name": name, "path": path}, timeout=120)

    async def get_var(self, name: str) -> Any:
        """A variable's value (JSON-able); ``SandboxRequestError`` if missing or not JSON-able."""
        return await self._request({"op": "get_var", "name": name}, timeout=120)

    # -- the frame protocol ----------------------------------------------------------------------
    async def _request(self, frame: dict[str, Any], *, timeout: float) -> Any:
        channel = self._channel
        if channel is None:
            raise SandboxClosed()
        self._next_id += 1
        request_id = self._next_id
        done = anyio.Event()
        self._pending[request_id] = done
        try:
            await self._send(channel, {**frame, "id": request_id})
            with anyio.fail_after(timeout):
                await done.wait()
        finally:
            self._pending.pop(request_id, None)
        result = self._results.pop(request_id)
        if result.get("op") == "crashed":
            raise SandboxCrashed("the REPL process exited")
        if result.get("op") == "closed":
            raise SandboxClosed()
        if not result.get("ok"):
            error = result.get("error") or {}
            raise SandboxRequestError(str(error.get("type")), str(error.get("message")))
        return result.get("value")

    async def _send(self, channel: Channel, frame: dict[str, Any]) -> None:
        body = json.dumps(frame).encode("utf-8")
        async with self._write_lock:
            await channel.write(struct.pack(">I", len(body)) + body)

    @staticmethod
    async def _read_frame(channel: Channel) -> dict[str, Any]:
        (size,) = struct.unpack(">I", await channel.read_exactly(4))
        frame: dict[str, Any] = json.loads(await channel.read_exactly(size))
        return frame

    async def _reader(self, channel: Channel) -> None:
        try:
            async with anyio.create_task_group() as callbacks:
                while True:
                    frame = await self._read_frame(channel)
                    if frame.get("op") == "call":
                        callbacks.start_soon(self._run_callback, channel, frame)
                    elif frame.get("op") == "result":
                        self._deliver(int(frame.get("id") or 0), frame)
        except (EOFError, OSError, ValueError):
            if self._channel is channel:
                self._fail_pending(None)

    def process_exited(self, channel: Channel) -> None:
        """The REPL process behind ``channel`` is gone: fail what waits on it."""
        if self._channel is channel:
            self._fail_pending(None)

    def _deliver(self, request_id: int, frame: dict[str, Any]) -> None:
        done = self._pending.get(request_id)
        if done is not None:
            self._results[request_id] = frame
            done.set()

    def _fail_pending(self, error: SandboxError | None) -> None:
        op = "closed" if isinstance(error, SandboxClosed) else "crashed"
        for request_id, done in list(self._pending.items()):
            self._results[request_id] = {"op": op}
            done.set()

    async def _restart(self) -> None:
        self.restarts += 1
        old, self._channel = self._channel, None
        if old is not None:
            await self._kill()
        await self._stop_reader()
        self._fail_pending(None)
        await self._boot()

    async def _run_callback(self, channel: Channel, frame: dict[str, Any]) -> None:
        name = str(frame.get("name"))
        args = frame.get("args") or []
        kwargs = frame.get("kwargs") or {}
        try:
            value = await self._dispatch_callback(name, args, kwargs)
            reply = {"op": "reply", "id": frame.get("id"), "ok": True, "value": value}
            body = json.dumps(reply)
        except Exception as exc:
            reply = {"op": "reply", "id": frame.get("id"), "ok": False,
                     "error": f"{type(exc).__name__}: {exc}"}
            body = json.dumps(reply)
        if self._channel is channel:
            data = body.encode("utf-8")
            async with self._write_lock:
                await channel.write(struct.pack(">I", len(data)) + data)

    async def _dispatch_callback(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        fn = self._callbacks.get(name)
        if fn is not None:
            return await fn(*args, **kwargs)
        if name.endswith("_batched") and name[: -len("_batched")] in self._callbacks:
            single = self._callbacks[name[: -len("_batched")]]
            if len(args) != 1 or not isinstance(args[0], list):
                raise TypeError(f"{name} takes one list of inputs")
            items: list[Any] = args[0]
            results: list[Any] = [None] * len(items)

            async def one(i: int) -> None:
                results[i] = await single(items[i], **kwargs)

            async with anyio.create_task_group() as tg:
                for i in range(len(items)):
                    tg.start_soon(one, i)
            return results
        raise NameError(f"no callback named {name!r} is registered on the host")
