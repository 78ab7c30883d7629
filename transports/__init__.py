"""Move envelopes between addresses: the transport contract and its backends."""

from ._contract import DEFAULT_BLOB_THRESHOLD as DEFAULT_BLOB_THRESHOLD
from ._contract import DEFAULT_NAMESPACE as DEFAULT_NAMESPACE
from ._contract import DeadLetter as DeadLetter
from ._contract import DeadLetters as DeadLetters
from ._contract import Handler as Handler
from ._contract import KeyValue as KeyValue
from ._contract import Subscription as Subscription
from ._contract import Transport as Transport
from ._contract import WorkItem as WorkItem
from ._contract import WorkQueue as WorkQueue
from ._envelope import DECODE_ERRORS as DECODE_ERRORS
from ._envelope import Envelope as Envelope
from ._envelope import ErrorInfo as ErrorInfo
from ._envelope import Kind as Kind
from ._envelope import decode_envelope as decode_envelope
from ._envelope import decode_error as decode_error
from ._envelope import encode_envelope as encode_envelope
from ._envelope import encode_error as encode_error
from ._envelope import error_envelope as error_envelope
from ._envelope import new_id as new_id
from ._memory import MemoryBus as MemoryBus
from ._memory import MemoryTransport as MemoryTransport
from ._nats import ConnectOptions as ConnectOptions
from ._nats import NatsTransport as NatsTransport

__all__ = (
    "DECODE_ERRORS",
    "DEFAULT_BLOB_THRESHOLD",
    "DEFAULT_NAMESPACE",
    "ConnectOptions",
    "DeadLetter",
    "DeadLetters",
    "Envelope",
    "ErrorInfo",
    "Handler",
    "KeyValue",
    "Kind",
    "MemoryBus",
    "MemoryTransport",
    "NatsTransport",
    "Subscription",
    "Transport",
    "WorkItem",
    "WorkQueue",
    "decode_envelope",
    "decode_error",
    "encode_envelope",
    "encode_error",
    "error_envelope",
    "new_id",
)
