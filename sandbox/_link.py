"""The host's connection to one live REPL process: requests out, results and calls in.

A ``Link`` lives as long as one REPL process. Its reader task reads every frame the process
sends (strictly: see ``_frames``), hands results to the requests waiting for them and runs
callbacks (bounded: see ``_callbacks``); in the same task group a watcher waits for the process
to exit. Whatever ends the process or breaks the protocol marks the link lost and fails every
pending request at once with ``LinkLost``: nobody waits out a timeout for a dead process.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable

import anyio
import msgspec

from ._callbacks import Callback, CallbackRunner
from ._frames import (
    HEADER,
    Call,
    Exec,
    FromServer,
    Interrupt,
    ProtocolViolation,
    Ready,
    Reply,
    Request,
    Result,
    check_size,
    decode,
    encode,
)

#: How long a cancelled request may take to stop once interrupted before its process is killed
#: (a blocking C call or a tight loop in C never sees the interrupt).
INTERRUPT_GRACE_S = 2.0


class Channel(ABC):
    """A byte stream to one REPL server process."""

    @abstractmethod
    async def read_exactly(self, n: int) -> bytes:
        """Raises ``EOFError`` when the process is gone."""

    @abstractmethod
    async def write(self, data: bytes) -> None: ...


class LinkLost(Exception):
    """The REPL process behind a link exited, or broke the protocol (``violation``)."""

    def __init__(self, reason: str, *, violation: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.violation = violation


class Link:
    """See the module docstring. ``open()`` it, ``request()`` on it, ``close()`` it."""

    def __init__(
        self,
        channel: Channel,
        callbacks: dict[str, Callback],
        wait_exit: Callable[[], Awaitable[None]],
        kill: Callable[[], Awaitable[None]],
        *,
        max_frame: int,
        max_callbacks: int,
        max_batch: int,
    ) -> None:
        self.channel = channel
        self.max_frame = max_frame
        self.lost: LinkLost | None = None
        self._wait_exit = wait_exit
        self._kill = kill
        self._pending: dict[int, anyio.Event] = {}
        self._outcomes: dict[int, Result | BaseException] = {}
        self._next_id = 0
        self._abandoned: set[int] = set()  # requests whose caller left before the result
        self._write_lock = anyio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.callbacks = CallbackRunner(
            callbacks, self._reply, max_in_flight=max_callbacks, max_batch=max_batch,
            max_bytes=max_frame,
        )

    async def open(self, *, timeout: float) -> Ready:
        """Wait for the server's ready frame, then start reading (``LinkLost`` if none comes)."""
        try:
            with anyio.fail_after(timeout):
                ready = await self._read_frame()
        except (EOFError, OSError) as exc:
            raise LinkLost(f"the REPL server exited before it was ready ({exc})") from None
        except TimeoutError:
            raise LinkLost(f"the REPL server was not ready within {timeout:g}s") from None
        except ProtocolViolation as exc:
            raise LinkLost(str(exc), violation=True) from None
        if not isinstance(ready, Ready):
            raise LinkLost("the first frame was not 'ready'", violation=True)
        # The sandbox owns this task: ``close()`` cancels it (callbacks and watcher with it).
        self._task = asyncio.get_running_loop().create_task(self._run())
        return ready

    async def close(self, error: BaseException) -> None:
        """Stop reading and fail what still waits with ``error``."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail_pending(error)

    def mark_lost(self, reason: str, *, violation: bool = False) -> None:
        """The process is gone or hostile: fail every pending request now."""
        if self.lost is None:
            self.lost = LinkLost(reason, violation=violation)
        self._fail_pending(self.lost)

    def _fail_pending(self, error: BaseException) -> None:
        for request_id, done in list(self._pending.items()):
            self._outcomes.setdefault(request_id, error)
            done.set()

    # -- requests ---------------------------------------------------------------------------------
    async def request(self, frame: Request, *, timeout: float) -> Result:
        """Send ``frame`` and wait for its result.

        Raises ``TypeError`` / ``ValueError`` (nothing sent) when the frame cannot travel,
        ``LinkLost`` when the process dies or misbehaves, ``TimeoutError`` past ``timeout``.
        """
        if self.lost is not None:
            raise self.lost
        self._next_id += 1
        request_id = self._next_id
        data = encode(msgspec.structs.replace(frame, id=request_id), self.max_frame)
        done = anyio.Event()
        self._pending[request_id] = done
        if isinstance(frame, Exec):  # the cell's callbacks run under its caller's deadline
            self.callbacks.deadline = anyio.current_effective_deadline()
        try:
            await self._write(data)
            with anyio.fail_after(timeout):
                await done.wait()
        except anyio.get_cancelled_exc_class():
            if not done.is_set():
                with anyio.CancelScope(shield=True):
                    await self._interrupt(request_id, done)
            raise
        finally:
            self._pending.pop(request_id, None)
            outcome = self._outcomes.pop(request_id, None)
            if outcome is None:
                self._abandoned.add(request_id)
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome is not None
        return outcome

    async def _interrupt(self, request_id: int, done: anyio.Event) -> None:
        """Our caller was cancelled: stop what the request started (its callbacks, the code
        in the process); kill the process if the code does not stop in time."""
        self.callbacks.cancel_all()
        if self.lost is not None:
            return
        try:
            await self._write(encode(Interrupt(id=request_id), self.max_frame))
        except LinkLost:
            return
        with anyio.move_on_after(INTERRUPT_GRACE_S):
            await done.wait()
        if not done.is_set() and self.lost is None:
            self.mark_lost(f"the cancelled request did not stop within {INTERRUPT_GRACE_S:g}s")
            await self._kill()

    async def _write(self, data: bytes) -> None:
        try:
            async with self._write_lock:
                await self.channel.write(data)
        except OSError as exc:
            self.mark_lost(f"the channel to the REPL broke ({type(exc).__name__})")
            assert self.lost is not None
            raise self.lost from None

    async def _reply(self, reply: Reply) -> None:
        try:
            data = encode(reply, self.max_frame)
        except (TypeError, ValueError) as exc:
            text = f"the callback's result cannot travel: {type(exc).__name__}: {exc}"
            data = encode(Reply(id=reply.id, ok=False, error=text[:2000]), self.max_frame)
        if self.lost is None:
            with contextlib.suppress(LinkLost):
                await self._write(data)

    # -- reading ----------------------------------------------------------------------------------
    async def _read_frame(self) -> FromServer:
        frame, _ = await self._read_sized_frame()
        return frame

    async def _read_sized_frame(self) -> tuple[FromServer, int]:
        (size,) = HEADER.unpack(await self.channel.read_exactly(HEADER.size))
        check_size(size, self.max_frame)  # before a single byte of the body is held
        return decode(await self.channel.read_exactly(size)), size

    async def _run(self) -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._watch_exit)
            try:
                while True:
                    frame, size = await self._read_sized_frame()
                    if isinstance(frame, Call):
                        await self.callbacks.admit(size)
                        tasks.start_soon(self.callbacks.run, frame, size)
                    elif isinstance(frame, Result):
                        self._deliver(frame)
                    else:
                        raise ProtocolViolation("a second 'ready' frame")
            except ProtocolViolation as exc:
                self.mark_lost(str(exc), violation=True)
            except (EOFError, OSError):
                self.mark_lost("the REPL process closed its channel")
            except Exception as exc:  # whatever else a frame did to us: the sandbox goes
                self.mark_lost(f"a frame the host could not handle ({exc!r:.200})", violation=True)
            tasks.cancel_scope.cancel()
        if self.lost is not None and self.lost.violation:
            with anyio.CancelScope(shield=True):  # whole, even while the link is closed
                await self._kill()  # at once, even with no call pending: the next call restarts

    async def _watch_exit(self) -> None:
        await self._wait_exit()
        self.mark_lost("the REPL process exited")

    def _deliver(self, result: Result) -> None:
        done = self._pending.get(result.id)
        if done is None:
            if result.id in self._abandoned:  # late: its caller timed out or was cancelled
                self._abandoned.discard(result.id)
                return
            raise ProtocolViolation(f"a result for request {result.id}, which is not pending")
        self._outcomes[result.id] = result
        done.set()

