"""What a model-client path does: one attempt of one chat call, and which failures to retry.

``LLMClient`` owns everything around an attempt (the pool's concurrency limit, the attempt's
deadlines, retries with backoff and Retry-After, usage, prices, the ``chat`` span); a path only
speaks to the provider. Two paths exist: ``OpenAIHTTPPath`` (lean, one pooled aiohttp session,
for OpenAI-compatible endpoints) and ``LiteLLMPath`` (every other provider).
"""

from __future__ import annotations

import email.utils
import math
import socket
import time
from collections.abc import Mapping
from typing import Any, Protocol

import anyio
import msgspec

from .llm_errors import LLMCallFailed


class RawReply(msgspec.Struct, frozen=True):
    """What one successful attempt returned: the text, the model that answered, the tokens
    (``cached_tokens``: the part of ``input_tokens`` the provider read from its prompt cache),
    why the model stopped (``stop``, ``length``, ...; "" when the provider did not say) and the
    provider's id of the completion."""

    text: str
    model: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    finish_reason: str = ""
    response_id: str = ""


class MalformedBody(Exception):
    """A 200 whose body is no chat completion (cut JSON, no ``choices``, nothing at all)."""


class Attempt:
    """One attempt's state, shared by the client and the path.

    ``received`` is set once a stream chunk arrived (a stream that broke after that is not
    retried: part of the answer was already seen). The client runs the attempt in ``scope``,
    whose deadline is the first answer's (``idle_s`` from the start); each stream chunk moves
    it to ``idle_s`` after that chunk, never past the attempt's total deadline (``total_s``
    after the start). A body trickled byte by byte therefore dies at the total deadline, and a
    healthy slow stream lives as long as its chunks keep coming."""

    __slots__ = ("_end", "_idle_s", "received", "scope")

    def __init__(self, idle_s: float = math.inf, total_s: float = math.inf) -> None:
        self.received = False
        self._idle_s = idle_s
        start = anyio.current_time()
        self._end = start + total_s
        self.scope = anyio.CancelScope(deadline=min(start + idle_s, self._end))

    def chunk(self) -> None:
        """A stream chunk arrived: the next one may take ``idle_s``."""
        self.received = True
        self.scope.deadline = min(anyio.current_time() + self._idle_s, self._end)

    @property
    def at_total_deadline(self) -> bool:
        """True if the deadline that passed was the attempt's total one."""
        return self.scope.deadline >= self._end


class ClientPath(Protocol):
    async def attempt(self, messages: list[dict[str, Any]], params: dict[str, Any],
                      state: Attempt) -> RawReply:
        """One request; ``params`` are the OpenAI chat parameters (``max_tokens``, ``stream``,
        ...). Raises what the transport raised (``MalformedBody`` for a 200 that is no
        completion); ``classify`` tells what it means. Calls ``state.chunk()`` per chunk."""
        ...

    def classify(self, exc: BaseException) -> type[LLMCallFailed] | None:
        """The error class if ``exc`` is worth retrying (429, 5xx, timeout, connection, a
        malformed 200), else None (the call fails at once)."""
        ...

    def fatal(self, exc: BaseException) -> type[LLMCallFailed] | None:
        """The typed error of a failure that is not retried (``ContextWindowExceeded`` for a
        400 that says the prompt is too long); None: a plain ``LLMCallFailed``."""
        ...

    def retry_after(self, exc: BaseException) -> float | None:
        """Seconds the provider asked to wait before the next attempt (None: not said)."""
        ...

    def describe(self, exc: BaseException) -> str:
        """A one-line reason for the error message."""
        ...

    async def aclose(self) -> None:
        """Release pooled connections (idempotent)."""
        ...


def never_connected(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says no connection was made at all: refused, no
    such host, no route (httpx's ``ConnectError``, aiohttp's ``ClientConnectorError``)."""
    seen: BaseException | None = exc
    for _ in range(8):  # the chain of causes, bounded
        if seen is None:
            return False
        if isinstance(seen, ConnectionRefusedError | socket.gaierror) or type(
                seen).__name__ in ("ConnectError", "ClientConnectorError"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def short_reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{type(exc).__name__}: {text[:300]}"


def retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """The wait a response asks for: ``retry-after-ms`` (OpenAI, Azure), else ``Retry-After``
    in seconds or as an HTTP date. None when absent or unreadable; never negative."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    ms = lowered.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def is_context_overflow(message: str) -> bool:
    """True if a provider's 400 says the prompt is longer than the model's window (OpenAI's
    ``context_length_exceeded``, vLLM's and litellm's wordings)."""
    text = message.lower()
    return ("context_length_exceeded" in text or "context length" in text
            or "context window" in text or "maximum context" in text
            or "prompt is too long" in text)
