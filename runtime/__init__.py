"""The engine: nodes, workers, the actor system entry point, pools, the CLI."""

from ._config import PoolConfig as PoolConfig
from ._config import RuntimeConfig as RuntimeConfig
from ._config import load_config as load_config
from ._config import parse_config as parse_config
from ._nats_server import NatsServer as NatsServer
from ._node import Node as Node
from ._system import ActorSystem as ActorSystem
from ._system import Worker as Worker
from .errors import ClassNotServed as ClassNotServed
from .errors import NatsServerError as NatsServerError
from .errors import NoWorkerForPool as NoWorkerForPool
from .errors import RuntimeConfigError as RuntimeConfigError

__all__ = (
    "ActorSystem",
    "ClassNotServed",
    "NatsServer",
    "NatsServerError",
    "NoWorkerForPool",
    "Node",
    "PoolConfig",
    "RuntimeConfig",
    "RuntimeConfigError",
    "Worker",
    "load_config",
    "parse_config",
)
