"""The services built-in agents need on a node: model clients, the router, sandboxes, pools."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from actors.agents._rlm import SANDBOX_IMPORTS

from ._config import RuntimeConfig
from ._models.learned import LearnedRouter
from ._models.llm import LLMClient
from ._models.routing import (
    BudgetAwareRouter,
    ChainRouter,
    ComplexityRouter,
    Router,
    RouteService,
)
from ._warm import WarmSandboxes
from .errors import RuntimeConfigError


def sandbox_factory(kind: str) -> Callable[[], Any]:
    """``docker`` (isolated, the default) or ``process`` (trusted code only: NOT isolated)."""
    if kind == "docker":
        from sandbox import DockerSandbox

        return DockerSandbox
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
    route = RouteService(chosen, getattr(router, "stats", None) or complexity.stats,
                         pools=config.pools)
    services: dict[str, Any] = {
        "pools": dict(config.pools),
        "route": route,
        "sandbox_factory": sandbox_factory(config.sandbox),
    }
    pool_services: dict[str, dict[str, Any]] = {}
    warm: WarmSandboxes | None = None
    for name in served:
        pool = config.pool(name)
        if pool.model:
            warm = warm or WarmSandboxes(services["sandbox_factory"], warmup=SANDBOX_IMPORTS)
            pool_services[name] = {"llm": LLMClient(pool), "sandbox_factory": warm}
    return services, pool_services
