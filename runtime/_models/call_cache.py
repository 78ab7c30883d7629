"""Answers of model calls, so that nothing is paid twice.

A call is named by its pool, model, messages and parameters (``call_key``). Its answer is kept
in a key-value bucket of the transport (a NATS JetStream KV bucket, ``{ns}_calls``, whose TTL
bounds how long any answer lives) and in a small map of this process:

- under its run (``scope``): identical calls of one run are answered once, by whichever node
  makes them, and a root restarted on another worker finds the answers its run already had;
- across runs (opt-in, ``across_runs=True``): any run's identical call is answered from it.

Only answers are kept (a failed call is made again). Calls with the same key in flight in one
process at once wait for the first (single flight); across processes two may both be made.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec

from transports import KeyValue

__all__ = ("CALLS_BUCKET", "CALLS_TTL_S", "CachedAnswer", "CallCache", "CallOwner", "call_key")

#: The bucket (``{namespace}_calls``) and its default TTL: an answer lives a day.
CALLS_BUCKET = "calls"
CALLS_TTL_S = 24 * 3600.0
#: Answers larger than this are not kept in the bucket (a NATS message's default limit is 1 MB).
MAX_VALUE_BYTES = 512 * 1024

_encode_key = msgspec.json.Encoder(order="sorted").encode


class CachedAnswer(msgspec.Struct, frozen=True, array_like=True):
    """What a cached call answered, and what it cost when it was paid."""

    text: str
    model: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: float
    # Whose spend it is (``CallOwner``): the run, the incarnation of its root that counts it,
    # and the call (one logical call, the same through re-sends). "" for answers of old.
    run: str = ""
    incarnation: str = ""
    call: str = ""
    pool: str = ""  # the pool that paid it


class CallOwner(msgspec.Struct, frozen=True):
    """Who pays a call of a run: ``run`` (the root agent's id, the same through restarts),
    ``incarnation`` (one life of that root: its usage counts what its tree paid) and ``call``
    (one logical call, the same through re-sends after a lost lane). Travels as ``str(owner)``
    in messages (``parse``)."""

    run: str
    incarnation: str
    call: str = ""

    def __str__(self) -> str:
        return f"{self.run}|{self.incarnation}|{self.call}"

    @staticmethod
    def parse(text: str) -> CallOwner | None:
        parts = text.split("|", 2) if text else []
        return CallOwner(*parts) if len(parts) == 3 else None

    @property
    def claimed_call(self) -> str:
        """What a claimed answer's ``call`` becomes: its subtree (``<branch>:``), no call."""
        return self.call.split(":", 1)[0] + ":" if ":" in self.call else ""

    def claims(self, answer: CachedAnswer) -> bool:
        """Is ``answer`` a payment of this run whose usage no live incarnation has counted? It
        was paid by an earlier incarnation of the root (dead with what it counted), or for this
        very call by an attempt whose reply was lost: counted once, by whoever finds it."""
        return bool(answer.run) and answer.run == self.run and (
            answer.incarnation != self.incarnation or bool(self.call and answer.call == self.call))


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(CachedAnswer).decode


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=20).hexdigest()


def call_key(pool: str, model: str, messages: list[dict[str, Any]],
             params: dict[str, Any]) -> str:
    """The call's name: a hash of pool, model, messages and parameters (the API key and the
    stream options left out: they do not change the answer)."""
    kept = {k: v for k, v in params.items() if k not in ("api_key", "stream", "stream_options")}
    try:
        body = _encode_key([pool, model, messages, kept])
    except (TypeError, msgspec.EncodeError, UnicodeEncodeError, OverflowError):
        body = repr([pool, model, messages, sorted(kept.items())]).encode("utf-8", "replace")
    return _digest(body)


def _scoped(scope: str, key: str) -> str:
    return f"r.{_digest(scope.encode('utf-8', 'replace'))[:24]}.{key}"


def _shared(key: str) -> str:
    return f"x.{key}"


