"""Bring the local stack up or down with whichever compose front end this machine has.

    python compose/stack.py up [--workers] [--project NAME]    # `make compose-up`
    python compose/stack.py down [--project NAME]              # `make compose-down`
    python compose/stack.py which                              # the compose command found

``up`` builds every image the stack needs that is not there (NATS always from the static binary;
the worker image from the repo's ``Dockerfile``, offline when ``python:3.11-slim`` cannot be
pulled), pulls Jaeger if it can and otherwise says so in one line and starts the rest without it
(Jaeger is a Go program that cannot be built here). It waits until every started service with a
health check is healthy. A failed ``up`` takes down what it started: no container, network or
volume of the project is left behind. ``down`` removes the project's containers, network and
volume (``-v``: JetStream data goes with it).

The project name (``-p``) is ``heterarch`` unless ``--project`` or ``COMPOSE_PROJECT_NAME`` say
otherwise, so two stacks on one engine do not collide. Ports are published on 127.0.0.1 unless
``HETERARCH_BIND_HOST`` names another address; then the NATS passwords must not be the defaults.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType

import yaml

COMPOSE_DIR = Path(__file__).resolve().parent
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
DEFAULT_PROJECT = "heterarch"
JAEGER_IMAGE = "jaegertracing/jaeger"
JAEGER_VERSION = "2.5.0"
WORKER_IMAGE = "heterarch/worker:local"
ONLINE_WORKER_BASE = "python:3.11-slim"
DEFAULT_PASSWORDS = {"NATS_CLIENT_PASSWORD": "client-secret",
                     "NATS_WORKER_PASSWORD": "worker-secret"}
LOOPBACK = ("127.0.0.1", "localhost", "::1")
HEALTH_TIMEOUT_S = 90.0
NATS_CONF = COMPOSE_DIR / "nats" / "nats.conf"
NAMESPACES_LINE = "# Namespaces its users may use: "
AUTH_START = "authorization {"
OFFLINE_TRACES_HINT = ("offline traces: HETERARCH_TRACE_FILE=spans.jsonl heterarch rlm ..., "
                       "then `heterarch trace show TRACE_ID` (docs/tracing.md)")

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


class StackError(RuntimeError):
    """The stack could not be brought up or down; the message is one line for the user."""


def _run(cmd: Sequence[str], *, env: Mapping[str, str] | None = None,
         timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                          env=dict(env) if env is not None else None, cwd=COMPOSE_DIR)


def find_compose(*, which: Callable[[str], str | None] = shutil.which,
                 run: Runner = _run) -> list[str]:
    """The compose front end: ``docker compose`` (the plugin) if it answers, else
    ``docker-compose`` (v1 or the standalone v2). Raises :class:`StackError` when neither."""
    docker = which("docker")
    if docker is not None:
        try:
            if run([docker, "compose", "version"], timeout=30).returncode == 0:
                return [docker, "compose"]
        except (OSError, subprocess.TimeoutExpired):
            pass
    standalone = which("docker-compose")
    if standalone is not None:
        return [standalone]
    raise StackError("neither `docker compose` (the Compose plugin) nor `docker-compose` is "
                     "installed; install one of them (https://docs.docker.com/compose/install/)")


def _load_build_images() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_heterarch_build_images",
                                                  COMPOSE_DIR / "build_images.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def image_available(tag: str, *, pull: bool = True) -> bool:
    """``tag`` exists locally, or (``pull``) a registry gave it to us just now."""
    if _run(["docker", "image", "inspect", tag], timeout=60).returncode == 0:
        return True
    return pull and _run(["docker", "pull", "--quiet", tag], timeout=600).returncode == 0


def check_exposure(env: Mapping[str, str]) -> None:
    """Refuse to publish ports beyond this machine with the default NATS passwords."""
    host = env.get("HETERARCH_BIND_HOST", "127.0.0.1")
    if host in LOOPBACK:
        return
    weak = [name for name, default in DEFAULT_PASSWORDS.items()
            if env.get(name, default) == default]
    if weak:
        raise StackError(f"HETERARCH_BIND_HOST={host} publishes NATS beyond this machine but "
                         f"{' and '.join(weak)} still have the default value: set them first")


class Stack:
    """One compose project of ``compose/docker-compose.yml``."""

    def __init__(self, project: str = DEFAULT_PROJECT, *, compose: list[str] | None = None,
                 env: Mapping[str, str] | None = None, say: Callable[[str], None] = print,
                 files: Sequence[Path] = (COMPOSE_FILE,)) -> None:
        self.project = project
        self.compose = compose if compose is not None else find_compose()
        self.env = dict(os.environ if env is None else env)
        self.say = say
        self.files = list(files)

    def _cmd(self, *args: str, workers: bool = False) -> list[str]:
        files = [a for f in self.files for a in ("-f", str(f))]
        profile = ["--profile", "workers"] if workers else []
        return [*self.compose, "-p", self.project, *files, *profile, *args]

    def _compose(self, *args: str, workers: bool = False,
                 timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return _run(self._cmd(*args, workers=workers), env=self.env, timeout=timeout)

    def services(self, *, workers: bool) -> list[str]:
        """The services to start: those without a profile, plus the ``workers`` profile's.
        (``config --services`` of docker-compose 1.x lists every profile's, so read the file.)"""
        done = self._compose("config", workers=workers, timeout=60)
        if done.returncode != 0:
            raise StackError(f"compose file invalid: {_last_line(done)}")
        config = yaml.safe_load(done.stdout) or {}
        return [name for name, service in (config.get("services") or {}).items()
                if not service.get("profiles") or (workers and "workers" in service["profiles"])]

    def up(self, *, workers: bool = False, health_timeout: float = HEALTH_TIMEOUT_S) -> list[str]:
        """Build what is missing, start the stack (without Jaeger where it cannot be had),
        wait for health. Returns the started services."""
        check_exposure(self.env)
        build = _load_build_images()
        try:
            build.build_nats_image(progress=lambda _: None)
        except build.ImageBuildFailed as exc:
            raise StackError(f"building the NATS image failed: {str(exc).splitlines()[0]}") \
                from None
        services = [s for s in self.services(workers=workers) if s != "jaeger"]
        jaeger = f"{JAEGER_IMAGE}:{self.env.get('JAEGER_VERSION', JAEGER_VERSION)}"
        if image_available(jaeger):
            services.insert(1, "jaeger")
        else:
            self.env["HETERARCH_WORKER_OTLP_ENDPOINT"] = ""  # workers: no exporter to nowhere
            self.say(f"jaeger: {jaeger} cannot be pulled (no registry) and cannot be built here; "
                     f"starting the stack without it ({OFFLINE_TRACES_HINT})")
        if workers:
            self._worker_image(build)
        done = self._compose("up", "-d", "--no-build", *services, workers=workers)
        if done.returncode != 0:
            self.down()
            raise StackError(f"`compose up` failed: {_last_line(done)}")
        try:
            self.wait_healthy(health_timeout)
        except StackError:
            self.down()
            raise
        return services

    def _worker_image(self, build: ModuleType) -> None:
        if image_available(WORKER_IMAGE, pull=False):
            return
        offline = not image_available(ONLINE_WORKER_BASE)
        source = "offline, from a Debian root fs" if offline else ONLINE_WORKER_BASE
        self.say(f"building {WORKER_IMAGE} ({source}; takes minutes)")
        try:
            build.build_worker_image(WORKER_IMAGE, offline=offline, progress=lambda _: None)
        except build.ImageBuildFailed as exc:
            raise StackError(f"building the worker image failed: {str(exc).splitlines()[0]}") \
                from None

    def containers(self) -> list[dict[str, object]]:
        """``docker inspect`` of every container of this project (running or not)."""
        ids = _run(["docker", "ps", "-aq", "--filter",
                    f"label=com.docker.compose.project={self.project}"], timeout=60).stdout.split()
        if not ids:
            return []
        done = _run(["docker", "inspect", *ids], timeout=60)
        found: list[dict[str, object]] = json.loads(done.stdout or "[]")
        return found

    def wait_healthy(self, timeout: float) -> None:
        """Every container with a health check healthy, every other one running."""
        deadline = time.monotonic() + timeout
        waiting: list[str] = []
        while time.monotonic() < deadline:
            waiting = []
            for c in self.containers():
                state = c.get("State") or {}
                assert isinstance(state, dict)
                name = str(c.get("Name", "?")).lstrip("/")
                health = (state.get("Health") or {}).get("Status")
                if state.get("Status") in ("exited", "dead"):
                    raise StackError(f"{name} exited (code {state.get('ExitCode')}); "
                                     f"see `docker logs {name}`")
                if health not in (None, "healthy") or state.get("Status") != "running":
                    waiting.append(f"{name} ({health or state.get('Status')})")
            if not waiting:
                return
            time.sleep(0.5)  # containers starting: nothing to wait on but polling
        raise StackError(f"not healthy after {timeout:g}s: {', '.join(waiting)}")

    def down(self) -> None:
        """Remove the project's containers, network and volume (a stack half up too)."""
        done = self._compose("down", "-v", "--remove-orphans", workers=True)
        if done.returncode != 0:
            raise StackError(f"`compose down` failed: {_last_line(done)}")


def _last_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit code {done.returncode}"


def conf_namespaces(conf: str | None = None) -> list[str]:
    """The namespaces the NATS users of ``compose/nats/nats.conf`` may use."""
    text = NATS_CONF.read_text() if conf is None else conf
    for line in text.splitlines():
        if line.startswith(NAMESPACES_LINE):
            return [n.strip() for n in line[len(NAMESPACES_LINE):].split(",") if n.strip()]
    return ["heterarch"]


def write_namespaces(namespaces: Sequence[str]) -> None:
    """Regenerate the users' permissions of ``compose/nats/nats.conf`` for ``namespaces``
    (the next ``up`` rebuilds the NATS image with it)."""
    sys.path.insert(0, str(COMPOSE_DIR.parent))
    from runtime._permissions import NatsUser, authorization_block

    text = NATS_CONF.read_text()
    head = text[:text.index(AUTH_START)]
    head = "\n".join(line for line in head.splitlines() if not line.startswith(NAMESPACES_LINE))
    block = authorization_block(list(namespaces), [
        NatsUser(user="client", role="client", password="$NATS_CLIENT_PASSWORD"),
        NatsUser(user="worker", role="worker", password="$NATS_WORKER_PASSWORD"),
    ])
    NATS_CONF.write_text(f"{head}\n{NAMESPACES_LINE}{', '.join(namespaces)}\n{block}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("action", choices=["up", "down", "which", "namespaces"])
    parser.add_argument("names", nargs="*",
                        help="with `namespaces`: the namespaces NATS users may use (the "
                             "configs' `namespace`); none: print them")
    parser.add_argument("--project", default=os.environ.get("COMPOSE_PROJECT_NAME")
                        or DEFAULT_PROJECT, help="compose project name")
    parser.add_argument("--workers", action="store_true",
                        help="also start one worker per pool (profile `workers`)")
    args = parser.parse_args(argv)
    try:
        if args.action == "which":
            print(" ".join(find_compose()))
            return 0
        if args.action == "namespaces":
            if args.names:
                write_namespaces(args.names)
                print(f"compose/nats/nats.conf: users may use namespaces "
                      f"{', '.join(args.names)}; `make compose-up` rebuilds the NATS image")
            else:
                print(" ".join(conf_namespaces()))
            return 0
        stack = Stack(args.project)
        if args.action == "down":
            stack.down()
            print(f"stack {args.project} removed (containers, network, volume)")
            return 0
        started = stack.up(workers=args.workers)
        host = stack.env.get("HETERARCH_BIND_HOST", "127.0.0.1")
        port = stack.env.get("NATS_PORT", "4222")
        print(f"NATS users may use the namespaces {', '.join(conf_namespaces())} (a config's "
              "`namespace`); for others: python compose/stack.py namespaces NAME... , then "
              "make compose-up")
        # the last line says the stack is up (what a script waits for)
        print(f"stack {args.project} up: {', '.join(started)}; "
              f"NATS at nats://client:...@{host}:{port}"
              + (f", Jaeger UI http://{host}:16686" if "jaeger" in started else ""))
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
