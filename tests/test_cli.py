"""The CLI: clear errors for bad input, ping of a live cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from runtime import NatsServer

ROOT = Path(__file__).resolve().parents[1]


def heterarch(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runtime._cli", *args], cwd=ROOT,
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
        [sys.executable, "-m", "runtime._cli", "worker", "--pool", "gpu", "--config",
         str(config), "--nats", nats_server.url], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None
        assert "serving gpu (h100)" in worker.stdout.readline()
        done = heterarch("ping", "--nats", nats_server.url, "--namespace", "ping")
    finally:
        worker.terminate()
        worker.communicate(timeout=20)  # also closes its stdout pipe
    assert done.returncode == 0, done.stderr
    assert "1 node(s), pools: gpu x1" in done.stdout
    assert "worker" in done.stdout


def test_help_lists_the_commands() -> None:
    done = heterarch("--help")
    for command in ("nats", "worker", "ping", "sandbox", "demo", "simulate", "rlm", "trace"):
        assert command in done.stdout
