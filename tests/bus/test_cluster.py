"""A three-node NATS cluster: JetStream replicated, and the loss or restart of a server loses no
ask (in flight asks are re-sent, a re-sent ask runs its handler once)."""

from __future__ import annotations

import anyio
import pytest

from runtime import ActorSystem, NatsCluster, NatsServer, Worker
from transports import ConnectOptions, NatsTransport, new_id

from .app import FAST, POOLS, Handled, Job, Tally

pytestmark = pytest.mark.anyio


async def test_streams_and_buckets_are_replicated_three_times(nats_cluster: NatsCluster) -> None:
    async with NatsTransport(ConnectOptions(servers=nats_cluster.urls),
                             namespace="r" + new_id()[:8]) as transport:
        assert transport.replicas == 3
        await transport.key_value("nodes", ttl=30)
        queue = await transport.work_queue("cpu")
        assert await queue.fetch(timeout=0.1) is None
        stream = await transport.js.stream_info(transport.spawn_stream)
        assert stream.config.num_replicas == 3
        bucket = await transport.js.stream_info(f"KV_{transport.namespace}_nodes")
        assert bucket.config.num_replicas == 3
        await queue.close()


async def test_a_single_server_gets_one_replica(nats_server: NatsServer) -> None:
    async with NatsTransport(ConnectOptions(servers=[nats_server.url]),
                             namespace="r" + new_id()[:8]) as transport:
        assert transport.replicas == 1


async def _jobs_survive(urls: list[str], disturb: object) -> None:
    """Ask 12 jobs of a Tally on a worker; ``disturb(system)`` once the first is answered."""
    namespace = "c" + new_id()[:8]
    async with Worker(POOLS, ["cpu"], nats=urls, namespace=namespace, **FAST), \
            ActorSystem(nats=urls, namespace=namespace, **FAST) as system:
        tally = await system.spawn(Tally, pool="cpu")
        answers: dict[str, str] = {}
        first = anyio.Event()

        async def one(key: str) -> None:
            answers[key] = await tally.ask(Job(key, 0.25), timeout=60)
            first.set()

        async with anyio.create_task_group() as tg:
            for i in range(12):
                tg.start_soon(one, f"job{i}")
            await first.wait()
            await disturb(system)  # type: ignore[operator]
        assert answers == {f"job{i}": f"job{i}" for i in range(12)}
        runs = await tally.ask(Handled(), timeout=30)
        assert runs == {f"job{i}": 1 for i in range(12)}, "a job ran twice or not at all"


async def test_killing_the_clients_nats_node_loses_no_ask(nats_cluster: NatsCluster) -> None:
    killed: list[int] = []

    async def kill_clients_server(system: ActorSystem) -> None:
        transport = system.node.transport
        assert isinstance(transport, NatsTransport) and transport.nc is not None
        url = transport.nc.connected_url
        assert url is not None
        server = nats_cluster.server_of(url)
        killed.append(server.port)
        server.stop(kill=True)

    await _jobs_survive(nats_cluster.urls, kill_clients_server)
    assert killed


async def test_restarting_a_single_server_loses_no_ask(private_nats_server: NatsServer) -> None:
    async def restart(system: ActorSystem) -> None:
        await anyio.to_thread.run_sync(private_nats_server.stop)
        await anyio.sleep(1.0)  # the outage: everyone is cut off for a second
        await anyio.to_thread.run_sync(private_nats_server.start)

    await _jobs_survive([private_nats_server.url], restart)
