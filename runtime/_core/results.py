"""Answers kept across incarnations, by idempotency key (the ``results`` bucket).

An ask made with ``idempotent=`` carries a key (envelope header ``idem``) derived from the
request that caused it: the key of the ask its asker is serving (or that ask's request id), the
message's type and content, and how many equal asks the same handler made before it. A parent
restarted elsewhere is asked again under the same request id, so when it hands out the same work
again its asks carry the same keys.

The callee claims a key before it runs the handler (``KeyValue.create``: of two deliveries at
once, one runs) and writes the answer under it before it replies; a later ask with the key, to
any actor on any node, is answered from it without running the handler. A claim whose handler
did not answer (an error, a cancel, its node fenced) is withdrawn, so the next ask runs it; a
claim held by a node declared lost is taken over. Asks without a key never touch the bucket.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING

import anyio
import msgspec

from transports import Envelope, Kind, new_id
from transports.errors import TransportError

if TYPE_CHECKING:
    from transports import KeyValue, Transport

    from .fencing import Fencing
    from .membership import Membership

RESULTS_BUCKET = "results"
#: How long an answer is kept (the bucket's TTL): a repeat later than this runs again.
RESULTS_TTL_S = 24 * 3600.0
HEADER = "idem"

log = logging.getLogger("heterarch.node")

_CLAIM = b"c:"
_RESULT = b"r:"
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Envelope)


def derive_key(base: str, message_type: str, payload: bytes, seq: int) -> str:
    """The key of an ask: what caused it (``base``), what it says, and its place among equals."""
    h = hashlib.sha256()
    for part in (base.encode(), message_type.encode(), payload, str(seq).encode()):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()[:40]


def explicit_key(key: str) -> str:
    """A caller's own key, made safe for a bucket key."""
    return hashlib.sha256(b"explicit:" + key.encode()).hexdigest()[:40]


class Results:
    def __init__(self, transport: Transport, node_id: str, membership: Membership,
                 fencing: Fencing) -> None:
        self._transport = transport
        self._node_id = node_id
        self._membership = membership
        self._fencing = fencing
        self._kv: KeyValue | None = None
        self._held: dict[str, bytes] = {}  # keys claimed here, not yet answered or withdrawn
        self._lock = anyio.Lock()

    async def _bucket(self) -> KeyValue:
        if self._kv is None:  # opened on the first keyed ask: nothing to pay without keys
            async with self._lock:
                if self._kv is None:
                    self._kv = await self._transport.key_value(RESULTS_BUCKET, ttl=RESULTS_TTL_S)
        return self._kv

    async def claim(self, key: str, env: Envelope) -> Envelope | None:
        """Claim ``key`` to run ``env``'s handler (None), or return the answer kept for it,
        readdressed as the answer to ``env``. Waits while another live delivery holds it."""
        kv = await self._bucket()
        mine = _CLAIM + f"{self._node_id}:{env.target}:{env.correlation_id}".encode()
        wait = 0.02
        while True:
            existing = await kv.create(key, mine)
            if existing is None:
                self._held[key] = mine
                return None
            if existing.startswith(_RESULT):
                kept = _decoder.decode(existing[len(_RESULT):])
                return msgspec.structs.replace(
                    kept, id=new_id(), sender=env.target,
                    correlation_id=env.correlation_id or env.id)
            holder = existing[len(_CLAIM):].decode(errors="replace").split(":")
            if self._membership.is_lost(holder[0]) or (
                    await self._fencing.declared_lost_by(holder[0]) is not None):
                await kv.put(key, mine)  # its node was declared lost: it never answers
                self._held[key] = mine
                return None
            await anyio.sleep(wait)  # another delivery runs it: wait for its answer
            wait = min(wait * 2, 0.5)

    async def keep(self, key: str, answer: Envelope) -> None:
        """Keep ``answer`` (a value, not an error) for later asks with ``key``."""
        if answer.kind is not Kind.REPLY:
            await self.release(key)
            return
        kv = await self._bucket()
        await kv.put(key, _RESULT + _encoder.encode(answer))
        self._held.pop(key, None)

    async def release(self, key: str) -> None:
        """The handler did not answer: withdraw the claim, so the next ask runs it."""
        mine = self._held.pop(key, None)
        kv = await self._bucket()
        if mine is not None and await kv.get(key) == mine:  # not one taken over since
            await kv.delete(key)

    async def release_held(self) -> None:
        """This node was fenced: withdraw every claim its handlers still hold."""
        for key in list(self._held):
            try:
                await self.release(key)
            except TransportError as exc:
                log.warning("node %s: claim %s not withdrawn (%s)", self._node_id, key, exc)
