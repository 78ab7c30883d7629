"""The worker side of pools: pull spawn requests when a slot is free, start, ack."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, TypeVar

import anyio
from opentelemetry import context as otel_context

from actors import (
    Actor,
    Address,
    SpawnFailed,
)
from transports import (
    DECODE_ERRORS,
    Envelope,
    ErrorInfo,
)
from transports.errors import TransportError

from .._config import PoolConfig
from ..errors import ClassNotServed
from .classes import resolve_actor_class
from .protocol import (
    UNDELIVERABLE,
    Spawned,
    SpawnRequest,
    system_decoder,
)
from .state import NodeState
from .trace_context import extract_context

log = logging.getLogger("heterarch.node")
A = TypeVar("A", bound=Actor)


class PoolConsumer(NodeState):
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
