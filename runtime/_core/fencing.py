"""Fencing: a node that its peers may have declared lost stops its actors before they act again.

The lease: a node may act while the last of its own heartbeats that came back through the broker
promptly was *sent* within ``lease_s`` (the shortest ``node_lost_after`` in the cluster, less one
heartbeat). A peer hears that heartbeat no earlier than it was sent, so it cannot declare this
node lost before the lease ran out, however late either side hears it. Past the lease (a SIGSTOP,
a starved process, a broker outage), or when a heartbeat comes back late, what its actors send
waits (``wait``) until it has settled with the ``fenced`` bucket, which decides who wins the race
by compare-and-set (``KeyValue.create``):

* a peer that finds a node silent creates the node's key there with its own id before anything
  of that node is restarted (``declare_lost``), and declares nothing if the key holds a fresh
  claim of the node that it is alive;
* a node whose lease lapsed creates the same key with an ``alive:`` claim. Created: nobody
  declared it, and for ``2 * node_lost_after`` nobody can (the claim is withdrawn after that;
  its heartbeats reached its peers meanwhile). Found a peer's id: its actors were restarted
  elsewhere, so the node stops every actor here (``on_fenced``), drops what they were about to
  send, and carries on as an empty node.

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
ALIVE = b"alive:"


def alive_claim(node_id: str) -> bytes:
    return ALIVE + f"{time.time():.3f}:{node_id}".encode()


def claim_is_fresh(value: bytes, node_lost_after: float) -> bool:
    """An ``alive:`` claim written less than ``2 * node_lost_after`` (and some slack) ago."""
    try:
        at = float(value[len(ALIVE):].split(b":", 1)[0])
    except ValueError:
        return False
    return time.time() - at < 2 * node_lost_after + 5.0


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
        self._node_lost_after = node_lost_after
        self._on_fenced = on_fenced
        #: Called with the time once a lapse is settled and the node hears itself again.
        self.on_settled: Callable[[float], None] = lambda now: None
        #: When the last of our heartbeats that came back promptly was sent.
        self.heard_self_at = time.monotonic()
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

    def heard_self(self, sent_at: float) -> bool:
        """Our heartbeat sent at ``sent_at`` came back: renew the lease from then; or settle
        first (False) if the lease had lapsed before it was sent, or it took long to come back
        (buffered through a broker outage, or we stalled: peers may not have heard it in time).
        """
        now = time.monotonic()
        if sent_at - self.heard_self_at <= self.lease_s and now - sent_at <= self.lease_s / 2:
            was_valid = self.valid()
            self.heard_self_at = max(self.heard_self_at, sent_at)
            if not was_valid and self.valid():
                self._wake()
            return True
        if not self._settling:
            self._settling = True
            self._tasks.start_soon(self._settle)
        return False

    async def _settle(self) -> None:
        began = time.monotonic()
        claim = alive_claim(self._node_id)
        try:
            existing = await self.kv.create(self._node_id, claim)
            if existing is not None and not existing.startswith(ALIVE):
                self._fence(existing.decode(errors="replace"))
                await self.kv.delete(self._node_id)
            elif existing is None:
                self._tasks.start_soon(self._withdraw_claim, claim)
        except TransportError as exc:
            log.warning("node %s: cannot read the fenced bucket yet (%s)", self._node_id, exc)
            self._settling = False
            return  # the next heartbeat that comes back tries again
        self.heard_self_at = began  # nobody could declare us lost once our claim was stored
        self.on_settled(time.monotonic())
        self._settling = False
        self._wake()

    async def check(self) -> None:
        """Now and then, lease or not: a peer that stopped hearing us (a one-way cut) may have
        declared us lost although we hear ourselves; then we were fenced."""
        if self._settling:
            return
        try:
            declared_by = await self.kv.get(self._node_id)
            if declared_by is not None and not declared_by.startswith(ALIVE):
                self._fence(declared_by.decode(errors="replace"))
                await self.kv.delete(self._node_id)
        except TransportError as exc:
            log.debug("node %s: fenced bucket not read (%s)", self._node_id, exc)

    def _wake(self) -> None:
        renewed, self._renewed = self._renewed, anyio.Event()
        renewed.set()

    async def _withdraw_claim(self, claim: bytes) -> None:
        """Our peers heard us meanwhile: let them declare us lost again should we go silent."""
        await anyio.sleep(2 * self._node_lost_after)
        try:
            if await self.kv.get(self._node_id) == claim:
                await self.kv.delete(self._node_id)
        except TransportError as exc:
            log.debug("node %s: alive claim not withdrawn (%s)", self._node_id, exc)

    def _fence(self, declared_by: str) -> None:
        self._epoch += 1
        self._on_fenced(declared_by)

    async def record_lost(self, node_id: str) -> None:
        """Write down that ``node_id`` was declared lost, for it to read when it comes back
        (a node that said goodbye; a silent one went through ``declare_lost`` first)."""
        try:
            existing = await self.kv.create(node_id, self._node_id.encode())
            if existing is not None and existing.startswith(ALIVE):
                await self.kv.put(node_id, self._node_id.encode())
        except TransportError as exc:
            log.warning("could not record node %s as lost: %s", node_id, exc)

    async def declare_lost(self, node_id: str) -> bool:
        """Write down that silent ``node_id`` is lost before anything acts on it; False if it
        claimed first that it is alive (it heard itself again: nothing of it may restart)."""
        delay = 0.1
        while True:
            try:
                existing = await self.kv.create(node_id, self._node_id.encode())
                if existing is None or not existing.startswith(ALIVE):
                    return True  # ours, or another peer's declaration
                if claim_is_fresh(existing, self._node_lost_after):
                    return False
                await self.kv.put(node_id, self._node_id.encode())  # a stale claim
                return True
            except TransportError as exc:
                log.warning("could not record node %s as lost yet: %s", node_id, exc)
                await anyio.sleep(delay)
                delay = min(2.0, delay * 2)

    async def declared_lost_by(self, node_id: str) -> str | None:
        """Who recorded ``node_id`` as lost (None if nobody did, or it has read it since)."""
        value = await self.kv.get(node_id)
        if value is None or value.startswith(ALIVE):
            return None
        return value.decode(errors="replace")
