"""The behaviour table of docs/llm.md ("What a provider may do"), row by row, on both client
paths (lean aiohttp and litellm), against an OpenAI-compatible server written for the purpose:
it answers the way careless and hostile servers do (Retry-After, cut JSON, no ``choices``, a
body trickled byte by byte, slow and stalled streams, JSON to a stream request).

No timing thresholds: where a wait matters the server records when requests arrived, and a
lower bound (a retry not sooner than Retry-After) holds however loaded the machine is.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest
from aiohttp import web

from runtime import (
    ContextWindowExceeded,
    LLMClient,
    LLMTimeout,
    MalformedResponse,
    PoolConfig,
    PoolOverloaded,
    RateLimited,
)

pytestmark = pytest.mark.anyio
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HI = [{"role": "user", "content": "hi"}]


def completion(text: str = "hello", *, cached: int | None = None) -> dict[str, Any]:
    usage: dict[str, Any] = {"prompt_tokens": 100, "completion_tokens": 5}
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return {"id": "x", "object": "chat.completion", "model": "served", "created": 1,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": usage}


def chunk(text: str) -> bytes:
    body = {"id": "x", "object": "chat.completion.chunk", "model": "served", "created": 1,
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


class Hostile:
    """One endpoint; each request is answered by the next handler of ``script`` (the last one
    repeats). Records each request's arrival time."""

    def __init__(self) -> None:
        self.script: list[Handler] = []
        self.arrivals: list[float] = []
        self.url = ""

    async def chat(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.arrivals.append(time.monotonic())
        handler = self.script[min(len(self.arrivals), len(self.script)) - 1]
        try:
            return await handler(request)
        except (ConnectionError, RuntimeError):  # the client hung up on a trickle: fine
            return web.Response(status=499)


@pytest.fixture
async def hostile() -> AsyncIterator[Hostile]:
    srv = Hostile()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", srv.chat)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    srv.url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    try:
        yield srv
    finally:
        await runner.cleanup()


@pytest.fixture(params=["openai", "litellm"])
def path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def client(srv: Hostile, path: str, **kw: Any) -> LLMClient:
    fields: dict[str, Any] = dict(name="p", model="openai/m", api_base=srv.url, client=path,
                                  input_price_per_mtok=1.0, output_price_per_mtok=2.0,
                                  max_retries=2, timeout_s=30.0)
    fields.update(kw)
    return LLMClient(PoolConfig(**fields), backoff_s=0.01)


async def good(request: web.Request) -> web.StreamResponse:
    return web.json_response(completion())


def status(code: int, headers: dict[str, str] | None = None,
           message: str = "slow down") -> Handler:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": {"message": message}}, status=code,
                                 headers=headers or {})
    return answer


def raw(body: bytes) -> Handler:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type="application/json")
    return answer


async def test_retry_after_is_honoured(hostile: Hostile, path: str) -> None:
    hostile.script = [status(429, {"Retry-After": "1"}), status(503, {"retry-after-ms": "700"}),
                      good]
    async with client(hostile, path) as c:
        done = await c.complete(HI)
    assert (done.text, done.attempts) == ("hello", 3)
    first, second, third = hostile.arrivals
    assert second - first >= 1.0 and third - second >= 0.7


async def test_a_retry_after_beyond_the_bound_ends_the_call_at_once(hostile: Hostile,
                                                                    path: str) -> None:
    hostile.script = [status(429, {"Retry-After": "3600"})]
    async with client(hostile, path) as c:
        with pytest.raises(RateLimited, match="Retry-After 3600") as info:
            await c.complete(HI)
    assert info.value.attempts == 1 and len(hostile.arrivals) == 1


@pytest.mark.parametrize("body", [json.dumps(completion()).encode()[:50],
                                  json.dumps({"id": "x", "model": "m"}).encode(),
                                  json.dumps({"id": "x", "model": "m", "choices": []}).encode(),
                                  json.dumps({"error": {"message": "overloaded"}}).encode(),
                                  b""],
                         ids=["cut-json", "no-choices", "empty-choices", "error-in-a-200",
                              "empty-body"])
async def test_a_malformed_200_is_a_typed_retried_error(hostile: Hostile, path: str,
                                                        body: bytes) -> None:
    hostile.script = [raw(body), good]
    async with client(hostile, path) as c:
        done = await c.complete(HI)
        assert (done.text, done.attempts) == ("hello", 2)
        hostile.script = [raw(body)]
        hostile.arrivals.clear()
        with pytest.raises(MalformedResponse) as info:
            await c.complete(HI)
    assert info.value.attempts == 3 and len(hostile.arrivals) == 3


