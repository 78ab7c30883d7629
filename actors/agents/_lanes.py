"""Lanes: a few long-lived child agents per pool, reused across sub-calls of one run.

Spawning one child per ``llm_query`` would pay a spawn per call; a run instead keeps at most
``max_concurrency`` children per pool (the pool's limit), supervised like any child: if a worker
dies, its lanes restart elsewhere and calls in flight are re-sent.

A batch (``run_batch``) travels in chunks of the pool's concurrency, one ``PromptChunk`` message
per chunk; the lanes it needs are spawned together when it starts. Finished prompts come back
as progress to an inbox while the chunk runs, so a lane restarted after losing its worker is
sent only the prompts still unfinished.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio

from .._actor import Actor
from .._context import Context
from .._messages import Inbox
from .._ref import ActorRef
from ._messages import ImageRef, PromptChunk, PromptOutcome, PromptResults

#: How long one chunk may take when no ``timeout_of`` says (its prompts queue behind the
#: pool's concurrency limit).
CHUNK_TIMEOUT_S = 3600.0


def _ignore(_: Any) -> None:
    pass


class Lanes:
    def __init__(self, ctx: Context, actor_class: type[Actor], *,
                 limit_of: Callable[[str], int],
                 timeout_of: Callable[[str, int], float] | None = None) -> None:
        self._ctx = ctx
        self._actor_class = actor_class
        self._limit_of = limit_of  # pool -> how many lanes at most
        # (pool, prompts in flight together) -> a chunk's ask timeout (``_timeouts``)
        self._timeout_of = timeout_of
        self._free: dict[str, list[ActorRef[Any]]] = {}
        self._slots: dict[str, anyio.Semaphore] = {}
        self.spawned: list[ActorRef[Any]] = []

    def _limit(self, pool: str) -> int:
        return max(1, self._limit_of(pool))

    @asynccontextmanager
    async def lane(self, pool: str) -> AsyncIterator[ActorRef[Any]]:
        """Borrow a child on ``pool`` for one call (waits while all of the pool's are busy)."""
        slots = self._slots.get(pool)
        if slots is None:
            slots = self._slots[pool] = anyio.Semaphore(self._limit(pool))
        async with slots:
            free = self._free.setdefault(pool, [])
            ref = free.pop() if free else await self._spawn(pool)
            try:
                yield ref
            finally:
                free.append(ref)  # a crashed lane is restarted under the same ref

    async def _spawn(self, pool: str) -> ActorRef[Any]:
        ref = await self._ctx.spawn(self._actor_class, pool=pool, name=f"{pool}-lane")
        self.spawned.append(ref)
        return ref

    async def _spawn_ahead(self, pool: str, wanted: int) -> None:
        """Spawn, all at once, the lanes ``pool`` lacks to have ``wanted`` free ones.
        A spawn that fails is left to the lane's first use (which raises to its caller)."""
        free = self._free.setdefault(pool, [])

        async def spawn_one() -> None:
            try:
                free.append(await self._spawn(pool))
            except Exception:  # the caller meets the same failure when it borrows
                pass

        async with anyio.create_task_group() as tg:
            for _ in range(wanted - len(free)):
                tg.start_soon(spawn_one)

    async def run_batch(
        self, pool: str, prompts: Sequence[str], *, max_tokens: int | None,
        on_lane: Callable[[ActorRef[Any]], None] = _ignore,
        on_outcome: Callable[[PromptOutcome], None] = _ignore, reasons: Sequence[str] = (),
        images: Sequence[list[ImageRef]] = (),
        on_lost: Callable[[int, int], None] = lambda index, attempts: None,
        cache_scope: str = "", cache_across_runs: bool = False, cache_owner: str = "",
        on_cancelled: Callable[[int, int], None] = lambda index, attempts: None,
    ) -> list[PromptOutcome | None]:
        """Every prompt on ``pool``'s lanes, in chunks of the pool's concurrency.

        Returns one outcome per prompt, in order; ``None`` where no lane could answer (every
        lane of the batch failed): the caller falls back for those. ``on_lane`` sees each lane
        used (for counting agents), ``on_outcome`` each outcome as it arrives. ``reasons``: why
        the router chose the pool, per prompt (they go on the sub-calls' spans); ``images``:
        per prompt, stored images to send with it (refs only travel). ``on_lost(index,
        attempts)``: at the end, for each prompt sent more often than an outcome came back (a
        lane died or timed out with it in flight, and it was sent again or left unanswered),
        how many of its attempts were lost; they may have been billed. ``on_cancelled`` the
        same, when the batch is cancelled (its lanes' handlers are cancelled with it).
        ``cache_scope``, ``cache_across_runs``, ``cache_owner``: the run's call cache
        (``PromptChunk``). An attempt whose paid answer the cache gave back to the next one
        (``reclaimed``) is not lost: it is counted once, at its real usage.
        """
        n = len(prompts)
        size = self._limit(pool)
        chunks = [range(start, min(start + size, n)) for start in range(0, n, size)]
        chunks.reverse()  # popped from the end: first chunk first
        outcomes: list[PromptOutcome | None] = [None] * n
        sent = [0] * n  # attempts per prompt: each chunk message sent or re-sent
        lanes = min(len(chunks), size)
        timeout = (self._timeout_of(pool, min(n, lanes * size)) if self._timeout_of is not None
                   else CHUNK_TIMEOUT_S)

        def record(results: PromptResults) -> None:
            for outcome in results.outcomes:
                if 0 <= outcome.index < n and outcomes[outcome.index] is None:
                    outcomes[outcome.index] = outcome
                    on_outcome(outcome)

        def message(chunk: range, inbox: Inbox) -> PromptChunk:
            left = [i for i in chunk if outcomes[i] is None]
            for i in left:
                sent[i] += 1
            return PromptChunk(indices=left, prompts=[prompts[i] for i in left],
                               max_tokens=max_tokens, inbox=inbox,
                               route_reasons=[reasons[i] for i in left] if reasons else [],
                               images=[images[i] for i in left] if images else [],
                               cache_scope=cache_scope, cache_across_runs=cache_across_runs,
                               cache_owner=cache_owner)

        async def drive(inbox: Inbox) -> None:
            async with self.lane(pool) as lane:
                on_lane(lane)
                while chunks:
                    chunk = chunks.pop()
                    try:
                        record(await lane.ask(message(chunk, inbox), timeout=timeout,
                                              resend=partial(message, chunk, inbox)))
                    except Exception:
                        chunks.append(chunk)  # another lane of the batch takes it over
                        raise

        await self._spawn_ahead(pool, lanes)
        with self._ctx.inbox(PromptResults, record) as inbox:
            try:
                async with anyio.create_task_group() as tg:
                    for _ in range(lanes):
                        tg.start_soon(_owned, drive, inbox)
            except anyio.get_cancelled_exc_class():
                for i, attempts in enumerate(sent):
                    if attempts > (outcomes[i] is not None):
                        on_cancelled(i, attempts - (outcomes[i] is not None))
                raise
        for i, attempts in enumerate(sent):
            lost = attempts - (outcomes[i] is not None) - _reclaimed(outcomes[i])
            if lost > 0:
                on_lost(i, lost)
        return outcomes

    async def close(self) -> None:
        """Stop every lane of this run."""
        refs, self.spawned = self.spawned, []
        self._free.clear()
        async with anyio.create_task_group() as tg:
            for ref in refs:
                tg.start_soon(self._ctx.stop, ref)


async def _owned(drive: Callable[[Inbox], Any], inbox: Inbox) -> None:
    """One lane's loop over the batch's chunks. Its failure is owned by ``run_batch``'s caller:
    what it left unanswered stays ``None`` and is sent again one prompt at a time."""
    try:
        await drive(inbox)
    except Exception:  # see the docstring
        pass


def _reclaimed(outcome: PromptOutcome | None) -> int:
    """Calls of this outcome paid by an earlier attempt (found in the call cache)."""
    if outcome is None or outcome.reply is None:
        return 0
    return sum(u.reclaimed_calls for u in outcome.reply.usage.values())
