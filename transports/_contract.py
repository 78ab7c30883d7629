"""The transport contract: what the runtime needs from a message bus.

Backends: ``NatsTransport`` (the real one, many hosts) and ``MemoryTransport`` (one process).
Callers hold a ``Transport``, never a backend. Every behavioural test runs on both.

Semantics every backend keeps:

* ``publish``/``request`` refuse invalid subjects with ``InvalidSubject``.
* A payload larger than ``blob_threshold`` travels through the blob store; the receiving side
  restores ``Envelope.payload`` (and clears ``Envelope.blob``) before a handler sees it.
* Handlers of one subscription run one at a time, in arrival order. A handler that raises is
  logged and counted in ``dead_letters`` (reason ``handler-error``); the subscription goes on.
* Bytes that are not an ``Envelope`` are counted in ``dead_letters`` (reason ``malformed``); if
  the sender asked (a reply subject is known) it gets an ``Kind.ERROR`` envelope whose
  ``ErrorInfo.type`` is ``"MalformedEnvelope"``. Nothing crashes.
* A request's handler sees ``Envelope.reply_to`` set to the subject to ``publish`` the reply to.
* ``request`` raises ``NoResponders`` at once when nobody subscribes, ``RequestTimeout`` (also a
  ``TimeoutError``) when no reply arrives in time.
* Work queues are durable and at-least-once: an item that is not acked within ``ack_wait`` (the
  consumer died, say) is delivered again, up to ``max_deliver`` times, to any consumer of the pool.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

import msgspec

from ._envelope import Envelope
from .errors import TransportError

Handler = Callable[[Envelope], Awaitable[None]]

DEFAULT_NAMESPACE = "heterarch"
DEFAULT_BLOB_THRESHOLD = 512 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    subject: str
    reason: str
    detail: str
    at: float
    size: int


class DeadLetters:
    """Counts of what could not be delivered or handled, by reason, plus the most recent few."""

    def __init__(self, keep: int = 100) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.recent: collections.deque[DeadLetter] = collections.deque(maxlen=keep)

    def record(self, subject: str, reason: str, detail: str = "", size: int = 0) -> None:
        self.counts[reason] += 1
        self.recent.append(DeadLetter(subject, reason, detail[:500], time.time(), size))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class Subscription(ABC):
    subject: str

    @abstractmethod
    async def unsubscribe(self) -> None: ...


class WorkItem(ABC):
    """One delivery of a work-queue item. Settle it exactly once."""

    envelope: Envelope
    deliveries: int  # 1 on the first delivery
    #: The owner of the actor it asks for, as the bus vouches for it (the spawn subject's last
    #: token, which a principal may publish only for itself unless it is a worker); None where
    #: the transport has one trusted principal (in memory).
    owner: str | None = None

    @abstractmethod
    async def ack(self) -> None:
        """Done: never deliver it again."""

    @abstractmethod
    async def nak(self, delay: float | None = None) -> None:
        """Not done: deliver it again (after ``delay`` seconds), to this or another consumer."""

    @abstractmethod
    async def term(self) -> None:
        """Never deliver it again, although it was not done (poison, expired, refused)."""

    @abstractmethod
    async def in_progress(self) -> None:
        """Still working on it: restart the ack timer."""


class WorkQueue(ABC):
    """The consumer side of one pool's durable work queue (shared by all its consumers)."""

    pool: str

    @abstractmethod
    async def fetch(self, *, timeout: float) -> WorkItem | None:
        """Wait up to ``timeout`` seconds for one item; ``None`` if none came."""

    @abstractmethod
    async def close(self) -> None: ...


class KeyValue(ABC):
    """A bucket of keys to bytes. With a ``ttl``, a key not written again within it disappears."""

    bucket: str

    @abstractmethod
    async def put(self, key: str, value: bytes) -> None: ...

    @abstractmethod
    async def get(self, key: str) -> bytes | None: ...

    @abstractmethod
    async def delete(self, key: str) -> None: ...

    @abstractmethod
    async def create(self, key: str, value: bytes) -> bytes | None:
        """Store ``value`` only if ``key`` holds nothing (atomically): None if it was stored,
        else the value that was there first (compare-and-set for who wins a race)."""

    @abstractmethod
    async def items(self, prefix: str = "") -> dict[str, bytes]:
        """Every live key (that starts with ``prefix``) and its latest value."""


