"""A node: one process's share of the actor system (mailboxes, asks, spawns, heartbeats)."""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import logging
import math
import os
import socket
import time
import typing
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectSendStream
from opentelemetry import context as otel_context
from opentelemetry import trace

from actors import (
    Actor,
    ActorDead,
    ActorRef,
    Address,
    AskTimeout,
    RemoteError,
    Restart,
    SpawnFailed,
    SupervisorStrategy,
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
    decode_error,
    error_envelope,
    new_id,
)
from transports._tasks import HostedTaskGroup
from transports.errors import NoResponders, RequestTimeout, TransportError

from ._cell import ActorCell, ChildRecord, current_cell
from ._codec import Codec, encode
from ._config import PoolConfig
from ._protocol import (
    DEAD,
    UNDELIVERABLE,
    ActorInfo,
    Exited,
    ModelLoad,
    NodeInfo,
    NodeStats,
    Spawned,
    SpawnRequest,
    StopActor,
    Subjects,
    Watch,
    system_decoder,
)
from ._trace_context import extract_context, inject_headers, tracer, tracing_enabled
from .errors import ClassNotServed, NoWorkerForPool

log = logging.getLogger("heterarch.node")
A = TypeVar("A", bound=Actor)

_node_info_decoder = msgspec.msgpack.Decoder(NodeInfo)
_stats_decoder = msgspec.msgpack.Decoder(NodeStats)

SYSTEM_PREFIX = "heterarch.sys."


