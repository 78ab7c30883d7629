"""Membership: heartbeats, the node registry, which pools are served, and the one node-lost event.

A peer is lost when it stops heart-beating for ``node_lost_after``, when it says goodbye (it
closed, cleanly or because its machinery failed), or when we are told so (``declare_lost``).
Whatever the cause, ``node_lost`` runs once per peer and calls every listener that subscribed
(``on_node_lost``): messaging fails over the asks waiting on it, supervision restarts the
children that ran there, fencing writes it down. A node that cannot hear itself judges nobody.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

import anyio
import msgspec

from transports import (
    DECODE_ERRORS,
    Envelope,
    KeyValue,
    Kind,
    Subscription,
    Transport,
    new_id,
)
from transports._subjects import received_on
from transports._tasks import HostedTaskGroup
from transports.errors import TransportError

from ..errors import NoWorkerForPool, UnknownPool
from .codec import encode
from .fencing import Fencing
from .protocol import NodeInfo, Subjects, is_node_id

log = logging.getLogger("heterarch.node")

_node_info_decoder = msgspec.msgpack.Decoder(NodeInfo)

GOODBYE = "it said goodbye"

#: A listener of the node-lost event: ``(node_id, why)``.
NodeLostListener = Callable[[str, str], None]


class Membership:
    """Which nodes are alive, as heard on the heartbeat subject; see the module docstring."""

    def __init__(
        self,
        transport: Transport,
        node_id: str,
        tasks: HostedTaskGroup,
        fencing: Fencing,
        info: Callable[[], NodeInfo],
        *,
        heartbeat_interval: float,
        node_lost_after: float,
        placement_timeout: float,
    ) -> None:
        self._transport = transport
        self._subjects = Subjects(transport.namespace)
        self.node_id = node_id
        self._tasks = tasks
        self._fencing = fencing
        self._info = info
        self.heartbeat_interval = heartbeat_interval
        self.node_lost_after = node_lost_after
        self.placement_timeout = placement_timeout
        self._known: dict[str, tuple[NodeInfo, float]] = {}  # node id -> (info, heard at)
        self._created = time.monotonic()
        self._lost: set[str] = set()
        self._suspect_self = False  # we cannot hear ourselves: we judge no peer meanwhile
        self._sent: dict[str, float] = {}  # our heartbeats in flight: envelope id -> sent at
        self._declaring: set[str] = set()  # silent peers being written down as lost
        self._listeners: list[NodeLostListener] = []
        #: Called with a peer's id when its transport reconnected (what we sent may be lost).
        self.on_peer_reconnected: Callable[[str], None] = lambda node_id: None
        self._kv: KeyValue | None = None
        self._subscription: Subscription | None = None
        fencing.on_settled = self._hearing_again

    # -- the event ------------------------------------------------------------------------------
    def on_node_lost(self, listener: NodeLostListener) -> None:
        """Subscribe to the node-lost event (called once per lost peer, never for ourselves)."""
        self._listeners.append(listener)

    def node_lost(self, node_id: str, why: str = "") -> None:
        """Declare ``node_id`` lost: every listener hears of it, once."""
        if node_id in self._lost or node_id == self.node_id:
            return
        self._lost.add(node_id)
        self._known.pop(node_id, None)
        why = why or f"no heartbeat for {self.node_lost_after:.1f}s"
        log.log(logging.INFO if why == GOODBYE else logging.WARNING, "node %s lost (%s)",
                node_id, why)
        for listener in self._listeners:
            listener(node_id, why)

    def is_lost(self, node_id: str) -> bool:
        return node_id in self._lost

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen to heartbeats and open the registry (the loops start with ``run``)."""
        self._subscription = await self._transport.subscribe(
            self._subjects.heartbeats, self._on_heartbeat
        )
        self._kv = await self._transport.key_value(
            Subjects.NODES_BUCKET, ttl=max(10.0, self.heartbeat_interval * 12)
        )

    async def run(self) -> None:
        """Say we are here, then keep saying it (heartbeats, registry) in the node's tasks."""
        self._fencing.restart_clock()
        await self._publish_heartbeat()
        self._tasks.start_soon(self._heartbeat_loop)
        self._tasks.start_soon(self._registry_loop)

    async def stop_listening(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            await subscription.unsubscribe()

    async def leave(self) -> None:
        """Say goodbye: every peer handles it as this node's loss."""
        env = Envelope(id=new_id(), kind=Kind.SYSTEM, sender=self.node_id, type="goodbye")
        await self._transport.publish(self._subjects.heartbeat(self.node_id), env)
        await self.kv.delete(self.node_id)

    @property
    def kv(self) -> KeyValue:
        assert self._kv is not None, "membership not started"
        return self._kv

    # -- what we know of the cluster ------------------------------------------------------------
    def peers(self) -> list[NodeInfo]:
        """The last heartbeat of every node we believe alive (this one included)."""
        return [info for info, _ in self._known.values()]

    def node_ids(self) -> list[str]:
        return list(self._known)

    async def wait_pool(self, pool: str) -> None:
        """Return once some live worker serves ``pool``; ``NoWorkerForPool`` after the timeout."""
        deadline = time.monotonic() + self.placement_timeout
        refreshed = False
        while True:
            if self._pool_is_served(pool):
                return
            if not refreshed:
                refreshed = True
                await self.refresh()
                declared = self.declared_pools()
                if declared and pool not in declared:  # a typo: no config names it
                    raise UnknownPool(pool, sorted(declared))
                continue
            if time.monotonic() >= deadline:
                raise NoWorkerForPool(pool, self.placement_timeout, self.served_pools())
            await anyio.sleep(0.05)

    def serves(self, pool: str) -> bool:
        """Whether a live worker serves ``pool`` now (as far as this node has heard)."""
        return self._pool_is_served(pool)

    def _pool_is_served(self, pool: str) -> bool:
        now = time.monotonic()
        return any(
            pool in info.pools and now - seen < self.node_lost_after
            for info, seen in self._known.values()
        )

    def live_pools(self) -> dict[str, int] | None:
        """Pools some live worker serves -> their free actor slots, summed over workers; None
        while this node is too new to have heard every worker's heartbeat."""
        now = time.monotonic()
        if now - self._created < 2 * self.heartbeat_interval:
            return None
        out: dict[str, int] = {}
        for info, seen in self._known.values():
            if now - seen < self.node_lost_after:
                for pool in info.pools:
                    out[pool] = out.get(pool, 0) + int(info.free_slots.get(pool, 0))
        return out

    def declared_pools(self) -> set[str]:
        """Every pool the config files of the live workers name (served or not)."""
        return {p for info, _ in self._known.values() for p in (*info.declared, *info.pools)}

    def served_pools(self) -> list[str]:
        return sorted({p for info, _ in self._known.values() for p in info.pools})

    def hardware_of(self, pool: str) -> str:
        for info, _ in self._known.values():
            if pool in info.pools:
                return info.pools[pool]
        return ""

    def pool_load(self) -> dict[str, list[int]]:
        """Model calls in flight per pool, one entry per live node that serves it (from their
        heartbeats: no request to anyone)."""
        loads: dict[str, list[int]] = {}
        for info, _ in self._known.values():
            for pool, in_flight in info.in_flight.items():
                loads.setdefault(pool, []).append(in_flight)
        return loads

    async def refresh(self) -> None:
        """Learn of live nodes from the registry (before their next heartbeat reaches us)."""
        with contextlib.suppress(TransportError):
            for key, value in (await self.kv.items()).items():
                with contextlib.suppress(*DECODE_ERRORS):
                    info = _node_info_decoder.decode(value)
                    if key not in self._known and key not in self._lost:
                        fresh = self.node_lost_after + max(1.0, self.heartbeat_interval * 4)
                        if time.time() - info.heartbeat_at < fresh:
                            self._known[key] = (info, time.monotonic())

    # -- heartbeats -----------------------------------------------------------------------------
    async def _publish_heartbeat(self, *, registry: bool = True) -> None:
        info = self._info()
        data = encode(info)
        self._known[self.node_id] = (info, time.monotonic())
        env = Envelope(id=new_id(), kind=Kind.SYSTEM, sender=self.node_id, payload=data)
        self._sent[env.id] = time.monotonic()  # the lease counts from when it was sent
        while len(self._sent) > 64:
            del self._sent[next(iter(self._sent))]
        await self._transport.publish(self._subjects.heartbeat(self.node_id), env)
        if registry:
            await self.kv.put(self.node_id, data)

    async def _registry_loop(self) -> None:
        """Keep this node's registry entry fresh (slower than heartbeats; never delays them)."""
        while True:
            await anyio.sleep(max(1.0, self.heartbeat_interval * 4))
            try:
                await self.kv.put(self.node_id, encode(self._info()))
            except TransportError as exc:
                log.debug("registry entry not written: %s", exc)
            await self._fencing.check()

    async def _heartbeat_loop(self) -> None:
        # Core NATS only: liveness must not wait behind JetStream acknowledgements.
        while True:
            await anyio.sleep(self.heartbeat_interval)
            try:
                await self._publish_heartbeat(registry=False)
            except TransportError as exc:
                log.debug("heartbeat not sent: %s", exc)
            self._detect_lost_nodes()

    async def _on_heartbeat(self, env: Envelope) -> None:
        if self._transport.principal and received_on.get() != self._subjects.heartbeat(
                env.sender):
            # Only a node's principal may publish on its subject: this one speaks for another.
            self._bad_heartbeat(env, f"it came on {received_on.get()[:120]!r}, not on its "
                                "node's subject")
            return
        if env.sender == self.node_id:
            sent_at = self._sent.pop(env.id, None)
            if sent_at is not None:  # else not one of ours (forged): it renews nothing
                self._heard_self(sent_at)
            return
        if not is_node_id(env.sender):
            self._bad_heartbeat(env, "its sender is not a node id")
            return
        if env.type == "goodbye":
            # It closed (cleanly, or its machinery failed): the same loss as a silent node.
            self.node_lost(env.sender, GOODBYE)
            return
        try:
            info = _node_info_decoder.decode(env.payload)
        except DECODE_ERRORS as exc:
            self._bad_heartbeat(env, f"not a NodeInfo: {exc}")
            return
        if info.node_id != env.sender or not all(is_node_id(p) for p in info.pools):
            self._bad_heartbeat(env, "its node id or pool names are malformed")
            return
        self._lost.discard(env.sender)
        self._fencing.shorten(info.lost_after)
        known = self._known.get(env.sender)
        self._known[env.sender] = (info, time.monotonic())
        if known is not None and info.reconnects > known[0].reconnects:
            # It lost the broker for a while: what we asked it then may never have arrived.
            self.on_peer_reconnected(env.sender)

    def _bad_heartbeat(self, env: Envelope, why: str) -> None:
        """One line, no traceback: a crafted heartbeat must not flood every node's log."""
        self._transport.dead_letters.record("heartbeat", "malformed-heartbeat", why)
        log.warning("refused a heartbeat from %r: %s", env.sender[:64], why[:200])

    def _heard_self(self, sent_at: float) -> None:
        """Our own heartbeat came back through the broker: we can judge our peers again."""
        if self._fencing.heard_self(sent_at):
            self._hearing_again(time.monotonic())
        # else the lease lapsed: fencing settles (fenced or not), then calls _hearing_again

    def _hearing_again(self, now: float) -> None:
        if self._suspect_self:
            self._suspect_self = False
            log.warning("broker reachable again: judging peers from now on")
            # Their heartbeats could not reach us either: a fresh window for every one of them.
            for node_id, (info, _) in list(self._known.items()):
                self._known[node_id] = (info, now)

    def _detect_lost_nodes(self) -> None:
        now = time.monotonic()
        heard_self_at = self._fencing.heard_self_at
        if not self._transport.is_connected or now - heard_self_at > self.node_lost_after:
            # Silence from everyone is more likely our own link: suspect ourselves, not them.
            if not self._suspect_self:
                self._suspect_self = True
                log.warning(
                    "node %s cannot hear itself through the broker: not declaring peers lost "
                    "until it does", self.node_id,
                )
            return
        for node_id, (_, seen) in list(self._known.items()):
            if (node_id != self.node_id and now - seen > self.node_lost_after
                    and node_id not in self._declaring):
                self._declaring.add(node_id)
                self._tasks.start_soon(self._declare_silent, node_id)

    async def _declare_silent(self, node_id: str) -> None:
        """Written down as lost first (fencing.py): it must find that before it may act again,
        so nothing of it restarts elsewhere before the record exists."""
        try:
            if await self._fencing.declare_lost(node_id):
                self.node_lost(node_id)
                return
            log.warning("node %s went silent but claims to be alive again: not lost", node_id)
            known = self._known.get(node_id)
            if known is not None:
                self._known[node_id] = (known[0], time.monotonic())
        finally:
            self._declaring.discard(node_id)
