"""A node: one process's share of the actor system (lifecycle, services; the rest in mixins)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from actors import (
    Actor,
    Address,
    SupervisorStrategy,
)
from transports import (
    Envelope,
    Transport,
    new_id,
)
from transports._tasks import HostedTaskGroup
from transports.errors import TransportError

from .._config import PoolConfig
from .._observe.agent_spans import CreatedUnder
from .cell import ActorCell
from .codec import Codec
from .fencing import FENCED_BUCKET, Fencing
from .inflight import InFlight
from .membership import Membership
from .messaging import Messaging
from .placement import Placement
from .pool_consumer import PoolConsumer
from .protocol import (
    NodeInfo,
    Subjects,
    is_node_id,
)
from .relocation import Relocation
from .supervisor import ChildRecord

log = logging.getLogger("heterarch.node")


class Node(Messaging, Relocation, Placement, PoolConsumer, Membership, Fencing):
    """Hosts actors for one process and speaks the runtime protocol over a ``Transport``.

    Use it as an async context manager. Pools (``pools=``) make it a worker: it then pulls spawn
    requests for those pools when it has a free slot (see ``runtime.Worker``). Its jobs live in
    mixins: ``Messaging`` (mailboxes, asks, replies), ``Relocation`` (following actors that
    restarted elsewhere), ``Placement`` (spawning), ``PoolConsumer`` (the worker side of pools)
    and ``Membership`` (heartbeats, lost nodes).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        pools: Mapping[str, PoolConfig] | None = None,
        declared_pools: Sequence[str] = (),
        role: str = "client",
        services: Mapping[str, Any] | None = None,
        pool_services: Mapping[str, Mapping[str, Any]] | None = None,
        heartbeat_interval: float = 0.5,
        node_lost_after: float = 2.5,
        placement_timeout: float = 5.0,
        spawn_timeout: float = 30.0,
        spawn_ack_wait: float = 10.0,
        node_id: str | None = None,
    ) -> None:
        self.transport = transport
        self.node_id = node_id or new_id()[:16]
        if not is_node_id(self.node_id):
            raise ValueError(f"node_id must be 1-64 letters, digits, '_' or '-', not {node_id!r}")
        self.role = role
        self.pools: dict[str, PoolConfig] = dict(pools or {})
        #: Every pool of this worker's config (served or not): a spawn onto any other pool name
        #: fails at once with ``UnknownPool`` instead of waiting for a worker.
        self.declared = sorted({*declared_pools, *self.pools})
        # What hosted agents need (``runtime._agents``: typed as ``ctx.agent_services``).
        self.services: dict[str, Any] = dict(services or {})
        self.pool_services: dict[str, dict[str, Any]] = {
            k: dict(v) for k, v in (pool_services or {}).items()
        }
        self.heartbeat_interval = heartbeat_interval
        self.node_lost_after = node_lost_after
        self.placement_timeout = placement_timeout
        self.spawn_timeout = spawn_timeout
        self.spawn_ack_wait = spawn_ack_wait
        self.subjects = Subjects(transport.namespace)
        self.codec = Codec(self)
        self.cells: dict[str, ActorCell] = {}
        self.started_at = time.time()
        self._records: dict[str, ChildRecord] = {}  # actor id -> record of a supervising cell here
        self._created_under: dict[str, CreatedUnder] = {}
        self._pending_spawns: dict[str, MemoryObjectSendStream[Envelope]] = {}
        self._inboxes: dict[str, tuple[Any, Callable[[Any], None]]] = {}
        self._known_nodes: dict[str, tuple[NodeInfo, float]] = {}
        self._lost_nodes: set[str] = set()
        self._heard_self_at = time.monotonic()
        self._suspect_self = False
        self._lease_s = max(heartbeat_interval, node_lost_after - heartbeat_interval)
        self._lease_renewed = anyio.Event()
        self._settling = False
        self._fence_epoch = 0
        self._inflight = InFlight()
        self._slots: dict[str, anyio.Semaphore] = {}
        self._started = False
        self.task_group = HostedTaskGroup(
            f"node {self.node_id}", on_failure=self._machinery_failed
        )
        #: Why the node's own machinery failed (the node then closed); None while healthy.
        self.failure: BaseException | None = None
        self._closing: asyncio.Task[None] | None = None
        self._guardian: ActorCell | None = None
        self.closed = anyio.Event()

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        try:
            if not self.transport.is_connected:
                await self.transport.connect()
            await self.task_group.open()
            t = self.transport
            t.on_reconnect(self._on_transport_reconnected)
            # Who was declared lost; read by a node that comes back from a pause (fencing.py).
            self._fenced_kv = await t.key_value(FENCED_BUCKET, ttl=3600.0)
            self._subs = [
                await t.subscribe(self.subjects.replies(self.node_id), self._on_reply),
                await t.subscribe(self.subjects.node_control(self.node_id), self._on_control),
                await t.subscribe(self.subjects.heartbeats, self._on_heartbeat),
            ]
            self._nodes_kv = await t.key_value(
                Subjects.NODES_BUCKET, ttl=max(10.0, self.heartbeat_interval * 12)
            )
            self._guardian = self._make_guardian()
            self._heard_self_at = time.monotonic()  # a slow start is no lapse of the lease
            await self.open_mailbox(self._guardian)
            await self._publish_heartbeat()
            self.task_group.start_soon(self._heartbeat_loop)
            self.task_group.start_soon(self._registry_loop)
            for pool in self.pools.values():
                self._slots[pool.name] = anyio.Semaphore(pool.capacity)
                self.task_group.start_soon(self._consume_pool, pool)
            for services in self.pool_services.values():
                for service in services.values():
                    aopen = getattr(service, "aopen", None)
                    if aopen is not None:  # e.g. the warm sandbox starts in our task group
                        await aopen(self.task_group)
        except BaseException:
            await self.task_group.close()
            raise
        self._started = True

    async def close(self) -> None:
        """Stop every actor here (roots stop their subtrees), leave the cluster, disconnect."""
        if not self._started:
            return
        self._started = False
        try:
            with anyio.CancelScope(shield=True), anyio.move_on_after(15):
                if self.task_group.is_open:  # else the actors went down with the machinery
                    await self._stop_actors()
                await self._close_pool_services()
                for sub in self._subs:
                    await sub.unsubscribe()
                with contextlib.suppress(TransportError, Exception):
                    await self._publish_goodbye()
                with contextlib.suppress(TransportError, Exception):
                    await self.transport.flush(2.0)
        finally:
            await self.task_group.close()
            self.closed.set()

    async def _stop_actors(self) -> None:
        roots = [c for c in self.cells.values() if c is not self._guardian]
        roots = [c for c in roots if c.parent is None or c.parent.node_id != self.node_id]
        async with anyio.create_task_group() as tg:
            for cell in roots:
                tg.start_soon(cell.stop_abnormally, "node shutting down")
        if self._guardian is not None:
            await self._guardian.stop("node shutting down")

    def _machinery_failed(self, exc: BaseException) -> None:
        """A task of the node itself raised: close (crash-only); ``failure`` says why.

        The node leaves the cluster at once (goodbye), so supervisors elsewhere restart its
        actors; ``Worker.wait_closed`` raises ``NodeFailed`` and ``heterarch worker`` exits 1.
        """
        self.failure = exc
        self._closing = asyncio.get_running_loop().create_task(self.close())

    async def _close_pool_services(self) -> None:
        """Close what the pools' services hold open (the model clients' pooled connections,
        the spare sandbox)."""
        for services in self.pool_services.values():
            for service in services.values():
                aclose = getattr(service, "aclose", None)
                if aclose is not None:
                    with contextlib.suppress(Exception):
                        await aclose()

    def _make_guardian(self) -> ActorCell:
        address = Address(actor_id=f"guardian-{self.node_id}", node_id=self.node_id, name="/")
        cell = ActorCell(self, _Guardian(), address, parent=None, depth=-1, generation=0)
        self.cells[address.actor_id] = cell
        cell.state = cell.state.RUNNING
        return cell

    @property
    def guardian(self) -> ActorCell:
        assert self._guardian is not None, "node not started: use `async with` or `await start()`"
        return self._guardian

    def hardware_of(self, pool: str) -> str:
        config = self.pools.get(pool)
        if config is not None:
            return config.hardware
        for info, _ in self._known_nodes.values():
            if pool in info.pools:
                return info.pools[pool]
        return ""


class _Guardian(Actor):
    """The invisible parent of a node's root actors: restarts them, never gives up."""

    supervisor_strategy = SupervisorStrategy(max_restarts=1_000_000, period=1.0)
