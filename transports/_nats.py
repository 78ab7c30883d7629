"""``NatsTransport``: the transport contract on a real NATS server (nats-py, JetStream).

Core NATS carries mailboxes and replies; a JetStream work-queue stream ``{ns}_spawn`` holds
spawn requests; KV buckets ``{ns}_{bucket}`` hold the node registry; the Object Store
``{ns}_blobs`` holds payloads above ``blob_threshold`` and explicit blobs (contexts).

Offloaded payloads (``blob_threshold``), who deletes them: ``request`` deletes the blob of its
own request once the reply came (the responder restored it before answering) and the blob of the
reply once restored (only the requester reads its inbox). Subscribers never delete: a published
envelope may reach many subscribers (wildcards, several nodes), and work items may be delivered
again. The Object Store's max age (``ConnectOptions.blob_max_age_s``, 24 h) is the safety net for
everything else.
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Any
from urllib.parse import urlparse

import anyio
import msgspec
import nats
import nats.errors
import nats.js.api
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from ._contract import (
    DEFAULT_BLOB_THRESHOLD,
    DEFAULT_NAMESPACE,
    DeadLetters,
    Handler,
    KeyValue,
    Subscription,
    Transport,
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
from ._nats_options import DEFAULT_INBOX_PREFIX
from ._nats_options import ConnectOptions as ConnectOptions
from ._nats_stores import _NatsKeyValue, _NatsWorkQueue
from ._subjects import check_subject, is_reply_subject, received_on, spawn_subject
from .errors import (
    BlobNotFound,
    ConnectFailed,
    NoResponders,
    NotConnected,
    RequestTimeout,
    TransportError,
)

log = logging.getLogger("heterarch.transport")

#: What one subscription may hold before its callback takes it; beyond, NATS drops (and we count
#: ``slow-consumer`` dead letters). The callbacks only queue into bounded mailboxes, so this is
#: reached only by a flood faster than a process can read.
SUBSCRIPTION_PENDING_MSGS = 100_000
SUBSCRIPTION_PENDING_BYTES = 128 * 1024 * 1024


class _NatsSubscription(Subscription):
    def __init__(self, subject: str, sub: Any) -> None:
        self.subject = subject
        self._sub = sub

    async def unsubscribe(self) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self._sub.unsubscribe()

class _Chunks(io.RawIOBase):
    """Where ``ObjectStore.get`` writes a blob: its chunks as they come, joined once."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.parts.append(bytes(b))
        return len(b)


