"""Lanes: a few long-lived child agents per pool, reused across sub-calls of one run.

Spawning one child per ``llm_query`` would pay a spawn per call; a run instead keeps at most
``max_concurrency`` children per pool (the pool's limit), spawned on first use and supervised
like any child: if a worker dies, its lanes restart elsewhere and calls in flight are re-sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from ._actor import Actor
from ._context import Context
from ._ref import ActorRef


class Lanes:
    def __init__(self, ctx: Context, actor_class: type[Actor], *, limit_of: Any) -> None:
        self._ctx = ctx
        self._actor_class = actor_class
        self._limit_of = limit_of  # pool -> int
        self._free: dict[str, list[ActorRef[Any]]] = {}
        self._slots: dict[str, anyio.Semaphore] = {}
        self.spawned: list[ActorRef[Any]] = []

    @asynccontextmanager
    async def lane(self, pool: str) -> AsyncIterator[ActorRef[Any]]:
        """Borrow a child on ``pool`` for one call (waits while all of the pool's are busy)."""
        slots = self._slots.get(pool)
        if slots is None:
            slots = self._slots[pool] = anyio.Semaphore(max(1, int(self._limit_of(pool))))
        async with slots:
            free = self._free.setdefault(pool, [])
            ref = free.pop() if free else await self._spawn(pool)
            try:
                yield ref
            finally:
                free.append(ref)

    async def _spawn(self, pool: str) -> ActorRef[Any]:
        ref = await self._ctx.spawn(self._actor_class, pool=pool, name=f"{pool}-lane")
        self.spawned.append(ref)
        return ref

    async def close(self) -> None:
        """Stop every lane of this run."""
        refs, self.spawned = self.spawned, []
        self._free.clear()
        async with anyio.create_task_group() as tg:
            for ref in refs:
                tg.start_soon(self._ctx.stop, ref)
