"""The compose profile ``cluster``: three NATS containers form one JetStream cluster; a client
with all three URLs gets replicas 3 and keeps working when the server it uses is stopped."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import anyio
import pytest

from runtime._nats_server import free_port
from tests.compose.test_compose import COMPOSE, ROOT, _says_info, build_images, stack
from transports import ConnectOptions, NatsTransport
from transports.errors import TransportError

pytestmark = [pytest.mark.docker, pytest.mark.anyio]
NODES = ("nats-1", "nats-2", "nats-3")


@pytest.fixture
def cluster_project() -> Iterator[tuple[list[str], dict[str, str], list[int]]]:
    build_images.build_nats_image(build_images.NATS_TAG, progress=lambda _: None)
    project = f"heterarch-cluster-{uuid.uuid4().hex[:8]}"
    ports = [free_port() for _ in NODES]
    env = {"NATS_PORT_1": str(ports[0]), "NATS_PORT_2": str(ports[1]),
           "NATS_PORT_3": str(ports[2]), "NATS_CLIENT_PASSWORD": "pw-client",
           "NATS_WORKER_PASSWORD": "pw-worker", "PATH": "/usr/local/bin:/usr/bin:/bin"}
    compose = [*stack.find_compose(), "-p", project, "-f", str(COMPOSE), "--profile", "cluster"]
    try:
        up = subprocess.run([*compose, "up", "-d", "--no-build", *NODES], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
        assert up.returncode == 0, up.stderr[-2000:]
        yield compose, env, ports
    finally:
        subprocess.run([*compose, "down", "-v", "--remove-orphans"], env=env, cwd=ROOT,
                       capture_output=True, timeout=120)


@pytest.mark.timeout(300)
# nats-py drops the socket of a server it lost without closing it (its StreamWriter warns when
# collected); not ours to fix, and nothing of ours is left open.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <function StreamWriter.__del__"
    ":pytest.PytestUnraisableExceptionWarning")
async def test_the_cluster_profile_replicates_and_survives_a_stopped_server(
    cluster_project: tuple[list[str], dict[str, str], list[int]],
) -> None:
    compose, env, ports = cluster_project
    urls = [f"nats://127.0.0.1:{p}" for p in ports]
    options = ConnectOptions(servers=urls, user="client", password="pw-client")
    with anyio.fail_after(120):  # containers starting: nothing to wait on but polling
        while not all(_says_info(p) for p in ports):
            await anyio.sleep(0.5)
    transport = NatsTransport(options, namespace="heterarch")
    await transport.connect()
    with anyio.fail_after(120):  # then the JetStream meta leader
        while True:
            try:
                await transport.key_value("nodes", ttl=30)
                break
            except TransportError:
                await anyio.sleep(0.5)
    try:
        assert transport.replicas == 3
        kv = await transport.key_value("nodes", ttl=30)
        await kv.put("probe", b"before")
        assert transport.nc is not None and transport.nc.connected_url is not None
        stopped = NODES[ports.index(transport.nc.connected_url.port)]
        down = await anyio.run_process([*compose, "stop", stopped], env=env, cwd=ROOT,
                                       check=False)
        assert down.returncode == 0, down.stderr.decode()
        with anyio.fail_after(60):  # reconnects to another server; the bucket keeps quorum
            while True:
                try:
                    await kv.put("probe", b"after")
                    break
                except TransportError:
                    await anyio.sleep(0.2)
        assert await kv.get("probe") == b"after"
    finally:
        await transport.close()
