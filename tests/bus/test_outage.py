"""A broker outage mid fan-out loses no ask: nats-server is killed and started again on the same
port and JetStream store while 96 asks run on actors spread over three worker processes; every
ask is answered, and every job ran its handler once (counted by the actors themselves)."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime import ActorSystem, NatsCluster, NatsServer
from transports import NatsTransport, new_id

from .app import Handled, Job, Tally
from .workers import start_worker

pytestmark = pytest.mark.anyio

ASKS = 96


@pytest.mark.parametrize("outage_s", [1.0, 2.0, 8.0])
async def test_a_broker_killed_and_restarted_mid_fan_out_loses_no_ask(
    private_nats_server: NatsServer, tmp_path: Path, outage_s: float
) -> None:
    server = private_nats_server

    async def outage(system: ActorSystem) -> None:
        await anyio.to_thread.run_sync(lambda: server.stop(kill=True))
        await anyio.sleep(outage_s)  # the outage itself is what is tested
        await anyio.to_thread.run_sync(server.start)

    await _fan_out_survives([server.url], tmp_path, outage)


async def test_killing_a_cluster_member_mid_fan_out_loses_no_ask(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    killed: list[int] = []

    async def kill_the_clients_server(system: ActorSystem) -> None:
        transport = system.node.transport
        assert isinstance(transport, NatsTransport) and transport.nc is not None
        url = transport.nc.connected_url
        assert url is not None
        member = nats_cluster.server_of(url)
        killed.append(member.port)
        await anyio.to_thread.run_sync(lambda: member.stop(kill=True))

    await _fan_out_survives(nats_cluster.urls, tmp_path, kill_the_clients_server)
    assert killed


async def _fan_out_survives(urls: list[str], tmp_path: Path, disturb: Any) -> None:
    """96 asks over twelve actors on three worker processes; ``disturb(system)`` mid-way."""
    namespace = "ou" + new_id()[:8]
    config = tmp_path / "pools.toml"
    config.write_text(f'namespace = "{namespace}"\n[pools.cpu]\nhardware = "cpu"\n'
                      'capacity = 4\nmodules = ["tests.bus.app"]\n')
    workers = [start_worker(config, "cpu", ",".join(urls)) for _ in range(3)]
    try:
        async with ActorSystem(nats=urls, namespace=namespace, heartbeat_interval=0.2,
                               node_lost_after=1.5, placement_timeout=60) as system:
            with anyio.fail_after(120):
                while len([s for s in await system.node.cluster_stats()
                           if "cpu" in s.info.pools]) < 3:
                    await anyio.sleep(0.1)
            # Three workers of capacity 4: twelve actors fill every one of them.
            tallies = [await system.spawn(Tally, pool="cpu") for _ in range(12)]
            assert len({t.address.node_id for t in tallies}) == 3
            answers: dict[str, str] = {}
            some_answered = anyio.Event()

            async def one(i: int) -> None:
                key = f"job{i}"
                answers[key] = await tallies[i % len(tallies)].ask(Job(key, 0.1), timeout=120)
                if len(answers) >= 12:
                    some_answered.set()

            async with anyio.create_task_group() as tg:
                for i in range(ASKS):
                    tg.start_soon(one, i)
                await some_answered.wait()
                await disturb(system)
            assert answers == {f"job{i}": f"job{i}" for i in range(ASKS)}
            runs: collections.Counter[str] = collections.Counter()
            for t in tallies:
                runs.update(await t.ask(Handled(), timeout=60))
            assert runs == {f"job{i}": 1 for i in range(ASKS)}, "a job ran twice or not at all"
            assert all(w.poll() is None for w in workers)
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(30)