class CallCache:
    """Cached answers in ``open_bucket()``'s bucket (opened on first use) and a map of the
    last ``local_max`` answers of this process.

    ``get(scope, key, across_runs=...)`` and ``put(...)``; ``single_flight(name)`` is the
    lock identical concurrent calls share. A bucket that fails (NATS away) is not fatal: the
    call is then made (and paid) as without a cache."""

    def __init__(self, open_bucket: Callable[[], Awaitable[KeyValue]] | None = None, *,
                 local_max: int = 4096) -> None:
        self._open = open_bucket
        self._bucket: KeyValue | None = None
        self._local: OrderedDict[str, CachedAnswer] = OrderedDict()
        self._local_max = local_max
        self._flights: dict[str, anyio.Lock] = {}
        self._opening = anyio.Lock()
        self.bucket_errors = 0

    async def _kv(self) -> KeyValue | None:
        if self._bucket is None and self._open is not None:
            async with self._opening:
                if self._bucket is None:
                    self._bucket = await self._open()
        return self._bucket

    def _remember(self, name: str, answer: CachedAnswer) -> None:
        self._local[name] = answer
        self._local.move_to_end(name)
        while len(self._local) > self._local_max:
            self._local.popitem(last=False)

    def flight(self, scope: str, key: str) -> anyio.Lock:
        """The lock that identical calls in flight in this process share."""
        name = _scoped(scope, key)
        lock = self._flights.get(name)
        if lock is None:
            lock = self._flights[name] = anyio.Lock()
        return lock

    def landed(self, scope: str, key: str) -> None:
        """The flight of this call is over (its lock is forgotten once nobody holds it)."""
        name = _scoped(scope, key)
        lock = self._flights.get(name)
        if lock is not None and not lock.locked() and not lock.statistics().tasks_waiting:
            del self._flights[name]

    async def get(self, scope: str, key: str, *, across_runs: bool = False) -> CachedAnswer | None:
        names = [_scoped(scope, key)] + ([_shared(key)] if across_runs else [])
        for name in names:
            found = self._local.get(name)
            if found is not None:
                self._local.move_to_end(name)
                return found
        try:
            kv = await self._kv()
            if kv is None:
                return None
            for name in names:
                raw = await kv.get(name)
                if raw is not None:
                    answer = _decode(raw)
                    self._remember(name, answer)
                    return answer
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None  # a value not ours (or of another version): a miss
        except Exception:  # the bucket is away: a miss, the call is made
            self.bucket_errors += 1
        return None

    async def paid_by(self, scope: str, run: str, incarnation: str,
                      branches: set[str]) -> list[CachedAnswer]:
        """The calls of ``scope`` paid for ``run``'s ``incarnation`` by the subtrees named in
        ``branches`` (calls ``<branch>:...``), as the bucket has them: what children that
        will never answer (a cancelled run) spent. Reads every answer of the scope: for a stop
        only."""
        if not branches:
            return []
        prefix = _scoped(scope, "")
        found: list[CachedAnswer] = []
        try:
            kv = await self._kv()
            if kv is None:
                return []
            for name, raw in (await kv.items(prefix)).items():
                if not name.startswith(prefix):
                    continue
                try:
                    answer = _decode(raw)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
                if (answer.run == run and answer.incarnation == incarnation
                        and answer.call.split(":", 1)[0] in branches):
                    found.append(answer)
        except Exception:  # the bucket is away: what it holds is not known
            self.bucket_errors += 1
        return found

    async def put(self, scope: str, key: str, answer: CachedAnswer, *,
                  across_runs: bool = False) -> None:
        names = [_scoped(scope, key)] + ([_shared(key)] if across_runs else [])
        for name in names:
            self._remember(name, answer)
        value = _encode(answer)
        if len(value) > MAX_VALUE_BYTES:
            return
        try:
            kv = await self._kv()
            if kv is not None:
                for name in names:
                    await kv.put(name, value)
        except Exception:  # the bucket is away: this process still remembers it
            self.bucket_errors += 1
