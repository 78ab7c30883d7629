"""Membership: heartbeats, the node registry, lost-node detection, which pools are served."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import time

import anyio
import msgspec

from transports import (
    DECODE_ERRORS,
    Envelope,
    Kind,
    new_id,
)
from transports.errors import TransportError

from ..errors import NoWorkerForPool, UnknownPool
from .codec import encode
from .protocol import (
    Exited,
    NodeInfo,
    NodeStats,
    is_node_id,
)
from .state import NodeState

log = logging.getLogger("heterarch.node")

_node_info_decoder = msgspec.msgpack.Decoder(NodeInfo)
_stats_decoder = msgspec.msgpack.Decoder(NodeStats)


class Membership(NodeState):
    async def wait_pool(self, pool: str) -> None:
        """Return once some live worker serves ``pool``; ``NoWorkerForPool`` after the timeout."""
        deadline = time.monotonic() + self.placement_timeout
        refreshed = False
        while True:
            if self._pool_is_served(pool):
                return
            if not refreshed:
                refreshed = True
                await self._refresh_nodes()
                declared = self.declared_pools()
                if declared and pool not in declared:  # a typo: no config names it
                    raise UnknownPool(pool, sorted(declared))
                continue
            if time.monotonic() >= deadline:
                raise NoWorkerForPool(pool, self.placement_timeout, self.served_pools())
            await anyio.sleep(0.05)

    def _pool_is_served(self, pool: str) -> bool:
        now = time.monotonic()
        return any(
            pool in info.pools and now - seen < self.node_lost_after
            for info, seen in self._known_nodes.values()
        )

    def declared_pools(self) -> set[str]:
        """Every pool the config files of the live workers name (served or not)."""
        return {p for info, _ in self._known_nodes.values() for p in (*info.declared, *info.pools)}

    def served_pools(self) -> list[str]:
        return sorted({p for info, _ in self._known_nodes.values() for p in info.pools})

    async def _refresh_nodes(self) -> None:
        with contextlib.suppress(TransportError):
            for key, value in (await self._nodes_kv.items()).items():
                with contextlib.suppress(*DECODE_ERRORS):
                    info = _node_info_decoder.decode(value)
                    if key not in self._known_nodes and key not in self._lost_nodes:
                        fresh = self.node_lost_after + max(1.0, self.heartbeat_interval * 4)
                        if time.time() - info.heartbeat_at < fresh:
                            self._known_nodes[key] = (info, time.monotonic())

    def info(self) -> NodeInfo:
        return NodeInfo(
            node_id=self.node_id,
            role=self.role,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self.started_at,
            pools={p.name: p.hardware for p in self.pools.values()},
            declared=self.declared,
            free_slots={name: s.value for name, s in self._slots.items()},
            actors=len(self.cells) - 1,
            heartbeat_at=time.time(),
            reconnects=self.transport.reconnects,
            lost_after=self.node_lost_after,
        )

    async def _publish_heartbeat(self, *, registry: bool = True) -> None:
        info = self.info()
        data = encode(info)
        self._known_nodes[self.node_id] = (info, time.monotonic())
        env = Envelope(id=new_id(), kind=Kind.SYSTEM, sender=self.node_id, payload=data)
        await self.transport.publish(self.subjects.heartbeat(self.node_id), env)
        if registry:
            await self._nodes_kv.put(self.node_id, data)

    async def _registry_loop(self) -> None:
        """Keep this node's registry entry fresh (slower than heartbeats; never delays them)."""
        while True:
            await anyio.sleep(max(1.0, self.heartbeat_interval * 4))
            try:
                await self._nodes_kv.put(self.node_id, encode(self.info()))
            except TransportError as exc:
                log.debug("registry entry not written: %s", exc)

    async def _publish_goodbye(self) -> None:
        env = Envelope(id=new_id(), kind=Kind.SYSTEM, sender=self.node_id, type="goodbye")
        await self.transport.publish(self.subjects.heartbeat(self.node_id), env)
        await self._nodes_kv.delete(self.node_id)

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
        if env.sender == self.node_id:
            self._heard_self()
            return
        if not is_node_id(env.sender):
            self._bad_heartbeat(env, "its sender is not a node id")
            return
        if env.type == "goodbye":
            self._known_nodes.pop(env.sender, None)
            return
        try:
            info = _node_info_decoder.decode(env.payload)
        except DECODE_ERRORS as exc:
            self._bad_heartbeat(env, f"not a NodeInfo: {exc}")
            return
        if info.node_id != env.sender or not all(is_node_id(p) for p in info.pools):
            self._bad_heartbeat(env, "its node id or pool names are malformed")
            return
        self._lost_nodes.discard(env.sender)
        if 0 < info.lost_after < self._lease_s + self.heartbeat_interval:
            # A peer that judges faster shortens our lease: we stop acting before it judges us.
            self._lease_s = max(self.heartbeat_interval, info.lost_after - self.heartbeat_interval)
        known = self._known_nodes.get(env.sender)
        self._known_nodes[env.sender] = (info, time.monotonic())
        if known is not None and info.reconnects > known[0].reconnects:
            # It lost the broker for a while: what we asked it then may never have arrived.
            self._inflight.resend(env.sender)

    def _bad_heartbeat(self, env: Envelope, why: str) -> None:
        """One line, no traceback: a crafted heartbeat must not flood every node's log."""
        self.transport.dead_letters.record("heartbeat", "malformed-heartbeat", why)
        log.warning("refused a heartbeat from %r: %s", env.sender[:64], why[:200])

    def _heard_self(self) -> None:
        """Our own heartbeat came back through the broker: we can judge our peers again."""
        now = time.monotonic()
        if self._lease_heard(now):
            self._hearing_again(now)
        # else the lease lapsed: fencing.py settles (fenced or not), then calls _hearing_again

    def _hearing_again(self, now: float) -> None:
        if self._suspect_self:
            self._suspect_self = False
            log.warning("broker reachable again: judging peers from now on")
            # Their heartbeats could not reach us either: a fresh window for every one of them.
            for node_id, (info, _) in list(self._known_nodes.items()):
                self._known_nodes[node_id] = (info, now)

    def _detect_lost_nodes(self) -> None:
        now = time.monotonic()
        if not self.transport.is_connected or now - self._heard_self_at > self.node_lost_after:
            # Silence from everyone is more likely our own link: suspect ourselves, not them.
            if not self._suspect_self:
                self._suspect_self = True
                log.warning(
                    "node %s cannot hear itself through the broker: not declaring peers lost "
                    "until it does", self.node_id,
                )
            return
        for node_id, (_, seen) in list(self._known_nodes.items()):
            if node_id != self.node_id and now - seen > self.node_lost_after:
                del self._known_nodes[node_id]
                self.node_lost(node_id)

    def _on_transport_reconnected(self) -> None:
        """We lost the broker for a while: asks in flight, or their replies, may be lost."""
        resent = self._inflight.resend()
        if resent:
            log.info("reconnected: re-sending %d asks in flight", resent)

    def node_lost(self, node_id: str) -> None:
        """A node stopped heart-beating: fail what depended on it, restart what we supervise."""
        if node_id in self._lost_nodes:
            return
        self._lost_nodes.add(node_id)
        log.warning("node %s lost (no heartbeat for %.1fs)", node_id, self.node_lost_after)
        self.task_group.start_soon(self._record_fenced, node_id)
        self._inflight.node_lost(node_id)
        for cell in list(self.cells.values()):
            lost = [r for r in cell.children.values()
                    if r.ref.address.node_id == node_id and not r.restarting]
            for i, record in enumerate(lost):
                exited = Exited(
                    actor_id=record.ref.actor_id, reason=f"node {node_id} lost",
                    abnormal=True, generation=record.generation,
                )
                lost_child = functools.partial(cell.child_exited, exited, counts=i == 0)
                self.task_group.start_soon(lost_child)
            if cell.parent is not None and cell.parent.node_id == node_id:
                self.task_group.start_soon(cell.stop_abnormally, "parent's node lost")

    async def cluster_stats(self, timeout: float = 1.0) -> list[NodeStats]:
        """Ask every live node for its stats."""
        await self._refresh_nodes()
        results: list[NodeStats] = []

        async def one(node_id: str) -> None:
            env = Envelope(id=new_id(), kind=Kind.SYSTEM, type="stats")
            with contextlib.suppress(TransportError, *DECODE_ERRORS):
                reply = await self.transport.request(
                    self.subjects.node_control(node_id), env, timeout=timeout
                )
                if reply.kind is Kind.REPLY:
                    results.append(_stats_decoder.decode(reply.payload))

        async with anyio.create_task_group() as tg:
            for node_id in list(self._known_nodes):
                tg.start_soon(one, node_id)
        return sorted(results, key=lambda s: (s.info.role, s.info.node_id))
