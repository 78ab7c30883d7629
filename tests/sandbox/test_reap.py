"""Sandboxes left by a process killed with -9 are reaped; a live process's never are."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import docker
import pytest

from runtime import NatsServer, PoolConfig, Worker
from sandbox import OWNER_LABEL, DockerSandbox
from sandbox._reap import owner_is_gone
from transports import new_id

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]

OWNER_SCRIPT = """
import asyncio, sys
from sandbox import DockerSandbox
async def main():
    sb = DockerSandbox(image=sys.argv[1], memory="128m")
    await sb.start()
    print(sb.container.name, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


@pytest.fixture
def orphan(sandbox_image: str) -> Iterator[str]:
    """The name of a sandbox container whose owner process was killed with -9."""
    owner = subprocess.Popen([sys.executable, "-c", OWNER_SCRIPT, sandbox_image], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    name = owner.stdout.readline().strip()
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    owner.stdout.close()
    client = docker.from_env()
    try:
        container = client.containers.get(name)
        assert owner_is_gone(container.labels[OWNER_LABEL])
        yield name
        for left in client.containers.list(all=True, filters={"name": name}):
            left.remove(force=True)
    finally:
        client.close()


def _exists(name: str) -> bool:
    client = docker.from_env()
    try:
        return bool(client.containers.list(all=True, filters={"name": name}))
    finally:
        client.close()


async def test_heterarch_sandbox_reap_removes_orphans_only(
    orphan: str, docker_sandbox: DockerSandbox
) -> None:
    done = await anyio.run_process([sys.executable, "-m", "heterarch.cli", "sandbox", "reap"],
                                   cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    assert orphan in done.stdout.decode()
    assert not _exists(orphan)
    # This process is alive: its sandbox stays and still runs code.
    assert not owner_is_gone(docker_sandbox.owner)
    assert (await docker_sandbox.exec("print(6 * 7)")).stdout.strip() == "42"


async def test_a_worker_with_docker_sandboxes_reaps_orphans_when_it_starts(
    orphan: str, nats_server: NatsServer
) -> None:
    pools = {"cpu": PoolConfig(name="cpu", hardware="cpu")}
    async with Worker(pools, nats=nats_server.url, namespace="rp" + new_id()[:8],
                      services={"sandbox_factory": DockerSandbox}):
        with anyio.fail_after(60):
            while _exists(orphan):
                await anyio.sleep(0.2)
