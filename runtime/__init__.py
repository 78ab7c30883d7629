"""The engine: nodes, workers, the actor system entry point, pools, models, routing, tracing."""

from ._agents import agent_services as agent_services
from ._config import PoolConfig as PoolConfig
from ._config import RuntimeConfig as RuntimeConfig
from ._config import load_config as load_config
from ._config import parse_config as parse_config
from ._core.node import Node as Node
from ._models.llm import Completion as Completion
from ._models.llm import LLMCallFailed as LLMCallFailed
from ._models.llm import LLMClient as LLMClient
from ._models.routing import BudgetAwareRouter as BudgetAwareRouter
from ._models.routing import ChainRouter as ChainRouter
from ._models.routing import ComplexityRouter as ComplexityRouter
from ._models.routing import PoolStats as PoolStats
from ._models.routing import RouteDecision as RouteDecision
from ._models.routing import Router as Router
from ._models.routing import RouteService as RouteService
from ._models.routing import Rule as Rule
from ._models.routing import StaticRouter as StaticRouter
from ._models.routing import Task as Task
from ._nats_server import NatsCluster as NatsCluster
from ._nats_server import NatsServer as NatsServer
from ._observe.tracing import configure_tracing as configure_tracing
from ._system import ActorSystem as ActorSystem
from ._system import Worker as Worker
from .errors import ClassNotServed as ClassNotServed
from .errors import NatsServerError as NatsServerError
from .errors import NodeFailed as NodeFailed
from .errors import NoWorkerForPool as NoWorkerForPool
from .errors import RuntimeConfigError as RuntimeConfigError
from .errors import UnknownPool as UnknownPool

__all__ = (
    "ActorSystem",
    "BudgetAwareRouter",
    "ChainRouter",
    "ClassNotServed",
    "Completion",
    "ComplexityRouter",
    "LLMCallFailed",
    "LLMClient",
    "NatsCluster",
    "NatsServer",
    "NatsServerError",
    "NoWorkerForPool",
    "Node",
    "NodeFailed",
    "PoolConfig",
    "PoolStats",
    "RouteDecision",
    "RouteService",
    "Router",
    "Rule",
    "RuntimeConfig",
    "RuntimeConfigError",
    "StaticRouter",
    "Task",
    "UnknownPool",
    "Worker",
    "agent_services",
    "configure_tracing",
    "load_config",
    "parse_config",
)
