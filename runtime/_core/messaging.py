"""Messaging: incoming mailboxes and replies, tell/ask, system messages, stops and watches.

System messages that must arrive (an exit to a supervisor, a watch, a death notice, a stop) are
sent until they are acknowledged or until the peer is known gone (its node lost, or no mailbox
answers for it); a broker reconnect sends again what was waiting (``InFlight``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from actors import (
    ActorDead,
    ActorRef,
    Address,
    AskTimeout,
    Inbox,
    MailboxFull,
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
    Transport,
    new_id,
)
from transports._tasks import HostedTaskGroup
from transports.errors import NoResponders, RequestTimeout, TransportError

from .._observe.agent_spans import first_work_context
from .codec import Codec, encode, encode_message
from .current import current_cell
from .fencing import Fencing
from .inflight import InFlight
from .membership import Membership
from .protocol import (
    CANCELLED,
    DEAD,
    MAILBOX_FULL,
    REPLY_NOT_ENCODABLE,
    STOP_REPLY_S,
    UNDELIVERABLE,
    CancelAsk,
    Exited,
    Locate,
    StopActor,
    Subjects,
    Watch,
    system_decoder,
)
from .relocation import Relocation
from .replies import Replies, decode_error_payload
from .results import HEADER as IDEM_HEADER
from .results import derive_key, explicit_key
from .supervision import Supervision
from .trace_context import inject_headers, tracing_enabled

if TYPE_CHECKING:
    from .cell import ActorCell

log = logging.getLogger("heterarch.node")

#: A reply-subject listener: called with each envelope that carries its correlation id.
ReplyListener = Callable[[Envelope], None]


class Messaging:
    """The node's messenger: what refs made here (``codec.ref``) send through."""

    def __init__(
        self,
        transport: Transport,
        node_id: str,
        cells: Mapping[str, ActorCell],
        tasks: HostedTaskGroup,
        *,
        fencing: Fencing,
        membership: Membership,
        supervision: Supervision,
        replies: Replies,
        relocation: Relocation,
        spawn_timeout: float,
    ) -> None:
        self._transport = transport
        self._subjects = Subjects(transport.namespace)
        self._node_id = node_id
        self._cells = cells
        self._tasks = tasks
        self._fencing = fencing
        self._membership = membership
        self._supervision = supervision
        self._replies = replies
        self._relocation = relocation
        self._spawn_timeout = spawn_timeout
        self.codec = Codec(self)
        self.inflight = InFlight()
        self._expected: dict[str, ReplyListener] = {}  # correlation id -> listener
        self._closing = False
        membership.on_node_lost(lambda node_id, why: self.inflight.node_lost(node_id))
        membership.on_peer_reconnected = self._peer_reconnected

    def _peer_reconnected(self, node_id: str) -> None:
        self.inflight.resend(node_id)

    def transport_reconnected(self) -> None:
        """We lost the broker for a while: asks in flight, or their replies, may be lost."""
        resent = self.inflight.resend()
        if resent:
            log.info("reconnected: re-sending %d asks in flight", resent)

    def close(self) -> None:
        """Stop re-sending: the node is leaving (what was not acknowledged by now is lost)."""
        self._closing = True

    # -- incoming -------------------------------------------------------------------------------
    async def on_mailbox(self, env: Envelope) -> None:
        """An envelope on an actor's subject (every mailbox of this node is subscribed here)."""
        if env.reply_to and not self._replies.may_reply_to(env.reply_to):
            why = f"reply subject {env.reply_to!r} is not an inbox (confused deputy?)"
            self._replies.refuse(env, "bad-reply-to", why)
            return
        if env.kind is Kind.SYSTEM:
            await self._on_system(env)
            return
        cell = self._cells.get(env.target)
        if cell is None:
            self._replies.reject(env, DEAD, f"actor {env.target} is not running on this node")
            return
        cell.deliver(env)

    async def _on_system(self, env: Envelope) -> None:
        try:
            msg = system_decoder.decode(env.payload)
        except DECODE_ERRORS as exc:
            self._replies.reject(env, UNDELIVERABLE, f"invalid system message: {exc}")
            return
        cell = self._cells.get(env.target)
        if isinstance(msg, Exited):
            if cell is not None:
                self._tasks.start_soon(cell.child_exited, msg)
            self._acknowledge(env)  # a parent that is gone has nothing to restart either
            return
        if isinstance(msg, CancelAsk):
            if cell is not None:  # else it is gone, and the handler with it
                cell.cancel_ask(msg.correlation_id)
            return
        if cell is None:
            if isinstance(msg, Watch):
                await self.send_terminated(
                    msg.watcher, Exited(actor_id=env.target, reason="not running", abnormal=False),
                    Address(env.target, self._node_id),
                )
            self._replies.reject(env, DEAD, f"actor {env.target} is not running on this node")
            return
        if isinstance(msg, StopActor):
            if 0 <= msg.generation < cell.generation or msg.generation > cell.generation:
                # Meant for an older incarnation, which is gone, or for one that never ran
                # (forged): not this one.
                self._transport.dead_letters.record(env.target, "stale-stop", msg.reason)
                self._acknowledge(env)
                return
            self._tasks.start_soon(self._stop_and_reply, cell, env, msg.reason)
        elif isinstance(msg, Locate):
            self._tasks.start_soon(self._relocation.answer_locate, cell, env, msg)
        elif isinstance(msg, Watch):
            cell.watchers[msg.watcher.actor_id] = msg.watcher
            self._acknowledge(env)
        else:
            self._replies.reject(env, UNDELIVERABLE, f"unexpected system message {env.type}")

    def _acknowledge(self, env: Envelope) -> None:
        if env.reply_to:
            self._tasks.start_soon(self._replies.reply_value, env, True)

    async def _stop_and_reply(self, cell: ActorCell, env: Envelope, reason: str) -> None:
        await cell.stop(reason)
        if env.reply_to:
            await self._replies.reply_value(env, True)

    async def on_reply(self, env: Envelope) -> None:
        """An envelope on this node's replies subject: a spawn's answer, an inbox's item."""
        listener = self._expected.get(env.correlation_id)
        if listener is None:
            self._transport.dead_letters.record(env.target, "late-reply", env.type)
            return
        listener(env)

    @contextlib.contextmanager
    def expect(self, correlation_id: str, listener: ReplyListener) -> Iterator[str]:
        """Call ``listener`` with what arrives for ``correlation_id`` on our replies subject
        (the subject is yielded) until the block ends."""
        self._expected[correlation_id] = listener
        try:
            yield self._subjects.replies(self._node_id)
        finally:
            del self._expected[correlation_id]

    @contextlib.contextmanager
    def open_inbox(self, item_type: Any, on_item: Callable[[Any], None]) -> Iterator[Inbox]:
        """See ``Context.inbox``: items arrive on this node's replies subject, by inbox id."""

        def deliver(env: Envelope) -> None:
            try:
                item = self.codec.decode(env.payload, item_type)
            except DECODE_ERRORS as exc:
                self._transport.dead_letters.record(
                    env.target, "undeliverable", f"invalid inbox item: {exc}", len(env.payload))
                return
            on_item(item)

        inbox_id = new_id()
        with self.expect(inbox_id, deliver) as subject:
            yield Inbox(subject, inbox_id)

    async def send_to_inbox(self, inbox: Inbox, item: Any) -> None:
        env = Envelope(id=new_id(), kind=Kind.REPLY, correlation_id=inbox.inbox_id,
                       type=message_type_name(type(item)), payload=encode(item))
        if not self._fencing.valid() and not await self._fencing.wait():
            self._transport.dead_letters.record(inbox.inbox_id, "fenced", env.type)
            return
        await self._transport.publish(inbox.subject, env)

    # -- outgoing -------------------------------------------------------------------------------
    def _envelope(
        self, kind: Kind, address: Address, msg: Any, *, correlation_id: str = "",
        deadline: float = 0.0,
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
            deadline=deadline,
            headers=self._trace_headers(address.actor_id),
        )

    def _trace_headers(self, target: str) -> dict[str, str]:
        """The trace context for a message to ``target``: the current span's, or the target's
        create span for the first work its parent gives it (``agent_spans``)."""
        if not tracing_enabled():
            return {}
        record = self._supervision.record_of(target)
        created = record.created_under if record is not None else None
        return inject_headers(context=first_work_context(created))

    def _idempotency_key(self, msg: Any, idempotent: bool | str) -> str:
        """The key of an ask: the caller's own (a string), or derived from the ask being served
        (its key, else its request id), the message, and how many equal asks came before it."""
        if isinstance(idempotent, str):
            return explicit_key(idempotent)
        cell = current_cell.get()
        serving = cell.current_envelope if cell is not None else None
        base = (serving.headers.get(IDEM_HEADER) or serving.correlation_id) if serving else ""
        if not base:
            raise ValueError("idempotent=True derives the key from the ask being handled: "
                             "outside an ask handler, pass a key (idempotent='...')")
        type_name, payload = message_type_name(type(msg)), encode_message(msg)
        assert cell is not None
        return derive_key(base, type_name, payload, cell.next_ask_seq(type_name, payload))

    async def tell(self, ref: ActorRef[Any], msg: Any) -> None:
        _check_message(msg)
        env = self._envelope(Kind.TELL, ref.address, msg)
        if not self._fencing.valid() and not await self._fencing.wait():
            self._transport.dead_letters.record(ref.actor_id, "fenced", env.type)
            return
        await self._transport.publish(self._subjects.mailbox(ref.actor_id), env)

    async def ask(self, ref: ActorRef[Any], msg: Any, *, timeout: float,
                  resend: Callable[[], Any] | None = None,
                  idempotent: bool | str = False) -> Any:
        _check_message(msg)
        key = self._idempotency_key(msg, idempotent) if idempotent else ""
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        deadline = time.monotonic() + timeout
        # The callee's deadline: ours, or an enclosing cancel scope's if sooner (a handler's
        # own deadline, a caller's ``fail_after``): deadlines only shrink down the tree.
        scope_left = anyio.current_effective_deadline() - anyio.current_time()
        reply_type = reply_type_of(type(msg))  # type: ignore[arg-type]
        request_id = new_id()  # the same on every re-send: the target answers it once
        backoff = _NO_RESPONDERS_FIRST_WAIT
        while True:
            # A child supervised here may have moved: its record knows the current address.
            record = self._supervision.record_of(ref.actor_id)
            address = record.ref.address if record is not None else ref.address
            generation = record.generation if record is not None else 0
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AskTimeout(address.actor_id, timeout, message_type_name(type(msg)))
            env = self._envelope(
                Kind.ASK, address, msg, correlation_id=request_id,
                deadline=time.time() + min(remaining, scope_left - (timeout - remaining)),
            )
            if key:
                env = msgspec.structs.replace(env, headers={**env.headers, IDEM_HEADER: key})
            subject = self._subjects.mailbox(address.actor_id)
            if not self._fencing.valid() and not await self._fencing.wait():
                raise ActorDead(address.actor_id, "not asked: this node was fenced")
            try:
                if self._membership.is_lost(address.node_id):
                    raise ActorDead(address.actor_id, "node lost")
                reply: Envelope | None = None
                with self.inflight.waiting_on(address.node_id) as waiting:
                    try:
                        reply = await self._transport.request(subject, env, timeout=remaining)
                    except (RequestTimeout, anyio.get_cancelled_exc_class()):
                        # We stop waiting, so the handler stops working (and all it started);
                        # not when we only stopped to send it again, or its node is lost.
                        if not waiting.scope.cancel_called:
                            self._cancel_remote(address, request_id)
                        raise
                if reply is None:
                    if waiting.resend:
                        continue  # a reconnect may have lost it: send it again
                    raise ActorDead(address.actor_id, "node lost")
                if reply.sender != address.actor_id:
                    # Only the actor asked may answer (the same request id gets it again).
                    self._replies.refuse(reply, "forged-reply",
                                         f"reply to an ask of {address.actor_id} came from "
                                         f"another sender {reply.sender!r}")
                    continue
                return self._reply_value(reply, reply_type, address, env.type, timeout)
            except RequestTimeout:
                raise AskTimeout(address.actor_id, timeout, message_type_name(type(msg))) from None
            except NoResponders:
                error: ActorDead = ActorDead(address.actor_id, "unreachable (no node serves it)")
                if not self._membership.is_lost(address.node_id):
                    # Its node lives: after a broker outage it may not have subscribed again
                    # yet, or a restart is on its way. Send again (the same request id) after a
                    # growing pause, sooner if its supervisor here restarts it meanwhile.
                    record = self._supervision.record_of(address.actor_id)
                    if record is None:
                        # A ref from elsewhere: its supervisor knows if it moved or ended.
                        try:
                            ref._rebind(await self._relocation.relocate(address, deadline, error))
                            continue
                        except ActorDead as exc:
                            if exc is not error or backoff >= _NO_RESPONDERS_MAX_WAIT:
                                raise  # its supervisor says it is gone, or nobody answers
                    wait = min(backoff, max(0.0, deadline - time.monotonic()))
                    backoff = min(backoff * 2, _NO_RESPONDERS_MAX_WAIT)
                    with anyio.move_on_after(wait):
                        if record is not None:
                            await record.wait_restarted(generation)
                        else:
                            await anyio.sleep_forever()
                    if record is not None and record.removed:
                        raise (record.failure or error) from None
                    if resend is not None and record is not None and (
                            record.generation != generation):
                        msg = resend()
                        _check_message(msg)
                    continue
            except ActorDead as exc:
                error = exc
            record = self._supervision.record_of(address.actor_id)
            if record is None:
                # A ref from elsewhere: its supervisor knows where it runs now, or that it is gone.
                ref._rebind(await self._relocation.relocate(address, deadline, error))
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

    def _cancel_remote(self, address: Address, request_id: str) -> None:
        """Tell ``address`` to cancel the handler of ask ``request_id`` (never blocks: the
        caller may be cancelled; sent from the node's task group, once, unacknowledged: a
        lost one leaves the handler to its own deadline)."""
        local = self._cells.get(address.actor_id)
        if local is not None and address.node_id == self._node_id:
            local.cancel_ask(request_id)
            return
        if self._membership.is_lost(address.node_id) or not self._tasks.is_open:
            return
        self._tasks.start_soon(self._send_cancel, address, request_id)

    async def _send_cancel(self, address: Address, request_id: str) -> None:
        env = self._system_envelope(address, CancelAsk(request_id))
        with contextlib.suppress(TransportError):
            await self._transport.publish(self._subjects.mailbox(address.actor_id), env)

    def _reply_value(
        self, reply: Envelope, reply_type: Any, address: Address, message_type: str = "",
        timeout: float = 0.0,
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
            raise error_from_info(info, address.actor_id, message_type, timeout)
        raise RemoteError("ProtocolError", f"unexpected reply kind {reply.kind!r}")

    # -- system messages: sent until acknowledged, or until the peer is known gone --------------
    def _system_envelope(self, address: Address, msg: Any) -> Envelope:
        return Envelope(
            id=new_id(),
            kind=Kind.SYSTEM,
            target=address.actor_id,
            correlation_id=new_id(),  # the same on every re-send
            type=message_type_name(type(msg)),
            payload=encode(msg),
        )

    async def _until_acknowledged(
        self, address: Address, env: Envelope, *, attempt_timeout: float, patient: bool = False
    ) -> Envelope | None:
        """Send ``env`` to ``address``'s mailbox until an answer (None: the peer is gone).

        Gone: its node was declared lost, or no mailbox answers for it (it stopped; with
        ``patient``, only once nobody has answered for ``node_lost_after``: a node that just
        reconnected subscribes again a moment later). A timeout, a transport error or a
        reconnect sends it again (its receiver handles a re-sent copy as the first: the notices
        are idempotent)."""
        subject = self._subjects.mailbox(address.actor_id)
        delay = 0.05
        unanswered_since: float | None = None
        while not self._closing:
            if self._membership.is_lost(address.node_id):
                return None
            if not self._fencing.valid() and not await self._fencing.wait():
                self._transport.dead_letters.record(address.actor_id, "fenced", env.type)
                return None
            try:
                with self.inflight.waiting_on(address.node_id) as waiting:
                    return await self._transport.request(subject, env, timeout=attempt_timeout)
                if waiting.lost:
                    return None
                continue  # interrupted by a reconnect: send it again at once
            except NoResponders:
                now = time.monotonic()
                unanswered_since = unanswered_since or now
                if not patient or now - unanswered_since > self._membership.node_lost_after:
                    return None
            except (RequestTimeout, TransportError) as exc:
                log.debug("%s to %s not acknowledged yet (%s): sending it again",
                          env.type, address.actor_id, exc)
            await anyio.sleep(delay)
            delay = min(delay * 2, 1.0)
        return None

    @property
    def _ack_timeout(self) -> float:
        return max(1.0, 2 * self._membership.heartbeat_interval)

    async def send_exit(self, parent: Address, exited: Exited) -> None:
        local = self._cells.get(parent.actor_id)
        if local is not None and parent.node_id == self._node_id:
            self._tasks.start_soon(local.child_exited, exited)
            return
        # Patient: a lost exit would leave its supervisor waiting forever.
        await self._until_acknowledged(parent, self._system_envelope(parent, exited),
                                       attempt_timeout=self._ack_timeout, patient=True)

    async def send_terminated(self, watcher: Address, exited: Exited, dead: Address) -> None:
        """Deliver ``Terminated`` to ``watcher`` in the background (handled once, however often
        it is sent; the watcher may be busy waiting for this very stop)."""
        msg = Terminated(
            actor_id=exited.actor_id, reason=exited.reason, abnormal=exited.abnormal, ref=dead
        )
        env = self._envelope(Kind.ASK, watcher, msg, correlation_id=new_id())
        self._tasks.start_soon(self._deliver_terminated, watcher, env)

    async def _deliver_terminated(self, watcher: Address, env: Envelope) -> None:
        if not self._fencing.valid() and not await self._fencing.wait():
            self._transport.dead_letters.record(watcher.actor_id, "fenced", env.type)
            return
        await self._until_acknowledged(watcher, env, attempt_timeout=self._ack_timeout)

    async def watch(self, ref: ActorRef[Any], watcher: Address) -> None:
        address = ref.address
        local = self._cells.get(address.actor_id)
        if local is not None and address.node_id == self._node_id:
            local.watchers[watcher.actor_id] = watcher
            return
        answer = await self._until_acknowledged(
            address, self._system_envelope(address, Watch(watcher)),
            attempt_timeout=self._ack_timeout)
        if answer is None:  # gone before it could be watched (a DEAD answer sends it itself)
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
        local = self._cells.get(address.actor_id)
        if local is not None and address.node_id == self._node_id:
            if 0 <= generation < local.generation:
                return
            await local.stop(reason)
            return
        # Bounded: a stop cancels handlers and gives each level STOP_GRACE_S; a node that
        # does not answer by then is left to its own (or to being declared lost).
        wait = min(self._spawn_timeout, STOP_REPLY_S)
        with anyio.move_on_after(wait):
            await self._until_acknowledged(
                address, self._system_envelope(address, StopActor(reason, generation)),
                attempt_timeout=wait)


#: An ask that finds nobody subscribed, while the target's node lives, is sent again after this
#: pause, doubling up to the maximum (until its deadline).
_NO_RESPONDERS_FIRST_WAIT = 0.02
_NO_RESPONDERS_MAX_WAIT = 1.0


def _check_message(msg: Any) -> None:
    if not isinstance(msg, msgspec.Struct):
        raise TypeError(
            f"messages must be msgspec Structs (frozen, ideally tagged), not {type(msg).__name__}"
        )


_UNDELIVERABLE = {UNDELIVERABLE, "MalformedEnvelope"}


def error_from_info(info: ErrorInfo, target: str, message_type: str = "",
                    timeout: float = 0.0) -> Exception:
    """Map an error reply to the typed exception the asker sees."""
    if info.type == DEAD:
        return ActorDead(target, info.message)
    if info.type == CANCELLED:
        return AskTimeout(target, timeout, message_type)
    if info.type in _UNDELIVERABLE:
        return Undeliverable(target, info.message)
    if info.type == REPLY_NOT_ENCODABLE:
        return ReplyNotEncodable(message_type or "a message", info.message)
    if info.type == MAILBOX_FULL:
        return MailboxFull(target, info.message)
    return RemoteError(info.type, info.message, info.traceback)