class Node:
    """Hosts actors for one process and speaks the runtime protocol over a ``Transport``.

    Use it as an async context manager. Pools (``pools=``) make it a worker: it then pulls spawn
    requests for those pools when it has a free slot (see ``runtime.Worker``).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        pools: Mapping[str, PoolConfig] | None = None,
        role: str = "client",
        services: Mapping[str, Any] | None = None,
        pool_services: Mapping[str, Mapping[str, Any]] | None = None,
        heartbeat_interval: float = 0.5,
        node_lost_after: float = 2.5,
        placement_timeout: float = 5.0,
        spawn_timeout: float = 30.0,
        spawn_ack_wait: float = 10.0,
        node_id: str | None = None,
    ) -> None:
        self.transport = transport
        self.node_id = node_id or new_id()[:16]
        self.role = role
        self.pools: dict[str, PoolConfig] = dict(pools or {})
        self.services: dict[str, Any] = {"blobs": transport, **(services or {})}
        self.pool_services: dict[str, dict[str, Any]] = {
            k: dict(v) for k, v in (pool_services or {}).items()
        }
        self.heartbeat_interval = heartbeat_interval
        self.node_lost_after = node_lost_after
        self.placement_timeout = placement_timeout
        self.spawn_timeout = spawn_timeout
        self.spawn_ack_wait = spawn_ack_wait
        self.subjects = Subjects(transport.namespace)
        self.codec = Codec(self)
        self.cells: dict[str, ActorCell] = {}
        self.started_at = time.time()
        self._records: dict[str, ChildRecord] = {}  # actor id -> record of a supervising cell here
        self._pending_spawns: dict[str, MemoryObjectSendStream[Envelope]] = {}
        self._known_nodes: dict[str, tuple[NodeInfo, float]] = {}
        self._lost_nodes: set[str] = set()
        self._inflight: dict[str, set[anyio.CancelScope]] = {}
        self._slots: dict[str, anyio.Semaphore] = {}
        self._started = False
        self.task_group = HostedTaskGroup(f"node {self.node_id}")
        self._guardian: ActorCell | None = None
        self.closed = anyio.Event()

    # -- lifecycle --------------------------------------------------------------------------------
    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        try:
            if not self.transport.is_connected:
                await self.transport.connect()
            await self.task_group.open()
            t = self.transport
            self._subs = [
                await t.subscribe(self.subjects.mailboxes_of(self.node_id), self._on_mailbox),
                await t.subscribe(self.subjects.replies(self.node_id), self._on_reply),
                await t.subscribe(self.subjects.node_control(self.node_id), self._on_control),
                await t.subscribe(self.subjects.heartbeats, self._on_heartbeat),
            ]
            self._nodes_kv = await t.key_value(
                Subjects.NODES_BUCKET, ttl=max(10.0, self.heartbeat_interval * 12)
            )
            self._guardian = self._make_guardian()
            await self._publish_heartbeat()
            self.task_group.start_soon(self._heartbeat_loop)
            self.task_group.start_soon(self._registry_loop)
            for pool in self.pools.values():
                self._slots[pool.name] = anyio.Semaphore(pool.capacity)
                self.task_group.start_soon(self._consume_pool, pool)
        except BaseException:
            await self.task_group.close()
            raise
        self._started = True

    async def close(self) -> None:
        """Stop every actor here (roots stop their subtrees), leave the cluster, disconnect."""
        if not self._started:
            return
        self._started = False
        try:
            with anyio.CancelScope(shield=True), anyio.move_on_after(15):
                roots = [c for c in self.cells.values() if c is not self._guardian]
                roots = [c for c in roots if c.parent is None or c.parent.node_id != self.node_id]
                async with anyio.create_task_group() as tg:
                    for cell in roots:
                        tg.start_soon(cell.stop_abnormally, "node shutting down")
                if self._guardian is not None:
                    await self._guardian.stop("node shutting down")
                for sub in self._subs:
                    await sub.unsubscribe()
                with contextlib.suppress(TransportError, Exception):
                    await self._publish_goodbye()
                with contextlib.suppress(TransportError, Exception):
                    await self.transport.flush(2.0)
        finally:
            await self.task_group.close()
            self.closed.set()

    def _make_guardian(self) -> ActorCell:
        address = Address(actor_id=f"guardian-{self.node_id}", node_id=self.node_id, name="/")
        cell = ActorCell(self, _Guardian(), address, parent=None, depth=-1, generation=0)
        self.cells[address.actor_id] = cell
        cell.state = cell.state.RUNNING
        return cell

    @property
    def guardian(self) -> ActorCell:
        assert self._guardian is not None, "node not started: use `async with` or `await start()`"
        return self._guardian

    # -- services ---------------------------------------------------------------------------------
    def service(self, name: str, pool: str = "") -> Any:
        found = self.pool_services.get(pool, {}).get(name)
        if found is None:
            found = self.services.get(name)
        if found is None:
            where = f"pool {pool!r}" if pool else "this node"
            raise LookupError(
                f"no service {name!r} on {where}: configure it on the Worker/ActorSystem "
                f"(services=... or pool_services=...); available: "
                f"{sorted(set(self.services) | set(self.pool_services.get(pool, {})))}"
            )
        return found

    def hardware_of(self, pool: str) -> str:
        config = self.pools.get(pool)
        if config is not None:
            return config.hardware
        for info, _ in self._known_nodes.values():
            if pool in info.pools:
                return info.pools[pool]
        return ""

    # -- incoming ---------------------------------------------------------------------------------
    async def _on_mailbox(self, env: Envelope) -> None:
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
            self.task_group.start_soon(self._stop_and_reply, cell, env, msg.reason)
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
            self.transport.dead_letters.record(env.target, "late-reply", env.type)
            return
        with contextlib.suppress(anyio.BrokenResourceError, anyio.WouldBlock):
            stream.send_nowait(env)

    async def _on_control(self, env: Envelope) -> None:
        if env.reply_to:
            stats = NodeStats(
                info=self.info(),
                actors=[
                    ActorInfo(
                        actor_id=c.address.actor_id,
                        actor_class=_class_path(type(c.actor)),
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

    # -- replies and rejections -------------------------------------------------------------------
    def reject(self, env: Envelope, error_type: str, message: str) -> None:
        """Count an envelope as a dead letter; tell the asker why, if it asked."""
        reason = "actor-dead" if error_type == DEAD else "undeliverable"
        self.transport.dead_letters.record(env.target, reason, message, len(env.payload))
        if env.reply_to:
            self.task_group.start_soon(self.reply_error, env, ErrorInfo(error_type, message))

    async def reply_error(self, env: Envelope, info: ErrorInfo) -> None:
        reply = error_envelope(env, info, sender=env.target)
        with contextlib.suppress(TransportError):
            await self.transport.publish(env.reply_to, reply)

    async def reply_value(self, env: Envelope, value: Any) -> None:
        try:
            payload = encode(value)
        except (TypeError, NotImplementedError) as exc:
            await self.reply_error(
                env, ErrorInfo("TypeError", f"the handler's return value cannot be encoded: {exc}")
            )
            return
        reply = Envelope(
            id=new_id(),
            kind=Kind.REPLY,
            sender=env.target,
            correlation_id=env.correlation_id or env.id,
            payload=payload,
        )
        with contextlib.suppress(TransportError):
            await self.transport.publish(env.reply_to, reply)

    # -- messaging (the Messenger protocol of ActorRef) -------------------------------------------
    def _envelope(self, kind: Kind, address: Address, msg: Any) -> Envelope:
        cell = current_cell.get()
        return Envelope(
            id=new_id(),
            kind=kind,
            sender=cell.address.actor_id if cell is not None else "",
            target=address.actor_id,
            type=message_type_name(type(msg)),
            payload=encode(msg),
            headers=inject_headers(),
        )

    async def tell(self, ref: ActorRef[Any], msg: Any) -> None:
        _check_message(msg)
        record = self._records.get(ref.actor_id)
        address = record.ref.address if record is not None else ref.address
        env = self._envelope(Kind.TELL, address, msg)
        await self.transport.publish(self.subjects.mailbox(address.node_id, address.actor_id), env)

    async def ask(self, ref: ActorRef[Any], msg: Any, *, timeout: float) -> Any:
        _check_message(msg)
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        deadline = time.monotonic() + timeout
        reply_type = reply_type_of(type(msg))  # type: ignore[arg-type]
        while True:
            # A child supervised here may have moved: its record knows the current address.
            record = self._records.get(ref.actor_id)
            address = record.ref.address if record is not None else ref.address
            generation = record.generation if record is not None else 0
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AskTimeout(address.actor_id, timeout, message_type_name(type(msg)))
            env = self._envelope(Kind.ASK, address, msg)
            subject = self.subjects.mailbox(address.node_id, address.actor_id)
            try:
                if record is None:
                    reply = await self.transport.request(subject, env, timeout=remaining)
                else:
                    maybe: Envelope | None = None
                    with self._watch_node(address.node_id):
                        maybe = await self.transport.request(subject, env, timeout=remaining)
                    if maybe is None:
                        raise ActorDead(address.actor_id, "node lost")
                    reply = maybe
                return self._reply_value(reply, reply_type, address)
            except RequestTimeout:
                raise AskTimeout(address.actor_id, timeout, message_type_name(type(msg))) from None
            except NoResponders:
                error: ActorDead = ActorDead(address.actor_id, "unreachable (no node serves it)")
            except ActorDead as exc:
                error = exc
            record = self._records.get(address.actor_id)
            if record is None or record.removed:
                raise error
            # A supervised child died before answering: wait for its restart, then ask again.
            with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
                await record.wait_restarted(generation)
            if record.removed:
                raise error

    def _reply_value(self, reply: Envelope, reply_type: Any, address: Address) -> Any:
        if reply.kind is Kind.REPLY:
            try:
                return self.codec.decode(reply.payload, reply_type)
            except DECODE_ERRORS as exc:
                raise RemoteError(
                    "ReplyTypeError", f"reply does not match {reply_type}: {exc}"
                ) from None
        if reply.kind is Kind.ERROR:
            raise error_from_info(_decode_error_payload(reply.payload), address.actor_id)
        raise RemoteError("ProtocolError", f"unexpected reply kind {reply.kind!r}")

    @contextlib.contextmanager
    def _watch_node(self, node_id: str) -> Iterator[anyio.CancelScope]:
        """A cancel scope that the heartbeat monitor cancels if ``node_id`` is lost."""
        if node_id in self._lost_nodes:
            raise ActorDead(node_id, "node lost")
        scope = anyio.CancelScope()
        scopes = self._inflight.setdefault(node_id, set())
        scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            scopes.discard(scope)

    async def send_system(self, address: Address, msg: Any, *, reply: bool = False) -> Any:
        env = Envelope(
            id=new_id(),
            kind=Kind.SYSTEM,
            target=address.actor_id,
            type=message_type_name(type(msg)),
            payload=encode(msg),
        )
        subject = self.subjects.mailbox(address.node_id, address.actor_id)
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

    async def stop_ref(self, ref: ActorRef[Any], reason: str) -> None:
        """Stop an actor wherever it lives and wait until it is gone (no-op if already gone)."""
        address = ref.address
        local = self.cells.get(address.actor_id)
        if local is not None and address.node_id == self.node_id:
            await local.stop(reason)
            return
        if address.node_id in self._lost_nodes:
            return
        try:
            with self._watch_node(address.node_id):
                await self.send_system(address, StopActor(reason), reply=True)
        except (ActorDead, NoResponders, RequestTimeout, TransportError):
            pass

    # -- spawning ---------------------------------------------------------------------------------
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
        parent_cell = parent or self.guardian
        try:
            args_bytes = encode([list(args), kwargs])
        except (TypeError, NotImplementedError) as exc:
            raise SpawnFailed(
                _class_path(actor_class), pool or "", f"arguments are not msgspec-encodable: {exc}"
            ) from None
        target_pool = parent_cell.address.pool if pool is None else pool
        actor_id = new_id()
        address = await self.spawn_actor(
            actor_class, args_bytes, pool=target_pool if pool is not None else None,
            inherit_pool=target_pool, name=name or "", parent=parent_cell, actor_id=actor_id,
        )
        ref: ActorRef[A] = self.codec.ref(address)
        record = ChildRecord(
            ref=ref, actor_class=actor_class, args=args_bytes, name=name or "",
            pool=pool if pool is not None else "", restart=restart,
        )
        if pool is None:
            record.pool = ""
        parent_cell.children[actor_id] = record
        self._records[actor_id] = record
        return ref

    def forget_record(self, record: ChildRecord) -> None:
        if self._records.get(record.ref.actor_id) is record:
            del self._records[record.ref.actor_id]

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
            return await self._start_local(
                actor_class, args, pool=inherit_pool or parent.address.pool, name=name,
                parent=parent.address, depth=parent.depth + 1, actor_id=actor_id,
                generation=generation, restart_error=restart_error,
            )
        request = SpawnRequest(
            actor_class=_class_path(actor_class),
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
            with tracer.start_as_current_span(
                f"create_agent {actor_class.__name__}",
                kind=trace.SpanKind.PRODUCER,
                attributes={
                    "gen_ai.operation.name": "create_agent",
                    "gen_ai.agent.name": actor_class.__name__,
                    "gen_ai.agent.id": actor_id,
                    "heterarch.actor.id": actor_id,
                    "heterarch.parent.id": parent.address.actor_id,
                    "heterarch.pool": pool,
                    "heterarch.hardware": self.hardware_of(pool),
                    "heterarch.depth": parent.depth + 1,
                    "heterarch.restart": restart_error is not None,
                },
            ):
                return await self._spawn_remote(request, inject_headers())
        return await self._spawn_remote(request, {})

    async def _spawn_remote(self, request: SpawnRequest, headers: dict[str, str]) -> Address:
        await self.wait_pool(request.pool)
        correlation = new_id()
        send, receive = anyio.create_memory_object_stream[Envelope](1)
        self._pending_spawns[correlation] = send
        try:
            env = Envelope(
                id=correlation,
                kind=Kind.SYSTEM,
                sender=request.parent.actor_id if request.parent else "",
                reply_to=self.subjects.replies(self.node_id),
                correlation_id=correlation,
                type=message_type_name(SpawnRequest),
                payload=encode(request),
                headers=headers,
            )
            await self.transport.enqueue(request.pool, env)
            with anyio.move_on_after(self.spawn_timeout):
                reply = await receive.receive()
                if reply.kind is Kind.ERROR:
                    info = _decode_error_payload(reply.payload)
                    raise SpawnFailed(request.actor_class, request.pool, info.message)
                return self.codec.decode(reply.payload, Spawned).address  # type: ignore[no-any-return]
            raise SpawnFailed(
                request.actor_class, request.pool,
                f"no worker started it within {self.spawn_timeout}s",
            )
        finally:
            del self._pending_spawns[correlation]
            send.close()
            receive.close()

    async def wait_pool(self, pool: str) -> None:
        """Return once some live worker serves ``pool``; ``NoWorkerForPool`` after the timeout."""
        deadline = time.monotonic() + self.placement_timeout
        refreshed = False
        while True:
            if self._pool_is_served(pool):
                return
            if not refreshed:
                refreshed = True
                await self._refresh_nodes()
                continue
            if time.monotonic() >= deadline:
                raise NoWorkerForPool(pool, self.placement_timeout, self.served_pools())
            await anyio.sleep(0.05)

    def _pool_is_served(self, pool: str) -> bool:
        now = time.monotonic()
        return any(
            pool in info.pools and now - seen < self.node_lost_after
            for info, seen in self._known_nodes.values()
        )

    def served_pools(self) -> list[str]:
        return sorted({p for info, _ in self._known_nodes.values() for p in info.pools})

    async def _refresh_nodes(self) -> None:
        with contextlib.suppress(TransportError):
            for key, value in (await self._nodes_kv.items()).items():
                with contextlib.suppress(*DECODE_ERRORS):
                    info = _node_info_decoder.decode(value)
                    if key not in self._known_nodes and key not in self._lost_nodes:
                        fresh = self.node_lost_after + max(1.0, self.heartbeat_interval * 4)
                        if time.time() - info.heartbeat_at < fresh:
                            self._known_nodes[key] = (info, time.monotonic())

    async def _start_local(
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
        try:
            raw_args, raw_kwargs = self.codec.decode(args)
            instance = _instantiate(actor_class, raw_args, raw_kwargs)
        except SpawnFailed:
            raise
        except Exception as exc:
            raise SpawnFailed(
                _class_path(actor_class), pool, f"{type(exc).__name__}: {exc}"
            ) from None
        address = Address(actor_id=actor_id, node_id=self.node_id, pool=pool, name=name)
        cell = ActorCell(
            self, instance, address, parent=parent, depth=depth, generation=generation
        )
        self.cells[actor_id] = cell
        try:
            await cell.start(restart_error)
        except Exception as exc:
            self.cells.pop(actor_id, None)
            raise SpawnFailed(
                _class_path(actor_class), pool, f"on_start raised {type(exc).__name__}: {exc}"
            ) from exc
        return address

    def unregister(self, cell: ActorCell) -> None:
        if self.cells.get(cell.address.actor_id) is cell:
            del self.cells[cell.address.actor_id]

    # -- worker side ------------------------------------------------------------------------------
    async def _consume_pool(self, pool: PoolConfig) -> None:
        slots = self._slots[pool.name]
        queue = None
        while queue is None:
            try:
                queue = await self.transport.work_queue(
                    pool.name, ack_wait=self.spawn_ack_wait, max_deliver=5
                )
            except TransportError as exc:
                log.warning("pool %s: cannot open work queue yet (%s); retrying", pool.name, exc)
                await anyio.sleep(0.5)
        try:
            while True:
                await slots.acquire()
                try:
                    item = await queue.fetch(timeout=1.0)
                except TransportError as exc:
                    slots.release()
                    log.warning("pool %s: fetch failed (%s); retrying", pool.name, exc)
                    await anyio.sleep(0.2)
                    continue
                if item is None:
                    slots.release()
                    continue
                self.task_group.start_soon(self._handle_spawn, pool, item)
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await queue.close()

    async def _handle_spawn(self, pool: PoolConfig, item: Any) -> None:
        slots = self._slots[pool.name]
        env: Envelope = item.envelope
        try:
            request = system_decoder.decode(env.payload)
            if not isinstance(request, SpawnRequest):
                raise TypeError(f"expected a spawn request, got {type(request).__name__}")
        except (*DECODE_ERRORS, TypeError) as exc:
            slots.release()
            self.transport.dead_letters.record(f"spawn.{pool.name}", "undeliverable", str(exc))
            await item.term()
            if env.reply_to:
                await self.reply_error(env, ErrorInfo(UNDELIVERABLE, f"bad spawn request: {exc}"))
            return
        if request.deadline and time.time() > request.deadline:
            slots.release()
            await item.term()  # its spawner gave up already
            return
        existing = self.cells.get(request.actor_id)
        if existing is not None and existing.generation == request.generation:
            slots.release()
            await item.ack()  # a redelivery of a spawn that succeeded here
            await self._reply_spawned(env, existing.address)
            return
        try:
            actor_class = resolve_actor_class(request.actor_class, pool.modules)
            ctx = extract_context(env.headers)
            token = otel_context.attach(ctx) if ctx is not None else None
            try:
                address = await self._start_local(
                    actor_class, request.args, pool=pool.name, name=request.name,
                    parent=request.parent, depth=request.depth, actor_id=request.actor_id,
                    generation=request.generation,
                    restart_error="restarted" if request.generation else None,
                )
            finally:
                if token is not None:
                    otel_context.detach(token)
        except Exception as exc:
            slots.release()
            await item.term()
            reason = str(exc) if isinstance(exc, ClassNotServed | SpawnFailed) else repr(exc)
            log.warning("pool %s: refused spawn of %s: %s", pool.name, request.actor_class, reason)
            if env.reply_to:
                info = ErrorInfo(type(exc).__name__, reason)
                await self.reply_error(env, info)
            return
        cell = self.cells[request.actor_id]
        cell.on_finished.append(slots.release)
        await item.ack()
        await self._reply_spawned(env, address)

    async def _reply_spawned(self, env: Envelope, address: Address) -> None:
        if env.reply_to:
            await self.reply_value(env, Spawned(address))

    # -- heartbeats and failure detection ---------------------------------------------------------
    def info(self) -> NodeInfo:
        return NodeInfo(
            node_id=self.node_id,
            role=self.role,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self.started_at,
            pools={p.name: p.hardware for p in self.pools.values()},
            free_slots={name: s.value for name, s in self._slots.items()},
            actors=len(self.cells) - 1,
            heartbeat_at=time.time(),
        )

    async def _publish_heartbeat(self, *, registry: bool = True) -> None:
        info = self.info()
        data = encode(info)
        self._known_nodes[self.node_id] = (info, time.monotonic())
        env = Envelope(id=new_id(), kind=Kind.SYSTEM, sender=self.node_id, payload=data)
        await self.transport.publish(self.subjects.heartbeat(self.node_id), env)
        if registry:
            await self._nodes_kv.put(self.node_id, data)

    async def _registry_loop(self) -> None:
        """Keep this node's registry entry fresh (slower than heartbeats; never delays them)."""
        while True:
            await anyio.sleep(max(1.0, self.heartbeat_interval * 4))
            try:
                await self._nodes_kv.put(self.node_id, encode(self.info()))
            except TransportError as exc:
                log.debug("registry entry not written: %s", exc)

    async def _publish_goodbye(self) -> None:
        env = Envelope(id=new_id(), kind=Kind.SYSTEM, sender=self.node_id, type="goodbye")
        await self.transport.publish(self.subjects.heartbeat(self.node_id), env)
        await self._nodes_kv.delete(self.node_id)

    async def _heartbeat_loop(self) -> None:
        # Core NATS only: liveness must not wait behind JetStream acknowledgements.
        while True:
            await anyio.sleep(self.heartbeat_interval)
            try:
                await self._publish_heartbeat(registry=False)
            except TransportError as exc:
                log.debug("heartbeat not sent: %s", exc)
            self._detect_lost_nodes()

    async def _on_heartbeat(self, env: Envelope) -> None:
        if env.sender == self.node_id or not env.sender:
            return
        if env.type == "goodbye":
            self._known_nodes.pop(env.sender, None)
            return
        try:
            info = _node_info_decoder.decode(env.payload)
        except DECODE_ERRORS:
            self.transport.dead_letters.record(env.sender, "malformed-heartbeat")
            return
        self._lost_nodes.discard(env.sender)
        self._known_nodes[env.sender] = (info, time.monotonic())

    def _detect_lost_nodes(self) -> None:
        now = time.monotonic()
        for node_id, (_, seen) in list(self._known_nodes.items()):
            if node_id != self.node_id and now - seen > self.node_lost_after:
                del self._known_nodes[node_id]
                self.node_lost(node_id)

    def node_lost(self, node_id: str) -> None:
        """A node stopped heart-beating: fail what depended on it, restart what we supervise."""
        if node_id in self._lost_nodes:
            return
        self._lost_nodes.add(node_id)
        log.warning("node %s lost (no heartbeat for %.1fs)", node_id, self.node_lost_after)
        for scope in self._inflight.pop(node_id, set()):
            scope.cancel()
        for cell in list(self.cells.values()):
            lost = [r for r in cell.children.values()
                    if r.ref.address.node_id == node_id and not r.restarting]
            for i, record in enumerate(lost):
                exited = Exited(
                    actor_id=record.ref.actor_id, reason=f"node {node_id} lost",
                    abnormal=True, generation=record.generation,
                )
                lost_child = functools.partial(cell.child_exited, exited, counts=i == 0)
                self.task_group.start_soon(lost_child)
            if cell.parent is not None and cell.parent.node_id == node_id:
                self.task_group.start_soon(cell.stop_abnormally, "parent's node lost")

    # -- cluster view (heterarch ping) ------------------------------------------------------------
    async def cluster_stats(self, timeout: float = 1.0) -> list[NodeStats]:
        """Ask every live node for its stats."""
        await self._refresh_nodes()
        results: list[NodeStats] = []

        async def one(node_id: str) -> None:
            env = Envelope(id=new_id(), kind=Kind.SYSTEM, type="stats")
            with contextlib.suppress(TransportError, *DECODE_ERRORS):
                reply = await self.transport.request(
                    self.subjects.node_control(node_id), env, timeout=timeout
                )
                if reply.kind is Kind.REPLY:
                    results.append(_stats_decoder.decode(reply.payload))

        async with anyio.create_task_group() as tg:
            for node_id in list(self._known_nodes):
                tg.start_soon(one, node_id)
        return sorted(results, key=lambda s: (s.info.role, s.info.node_id))


