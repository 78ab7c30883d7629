"""The built-in agents (the recursive RLM agent and the plain LLM agent) and their messages.

A room of their own: they use the programming model of ``actors`` and reach the engine only
through ``ctx.agent_services`` (``AgentServices``: the Protocols in ``_ports`` that this package
owns and the engine satisfies); they never import ``runtime``.
"""

from ._images import store_image as store_image
from ._llm_agent import LLMAgent as LLMAgent
from ._messages import Answer as Answer
from ._messages import Budget as Budget
from ._messages import ImageRef as ImageRef
from ._messages import LLMReply as LLMReply
from ._messages import PoolUsage as PoolUsage
from ._messages import Prompt as Prompt
from ._messages import Query as Query
from ._messages import RunProgress as RunProgress
from ._messages import Step as Step
from ._messages import SubCall as SubCall
from ._messages import Usage as Usage
from ._messages import merge_usage as merge_usage
from ._messages import total_cost as total_cost
from ._messages import total_tokens as total_tokens
from ._ports import AgentSandbox as AgentSandbox
from ._ports import AgentServices as AgentServices
from ._ports import BlobStore as BlobStore
from ._ports import CompletionClient as CompletionClient
from ._ports import PoolInfo as PoolInfo
from ._ports import RouteStats as RouteStats
from ._ports import SandboxSource as SandboxSource
from ._ports import ServiceMissing as ServiceMissing
from ._ports import SubCallRouter as SubCallRouter
from ._rlm import RLMAgent as RLMAgent

__all__ = (
    "AgentSandbox",
    "AgentServices",
    "Answer",
    "BlobStore",
    "Budget",
    "CompletionClient",
    "ImageRef",
    "LLMAgent",
    "LLMReply",
    "PoolInfo",
    "PoolUsage",
    "Prompt",
    "Query",
    "RLMAgent",
    "RouteStats",
    "RunProgress",
    "SandboxSource",
    "ServiceMissing",
    "Step",
    "SubCall",
    "SubCallRouter",
    "Usage",
    "merge_usage",
    "store_image",
    "total_cost",
    "total_tokens",
)
