"""Shared fixtures: a real nats-server per session (and per test where a test breaks it)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from runtime import NatsCluster, NatsServer


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """One real nats-server with JetStream for the whole session, on a free loopback port."""
    server = NatsServer()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def private_nats_server() -> Iterator[NatsServer]:
    """A nats-server of this test's own, for tests that stop, restart or misconfigure it."""
    server = NatsServer()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def nats_cluster() -> Iterator[NatsCluster]:
    """Three clustered nats-servers (JetStream clustered) of this test's own, on loopback."""
    cluster = NatsCluster(3)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
