"""``MemoryTransport``: the transport contract in one process (tests, embedded single-process use).

Several ``MemoryTransport`` objects on one ``MemoryBus`` talk to each other as separate nodes
would over NATS. Envelopes are encoded to bytes and decoded again on every hop, so what works
here also survives the wire.

Each subscription has its own task reading an unbounded memory object stream: publishing never
blocks (as on NATS, where the client buffers), and a handler that cannot keep up grows its
backlog in memory. Offloaded payloads follow ``NatsTransport``'s rule (``request`` deletes its own
request blob once answered and the reply's blob once restored; subscribers never delete); blobs
older than ``MemoryBus.blob_max_age`` are dropped at the next ``put_blob``.
"""

from __future__ import annotations

import collections
import logging
import math
import re
import time
from typing import Any

import anyio
import msgspec

from ._contract import (
    DEFAULT_BLOB_THRESHOLD,
    DEFAULT_NAMESPACE,
    DeadLetters,
    Handler,
    KeyValue,
    Subscription,
    Transport,
    WorkItem,
    WorkQueue,
)
from ._envelope import (
    DECODE_ERRORS,
    Envelope,
    ErrorInfo,
    Kind,
    decode_envelope,
    encode_envelope,
    error_envelope,
    new_id,
)
from ._subjects import check_subject, subject_matches
from ._tasks import HostedTaskGroup
from .errors import BlobNotFound, NoResponders, NotConnected, RequestTimeout

log = logging.getLogger("heterarch.transport")


class _Sub:
    def __init__(self, subject: str, queue: str | None, deliver: Any) -> None:
        self.subject = subject
        self.queue = queue
        self.deliver = deliver  # (data, reply) -> None


