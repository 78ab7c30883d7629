"""Callbacks from the container, run on the host with bounded concurrency and memory.

Code in the sandbox calls ``name(...)``; the server sends a ``call`` frame; the host runs the
registered coroutine and writes a ``reply``. The container is untrusted, so the host bounds
what it will do for it: at most ``max_in_flight`` calls at once (the reader stops reading until
one finishes: extra calls wait in the container), their frames together at most one frame's
worth of bytes, and ``<name>_batched(list)`` at most ``max_batch`` items per call, of which at
most ``max_in_flight`` run at once.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from ._frames import Call, Reply

Callback = Callable[..., Awaitable[Any]]
#: The longest error text a failed callback sends back into the sandbox.
ERROR_LIMIT = 2_000


class CallbackRunner:
    """One per live REPL process; ``admit`` a call (waits for room), then ``run`` it."""

    def __init__(
        self,
        callbacks: dict[str, Callback],
        send: Callable[[Reply], Awaitable[None]],
        *,
        max_in_flight: int,
        max_batch: int,
        max_bytes: int,
    ) -> None:
        self._callbacks = callbacks
        self._send = send
        self.max_in_flight = max_in_flight
        self.max_batch = max_batch
        self.max_bytes = max_bytes
        self.calls = 0
        self._bytes = 0
        self._freed = anyio.Event()
        self._items = anyio.Semaphore(max_in_flight)
        #: The deadline of the request whose code makes these calls (the host's cancel scope
        #: deadline, ``anyio.current_time()`` clock): calls run under it, so a model call or an
        #: ask made for a cell never outlives the cell's caller.
        self.deadline = math.inf
        self._running: set[anyio.CancelScope] = set()

    def cancel_all(self) -> None:
        """Cancel every call in flight (the cell that made them was cancelled); each sends
        an error reply, so a thread in the container waiting for one is freed."""
        for scope in list(self._running):
            scope.cancel()

    async def admit(self, size: int) -> None:
        """Wait until one more call of ``size`` frame bytes fits the bounds, then count it."""
        while self.calls >= self.max_in_flight or (
            self.calls and self._bytes + size > self.max_bytes
        ):
            freed = self._freed
            await freed.wait()
        self.calls += 1
        self._bytes += size

    def _release(self, size: int) -> None:
        self.calls -= 1
        self._bytes -= size
        self._freed.set()
        self._freed = anyio.Event()

    async def run(self, call: Call, size: int) -> None:
        """Run one admitted call and send its reply; never raises (failures become replies)."""
        try:
            reply = Reply(id=call.id, ok=False, error="CancelledError: the cell was cancelled")
            with anyio.CancelScope(deadline=self.deadline) as scope:
                self._running.add(scope)
                try:
                    value = await self._dispatch(call.name, call.args, call.kwargs)
                    reply = Reply(id=call.id, ok=True, value=value)
                except Exception as exc:
                    reply = Reply(id=call.id, ok=False, error=_describe(exc))
                finally:
                    self._running.discard(scope)
            await self._send(reply)
        finally:
            self._release(size)

    async def _dispatch(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if name.endswith("_batched") and args and isinstance(args[0], list):
            if len(args[0]) > self.max_batch:
                raise ValueError(
                    f"{name} takes at most {self.max_batch:,} items per call (got "
                    f"{len(args[0]):,}): split the list"
                )
        fn = self._callbacks.get(name)
        if fn is not None:
            return await fn(*args, **kwargs)
        single_name = name.removesuffix("_batched")
        if name.endswith("_batched") and single_name in self._callbacks:
            if len(args) != 1 or not isinstance(args[0], list):
                raise TypeError(f"{name} takes one list of inputs")
            return await self._batch(self._callbacks[single_name], args[0], kwargs)
        raise NameError(f"no callback named {name[:100]!r} is registered on the host")

    async def _batch(self, single: Callback, items: list[Any], kwargs: dict[str, Any]) -> list[Any]:
        results: list[Any] = [None] * len(items)

        async def one(i: int) -> None:
            try:
                results[i] = await single(items[i], **kwargs)
            finally:
                self._items.release()

        async with anyio.create_task_group() as tg:
            for i in range(len(items)):
                try:  # at most max_in_flight items run at once
                    self._items.acquire_nowait()  # (no checkpoint while there is room)
                except anyio.WouldBlock:
                    await self._items.acquire()
                tg.start_soon(one, i)
        return results


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]  # a batch item's failure, out of its task group
    text = f"{type(exc).__name__}: {exc}"
    if len(text) > ERROR_LIMIT:
        text = text[:ERROR_LIMIT] + f"... [{len(text) - ERROR_LIMIT:,} characters truncated]"
    return text
