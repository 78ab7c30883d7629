"""The engine: nodes, workers, the actor system entry point, pools, models, routing, tracing."""

from ._agents import agent_services as agent_services
from ._config import PoolConfig as PoolConfig
from ._config import RuntimeConfig as RuntimeConfig
from ._config import load_config as load_config
from ._config import parse_config as parse_config
from ._llm import Completion as Completion
from ._llm import LLMCallFailed as LLMCallFailed
from ._llm import LLMClient as LLMClient
from ._nats_server import NatsServer as NatsServer
from ._node import Node as Node
from ._routing import BudgetAwareRouter as BudgetAwareRouter
from ._routing import ChainRouter as ChainRouter
from ._routing import ComplexityRouter as ComplexityRouter
from ._routing import PoolStats as PoolStats
from ._routing import RouteDecision as RouteDecision
from ._routing import Router as Router
from ._routing import RouteService as RouteService
from ._routing import Rule as Rule
from ._routing import StaticRouter as StaticRouter
from ._routing import Task as Task
from ._simulator import Profile as Profile
from ._simulator import Simulator as Simulator
from ._system import ActorSystem as ActorSystem
from ._system import Worker as Worker
from ._tracing import configure_tracing as configure_tracing
from .errors import ClassNotServed as ClassNotServed
from .errors import NatsServerError as NatsServerError
from .errors import NoWorkerForPool as NoWorkerForPool
from .errors import RuntimeConfigError as RuntimeConfigError

__all__ = (
    "ActorSystem",
    "BudgetAwareRouter",
    "ChainRouter",
    "ClassNotServed",
    "Completion",
    "ComplexityRouter",
    "LLMCallFailed",
    "LLMClient",
    "NatsServer",
    "NatsServerError",
    "NoWorkerForPool",
    "Node",
    "PoolConfig",
    "PoolStats",
    "Profile",
    "RouteDecision",
    "RouteService",
    "Router",
    "Rule",
    "RuntimeConfig",
    "RuntimeConfigError",
    "Simulator",
    "StaticRouter",
    "Task",
    "Worker",
    "agent_services",
    "configure_tracing",
    "load_config",
    "parse_config",
)
