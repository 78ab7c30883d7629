"""Two real runs recorded once per session (see ``recorded_run``): one on healthy pools, one
whose wafer pool refuses connections (its sub-calls fall back to another pool)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from heterarch.sim.simulator import default_profiles, serve_in_thread
from runtime import NatsServer

from .recorded_run import RecordedRun, record_run


@pytest.fixture(scope="session")
def view_simulator() -> Iterator[str]:
    with serve_in_thread(default_profiles(), time_scale=0.05) as url:
        yield url


@pytest.fixture(scope="session")
def good_run(nats_server: NatsServer, view_simulator: str,
             tmp_path_factory: pytest.TempPathFactory) -> RecordedRun:
    run = record_run(nats_server.url, view_simulator, tmp_path_factory.mktemp("good-run"))
    assert run.result.returncode == 0, run.result.stderr
    return run


@pytest.fixture(scope="session")
def down_run(nats_server: NatsServer, view_simulator: str,
             tmp_path_factory: pytest.TempPathFactory) -> RecordedRun:
    run = record_run(nats_server.url, view_simulator, tmp_path_factory.mktemp("down-run"),
                     down="wafer")
    assert run.result.returncode == 0, run.result.stderr  # answered by the other pools
    return run
