"""The examples are code that runs: each one, against a real nats-server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from runtime import NatsServer

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[1]


async def test_hello(nats_server: NatsServer) -> None:
    from examples import hello

    assert await hello.main(nats_server.url) == ["ada", "alan", "grace"]


async def test_supervision(nats_server: NatsServer) -> None:
    from examples import supervision

    result = await supervision.main(nats_server.url)
    log = result["log"]
    assert isinstance(log, list)
    assert log[0] == "done 1"
    assert "child raised RuntimeError: boom" in log
    assert any("restarted" in line for line in log)
    assert "restart intensity exceeded" in str(result["boss_reason"])


async def test_pools_two_worker_processes(nats_server: NatsServer) -> None:
    from examples import pools

    result = await pools.main(nats_server.url)
    assert result["sum"] == sum(x * x for x in range(1, 11))
    assert "pool=cpu" in str(result["mapper"])
    assert "pool=gpu" in str(result["squarers"])
    mapper_pid = str(result["mapper"]).split("pid=")[1].split()[0]
    squarer_pid = str(result["squarers"]).split("pid=")[1].split()[0]
    assert mapper_pid != squarer_pid  # two pools, two processes


def test_the_pytest_plugin_example_runs_on_its_own() -> None:
    """examples/testing has no conftest: its fixtures come from the installed plugin (entry
    point ``pytest11``), as in a user's project."""
    assert not (ROOT / "examples" / "testing" / "conftest.py").exists()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "examples/testing"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "3 passed" in done.stdout
