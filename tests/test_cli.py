"""The CLI: clear errors for bad input, ping of a live cluster."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

from heterarch.cli.main import build_parser
from runtime import NatsServer

ROOT = Path(__file__).resolve().parents[1]


def heterarch(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "heterarch.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    missing = heterarch("worker", "--pool", "cpu", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[pools.cpu]\ncapacity = 0\n")
    invalid = heterarch("worker", "--pool", "cpu", "--config", str(bad))
    assert invalid.returncode == 1 and "capacity must be >= 1" in invalid.stderr
    bad.write_text("not = [toml")
    assert "not valid TOML" in heterarch("worker", "--pool", "x", "--config", str(bad)).stderr
    good = tmp_path / "good.toml"
    good.write_text("[pools.cpu]\n")
    other = heterarch("worker", "--pool", "gpu", "--config", str(good))
    assert other.returncode == 1 and "not in the config" in other.stderr


def test_no_server_is_a_clear_error() -> None:
    done = heterarch("ping", "--nats", "nats://127.0.0.1:9")
    assert done.returncode == 1
    assert "could not connect to NATS" in done.stderr and "heterarch nats" in done.stderr


def test_ping_shows_workers_and_pools(nats_server: NatsServer, tmp_path: Path) -> None:
    config = tmp_path / "pools.toml"
    config.write_text('namespace = "ping"\n[pools.gpu]\nhardware = "h100"\n')
    worker = subprocess.Popen(
        [sys.executable, "-m", "heterarch.cli", "worker", "--pool", "gpu", "--config",
         str(config), "--nats", nats_server.url], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None
        assert "serving gpu (h100)" in worker.stdout.readline()
        done = heterarch("ping", "--nats", nats_server.url, "--namespace", "ping")
        as_json = heterarch("ping", "--nats", nats_server.url, "--namespace", "ping", "--json")
    finally:
        worker.terminate()
        worker.communicate(timeout=20)  # also closes its stdout pipe
    assert done.returncode == 0, done.stderr
    assert "1 node(s), pools: gpu x1" in done.stdout
    assert "worker" in done.stdout
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["pools"] == {"gpu": 1}
    [node] = report["nodes"]
    assert node["info"]["role"] == "worker" and node["info"]["pools"] == {"gpu": "h100"}


def test_worker_and_ping_read_namespace_and_nats_from_the_config(nats_server: NatsServer,
                                                                tmp_path: Path) -> None:
    config = tmp_path / "pools.toml"
    config.write_text(f'namespace = "fromconfig"\nnats = "{nats_server.url}"\n'
                      '[pools.gpu]\nhardware = "h100"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("HETERARCH_NATS_URL", "NATS_URL")}
    worker = subprocess.Popen(  # no --nats: the config's
        [sys.executable, "-m", "heterarch.cli", "worker", "--pool", "gpu", "--config",
         str(config)], cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert worker.stdout is not None
        assert "serving gpu (h100)" in worker.stdout.readline()
        done = subprocess.run([sys.executable, "-m", "heterarch.cli", "ping", "--config",
                               str(config)], cwd=ROOT, capture_output=True, text=True,
                              timeout=60, env=env)
    finally:
        worker.terminate()
        worker.communicate(timeout=30)  # also closes its stdout pipe
    assert done.returncode == 0, done.stderr
    assert "1 node(s), pools: gpu x1" in done.stdout


def test_help_lists_the_commands() -> None:
    done = heterarch("--help")
    for command in ("nats", "worker", "ping", "sandbox", "demo", "simulate", "rlm", "trace",
                    "route"):
        assert command in done.stdout


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The CLI failed with exactly one line on stderr, no traceback."""
    assert done.returncode == 1, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("heterarch: error: ")
    assert "Traceback" not in done.stderr
    return lines[0]


def test_a_missing_context_file_is_one_line(tmp_path: Path) -> None:
    line = _one_line(heterarch("rlm", "how many?", "--context", str(tmp_path / "nope.txt"),
                               "--root-pool", "main", "--nats", "nats://127.0.0.1:9"))
    assert "No such file or directory" in line and "nope.txt" in line


def test_a_busy_port_is_one_line(nats_server: NatsServer, tmp_path: Path) -> None:
    line = _one_line(heterarch("nats", "--port", str(nats_server.port),
                               "--store-dir", str(tmp_path / "store")))
    assert "address already in use" in line


def test_a_busy_simulator_port_is_one_line(nats_server: NatsServer) -> None:
    line = _one_line(heterarch("simulate", "--port", str(nats_server.port)))
    assert "address already in use" in line and "--port" in line
    assert f"127.0.0.1:{nats_server.port}" in line


def test_version() -> None:
    done = heterarch("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"heterarch {version('heterarch')}"


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_option_has_help_and_shows_its_default() -> None:
    parsers = list(_parsers(build_parser()))
    assert len(parsers) == 17  # heterarch, its 10 commands, sandbox build and reap, trace show
    # and list, route fit and learn
    for parser in parsers:
        text = " ".join(parser.format_help().split())  # help lines unwrapped
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, f"{parser.prog} {action.dest}: no help"
            if action.default not in (None, False, [], argparse.SUPPRESS) \
                    and not action.required:
                assert f"(default: {action.default})" in text, f"{parser.prog} {action.dest}"


def test_verbose_works_after_the_subcommand(tmp_path: Path) -> None:
    done = heterarch("rlm", "q", "--context", str(tmp_path / "nope.txt"), "--root-pool",
                     "main", "-v")
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "FileNotFoundError" in done.stderr


def test_no_docker_is_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "heterarch.cli", "sandbox", "build", "--if-missing"], cwd=ROOT,
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"},
    )
    line = _one_line(done)
    assert "Docker is not available" in line


def test_an_auth_failure_never_shows_the_password() -> None:
    server = NatsServer(extra_args=["--user", "alice", "--pass", "right-horse"])
    server.start()
    try:
        url = f"nats://alice:wrong-battery@127.0.0.1:{server.port}"
        line = _one_line(heterarch("ping", "--nats", url))
    finally:
        server.cleanup()
    assert "wrong-battery" not in line
    assert "alice:***@" in line
    assert "user and password" in line and "heterarch nats" not in line


def test_verbose_shows_the_traceback(tmp_path: Path) -> None:
    done = heterarch("-v", "rlm", "q", "--context", str(tmp_path / "nope.txt"),
                     "--root-pool", "main")
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "FileNotFoundError" in done.stderr


def test_a_failed_worker_node_exits_non_zero(nats_server: NatsServer, tmp_path: Path) -> None:
    config = tmp_path / "pools.toml"
    config.write_text('namespace = "failing"\n[pools.cpu]\n')
    # The node's own machinery breaks (here: its registry loop raises at once).
    script = (
        "import sys, runtime._core.membership as m\n"
        "async def broken(self):\n"
        "    raise RuntimeError('registry loop broke')\n"
        "m.Membership._registry_loop = broken\n"
        "from heterarch.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "worker", "--pool", "cpu", "--config", str(config),
         "--nats", nats_server.url], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "heterarch: error: node" in done.stderr and "registry loop broke" in done.stderr
