"""One hosted actor: its mailbox loop and lifecycle (supervision: ``supervisor.py``)."""

from __future__ import annotations

import collections
import enum
import logging
import math
import time
import traceback
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from actors import (
    Actor,
    ActorRef,
    Address,
    RestartIntensity,
    Terminated,
)
from actors._semconv import mark_exception, mark_ok
from transports import DECODE_ERRORS, Envelope, ErrorInfo, Kind, Subscription
from transports.errors import TransportError

from .._observe.agent_spans import invoke_agent_span
from .asks import Admission, TakenAsks
from .cell_context import CellContext
from .current import current_cell
from .protocol import (
    CANCELLED,
    DEAD,
    MAILBOX_FULL,
    STOP_GRACE_S,
    UNDELIVERABLE,
    Exited,
)
from .results import HEADER as IDEM_HEADER
from .supervisor import ChildRecord, Supervisor
from .trace_context import extract_context, tracing_enabled

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("heterarch.actor")


class CellState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class ActorCell(Supervisor):
    """The runtime's side of one actor."""

    def __init__(
        self,
        node: Node,
        actor: Actor,
        address: Address,
        *,
        parent: Address | None,
        depth: int,
        generation: int,
    ) -> None:
        self.node = node
        self.actor = actor
        self.address = address
        self.parent = parent
        self.depth = depth
        self.generation = generation
        self.state = CellState.STARTING
        self.mailbox: collections.deque[Envelope] = collections.deque()
        self.mailbox_size = max(1, type(actor).mailbox_size)
        self.asks = TakenAsks()
        self.scheduled = False
        self.children: dict[str, ChildRecord] = {}
        self.watchers: dict[str, Address] = {}
        strategy = type(actor).supervisor_strategy
        self.intensity = RestartIntensity(strategy.max_restarts, strategy.period)
        self.supervision_lock = anyio.Lock()
        self.stopped = anyio.Event()
        self.stop_reason = "stopped"
        self.abnormal = False
        self.on_finished: list[Any] = []  # callables run once the cell has stopped
        self._handler_scope: anyio.CancelScope | None = None
        self._current: Envelope | None = None  # the message whose handler runs now
        self._ask_seqs: dict[tuple[str, bytes], int] = {}  # equal keyed asks made by it so far
        self._cancel_reason = ""  # why the running handler was cancelled (empty: deadline)
        self._finishing = False
        self.subscription: Subscription | None = None  # its mailbox subject, while it runs
        #: Its node was declared lost and it runs elsewhere now: it stops without a word.
        self.fenced = False
        self._fail_cause: BaseException | None = None
        self.self_ref: ActorRef[Any] = node.codec.ref(address)
        self.context = CellContext(self)
        actor.ctx = self.context

    @property
    def running(self) -> bool:
        return self.state is CellState.RUNNING

    @property
    def stopping(self) -> bool:
        return self.state in (CellState.STOPPING, CellState.STOPPED)

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self, restart_error: str | None = None) -> None:
        """Run ``on_restart``/``on_start``; raises what they raise (the spawn then fails)."""
        token = current_cell.set(self)
        try:
            if restart_error is not None:
                await self.actor.on_restart(restart_error)
            await self.actor.on_start()
        finally:
            current_cell.reset(token)
        self.state = CellState.RUNNING
        if self.mailbox and not self.scheduled:
            self._schedule()

    def deliver(self, env: Envelope) -> None:
        """Queue a user message (called from the transport callback; never blocks).

        A re-sent ask (same request id) joins the first or gets its answer again; a full
        mailbox refuses (``Actor.mailbox_size``; see ``MailboxFull``).
        """
        if self.fenced:  # a zombie: its new incarnation (elsewhere) gets the same messages
            self.node.transport.dead_letters.record(self.address.actor_id, "fenced-actor")
            return
        if self.state in (CellState.STOPPING, CellState.STOPPED):
            self.node.reject(env, DEAD, f"actor {self.address.actor_id} is stopping")
            return
        if env.kind is Kind.ASK:
            admission = self.asks.admit(env)
            if admission is Admission.JOINED:
                return
            if admission is Admission.ANSWERED:
                answer = self.asks.answer_of(env)
                self.node.task_group.start_soon(self.node.send_reply, env.reply_to, answer)
                return
        if len(self.mailbox) >= self.mailbox_size:
            self.asks.dropped(env)
            self.node.reject(env, MAILBOX_FULL, f"{self.mailbox_size} messages waiting")
            return
        self.mailbox.append(env)
        if not self.scheduled and self.state is CellState.RUNNING:
            self._schedule()

    def _schedule(self) -> None:
        self.scheduled = True
        self.node.task_group.start_soon(self._drain)

    async def _drain(self) -> None:
        try:
            while self.mailbox and self.state is CellState.RUNNING:
                env = self.mailbox.popleft()
                try:
                    await self._handle(env)
                except Exception as exc:
                    # Not the handler's exception (that is a reply): the runtime's own part of
                    # handling this message failed. It crashes this actor, never the node.
                    log.exception("mailbox loop of %s failed", self.address.actor_id)
                    self._crash(f"{type(exc).__name__}: {exc}")
                    if env.reply_to:
                        await self.node.reply_error(
                            env, ErrorInfo(type(exc).__name__, f"actor crashed: {exc}")
                        )
        finally:
            self.scheduled = False
        if self.state is CellState.STOPPING:
            await self._finish_stop()

    async def stop(self, reason: str = "stopped", *, abnormal: bool = False) -> None:
        """Stop now: cancel the running handler (its asker gets ``ActorDead``), then children
        first, then ``on_stop``; wait for it, a bounded time (``STOP_GRACE_S`` per stage)."""
        if self.state in (CellState.STOPPING, CellState.STOPPED):
            if current_cell.get() is not self:
                await self._wait_stopped()
            return
        self.state = CellState.STOPPING
        self.stop_reason, self.abnormal = reason, abnormal
        if current_cell.get() is self:
            return  # stopping itself from a handler: the mailbox loop finishes the stop
        self._cancel_handler("stopped")
        if self.scheduled:
            await self._wait_stopped()
        else:
            await self._finish_stop()

    async def _wait_stopped(self) -> None:
        """Wait for the stop under way; past ``STOP_GRACE_S`` the handler that ignores its
        cancellation (shielded, blocking) is left behind and the stop goes on without it."""
        with anyio.move_on_after(STOP_GRACE_S):
            await self.stopped.wait()
        if not self.stopped.is_set() and self.state is CellState.STOPPING:
            if self._handler_scope is not None:
                log.warning("actor %s: its handler ignored cancellation for %gs; stopping "
                            "without it", self.address.actor_id, STOP_GRACE_S)
            await self._finish_stop()
        await self.stopped.wait()

    def _cancel_handler(self, reason: str) -> None:
        if self._handler_scope is not None:
            self._cancel_reason = reason
            self._handler_scope.cancel()

    @property
    def current_envelope(self) -> Envelope | None:
        """The message whose handler runs now."""
        return self._current

    def next_ask_seq(self, message_type: str, payload: bytes) -> int:
        """How many asks equal to this one the running handler made before it."""
        seq = self._ask_seqs.get((message_type, payload), 0)
        self._ask_seqs[(message_type, payload)] = seq + 1
        return seq

    def cancel_ask(self, correlation_id: str) -> None:
        """The asker of ``correlation_id`` stopped waiting: cancel its handler, or drop it
        from the mailbox if it has not started."""
        if not correlation_id:
            return
        current = self._current
        if current is not None and current.correlation_id == correlation_id:
            if self.state is CellState.RUNNING:
                self._cancel_handler("cancelled by its asker")
            return
        for env in self.mailbox:
            if env.kind is Kind.ASK and env.correlation_id == correlation_id:
                self.mailbox.remove(env)
                self.asks.dropped(env)
                self.node.transport.dead_letters.record(
                    self.address.actor_id, "cancelled", "cancelled before it ran")
                return

    def fail(self, reason: str, cause: BaseException | None = None) -> None:
        """Crash from outside a handler (escalation): cancel the running handler and stop.

        The asker of the cancelled handler gets ``cause`` (e.g. ``NoWorkerForPool``).
        """
        if self.state in (CellState.STOPPING, CellState.STOPPED):
            return
        self._fail_cause = cause or RuntimeError(reason)
        if self._handler_scope is not None:
            self._handler_scope.cancel()
        self.node.task_group.start_soon(self.stop_abnormally, reason)

    async def stop_abnormally(self, reason: str) -> None:
        await self.stop(reason, abnormal=True)

    async def _finish_stop(self) -> None:
        if self._finishing:
            await self.stopped.wait()
            return
        self._finishing = True
        records = list(self.children.values())
        for record in records:
            record.removed = True
            self.node.forget_record(record)
            record.mark_changed()
        if records:
            async with anyio.create_task_group() as tg:
                for record in reversed(records):
                    tg.start_soon(partial(self.node.stop_ref, record.ref, "parent stopped",
                                          generation=record.generation))
        self.children.clear()
        token = current_cell.set(self)
        try:
            with anyio.CancelScope(shield=True), anyio.move_on_after(STOP_GRACE_S) as waited:
                await self.actor.on_stop()
            if waited.cancelled_caught:
                log.warning("on_stop of %s took over %gs: stopped without it",
                            self.address.actor_id, STOP_GRACE_S)
        except Exception:
            log.exception("on_stop of %s raised", self.address.actor_id)
        finally:
            current_cell.reset(token)
        await self.node.unregister(self)
        while self.mailbox:
            env = self.mailbox.popleft()
            if not self.fenced:  # else its new incarnation answers
                self.node.reject(env, DEAD, f"actor {self.stop_reason}")
        self.state = CellState.STOPPED
        exited = Exited(
            actor_id=self.address.actor_id,
            reason=self.stop_reason,
            abnormal=self.abnormal,
            generation=self.generation,
        )
        if self.parent is not None:
            await self.node.send_exit(self.parent, exited)
        for watcher in self.watchers.values():
            await self.node.send_terminated(watcher, exited, self.address)
        self.stopped.set()
        for callback in self.on_finished:
            callback()

    # -- messages ---------------------------------------------------------------------------------
    async def _handle(self, env: Envelope) -> None:
        handler = type(self.actor).handlers().get(env.type)
        if handler is None:
            self.asks.dropped(env)
            self.node.reject(
                env,
                UNDELIVERABLE,
                f"{type(self.actor).__qualname__} has no handler for message type {env.type!r}",
            )
            return
        try:
            msg = self.node.codec.decode(env.payload, handler.message_type)
        except DECODE_ERRORS as exc:
            self.asks.dropped(env)
            self.node.reject(env, UNDELIVERABLE, f"invalid {env.type} payload: {exc}")
            return
        if isinstance(msg, Terminated):
            msg = msgspec.structs.replace(msg, ref=self.node.codec.ref(msg.ref))
        deadline = math.inf
        if env.deadline:
            # The asker's deadline (wall clock, so it crosses processes): past it nobody waits
            # for the answer, so the handler stops (gRPC's deadline propagation).
            left = env.deadline - time.time()
            if left <= 0:
                self.asks.dropped(env)
                self.node.reject(env, CANCELLED, "its deadline passed before it ran")
                return
            deadline = anyio.current_time() + left
        key = env.headers.get(IDEM_HEADER, "") if env.kind is Kind.ASK else ""
        if key and await self._answered_before(env, key, deadline):
            return
        self._current = env
        self._ask_seqs = {}
        token = current_cell.set(self)
        try:
            if tracing_enabled():
                with invoke_agent_span(
                    self.actor, self.address, parent_id=self.parent.actor_id if self.parent
                    else "", depth=self.depth, hardware=self.node.hardware_of(self.address.pool),
                    message_type=env.type, context=extract_context(env.headers),
                ) as span:
                    result = await self._call(handler, msg, deadline)
                    if isinstance(result, _Failure):
                        mark_exception(span, result.error)
                    elif isinstance(result, _Cancelled):
                        mark_exception(span, TimeoutError(result.info.message))
                    else:
                        mark_ok(span)
            else:
                result = await self._call(handler, msg, deadline)
        finally:
            current_cell.reset(token)
            self._current = None
        if self.fenced:
            return  # its new incarnation answers the re-sent ask
        if key and isinstance(result, _Cancelled | _Failure):
            await self._release(key)  # no answer kept: the next ask with the key runs it
        if isinstance(result, _Cancelled):
            # Not a crash: the asker stopped waiting (deadline, cancel) or we are stopping.
            if env.reply_to:
                await self._answer(env, await self.node.reply_error(env, result.info))
            else:
                self.asks.answered(env, None)
        elif isinstance(result, _Failure):
            if env.reply_to:
                await self._answer(env, await self.node.reply_error(env, result.info))
            self._crash(f"{result.info.type}: {result.info.message}")
        elif key:
            # Kept before it is sent: a repeat (any incarnation, any actor) gets this answer.
            answer = self.node.replies.value_envelope(env, result)
            try:
                await self.node.results.keep(key, answer)
            except TransportError as exc:
                log.warning("actor %s: answer for key %s not kept (%s)",
                            self.address.actor_id, key, exc)
                await self._release(key)
            if env.reply_to:
                await self.node.send_reply(env.reply_to, answer)
                await self._answer(env, answer)
        elif env.reply_to:
            await self._answer(env, await self.node.reply_value(env, result))

    async def _answered_before(self, env: Envelope, key: str, deadline: float) -> bool:
        """Claim ``key`` for this delivery, or answer ``env`` from the answer kept for it."""
        with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
            try:
                kept = await self.node.results.claim(key, env)
            except TransportError as exc:
                self.asks.dropped(env)
                self.node.reject(env, UNDELIVERABLE, f"idempotency key not claimed: {exc}")
                return True
            if kept is None:
                return False
            if env.reply_to:
                await self.node.send_reply(env.reply_to, kept)
            await self._answer(env, kept)
            return True
        self.asks.dropped(env)
        self.node.reject(env, CANCELLED, "its deadline passed while another ran it")
        return True

    async def _release(self, key: str) -> None:
        try:
            await self.node.results.release(key)
        except TransportError as exc:
            log.warning("actor %s: claim %s not withdrawn (%s)", self.address.actor_id, key, exc)

    async def _answer(self, env: Envelope, answer: Envelope) -> None:
        """Send ``answer`` to the re-sent copies of ``env`` too, and keep it for later ones."""
        for reply_to in self.asks.answered(env, answer):
            await self.node.send_reply(reply_to, answer)

    def _crash(self, why: str) -> None:
        """Stop after this message, abnormally: the supervisor decides what comes next."""
        if self.state is CellState.RUNNING:
            self.state = CellState.STOPPING
            self.stop_reason, self.abnormal = f"crashed: {why.partition(':')[0]}", True
            log.warning(
                "actor %s (%s) crashed: %s",
                self.address.actor_id, type(self.actor).__qualname__, why,
            )

    async def _call(self, handler: Any, msg: Any, deadline: float = math.inf) -> Any:
        scope = anyio.CancelScope(deadline=deadline)
        self._handler_scope = scope
        self._cancel_reason = ""
        try:
            with scope:
                fn = self.actor.bound(handler)
                return (await fn(msg)) if handler.is_async else fn(msg)
            return self._cancelled()
        except Exception as exc:
            if scope.cancel_called and self._fail_cause is None:
                return self._cancelled()  # what the cancellation made it raise
            return _Failure(exc)
        finally:
            self._handler_scope = None

    def _cancelled(self) -> _Failure | _Cancelled:
        if self._fail_cause is not None:
            return _Failure(self._fail_cause)
        if self.state is not CellState.RUNNING:
            return _Cancelled(DEAD, f"actor {self.stop_reason} while handling it")
        return _Cancelled(CANCELLED, self._cancel_reason or "its deadline passed")

class _Cancelled:
    """The handler was cancelled: an error reply, not a crash."""

    __slots__ = ("info",)

    def __init__(self, error_type: str, message: str) -> None:
        self.info = ErrorInfo(type=error_type, message=message)


class _Failure:
    __slots__ = ("error", "info")

    def __init__(self, error: BaseException) -> None:
        while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]  # a handler's task group: its one real error
        self.error = error
        self.info = ErrorInfo(
            type=type(error).__name__,
            message=str(error),
            traceback="".join(traceback.format_exception(error))[-8000:],
        )


