"""A node: one process's share of the actor system, composed of parts with their own state.

- ``Fencing`` (fencing.py): the lease; a node declared lost stops its actors before they act.
- ``Membership`` (membership.py): heartbeats, the registry, served pools, and the one
  node-lost event (a missed heartbeat, a goodbye, a failed node's goodbye) that the others
  subscribe to.
- ``Replies`` (replies.py): answering envelopes; ``Relocation`` (relocation.py): following an
  actor that restarted elsewhere.
- ``Messaging`` (messaging.py): mailboxes, tell/ask, system messages until acknowledged.
- ``Supervision`` (supervision.py): the children supervised here; restarts on node loss.
- ``Placement`` (placement.py): spawning, here or through a pool's work queue.
- ``PoolConsumer`` (pool_consumer.py): a worker's side of its pools.

``Node`` owns the actors hosted here (``cells``), its background tasks, its services, and the
lifecycle: ``start`` brings the parts up in order, ``close`` takes them down, each step bounded
on its own. Its methods that cells call are the parts' own, named here once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import anyio
import msgspec

from actors import (
    Actor,
    Address,
    SupervisorStrategy,
)
from transports import DECODE_ERRORS, Envelope, Kind, Subscription, Transport, new_id
from transports._subjects import owned_id, owned_node_id
from transports._tasks import HostedTaskGroup
from transports.errors import TransportError

from .._config import PoolConfig
from .cell import ActorCell
from .classes import class_path
from .fencing import Fencing
from .membership import Membership
from .messaging import Messaging
from .placement import Placement
from .pool_consumer import PoolConsumer
from .protocol import ActorInfo, ModelLoad, NodeInfo, NodeStats, Subjects, is_node_id
from .relocation import Relocation
from .replies import Replies
from .results import Results
from .supervision import Supervision

log = logging.getLogger("heterarch.node")

class Node:
    """Hosts actors for one process and speaks the runtime protocol over a ``Transport``.

    Use it as an async context manager. Pools (``pools=``) make it a worker: it then pulls spawn
    requests for those pools when it has a free slot (see ``runtime.Worker``). Its parts are
    described in the module docstring.
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
        # A node of a principal names it (``alice_3f9c...``): its heartbeat, control and reply
        # subjects carry the principal, where the bus lets only that principal publish/listen.
        self.node_id = owned_node_id(transport.principal, node_id or new_id()[:16])
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
        self.spawn_timeout = spawn_timeout
        self.subjects = Subjects(transport.namespace)
        self.cells: dict[str, ActorCell] = {}
        self.started_at = time.time()
        self._started = False
        self.task_group = HostedTaskGroup(
            f"node {self.node_id}", on_failure=self._machinery_failed
        )
        #: Why the node's own machinery failed (the node then closed); None while healthy.
        self.failure: BaseException | None = None
        self._closing: asyncio.Task[None] | None = None
        self._guardian: ActorCell | None = None
        self._subs: list[Subscription] = []
        self.closed = anyio.Event()

        tasks = self.task_group
        self.fencing = Fencing(transport, self.node_id, tasks,
                               heartbeat_interval=heartbeat_interval,
                               node_lost_after=node_lost_after, on_fenced=self._fenced)
        self.membership = Membership(transport, self.node_id, tasks, self.fencing, self.info,
                                     heartbeat_interval=heartbeat_interval,
                                     node_lost_after=node_lost_after,
                                     placement_timeout=placement_timeout)
        self.supervision = Supervision(self.cells, tasks)
        self.replies = Replies(transport, tasks, self.fencing)
        self.results = Results(transport, self.node_id, self.membership, self.fencing)
        self.relocation = Relocation(transport, self.membership, self.replies,
                                     spawn_timeout=spawn_timeout)
        self.messaging = Messaging(transport, self.node_id, self.cells, tasks,
                                   fencing=self.fencing, membership=self.membership,
                                   supervision=self.supervision, replies=self.replies,
                                   relocation=self.relocation, spawn_timeout=spawn_timeout)
        self.placement = Placement(self, fencing=self.fencing, membership=self.membership,
                                   messaging=self.messaging, supervision=self.supervision,
                                   spawn_timeout=spawn_timeout)
        self.pool_consumer = PoolConsumer(transport, self.pools, self.cells, tasks,
                                          fencing=self.fencing, placement=self.placement,
                                          replies=self.replies, spawn_ack_wait=spawn_ack_wait,
                                          membership=self.membership, node_id=self.node_id)
        # The one node-lost event: who depends on a lost node hears of it here.
        self.membership.on_node_lost(self.supervision.node_lost)
        self.membership.on_node_lost(
            lambda node_id, why: tasks.start_soon(self.fencing.record_lost, node_id))

        # What cells, contexts and the entry points call: the parts' own methods.
        self.codec = self.messaging.codec
        self.tell = self.messaging.tell
        self.ask = self.messaging.ask
        self.watch = self.messaging.watch
        self.stop_ref = self.messaging.stop_ref
        self.send_exit = self.messaging.send_exit
        self.send_terminated = self.messaging.send_terminated
        self.open_inbox = self.messaging.open_inbox
        self.send_to_inbox = self.messaging.send_to_inbox
        self.reject = self.replies.reject
        self.reply_value = self.replies.reply_value
        self.reply_error = self.replies.reply_error
        self.send_reply = self.replies.send_reply
        self.spawn_child = self.placement.spawn_child
        self.spawn_actor = self.placement.spawn_actor
        self.unregister = self.placement.unregister
        self.forget_record = self.supervision.forget
        self.wait_pool = self.membership.wait_pool
        self.served_pools = self.membership.served_pools
        self.live_pools = self.membership.live_pools

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
            t.on_reconnect(self.messaging.transport_reconnected)
            await self.fencing.open()
            self._subs = [
                await t.subscribe(self.subjects.replies(self.node_id), self.messaging.on_reply),
                await t.subscribe(self.subjects.node_control(self.node_id), self._on_control),
            ]
            await self.membership.start()
            self._guardian = self._make_guardian()
            self.fencing.restart_clock()  # a slow start is no lapse of the lease
            await self.placement.open_mailbox(self._guardian)
            await self.membership.run()
            self.pool_consumer.start()
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
        """Stop every actor here (roots stop their subtrees), leave the cluster, disconnect.

        Also after the node's machinery failed: its actors stop as on any close (their
        supervisors elsewhere restart them), then the goodbye tells every peer the node is lost.
        Each step has its own bound: a slow one never skips the next.
        """
        if not self._started:
            return
        self._started = False
        try:
            with anyio.CancelScope(shield=True):
                if not self.task_group.is_open:  # the machinery failed: tasks to stop with
                    await self.task_group.open()
                await self._step("stop the actors", self._stop_actors, 15.0)
                self.messaging.close()
                await self._step("close the pools' services", self._close_pool_services, 5.0)
                await self._step("unsubscribe", self._unsubscribe, 2.0)
                await self._step("say goodbye", self.membership.leave, 2.0)
                await self._step("flush", lambda: self.transport.flush(2.0), 3.0)
        finally:
            await self.task_group.close()
            self.closed.set()

    async def _step(self, what: str, step: Callable[[], Awaitable[None]], bound: float) -> None:
        with anyio.move_on_after(bound) as scope:
            try:
                await step()
            except Exception as exc:
                log.warning("node %s: could not %s: %s", self.node_id, what, exc)
        if scope.cancelled_caught:
            log.warning("node %s: could not %s within %.0fs", self.node_id, what, bound)

    async def _unsubscribe(self) -> None:
        for sub in self._subs:
            await sub.unsubscribe()
        await self.membership.stop_listening()

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

        The node stops its actors and leaves the cluster (goodbye), so supervisors elsewhere
        restart them; ``Worker.wait_closed`` raises ``NodeFailed`` and ``heterarch worker``
        exits 1.
        """
        self.failure = exc
        self._closing = asyncio.get_running_loop().create_task(self.close())

    def _fenced(self, declared_by: str) -> None:
        """Peers declared this node lost while it could not hear itself: its actors run
        elsewhere now, so every one here stops without a word."""
        cells = [c for c in self.cells.values() if c is not self._guardian]
        log.warning(
            "node %s was declared lost (by %s) while it could not hear itself: stopping its %d "
            "actors before they act again (they run elsewhere now)",
            self.node_id, declared_by, len(cells),
        )
        for cell in cells:
            self.transport.dead_letters.record(cell.address.actor_id, "fenced-actor", declared_by)
            # Its mailbox subject is shared with the new incarnation: leave it, answer nothing.
            cell.fenced = True
            self.task_group.start_soon(self.placement.unregister, cell)
            cell.fail("fenced: its node was declared lost")
        # Keys its handlers claimed are never answered here: free them for their new incarnations.
        self.task_group.start_soon(self.results.release_held)

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
        # Owned by this node's principal: so are the roots it spawns, and their descendants.
        guardian_id = owned_id(self.transport.principal, f"guardian-{self.node_id}")
        address = Address(actor_id=guardian_id, node_id=self.node_id, name="/")
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
        return self.membership.hardware_of(pool)

    # -- what this node says of itself -----------------------------------------------------------
    def info(self) -> NodeInfo:
        """This node in one heartbeat: who it is, its free slots, its load per pool."""
        return NodeInfo(
            node_id=self.node_id,
            role=self.role,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self.started_at,
            pools={p.name: p.hardware for p in self.pools.values()},
            declared=self.declared,
            free_slots=self.pool_consumer.free_slots(),
            actors=len(self.cells) - 1,
            heartbeat_at=time.time(),
            reconnects=self.transport.reconnects,
            lost_after=self.node_lost_after,
            in_flight={pool: load.in_flight for pool, load in self._model_loads().items()},
        )

    def _model_loads(self) -> dict[str, ModelLoad]:
        return {
            pool: ModelLoad(calls=llm.calls, tokens=llm.tokens, cost_usd=llm.cost_usd,
                            in_flight=llm.in_flight)
            for pool, services in self.pool_services.items()
            if (llm := services.get("llm")) is not None and hasattr(llm, "in_flight")
        }

    def stats(self) -> NodeStats:
        """Everything ``heterarch ping`` shows of this node, its actors included."""
        return NodeStats(
            info=self.info(),
            actors=[
                ActorInfo(
                    actor_id=c.address.actor_id,
                    actor_class=class_path(type(c.actor)),
                    name=c.address.name,
                    pool=c.address.pool,
                    parent_id=c.parent.actor_id if c.parent else "",
                    depth=c.depth,
                )
                for c in self.cells.values()
                if c is not self._guardian
            ],
            dead_letters=dict(self.transport.dead_letters.counts),
            models=self._model_loads(),
        )

    async def _on_control(self, env: Envelope) -> None:
        if env.reply_to:
            await self.replies.reply_value(env, self.stats())

    async def cluster_stats(self, timeout: float = 1.0) -> list[NodeStats]:
        """Ask every live node for its stats (``heterarch ping``; not for the hot path)."""
        await self.membership.refresh()
        return await cluster_stats(self.transport, self.membership.node_ids(), timeout)


class _Guardian(Actor):
    """The invisible parent of a node's root actors: restarts them, never gives up."""

    supervisor_strategy = SupervisorStrategy(max_restarts=1_000_000, period=1.0)


async def cluster_stats(transport: Transport, node_ids: Sequence[str],
                        timeout: float) -> list[NodeStats]:
    """Ask each of ``node_ids`` for its stats on its control subject (silent ones left out)."""
    subjects = Subjects(transport.namespace)
    decoder = msgspec.msgpack.Decoder(NodeStats)
    results: list[NodeStats] = []

    async def one(node_id: str) -> None:
        env = Envelope(id=new_id(), kind=Kind.SYSTEM, type="stats")
        with contextlib.suppress(TransportError, *DECODE_ERRORS):
            reply = await transport.request(subjects.node_control(node_id), env, timeout=timeout)
            if reply.kind is Kind.REPLY:
                results.append(decoder.decode(reply.payload))

    async with anyio.create_task_group() as tg:
        for node_id in node_ids:
            tg.start_soon(one, node_id)
    return sorted(results, key=lambda s: (s.info.role, s.info.node_id))
