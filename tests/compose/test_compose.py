"""The compose stack: the file (and a generated worker override) is valid; the NATS image builds
from the static binary, gets healthy and enforces its auth; the worker image builds from local
files only. (Jaeger needs a registry; this machine has none.)"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import re
import shutil
import socket
import subprocess
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import docker
import docker.errors
import nats
import pytest

from runtime._nats_server import free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose" / "docker-compose.yml"
LABEL = "heterarch.test.compose"
RUN_ID = uuid.uuid4().hex[:12]  # cleanup touches this run's containers, not a parallel run's


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_compose_{name}",
                                                  ROOT / "compose" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_images = _load("build_images")
gen_workers = _load("gen_workers")


def _compose() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return ["docker", "compose"]


def _config(*files: Path, profile: bool = True) -> str:
    args = [a for f in files for a in ("-f", str(f))]
    done = subprocess.run([*_compose(), *args, *(["--profile", "workers"] if profile else []),
                           "config"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_compose_file_is_valid() -> None:
    plain = _config(COMPOSE, profile=False)
    for service in ("nats:", "jaeger:", "healthcheck:", "nats-data:"):
        assert service in plain
    with_workers = _config(COMPOSE)
    assert "worker-cpu:" in with_workers and "worker-gpu:" in with_workers
    assert "service_healthy" in with_workers


def test_generated_worker_override_is_valid(tmp_path: Path) -> None:
    pools = ROOT / "examples" / "sim_pools.toml"
    override = tmp_path / "workers.override.yml"
    override.write_text(gen_workers.render_override(pools, replicas=2))
    merged = _config(COMPOSE, override)
    for pool in tomllib.loads(pools.read_text())["pools"]:
        service = "worker-" + re.sub(r"[^a-z0-9-]+", "-", pool.lower()).strip("-")
        assert f"  {service}:\n" in merged
    assert "replicas: 2" in merged
    with pytest.raises(ValueError, match="defines no"):
        empty = tmp_path / "empty.toml"
        empty.write_text('namespace = "x"\n')
        gen_workers.render_override(empty)


# --------------------------------------------------------------------------- Docker


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    try:
        yield client
    finally:  # containers made here, found by label (a crashed run's too)
        for container in client.containers.list(all=True,
                                                filters={"label": f"{LABEL}={RUN_ID}"}):
            with contextlib.suppress(docker.errors.NotFound):  # auto-removed meanwhile
                container.remove(force=True)
        client.close()


def _says_info(port: int) -> bool:
    """The server (not just docker's port proxy) is up: it greets with an INFO line."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            return s.recv(5) == b"INFO "
    except OSError:
        return False


@pytest.fixture(scope="session")
def nats_image(docker_client: docker.DockerClient) -> str:
    return str(build_images.build_nats_image("heterarch/nats:test", labels={LABEL: RUN_ID},
                                             progress=lambda _: None))


@pytest.fixture(scope="session")
def nats_container(docker_client: docker.DockerClient, nats_image: str) -> Iterator[int]:
    port = free_port()
    container = docker_client.containers.run(
        nats_image, detach=True, ports={"4222/tcp": ("127.0.0.1", port)},
        environment={"NATS_CLIENT_PASSWORD": "pw-client", "NATS_WORKER_PASSWORD": "pw-worker"},
        labels={LABEL: RUN_ID},
    )
    try:
        deadline = time.monotonic() + 60
        health = ""
        while time.monotonic() < deadline:
            container.reload()
            health = container.attrs["State"].get("Health", {}).get("Status", "")
            if health == "healthy" and _says_info(port):
                break
            time.sleep(0.2)  # a container starting up: nothing to wait on but polling
        assert health == "healthy", container.logs().decode()[-2000:]
        yield port
    finally:
        container.remove(force=True)


@pytest.mark.docker
@pytest.mark.anyio
async def test_local_nats_image_is_healthy_runs_jetstream_and_enforces_auth(
        nats_container: int) -> None:
    port = nats_container
    for user, password in (("client", "pw-client"), ("worker", "pw-worker")):
        nc = await nats.connect(f"nats://{user}:{password}@127.0.0.1:{port}", connect_timeout=5,
                                allow_reconnect=False)
        try:
            info = await nc.jetstream().account_info()
            assert info.limits is not None  # JetStream is on
        finally:
            await nc.close()
    # Wrong password and no credentials, spoken in the protocol itself (nats-py leaks its
    # socket on the refused path).
    for connect in (b'{"user":"client","pass":"wrong","verbose":false}', b'{"verbose":false}'):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            assert (await reader.readline()).startswith(b"INFO ")
            writer.write(b"CONNECT " + connect + b"\r\nPING\r\n")
            await writer.drain()
            assert b"Authorization Violation" in await reader.readline()
        finally:
            writer.close()
            await writer.wait_closed()


@pytest.fixture(scope="session")
def worker_image(docker_client: docker.DockerClient) -> str:
    """Built offline (Debian root fs + host-built wheels); cached by a tag of the sources."""
    tag = build_images.worker_tag_for_sources("heterarch/worker-test")
    build_images.build_worker_image(tag, labels={LABEL: "worker"}, progress=lambda _: None)
    for image in docker_client.images.list(filters={"label": f"{LABEL}=worker"}):
        if tag not in image.tags:  # older sources' images: keep only the current one
            with contextlib.suppress(docker.errors.APIError):  # in use by a parallel run
                docker_client.images.remove(image.id)
    return str(tag)


@pytest.mark.docker
@pytest.mark.timeout(900)  # a cold machine: mmdebstrap, pip wheel, then the build (~3-5 min)
def test_worker_image_builds_from_local_files(docker_client: docker.DockerClient,
                                              worker_image: str) -> None:
    script = ("import os, runtime, actors, transports, sandbox; "
              "from runtime._observe.tracing import configure_tracing; "
              "print(os.getuid(), configure_tracing().enabled)")
    out = docker_client.containers.run(worker_image, ["python", "-c", script], remove=True,
                                       network_mode="none", labels={LABEL: RUN_ID})
    assert out.decode().split() == ["10001", "False"]  # non-root; tracing off by default
    help_text = docker_client.containers.run(worker_image, ["heterarch", "worker", "--help"],
                                             remove=True, network_mode="none",
                                             labels={LABEL: RUN_ID})
    assert b"--pool" in help_text
