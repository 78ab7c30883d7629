"""The built-in agents (the recursive RLM agent and the plain LLM agent) and their messages.

A room of their own: they use the programming model of ``actors`` and reach the engine only
through the ``Context`` the runtime hands them; they never import ``runtime``.
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
from ._messages import merge_usage as merge_usage
from ._rlm import RLMAgent as RLMAgent

__all__ = (
    "Answer",
    "Budget",
    "ImageRef",
    "LLMAgent",
    "LLMReply",
    "PoolUsage",
    "Prompt",
    "Query",
    "RLMAgent",
    "RunProgress",
    "merge_usage",
    "store_image",
)
