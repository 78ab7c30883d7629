"""One hosted actor: its mailbox loop and lifecycle (supervision: ``supervisor.py``)."""

from __future__ import annotations

import collections
import enum
import logging
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

from .._observe.agent_spans import invoke_agent_span
from .asks import Admission, TakenAsks
from .cell_context import CellContext
from .current import current_cell
from .protocol import DEAD, MAILBOX_FULL, UNDELIVERABLE, Exited
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
        """Stop after the current message (children first, then ``on_stop``); wait for it."""
        if self.state in (CellState.STOPPING, CellState.STOPPED):
            if current_cell.get() is not self:
                await self.stopped.wait()
            return
        self.state = CellState.STOPPING
        self.stop_reason, self.abnormal = reason, abnormal
        if current_cell.get() is self:
            return  # stopping itself from a handler: the mailbox loop finishes the stop
        if self.scheduled:
            await self.stopped.wait()
        else:
            await self._finish_stop()

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
            with anyio.CancelScope(shield=True):
                await self.actor.on_stop()
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
        token = current_cell.set(self)
        try:
            if tracing_enabled():
                with invoke_agent_span(
                    self.actor, self.address, parent_id=self.parent.actor_id if self.parent
                    else "", depth=self.depth, hardware=self.node.hardware_of(self.address.pool),
                    message_type=env.type, context=extract_context(env.headers),
                ) as span:
                    result = await self._call(handler, msg)
                    if isinstance(result, _Failure):
                        mark_exception(span, result.error)
                    else:
                        mark_ok(span)
            else:
                result = await self._call(handler, msg)
        finally:
            current_cell.reset(token)
        if self.fenced:
            return  # its new incarnation answers the re-sent ask
        if isinstance(result, _Failure):
            if env.reply_to:
                await self._answer(env, await self.node.reply_error(env, result.info))
            self._crash(f"{result.info.type}: {result.info.message}")
        elif env.reply_to:
            await self._answer(env, await self.node.reply_value(env, result))

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

    async def _call(self, handler: Any, msg: Any) -> Any:
        scope = anyio.CancelScope()
        self._handler_scope = scope
        try:
            with scope:
                fn = self.actor.bound(handler)
                return (await fn(msg)) if handler.is_async else fn(msg)
            return _Failure(self._fail_cause or RuntimeError("handler cancelled"))
        except Exception as exc:
            return _Failure(exc)
        finally:
            self._handler_scope = None

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


