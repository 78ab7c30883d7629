"""pytest fixtures for testing your own actors against the real parts (a pytest plugin).

Installed with heterarch (entry point ``pytest11``), so the fixtures are there in any project
that has heterarch installed; no ``conftest.py`` needed. Async fixtures run on anyio's pytest
plugin: mark async tests with ``@pytest.mark.anyio``.

- ``heterarch_nats`` (session): a real nats-server with JetStream on a free loopback port.
- ``heterarch_namespace``: a namespace of the test's own (subjects, streams, buckets), so
  tests sharing the server never see each other's actors.
- ``heterarch_system``: an :class:`~runtime.ActorSystem` connected to that server.
- ``heterarch_workers``: starts workers for named pools of a config, in this process:
  ``await heterarch_workers("pools.toml", ["gpu"])``.
- ``heterarch_simulator``: the pool simulator answering with your responder, over real HTTP:
  ``sim = heterarch_simulator(MyResponder())``; ``sim.config(modules=[...])`` is a pools config
  for its models.
- ``heterarch_sandbox``: a started Docker sandbox (the image is built locally if missing).

Everything started is stopped at the end of the test (the server at the end of the session).
See docs/testing.md; ``examples/testing/`` is a test file that uses them all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from functools import partial
from pathlib import Path

import anyio
import pytest

from runtime import agent_services
from runtime._config import RuntimeConfig, load_config, parse_config
from runtime._nats_server import NatsServer
from runtime._system import ActorSystem, Worker
from sandbox import DockerSandbox, build_image
from transports import new_id

from .sim.profiles import Profile, Responder, default_profiles, profiles_toml
from .sim.simulator import serve_in_thread

StartWorkers = Callable[..., Awaitable[Worker]]
"""The type of ``heterarch_workers``: ``(config, pools=None) -> Worker``."""


@dataclasses.dataclass(frozen=True)
class SimulatedPools:
    """A running pool simulator: its OpenAI-compatible ``url`` and the ``profiles`` it plays."""

    url: str
    profiles: dict[str, Profile]

    def config(self, *, modules: Sequence[str] = ("actors",),
               namespace: str = "heterarch") -> RuntimeConfig:
        """A pools config with one pool per simulated model (``wafer``, ``h100``,
        ``frontier``, ``cpu``...), whose workers may instantiate classes from ``modules``."""
        text = f'namespace = "{namespace}"\n\n' + profiles_toml(self.profiles, self.url,
                                                                modules=modules)
        return parse_config(tomllib.loads(text), source="heterarch_simulator")


StartSimulator = Callable[..., SimulatedPools]
"""The type of ``heterarch_simulator``: ``(responder=None, *, time_scale=0.0)``."""


@pytest.fixture(scope="session")
def heterarch_nats() -> Iterator[NatsServer]:
    """A real nats-server (JetStream on) on a free loopback port, for the whole session."""
    server = NatsServer()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def heterarch_namespace() -> str:
    """A namespace of this test's own on the shared server."""
    return "t" + new_id()[:12]


@pytest.fixture
async def heterarch_system(heterarch_nats: NatsServer,
                           heterarch_namespace: str) -> AsyncIterator[ActorSystem]:
    """An ``ActorSystem`` on ``heterarch_nats``, in the test's namespace."""
    async with ActorSystem(nats=heterarch_nats.url, namespace=heterarch_namespace,
                           embedded=False) as system:
        yield system


@pytest.fixture
async def heterarch_workers(heterarch_nats: NatsServer,
                            heterarch_namespace: str) -> AsyncIterator[StartWorkers]:
    """``await heterarch_workers(config, pools)``: a worker serving ``pools`` (None: all) of
    ``config`` (a TOML path or a ``RuntimeConfig``), in the test's namespace, with the
    services the built-in agents need (router, model clients, sandboxes). Returns the
    ``Worker``; call it again for more workers."""
    async with contextlib.AsyncExitStack() as stack:
        async def start(config: RuntimeConfig | str | Path,
                        pools: Sequence[str] | None = None) -> Worker:
            loaded = config if isinstance(config, RuntimeConfig) else load_config(config)
            served = list(pools) if pools is not None else list(loaded.pools)
            services, pool_services = agent_services(loaded, served)
            worker = Worker(loaded, served, nats=heterarch_nats.url,
                            namespace=heterarch_namespace, services=services,
                            pool_services=pool_services)
            return await stack.enter_async_context(worker)

        yield start


@pytest.fixture
def heterarch_simulator() -> Iterator[StartSimulator]:
    """``heterarch_simulator(responder=None, *, time_scale=0.0)``: the pool simulator on a
    free port, every model answering with ``responder`` (anything with ``reply(messages,
    model) -> str``; None: the built-in ones), delays multiplied by ``time_scale``."""
    with contextlib.ExitStack() as stack:
        def start(responder: Responder | None = None, *,
                  time_scale: float = 0.0) -> SimulatedPools:
            profiles = default_profiles()
            if responder is not None:
                profiles = {name: dataclasses.replace(p, responder=responder)
                            for name, p in profiles.items()}
            url = stack.enter_context(serve_in_thread(profiles, time_scale=time_scale))
            return SimulatedPools(url, profiles)

        yield start


@pytest.fixture
async def heterarch_sandbox() -> AsyncIterator[DockerSandbox]:
    """A started Docker sandbox of the locally built image (built now if missing)."""
    image = await anyio.to_thread.run_sync(partial(build_image, if_missing=True,
                                                   progress=lambda _: None))
    box = DockerSandbox(image=image)
    await box.start()
    try:
        yield box
    finally:
        await box.close()
