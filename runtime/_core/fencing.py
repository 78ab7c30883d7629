"""Fencing: a node that its peers may have declared lost stops its actors before they act again.

The lease: a node may act while it has heard its own heartbeat come back through the broker
within ``lease_s`` (the shortest ``node_lost_after`` in the cluster, less one heartbeat). Past it
(a SIGSTOP, a starved process, a broker outage), what its actors send waits (``wait``) until it
hears itself again and has read the ``fenced`` bucket, where a node that declares a peer lost
writes it down. Declared lost: its actors were restarted elsewhere, so the node stops every actor
here (``on_fenced``), drops what they were about to send, and carries on as an empty node. Not
declared (everyone sat out a broker outage): they carry on.

``Membership`` feeds the lease (``heard_self``, ``shorten``) and is told when a lapse is settled
(``on_settled``); the node stops its actors when fenced (``on_fenced``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio

from transports import KeyValue, Transport
from transports._tasks import HostedTaskGroup
from transports.errors import TransportError

log = logging.getLogger("heterarch.node")

FENCED_BUCKET = "fenced"


class Fencing:
    """The lease of one node, and the ``fenced`` bucket it reads and writes."""

    def __init__(
        self,
        transport: Transport,
        node_id: str,
        tasks: HostedTaskGroup,
        *,
        heartbeat_interval: float,
        node_lost_after: float,
        on_fenced: Callable[[str], None],
    ) -> None:
        self._transport = transport
        self._node_id = node_id
        self._tasks = tasks
        self._heartbeat_interval = heartbeat_interval
        self._on_fenced = on_fenced
        #: Called with the time once a lapse is settled and the node hears itself again.
        self.on_settled: Callable[[float], None] = lambda now: None
        self.heard_self_at = time.monotonic()  # when our own heartbeat last came back
        self.lease_s = max(heartbeat_interval, node_lost_after - heartbeat_interval)
        self._renewed = anyio.Event()
        self._settling = False
        self._epoch = 0  # +1 each time this node is fenced: sends begun before it are dropped
        self._kv: KeyValue | None = None

    async def open(self) -> None:
        # Who was declared lost; read by a node that comes back from a pause.
        self._kv = await self._transport.key_value(FENCED_BUCKET, ttl=3600.0)

    @property
    def kv(self) -> KeyValue:
        assert self._kv is not None, "fencing not opened"
        return self._kv

    def restart_clock(self) -> None:
        """A slow start is no lapse of the lease."""
        self.heard_self_at = time.monotonic()

    def valid(self) -> bool:
        return time.monotonic() - self.heard_self_at <= self.lease_s

    async def wait(self) -> bool:
        """Wait until this node may act again; False if it was fenced meanwhile (drop the send)."""
        epoch = self._epoch
        while not self.valid():
            await self._renewed.wait()
        return self._epoch == epoch

    def shorten(self, peer_lost_after: float) -> None:
        """A peer that judges faster shortens our lease: we stop acting before it judges us."""
        if 0 < peer_lost_after < self.lease_s + self._heartbeat_interval:
            self.lease_s = max(self._heartbeat_interval,
                               peer_lost_after - self._heartbeat_interval)

    def heard_self(self, now: float) -> bool:
        """Our heartbeat came back: renew the lease, or settle first if it lapsed (False)."""
        if now - self.heard_self_at <= self.lease_s:
            self.heard_self_at = now
            return True
        if not self._settling:
            self._settling = True
            self._tasks.start_soon(self._settle)
        return False

    async def _settle(self) -> None:
        try:
            declared_by = await self.kv.get(self._node_id)
            if declared_by is not None:
                self._fence(declared_by.decode(errors="replace"))
                await self.kv.delete(self._node_id)
        except TransportError as exc:
            log.warning("node %s: cannot read the fenced bucket yet (%s)", self._node_id, exc)
            self._settling = False
            return  # the next heartbeat that comes back tries again
        self.heard_self_at = time.monotonic()
        self.on_settled(self.heard_self_at)
        self._settling = False
        renewed, self._renewed = self._renewed, anyio.Event()
        renewed.set()

    def _fence(self, declared_by: str) -> None:
        self._epoch += 1
        self._on_fenced(declared_by)

    async def record_lost(self, node_id: str) -> None:
        """Write down that ``node_id`` was declared lost, for it to read when it comes back."""
        try:
            await self.kv.put(node_id, self._node_id.encode())
        except TransportError as exc:
            log.warning("could not record node %s as lost: %s", node_id, exc)

    async def declared_lost_by(self, node_id: str) -> str | None:
        """Who recorded ``node_id`` as lost (None if nobody did, or it has read it since)."""
        value = await self.kv.get(node_id)
        return None if value is None else value.decode(errors="replace")
