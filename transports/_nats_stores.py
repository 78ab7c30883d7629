"""JetStream behind the contract: work-queue consumers and KV buckets for ``NatsTransport``."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import nats.errors
import nats.js.api
import nats.js.errors
from nats.aio.msg import Msg

from ._contract import KeyValue, WorkItem, WorkQueue
from ._envelope import DECODE_ERRORS, Envelope, decode_envelope
from ._subjects import owner_of_spawn_subject
from .errors import BlobNotFound, TransportError

if TYPE_CHECKING:
    from ._nats import NatsTransport


def _deliveries(msg: Msg) -> int:
    try:
        return int(msg.metadata.num_delivered or 1)
    except (ValueError, TypeError, AttributeError):
        return 1


class _NatsWorkItem(WorkItem):
    def __init__(self, msg: Msg, env: Envelope) -> None:
        self._msg = msg
        self.envelope = env
        self.deliveries = _deliveries(msg)
        self.owner = owner_of_spawn_subject(msg.subject)

    async def ack(self) -> None:
        await self._settle(self._msg.ack())

    async def nak(self, delay: float | None = None) -> None:
        await self._settle(self._msg.nak(delay=delay))

    async def term(self) -> None:
        await self._settle(self._msg.term())

    async def in_progress(self) -> None:
        await self._settle(self._msg.in_progress())

    @staticmethod
    async def _settle(op: Any) -> None:
        try:
            await op
        except nats.errors.Error as exc:
            raise TransportError(f"could not settle work item: {exc}") from exc


class _NatsWorkQueue(WorkQueue):
    def __init__(self, transport: NatsTransport, pool: str, ack_wait: float, max_deliver: int):
        self.pool = pool
        self._t = transport
        self._ack_wait = ack_wait
        self._max_deliver = max_deliver
        self._sub: Any = None

    async def _subscription(self) -> Any:
        if self._sub is None:
            t = self._t
            await t._ensure_spawn_stream()
            durable = f"{t.namespace}_pool_{self.pool}"
            config = nats.js.api.ConsumerConfig(
                durable_name=durable,
                ack_policy=nats.js.api.AckPolicy.EXPLICIT,
                ack_wait=self._ack_wait,
                max_deliver=self._max_deliver,
                filter_subject=t.spawn_subject(self.pool),
                max_ack_pending=-1,
            )
            self._sub = await t.js.pull_subscribe(
                t.spawn_subject(self.pool), durable=durable, stream=t.spawn_stream, config=config
            )
        return self._sub

    async def fetch(self, *, timeout: float) -> WorkItem | None:
        self._t._check()
        while True:
            try:
                sub = await self._subscription()
                msgs = await sub.fetch(1, timeout=timeout)
            except nats.errors.TimeoutError:
                return None
            except (nats.errors.Error, nats.js.errors.Error) as exc:
                self._sub = None  # re-create after a reconnect or a deleted consumer
                raise TransportError(f"fetch from pool {self.pool!r} failed: {exc}") from exc
            msg = msgs[0]
            try:
                env = await self._t._restore(decode_envelope(msg.data), delete=False)
                return _NatsWorkItem(msg, env)
            except TransportError as exc:
                if isinstance(exc, BlobNotFound) or _deliveries(msg) >= self._max_deliver:
                    await self._poison(msg, "blob-missing", exc)
                else:  # the store did not answer: someone tries it again later
                    with contextlib.suppress(nats.errors.Error):
                        await msg.nak(delay=1.0)
            except (*DECODE_ERRORS, ValueError, TypeError, KeyError) as exc:
                # Undecodable, too deep, a forged blob name or metadata: poison, whatever it is.
                await self._poison(msg, "malformed", exc)
            timeout = 0.01  # poison is gone; look once more without waiting long

    async def _poison(self, msg: Msg, reason: str, exc: BaseException) -> None:
        """Never deliver ``msg`` again: a dead letter with one log line (no traceback)."""
        self._t.dead_letters.record(msg.subject, reason, f"{type(exc).__name__}: {exc}",
                                    len(msg.data))
        self._t.log_dead_letter(msg.subject, reason, exc)
        with contextlib.suppress(nats.errors.Error):
            await msg.term()

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None


class _NatsKeyValue(KeyValue):
    def __init__(self, bucket: str, kv: Any) -> None:
        self.bucket = bucket
        self._kv = kv

    async def put(self, key: str, value: bytes) -> None:
        try:
            await self._kv.put(key, value)
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise TransportError(f"kv put {self.bucket}/{key}: {exc}") from exc

    async def get(self, key: str) -> bytes | None:
        try:
            entry = await self._kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise TransportError(f"kv get {self.bucket}/{key}: {exc}") from exc
        value: bytes | None = entry.value
        return value

    async def delete(self, key: str) -> None:
        try:
            await self._kv.delete(key)
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise TransportError(f"kv delete {self.bucket}/{key}: {exc}") from exc

    async def create(self, key: str, value: bytes) -> bytes | None:
        for _ in range(5):  # it may be deleted again between our create and our get
            try:
                await self._kv.create(key, value)
                return None
            except nats.js.errors.KeyWrongLastSequenceError:
                pass
            except (nats.errors.Error, nats.js.errors.Error) as exc:
                raise TransportError(f"kv create {self.bucket}/{key}: {exc}") from exc
            existing = await self.get(key)
            if existing is not None:
                return existing
        raise TransportError(f"kv create {self.bucket}/{key}: it keeps changing")

    async def items(self, prefix: str = "") -> dict[str, bytes]:
        try:
            # (nats-py filters keys by substring, from a meta-only watch: no value is read
            # for a key left out)
            keys = [k for k in await self._kv.keys(filters=[prefix] if prefix else None)
                    if k.startswith(prefix)]
        except nats.js.errors.NoKeysError:
            return {}
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise TransportError(f"kv keys {self.bucket}: {exc}") from exc
        out: dict[str, bytes] = {}
        for key in keys:
            value = await self.get(key)
            if value is not None:
                out[key] = value
        return out
