"""Faults across real processes and a real nats-server: kill -9 of a worker, a server restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from actors import SpawnFailed
from runtime import ActorSystem, NatsServer, Worker
from runtime._core.pool_consumer import POISON_AFTER_DELIVERIES
from transports import ConnectOptions, NatsTransport, new_id

from .app import (
    Add,
    Append,
    BreakItsNode,
    FanOut,
    Items,
    KillsItsWorker,
    Parent,
    SpawnChildren,
    WhereAmI,
)
from .app import Worker as Worker_  # the actor class; `Worker` is the runtime's
from .conftest import POOLS

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, namespace: str) -> Path:
    path = tmp_path / "pools.toml"
    path.write_text(
        f'namespace = "{namespace}"\n\n[pools.cpu]\nhardware = "cpu"\ncapacity = 64\n'
        'modules = ["tests.actors.app"]\n'
    )
    return path


def _worker_process(config: Path, pool: str, nats_url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "heterarch.cli", "worker", "--pool", pool, "--config",
         str(config), "--nats", nats_url, "--app-dir", str(ROOT)], cwd=ROOT)


@pytest.fixture
def worker_processes(tmp_path: Path, nats_server: NatsServer) -> Iterator[
    tuple[str, list[subprocess.Popen[bytes]]]
]:
    namespace = "k" + new_id()[:10]
    config = _config(tmp_path, namespace)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "heterarch.cli", "worker", "--pool", "cpu", "--config",
             str(config), "--nats", nats_server.url, "--app-dir", str(ROOT)],
            cwd=ROOT,
        )
        for _ in range(2)
    ]
    try:
        yield namespace, procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def test_kill_9_of_a_busy_worker_loses_no_reply(
    nats_server: NatsServer, worker_processes: tuple[str, list[subprocess.Popen[bytes]]]
) -> None:
    namespace, procs = worker_processes
    transport = NatsTransport(ConnectOptions(servers=[nats_server.url]), namespace=namespace)
    async with ActorSystem(transport, placement_timeout=30.0, node_lost_after=2.5) as system:
        with anyio.fail_after(60):
            while len({i.node_id for i in system.node.membership.peers()}) < 3:
                await anyio.sleep(0.05)  # both workers heart-beating
        parent = await system.spawn(Parent)
        children = await parent.ask(SpawnChildren(6, pool="cpu"), timeout=60)
        pids = {int(str((await c.ask(WhereAmI()))["pid"])) for c in children}
        victim = next(p for p in procs if p.pid in pids)
        survivor = next(p for p in procs if p is not victim)

        async with anyio.create_task_group() as tg:
            results: list[list[str]] = []

            async def fan_out() -> None:
                results.append(await parent.ask(FanOut(seconds=1.5), timeout=90))

            tg.start_soon(fan_out)
            await anyio.sleep(0.5)  # the children are busy sleeping now
            os.kill(victim.pid, signal.SIGKILL)
        assert results == [[f"child-{i}" for i in range(6)]]
        after = {int(str((await c.ask(WhereAmI()))["pid"])) for c in children}
        assert after == {survivor.pid}
        await transport.close()


async def test_a_worker_whose_machinery_fails_strands_no_actor(
    nats_server: NatsServer, worker_processes: tuple[str, list[subprocess.Popen[bytes]]]
) -> None:
    """Its actors stop, it says goodbye, and its peers handle that as the node's loss: the
    children that ran there run on the other worker, and their asker gets every answer."""
    namespace, procs = worker_processes
    transport = NatsTransport(ConnectOptions(servers=[nats_server.url]), namespace=namespace)
    # A silent node would be declared lost only after 60 s: no ask below waits that long.
    async with ActorSystem(transport, placement_timeout=30.0, node_lost_after=60.0) as system:
        with anyio.fail_after(60):
            while len({i.node_id for i in system.node.membership.peers()}) < 3:
                await anyio.sleep(0.05)  # both workers heart-beating
        parent = await system.spawn(Parent)
        children = await parent.ask(SpawnChildren(8, pool="cpu"), timeout=60)
        where = {c: int(str((await c.ask(WhereAmI()))["pid"])) for c in children}
        victim = next(p for p in procs if p.pid in where.values())
        survivor = next(p for p in procs if p is not victim)
        on_victim = next(c for c, pid in where.items() if pid == victim.pid)
        await on_victim.tell(BreakItsNode())
        assert await anyio.to_thread.run_sync(victim.wait, 60) == 1  # NodeFailed: exit 1
        after = {int(str((await c.ask(WhereAmI(), timeout=40))["pid"])) for c in children}
        assert after == {survivor.pid}
    await transport.close()


async def test_nats_server_restart_during_a_run(private_nats_server: NatsServer) -> None:
    server = private_nats_server
    namespace = "r" + new_id()[:10]

    def transport() -> NatsTransport:
        return NatsTransport(ConnectOptions(servers=[server.url]), namespace=namespace)

    t1, t2 = transport(), transport()
    options = {"node_lost_after": 10.0, "placement_timeout": 20.0}
    async with (
        Worker(POOLS, ["cpu"], transport=t1, **options),
        ActorSystem(t2, **options) as system,
    ):
        ref = await system.spawn(Worker_, pool="cpu")
        for i in range(10):
            await ref.tell(Append(i))
        assert await ref.ask(Items()) == list(range(10))
        await anyio.to_thread.run_sync(server.restart)
        with anyio.fail_after(30):  # both clients reconnect by themselves
            while not (t1.is_connected and t2.is_connected and t1.reconnects and t2.reconnects):
                await anyio.sleep(0.05)
        await t1.flush()
        for i in range(10, 20):
            await ref.tell(Append(i))
        assert await ref.ask(Items(), timeout=10) == list(range(20))
        fresh = await system.spawn(Worker_, pool="cpu")  # the work queue works again
        assert await fresh.ask(Add(2, 2), timeout=10) == 4
    await t1.close()
    await t2.close()



async def test_a_ref_held_on_a_third_node_answers_after_kill_9_of_its_worker(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    namespace = "l" + new_id()[:10]
    config = tmp_path / "pools.toml"
    config.write_text(
        f'namespace = "{namespace}"\n\n'
        '[pools.cpu]\ncapacity = 64\nmodules = ["tests.actors.app"]\n\n'
        '[pools.gpu]\ncapacity = 64\nmodules = ["tests.actors.app"]\n'
    )

    # The parent runs on a worker of its own; its 12 children on two `cpu` workers; the refs
    # are held by this process, a third node that supervises none of them.
    procs = [_worker_process(config, pool, nats_server.url) for pool in ("gpu", "cpu", "cpu")]
    try:
        transport = NatsTransport(ConnectOptions(servers=[nats_server.url]), namespace=namespace)
        async with ActorSystem(transport, placement_timeout=30.0) as system:
            with anyio.fail_after(60):
                while len(system.node.served_pools()) < 2 or len(
                    [i for i in system.node.membership.peers() if "cpu" in i.pools]
                ) < 2:
                    await anyio.sleep(0.05)
            parent = await system.spawn(Parent, pool="gpu")
            children = await parent.ask(SpawnChildren(12, pool="cpu"), timeout=60)
            pids = {int(str((await c.ask(WhereAmI()))["pid"])) for c in children}
            assert len(pids) == 2  # spread over both cpu workers
            victim = next(p for p in procs[1:] if p.pid in pids)
            survivor = next(p for p in procs[1:] if p is not victim)
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait()

            after = {int(str((await c.ask(WhereAmI(), timeout=60))["pid"])) for c in children}
            assert after == {survivor.pid}
        await transport.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def test_a_spawn_request_that_kills_its_workers_is_refused_before_the_pool_is_gone(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    namespace = "p" + new_id()[:10]
    config = _config(tmp_path, namespace)
    procs = [_worker_process(config, "cpu", nats_server.url) for _ in range(3)]
    try:
        transport = NatsTransport(ConnectOptions(servers=[nats_server.url]), namespace=namespace)
        async with ActorSystem(transport, placement_timeout=30.0, spawn_timeout=90.0) as system:
            with anyio.fail_after(60):
                while len([i for i in system.node.membership.peers()
                           if "cpu" in i.pools]) < 3:
                    await anyio.sleep(0.05)
            # Each delivery kills the worker that took it; JetStream redelivers it after the
            # ack wait; the delivery after POISON_AFTER_DELIVERIES is refused, not run.
            with pytest.raises(SpawnFailed, match="delivered 3 times"):
                await system.spawn(KillsItsWorker, pool="cpu")
            alive = [p for p in procs if p.poll() is None]
            assert len(alive) == 3 - POISON_AFTER_DELIVERIES
            ref = await system.spawn(Worker_, "after", pool="cpu")
            assert (await ref.ask(WhereAmI(), timeout=30))["pid"] == alive[0].pid
            stats = [s for s in await system.node.cluster_stats() if s.info.pid == alive[0].pid]
            assert stats[0].dead_letters.get("spawn-refused") == 1
        await transport.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
