"""`heterarch rlm` completes although the root agent's worker is killed (-9) mid-run, and the
root's sandbox container does not outlive its worker for long: a live worker reaps it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import docker
import pytest

from heterarch.sim.oolong import generate_task
from heterarch.sim.simulator import default_profiles, profiles_toml, serve_in_thread
from runtime import ActorSystem, NatsServer
from sandbox import OWNER_LABEL, build_image
from transports import new_id

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def _sandboxes_of(pid: int) -> list[str]:
    client = docker.from_env()
    try:
        owner = f"{OWNER_LABEL}={socket.gethostname()}-{pid}"
        return [c.id for c in client.containers.list(all=True, sparse=True,
                                                     filters={"label": owner})]
    finally:
        client.close()


async def test_rlm_completes_after_kill_9_of_the_roots_worker(nats_server: NatsServer,
                                                            tmp_path: Path) -> None:
    build_image(if_missing=True, progress=lambda line: None)
    profiles = {k: v for k, v in default_profiles().items()
                if k in ("sim/wafer-small", "sim/frontier")}
    profiles["sim/frontier"].ttft_s = 1.0  # the root model thinks long enough to be caught
    task = generate_task(n_records=200, seed=4)
    context = tmp_path / "context.txt"
    context.write_text(task.context)
    namespace = "rs" + new_id()[:8]
    with serve_in_thread(profiles, time_scale=1.0) as url:
        config = tmp_path / "pools.toml"
        config.write_text(f'namespace = "{namespace}"\n'
                          + profiles_toml(profiles, url, modules=["actors"]))

        def worker(pool: str) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [sys.executable, "-m", "heterarch.cli", "worker", "--pool", pool, "--config",
                 str(config), "--nats", nats_server.url], cwd=ROOT, stdout=subprocess.DEVNULL)

        workers = [worker("frontier"), worker("frontier"), worker("wafer")]
        cli: subprocess.Popen[str] | None = None
        victim = 0
        try:
            async with ActorSystem(nats=nats_server.url, namespace=namespace) as system:
                with anyio.fail_after(60):
                    while len([s for s in await system.node.cluster_stats()
                               if s.info.pools]) < 3:
                        await anyio.sleep(0.1)
                cli = subprocess.Popen(  # noqa: ASYNC220 - it runs while this test kills
                    [sys.executable, "-m", "heterarch.cli", "rlm", task.questions[1].text,
                     "--context", str(context), "--root-pool", "frontier", "--nats",
                     nats_server.url, "--namespace", namespace],
                    cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                with anyio.fail_after(60):  # the root runs, with its sandbox: kill its worker
                    while not victim:
                        for s in await system.node.cluster_stats():
                            if any(a.name == "rlm-root" for a in s.actors) and _sandboxes_of(
                                    s.info.pid):
                                victim = s.info.pid
                        await anyio.sleep(0.1)
                os.kill(victim, signal.SIGKILL)
                next(w for w in workers if w.pid == victim).wait()
            running = cli
            _, err = await anyio.to_thread.run_sync(lambda: running.communicate(timeout=300))
            assert cli.returncode == 0, err
            assert "[done]" in err or "iterations" in err
            with anyio.fail_after(120):  # a live frontier worker reaps the orphan (periodically)
                while _sandboxes_of(victim):
                    await anyio.sleep(1)
        finally:
            if cli is not None and cli.poll() is None:
                cli.kill()
                cli.wait()
            for w in workers:
                if w.poll() is None:
                    w.terminate()
            for w in workers:
                w.wait(30)
