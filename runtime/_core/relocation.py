"""Following an actor that restarted on another node: its supervisor says where it runs now.

Mailbox subjects name the actor alone (``{ns}.a.{actor_id}``), so messages reach whichever node
runs it. What a ref holder cannot tell by itself, when its node went away, is whether the actor
comes back or is gone for good: only its supervisor knows. ``relocate`` asks it (``Locate`` to
the parent's mailbox); ``answer_locate`` is the supervisor's side: it waits for a restart in
progress and answers with the address, or with ``ActorDead`` once the child is gone.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio
import msgspec

from actors import ActorDead, Address, message_type_name
from transports import DECODE_ERRORS, Envelope, ErrorInfo, Kind, Transport, new_id
from transports.errors import NoResponders, RequestTimeout, TransportError

from .codec import encode
from .membership import Membership
from .protocol import DEAD, Locate, Spawned, Subjects
from .replies import Replies, decode_error_payload

if TYPE_CHECKING:
    from .cell import ActorCell

_spawned_decoder = msgspec.msgpack.Decoder(Spawned)


class Relocation:
    def __init__(self, transport: Transport, membership: Membership, replies: Replies, *,
                 spawn_timeout: float) -> None:
        self._transport = transport
        self._subjects = Subjects(transport.namespace)
        self._membership = membership
        self._replies = replies
        self._spawn_timeout = spawn_timeout

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
            reply = await self._transport.request(
                self._subjects.mailbox(address.parent_id), env, timeout=remaining
            )
        except (NoResponders, RequestTimeout, TransportError):
            raise error from None  # no supervisor: the actor went with it
        if reply.kind is not Kind.REPLY:
            raise ActorDead(address.actor_id, decode_error_payload(reply.payload).message)
        try:
            moved = _spawned_decoder.decode(reply.payload).address
        except DECODE_ERRORS:
            raise error from None
        if moved.node_id == address.node_id:
            # Its supervisor has not seen the node go yet (that takes ``node_lost_after``).
            interval = self._membership.heartbeat_interval
            await anyio.sleep(min(interval, max(0.0, remaining)))
        return moved

    async def answer_locate(self, cell: ActorCell, env: Envelope, msg: Locate) -> None:
        record = cell.children.get(msg.actor_id)
        if record is not None and not record.removed and (
            record.restarting or self._membership.is_lost(record.ref.address.node_id)
        ):
            with anyio.move_on_after(self._spawn_timeout):
                await record.wait_restarted(record.generation)
        if not env.reply_to:
            return
        if record is None or record.removed:
            why = str(record.failure) if record is not None and record.failure else "stopped"
            await self._replies.reply_error(env, ErrorInfo(DEAD, why))
            return
        await self._replies.reply_value(env, Spawned(record.ref.address))
