"""The completion client of one pool, on litellm: retries, limits, accounting, a span per call."""

from __future__ import annotations

import json
import os
import random
import time
from functools import cache
from typing import Any

import anyio
import msgspec
from opentelemetry import trace

from actors import HeterarchError
from actors._semconv import content_capture_enabled, truncate_content

from ._config import PoolConfig

tracer = trace.get_tracer("heterarch")


class LLMCallFailed(HeterarchError):
    """A model call failed after its retries; says which pool, why and how often it tried."""

    def __init__(self, pool: str, model: str, reason: str, attempts: int) -> None:
        self.pool = pool
        self.model = model
        self.reason = reason
        self.attempts = attempts
        super().__init__(
            f"model call on pool {pool!r} ({model}) failed after {attempts} attempt(s): {reason}"
        )


class Completion(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    model: str
    pool: str
    latency_s: float
    attempts: int


@cache
def litellm_module() -> Any:
    """Import litellm once, quietly, with its bundled price map (no download at import)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    litellm.drop_params = True
    return litellm


def _retryable(litellm: Any) -> tuple[type[BaseException], ...]:
    return (litellm.RateLimitError, litellm.InternalServerError,
            litellm.ServiceUnavailableError, litellm.APIConnectionError, litellm.Timeout,
            TimeoutError)


class LLMClient:
    """``await client.complete(messages)`` on the pool's model, with:

    - at most ``max_concurrency`` calls in flight (more wait their turn),
    - retries with exponential backoff and jitter on 429, 5xx, timeouts and connection errors
      (not on other 4xx), then ``LLMCallFailed``,
    - tokens and dollars per call (prices from the pool config, else litellm's price table),
    - a ``chat {model}`` span with the GenAI attributes and ``heterarch.*`` ones.
    """

    def __init__(self, pool: PoolConfig, *, backoff_s: float = 0.2) -> None:
        if not pool.model:
            raise ValueError(f"pool {pool.name!r} has no model: set `model` in its config")
        self.pool = pool
        self.hardware = pool.hardware
        self.backoff_s = backoff_s
        self._limit = anyio.CapacityLimiter(pool.max_concurrency)
        # Running totals (shown live by `heterarch rlm` through `heterarch ping`'s channel).
        self.calls = 0
        self.tokens = 0
        self.cost_usd = 0.0
        self.in_flight = 0
        self.provider = pool.model.split("/", 1)[0] if "/" in pool.model else "openai"
        self.request_model = pool.model.split("/", 1)[1] if "/" in pool.model else pool.model

    def _api_key(self) -> str:
        if self.pool.api_key_env:
            key = os.environ.get(self.pool.api_key_env)
            if key:
                return key
            if not self.pool.api_base:
                raise LLMCallFailed(self.pool.name, self.pool.model,
                                    f"set the API key in ${self.pool.api_key_env}", 0)
        return "not-needed-for-local-endpoints"

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        p = self.pool
        if p.input_price_per_mtok is not None and p.output_price_per_mtok is not None:
            return (input_tokens * p.input_price_per_mtok
                    + output_tokens * p.output_price_per_mtok) / 1e6
        try:
            prompt_cost, completion_cost = litellm_module().cost_per_token(
                model=p.model, prompt_tokens=input_tokens, completion_tokens=output_tokens)
            return float(prompt_cost + completion_cost)
        except Exception:  # not in litellm's table: unknown price, counted as zero
            return 0.0

    async def complete(self, messages: list[dict[str, str]], *, max_tokens: int | None = None,
                       temperature: float | None = None, **options: Any) -> Completion:
        if not isinstance(messages, list) or not messages:
            raise ValueError("messages must be a non-empty list of {'role', 'content'} dicts")
        litellm = litellm_module()
        kwargs: dict[str, Any] = {
            "model": self.pool.model, "messages": messages, "timeout": self.pool.timeout_s,
            "api_key": self._api_key(), "num_retries": 0, **options,
        }
        if self.pool.api_base:
            kwargs["api_base"] = self.pool.api_base
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        if temperature is not None:
            kwargs["temperature"] = temperature
        with tracer.start_as_current_span(
            f"chat {self.request_model}", kind=trace.SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": self.provider,
                "gen_ai.request.model": self.request_model,
                "heterarch.pool": self.pool.name,
                "heterarch.hardware": self.pool.hardware,
            },
        ) as span:
            started = time.monotonic()
            self.in_flight += 1
            try:
                async with self._limit:
                    response, attempts = await self._call_with_retries(litellm, kwargs, span)
            finally:
                self.in_flight -= 1
            usage = getattr(response, "usage", None)
            input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
            output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
            text = response.choices[0].message.content or ""
            cost = self.cost(input_tokens, output_tokens)
            if content_capture_enabled():
                span.set_attribute("gen_ai.input.messages",
                                   truncate_content(json.dumps(messages)))
                span.set_attribute("gen_ai.output.messages", truncate_content(text))
            span.set_attributes({
                "gen_ai.response.model": str(getattr(response, "model", "") or ""),
                "gen_ai.usage.input_tokens": input_tokens,
                "gen_ai.usage.output_tokens": output_tokens,
                "heterarch.cost_usd": cost,
                "heterarch.attempts": attempts,
            })
            self.calls += 1
            self.tokens += input_tokens + output_tokens
            self.cost_usd += cost
            return Completion(
                text=text, input_tokens=input_tokens, output_tokens=output_tokens,
                cost_usd=cost, model=self.pool.model, pool=self.pool.name,
                latency_s=time.monotonic() - started, attempts=attempts,
            )


    async def _call_with_retries(self, litellm: Any, kwargs: dict[str, Any],
                                 span: trace.Span) -> tuple[Any, int]:
        attempts = 0
        while True:
            attempts += 1
            try:
                return await litellm.acompletion(**kwargs), attempts
            except _retryable(litellm) as exc:
                span.add_event("retry", {"attempt": attempts, "error": str(exc)[:300]})
                if attempts > self.pool.max_retries:
                    raise self._failed(span, exc, attempts) from None
                delay = self.backoff_s * 2 ** (attempts - 1)
                await anyio.sleep(delay * (0.5 + random.random()))
            except Exception as exc:
                raise self._failed(span, exc, attempts) from None

    def _failed(self, span: trace.Span, exc: BaseException, attempts: int) -> LLMCallFailed:
        failure = LLMCallFailed(self.pool.name, self.pool.model, _short(exc), attempts)
        span.record_exception(failure)
        span.set_status(trace.StatusCode.ERROR, str(failure))
        return failure


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{type(exc).__name__}: {text[:300]}"
