"""Placement: the parent side of spawning (here, or on a pool's worker through its work queue)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from actors import (
    Actor,
    ActorDead,
    ActorRef,
    Address,
    MessageNotEncodable,
    Restart,
    SpawnFailed,
    message_type_name,
)
from transports import (
    DECODE_ERRORS,
    Envelope,
    Kind,
    new_id,
)
from transports._subjects import owned_id, owner_of
from transports.errors import TransportError

from .._observe.agent_spans import CreatedUnder, create_agent_span
from .cell import ActorCell
from .classes import class_path, instantiate
from .codec import encode, encode_message
from .fencing import Fencing
from .membership import Membership
from .messaging import Messaging
from .protocol import Spawned, SpawnRequest, Subjects
from .replies import decode_error_payload
from .supervision import Supervision
from .supervisor import ChildRecord
from .trace_context import inject_headers, tracing_enabled

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("heterarch.node")
A = TypeVar("A", bound=Actor)


class Placement:
    """Where actors run: spawning here or through a pool's work queue, and the mailboxes of
    the actors hosted here."""

    def __init__(
        self,
        node: Node,
        *,
        fencing: Fencing,
        membership: Membership,
        messaging: Messaging,
        supervision: Supervision,
        spawn_timeout: float,
    ) -> None:
        self._node = node
        self._transport = node.transport
        self._subjects = Subjects(node.transport.namespace)
        self._cells = node.cells
        self._fencing = fencing
        self._membership = membership
        self._messaging = messaging
        self._supervision = supervision
        self.spawn_timeout = spawn_timeout

    async def spawn_child(
        self,
        parent: ActorCell | None,
        actor_class: type[A],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        pool: str | None,
        name: str | None,
        supervision: Restart | str | None,
    ) -> ActorRef[A]:
        """Spawn ``actor_class`` as a child of ``parent`` (the guardian when None)."""
        if not (isinstance(actor_class, type) and issubclass(actor_class, Actor)):
            raise TypeError(f"spawn() needs an Actor subclass, not {actor_class!r}")
        restart = _restart_of(supervision)
        parent_cell = parent or self._node.guardian
        if parent_cell.stopping:  # a stopping actor never spawns (its subtree is going)
            raise ActorDead(parent_cell.address.actor_id, "stopping: it spawns nothing")
        try:
            what = f"the arguments of {actor_class.__name__}"
            args_bytes = encode_message([list(args), kwargs], what)
        except MessageNotEncodable as exc:
            raise SpawnFailed(class_path(actor_class), pool or "", str(exc)) from None
        target_pool = parent_cell.address.pool if pool is None else pool
        if not self._fencing.valid() and not await self._fencing.wait():
            raise SpawnFailed(class_path(actor_class), target_pool, "this node was fenced")
        # A child belongs to its parent's owner (a root to this node's principal, through the
        # guardian): the bus lets only that principal and workers reach its mailbox.
        actor_id = owned_id(owner_of(parent_cell.address.actor_id), new_id())
        address = await self.spawn_actor(
            actor_class, args_bytes, pool=target_pool if pool is not None else None,
            inherit_pool=target_pool, name=name or "", parent=parent_cell, actor_id=actor_id,
        )
        ref: ActorRef[A] = self._messaging.codec.ref(address)
        if parent_cell.stopping:  # it began to stop while the child started: no orphan
            await self._messaging.stop_ref(ref, "parent stopped")
            raise ActorDead(parent_cell.address.actor_id, "stopping: it spawns nothing")
        record = ChildRecord(
            ref=ref, actor_class=actor_class, args=args_bytes, name=name or "",
            pool=pool if pool is not None else "", restart=restart,
            created_under=self._supervision.created_under.pop(actor_id, None),
        )
        parent_cell.children[actor_id] = record
        self._supervision.add(record)
        return ref

    async def spawn_actor(
        self,
        actor_class: type[Actor],
        args: bytes,
        *,
        pool: str | None,
        name: str,
        parent: ActorCell,
        actor_id: str,
        generation: int = 0,
        restart_error: str | None = None,
        inherit_pool: str = "",
    ) -> Address:
        """Create one incarnation: here when ``pool`` is None/empty, else on a pool's worker."""
        if not pool:
            return await self.start_local(
                actor_class, args, pool=inherit_pool or parent.address.pool, name=name,
                parent=parent.address, depth=parent.depth + 1, actor_id=actor_id,
                generation=generation, restart_error=restart_error,
            )
        request = SpawnRequest(
            actor_class=class_path(actor_class),
            args=args,
            actor_id=actor_id,
            name=name,
            pool=pool,
            parent=parent.address,
            depth=parent.depth + 1,
            deadline=time.time() + self.spawn_timeout,
            generation=generation,
        )
        if tracing_enabled():
            with create_agent_span(
                actor_class, name=name, actor_id=actor_id, parent=parent.address,
                depth=parent.depth + 1, pool=pool, hardware=self._node.hardware_of(pool),
                restart=restart_error is not None,
                restart_of=self._restart_of(actor_id, generation),
            ) as created:
                address = await self.spawn_remote(request, inject_headers())
                if generation == 0:
                    self._supervision.created_under[actor_id] = created
                return address
        return await self.spawn_remote(request, {})

    def _restart_of(self, actor_id: str, generation: int) -> CreatedUnder | None:
        """The first incarnation's creation, for a restart's span (None: a first spawn)."""
        record = self._supervision.record_of(actor_id) if generation else None
        return record.created_under if record is not None else None

    async def spawn_remote(self, request: SpawnRequest, headers: dict[str, str]) -> Address:
        """Put ``request`` on its pool's work queue; wait for the worker's answer."""
        await self._membership.wait_pool(request.pool)
        correlation = new_id()
        send, receive = anyio.create_memory_object_stream[Envelope](1)

        def answered(env: Envelope) -> None:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.WouldBlock):
                send.send_nowait(env)

        enqueued = False
        try:
            with self._messaging.expect(correlation, answered) as reply_to:
                env = Envelope(
                    id=correlation,
                    kind=Kind.SYSTEM,
                    sender=request.parent.actor_id if request.parent else "",
                    reply_to=reply_to,
                    correlation_id=correlation,
                    type=message_type_name(SpawnRequest),
                    payload=encode(request),
                    headers=headers,
                )
                if not self._fencing.valid() and not await self._fencing.wait():
                    raise SpawnFailed(request.actor_class, request.pool, "this node was fenced")
                await self._transport.enqueue(request.pool, env,
                                              owner=owner_of(request.actor_id))
                enqueued = True
                with anyio.move_on_after(self.spawn_timeout):
                    while True:
                        with anyio.move_on_after(
                                max(0.1, self._membership.heartbeat_interval)):
                            reply = await receive.receive()
                            if reply.kind is Kind.ERROR:
                                info = decode_error_payload(reply.payload)
                                raise SpawnFailed(request.actor_class, request.pool,
                                                  info.message)
                            spawned = self._messaging.codec.decode(reply.payload, Spawned)
                            return spawned.address  # type: ignore[no-any-return]
                        # The pool's last worker left (it was shutting down when we asked):
                        # say so (``NoWorkerForPool``) rather than wait out the spawn timeout.
                        if not self._membership.serves(request.pool):
                            await self._membership.wait_pool(request.pool)
                raise SpawnFailed(
                    request.actor_class, request.pool,
                    f"no worker started it within {self.spawn_timeout}s",
                )
        except anyio.get_cancelled_exc_class():
            if enqueued:
                self._stop_when_started(correlation)
            raise
        finally:
            send.close()
            receive.close()

    def _stop_when_started(self, correlation: str) -> None:
        """Its spawner was cancelled while the request waited for a worker: if a worker still
        starts it, stop it at once (else it would run with nobody to supervise it). The worker
        drops the request past its deadline (``spawn_timeout``), so we listen that long."""

        def answered(env: Envelope) -> None:
            if env.kind is not Kind.REPLY:
                return
            with contextlib.suppress(*DECODE_ERRORS):
                address = self._messaging.codec.decode(env.payload, Spawned).address
                self._node.task_group.start_soon(
                    self._messaging.stop_ref, self._messaging.codec.ref(address),
                    "its spawner was cancelled")

        if not self._node.task_group.is_open:
            return  # the node is closing: its peers see it go, and stop what it supervised
        listening = self._messaging.expect(correlation, answered)
        listening.__enter__()

        async def stop_listening() -> None:
            try:
                await anyio.sleep(self.spawn_timeout + 1.0)
            finally:
                listening.__exit__(None, None, None)

        self._node.task_group.start_soon(stop_listening)

    async def start_local(
        self,
        actor_class: type[Actor],
        args: bytes,
        *,
        pool: str,
        name: str,
        parent: Address | None,
        depth: int,
        actor_id: str,
        generation: int,
        restart_error: str | None,
    ) -> Address:
        """Start an incarnation in this process (its mailbox opens before ``on_start``)."""
        try:
            raw_args, raw_kwargs = self._messaging.codec.decode(args)
            instance = instantiate(actor_class, raw_args, raw_kwargs)
        except SpawnFailed:
            raise
        except Exception as exc:
            raise SpawnFailed(
                class_path(actor_class), pool, f"{type(exc).__name__}: {exc}"
            ) from None
        address = Address(
            actor_id=actor_id, node_id=self._node.node_id, pool=pool, name=name,
            parent_id=parent.actor_id if parent is not None else "",
        )
        cell = ActorCell(
            self._node, instance, address, parent=parent, depth=depth, generation=generation
        )
        self._cells[actor_id] = cell
        try:
            await self.open_mailbox(cell)
            await cell.start(restart_error)
        except Exception as exc:
            await self.unregister(cell)
            raise SpawnFailed(
                class_path(actor_class), pool, f"on_start raised {type(exc).__name__}: {exc}"
            ) from exc
        return address

    async def open_mailbox(self, cell: ActorCell) -> None:
        """Subscribe to the actor's own subject (before anyone learns its address).

        In an empty context: the transport's delivery task copies the context it is created
        in, and must not inherit the spawner's (its ``current_cell``, its trace span).
        """
        subject = self._subjects.mailbox(cell.address.actor_id)
        subscribing = asyncio.get_running_loop().create_task(
            self._transport.subscribe(subject, self._messaging.on_mailbox),
            context=contextvars.Context(),
        )
        cell.subscription = await subscribing

    async def unregister(self, cell: ActorCell) -> None:
        if self._cells.get(cell.address.actor_id) is cell:
            del self._cells[cell.address.actor_id]
        subscription, cell.subscription = cell.subscription, None
        if subscription is not None:
            with contextlib.suppress(TransportError):
                await subscription.unsubscribe()


def _restart_of(supervision: Restart | str | None) -> Restart:
    if supervision is None:
        return Restart.PERMANENT
    if isinstance(supervision, Restart):
        return supervision
    try:
        return Restart(supervision)
    except ValueError:
        raise ValueError(
            f"supervision must be one of {[r.value for r in Restart]}, not {supervision!r}"
        ) from None
