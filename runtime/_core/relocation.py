"""Following an actor that restarted on another node: its supervisor says where it runs now.

Mailbox subjects name the actor alone (``{ns}.a.{actor_id}``), so messages reach whichever node
runs it. What a ref holder cannot tell by itself, when its node went away, is whether the actor
comes back or is gone for good: only its supervisor knows. ``relocate`` asks it (``Locate`` to
the parent's mailbox); ``answer_locate`` is the supervisor's side: it waits for a restart in
progress and answers with the address, or with ``ActorDead`` once the child is gone.
"""

from __future__ import annotations

import time

import anyio

from actors import ActorDead, Address, message_type_name
from transports import Envelope, ErrorInfo, Kind, new_id
from transports.errors import NoResponders, RequestTimeout, TransportError

from .cell import ActorCell
from .codec import encode
from .messaging import decode_error_payload
from .protocol import DEAD, Locate, Spawned
from .state import NodeState


class Relocation(NodeState):
    async def relocate(self, address: Address, deadline: float, error: ActorDead) -> Address:
        """Where ``address``'s actor runs now (its supervisor says); ``error`` if it is gone."""
        remaining = deadline - time.monotonic()
        if not address.parent_id or remaining <= 0:
            raise error
        env = Envelope(
            id=new_id(), kind=Kind.SYSTEM, target=address.parent_id,
            type=message_type_name(Locate),
            payload=encode(Locate(address.actor_id, address.node_id)),
        )
        try:
            reply = await self.transport.request(
                self.subjects.mailbox(address.parent_id), env, timeout=remaining
            )
        except (NoResponders, RequestTimeout, TransportError):
            raise error from None  # no supervisor: the actor went with it
        if reply.kind is not Kind.REPLY:
            raise ActorDead(address.actor_id, decode_error_payload(reply.payload).message)
        moved: Address = self.codec.decode(reply.payload, Spawned).address
        if moved.node_id == address.node_id:
            # Its supervisor has not seen the node go yet (that takes ``node_lost_after``).
            await anyio.sleep(min(self.heartbeat_interval, max(0.0, remaining)))
        return moved

    async def answer_locate(self, cell: ActorCell, env: Envelope, msg: Locate) -> None:
        record = cell.children.get(msg.actor_id)
        if record is not None and not record.removed and (
            record.restarting or record.ref.address.node_id in self._lost_nodes
        ):
            with anyio.move_on_after(self.spawn_timeout):
                await record.wait_restarted(record.generation)
        if not env.reply_to:
            return
        if record is None or record.removed:
            why = str(record.failure) if record is not None and record.failure else "stopped"
            await self.reply_error(env, ErrorInfo(DEAD, why))
            return
        await self.reply_value(env, Spawned(record.ref.address))
