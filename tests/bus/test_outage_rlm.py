"""An RLM run rides out a broker outage: nats-server killed mid-batch, started again 2 s later on
the same port and store; the run gives the undisturbed answer, and afterwards no actor runs and
no sandbox container of the workers is left."""

from __future__ import annotations

from pathlib import Path

import anyio
import docker
import pytest

from heterarch.sim.oolong import generate_task
from heterarch.sim.simulator import default_profiles, profiles_toml, serve_in_thread
from runtime import ActorSystem, NatsServer
from runtime._rlm import ask_root
from sandbox import OWNER_LABEL
from transports import new_id

from .workers import start_worker

pytestmark = pytest.mark.anyio


@pytest.mark.timeout(480)
async def test_rlm_run_survives_a_broker_restart(private_nats_server: NatsServer,
                                                 tmp_path: Path) -> None:
    server = private_nats_server
    profiles = {k: v for k, v in default_profiles().items()
                if k in ("sim/wafer-small", "sim/frontier")}
    profiles["sim/wafer-small"].ttft_s = 1.0  # slow enough to be caught mid-batch
    task = generate_task(n_records=120, seed=5)
    question = task.questions[1]
    with serve_in_thread(profiles, time_scale=1.0) as url:
        namespace = "ko" + new_id()[:8]
        config = tmp_path / "pools.toml"
        config.write_text(f'namespace = "{namespace}"\n'
                          + profiles_toml(profiles, url, modules=["actors"]))
        workers = [start_worker(config, pool, server.url) for pool in ("frontier", "wafer")]
        owners: list[str] = []
        try:
            async with ActorSystem(nats=server.url, namespace=namespace,
                                   placement_timeout=60, node_lost_after=10) as system:
                await system.node.wait_pool("frontier")
                await system.node.wait_pool("wafer")
                undisturbed = await ask_root(system, question.text, context=task.context,
                                            root_pool="frontier", pool_override="wafer")
                assert undisturbed.ok, undisturbed.stop_reason
                restarted = anyio.Event()

                async def restart_the_broker_mid_batch() -> None:
                    with anyio.fail_after(120):
                        while not any(s.models.get("wafer") and s.models["wafer"].in_flight
                                      for s in await system.node.cluster_stats()):
                            await anyio.sleep(0.05)
                    await anyio.to_thread.run_sync(lambda: server.stop(kill=True))
                    await anyio.sleep(2.0)  # the outage itself is what is tested
                    await anyio.to_thread.run_sync(server.start)
                    restarted.set()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(restart_the_broker_mid_batch)
                    disturbed = await ask_root(system, question.text, context=task.context,
                                              root_pool="frontier", pool_override="wafer",
                                              timeout=300)
                assert restarted.is_set()
                with anyio.fail_after(60):  # the run's actors are stopped with it
                    while True:
                        stats = await system.node.cluster_stats(5.0)
                        owners = [f"{s.info.host}-{s.info.pid}" for s in stats
                                  if s.info.role == "worker"]
                        if len(owners) == 2 and not any(s.actors for s in stats):
                            break
                        await anyio.sleep(0.2)
        finally:
            for w in workers:
                if w.poll() is None:
                    w.terminate()
            for w in workers:
                w.wait(30)
    assert disturbed.ok, disturbed.stop_reason
    assert disturbed.text == undisturbed.text
    client = docker.from_env()
    try:
        left = [c.name for owner in owners for c in client.containers.list(
            all=True, filters={"label": f"{OWNER_LABEL}={owner}"})]
    finally:
        client.close()
    assert not left, f"sandbox containers left by the workers: {left}"
