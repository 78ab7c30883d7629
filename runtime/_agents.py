"""The services built-in agents need on a node: model clients, the router, sandboxes, pools.

``agent_services(config, served)`` configures a Worker or ActorSystem to host agents; the node's
actors then see them, typed, as ``ctx.agent_services`` (``actors.agents.AgentServices``: the
Protocols the agents' package owns, satisfied here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

import msgspec

from actors.agents._ports import AgentServices, PoolInfo
from actors.agents._prompts import SANDBOX_IMPORTS
from sandbox import Sandbox

from ._config import PoolConfig, RuleConfig, RuntimeConfig, SandboxConfig
from ._models.call_cache import CALLS_BUCKET, CALLS_TTL_S, CallCache
from ._models.content import learned_router_for
from ._models.learned import LearnedRouter
from ._models.llm import LLMClient
from ._models.routing import (
    BudgetAwareRouter,
    ChainRouter,
    ComplexityRouter,
    Router,
    RouteService,
    Rule,
    StaticRouter,
)
from ._warm import WarmSandboxes
from .errors import RuntimeConfigError

if TYPE_CHECKING:
    from transports import Transport

    from ._core.node import Node


def sandbox_factory(kind: str | SandboxConfig) -> Callable[[], Sandbox]:
    """``docker`` (isolated, the default) or ``process`` (trusted code only: NOT isolated);
    a ``SandboxConfig`` also sets the Docker limits and runtime (``[sandbox]``)."""
    settings = kind if isinstance(kind, SandboxConfig) else None
    kind = settings.kind if settings is not None else kind
    if kind == "docker":
        from sandbox import DockerSandbox

        if settings is None or settings == SandboxConfig():
            return DockerSandbox
        options: dict[str, Any] = {"memory": settings.memory, "cpus": settings.cpus,
                                   "pids": settings.pids, "runtime": settings.runtime or None}
        if settings.image:
            options["image"] = settings.image
        return partial(DockerSandbox, **options)
    if kind == "process":
        from sandbox import ProcessSandbox

        return ProcessSandbox
    raise RuntimeConfigError(f"sandbox must be 'docker' or 'process', not {kind!r}")


def agent_services(
    config: RuntimeConfig,
    served: Iterable[str] = (),
    *,
    router: Router | None = None,
    learned: str | Path | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``(services, pool_services)`` for a Worker or ActorSystem hosting RLM/LLM agents.

    The served pools with a model (where RLM agents run) share one ``WarmSandboxes``: a
    sandbox is started ahead for the next agent. ``learned``: a router model from ``heterarch
    route fit``; it decides plain sub-calls it can judge, the complexity router the rest (and
    it keeps the live statistics)."""
    complexity = ComplexityRouter(config.pools)
    chosen: Router = router or BudgetAwareRouter(complexity)
    if learned is not None:
        chosen = ChainRouter([LearnedRouter.load(learned, config.pools), chosen])
    learner = None
    if config.routing is not None and router is None:  # the quality target decides first
        settings = config.routing
        quality = learned_router_for(
            config.pools, model_path=settings.model, labels_path=settings.labels,
            shadow_fraction=settings.shadow_fraction, refit_every=settings.refit_every,
            target=settings.quality_target or None, tolerance=settings.tolerance,
            stats=complexity.stats)
        learner = quality.learner
        chosen = ChainRouter([quality, chosen])
    if config.rules:  # the config's static rules first (a pool per depth, say)
        chosen = ChainRouter([StaticRouter([_rule(r) for r in config.rules]), chosen])
    route = RouteService(chosen, getattr(router, "stats", None) or complexity.stats,
                         pools=config.pools, learner=learner)
    factory = sandbox_factory(
        msgspec.structs.replace(config.sandbox_settings, kind=config.sandbox))
    services: dict[str, Any] = {
        "pools": dict(config.pools),
        "route": route,
        "sandbox_factory": factory,
    }
    pool_services: dict[str, dict[str, Any]] = {}
    warm: WarmSandboxes | None = None
    for name in served:
        pool = config.pool(name)
        if pool.model:
            warm = warm or WarmSandboxes(factory, warmup=SANDBOX_IMPORTS)
            pool_services[name] = {"llm": LLMClient(pool), "sandbox_factory": warm}
    return services, pool_services


def _rule(rule: RuleConfig) -> Rule:
    return Rule(rule.pool, tag=rule.tag, pattern=rule.pattern, depth=rule.depth, kind=rule.kind)


def pool_info(pool: PoolConfig, window: int | None = None) -> PoolInfo:
    """What an agent may know of ``pool`` (unknown prices: 0). ``window``: its context window
    as the router knows it (the config's, else litellm's model map)."""
    return PoolInfo(
        name=pool.name, hardware=pool.hardware, model=pool.model, tier=pool.tier,
        description=pool.description, input_price_per_mtok=pool.input_price_per_mtok or 0.0,
        output_price_per_mtok=pool.output_price_per_mtok or 0.0,
        max_concurrency=pool.max_concurrency, timeout_s=pool.timeout_s,
        max_retries=pool.max_retries, modalities=tuple(pool.modalities),
        context_window=pool.context_window if window is None else window,
    )


class TransportBlobs:
    """The blob store of a transport, and nothing else of it."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def put_blob(self, data: bytes, *, name: str | None = None) -> str:
        return await self._transport.put_blob(data, name=name)

    async def get_blob(self, ref: str) -> bytes:
        return await self._transport.get_blob(ref)

    async def delete_blob(self, ref: str) -> None:
        await self._transport.delete_blob(ref)


_hosted: WeakKeyDictionary[Node, dict[str, AgentServices]] = WeakKeyDictionary()
_call_caches: WeakKeyDictionary[Node, CallCache] = WeakKeyDictionary()


def node_call_cache(node: Node) -> CallCache:
    """The node's cache of model answers, in its transport's ``calls`` bucket (one per node,
    shared by the model clients it hosts; keys name the pool)."""
    cache = _call_caches.get(node)
    if cache is None:
        transport = node.transport
        cache = _call_caches[node] = CallCache(
            lambda: transport.key_value(CALLS_BUCKET, ttl=CALLS_TTL_S))
    return cache


def hosted_agent_services(node: Node, pool: str) -> AgentServices:
    """The ``AgentServices`` of an actor on ``pool`` hosted by ``node`` (built once per pool),
    from the services the node was configured with."""
    by_pool = _hosted.setdefault(node, {})
    found = by_pool.get(pool)
    if found is None:
        found = by_pool[pool] = _build(node, pool)
    return found


def _build(node: Node, pool: str) -> AgentServices:
    def service(name: str) -> Any:
        found = node.pool_services.get(pool, {}).get(name)
        return node.services.get(name) if found is None else found

    # every pool of the config where the node was given it, else the pools it serves
    pools: Mapping[str, PoolConfig] = service("pools") or node.pools
    route: RouteService | None = service("route")
    factory = service("sandbox_factory")
    sandboxes: WarmSandboxes | None = None
    if isinstance(factory, WarmSandboxes):
        sandboxes = factory
    elif factory is not None:  # a plain factory: a sandbox started when an agent takes it
        sandboxes = WarmSandboxes(factory)
    llm: LLMClient | None = service("llm")
    if isinstance(llm, LLMClient) and llm.cache is None:
        llm.cache = node_call_cache(node)
    return AgentServices(
        pool=pool, blobs=TransportBlobs(node.transport),
        pools={name: pool_info(config, route.windows.get(name) if route else None)
               for name, config in pools.items()},
        llm=llm, router=route, sandboxes=sandboxes,
    )
