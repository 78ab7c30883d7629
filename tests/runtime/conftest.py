"""The RLM harness: simulated models over real HTTP, Docker sandboxes, a worker and a client
on one transport (in-memory by default; ``{"transport": "nats"}`` for a real nats-server)."""

from __future__ import annotations

import tomllib
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from typing import Any

import docker
import msgspec
import pytest

from actors import Answer, Query, RLMAgent
from heterarch.sim.profiles import RoutingResponder
from heterarch.sim.simulator import Simulator, default_profiles, profiles_toml
from runtime import ActorSystem, NatsServer, RuntimeConfig, Worker, agent_services, parse_config
from runtime._config import RoutingConfig
from runtime._models.llm import litellm_module
from sandbox import OWNER_LABEL, build_image, default_owner
from transports import MemoryBus, MemoryTransport

HANG_TIMEOUT_S = 1.0


class Recording:
    """A scripted root model that remembers what it was shown."""

    def __init__(self, replies: Sequence[str]) -> None:
        self.replies = list(replies)
        self.seen: list[list[dict[str, str]]] = []

    def reply(self, messages: Sequence[dict[str, str]], model: str) -> str:
        self.seen.append(list(messages))
        return self.replies[min(len(self.seen) - 1, len(self.replies) - 1)]


@pytest.fixture(scope="module")
def image() -> str:
    litellm_module()  # imported up front: importing blocks the event loop for seconds
    return build_image(if_missing=True, progress=lambda line: None)


class Harness:
    def __init__(self, sim: Simulator, config: RuntimeConfig, system: ActorSystem,
                 worker_services: dict[str, Any] | None = None) -> None:
        self.sim, self.config, self.system = sim, config, system
        self.worker_services = worker_services or {}

    async def ask(self, question: str, context: str = "", **options: Any) -> Answer:
        root = await self.system.spawn(RLMAgent, pool="frontier", supervision="temporary")
        try:
            answer: Answer = await root.ask(
                Query(question=question, context=context, **options), timeout=300
            )
            return answer
        finally:
            await self.system.stop(root)


@pytest.fixture
async def harness(image: str, request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """``request.param`` (indirect): model -> injected error rate, and optionally
    ``"transport": "nats"`` and ``"hang": [models]`` (models that never answer within their
    pool's timeout, ``HANG_TIMEOUT_S`` per attempt and one retry)."""
    served = {"sim/wafer-small": "wafer", "sim/h100-open": "h100", "sim/frontier": "frontier"}
    profiles = {m: p for m, p in default_profiles().items() if m in served}
    marker = request.node.get_closest_marker("root_replies")
    if marker is not None:
        script = marker.args[0]
        if isinstance(script, Recording):
            script.seen.clear()  # a parametrized test runs the same script again
        frontier = profiles["sim/frontier"]
        assert isinstance(frontier.responder, RoutingResponder)
        # the root's chats (with a system message) get the script; sub-calls still get labels
        frontier.responder = RoutingResponder(frontier.responder.label, root=script)
    options = dict(getattr(request, "param", None) or {})
    transport = options.pop("transport", "memory")
    routing = options.pop("routing", None)  # a [routing] table: the learning router
    hang = list(options.pop("hang", []))
    hanging = [served[m] for m in hang]
    for model in hang:
        profiles[model].ttft_s = 1e6
    for name, rate in options.items():
        profiles[name].error_rate = rate
    async with Simulator(profiles, time_scale=0.05) as sim:
        config = parse_config(tomllib.loads(
            profiles_toml(profiles, sim.base_url, modules=["actors"])
        ))
        config = msgspec.structs.replace(config, pools={
            name: msgspec.structs.replace(pool, timeout_s=HANG_TIMEOUT_S, max_retries=1)
            if name in hanging else pool for name, pool in config.pools.items()})
        if routing is not None:
            config = msgspec.structs.replace(config, routing=RoutingConfig(**routing))
        pools = list(served.values())
        services, pool_services = agent_services(config, pools)
        for pool in pool_services.values():
            pool["llm"].backoff_s = 0.01
        async with AsyncExitStack() as stack:
            if transport == "nats":
                server: NatsServer = request.getfixturevalue("nats_server")
                namespace = f"rlm{uuid.uuid4().hex[:8]}"
                worker = await stack.enter_async_context(Worker(
                    config, pools, nats=server.url, namespace=namespace, services=services,
                    pool_services=pool_services))
                system = await stack.enter_async_context(
                    ActorSystem(nats=server.url, namespace=namespace))
            else:
                bus = MemoryBus()
                worker_t, system_t = MemoryTransport(bus=bus), MemoryTransport(bus=bus)
                stack.push_async_callback(system_t.close)
                stack.push_async_callback(worker_t.close)
                worker = await stack.enter_async_context(Worker(
                    config, pools, transport=worker_t, services=services,
                    pool_services=pool_services))
                system = await stack.enter_async_context(ActorSystem(system_t))
            yield Harness(sim, config, system, services)
            assert len(worker.node.cells) == 1, "actors leaked on the worker"
            assert len(system.node.cells) == 1
    client = docker.from_env()
    try:
        mine = f"{OWNER_LABEL}={default_owner()}"
        assert not client.containers.list(all=True, filters={"label": mine}), "sandbox leaked"
    finally:
        client.close()


