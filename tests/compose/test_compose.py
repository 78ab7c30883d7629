"""The compose stack: the file (and a generated worker override) is valid under every compose
front end this machine has; the front end is detected; `make compose-up` brings the stack up
(without Jaeger, said in one line, where no registry answers) and `make compose-down` leaves
nothing; the NATS image builds from the static binary, gets healthy and enforces its auth; the
worker image builds from local files only."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
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
import yaml

from runtime import RuntimeConfig
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
stack = _load("stack")


def _front_ends() -> list[list[str]]:
    """Every compose front end installed here (the plugin, the standalone binary or both)."""
    found = []
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                 timeout=30).returncode == 0:
        found.append([docker, "compose"])
    if shutil.which("docker-compose"):
        found.append([str(shutil.which("docker-compose"))])
    assert found, "no compose front end on this machine"
    return found


FRONT_ENDS = _front_ends()


def _config(compose: list[str], *files: Path, profile: bool = True) -> str:
    args = [a for f in files for a in ("-f", str(f))]
    done = subprocess.run([*compose, "-p", "heterarch-config", *args,
                           *(["--profile", "workers"] if profile else []), "config"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _host_ips(config_text: str) -> list[str]:
    """The host address of every published port (v1 prints "ip:host:container", v2 a map)."""
    config = yaml.safe_load(config_text)
    return [port["host_ip"] if isinstance(port, dict) else str(port).rsplit(":", 2)[0]
            for _, service in sorted(config["services"].items())
            for port in service.get("ports", [])]


@pytest.mark.parametrize("compose", FRONT_ENDS, ids=" ".join)
def test_compose_file_is_valid(compose: list[str]) -> None:
    plain = _config(compose, COMPOSE, profile=False)
    for service in ("nats:", "jaeger:", "healthcheck:", "nats-data:"):
        assert service in plain
    # Every published port is on loopback unless HETERARCH_BIND_HOST says otherwise.
    # 16686, 4317, 4318; 4222, 8222 (and 4231-4233 of the profile "cluster" where the front
    # end lists profiled services without --profile, as docker-compose 1.x does)
    assert _host_ips(plain) in (["127.0.0.1"] * 5, ["127.0.0.1"] * 8)
    with_workers = _config(compose, COMPOSE)
    assert "worker-cpu:" in with_workers and "worker-gpu:" in with_workers
    assert "service_healthy" in with_workers


def _path_with(tmp_path: Path, **programs: str) -> str:
    """A PATH holding only the named programs (a real binary's path, or a script's text)."""
    folder = tmp_path / "bin"
    folder.mkdir(parents=True)
    for name, what in programs.items():
        target = folder / name.replace("_", "-")
        if what.startswith("#!"):
            target.write_text(what)
            target.chmod(0o755)
        else:
            target.symlink_to(what)
    return str(folder)


def test_front_end_detection(tmp_path: Path) -> None:
    def find(path: str) -> list[str]:
        return list(stack.find_compose(which=lambda name: shutil.which(name, path=path)))

    # The plugin answers `docker compose version`: it wins over a standalone docker-compose.
    plugin = _path_with(tmp_path / "a", docker='#!/bin/sh\n[ "$1" = compose ] && exit 0\nexit 1\n',
                        docker_compose="#!/bin/sh\nexit 0\n")
    assert find(plugin) == [f"{plugin}/docker", "compose"]
    # A docker without the plugin (`docker compose` fails): the standalone binary.
    no_plugin = _path_with(tmp_path / "b", docker="#!/bin/sh\nexit 1\n",
                           docker_compose="#!/bin/sh\nexit 0\n")
    assert find(no_plugin) == [f"{no_plugin}/docker-compose"]
    # Neither: one clear error.
    with pytest.raises(stack.StackError, match="neither `docker compose`"):
        find(_path_with(tmp_path / "c", docker="#!/bin/sh\nexit 1\n"))
    # And on this machine: one of the real ones, the one the Makefile will use.
    assert stack.find_compose() in FRONT_ENDS


def test_the_nats_users_namespaces_are_said_and_regenerated(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert stack.conf_namespaces() == ["heterarch", "examples"]
    conf = tmp_path / "nats.conf"
    conf.write_text(stack.NATS_CONF.read_text())
    monkeypatch.setattr(stack, "NATS_CONF", conf)
    assert stack.main(["namespaces", "heterarch", "mine"]) == 0
    text = conf.read_text()
    assert stack.conf_namespaces() == ["heterarch", "mine"]
    assert '"mine.a.client.>"' in text and '"examples.a.client.>"' not in text
    assert text.count("authorization {") == 1 and "jetstream {" in text


def test_default_passwords_are_refused_beyond_loopback() -> None:
    stack.check_exposure({})  # loopback: fine
    with pytest.raises(stack.StackError, match="NATS_CLIENT_PASSWORD and NATS_WORKER_PASSWORD"):
        stack.check_exposure({"HETERARCH_BIND_HOST": "0.0.0.0"})
    stack.check_exposure({"HETERARCH_BIND_HOST": "0.0.0.0", "NATS_CLIENT_PASSWORD": "a1",
                          "NATS_WORKER_PASSWORD": "b2"})


@pytest.mark.parametrize("compose", FRONT_ENDS, ids=" ".join)
def test_generated_worker_override_is_valid(compose: list[str], tmp_path: Path) -> None:
    pools = ROOT / "examples" / "sim_pools.toml"
    override = tmp_path / "workers.override.yml"
    override.write_text(gen_workers.render_override(pools, replicas=2))
    merged = _config(compose, COMPOSE, override)
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
        # Each user may read only its own inboxes (compose/nats/nats.conf, docs/bus.md).
        nc = await nats.connect(f"nats://{user}:{password}@127.0.0.1:{port}", connect_timeout=5,
                                allow_reconnect=False, inbox_prefix=f"_INBOX_{user}")
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


@pytest.mark.docker
@pytest.mark.anyio
async def test_the_shipped_workers_namespace_works_on_the_nats_image(
        nats_container: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """``examples/pools.toml`` (namespace ``examples``, the shipped worker services') on the
    compose NATS image, with its users' credentials from a config's ``[connect]``."""
    from examples.pools import Square, Squarer
    from runtime import ActorSystem, Worker, parse_config

    url = f"nats://127.0.0.1:{nats_container}"
    text = (ROOT / "examples" / "pools.toml").read_text()

    def config(user: str) -> RuntimeConfig:
        return parse_config(tomllib.loads(
            f'nats = "{url}"\n' + text
            + f'\n[connect]\nuser = "{user}"\npassword_env = "T_PW_{user}"\n'))

    monkeypatch.setenv("T_PW_worker", "pw-worker")
    monkeypatch.setenv("T_PW_client", "pw-client")
    worker_config, client_config = config("worker"), config("client")
    assert worker_config.namespace == "examples"
    async with Worker(worker_config, ["cpu"]), \
            ActorSystem(nats=client_config.nats, namespace=client_config.namespace,
                        options=client_config.connect_options()) as system:
        ref = await system.spawn(Squarer, pool="cpu")
        assert await ref.ask(Square(12), timeout=30) == 144


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
    script = ("import os, heterarch, runtime, actors, transports, sandbox; "
              "from runtime._observe.tracing import configure_tracing; "
              "print(os.getuid(), configure_tracing().enabled)")
    out = docker_client.containers.run(worker_image, ["python", "-c", script], remove=True,
                                       network_mode="none", labels={LABEL: RUN_ID})
    assert out.decode().split() == ["10001", "False"]  # non-root; tracing off by default
    help_text = docker_client.containers.run(worker_image, ["heterarch", "worker", "--help"],
                                             remove=True, network_mode="none",
                                             labels={LABEL: RUN_ID})
    assert b"--pool" in help_text


# --------------------------------------------------------------------------- make compose-up


def _project_leftovers(project: str) -> dict[str, list[str]]:
    label = f"label=com.docker.compose.project={project}"
    return {kind: subprocess.run(["docker", *cmd, "--filter", label], capture_output=True,
                                 text=True, timeout=60).stdout.split()
            for kind, cmd in (("containers", ["ps", "-aq"]), ("networks", ["network", "ls", "-q"]),
                              ("volumes", ["volume", "ls", "-q"]))}


@pytest.fixture
def compose_project() -> Iterator[tuple[str, dict[str, str]]]:
    """A project name and ports of this test's own; whatever is left is removed at the end."""
    project = f"heterarch-test-{RUN_ID}-{uuid.uuid4().hex[:6]}"
    env = {"COMPOSE_PROJECT_NAME": project, "NATS_PORT": str(free_port()),
           "NATS_MONITOR_PORT": str(free_port()), "JAEGER_UI_PORT": str(free_port()),
           "OTLP_GRPC_PORT": str(free_port()), "OTLP_HTTP_PORT": str(free_port())}
    try:
        yield project, env
    finally:
        subprocess.run([*stack.find_compose(), "-p", project, "-f", str(COMPOSE), "--profile",
                        "workers", "down", "-v", "--remove-orphans"], capture_output=True,
                       timeout=120, cwd=ROOT)


def _make(target: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", target], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=600)


@pytest.mark.docker
@pytest.mark.timeout(600)
def test_make_compose_up_and_down(compose_project: tuple[str, dict[str, str]]) -> None:
    project, env = compose_project
    up = _make("compose-up", env)
    assert up.returncode == 0, up.stderr[-2000:]
    said = [line for line in up.stdout.splitlines() if not line.startswith(".venv/")]
    jaeger_here = stack.image_available(f"{stack.JAEGER_IMAGE}:{stack.JAEGER_VERSION}",
                                        pull=False)
    if jaeger_here:  # a machine with a registry (or the image cached)
        assert not [line for line in said if line.startswith("jaeger:")]
    else:  # this project's machines: one line says so, the rest runs
        notices = [line for line in said if line.startswith("jaeger:")]
        assert len(notices) == 1 and "cannot be pulled" in notices[0], said
        assert "heterarch trace show" in notices[0]
    assert said[-1].startswith(f"stack {project} up: nats")
    containers = stack.Stack(project).containers()
    states = {c["Config"]["Labels"]["com.docker.compose.service"]:  # type: ignore[index]
              c["State"] for c in containers}
    assert set(states) == ({"nats", "jaeger"} if jaeger_here else {"nats"})
    assert states["nats"]["Health"]["Status"] == "healthy"  # type: ignore[index]
    assert _says_info(int(env["NATS_PORT"]))
    # Published on loopback only.
    bindings = containers[0]["HostConfig"]["PortBindings"]  # type: ignore[index]
    assert {b["HostIp"] for binds in bindings.values() for b in binds} == {"127.0.0.1"}

    down = _make("compose-down", env)
    assert down.returncode == 0, down.stderr[-2000:]
    assert _project_leftovers(project) == {"containers": [], "networks": [], "volumes": []}


@pytest.mark.docker
@pytest.mark.timeout(600)
def test_failed_up_leaves_nothing_behind(compose_project: tuple[str, dict[str, str]]) -> None:
    project, env = compose_project
    with socket.socket() as busy:  # the NATS port is taken: `up` fails half-way
        busy.bind(("127.0.0.1", int(env["NATS_PORT"])))
        busy.listen()
        up = _make("compose-up", env)
    assert up.returncode != 0
    errors = [line for line in up.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "compose up" in errors[0], up.stderr[-2000:]
    assert _project_leftovers(project) == {"containers": [], "networks": [], "volumes": []}
