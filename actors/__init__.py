"""The programming model: actors, references, messages, supervision. No I/O of its own."""

from ._actor import Actor as Actor
from ._actor import Handler as Handler
from ._agent_messages import Answer as Answer
from ._agent_messages import Budget as Budget
from ._agent_messages import ImageRef as ImageRef
from ._agent_messages import LLMReply as LLMReply
from ._agent_messages import PoolUsage as PoolUsage
from ._agent_messages import Prompt as Prompt
from ._agent_messages import Query as Query
from ._agent_messages import RunProgress as RunProgress
from ._agent_messages import merge_usage as merge_usage
from ._context import Context as Context
from ._images import store_image as store_image
from ._llm_agent import LLMAgent as LLMAgent
from ._messages import Ask as Ask
from ._messages import ChildExit as ChildExit
from ._messages import Inbox as Inbox
from ._messages import Terminated as Terminated
from ._messages import message_type_name as message_type_name
from ._messages import reply_type_of as reply_type_of
from ._ref import DEFAULT_ASK_TIMEOUT as DEFAULT_ASK_TIMEOUT
from ._ref import ActorRef as ActorRef
from ._ref import Address as Address
from ._ref import Messenger as Messenger
from ._rlm import RLMAgent as RLMAgent
from ._supervision import Backoff as Backoff
from ._supervision import Restart as Restart
from ._supervision import RestartIntensity as RestartIntensity
from ._supervision import Strategy as Strategy
from ._supervision import SupervisorStrategy as SupervisorStrategy
from .errors import ActorDead as ActorDead
from .errors import AskTimeout as AskTimeout
from .errors import BudgetExceeded as BudgetExceeded
from .errors import HeterarchError as HeterarchError
from .errors import InvalidImage as InvalidImage
from .errors import InvalidMessage as InvalidMessage
from .errors import MailboxFull as MailboxFull
from .errors import MessageNotEncodable as MessageNotEncodable
from .errors import RemoteError as RemoteError
from .errors import ReplyNotEncodable as ReplyNotEncodable
from .errors import SpawnFailed as SpawnFailed
from .errors import Undeliverable as Undeliverable

__all__ = (
    "DEFAULT_ASK_TIMEOUT",
    "Actor",
    "ActorDead",
    "ActorRef",
    "Address",
    "Answer",
    "Ask",
    "AskTimeout",
    "Backoff",
    "Budget",
    "BudgetExceeded",
    "ChildExit",
    "Context",
    "Handler",
    "HeterarchError",
    "ImageRef",
    "Inbox",
    "InvalidImage",
    "InvalidMessage",
    "LLMAgent",
    "LLMReply",
    "MailboxFull",
    "MessageNotEncodable",
    "Messenger",
    "PoolUsage",
    "Prompt",
    "Query",
    "RLMAgent",
    "RemoteError",
    "ReplyNotEncodable",
    "Restart",
    "RestartIntensity",
    "RunProgress",
    "SpawnFailed",
    "Strategy",
    "SupervisorStrategy",
    "Terminated",
    "Undeliverable",
    "merge_usage",
    "message_type_name",
    "reply_type_of",
    "store_image",
)
