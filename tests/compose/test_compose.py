"""The compose stack: the file is valid; the NATS service builds from local files and enforces
its auth. (Jaeger and the worker image need a registry; this machine has none.)"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import nats
import pytest

from runtime._nats_server import find_nats_server, free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose" / "docker-compose.yml"
TAG = "heterarch/nats:test"


def _compose() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return ["docker", "compose"]


def test_compose_file_is_valid() -> None:
    for profile in ([], ["--profile", "workers"]):
        done = subprocess.run([*_compose(), "-f", str(COMPOSE), *profile, "config"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        for service in ("nats", "jaeger"):
            assert f"{service}:" in done.stdout
    assert "worker-gpu" in done.stdout


def _says_info(port: int) -> bool:
    """The server (not just docker's port proxy) is up: it greets with an INFO line."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            return s.recv(5) == b"INFO "
    except OSError:
        return False


@pytest.fixture(scope="module")
def nats_container() -> Iterator[tuple[int, str]]:
    client = docker.from_env()
    with tempfile.TemporaryDirectory() as tmp:
        context = Path(tmp)
        for name in ("Dockerfile", "nats.conf"):
            shutil.copy(ROOT / "compose" / "nats" / name, context / name)
        shutil.copy(find_nats_server(), context / "nats-server")
        client.images.build(path=str(context), tag=TAG, labels={"heterarch.test": "1"}, rm=True)
    port = free_port()
    container = client.containers.run(
        TAG, detach=True, ports={"4222/tcp": ("127.0.0.1", port)},
        environment={"NATS_CLIENT_PASSWORD": "pw-client", "NATS_WORKER_PASSWORD": "pw-worker"},
        labels={"heterarch.test": "1"},
    )
    try:
        deadline = time.monotonic() + 30
        while not _says_info(port) and time.monotonic() < deadline:
            time.sleep(0.1)  # a container starting up: nothing to wait on but the port
        yield port, "pw-client"
    finally:
        container.remove(force=True)
        client.images.remove(TAG, force=True)
        client.close()


@pytest.mark.anyio
async def test_local_nats_image_runs_jetstream_with_auth(nats_container: tuple[int, str]) -> None:
    port, password = nats_container
    nc = await nats.connect(f"nats://client:{password}@127.0.0.1:{port}", connect_timeout=5)
    try:
        info = await nc.jetstream().account_info()
        assert info.limits is not None  # JetStream is on
    finally:
        await nc.close()
    # A wrong password, spoken in the protocol itself (nats-py leaks its socket on this path).
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        assert (await reader.readline()).startswith(b"INFO ")
        writer.write(b'CONNECT {"user":"client","pass":"wrong","verbose":false}\r\nPING\r\n')
        await writer.drain()
        assert b"Authorization Violation" in await reader.readline()
    finally:
        writer.close()
        await writer.wait_closed()
