"""The examples are code that runs: each one, against a real nats-server."""

from __future__ import annotations

import pytest

from runtime import NatsServer

pytestmark = pytest.mark.anyio


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