class NatsTransport(Transport):
    """The transport contract over NATS. See the module docstring."""

    def __init__(
        self,
        options: ConnectOptions | None = None,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        blob_threshold: int = DEFAULT_BLOB_THRESHOLD,
    ) -> None:
        self.options = options or ConnectOptions()
        self.namespace = namespace
        self.blob_threshold = blob_threshold
        self.dead_letters = DeadLetters()
        self.nc: Client | None = None
        self.js: Any = None
        self.spawn_stream = f"{namespace}_spawn"
        self._spawn_stream_ready = False
        self._kv: dict[str, _NatsKeyValue] = {}
        self._objects: Any = None
        self._lock = anyio.Lock()
        self.reconnects = 0
        self.disconnects = 0
        self.replicas = max(1, self.options.replicas)
        self._slow_logged_at = -1e9
        self._dead_logged_at: dict[str, float] = {}

    # -- lifecycle ------------------------------------------------------------------------------
    async def connect(self) -> None:
        if self.nc is not None and self.nc.is_connected:
            return
        o = self.options
        kwargs: dict[str, Any] = {
            "servers": o.servers, "name": o.name, "connect_timeout": o.connect_timeout,
            "max_reconnect_attempts": o.max_reconnect_attempts,
            "reconnect_time_wait": o.reconnect_time_wait, "ping_interval": o.ping_interval,
            "pending_size": o.pending_size, "allow_reconnect": True,
            "error_cb": self._on_error, "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected, "inbox_prefix": self._inbox_prefix(),
        }
        for key in ("user", "password", "token", "nkeys_seed", "tls_hostname"):
            value = getattr(o, key)
            if value is not None:
                kwargs[key] = value
        if o.creds_file:
            kwargs["user_credentials"] = o.creds_file
        tls = o.ssl_context()
        if tls is not None:
            kwargs["tls"] = tls
        # The first connection must not wait forever (nats-py retries the pool forever unless
        # max_reconnect_attempts > 0): a probe tries each server twice and tells us why it
        # failed; then the real client connects with the reconnect policy asked for.
        bound = max(2 * o.connect_timeout * len(o.servers), 3.0)
        failures: list[Exception] = []

        async def on_probe_error(exc: Exception) -> None:
            failures.append(exc)

        probe = Client()
        try:
            with anyio.fail_after(bound):
                await probe.connect(**{**kwargs, "max_reconnect_attempts": 1,
                                       "allow_reconnect": False, "error_cb": on_probe_error,
                                       "disconnected_cb": None, "reconnected_cb": None})
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            with contextlib.suppress(Exception):
                await probe.close()
            # A refusal by the server (auth) says more than the resets of later attempts.
            said = [f for f in failures if isinstance(f, nats.errors.Error)]
            cause = (said or failures or [exc])[0]
            raise ConnectFailed(list(o.servers), str(cause) or type(cause).__name__) from None
        await probe.close()
        nc = Client()
        try:
            with anyio.fail_after(bound):
                await nc.connect(**kwargs)
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            with contextlib.suppress(Exception):
                await nc.close()
            raise ConnectFailed(list(o.servers), str(exc) or type(exc).__name__) from None
        self.nc = nc
        self.js = nc.jetstream()
        self.replicas = self._replicas_for(nc)

    def _replicas_for(self, nc: Client) -> int:
        """JetStream replicas: as configured, else the cluster's size (at most 3), else 1."""
        if self.options.replicas > 0:
            return self.options.replicas
        info: dict[str, Any] = getattr(nc, "_server_info", {}) or {}
        if not info.get("cluster"):
            return 1
        # The servers it tells us of, or (with no_advertise) the ones we were given.
        known = max(len(info.get("connect_urls") or []), len(self.options.servers))
        return max(1, min(3, known))

    def _inbox_prefix(self) -> str:
        """``_INBOX_{user}`` for a named user (its permissions allow only its own inboxes)."""
        o = self.options
        if o.inbox_prefix != DEFAULT_INBOX_PREFIX:
            return o.inbox_prefix
        user = self.principal
        return f"{DEFAULT_INBOX_PREFIX}_{user}" if user else DEFAULT_INBOX_PREFIX

    @property
    def principal(self) -> str:  # type: ignore[override]
        """The NATS user named in the options or the URLs ('' when none is)."""
        o = self.options
        return o.user or next((urlparse(s).username for s in o.servers if urlparse(s).username),
                              None) or ""

    async def close(self) -> None:
        nc, self.nc = self.nc, None
        if nc is None:
            return
        # Handles bound to this connection; a later connect() opens them again.
        self._kv.clear()
        self._objects = None
        self._spawn_stream_ready = False
        with contextlib.suppress(Exception):
            with anyio.move_on_after(5):
                await nc.drain()
        with contextlib.suppress(Exception):
            await nc.close()

    @property
    def is_connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    def _check(self) -> Client:
        if self.nc is None:
            raise NotConnected("NatsTransport")
        return self.nc

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, nats.errors.SlowConsumerError):
            # A flood beyond what this process takes in: the message is dropped (the
            # subscription's pending limits keep memory bounded). Count them, log now and then.
            self.dead_letters.record(exc.subject, "slow-consumer")
            now = anyio.current_time()
            if now - self._slow_logged_at > 5.0:
                self._slow_logged_at = now
                log.warning("nats: slow consumer on %s: dropping messages (%d so far)",
                            exc.subject, self.dead_letters.counts.get("slow-consumer", 0))
            return
        log.warning("nats: %s", exc)

    async def _on_disconnected(self) -> None:
        self.disconnects += 1
        if self.nc is None:  # we are closing
            return
        log.warning("nats: disconnected; publishes are buffered until it reconnects")

    async def _on_reconnected(self) -> None:
        self.reconnects += 1
        url = self.nc.connected_url if self.nc else None
        log.warning("nats: reconnected to %s", url.netloc if url else "?")
        self._notify_reconnected()

    async def flush(self, timeout: float = 5.0) -> None:
        nc = self._check()
        with contextlib.suppress(nats.errors.Error):
            await nc.flush(timeout=max(1, round(timeout)))

    # -- messages -------------------------------------------------------------------------------
    async def publish(self, subject: str, env: Envelope) -> None:
        nc = self._check()
        check_subject(subject)
        if len(env.payload) > self.blob_threshold:
            env = await self._offload(env)
        try:
            await nc.publish(subject, encode_envelope(env), reply=env.reply_to)
        except nats.errors.Error as exc:
            raise TransportError(f"publish to {subject!r} failed: {exc}") from exc

    async def publish_raw(self, subject: str, data: bytes, *, reply: str = "") -> None:
        """Publish bytes as they are (tests and tools: e.g. malformed input)."""
        nc = self._check()
        check_subject(subject)
        await nc.publish(subject, bytes(data), reply=reply)

    async def request(self, subject: str, env: Envelope, *, timeout: float) -> Envelope:
        check_subject(subject)
        sent = await self._offload(env) if len(env.payload) > self.blob_threshold else env
        try:
            reply = await self._request_bytes(subject, encode_envelope(sent), timeout)
        except (RequestTimeout, anyio.get_cancelled_exc_class()):
            if sent.blob:  # abandoned: its reader is cancelled too (a re-send offloads anew)
                with anyio.CancelScope(shield=True), anyio.move_on_after(2.0), \
                        contextlib.suppress(TransportError):
                    await self.delete_blob(sent.blob)
            raise
        if sent.blob:  # answered, so the responder has read it
            with contextlib.suppress(TransportError):
                await self.delete_blob(sent.blob)
        return reply

    async def request_raw(self, subject: str, data: bytes, *, timeout: float) -> Envelope:
        """Request with raw bytes as the body; the reply is decoded as an envelope."""
        check_subject(subject)
        return await self._request_bytes(subject, bytes(data), timeout)

    async def _request_bytes(self, subject: str, data: bytes, timeout: float) -> Envelope:
        nc = self._check()
        try:
            msg = await nc.request(subject, data, timeout=timeout)
        except nats.errors.NoRespondersError:
            raise NoResponders(subject) from None
        except nats.errors.TimeoutError:
            raise RequestTimeout(subject, timeout) from None
        except nats.errors.Error as exc:
            raise TransportError(f"request to {subject!r} failed: {exc}") from exc
        try:
            reply = decode_envelope(msg.data)
        except DECODE_ERRORS as exc:
            raise TransportError(f"malformed reply from {subject!r}: {exc}") from None
        return await self._restore(reply, delete=True) if reply.blob else reply

    async def subscribe(
        self, subject: str, handler: Handler, *, queue: str | None = None
    ) -> Subscription:
        nc = self._check()
        check_subject(subject, wildcards=True)

        async def on_msg(msg: Msg) -> None:
            received_on.set(msg.subject)  # this subscription's own task: no reset needed
            await self._dispatch(msg, handler)

        sub = await nc.subscribe(
            subject, queue=queue or "", cb=on_msg, pending_msgs_limit=SUBSCRIPTION_PENDING_MSGS,
            pending_bytes_limit=SUBSCRIPTION_PENDING_BYTES,
        )
        return _NatsSubscription(subject, sub)

    def log_dead_letter(self, subject: str, reason: str, exc: BaseException | str) -> None:
        """One line per dead letter, at most one a second per reason: a flood of hostile
        messages must not flood the log (the counts in ``dead_letters`` keep every one)."""
        now = anyio.current_time()
        if now - self._dead_logged_at.get(reason, -1e9) < 1.0:
            return
        self._dead_logged_at[reason] = now
        what = f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else exc
        log.warning("dead letter on %s (%s, %d so far): %s", subject[:120], reason,
                    self.dead_letters.counts.get(reason, 0), what[:200])

    async def _dispatch(self, msg: Msg, handler: Handler) -> None:
        try:
            env = decode_envelope(msg.data)
        except DECODE_ERRORS as exc:
            self.dead_letters.record(msg.subject, "malformed", str(exc), len(msg.data))
            self.log_dead_letter(msg.subject, "malformed", exc)
            if msg.reply and is_reply_subject(msg.reply):
                bad = Envelope(id="", kind=Kind.ERROR)
                info = ErrorInfo("MalformedEnvelope", f"not an envelope: {exc}")
                with contextlib.suppress(nats.errors.Error):
                    await self._check().publish(msg.reply, encode_envelope(
                        error_envelope(bad, info)))
            return
        if env.blob:
            try:
                env = await self._restore(env, delete=False)
            except (TransportError, ValueError, TypeError) as exc:  # missing, or a forged name
                self.dead_letters.record(msg.subject, "blob-missing", str(exc), len(msg.data))
                self.log_dead_letter(msg.subject, "blob-missing", exc)
                return
        if msg.reply and env.reply_to != msg.reply:
            env = msgspec.structs.replace(env, reply_to=msg.reply)
        try:
            await handler(env)
        except Exception as exc:
            # A bug of ours that some message triggers: the traceback once per kind of error,
            # then one line now and then (a hostile sender must not flood the log).
            key = f"handler-error {type(exc).__name__}"
            self.dead_letters.record(msg.subject, "handler-error", repr(exc), len(msg.data))
            if key not in self._dead_logged_at:
                self._dead_logged_at[key] = anyio.current_time()
                log.exception("handler for %s raised", msg.subject)
            else:
                self.log_dead_letter(msg.subject, "handler-error", exc)

    # -- work queues ----------------------------------------------------------------------------
    def spawn_subject(self, pool: str) -> str:
        """Every spawn request of ``pool`` (whoever owns the actor): the consumer's filter."""
        return f"{self.namespace}.spawn.{pool}.*"

    async def _ensure_spawn_stream(self) -> None:
        if self._spawn_stream_ready:
            return
        async with self._lock:
            if self._spawn_stream_ready:
                return
            config = nats.js.api.StreamConfig(
                name=self.spawn_stream,
                subjects=[f"{self.namespace}.spawn.>"],
                retention=nats.js.api.RetentionPolicy.WORK_QUEUE,
                storage=nats.js.api.StorageType.FILE,
                num_replicas=self.replicas,
            )
            try:
                try:
                    await self.js.add_stream(config)
                except nats.js.errors.BadRequestError:
                    await self.js.update_stream(config)
            except (nats.errors.Error, nats.js.errors.Error) as exc:
                raise TransportError(f"cannot create stream {config.name!r}: {exc}") from exc
            self._spawn_stream_ready = True

    async def enqueue(self, pool: str, env: Envelope, *, owner: str = "") -> None:
        self._check()
        subject = spawn_subject(self.namespace, pool, owner)
        check_subject(subject)
        await self._ensure_spawn_stream()
        data = encode_envelope(await self._offload(env))
        # A stream that is electing a leader (new, or a server of the cluster just went away)
        # does not answer for a moment: try again. A retry of a publish that was stored after
        # all is a duplicate request for the same incarnation, which a worker starts once.
        deadline = anyio.current_time() + self.options.connect_timeout * 5
        while True:
            try:
                await self.js.publish(subject, data, stream=self.spawn_stream)
                return
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError,
                    nats.js.errors.NoStreamResponseError,
                    nats.js.errors.ServiceUnavailableError) as exc:
                if anyio.current_time() > deadline:
                    raise TransportError(f"enqueue on pool {pool!r} failed: {exc}") from exc
                await anyio.sleep(0.1)
            except (nats.errors.Error, nats.js.errors.Error) as exc:
                raise TransportError(f"enqueue on pool {pool!r} failed: {exc}") from exc

    async def work_queue(
        self, pool: str, *, ack_wait: float = 30.0, max_deliver: int = 5
    ) -> WorkQueue:
        self._check()
        check_subject(self.spawn_subject(pool), wildcards=True)
        return _NatsWorkQueue(self, pool, ack_wait, max_deliver)

    # -- key-value ------------------------------------------------------------------------------
    async def key_value(self, bucket: str, *, ttl: float | None = None) -> KeyValue:
        self._check()
        name = f"{self.namespace}_{bucket}"
        cached = self._kv.get(name)
        if cached is not None:
            return cached
        try:
            try:
                kv = await self.js.create_key_value(
                    bucket=name, ttl=ttl, history=1, replicas=self.replicas
                )
            except nats.js.errors.BadRequestError:
                # It exists already, or (a cluster still forming) no peers to place it yet:
                # then opening it fails too, with an error the caller may retry.
                kv = await self.js.key_value(name)
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise TransportError(f"cannot open bucket {name!r}: {exc}") from exc
        handle = _NatsKeyValue(bucket, kv)
        self._kv[name] = handle
        return handle

    # -- blobs ----------------------------------------------------------------------------------
    async def _object_store(self) -> Any:
        if self._objects is None:
            name = f"{self.namespace}_blobs"
            try:
                self._objects = await self.js.create_object_store(
                    bucket=name, config=nats.js.api.ObjectStoreConfig(
                        bucket=name, ttl=self.options.blob_max_age_s,
                        replicas=self.replicas,
                    ),
                )
            except nats.js.errors.BadRequestError:
                self._objects = await self.js.object_store(name)
        return self._objects

    async def put_blob(self, data: bytes, *, name: str | None = None) -> str:
        self._check()
        ref = name or new_id()
        store = await self._object_store()
        try:
            await store.put(ref, bytes(data))
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise TransportError(f"cannot store blob ({len(data)} bytes): {exc}") from exc
        return ref

    async def get_blob(self, ref: str) -> bytes:
        self._check()
        store = await self._object_store()
        chunks = _Chunks()
        try:
            # nats-py appends chunk by chunk (``data += chunk``: quadratic, 164 s for 200 MB on
            # the event loop); given a writer it hands each chunk over as it comes.
            await store.get(ref, writeinto=chunks)
        except nats.js.errors.ObjectNotFoundError:
            raise BlobNotFound(ref) from None
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise TransportError(f"cannot read blob {ref!r}: {exc}") from exc
        return b"".join(chunks.parts)

    async def delete_blob(self, ref: str) -> None:
        self._check()
        store = await self._object_store()
        try:
            await store.delete(ref)
        except nats.js.errors.ObjectNotFoundError:
            return
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise TransportError(f"cannot delete blob {ref!r}: {exc}") from exc
