"""The litellm path: every provider that is not a plain OpenAI-compatible endpoint."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from .._config import PoolConfig
from .llm_errors import (
    ContextWindowExceeded,
    LLMCallFailed,
    LLMTimeout,
    MalformedResponse,
    PoolOverloaded,
    PoolUnreachable,
    RateLimited,
)
from .openai_http import decode_answer
from .path import (
    Attempt,
    MalformedBody,
    RawReply,
    is_context_overflow,
    never_connected,
    retry_after_s,
    short_reason,
)

__all__ = ("LiteLLMPath", "litellm_module")


@cache
def litellm_module() -> Any:
    """Import litellm once, quietly, with its bundled price map (no download at import).

    ``LITELLM_LOCAL_MODEL_COST_MAP=True`` is set unless the user set it: without network,
    litellm otherwise retries the price-map download with sleeps of seconds at import.
    Per-call logging and callbacks stay off (they cost client CPU on every call).
    """
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    litellm.drop_params = True
    return litellm


def _status(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) else None


def _headers(exc: BaseException) -> Any:
    """The provider's response headers litellm kept on its exception (None: no response, as
    when litellm itself failed to read a 200)."""
    headers = getattr(exc, "litellm_response_headers", None)
    if headers:
        return headers
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    return headers or None


def _cached_tokens(usage: Any) -> int:
    details = getattr(usage, "prompt_tokens_details", None)
    return int(getattr(details, "cached_tokens", 0) or 0)


class LiteLLMPath:
    """``litellm.acompletion`` with litellm's own retries off (the client retries)."""

    def __init__(self, pool: PoolConfig) -> None:
        self.pool = pool

    @property
    def _litellm(self) -> Any:
        return litellm_module()  # imported on first use (it takes seconds)

    async def attempt(self, messages: list[dict[str, Any]], params: dict[str, Any],
                      state: Attempt) -> RawReply:
        # The client's deadlines (Attempt.scope) govern; litellm's own (per read) is a
        # backstop past them, so that both paths fail the same way at the same time.
        kwargs: dict[str, Any] = {"model": self.pool.model, "messages": messages,
                                  "timeout": self.pool.timeout_s * 1.5 + 1.0,
                                  "num_retries": 0, **params}
        if self.pool.api_base:
            kwargs["api_base"] = self.pool.api_base
        response = await self._litellm.acompletion(**kwargs)
        if not params.get("stream"):
            if not getattr(response, "choices", None):
                raise MalformedBody("a chat completion without choices")
            usage = getattr(response, "usage", None)
            return RawReply(text=response.choices[0].message.content or "",
                            model=str(getattr(response, "model", "") or ""),
                            finish_reason=str(getattr(response.choices[0], "finish_reason",
                                                      "") or ""),
                            response_id=str(getattr(response, "id", "") or ""),
                            input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                            output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
                            cached_tokens=_cached_tokens(usage))
        # An OpenAI-compatible server may answer a stream request with one JSON completion;
        # litellm would read it as an empty stream. Read the body ourselves.
        raw = getattr(getattr(response, "completion_stream", None), "response", None)
        content_type = str(getattr(raw, "headers", {}).get("content-type", ""))
        if raw is not None and not content_type.startswith("text/event-stream"):
            return decode_answer(await raw.aread())
        parts: list[str] = []
        model, input_tokens, output_tokens, cached_tokens = "", 0, 0, 0
        chunks = 0
        async for chunk in response:
            chunks += 1
            state.chunk()
            model = model or str(getattr(chunk, "model", "") or "")
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
            usage = getattr(chunk, "usage", None)
            if usage is not None:
                input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
                output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
                cached_tokens = _cached_tokens(usage)
        if not chunks:
            raise MalformedBody("a stream without a single chunk")
        return RawReply(text="".join(parts), model=model, input_tokens=input_tokens,
                        output_tokens=output_tokens, cached_tokens=cached_tokens)

    def classify(self, exc: BaseException) -> type[LLMCallFailed] | None:
        litellm = self._litellm
        if isinstance(exc, MalformedBody):
            return MalformedResponse
        if never_connected(exc):  # nothing answered: the pool is down, not busy (litellm
            return PoolUnreachable  # says InternalServerError "Connection error." for it)
        if isinstance(exc, litellm.Timeout | TimeoutError) or "timeout on reading" in str(
                exc).lower():
            return LLMTimeout
        if isinstance(exc, litellm.RateLimitError) or _status(exc) == 429:
            return RateLimited
        if (isinstance(exc, litellm.InternalServerError) or _status(exc) == 422) and _headers(
                exc) is None:
            # litellm raises a 500 of its own when it cannot read a 200 (cut JSON, no
            # choices), a 422 when the 200 carries an error object: no provider status
            # response is behind either.
            return MalformedResponse
        if isinstance(exc, litellm.InternalServerError | litellm.ServiceUnavailableError
                      | litellm.BadGatewayError | litellm.APIConnectionError):
            return PoolOverloaded
        status = _status(exc)
        if status is not None and status >= 500:
            return PoolOverloaded
        return None

    def fatal(self, exc: BaseException) -> type[LLMCallFailed] | None:
        litellm = self._litellm
        if isinstance(exc, litellm.ContextWindowExceededError) or (
                _status(exc) in (400, 413, 422) and is_context_overflow(str(exc))):
            return ContextWindowExceeded
        return None

    def retry_after(self, exc: BaseException) -> float | None:
        headers = _headers(exc)
        if headers is None:
            return None
        return retry_after_s(dict(headers))

    def describe(self, exc: BaseException) -> str:
        return short_reason(exc)

    async def aclose(self) -> None:
        """litellm keeps its own client cache; nothing of ours to release."""