class _Queue:
    def __init__(self) -> None:
        self.ready: collections.deque[tuple[str, bytes, int]] = collections.deque()
        self.pending: dict[str, tuple[bytes, int, float]] = {}  # id -> (data, deliveries, due)
        self.changed = anyio.Event()

    def notify(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()


class MemoryBus:
    """The shared in-process "server": subscriptions, work queues, buckets and blobs."""

    def __init__(self, *, blob_max_age: float = 24 * 3600.0) -> None:
        self.subs: list[_Sub] = []
        self.queues: dict[str, _Queue] = {}
        self.buckets: dict[str, dict[str, tuple[bytes, float]]] = {}
        self.blobs: dict[str, bytes] = {}
        self.blob_max_age = blob_max_age
        self._blob_times: dict[str, float] = {}
        self._rr = 0

    def put_blob(self, ref: str, data: bytes) -> None:
        now = time.monotonic()
        expired = [r for r, at in self._blob_times.items() if now - at > self.blob_max_age]
        for r in expired:
            self.blobs.pop(r, None)
            self._blob_times.pop(r, None)
        self.blobs[ref] = data
        self._blob_times[ref] = now

    def delete_blob(self, ref: str) -> None:
        self.blobs.pop(ref, None)
        self._blob_times.pop(ref, None)

    def route(self, subject: str, data: bytes, reply: str) -> int:
        """Deliver to every plain subscriber and one member of each queue group."""
        delivered = 0
        groups: dict[str, list[_Sub]] = {}
        for sub in list(self.subs):
            if not subject_matches(sub.subject, subject):
                continue
            if sub.queue is None:
                sub.deliver(data, reply)
                delivered += 1
            else:
                groups.setdefault(sub.queue, []).append(sub)
        for members in groups.values():
            self._rr += 1
            members[self._rr % len(members)].deliver(data, reply)
            delivered += 1
        return delivered

    def queue(self, name: str) -> _Queue:
        q = self.queues.get(name)
        if q is None:
            q = self.queues[name] = _Queue()
        return q


class _MemorySubscription(Subscription):
    def __init__(self, transport: MemoryTransport, sub: _Sub, stream: Any) -> None:
        self.subject = sub.subject
        self._transport = transport
        self._sub = sub
        self._stream = stream

    async def unsubscribe(self) -> None:
        if self._sub in self._transport.bus.subs:
            self._transport.bus.subs.remove(self._sub)
        self._transport._subs.discard(self)
        self._stream.close()


class _MemoryWorkItem(WorkItem):
    def __init__(self, queue: _Queue, item_id: str, data: bytes, env: Envelope, n: int) -> None:
        self._queue = queue
        self._id = item_id
        self._data = data
        self.envelope = env
        self.deliveries = n

    async def ack(self) -> None:
        self._queue.pending.pop(self._id, None)

    async def term(self) -> None:
        self._queue.pending.pop(self._id, None)

    async def nak(self, delay: float | None = None) -> None:
        entry = self._queue.pending.get(self._id)
        if entry is not None:
            self._queue.pending[self._id] = (entry[0], entry[1], time.monotonic() + (delay or 0))
            self._queue.notify()

    async def in_progress(self) -> None:
        entry = self._queue.pending.get(self._id)
        if entry is not None:
            self._queue.pending[self._id] = (entry[0], entry[1], time.monotonic() + self._ack_wait)

    _ack_wait = 30.0


class _MemoryWorkQueue(WorkQueue):
    def __init__(self, transport: MemoryTransport, pool: str, ack_wait: float,
                 max_deliver: int) -> None:
        self.pool = pool
        self._transport = transport
        self._queue = transport.bus.queue(f"{transport.namespace}.{pool}")
        self._ack_wait = ack_wait
        self._max_deliver = max_deliver

    def _redeliver_due(self) -> float:
        """Move expired pending items back to ready; return seconds to the next expiry."""
        now = time.monotonic()
        next_due = math.inf
        for item_id, (data, n, due) in list(self._queue.pending.items()):
            if due <= now:
                del self._queue.pending[item_id]
                if n < self._max_deliver:
                    self._queue.ready.append((item_id, data, n))
            else:
                next_due = min(next_due, due - now)
        return next_due

    async def fetch(self, *, timeout: float) -> WorkItem | None:
        deadline = time.monotonic() + timeout
        while True:
            self._transport._check()
            wait = self._redeliver_due()
            if self._queue.ready:
                item_id, data, n = self._queue.ready.popleft()
                n += 1
                self._queue.pending[item_id] = (data, n, time.monotonic() + self._ack_wait)
                env = await self._transport._restore(decode_envelope(data), delete=False)
                item = _MemoryWorkItem(self._queue, item_id, data, env, n)
                item._ack_wait = self._ack_wait
                return item
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            with anyio.move_on_after(min(remaining, wait)):
                await self._queue.changed.wait()

    async def close(self) -> None:
        return None


class _MemoryKeyValue(KeyValue):
    def __init__(self, store: dict[str, tuple[bytes, float]], bucket: str,
                 ttl: float | None) -> None:
        self.bucket = bucket
        self._store = store
        self._ttl = ttl

    def _live(self, key: str) -> bytes | None:
        entry = self._store.get(key)
        if entry is None:
            return None
        value, at = entry
        if self._ttl is not None and time.monotonic() - at > self._ttl:
            del self._store[key]
            return None
        return value

    async def put(self, key: str, value: bytes) -> None:
        self._store[key] = (bytes(value), time.monotonic())

    async def get(self, key: str) -> bytes | None:
        return self._live(key)

    async def delete(self, key: str) -> None:
        self._store.pop(key, None)

    async def create(self, key: str, value: bytes) -> bytes | None:
        existing = self._live(key)
        if existing is not None:
            return existing
        self._store[key] = (bytes(value), time.monotonic())
        return None

    async def items(self, prefix: str = "") -> dict[str, bytes]:
        out = {}
        for key in list(self._store):
            if not key.startswith(prefix):
                continue
            value = self._live(key)
            if value is not None:
                out[key] = value
        return out


class MemoryTransport(Transport):
    """The transport contract within one process. See the module docstring."""

    def __init__(
        self,
        *,
        bus: MemoryBus | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        blob_threshold: int = DEFAULT_BLOB_THRESHOLD,
    ) -> None:
        self.bus = bus or MemoryBus()
        self.namespace = namespace
        self.blob_threshold = blob_threshold
        self.dead_letters = DeadLetters()
        self._connected = False
        self._tasks: HostedTaskGroup | None = None
        self._subs: set[_MemorySubscription] = set()

    # -- lifecycle ------------------------------------------------------------------------------
    async def connect(self) -> None:
        if self._connected:
            return
        self._tasks = HostedTaskGroup("MemoryTransport")
        await self._tasks.open()
        self._connected = True

    async def close(self) -> None:
        if not self._connected:
            return
        self._connected = False
        for sub in list(self._subs):
            await sub.unsubscribe()
        self._subs.clear()
        assert self._tasks is not None
        await self._tasks.close()

    @property
    def is_connected(self) -> bool:
        return self._connected

    def _check(self) -> None:
        if not self._connected:
            raise NotConnected("MemoryTransport")

    # -- messages -------------------------------------------------------------------------------
    async def publish(self, subject: str, env: Envelope) -> None:
        self._check()
        check_subject(subject)
        data = encode_envelope(await self._offload(env))
        self.bus.route(subject, data, env.reply_to)

    async def publish_raw(self, subject: str, data: bytes, *, reply: str = "") -> None:
        """Publish bytes as they are (tests and tools: e.g. malformed input)."""
        self._check()
        check_subject(subject)
        self.bus.route(subject, bytes(data), reply)

    async def request(self, subject: str, env: Envelope, *, timeout: float) -> Envelope:
        self._check()
        check_subject(subject)
        sent = await self._offload(env)
        reply = await self._request_bytes(subject, encode_envelope(sent), timeout)
        if sent.blob:  # answered, so the responder has read it
            self.bus.delete_blob(sent.blob)
        return reply

    async def request_raw(self, subject: str, data: bytes, *, timeout: float) -> Envelope:
        """Request with raw bytes as the body; the reply is decoded as an envelope."""
        self._check()
        check_subject(subject)
        return await self._request_bytes(subject, bytes(data), timeout)

    async def _request_bytes(self, subject: str, data: bytes, timeout: float) -> Envelope:
        inbox = f"_INBOX.{new_id()}"
        send, receive = anyio.create_memory_object_stream[bytes](1)

        def on_reply(reply_data: bytes, _reply: str) -> None:
            try:
                send.send_nowait(reply_data)
            except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass

        sub = _Sub(inbox, None, on_reply)
        self.bus.subs.append(sub)
        try:
            if self.bus.route(subject, data, inbox) == 0:
                raise NoResponders(subject)
            with anyio.move_on_after(timeout):
                raw = await receive.receive()
                return await self._restore(decode_envelope(raw), delete=True)
            raise RequestTimeout(subject, timeout)
        finally:
            self.bus.subs.remove(sub)
            send.close()
            receive.close()

    async def subscribe(
        self, subject: str, handler: Handler, *, queue: str | None = None
    ) -> Subscription:
        self._check()
        check_subject(subject, wildcards=True)
        send, receive = anyio.create_memory_object_stream[tuple[bytes, str]](math.inf)

        def deliver(data: bytes, reply: str) -> None:
            try:
                send.send_nowait((data, reply))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass

        sub = _Sub(subject, queue, deliver)
        self.bus.subs.append(sub)
        handle = _MemorySubscription(self, sub, send)
        self._subs.add(handle)
        assert self._tasks is not None
        self._tasks.start_soon(self._pump, subject, receive, handler)
        return handle

    async def _pump(self, subject: str, receive: Any, handler: Handler) -> None:
        async with receive:
            async for data, reply in receive:
                await self._dispatch(subject, data, reply, handler)

    async def _dispatch(self, subject: str, data: bytes, reply: str, handler: Handler) -> None:
        try:
            env = decode_envelope(data)
        except DECODE_ERRORS as exc:
            self.dead_letters.record(subject, "malformed", str(exc), len(data))
            if reply:
                bad = Envelope(id="", kind=Kind.ERROR)
                err = error_envelope(bad, ErrorInfo("MalformedEnvelope", f"not an envelope: {exc}"))
                self.bus.route(reply, encode_envelope(err), "")
            return
        if env.blob:
            try:
                env = await self._restore(env, delete=False)
            except BlobNotFound as exc:
                self.dead_letters.record(subject, "blob-missing", str(exc), len(data))
                return
        if reply and env.reply_to != reply:
            env = msgspec.structs.replace(env, reply_to=reply)
        try:
            await handler(env)
        except Exception as exc:
            log.exception("handler for %s raised", subject)
            self.dead_letters.record(subject, "handler-error", repr(exc), len(data))

    # -- work queues ----------------------------------------------------------------------------
    async def enqueue(self, pool: str, env: Envelope, *, owner: str = "") -> None:
        self._check()
        check_subject(f"{self.namespace}.spawn.{pool}")
        data = encode_envelope(await self._offload(env))
        q = self.bus.queue(f"{self.namespace}.{pool}")
        q.ready.append((new_id(), data, 0))
        q.notify()

    async def work_queue(
        self, pool: str, *, ack_wait: float = 30.0, max_deliver: int = 5
    ) -> WorkQueue:
        self._check()
        check_subject(f"{self.namespace}.spawn.{pool}")
        return _MemoryWorkQueue(self, pool, ack_wait, max_deliver)

    # -- key-value ------------------------------------------------------------------------------
    async def key_value(self, bucket: str, *, ttl: float | None = None) -> KeyValue:
        self._check()
        if not re.fullmatch(r"[A-Za-z0-9_-]+", bucket):
            raise ValueError(f"invalid bucket name {bucket!r}: letters, digits, '-', '_'")
        store = self.bus.buckets.setdefault(f"{self.namespace}_{bucket}", {})
        return _MemoryKeyValue(store, bucket, ttl)

    # -- blobs ----------------------------------------------------------------------------------
    async def put_blob(self, data: bytes, *, name: str | None = None) -> str:
        self._check()
        ref = name or new_id()
        self.bus.put_blob(ref, bytes(data))
        return ref

    async def get_blob(self, ref: str) -> bytes:
        self._check()
        try:
            return self.bus.blobs[ref]
        except KeyError:
            raise BlobNotFound(ref) from None

    async def delete_blob(self, ref: str) -> None:
        self.bus.delete_blob(ref)
