"""What a model-client path does: one attempt of one chat call, and which failures to retry.

``LLMClient`` owns everything around an attempt (the pool's concurrency limit, retries with
backoff, usage, prices, the ``chat`` span); a path only speaks to the provider. Two paths exist:
``OpenAIHTTPPath`` (lean, one pooled aiohttp session, for OpenAI-compatible endpoints) and
``LiteLLMPath`` (every other provider).
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from .llm_errors import LLMCallFailed


class RawReply(msgspec.Struct, frozen=True):
    """What one successful attempt returned: the text, the model that answered, the tokens."""

    text: str
    model: str
    input_tokens: int
    output_tokens: int


class Attempt:
    """State of one attempt that the path updates: ``received`` once a stream chunk arrived
    (a stream that broke after that is not retried: part of the answer was already seen)."""

    __slots__ = ("received",)

    def __init__(self) -> None:
        self.received = False


class ClientPath(Protocol):
    async def attempt(self, messages: list[dict[str, Any]], params: dict[str, Any],
                      state: Attempt) -> RawReply:
        """One request; ``params`` are the OpenAI chat parameters (``max_tokens``, ``stream``,
        ...). Raises what the transport raised; ``classify`` tells what it means."""
        ...

    def classify(self, exc: BaseException) -> type[LLMCallFailed] | None:
        """The error class if ``exc`` is worth retrying (429, 5xx, timeout, connection),
        else None (the call fails at once)."""
        ...

    def describe(self, exc: BaseException) -> str:
        """A one-line reason for the error message."""
        ...

    async def aclose(self) -> None:
        """Release pooled connections (idempotent)."""
        ...


def short_reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{type(exc).__name__}: {text[:300]}"
