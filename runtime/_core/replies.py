"""Replies: answering an envelope (a value, an error, a refusal), from wherever on the node.

Every part that answers someone (a cell's handler, the pool consumer, a supervisor answering
``Locate``, the node's control subject) goes through ``Replies``: a reply only ever goes to a
request inbox or a node's replies subject (never ``$JS``/``$SYS``: no confused deputy), and a
fenced node answers nothing.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from actors import MessageNotEncodable
from transports import (
    DECODE_ERRORS,
    Envelope,
    ErrorInfo,
    Kind,
    Transport,
    decode_error,
    error_envelope,
    new_id,
)
from transports._subjects import is_reply_subject
from transports._tasks import HostedTaskGroup
from transports.errors import TransportError

from .codec import ENCODE_ERRORS, encode, encode_message
from .fencing import Fencing
from .protocol import CANCELLED, DEAD, MAILBOX_FULL, REPLY_NOT_ENCODABLE, Subjects

log = logging.getLogger("heterarch.node")

_DEAD_LETTER_REASONS = {DEAD: "actor-dead", MAILBOX_FULL: "mailbox-full",
                        CANCELLED: "cancelled"}


class Replies:
    def __init__(self, transport: Transport, tasks: HostedTaskGroup, fencing: Fencing) -> None:
        self._transport = transport
        self._tasks = tasks
        self._fencing = fencing
        self._replies_prefix = Subjects(transport.namespace).replies_prefix
        #: Refusals so far, by (who, reason): each is logged once, then at 10, 100, 1000 ...
        self.refusals: dict[tuple[str, str], int] = {}

    def reject(self, env: Envelope, error_type: str, message: str) -> None:
        """Count an envelope as a dead letter; tell the asker why, if it asked."""
        reason = _DEAD_LETTER_REASONS.get(error_type, "undeliverable")
        self._transport.dead_letters.record(env.target, reason, message, len(env.payload))
        if env.reply_to:
            self._tasks.start_soon(self.reply_error, env, ErrorInfo(error_type, message))

    async def reply_error(self, env: Envelope, info: ErrorInfo) -> Envelope:
        reply = error_envelope(env, info, sender=env.target)
        await self.send_reply(env.reply_to, reply)
        return reply

    def value_envelope(self, env: Envelope, value: Any) -> Envelope:
        """The answer ``value`` to ``env``, not sent (an error answer if it cannot encode)."""
        try:
            payload = encode(value)
        except ENCODE_ERRORS:
            try:
                encode_message(value, f"the reply to {env.type or 'a message'}")
            except MessageNotEncodable as exc:
                detail = f"{exc.field}: {exc.reason}"
            else:  # pragma: no cover - encode failed once, so it fails again
                detail = "not encodable"
            self._transport.dead_letters.record(env.target, "reply-not-encodable", detail)
            return error_envelope(env, ErrorInfo(REPLY_NOT_ENCODABLE, detail), sender=env.target)
        return Envelope(id=new_id(), kind=Kind.REPLY, sender=env.target,
                        correlation_id=env.correlation_id or env.id, payload=payload)

    async def reply_value(self, env: Envelope, value: Any) -> Envelope:
        """Send the answer ``value`` to ``env`` (a typed error if it cannot encode: an int >=
        2**64, a lone surrogate...; the actor and its node carry on)."""
        reply = self.value_envelope(env, value)
        await self.send_reply(env.reply_to, reply)
        return reply

    async def send_reply(self, reply_to: str, reply: Envelope) -> None:
        """Publish a reply (lost replies are the asker's to re-send; it waits for them)."""
        if not self.may_reply_to(reply_to):
            self.refuse(reply, "bad-reply-to", f"reply subject {reply_to!r} is not an inbox")
            return
        if not self._fencing.valid() and not await self._fencing.wait():
            self._transport.dead_letters.record(reply.target, "fenced", "reply of a fenced node")
            return
        with contextlib.suppress(TransportError):
            await self._transport.publish(reply_to, reply)

    def may_reply_to(self, subject: str) -> bool:
        """Replies go to request inboxes and node reply subjects only, never ``$JS``/``$SYS``."""
        return is_reply_subject(subject, self._replies_prefix)

    def refuse(self, env: Envelope, reason: str, why: str) -> None:
        """Drop an envelope that breaks the protocol's rules, with a log line that says why."""
        self._transport.dead_letters.record(env.target, reason, why, len(env.payload))
        self.refused(repr(env.sender or "?"), reason,
                     f"{env.kind.name.lower()} to {env.target!r}: {why}")

    def refused(self, who: str, reason: str, why: str) -> None:
        """Count a refusal of ``who``'s ``reason`` (a dead-letter reason); log it the first time
        (who, what and why), then once at 10, 100, 1000 ... times: a counter, not a flood."""
        key = (who, reason)
        n = self.refusals[key] = self.refusals.get(key, 0) + 1
        if n == 1 or (n >= 10 and str(n).rstrip("0") == "1"):
            log.warning("refused %s from %s (%d so far): %s", reason, who, n, why)


def decode_error_payload(payload: bytes) -> ErrorInfo:
    try:
        return decode_error(payload)
    except DECODE_ERRORS:
        return ErrorInfo("ProtocolError", "malformed error reply")