class Transport(ABC):
    """Moves envelopes between subjects; also work queues, key-value buckets and blobs.

    Subjects are dot-separated tokens. Work queues, buckets and blobs live under ``namespace``.
    """

    namespace: str
    blob_threshold: int
    dead_letters: DeadLetters
    #: How many times the connection came back after a loss (0 for a transport that never
    #: loses it). Peers learn it from heartbeats: what they sent us around then may be lost.
    reconnects: int = 0
    #: Who this transport is on the bus (the NATS user it authenticates as; '' for one trusted
    #: principal: in memory, or a server with no users). The actors its node spawns as roots are
    #: owned by it (``owner_of``), and only it (and workers) may reach their mailboxes.
    principal: str = ""
    _reconnect_callbacks: tuple[Callable[[], None], ...] = ()

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (no await, from the transport's task) each time it reconnects."""
        self._reconnect_callbacks = (*self._reconnect_callbacks, callback)

    def _notify_reconnected(self) -> None:
        for callback in self._reconnect_callbacks:
            callback()

    # -- lifecycle ------------------------------------------------------------------------------
    @abstractmethod
    async def connect(self) -> None: ...

    @abstractmethod
    async def close(self) -> None:
        """Flush what is buffered, unsubscribe, disconnect. Safe to call twice."""

    @property
    @abstractmethod
    def is_connected(self) -> bool: ...

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- messages -------------------------------------------------------------------------------
    @abstractmethod
    async def publish(self, subject: str, env: Envelope) -> None:
        """Fire and forget. If ``env.reply_to`` is set, receivers may answer there."""

    @abstractmethod
    async def request(self, subject: str, env: Envelope, *, timeout: float) -> Envelope:
        """Send and wait for exactly one reply envelope."""

    @abstractmethod
    async def subscribe(
        self, subject: str, handler: Handler, *, queue: str | None = None
    ) -> Subscription:
        """Call ``handler`` for each envelope on ``subject`` (``*`` and ``>`` wildcards allowed).

        With ``queue``, each envelope goes to one member of the queue group only.
        """

    async def flush(self, timeout: float = 5.0) -> None:  # noqa: B027 - optional hook
        """Wait until everything published so far reached the server."""

    # -- durable work queues (spawn requests) ---------------------------------------------------
    @abstractmethod
    async def enqueue(self, pool: str, env: Envelope, *, owner: str = "") -> None:
        """Store ``env`` durably in ``pool``'s work queue; returns once the store has it.
        ``owner``: the principal owning the actor requested (``WorkItem.owner``)."""

    @abstractmethod
    async def work_queue(
        self, pool: str, *, ack_wait: float = 30.0, max_deliver: int = 5
    ) -> WorkQueue:
        """Join ``pool``'s shared consumer."""

    # -- key-value ------------------------------------------------------------------------------
    @abstractmethod
    async def key_value(self, bucket: str, *, ttl: float | None = None) -> KeyValue:
        """Open (creating if needed) a bucket."""

    # -- blobs ----------------------------------------------------------------------------------
    @abstractmethod
    async def put_blob(self, data: bytes, *, name: str | None = None) -> str:
        """Store ``data``; returns its reference. Any size (chunked as the backend needs)."""

    @abstractmethod
    async def get_blob(self, ref: str) -> bytes:
        """Raises ``BlobNotFound``."""

    @abstractmethod
    async def delete_blob(self, ref: str) -> None: ...

    # -- payload offload, shared by the backends ------------------------------------------------
    async def _offload(self, env: Envelope) -> Envelope:
        """A payload above ``blob_threshold`` goes to the blob store; the envelope names it."""
        if len(env.payload) > self.blob_threshold:
            ref = await self.put_blob(env.payload)
            return msgspec.structs.replace(env, payload=b"", blob=ref)
        return env

    async def _restore(self, env: Envelope, *, delete: bool) -> Envelope:
        """Put an offloaded payload back; ``delete`` it from the store when read only once."""
        if not env.blob:
            return env
        payload = await self.get_blob(env.blob)
        if delete:
            with contextlib.suppress(TransportError):
                await self.delete_blob(env.blob)
        return msgspec.structs.replace(env, payload=payload, blob="")
