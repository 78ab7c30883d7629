"""The completion client of one pool, on litellm: retries, limits, accounting, a span per call.

```python
client = LLMClient(PoolConfig(name="frontier", model="openai/sim/frontier",
                              api_base="http://127.0.0.1:8700/v1"))
done = await client.complete([{"role": "user", "content": "hi"}])
done.text, done.cost_usd, client.usage   # usage: PoolUsage (calls, tokens, dollars, errors)
```
"""

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

from actors._agent_messages import PoolUsage, Usage
from actors._semconv import content_capture_enabled, truncate_content

from .._config import PoolConfig
from .llm_errors import LLMCallFailed, LLMTimeout, PoolOverloaded, RateLimited

__all__ = ("Completion", "LLMCallFailed", "LLMClient", "LLMTimeout", "PoolOverloaded",
           "RateLimited", "litellm_module")

tracer = trace.get_tracer("heterarch")


class Completion(msgspec.Struct, frozen=True, kw_only=True):
    """One finished model call: its text, tokens, dollars, and how it went."""

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


def _classify(litellm: Any, exc: BaseException) -> type[LLMCallFailed] | None:
    """The error class if ``exc`` is worth retrying (429, 5xx, timeout, connection), else None."""
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


class LLMClient:
    """``await client.complete(messages)`` on the pool's model, with:

    - at most ``max_concurrency`` calls in flight (more wait their turn),
    - retries with exponential backoff and full jitter on 429, 5xx, timeouts and connection
      errors (not on other 4xx), then ``RateLimited`` / ``PoolOverloaded`` / ``LLMTimeout``
      (all ``LLMCallFailed``); other failures raise ``LLMCallFailed`` at once,
    - tokens and dollars per call (prices from the pool config, else litellm's price table),
      summed in ``usage`` (a ``PoolUsage``; ``usage_by_pool()`` merges into roll-ups),
    - a ``chat {model}`` span (CLIENT) with the GenAI attributes and ``heterarch.*`` ones.

    Arguments: ``pool`` (the config), ``backoff_s`` (first retry delay, doubled each time),
    ``tracer`` (defaults to ``opentelemetry.trace.get_tracer("heterarch")``).
    Raises ``ValueError`` at once for a pool without a model.
    """

    def __init__(self, pool: PoolConfig, *, backoff_s: float = 0.2,
                 tracer: trace.Tracer | None = None) -> None:
        if not pool.model:
            raise ValueError(f"pool {pool.name!r} has no model: set `model` in its config")
        self.pool = pool
        self.hardware = pool.hardware
        self.backoff_s = backoff_s
        self._tracer = tracer or globals()["tracer"]
        self._limit = anyio.CapacityLimiter(pool.max_concurrency)
        self.usage = PoolUsage(hardware=pool.hardware)
        self.in_flight = 0
        self.provider = pool.model.split("/", 1)[0] if "/" in pool.model else "openai"
        self.request_model = pool.model.split("/", 1)[1] if "/" in pool.model else pool.model

    # Running totals read by the node's stats (`heterarch ping`, the live view).
    @property
    def calls(self) -> int:
        return self.usage.calls

    @property
    def tokens(self) -> int:
        return self.usage.tokens

    @property
    def cost_usd(self) -> float:
        return self.usage.cost_usd

    def usage_by_pool(self) -> Usage:
        """A copy of this client's totals as ``{pool: PoolUsage}`` (see ``merge_usage``)."""
        return {self.pool.name: msgspec.structs.replace(self.usage)}

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
        """Dollars for these tokens: the pool's prices, else litellm's table, else 0."""
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

    async def complete(self, messages: list[dict[str, Any]], *, max_tokens: int | None = None,
                       temperature: float | None = None, stream: bool = False,
                       **options: Any) -> Completion:
        """One chat completion. ``stream=True`` reads the answer as server-sent events (the
        result is the same ``Completion``; retries happen only before the first chunk).
        Other keyword options go to ``litellm.acompletion`` as they are."""
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
        if stream:
            kwargs["stream"] = True
            kwargs["stream_options"] = {"include_usage": True}
        with self._tracer.start_as_current_span(
            f"chat {self.request_model}", kind=trace.SpanKind.CLIENT,
            record_exception=False, set_status_on_exception=False,
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
                    text, model, input_tokens, output_tokens, attempts = (
                        await self._call_with_retries(litellm, kwargs, span))
            except Exception:  # a failed call counts; a cancelled one does not
                self.usage.errors += 1
                raise
            finally:
                self.in_flight -= 1
            cost = self.cost(input_tokens, output_tokens)
            if content_capture_enabled():
                span.set_attribute("gen_ai.input.messages",
                                   truncate_content(json.dumps(messages)))
                span.set_attribute("gen_ai.output.messages", truncate_content(text))
            span.set_attributes({
                "gen_ai.response.model": model,
                "gen_ai.usage.input_tokens": input_tokens,
                "gen_ai.usage.output_tokens": output_tokens,
                "heterarch.cost_usd": cost,
                "heterarch.attempts": attempts,
            })
            u = self.usage
            u.calls += 1
            u.input_tokens += input_tokens
            u.output_tokens += output_tokens
            u.cost_usd += cost
            return Completion(
                text=text, input_tokens=input_tokens, output_tokens=output_tokens,
                cost_usd=cost, model=self.pool.model, pool=self.pool.name,
                latency_s=time.monotonic() - started, attempts=attempts,
            )

    async def _call_with_retries(self, litellm: Any, kwargs: dict[str, Any],
                                 span: trace.Span) -> tuple[str, str, int, int, int]:
        attempts = 0
        while True:
            attempts += 1
            received = False
            try:
                response = await litellm.acompletion(**kwargs)
                if not kwargs.get("stream"):
                    usage = getattr(response, "usage", None)
                    return (response.choices[0].message.content or "",
                            str(getattr(response, "model", "") or ""),
                            int(getattr(usage, "prompt_tokens", 0) or 0),
                            int(getattr(usage, "completion_tokens", 0) or 0), attempts)
                parts: list[str] = []
                model, input_tokens, output_tokens = "", 0, 0
                async for chunk in response:
                    received = True
                    model = model or str(getattr(chunk, "model", "") or "")
                    if chunk.choices and chunk.choices[0].delta.content:
                        parts.append(chunk.choices[0].delta.content)
                    usage = getattr(chunk, "usage", None)
                    if usage is not None:
                        input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
                        output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
                return "".join(parts), model, input_tokens, output_tokens, attempts
            except Exception as exc:
                kind = _classify(litellm, exc)
                if kind is None or received or attempts > self.pool.max_retries:
                    raise self._failed(span, exc, attempts, kind or LLMCallFailed) from None
                span.add_event("retry", {"attempt": attempts, "error.type": type(exc).__name__,
                                         "error": str(exc)[:300]})
                delay = self.backoff_s * 2 ** (attempts - 1)
                await anyio.sleep(delay * (0.5 + random.random()))

    def _failed(self, span: trace.Span, exc: BaseException, attempts: int,
                kind: type[LLMCallFailed]) -> LLMCallFailed:
        failure = kind(self.pool.name, self.pool.model, _short(exc), attempts)
        span.record_exception(failure)
        span.set_attribute("error.type", type(failure).__name__)
        span.set_status(trace.StatusCode.ERROR, str(failure))
        return failure


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{type(exc).__name__}: {text[:300]}"
