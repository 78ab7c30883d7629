"""The completion client of one pool: retries, limits, accounting, a span per call.

```python
client = LLMClient(PoolConfig(name="frontier", model="openai/sim/frontier",
                              api_base="http://127.0.0.1:8700/v1"))
done = await client.complete([{"role": "user", "content": "hi"}])
done.text, done.cost_usd, client.usage   # usage: PoolUsage (calls, tokens, dollars, errors)
await client.aclose()                    # or `async with LLMClient(...) as client:`
```

An ``openai/...`` model with an ``api_base`` (vLLM, SGLang, llama.cpp, Cerebras, Groq, the
simulator) goes through the lean HTTP path (``openai_http``); every other provider, or a pool
with ``client = "litellm"``, through litellm (``litellm_path``).
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from functools import cached_property
from typing import Any, Self
from urllib.parse import urlsplit

import anyio
import msgspec
from opentelemetry import trace

from actors._semconv import (
    ATTR_GENAI_INPUT_MESSAGES,
    ATTR_GENAI_OUTPUT_MESSAGES,
    content_capture_enabled,
    cost_attributes,
    genai_messages,
)
from actors.agents._messages import PoolUsage, Usage

from .._config import PoolConfig
from .._core.trace_context import tracing_enabled
from .call_cache import CachedAnswer, CallCache, CallOwner, call_key
from .litellm_path import LiteLLMPath, litellm_module
from .llm_errors import (
    ContextWindowExceeded,
    LLMCallFailed,
    LLMTimeout,
    MalformedResponse,
    PoolOverloaded,
    PoolUnreachable,
    RateLimited,
)
from .openai_http import OpenAIHTTPPath
from .path import Attempt, ClientPath, RawReply
from .windows import estimate_tokens, model_info, pool_window

__all__ = ("Completion", "ContextWindowExceeded", "LLMCallFailed", "LLMClient", "LLMTimeout",
           "MalformedResponse", "PoolOverloaded", "PoolUnreachable", "RateLimited",
           "litellm_module", "uses_lean_path")

#: The longest wait a provider's Retry-After may ask for and still get a retry; a longer one
#: ends the call at once as ``RateLimited`` (the router can try another pool meanwhile).
RETRY_AFTER_MAX_S = 10.0
#: Characters of the prompt's prefix that ``prompt_cache_key`` hashes (1,024 tokens: the least
#: OpenAI caches); shorter prompts get no key.
CACHE_KEY_PREFIX_CHARS = 4096


def prefix_key(messages: list[dict[str, Any]]) -> str | None:
    """A key naming the prompt's first ``CACHE_KEY_PREFIX_CHARS`` characters (roles and text
    in order), or None for a shorter prompt."""
    h = hashlib.blake2b(digest_size=12)
    seen = 0
    for message in messages:
        content = message.get("content", "")
        text = content if isinstance(content, str) else str(content)
        piece = f"\x1e{message.get('role', '')}\x1f{text}"[:CACHE_KEY_PREFIX_CHARS - seen]
        h.update(piece.encode("utf-8", "surrogatepass"))
        seen += len(piece)
        if seen >= CACHE_KEY_PREFIX_CHARS:
            return h.hexdigest()
    return None

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
    # Of input_tokens, those the provider read from its prompt cache (billed at the cached
    # price); ``cached`` is True when the answer came from heterarch's own call cache (no
    # provider call, nothing paid: ``cost_usd`` is 0 and ``saved_usd`` what it would cost).
    cached_tokens: int = 0
    cached: bool = False
    saved_usd: float = 0.0
    prompt_cache_saved_usd: float = 0.0  # what cached_tokens saved against the input price
    # Answered from the call cache, but paid by this run earlier and counted by nobody alive
    # (an incarnation of the root that died, a lane lost with the reply): counted as paid now.
    reclaimed: bool = False


def _server_attributes(api_base: str) -> dict[str, Any]:
    """``server.address`` / ``server.port`` of the endpoint (the provider's, when no base)."""
    if not api_base:
        return {}
    parts = urlsplit(api_base)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return {}
    return {"server.address": parts.hostname, "server.port": port} if parts.hostname else {}


def uses_lean_path(pool: PoolConfig) -> bool:
    """True if the pool's calls go through the lean OpenAI-compatible HTTP path."""
    if pool.client == "litellm":
        return False
    return pool.client == "openai" or (pool.model.startswith("openai/") and bool(pool.api_base))


class LLMClient:
    """``await client.complete(messages)`` on the pool's model, with:

    - at most ``max_concurrency`` calls in flight (more wait their turn),
    - retries with exponential backoff and full jitter on 429, 5xx, timeouts and connection
      errors (not on other 4xx), then ``RateLimited`` / ``PoolOverloaded`` / ``LLMTimeout``
      (all ``LLMCallFailed``); other failures raise ``LLMCallFailed`` at once,
    - tokens and dollars per call (prices from the pool config, else litellm's price table),
      summed in ``usage`` (a ``PoolUsage``; ``usage_by_pool()`` merges into roll-ups),
    - a ``chat {model}`` span (CLIENT) with the GenAI attributes and ``heterarch.*`` ones, made
      only when tracing is on and the span is sampled.

    Arguments: ``pool`` (the config), ``backoff_s`` (first retry delay, doubled each time),
    ``tracer`` (defaults to ``opentelemetry.trace.get_tracer("heterarch")`` once tracing is
    configured). ``path`` says which client path the pool uses: ``"openai"`` (lean HTTP) or
    ``"litellm"``. Close with ``aclose()`` (the node does it for the clients it hosts).
    Raises ``ValueError`` at once for a pool without a model.
    """

    def __init__(self, pool: PoolConfig, *, backoff_s: float = 0.2,
                 tracer: trace.Tracer | None = None,
                 max_retry_after_s: float = RETRY_AFTER_MAX_S,
                 cache: CallCache | None = None) -> None:
        if not pool.model:
            raise ValueError(f"pool {pool.name!r} has no model: set `model` in its config")
        self.pool = pool
        self.hardware = pool.hardware
        self.backoff_s = backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.cache = cache  # answers of earlier calls (``complete(cache_scope=...)``)
        self._tracer = tracer
        self._limit = anyio.CapacityLimiter(pool.max_concurrency)
        self.usage = PoolUsage(hardware=pool.hardware)
        self.in_flight = 0
        self._window: int | None = pool.context_window or None
        self.provider = pool.model.split("/", 1)[0] if "/" in pool.model else "openai"
        self.request_model = pool.model.split("/", 1)[1] if "/" in pool.model else pool.model
        self._path: ClientPath
        if uses_lean_path(pool):
            self.path = "openai"
            self._path = OpenAIHTTPPath(pool, self.request_model)
        else:
            self.path = "litellm"
            self._path = LiteLLMPath(pool)
        # Built once: the span attributes every call of this pool shares.
        self._span_name = f"chat {self.request_model}"
        self._span_attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": self.provider,
            "gen_ai.request.model": self.request_model,
            "heterarch.pool": pool.name,
            "heterarch.hardware": pool.hardware,
            "heterarch.client": self.path,
            "openinference.span.kind": "LLM",
            **_server_attributes(pool.api_base),
        }

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections (idempotent; a later call opens new ones)."""
        await self._path.aclose()

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

    async def context_window(self) -> int:
        """The model's window in tokens (0: unknown): the pool's ``context_window``, else
        litellm's model map (looked up once, off the event loop: litellm's import is slow)."""
        if self._window is None:
            self._window = await anyio.to_thread.run_sync(pool_window, self.pool)
        return self._window

    async def _check_window(self, messages: list[dict[str, Any]],
                            max_tokens: int | None) -> None:
        window = await self.context_window()
        needed = estimate_tokens(messages)
        if window and needed > window:
            self.usage.errors += 1
            raise ContextWindowExceeded(
                self.pool.name, self.pool.model,
                f"the prompt is about {needed:,} tokens, more than the model's window of "
                f"{window:,} tokens: not sent (split the prompt)", 0,
                prompt_tokens=needed, window=window)

    def _api_key(self) -> str:
        if self.pool.api_key_env:
            key = os.environ.get(self.pool.api_key_env)
            if key:
                return key
            if not self.pool.api_base:
                raise LLMCallFailed(self.pool.name, self.pool.model,
                                    f"set the API key in ${self.pool.api_key_env}", 0)
        return "not-needed-for-local-endpoints"

    @cached_property
    def _prices_per_token(self) -> tuple[float, float, float]:
        """(input, output, cached input) dollars per token: the pool's prices, else litellm's
        table, else 0; the cached price from the pool, else litellm's
        ``cache_read_input_token_cost``, else the input price. Looked up once per client."""
        p = self.pool
        if p.input_price_per_mtok is not None and p.output_price_per_mtok is not None:
            per_input, per_output = p.input_price_per_mtok / 1e6, p.output_price_per_mtok / 1e6
        else:
            try:
                cost_per_token = litellm_module().cost_per_token
                prompt, _ = cost_per_token(model=p.model, prompt_tokens=1_000_000,
                                           completion_tokens=0)
                _, completion = cost_per_token(model=p.model, prompt_tokens=0,
                                               completion_tokens=1_000_000)
                per_input, per_output = float(prompt) / 1e6, float(completion) / 1e6
            except Exception:  # not in litellm's table: unknown price, counted as zero
                per_input, per_output = 0.0, 0.0
        if p.cached_input_price_per_mtok is not None:
            return per_input, per_output, p.cached_input_price_per_mtok / 1e6
        cached = model_info(p.model).get("cache_read_input_token_cost") if (
            p.input_price_per_mtok is None) else None
        return per_input, per_output, float(cached) if cached is not None else per_input

    def cost(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> float:
        """Dollars for these tokens (``cached_tokens`` of the input at the cached price): the
        pool's prices, else litellm's table, else 0."""
        per_input, per_output, per_cached = self._prices_per_token
        cached_tokens = min(max(0, cached_tokens), input_tokens)
        return ((input_tokens - cached_tokens) * per_input + cached_tokens * per_cached
                + output_tokens * per_output)

    async def complete(self, messages: list[dict[str, Any]], *, max_tokens: int | None = None,
                       temperature: float | None = None, stream: bool = False,
                       cache_scope: str | None = None, cache_across_runs: bool = False,
                       cache_owner: str = "", **options: Any) -> Completion:
        """One chat completion. ``stream=True`` reads the answer as server-sent events (the
        result is the same ``Completion``; retries happen only before the first chunk).
        Other keyword options go into the request as they are (OpenAI chat parameters).
        ``messages`` travel untouched: content may be a list of parts (``image_url``, ...).

        ``cache_scope`` (a run's id), with a ``cache``: an identical call (pool, model,
        messages, parameters) made before under that scope, or under any with
        ``cache_across_runs``, is answered from the cache: ``cached=True``, nothing paid
        (``cost_usd`` 0, ``saved_usd`` what it cost), counted in ``usage.cache_hits``.
        ``cache_owner`` (``str(CallOwner)``): whose spend a paid call is; a cached answer it
        ``claims`` (paid by a dead incarnation of the run, or by a lost attempt of this call)
        comes back ``reclaimed``: its cost counted once more, now, by the one that counts."""
        if not isinstance(messages, list) or not messages:
            raise ValueError("messages must be a non-empty list of {'role', 'content'} dicts")
        await self._check_window(messages, max_tokens)
        params: dict[str, Any] = {"api_key": self._api_key(), **options}
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        if temperature is not None:
            params["temperature"] = temperature
        if stream:
            params["stream"] = True
            params["stream_options"] = {"include_usage": True}
        if self.pool.prompt_cache_key and "prompt_cache_key" not in params:
            key = prefix_key(messages)
            if key is not None:
                params["prompt_cache_key"] = key
        cache = self.cache
        if cache is None or not cache_scope:
            return await self._complete_now(messages, params)
        key = call_key(self.pool.name, self.pool.model, messages, params)
        flight = cache.flight(cache_scope, key)
        try:
            async with flight:  # identical calls in flight here wait for the first
                owner = CallOwner.parse(cache_owner)
                found = await cache.get(cache_scope, key, across_runs=cache_across_runs)
                if found is not None:
                    if owner is not None and owner.claims(found):
                        # counted from now on by this incarnation (and by no other call)
                        await cache.put(cache_scope, key, msgspec.structs.replace(
                            found, incarnation=owner.incarnation, call=owner.claimed_call),
                            across_runs=cache_across_runs)
                        return self._reclaimed(found)
                    return self._from_cache(found)
                done = await self._complete_now(messages, params)
                await cache.put(cache_scope, key, CachedAnswer(
                    text=done.text, model=done.model, input_tokens=done.input_tokens,
                    output_tokens=done.output_tokens, cached_tokens=done.cached_tokens,
                    cost_usd=done.cost_usd, run=owner.run if owner else "",
                    incarnation=owner.incarnation if owner else "",
                    call=owner.call if owner else "", pool=self.pool.name),
                    across_runs=cache_across_runs)
                return done
        finally:
            cache.landed(cache_scope, key)

    def _reclaimed(self, found: CachedAnswer) -> Completion:
        """A call this run paid whose usage was lost with who paid it: its cost, once."""
        return Completion(
            text=found.text, input_tokens=found.input_tokens, output_tokens=found.output_tokens,
            cost_usd=found.cost_usd, model=self.pool.model, pool=self.pool.name, latency_s=0.0,
            attempts=0, cached_tokens=found.cached_tokens, reclaimed=True)

    def _from_cache(self, found: CachedAnswer) -> Completion:
        u = self.usage
        u.cache_hits += 1
        u.cache_saved_tokens += found.input_tokens + found.output_tokens
        u.cache_saved_usd += found.cost_usd
        return Completion(
            text=found.text, input_tokens=found.input_tokens, output_tokens=found.output_tokens,
            cost_usd=0.0, model=self.pool.model, pool=self.pool.name, latency_s=0.0,
            attempts=0, cached_tokens=found.cached_tokens, cached=True,
            saved_usd=found.cost_usd)

    async def _complete_now(self, messages: list[dict[str, Any]],
                            params: dict[str, Any]) -> Completion:
        span = self._start_span(params.get("max_tokens"), params.get("temperature"))
        started = time.monotonic()
        self.in_flight += 1
        try:
            async with self._limit:
                if span is not None:  # how long the call waited for the pool's limit
                    span.set_attribute("heterarch.queue_ms",
                                       round((time.monotonic() - started) * 1000, 3))
                reply, attempts = await self._call_with_retries(messages, params, span)
        except LLMCallFailed as failure:  # a failed call counts; a cancelled one does not
            self.usage.errors += 1
            if span is not None:
                if content_capture_enabled():  # what was asked, also when it failed
                    span.set_attribute(ATTR_GENAI_INPUT_MESSAGES, genai_messages(messages))
                span.record_exception(failure)
                span.set_attribute("error.type", type(failure).__name__)
                span.set_attribute("heterarch.attempts", failure.attempts)
                span.set_status(trace.StatusCode.ERROR, str(failure))
                span.end()
            raise
        except BaseException:
            if span is not None:
                span.end()
            raise
        finally:
            self.in_flight -= 1
        cost = self.cost(reply.input_tokens, reply.output_tokens, reply.cached_tokens)
        u = self.usage
        u.calls += 1
        u.input_tokens += reply.input_tokens
        u.output_tokens += reply.output_tokens
        u.cost_usd += cost
        prompt_saved = (self.cost(reply.input_tokens, reply.output_tokens) - cost
                        if reply.cached_tokens else 0.0)
        if reply.cached_tokens:
            u.cached_input_tokens += reply.cached_tokens
            u.prompt_cache_saved_usd += prompt_saved
        if span is not None:
            self._end_span(span, messages, reply, cost, attempts)
        return Completion(
            text=reply.text, input_tokens=reply.input_tokens, output_tokens=reply.output_tokens,
            cost_usd=cost, model=self.pool.model, pool=self.pool.name,
            latency_s=time.monotonic() - started, attempts=attempts,
            cached_tokens=reply.cached_tokens, prompt_cache_saved_usd=prompt_saved,
        )

    def _start_span(self, max_tokens: int | None,
                    temperature: float | None) -> trace.Span | None:
        """The call's ``chat`` span, or None when tracing is off or the span is not sampled
        (then no attribute is built at all)."""
        chosen = self._tracer
        if chosen is None:
            if not tracing_enabled():
                return None
            chosen = tracer
        span = chosen.start_span(self._span_name, kind=trace.SpanKind.CLIENT,
                                 attributes=self._span_attributes,
                                 record_exception=False, set_status_on_exception=False)
        if not span.is_recording():
            span.end()
            return None
        if max_tokens is not None:
            span.set_attribute("gen_ai.request.max_tokens", max_tokens)
        if temperature is not None:
            span.set_attribute("gen_ai.request.temperature", temperature)
        return span

    def _end_span(self, span: trace.Span, messages: list[dict[str, Any]], reply: RawReply,
                  cost: float, attempts: int) -> None:
        finish = reply.finish_reason or "stop"  # a provider that does not say: it stopped
        if content_capture_enabled():
            span.set_attribute(ATTR_GENAI_INPUT_MESSAGES, genai_messages(messages))
            span.set_attribute(ATTR_GENAI_OUTPUT_MESSAGES, genai_messages(
                [{"role": "assistant", "content": reply.text}], finish_reason=finish))
        attributes: dict[str, Any] = {
            "gen_ai.response.model": reply.model,
            "gen_ai.response.finish_reasons": [finish],
            "gen_ai.usage.input_tokens": reply.input_tokens,
            "gen_ai.usage.output_tokens": reply.output_tokens,
            "gen_ai.usage.cache_read.input_tokens": reply.cached_tokens,
            "llm.token_count.prompt": reply.input_tokens,  # OpenInference
            "llm.token_count.completion": reply.output_tokens,
            **cost_attributes(cost),
            "heterarch.attempts": attempts,
        }
        if reply.response_id:
            attributes["gen_ai.response.id"] = reply.response_id
        span.set_attributes(attributes)
        span.set_status(trace.StatusCode.OK)
        span.end()

    async def _call_with_retries(self, messages: list[dict[str, Any]], params: dict[str, Any],
                                 span: trace.Span | None) -> tuple[RawReply, int]:
        """Attempts until one answers: each within its deadlines (``Attempt``), retried on
        what ``classify`` says is passing, after the backoff or the provider's Retry-After
        (whichever is longer; a Retry-After over ``max_retry_after_s`` ends the call)."""
        path = self._path
        pool = self.pool
        stream = bool(params.get("stream"))
        attempts = 0
        while True:
            attempts += 1
            state = Attempt(pool.timeout_s, pool.stream_timeout_s if stream else pool.timeout_s)
            exc: BaseException
            try:
                with state.scope:
                    return await path.attempt(messages, params, state), attempts
                exc = TimeoutError(self._deadline_reason(state, stream))
            except Exception as error:
                exc = error
            kind = path.classify(exc)
            if kind is None or state.received or attempts > pool.max_retries:
                fatal = path.fatal(exc) if kind is None else None
                raise (kind or fatal or LLMCallFailed)(pool.name, pool.model,
                                                      path.describe(exc), attempts) from None
            delay = self.backoff_s * 2 ** (attempts - 1) * (0.5 + random.random())
            asked = path.retry_after(exc)
            if asked is not None:
                if asked > self.max_retry_after_s:
                    raise kind(pool.name, pool.model,
                               f"{path.describe(exc)} (Retry-After {asked:g} s is longer than "
                               f"the {self.max_retry_after_s:g} s this client waits)", attempts)
                delay = max(delay, asked)
            if span is not None:
                span.add_event("retry", {"attempt": attempts, "error.type": type(exc).__name__,
                                         "error": str(exc)[:300], "delay_s": delay})
            await anyio.sleep(delay)

    def _deadline_reason(self, state: Attempt, stream: bool) -> str:
        pool = self.pool
        if not stream:
            return f"no complete answer within timeout_s={pool.timeout_s:g} s"
        if state.at_total_deadline:
            return f"the stream ran past stream_timeout_s={pool.stream_timeout_s:g} s"
        if state.received:
            return f"the stream stalled: no chunk for timeout_s={pool.timeout_s:g} s"
        return f"no first chunk within timeout_s={pool.timeout_s:g} s"