async def test_a_trickled_body_dies_at_the_deadline(hostile: Hostile, path: str) -> None:
    async def trickle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        for byte in json.dumps(completion()).encode():
            await resp.write(bytes([byte]))
            await anyio.sleep(0.3)
        return resp

    hostile.script = [trickle]
    async with client(hostile, path, timeout_s=1.0, max_retries=1) as c:
        with pytest.raises(LLMTimeout, match="timeout_s=1") as info:
            await c.complete(HI)
    assert info.value.attempts == 2


def sse(chunks: int, gap_s: float, *, then_stall: bool = False) -> Handler:
    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(chunks):
            await resp.write(chunk(f"w{i} "))
            await anyio.sleep(gap_s)
        if then_stall:
            await anyio.sleep(3600)
        await resp.write(b"data: [DONE]\n\n")
        return resp
    return stream


async def test_a_healthy_slow_stream_lives_past_timeout_s(hostile: Hostile, path: str) -> None:
    # Ten chunks 0.3 s apart: the stream takes longer than timeout_s, no gap comes near it.
    hostile.script = [sse(10, 0.3)]
    async with client(hostile, path, timeout_s=2.0) as c:
        done = await c.complete(HI, stream=True)
    assert done.text == "".join(f"w{i} " for i in range(10)) and done.attempts == 1


async def test_a_stalled_stream_dies_and_is_not_retried(hostile: Hostile, path: str) -> None:
    hostile.script = [sse(2, 0.0, then_stall=True)]
    async with client(hostile, path, timeout_s=1.0) as c:
        with pytest.raises(LLMTimeout, match="stalled") as info:
            await c.complete(HI, stream=True)
    assert info.value.attempts == 1 and len(hostile.arrivals) == 1


async def test_an_endless_stream_dies_at_its_total_deadline(hostile: Hostile,
                                                             path: str) -> None:
    hostile.script = [sse(10**6, 0.05)]
    async with client(hostile, path, timeout_s=30.0, stream_timeout_s=1.0) as c:
        with pytest.raises(LLMTimeout, match="stream_timeout_s=1"):
            await c.complete(HI, stream=True)


async def test_a_json_answer_to_a_stream_request_is_read(hostile: Hostile, path: str) -> None:
    async def mislabelled(request: web.Request) -> web.StreamResponse:
        return web.Response(body=json.dumps(completion()).encode(), content_type="text/plain")

    async with client(hostile, path) as c:
        for answer in (good, mislabelled):
            hostile.script = [answer]
            done = await c.complete(HI, stream=True)
            assert (done.text, done.input_tokens, done.output_tokens) == ("hello", 100, 5)


async def test_events_under_another_content_type_are_read(hostile: Hostile, path: str) -> None:
    async def events(request: web.Request) -> web.StreamResponse:
        body = chunk("hel") + chunk("lo") + b"data: [DONE]\n\n"
        return web.Response(body=body, content_type="application/json")

    hostile.script = [events]
    async with client(hostile, path) as c:
        done = await c.complete(HI, stream=True)
    assert done.text == "hello"


async def test_a_5xx_is_pool_overloaded_after_its_retries(hostile: Hostile, path: str) -> None:
    hostile.script = [status(500, message="boom")]
    async with client(hostile, path) as c:
        with pytest.raises(PoolOverloaded) as info:
            await c.complete(HI)
    assert info.value.attempts == 3


async def test_context_length_exceeded_is_typed_and_not_retried(hostile: Hostile,
                                                                path: str) -> None:
    hostile.script = [status(400, message="This model's maximum context length is 8192 "
                                          "tokens. (context_length_exceeded)")]
    async with client(hostile, path) as c:
        with pytest.raises(ContextWindowExceeded) as info:
            await c.complete(HI)
    assert info.value.attempts == 1 and len(hostile.arrivals) == 1


async def test_cached_prompt_tokens_are_read_and_billed_at_the_cached_price(
        hostile: Hostile, path: str) -> None:
    async def cached(request: web.Request) -> web.StreamResponse:
        return web.json_response(completion(cached=80))

    hostile.script = [cached]
    async with client(hostile, path, cached_input_price_per_mtok=0.1) as c:
        done = await c.complete(HI)
    assert done.cached_tokens == 80
    assert done.cost_usd == pytest.approx((20 * 1.0 + 80 * 0.1 + 5 * 2.0) / 1e6)
    assert c.usage.cached_input_tokens == 80
    assert c.usage.prompt_cache_saved_usd == pytest.approx(80 * 0.9 / 1e6)
