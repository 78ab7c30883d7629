"""A task group hosted in a task of its own.

A long-lived object (a transport, a node) owns background tasks from ``open()`` to ``close()``.
Entering an anyio task group in ``open()`` and leaving it in ``close()`` would tie both calls
to one task and to strict nesting with every other such object; hosting the group in its own
task keeps structured concurrency (every task has an owner that sees its failure) without that.

``start_soon`` creates a plain asyncio task in a cancel scope of its own (several times cheaper
than an anyio task group's ``start_soon``, which a node pays per message to an idle actor and
per spawn), owned all the same: a task that raises fails the group as an anyio task would, and
``close`` cancels every one (as anyio does: shielded cleanup still runs) and waits for them.
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
        self._tasks: dict[asyncio.Task[Any], anyio.CancelScope] = {}
        self._accepting = False  # from open until every task ended: what starts is owned
        self._task_failure: BaseException | None = None

    async def open(self) -> None:
        """Start hosting (again, after it ended: a failed node still needs tasks to close)."""
        if self._done.is_set():
            self._ready, self._done = anyio.Event(), anyio.Event()
            self._task_failure = None
        self._host = asyncio.get_running_loop().create_task(self._run(), name=self.name)
        await self._ready.wait()

    async def _run(self) -> None:
        try:
            try:
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    self._accepting = True
                    self._ready.set()
                    await anyio.sleep_forever()
            finally:
                self._tg = None
                await self._cancel_tasks()  # a task cancelled may still start others: owned
                self._accepting = False
            if self._task_failure is not None:
                raise self._task_failure
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

    async def _cancel_tasks(self) -> None:
        with anyio.CancelScope(shield=True):
            while self._tasks:
                tasks = list(self._tasks.items())
                for _, scope in tasks:
                    scope.cancel()
                await asyncio.wait([task for task, _ in tasks])

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and self._task_failure is None:
            self._task_failure = exc
            if self._tg is not None:
                self._tg.cancel_scope.cancel()

    @property
    def is_open(self) -> bool:
        return self._tg is not None

    def start_soon(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        if not self._accepting:
            raise RuntimeError(f"{self.name} is closed")
        scope = anyio.CancelScope()
        task = asyncio.get_running_loop().create_task(_in_scope(scope, fn, args))
        self._tasks[task] = scope
        task.add_done_callback(self._task_done)

    @property
    def cancel_scope(self) -> anyio.CancelScope:
        assert self._tg is not None
        return self._tg.cancel_scope

    async def close(self) -> None:
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        if self._host is not None:
            await self._done.wait()


async def _in_scope(scope: anyio.CancelScope,
                    fn: Callable[..., Coroutine[Any, Any, Any]], args: tuple[Any, ...]) -> None:
    with scope:
        await fn(*args)
