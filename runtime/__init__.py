"""The engine: nodes, workers, the actor system entry point, pools, models, routing, tracing,
and ``RLM``, one call to a Recursive Language Model run."""

from ._agents import agent_services as agent_services
from ._config import PoolConfig as PoolConfig
from ._config import RuntimeConfig as RuntimeConfig
from ._config import load_config as load_config
from ._config import parse_config as parse_config
from ._core.node import Node as Node
from ._models.llm import Completion as Completion
from ._models.llm import ContextWindowExceeded as ContextWindowExceeded
from ._models.llm import LLMCallFailed as LLMCallFailed
from ._models.llm import LLMClient as LLMClient
from ._models.llm import LLMTimeout as LLMTimeout
from ._models.llm import MalformedResponse as MalformedResponse
from ._models.llm import PoolOverloaded as PoolOverloaded
from ._models.llm import PoolUnreachable as PoolUnreachable
from ._models.llm import RateLimited as RateLimited
from ._models.routing import BudgetAwareRouter as BudgetAwareRouter
from ._models.routing import ChainRouter as ChainRouter
from ._models.routing import Complexity as Complexity
from ._models.routing import ComplexityRouter as ComplexityRouter
from ._models.routing import NoPoolFits as NoPoolFits
from ._models.routing import PoolStats as PoolStats
from ._models.routing import PromptTooLong as PromptTooLong
from ._models.routing import RouteDecision as RouteDecision
from ._models.routing import Router as Router
from ._models.routing import RouteService as RouteService
from ._models.routing import Rule as Rule
from ._models.routing import StaticRouter as StaticRouter
from ._models.routing import Task as Task
from ._models.routing import estimate_complexity as estimate_complexity
from ._nats_server import NatsCluster as NatsCluster
from ._nats_server import NatsServer as NatsServer
from ._observe.tracing import configure_tracing as configure_tracing
from ._rlm import RLM as RLM
from ._rlm import read_log as read_log
from ._system import ActorSystem as ActorSystem
from ._system import Worker as Worker
from .errors import ClassNotServed as ClassNotServed
from .errors import ContextNotText as ContextNotText
from .errors import NatsServerError as NatsServerError
from .errors import NodeFailed as NodeFailed
from .errors import NoWorkerForPool as NoWorkerForPool
from .errors import RuntimeConfigError as RuntimeConfigError
from .errors import UnknownPool as UnknownPool

__all__ = (
    "RLM",
    "ActorSystem",
    "BudgetAwareRouter",
    "ChainRouter",
    "ClassNotServed",
    "Completion",
    "Complexity",
    "ComplexityRouter",
    "ContextNotText",
    "ContextWindowExceeded",
    "LLMCallFailed",
    "LLMClient",
    "LLMTimeout",
    "MalformedResponse",
    "NatsCluster",
    "NatsServer",
    "NatsServerError",
    "NoPoolFits",
    "NoWorkerForPool",
    "Node",
    "NodeFailed",
    "PoolConfig",
    "PoolOverloaded",
    "PoolStats",
    "PoolUnreachable",
    "PromptTooLong",
    "RateLimited",
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
    "estimate_complexity",
    "load_config",
    "parse_config",
    "read_log",
)
