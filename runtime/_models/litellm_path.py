"""The litellm path: every provider that is not a plain OpenAI-compatible endpoint."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from .._config import PoolConfig
from .llm_errors import LLMCallFailed, LLMTimeout, PoolOverloaded, RateLimited
from .path import Attempt, RawReply, short_reason

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


class LiteLLMPath:
    """``litellm.acompletion`` with litellm's own retries off (the client retries)."""

    def __init__(self, pool: PoolConfig) -> None:
        self.pool = pool

    @property
    def _litellm(self) -> Any:
        return litellm_module()  # imported on first use (it takes seconds)

    async def attempt(self, messages: list[dict[str, Any]], params: dict[str, Any],
                      state: Attempt) -> RawReply:
        kwargs: dict[str, Any] = {"model": self.pool.model, "messages": messages,
                                  "timeout": self.pool.timeout_s, "num_retries": 0, **params}
        if self.pool.api_base:
            kwargs["api_base"] = self.pool.api_base
        response = await self._litellm.acompletion(**kwargs)
        if not params.get("stream"):
            usage = getattr(response, "usage", None)
            return RawReply(text=response.choices[0].message.content or "",
                            model=str(getattr(response, "model", "") or ""),
                            input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                            output_tokens=int(getattr(usage, "completion_tokens", 0) or 0))
        parts: list[str] = []
        model, input_tokens, output_tokens = "", 0, 0
        async for chunk in response:
            state.received = True
            model = model or str(getattr(chunk, "model", "") or "")
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
            usage = getattr(chunk, "usage", None)
            if usage is not None:
                input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
                output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        return RawReply(text="".join(parts), model=model, input_tokens=input_tokens,
                        output_tokens=output_tokens)

    def classify(self, exc: BaseException) -> type[LLMCallFailed] | None:
        litellm = self._litellm
        if isinstance(exc, litellm.Timeout | TimeoutError):
            return LLMTimeout
        if isinstance(exc, litellm.RateLimitError) or _status(exc) == 429:
            return RateLimited
        if isinstance(exc, litellm.InternalServerError | litellm.ServiceUnavailableError
                      | litellm.BadGatewayError | litellm.APIConnectionError):
            return PoolOverloaded
        status = _status(exc)
        if status is not None and status >= 500:
            return PoolOverloaded
        return None

    def describe(self, exc: BaseException) -> str:
        return short_reason(exc)

    async def aclose(self) -> None:
        """litellm keeps its own client cache; nothing of ours to release."""
