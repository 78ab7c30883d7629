"""An RLM run on a three-node NATS cluster: the server the client is connected to is killed in
the middle of the run, and the run completes with the undisturbed answer."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from heterarch.sim.oolong import generate_task
from heterarch.sim.simulator import default_profiles, profiles_toml, serve_in_thread
from runtime import ActorSystem, NatsCluster
from runtime._rlm import ask_root
from transports import NatsTransport, new_id

from .workers import start_worker

pytestmark = pytest.mark.anyio


# Two RLM runs at time scale 1 (a 1 s first token on the wafer pool) plus the kill: about a minute
# on a quiet machine; its own deadlines (120 s to catch the batch, 300 s for the run) bound it.
@pytest.mark.timeout(480)
async def test_rlm_run_survives_killing_the_clients_nats_node(nats_cluster: NatsCluster,
                                                              tmp_path: Path) -> None:
    profiles = {k: v for k, v in default_profiles().items()
                if k in ("sim/wafer-small", "sim/frontier")}
    profiles["sim/wafer-small"].ttft_s = 1.0  # slow enough to be caught mid-batch
    task = generate_task(n_records=120, seed=5)
    question = task.questions[1]
    urls = ",".join(nats_cluster.urls)
    with serve_in_thread(profiles, time_scale=1.0) as url:
        namespace = "kc" + new_id()[:8]
        config = tmp_path / "pools.toml"
        config.write_text(f'namespace = "{namespace}"\n'
                          + profiles_toml(profiles, url, modules=["actors"]))
        workers = [start_worker(config, pool, urls) for pool in ("frontier", "wafer")]
        try:
            async with ActorSystem(nats=nats_cluster.urls, namespace=namespace,
                                   placement_timeout=60, node_lost_after=10) as system:
                await system.node.wait_pool("frontier")
                await system.node.wait_pool("wafer")
                undisturbed = await ask_root(system, question.text, context=task.context,
                                            root_pool="frontier", pool_override="wafer")
                assert undisturbed.ok, undisturbed.stop_reason
                killed: list[int] = []

                async def kill_the_clients_server_mid_batch() -> None:
                    with anyio.fail_after(120):
                        while not any(s.models.get("wafer") and s.models["wafer"].in_flight
                                      for s in await system.node.cluster_stats()):
                            await anyio.sleep(0.05)
                    transport = system.node.transport
                    assert isinstance(transport, NatsTransport) and transport.nc is not None
                    assert transport.nc.connected_url is not None
                    server = nats_cluster.server_of(transport.nc.connected_url)
                    killed.append(server.port)
                    server.stop(kill=True)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(kill_the_clients_server_mid_batch)
                    disturbed = await ask_root(system, question.text, context=task.context,
                                              root_pool="frontier", pool_override="wafer",
                                              timeout=300)
        finally:
            for w in workers:
                if w.poll() is None:
                    w.terminate()
            for w in workers:
                w.wait(30)
    assert killed, "the client's server was not killed mid-run"
    assert disturbed.ok, disturbed.stop_reason
    assert disturbed.text == undisturbed.text
