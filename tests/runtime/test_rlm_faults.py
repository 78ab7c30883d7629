"""A worker is killed (-9) in the middle of an RLM batch: the answer does not change."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from heterarch.sim.oolong import generate_task
from heterarch.sim.simulator import default_profiles, profiles_toml, serve_in_thread
from runtime import ActorSystem, NatsServer
from runtime._rlm import ask_root
from transports import new_id

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]


async def test_worker_killed_mid_batch_answer_unchanged(nats_server: NatsServer,
                                                       tmp_path: Path) -> None:
    profiles = {k: v for k, v in default_profiles().items()
                if k in ("sim/wafer-small", "sim/frontier")}
    profiles["sim/wafer-small"].ttft_s = 1.5  # slow enough to be caught mid-batch
    task = generate_task(n_records=200, seed=4)
    question = task.questions[1]
    with serve_in_thread(profiles, time_scale=1.0) as url:
        namespace = "kf" + new_id()[:8]
        config = tmp_path / "pools.toml"
        config.write_text(f'namespace = "{namespace}"\n'
                          + profiles_toml(profiles, url, modules=["actors"]))

        def worker(pool: str) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [sys.executable, "-m", "heterarch.cli", "worker", "--pool", pool, "--config",
                 str(config), "--nats", nats_server.url], cwd=ROOT, stdout=subprocess.DEVNULL)

        workers = [worker("frontier"), worker("wafer"), worker("wafer")]
        try:
            async with ActorSystem(nats=nats_server.url, namespace=namespace,
                                   placement_timeout=60) as system:
                await system.node.wait_pool("frontier")
                await system.node.wait_pool("wafer")
                with anyio.fail_after(60):
                    while len([s for s in await system.node.cluster_stats()
                               if "wafer" in s.info.pools]) < 2:
                        await anyio.sleep(0.1)
                undisturbed = await ask_root(system, question.text, context=task.context,
                                            root_pool="frontier", pool_override="wafer")
                assert undisturbed.ok, undisturbed.stop_reason

                killed: list[int] = []

                async def kill_a_busy_wafer_worker() -> None:
                    with anyio.fail_after(60):
                        while True:
                            for s in await system.node.cluster_stats():
                                load = s.models.get("wafer")
                                if load is not None and load.in_flight > 0:
                                    os.kill(s.info.pid, signal.SIGKILL)
                                    killed.append(s.info.pid)
                                    return
                            await anyio.sleep(0.05)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(kill_a_busy_wafer_worker)
                    disturbed = await ask_root(system, question.text, context=task.context,
                                              root_pool="frontier", pool_override="wafer")
        finally:
            for w in workers:
                if w.poll() is None:
                    w.terminate()
            for w in workers:
                w.wait(30)
    assert killed, "no worker was caught mid-batch"
    assert disturbed.ok, disturbed.stop_reason
    assert disturbed.text == undisturbed.text
