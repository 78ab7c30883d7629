"""Fencing: a node that its peers may have declared lost stops its actors before they act again.

The lease: a node may act while it has heard its own heartbeat come back through the broker
within ``lease_s`` (the shortest ``node_lost_after`` in the cluster, less one heartbeat). Past it
(a SIGSTOP, a starved process, a broker outage), what its actors send waits (``wait_lease``)
until it hears itself again and has read the ``fenced`` bucket, where a node that declares a
peer lost writes it down. Declared lost: its actors were restarted elsewhere, so it stops every
actor here, drops what they were about to send, and carries on as an empty node. Not declared
(everyone sat out a broker outage): they carry on.
"""

from __future__ import annotations

import logging
import time

import anyio

from transports.errors import TransportError

from .state import NodeState

log = logging.getLogger("heterarch.node")

FENCED_BUCKET = "fenced"


class Fencing(NodeState):
    def lease_valid(self) -> bool:
        return time.monotonic() - self._heard_self_at <= self._lease_s

    async def wait_lease(self) -> bool:
        """Wait until this node may act again; False if it was fenced meanwhile (drop the send)."""
        epoch = self._fence_epoch
        while not self.lease_valid():
            await self._lease_renewed.wait()
        return self._fence_epoch == epoch

    def _lease_heard(self, now: float) -> bool:
        """Our heartbeat came back: renew the lease, or settle first if it lapsed (False)."""
        if now - self._heard_self_at <= self._lease_s:
            self._heard_self_at = now
            return True
        if not self._settling:
            self._settling = True
            self.task_group.start_soon(self._settle_lease)
        return False

    async def _settle_lease(self) -> None:
        try:
            declared_by = await self._fenced_kv.get(self.node_id)
            if declared_by is not None:
                self._fence(declared_by.decode(errors="replace"))
                await self._fenced_kv.delete(self.node_id)
        except TransportError as exc:
            log.warning("node %s: cannot read the fenced bucket yet (%s)", self.node_id, exc)
            self._settling = False
            return  # the next heartbeat that comes back tries again
        self._heard_self_at = time.monotonic()
        self._hearing_again(self._heard_self_at)
        self._settling = False
        renewed, self._lease_renewed = self._lease_renewed, anyio.Event()
        renewed.set()

    def _fence(self, declared_by: str) -> None:
        self._fence_epoch += 1
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
            self.task_group.start_soon(self.unregister, cell)
            cell.fail("fenced: its node was declared lost")

    async def _record_fenced(self, node_id: str) -> None:
        """Write down that ``node_id`` was declared lost, for it to read when it comes back."""
        try:
            await self._fenced_kv.put(node_id, self.node_id.encode())
        except TransportError as exc:
            log.warning("could not record node %s as lost: %s", node_id, exc)
