"""The worker side of pools: pull spawn requests when a slot is free, start, ack."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

import anyio
import msgspec
from opentelemetry import context as otel_context

from actors import (
    Address,
    SpawnFailed,
)
from transports import (
    DECODE_ERRORS,
    Envelope,
    ErrorInfo,
    Transport,
    WorkItem,
)
from transports._subjects import owner_of
from transports._tasks import HostedTaskGroup
from transports.errors import TransportError

from .._config import PoolConfig
from .._permissions import ROOTS_BUCKET
from ..errors import ClassNotServed
from .cell import ActorCell, CellState
from .classes import resolve_actor_class
from .fencing import Fencing
from .membership import Membership
from .placement import Placement
from .protocol import (
    UNDELIVERABLE,
    Spawned,
    SpawnRequest,
    system_decoder,
)
from .replies import Replies
from .trace_context import extract_context

log = logging.getLogger("heterarch.node")

#: A spawn request delivered more often than this was taken by workers that died before
#: settling it: it is refused (a dead letter) so that it cannot take down a whole pool.
POISON_AFTER_DELIVERIES = 2
#: JetStream's own bound (max-deliver): the server stops redelivering after this many.
MAX_DELIVER = POISON_AFTER_DELIVERIES + 1


class PoolConsumer:
    """A worker's side of its pools: one consumer of each pool's work queue, bounded by the
    pool's free slots (a slot is taken while an actor spawned from it runs)."""

    def __init__(
        self,
        transport: Transport,
        pools: Mapping[str, PoolConfig],
        cells: Mapping[str, ActorCell],
        tasks: HostedTaskGroup,
        *,
        fencing: Fencing,
        placement: Placement,
        replies: Replies,
        spawn_ack_wait: float,
        membership: Membership,
        node_id: str,
    ) -> None:
        self._membership = membership
        self._node_id = node_id
        self._transport = transport
        self._pools = pools
        self._cells = cells
        self._tasks = tasks
        self._fencing = fencing
        self._placement = placement
        self._replies = replies
        self._spawn_ack_wait = spawn_ack_wait
        self._slots = {pool.name: anyio.Semaphore(pool.capacity) for pool in pools.values()}

    def free_slots(self) -> dict[str, int]:
        return {name: s.value for name, s in self._slots.items()}

    def start(self) -> None:
        for pool in self._pools.values():
            self._tasks.start_soon(self._consume_pool, pool)

    async def _consume_pool(self, pool: PoolConfig) -> None:
        slots = self._slots[pool.name]
        queue = None
        while queue is None:
            try:
                queue = await self._transport.work_queue(
                    pool.name, ack_wait=self._spawn_ack_wait, max_deliver=MAX_DELIVER
                )
            except TransportError as exc:
                log.warning("pool %s: cannot open work queue yet (%s); retrying", pool.name, exc)
                await anyio.sleep(0.5)
        try:
            while True:
                await slots.acquire()
                if not self._fencing.valid():  # no new work before we know we were not fenced
                    await self._fencing.wait()
                try:
                    item = await queue.fetch(timeout=1.0)
                except TransportError as exc:
                    slots.release()
                    log.warning("pool %s: fetch failed (%s); retrying", pool.name, exc)
                    await anyio.sleep(0.2)
                    continue
                if item is None:
                    slots.release()
                    continue
                self._tasks.start_soon(self._handle_spawn, pool, item)
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await queue.close()

    async def _handle_spawn(self, pool: PoolConfig, item: WorkItem) -> None:
        """Start one requested actor; whatever happens, settle the item and free the slot."""
        started = False
        try:
            started = await self._start_requested(pool, item)
        except Exception as exc:  # crash-only: a bad request never reaches the node
            log.exception("pool %s: spawn request failed", pool.name)
            await self._refuse(pool, item, f"{type(exc).__name__}: {exc}", type(exc).__name__)
        finally:
            if not started:
                self._slots[pool.name].release()

    async def _start_requested(self, pool: PoolConfig, item: WorkItem) -> bool:
        env = item.envelope
        if item.deliveries > POISON_AFTER_DELIVERIES:
            # Workers took it before and never settled it (they died): poison, not bad luck.
            await self._refuse(pool, item, f"delivered {item.deliveries} times and never "
                               "started: its workers died handling it", UNDELIVERABLE)
            return False
        try:
            request = system_decoder.decode(env.payload)
            if not isinstance(request, SpawnRequest):
                raise TypeError(f"expected a spawn request, got {type(request).__name__}")
        except (*DECODE_ERRORS, TypeError) as exc:
            await self._refuse(pool, item, f"bad spawn request: {exc}", UNDELIVERABLE)
            return False
        if request.deadline and time.time() > request.deadline:
            await _settle(item.term, pool)  # its spawner gave up already
            return False
        forged = _not_owned(request, item.owner)
        if forged:
            self._replies.refused(f"principal {item.owner or 'none'!r}", "forged-spawn", forged)
            await self._refuse(pool, item, forged, UNDELIVERABLE)
            return False
        if not self._fencing.valid():  # taken just before a pause: settle (maybe fence) first
            await self._fencing.wait()
        existing = self._cells.get(request.actor_id)
        if existing is not None and existing.generation == request.generation:
            await _settle(item.ack, pool)  # a redelivery of a spawn that succeeded here
            await self._reply_spawned(env, existing.address)
            return False
        if existing is not None and existing.state in (CellState.STARTING, CellState.RUNNING):
            # Another incarnation of this id runs here: its parent stops an incarnation before
            # it restarts it, so this request would hijack the id.
            reason = (f"actor {request.actor_id} already runs here (incarnation "
                      f"{existing.generation}): refused to start another")
            log.warning("pool %s: %s", pool.name, reason)
            await self._refuse(pool, item, reason, UNDELIVERABLE)
            return False
        claim = self._root_claim(pool, request, item.owner)
        if claim:  # a client's root: counted across the cluster, in the roots bucket
            quota_error = await self._claim_root(pool, claim, request, item.owner or "")
        else:
            quota_error = self._over_root_quota(pool, request, item.owner)
        if quota_error:
            self._replies.refused(
                f"principal {item.owner!r}" if item.owner else repr(env.sender or "?"),
                "spawn-quota", f"spawn of {request.actor_class} in pool {pool.name!r}: "
                f"{quota_error}")
            await self._refuse(pool, item, quota_error, SpawnFailed.__name__)
            return False
        try:
            actor_class = resolve_actor_class(request.actor_class, pool.modules)
            ctx = extract_context(env.headers)
            token = otel_context.attach(ctx) if ctx is not None else None
            try:
                address = await self._placement.start_local(
                    actor_class, request.args, pool=pool.name, name=request.name,
                    parent=request.parent, depth=request.depth, actor_id=request.actor_id,
                    generation=request.generation,
                    restart_error="restarted" if request.generation else None,
                )
            finally:
                if token is not None:
                    otel_context.detach(token)
        except Exception as exc:
            if claim:
                self._tasks.start_soon(self._release_root, claim, request.actor_id)
            reason = str(exc) if isinstance(exc, ClassNotServed | SpawnFailed) else repr(exc)
            log.warning("pool %s: refused spawn of %s: %s", pool.name, request.actor_class, reason)
            await self._refuse(pool, item, reason, type(exc).__name__)
            return False
        cell = self._cells.get(request.actor_id)
        if cell is None:  # stopped while it started (its parent stopped meanwhile)
            if claim:
                self._tasks.start_soon(self._release_root, claim, request.actor_id)
            await _settle(item.ack, pool)
            await self._reply_spawned(env, address)
            return False
        if claim:
            cell.on_finished.append(lambda: self._tasks.start_soon(
                self._release_root, claim, request.actor_id))
        cell.on_finished.append(self._slots[pool.name].release)
        await _settle(item.ack, pool)
        await self._reply_spawned(env, address)
        return True

    # -- roots per client, across the cluster -------------------------------------------------
    @staticmethod
    def _root_claim(pool: PoolConfig, request: SpawnRequest, owner: str | None) -> str:
        """The roots bucket's key prefix for ``request`` ('' when the cluster does not count
        it: no quota, not a root, or no principal the bus vouches for)."""
        if pool.roots_per_client <= 0 or request.depth != 0 or not owner:
            return ""
        return f"{pool.name}.{owner}"

    async def _claim_root(self, pool: PoolConfig, claim: str, request: SpawnRequest,
                          owner: str) -> str:
        """Take one of the owner's ``roots_per_client`` slots of ``pool`` (create-only keys
        ``{pool}.{owner}.{i}`` in the roots bucket, which only workers may write): '' when
        taken, else why not. A slot whose holder's node is gone is freed first; the same root
        again (a restart, a redelivery) keeps its slot."""
        kv = await self._transport.key_value(ROOTS_BUCKET)
        mine = msgspec.msgpack.encode([request.actor_id, self._node_id])
        keys = [f"{claim}.{i}" for i in range(pool.roots_per_client)]
        held: dict[str, tuple[str, str]] = {}
        for key in keys:
            first = await kv.create(key, mine)
            if first is None:
                return ""
            with contextlib.suppress(*DECODE_ERRORS, ValueError, TypeError):
                actor_id, node_id = msgspec.msgpack.decode(first)
                held[key] = (str(actor_id), str(node_id))
                if actor_id == request.actor_id:  # this root again: it keeps its slot
                    await kv.put(key, mine)
                    return ""
        await self._membership.refresh()
        live = set(self._membership.node_ids()) - {n for n in self._membership.node_ids()
                                                   if self._membership.is_lost(n)}
        for key in keys:
            actor_id, node_id = held.get(key, ("", ""))
            gone = (node_id == self._node_id and actor_id not in self._cells) or (
                node_id != self._node_id and node_id not in live)
            if gone:  # its node died (or it never started): free it, then try to take it
                await kv.delete(key)
                if await kv.create(key, mine) is None:
                    return ""
        return (f"spawn quota reached: client {owner} holds {len(keys)} root actors in pool "
                f"{pool.name!r} across the cluster (allows {pool.roots_per_client} per client)")

    async def _release_root(self, claim: str, actor_id: str) -> None:
        """Free the slot that ``actor_id`` holds here (unless another node took it over)."""
        with contextlib.suppress(TransportError):
            kv = await self._transport.key_value(ROOTS_BUCKET)
            pool = self._pools.get(claim.partition(".")[0])
            for i in range(pool.roots_per_client if pool is not None else 0):
                key = f"{claim}.{i}"
                value = await kv.get(key)
                if value is not None and value == msgspec.msgpack.encode(
                        [actor_id, self._node_id]):
                    await kv.delete(key)
                    return

    def _over_root_quota(self, pool: PoolConfig, request: SpawnRequest,
                         owner: str | None) -> str:
        """Why ``request`` exceeds its spawner's ``roots_per_client`` here ('' if it does not).

        A root is a depth-0 actor, with a parent (a client's guardian) or none. Where the bus
        vouches for the owner, the owner is the client (all its nodes together); else the
        spawning node (a request with no parent counts for 'no parent')."""
        if pool.roots_per_client <= 0 or request.depth != 0:
            return ""

        def spawner_of(actor_id: str, parent: Address | None) -> str:
            if owner:
                return f"client {owner_of(actor_id)}"
            return f"node {parent.node_id}" if parent is not None else "no parent"

        spawner = spawner_of(request.actor_id, request.parent)
        roots = sum(1 for c in self._cells.values()
                    if c.depth == 0 and c.address.pool == pool.name
                    and spawner_of(c.address.actor_id, c.parent) == spawner)
        if roots < pool.roots_per_client:
            return ""
        return (f"spawn quota reached: {spawner} holds {roots} root actors on this worker "
                f"(pool {pool.name!r} allows {pool.roots_per_client} per client)")

    async def _refuse(self, pool: PoolConfig, item: WorkItem, reason: str, error: str) -> None:
        """Never deliver it again; record it as a dead letter; tell the spawner why."""
        env = item.envelope
        self._transport.dead_letters.record(
            f"spawn.{pool.name}", "spawn-refused", reason, len(env.payload)
        )
        await _settle(item.term, pool)
        if env.reply_to:
            await self._replies.reply_error(env, ErrorInfo(error, reason))

    async def _reply_spawned(self, env: Envelope, address: Address) -> None:
        if env.reply_to:
            await self._replies.reply_value(env, Spawned(address))


async def _settle(op: Callable[[], Awaitable[None]], pool: PoolConfig) -> None:
    """Ack or term; if the server cannot be told, the item is redelivered after ``ack_wait``."""
    try:
        await op()
    except TransportError as exc:
        log.warning("pool %s: could not settle a spawn request (%s)", pool.name, exc)


def _not_owned(request: SpawnRequest, owner: str | None) -> str:
    """Why ``request`` is not the bus-vouched ``owner``'s to make ('' if it is): the actor (and
    its parent) must be owned by whoever the spawn subject names, which a client may only name
    itself as. So no client spawns under another's ids (an id hijack) or parents."""
    if owner is None:
        return ""
    ids = [request.actor_id] + ([request.parent.actor_id] if request.parent else [])
    for actor_id in ids:
        if owner_of(actor_id) != owner:
            return (f"spawn of {actor_id} (parent "
                    f"{request.parent.actor_id if request.parent else 'none'}) sent as "
                    f"{owner or 'no one'!r}: its owner is {owner_of(actor_id) or 'no one'!r}")
    return ""

