"""Messaging: incoming mailboxes and replies, tell/ask, system messages, stops and watches."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import msgspec

from actors import (
    ActorDead,
    ActorRef,
    Address,
    AskTimeout,
    Inbox,
    MailboxFull,
    MessageNotEncodable,
    RemoteError,
    ReplyNotEncodable,
    Terminated,
    Undeliverable,
    message_type_name,
    reply_type_of,
)
from transports import (
    DECODE_ERRORS,
    Envelope,
    ErrorInfo,
    Kind,
    decode_error,
    error_envelope,
    new_id,
)
from transports._subjects import is_reply_subject
from transports.errors import NoResponders, RequestTimeout, TransportError

from .._observe.agent_spans import first_work_context
from .cell import ActorCell
from .classes import class_path
from .codec import ENCODE_ERRORS, encode, encode_message
from .current import current_cell
from .protocol import (
    DEAD,
    MAILBOX_FULL,
    REPLY_NOT_ENCODABLE,
    UNDELIVERABLE,
    ActorInfo,
    Exited,
    Locate,
    ModelLoad,
    NodeStats,
    StopActor,
    Watch,
    system_decoder,
)
from .state import NodeState
from .trace_context import inject_headers, tracing_enabled

log = logging.getLogger("heterarch.node")


class Messaging(NodeState):
    async def _on_mailbox(self, env: Envelope) -> None:
        if env.reply_to and not self._may_reply_to(env.reply_to):
            self._refuse_envelope(env, "bad-reply-to",
                         f"reply subject {env.reply_to!r} is not an inbox (confused deputy?)")
            return
        if env.kind is Kind.SYSTEM:
            await self._on_system(env)
            return
        cell = self.cells.get(env.target)
        if cell is None:
            self.reject(env, DEAD, f"actor {env.target} is not running on this node")
            return
        cell.deliver(env)

    async def _on_system(self, env: Envelope) -> None:
        try:
            msg = system_decoder.decode(env.payload)
        except DECODE_ERRORS as exc:
            self.reject(env, UNDELIVERABLE, f"invalid system message: {exc}")
            return
        cell = self.cells.get(env.target)
        if isinstance(msg, Exited):
            if cell is not None:
                self.task_group.start_soon(cell.child_exited, msg)
            return
        if cell is None:
            if isinstance(msg, Watch):
                await self.send_terminated(
                    msg.watcher, Exited(actor_id=env.target, reason="not running", abnormal=False),
                    Address(env.target, self.node_id),
                )
            self.reject(env, DEAD, f"actor {env.target} is not running on this node")
            return
        if isinstance(msg, StopActor):
            if 0 <= msg.generation < cell.generation or msg.generation > cell.generation:
                # Meant for an older incarnation, which is gone, or for one that never ran
                # (forged): not this one.
                self.transport.dead_letters.record(env.target, "stale-stop", msg.reason)
                if env.reply_to:
                    self.task_group.start_soon(self.reply_value, env, True)
                return
            self.task_group.start_soon(self._stop_and_reply, cell, env, msg.reason)
        elif isinstance(msg, Locate):
            self.task_group.start_soon(self.answer_locate, cell, env, msg)
        elif isinstance(msg, Watch):
            cell.watchers[msg.watcher.actor_id] = msg.watcher
        else:
            self.reject(env, UNDELIVERABLE, f"unexpected system message {env.type}")

    async def _stop_and_reply(self, cell: ActorCell, env: Envelope, reason: str) -> None:
        await cell.stop(reason)
        if env.reply_to:
            await self.reply_value(env, True)

    async def _on_reply(self, env: Envelope) -> None:
        stream = self._pending_spawns.get(env.correlation_id)
        if stream is None:
            inbox = self._inboxes.get(env.correlation_id)
            if inbox is not None:
                self._deliver_to_inbox(env, *inbox)
                return
            self.transport.dead_letters.record(env.target, "late-reply", env.type)
            return
        with contextlib.suppress(anyio.BrokenResourceError, anyio.WouldBlock):
            stream.send_nowait(env)

    def _deliver_to_inbox(self, env: Envelope, item_type: Any,
                          on_item: Callable[[Any], None]) -> None:
        try:
            item = self.codec.decode(env.payload, item_type)
        except DECODE_ERRORS as exc:
            self.transport.dead_letters.record(env.target, "undeliverable",
                                               f"invalid inbox item: {exc}", len(env.payload))
            return
        on_item(item)

    @contextlib.contextmanager
    def open_inbox(self, item_type: Any, on_item: Callable[[Any], None]) -> Iterator[Inbox]:
        """See ``Context.inbox``: items arrive on this node's replies subject, by inbox id."""
        inbox_id = new_id()
        self._inboxes[inbox_id] = (item_type, on_item)
        try:
            yield Inbox(self.subjects.replies(self.node_id), inbox_id)
        finally:
            del self._inboxes[inbox_id]

    async def send_to_inbox(self, inbox: Inbox, item: Any) -> None:
        env = Envelope(id=new_id(), kind=Kind.REPLY, correlation_id=inbox.inbox_id,
                       type=message_type_name(type(item)), payload=encode(item))
        await self.transport.publish(inbox.subject, env)

    async def _on_control(self, env: Envelope) -> None:
        if env.reply_to:
            stats = NodeStats(
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
                models={
                    pool: ModelLoad(calls=llm.calls, tokens=llm.tokens, cost_usd=llm.cost_usd,
                                    in_flight=llm.in_flight)
                    for pool, services in self.pool_services.items()
                    if (llm := services.get("llm")) is not None and hasattr(llm, "in_flight")
                },
            )
            await self.reply_value(env, stats)

    def reject(self, env: Envelope, error_type: str, message: str) -> None:
        """Count an envelope as a dead letter; tell the asker why, if it asked."""
        reason = _DEAD_LETTER_REASONS.get(error_type, "undeliverable")
        self.transport.dead_letters.record(env.target, reason, message, len(env.payload))
        if env.reply_to:
            self.task_group.start_soon(self.reply_error, env, ErrorInfo(error_type, message))

    async def reply_error(self, env: Envelope, info: ErrorInfo) -> Envelope:
        reply = error_envelope(env, info, sender=env.target)
        await self.send_reply(env.reply_to, reply)
        return reply

    async def send_reply(self, reply_to: str, reply: Envelope) -> None:
        """Publish a reply (lost replies are the asker's to re-send; it waits for them)."""
        if not self._may_reply_to(reply_to):
            self._refuse_envelope(reply, "bad-reply-to",
                                  f"reply subject {reply_to!r} is not an inbox")
            return
        if not self.lease_valid() and not await self.wait_lease():
            self.transport.dead_letters.record(reply.target, "fenced", "reply of a fenced node")
            return
        with contextlib.suppress(TransportError):
            await self.transport.publish(reply_to, reply)

    def _may_reply_to(self, subject: str) -> bool:
        """Replies go to request inboxes and node reply subjects only, never ``$JS``/``$SYS``."""
        return is_reply_subject(subject, self.subjects.replies_prefix)

    def _refuse_envelope(self, env: Envelope, reason: str, why: str) -> None:
        """Drop an envelope that breaks the protocol's rules, with a log line that says why."""
        self.transport.dead_letters.record(env.target, reason, why, len(env.payload))
        log.warning("refused %s from %r to %r: %s", env.kind.name.lower(), env.sender or "?",
                    env.target, why)

    async def reply_value(self, env: Envelope, value: Any) -> Envelope:
        try:
            payload = encode(value)
        except ENCODE_ERRORS:
            # An int >= 2**64, a lone surrogate, ...: the asker gets a typed error, and the
            # actor (and its node) carry on.
            try:
                encode_message(value, f"the reply to {env.type or 'a message'}")
            except MessageNotEncodable as exc:
                detail = f"{exc.field}: {exc.reason}"
            else:  # pragma: no cover - encode failed once, so it fails again
                detail = "not encodable"
            self.transport.dead_letters.record(env.target, "reply-not-encodable", detail)
            return await self.reply_error(env, ErrorInfo(REPLY_NOT_ENCODABLE, detail))
        reply = Envelope(
            id=new_id(),
            kind=Kind.REPLY,
            sender=env.target,
            correlation_id=env.correlation_id or env.id,
            payload=payload,
        )
        await self.send_reply(env.reply_to, reply)
        return reply

    def _envelope(
        self, kind: Kind, address: Address, msg: Any, *, correlation_id: str = ""
    ) -> Envelope:
        cell = current_cell.get()
        return Envelope(
            id=new_id(),
            kind=kind,
            sender=cell.address.actor_id if cell is not None else "",
            target=address.actor_id,
            correlation_id=correlation_id,
            type=message_type_name(type(msg)),
            payload=encode_message(msg),
            headers=self._trace_headers(address.actor_id),
        )

    def _trace_headers(self, target: str) -> dict[str, str]:
        """The trace context for a message to ``target``: the current span's, or the target's
        create span for the first work its parent gives it (``agent_spans``)."""
        if not tracing_enabled():
            return {}
        record = self._records.get(target)
        created = record.created_under if record is not None else None
        return inject_headers(context=first_work_context(created))

    async def tell(self, ref: ActorRef[Any], msg: Any) -> None:
        _check_message(msg)
        env = self._envelope(Kind.TELL, ref.address, msg)
        if not self.lease_valid() and not await self.wait_lease():
            self.transport.dead_letters.record(ref.actor_id, "fenced", env.type)
            return
        await self.transport.publish(self.subjects.mailbox(ref.actor_id), env)

    async def ask(self, ref: ActorRef[Any], msg: Any, *, timeout: float,
                  resend: Callable[[], Any] | None = None) -> Any:
        _check_message(msg)
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        deadline = time.monotonic() + timeout
        reply_type = reply_type_of(type(msg))  # type: ignore[arg-type]
        request_id = new_id()  # the same on every re-send: the target answers it once
        while True:
            # A child supervised here may have moved: its record knows the current address.
            record = self._records.get(ref.actor_id)
            address = record.ref.address if record is not None else ref.address
            generation = record.generation if record is not None else 0
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AskTimeout(address.actor_id, timeout, message_type_name(type(msg)))
            env = self._envelope(Kind.ASK, address, msg, correlation_id=request_id)
            subject = self.subjects.mailbox(address.actor_id)
            if not self.lease_valid() and not await self.wait_lease():
                raise ActorDead(address.actor_id, "not asked: this node was fenced")
            try:
                if address.node_id in self._lost_nodes:
                    raise ActorDead(address.actor_id, "node lost")
                reply: Envelope | None = None
                with self._inflight.waiting_on(address.node_id) as waiting:
                    reply = await self.transport.request(subject, env, timeout=remaining)
                if reply is None:
                    if waiting.resend:
                        continue  # a reconnect may have lost it: send it again
                    raise ActorDead(address.actor_id, "node lost")
                if reply.sender != address.actor_id:
                    # Only the actor asked may answer (the same request id gets it again).
                    self._refuse_envelope(reply, "forged-reply",
                                          f"reply to an ask of {address.actor_id} came from "
                                          f"another sender {reply.sender!r}")
                    continue
                return self._reply_value(reply, reply_type, address, env.type)
            except RequestTimeout:
                raise AskTimeout(address.actor_id, timeout, message_type_name(type(msg))) from None
            except NoResponders:
                error: ActorDead = ActorDead(address.actor_id, "unreachable (no node serves it)")
            except ActorDead as exc:
                error = exc
            record = self._records.get(address.actor_id)
            if record is None:
                # A ref from elsewhere: its supervisor knows where it runs now, or that it is gone.
                ref._rebind(await self.relocate(address, deadline, error))
                continue
            if record.removed:
                raise error
            # A supervised child died before answering: wait for its restart, then ask again.
            with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
                await record.wait_restarted(generation)
            if record.removed:
                raise record.failure or error  # e.g. NoWorkerForPool: why it is gone
            if resend is not None:
                msg = resend()
                _check_message(msg)

    def _reply_value(
        self, reply: Envelope, reply_type: Any, address: Address, message_type: str = ""
    ) -> Any:
        if reply.kind is Kind.REPLY:
            try:
                return self.codec.decode(reply.payload, reply_type)
            except DECODE_ERRORS as exc:
                raise RemoteError(
                    "ReplyTypeError", f"reply does not match {reply_type}: {exc}"
                ) from None
        if reply.kind is Kind.ERROR:
            info = decode_error_payload(reply.payload)
            raise error_from_info(info, address.actor_id, message_type)
        raise RemoteError("ProtocolError", f"unexpected reply kind {reply.kind!r}")

    async def send_system(self, address: Address, msg: Any, *, reply: bool = False) -> Any:
        env = Envelope(
            id=new_id(),
            kind=Kind.SYSTEM,
            target=address.actor_id,
            type=message_type_name(type(msg)),
            payload=encode(msg),
        )
        subject = self.subjects.mailbox(address.actor_id)
        if not reply:
            await self.transport.publish(subject, env)
            return None
        answer = await self.transport.request(subject, env, timeout=self.spawn_timeout)
        return self._reply_value(answer, Any, address)

    async def send_exit(self, parent: Address, exited: Exited) -> None:
        local = self.cells.get(parent.actor_id)
        if local is not None and parent.node_id == self.node_id:
            self.task_group.start_soon(local.child_exited, exited)
            return
        with contextlib.suppress(TransportError):
            await self.send_system(parent, exited)

    async def send_terminated(self, watcher: Address, exited: Exited, dead: Address) -> None:
        msg = Terminated(
            actor_id=exited.actor_id, reason=exited.reason, abnormal=exited.abnormal, ref=dead
        )
        with contextlib.suppress(TransportError):
            await self.tell(self.codec.ref(watcher), msg)

    async def watch(self, ref: ActorRef[Any], watcher: Address) -> None:
        address = ref.address
        local = self.cells.get(address.actor_id)
        if local is not None and address.node_id == self.node_id:
            local.watchers[watcher.actor_id] = watcher
            return
        try:
            await self.send_system(address, Watch(watcher), reply=False)
        except NoResponders:
            await self.send_terminated(
                watcher, Exited(actor_id=address.actor_id, reason="unreachable", abnormal=True),
                address,
            )

    async def stop_ref(self, ref: ActorRef[Any], reason: str, *, generation: int = -1) -> None:
        """Stop an actor wherever it lives and wait until it is gone (no-op if already gone).

        ``generation`` >= 0 stops only that incarnation (or an older one): a stop that arrives
        late never takes down the incarnation that replaced it.
        """
        address = ref.address
        local = self.cells.get(address.actor_id)
        if local is not None and address.node_id == self.node_id:
            if 0 <= generation < local.generation:
                return
            await local.stop(reason)
            return
        if address.node_id in self._lost_nodes:
            return
        with self._inflight.waiting_on(address.node_id), contextlib.suppress(
            ActorDead, NoResponders, RequestTimeout, TransportError
        ):
            await self.send_system(address, StopActor(reason, generation), reply=True)


def _check_message(msg: Any) -> None:
    if not isinstance(msg, msgspec.Struct):
        raise TypeError(
            f"messages must be msgspec Structs (frozen, ideally tagged), not {type(msg).__name__}"
        )


def decode_error_payload(payload: bytes) -> ErrorInfo:
    try:
        return decode_error(payload)
    except DECODE_ERRORS:
        return ErrorInfo("ProtocolError", "malformed error reply")


_UNDELIVERABLE = {UNDELIVERABLE, "MalformedEnvelope"}
_DEAD_LETTER_REASONS = {DEAD: "actor-dead", MAILBOX_FULL: "mailbox-full"}


def error_from_info(info: ErrorInfo, target: str, message_type: str = "") -> Exception:
    """Map an error reply to the typed exception the asker sees."""
    if info.type == DEAD:
        return ActorDead(target, info.message)
    if info.type in _UNDELIVERABLE:
        return Undeliverable(target, info.message)
    if info.type == REPLY_NOT_ENCODABLE:
        return ReplyNotEncodable(message_type or "a message", info.message)
    if info.type == MAILBOX_FULL:
        return MailboxFull(target, info.message)
    return RemoteError(info.type, info.message, info.traceback)