class _Guardian(Actor):
    """The invisible parent of a node's root actors: restarts them, never gives up."""

    supervisor_strategy = SupervisorStrategy(max_restarts=1_000_000, period=1.0)


def _check_message(msg: Any) -> None:
    if not isinstance(msg, msgspec.Struct):
        raise TypeError(
            f"messages must be msgspec Structs (frozen, ideally tagged), not {type(msg).__name__}"
        )


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


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _decode_error_payload(payload: bytes) -> ErrorInfo:
    try:
        return decode_error(payload)
    except DECODE_ERRORS:
        return ErrorInfo("ProtocolError", "malformed error reply")


_UNDELIVERABLE = {UNDELIVERABLE, "MalformedEnvelope"}


def error_from_info(info: ErrorInfo, target: str) -> Exception:
    """Map an error reply to the typed exception the asker sees."""
    if info.type == DEAD:
        return ActorDead(target, info.message)
    if info.type in _UNDELIVERABLE:
        return Undeliverable(target, info.message)
    return RemoteError(info.type, info.message, info.traceback)


def resolve_actor_class(import_path: str, allowed_modules: list[str]) -> type[Actor]:
    """Import an actor class by ``module:QualName``, only from ``allowed_modules`` (or below)."""
    module_name, _, qualname = import_path.partition(":")
    if not module_name or not qualname:
        raise ClassNotServed(import_path, allowed_modules)
    if not any(module_name == m or module_name.startswith(m + ".") for m in allowed_modules):
        raise ClassNotServed(import_path, allowed_modules)
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise SpawnFailed(import_path, "", f"{module_name} has no attribute {qualname!r}")
    if not (isinstance(obj, type) and issubclass(obj, Actor)):
        raise SpawnFailed(import_path, "", f"{import_path} is not an Actor subclass")
    return obj


def _instantiate(cls: type[Actor], args: list[Any], kwargs: dict[str, Any]) -> Actor:
    """Call ``cls(*args, **kwargs)``, converting each argument to its annotated type."""
    try:
        signature = inspect.signature(cls)
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise SpawnFailed(_class_path(cls), "", f"bad arguments: {exc}") from None
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:
        hints = {}
    for name, value in list(bound.arguments.items()):
        hint = hints.get(name)
        if hint is None or signature.parameters[name].kind in (
            inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD,
        ):
            continue
        try:
            bound.arguments[name] = msgspec.convert(value, hint)
        except (msgspec.ValidationError, TypeError) as exc:
            raise SpawnFailed(_class_path(cls), "", f"argument {name!r}: {exc}") from None
    return cls(*bound.args, **bound.kwargs)

