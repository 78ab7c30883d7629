"""The behavioural suite runs on both transports: in-memory and a real nats-server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from runtime import ActorSystem, NatsServer, PoolConfig, Worker
from transports import ConnectOptions, MemoryBus, MemoryTransport, NatsTransport, Transport, new_id

POOLS = {
    "cpu": PoolConfig(name="cpu", hardware="cpu", capacity=64, modules=["tests.actors.app"]),
    "gpu": PoolConfig(name="gpu", hardware="h100", capacity=64, modules=["tests.actors.app"]),
}

FAST = {"heartbeat_interval": 0.2, "node_lost_after": 1.0, "placement_timeout": 2.0}


class Cluster:
    """Nodes of one test: each with its own transport, on one bus or one NATS server."""

    def __init__(self, kind: str, server: NatsServer | None) -> None:
        self.kind = kind
        self.server = server
        self.namespace = "t" + new_id()[:10]
        self.bus = MemoryBus()
        # Closed in this order: systems (clients) first, then workers, then transports - so a
        # worker going away never makes a still-open system restart its actors elsewhere.
        self._transports = contextlib.AsyncExitStack()
        self._workers = contextlib.AsyncExitStack()
        self._systems = contextlib.AsyncExitStack()

    async def aclose(self) -> None:
        try:
            await self._systems.aclose()
            await self._workers.aclose()
        finally:
            await self._transports.aclose()

    def transport(self) -> Transport:
        if self.kind == "memory":
            return MemoryTransport(bus=self.bus, namespace=self.namespace)
        assert self.server is not None
        return NatsTransport(ConnectOptions(servers=[self.server.url]), namespace=self.namespace)

    async def _owned(self) -> Transport:
        transport = self.transport()
        await transport.connect()
        self._transports.push_async_callback(transport.close)
        return transport

    async def system(self, **options: Any) -> ActorSystem:
        system = ActorSystem(await self._owned(), **{**FAST, **options})
        return await self._systems.enter_async_context(system)

    async def worker(self, pools: list[str] | None = None, **options: Any) -> Worker:
        worker = Worker(POOLS, pools or ["cpu"], transport=await self._owned(),
                        **{**FAST, **options})
        return await self._workers.enter_async_context(worker)


@pytest.fixture(params=["memory", "nats"])
async def cluster(request: pytest.FixtureRequest, nats_server: NatsServer) -> AsyncIterator[
    Cluster
]:
    cluster = Cluster(request.param, nats_server if request.param == "nats" else None)
    try:
        yield cluster
    finally:
        await cluster.aclose()
