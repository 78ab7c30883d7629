"""The programming model: actors, references, messages, supervision. No I/O of its own."""

from ._actor import Actor as Actor
from ._actor import Handler as Handler
from ._context import Context as Context
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
from ._supervision import Backoff as Backoff
from ._supervision import Restart as Restart
from ._supervision import RestartIntensity as RestartIntensity
from ._supervision import Strategy as Strategy
from ._supervision import SupervisorStrategy as SupervisorStrategy
from .agents import Answer as Answer
from .agents import Budget as Budget
from .agents import ImageRef as ImageRef
from .agents import LLMAgent as LLMAgent
from .agents import LLMReply as LLMReply
from .agents import PoolUsage as PoolUsage
from .agents import Prompt as Prompt
from .agents import Query as Query
from .agents import RLMAgent as RLMAgent
from .agents import RunProgress as RunProgress
from .agents import Step as Step
from .agents import SubCall as SubCall
from .agents import merge_usage as merge_usage
from .agents import store_image as store_image
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
    "Step",
    "Strategy",
    "SubCall",
    "SupervisorStrategy",
    "Terminated",
    "Undeliverable",
    "merge_usage",
    "message_type_name",
    "reply_type_of",
    "store_image",
)
