"""A task group hosted in a task of its own.

A long-lived object (a transport, a node) owns background tasks from ``open()`` to ``close()``.
Entering an anyio task group in ``open()`` and leaving it in ``close()`` would tie both calls
to one task and to strict nesting with every other such object; hosting the group in its own
task keeps structured concurrency (every task has an owner that sees its failure) without that.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import anyio.abc

log = logging.getLogger("heterarch.tasks")


class HostedTaskGroup:
    """``on_failure`` is the owner of a failure: called once with it when a task raised."""

    def __init__(
        self, name: str, *, on_failure: Callable[[BaseException], None] | None = None
    ) -> None:
        self.name = name
        self._on_failure = on_failure
        self.failure: BaseException | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._host: asyncio.Task[None] | None = None
        self._ready = anyio.Event()
        self._done = anyio.Event()

    async def open(self) -> None:
        """Start hosting (again, after it ended: a failed node still needs tasks to close)."""
        if self._done.is_set():
            self._ready, self._done = anyio.Event(), anyio.Event()
        self._host = asyncio.get_running_loop().create_task(self._run(), name=self.name)
        await self._ready.wait()

    async def _run(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self._ready.set()
                await anyio.sleep_forever()
        except BaseException as exc:  # the owner that sees failures: log them loudly
            if not isinstance(exc, asyncio.CancelledError):
                log.error("background tasks of %s failed", self.name, exc_info=exc)
                self.failure = exc
                if self._on_failure is not None:
                    self._on_failure(exc)
        finally:
            self._tg = None
            self._ready.set()
            self._done.set()

    @property
    def is_open(self) -> bool:
        return self._tg is not None

    def start_soon(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        if self._tg is None:
            raise RuntimeError(f"{self.name} is closed")
        self._tg.start_soon(fn, *args)

    @property
    def cancel_scope(self) -> anyio.CancelScope:
        assert self._tg is not None
        return self._tg.cancel_scope

    async def close(self) -> None:
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        if self._host is not None:
            await self._done.wait()
