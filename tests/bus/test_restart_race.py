"""A parent that stops while one of its children is being restarted stops the new incarnation
too (it used to live on forever, holding a worker slot)."""

from __future__ import annotations

import anyio
import pytest

from actors import RemoteError
from runtime import ActorSystem, NatsServer, Worker
from transports import new_id

from .app import FAST, POOLS, Crash, SlowToRestart, SpawnChild, Supervisor

pytestmark = pytest.mark.anyio


async def test_parent_stopped_during_a_child_restart_stops_the_new_incarnation(
    nats_server: NatsServer,
) -> None:
    SlowToRestart.restarting = anyio.Event()
    SlowToRestart.proceed = anyio.Event()
    namespace = "rr" + new_id()[:8]
    async with Worker(POOLS, ["cpu"], nats=nats_server.url, namespace=namespace,
                      **FAST) as worker, \
            ActorSystem(nats=nats_server.url, namespace=namespace, **FAST) as system:
        parent = await system.spawn(Supervisor)
        child = await parent.ask(SpawnChild("cpu"), timeout=10)
        free_with_child = worker.node.pool_consumer.free_slots()["cpu"]
        with pytest.raises(RemoteError, match="crash on purpose"):
            await child.ask(Crash(), timeout=10)
        with anyio.fail_after(10):
            await SlowToRestart.restarting.wait()  # the new incarnation is starting
        await system.stop(parent)
        SlowToRestart.proceed.set()
        with anyio.fail_after(30):  # gone, and its slot free again
            while (child.actor_id in worker.node.cells
                   or worker.node.pool_consumer.free_slots()["cpu"] != free_with_child + 1):
                await anyio.sleep(0.05)
