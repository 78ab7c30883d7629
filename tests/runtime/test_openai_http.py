"""The lean OpenAI-compatible client against a second server the test starts (aiohttp.web).

The simulator is heterarch's own server; this one answers the way other servers do (and the
way hostile ones do): content parts echoed back, garbage bodies, 401s, a stream cut short, a
call that never answers.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest
from aiohttp import web

from runtime import (
    LLMCallFailed,
    LLMClient,
    MalformedResponse,
    PoolConfig,
    PoolOverloaded,
    PoolUnreachable,
    RateLimited,
)
from runtime.errors import RuntimeConfigError

pytestmark = pytest.mark.anyio
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Server:
    """One OpenAI-compatible endpoint whose answer each test chooses; records every body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.answer: Handler = self.echo
        self.received = anyio.Event()
        self.url = ""

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(json.loads(await request.read()))
        self.received.set()
        return await self.answer(request)

    async def echo(self, request: web.Request) -> web.StreamResponse:
        content = self.bodies[-1]["messages"][-1]["content"]
        text = content if isinstance(content, str) else json.dumps(content)
        return web.json_response({
            "id": "x", "object": "chat.completion", "model": "served-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 5},
        })


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", srv.chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    srv.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield srv
    finally:
        await runner.cleanup()


def config(server: Server, **kw: Any) -> PoolConfig:
    fields: dict[str, Any] = dict(name="p", model="openai/m", api_base=server.url,
                                  input_price_per_mtok=1.0, output_price_per_mtok=2.0)
    fields.update(kw)
    return PoolConfig(**fields)


async def test_content_parts_pass_through_untouched(server: Server) -> None:
    parts = [{"type": "text", "text": "what is this?"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
    messages = [{"role": "user", "content": parts}]
    async with LLMClient(config(server)) as client:
        assert client.path == "openai"
        done = await client.complete(messages, max_tokens=9, seed=4)
    body = server.bodies[0]
    assert body["messages"] == messages
    assert (body["model"], body["max_tokens"], body["seed"]) == ("m", 9, 4)
    assert "api_key" not in body
    assert json.loads(done.text) == parts
    assert (done.input_tokens, done.output_tokens) == (7, 5)
    assert done.cost_usd == pytest.approx((7 * 1.0 + 5 * 2.0) / 1e6)


async def test_a_garbage_body_is_a_typed_error_and_retried(server: Server) -> None:
    async def garbage(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"\xff\xfe{not json", content_type="application/json")

    server.answer = garbage
    async with LLMClient(config(server, max_retries=5), backoff_s=0.001) as client:
        with pytest.raises(LLMCallFailed, match="malformed response") as info:
            await client.complete([{"role": "user", "content": "hi"}])
    assert type(info.value) is MalformedResponse and info.value.attempts == 6
    assert len(server.bodies) == 6 and client.usage.errors == 1


async def test_401_is_not_retried_429_and_503_are(server: Server) -> None:
    statuses = iter([429, 503, 401])

    async def failing(request: web.Request) -> web.StreamResponse:
        status = next(statuses)
        return web.json_response({"error": {"message": f"status {status}"}}, status=status)

    server.answer = failing
    async with LLMClient(config(server, max_retries=5), backoff_s=0.001) as client:
        with pytest.raises(LLMCallFailed) as info:
            await client.complete([{"role": "user", "content": "hi"}])
    assert type(info.value) is LLMCallFailed and info.value.attempts == 3
    assert "AuthenticationError: 401 status 401" in info.value.reason
    assert len(server.bodies) == 3


async def test_retries_end_in_the_last_kind_of_failure(server: Server) -> None:
    async def overloaded(request: web.Request) -> web.StreamResponse:
        return web.Response(status=503, text="<html>busy</html>")

    async def limited(request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": "slow down"}, status=429)

    async with LLMClient(config(server, max_retries=1), backoff_s=0.001) as client:
        server.answer = overloaded
        with pytest.raises(PoolOverloaded, match="busy"):
            await client.complete([{"role": "user", "content": "hi"}])
        server.answer = limited
        with pytest.raises(RateLimited, match="slow down"):
            await client.complete([{"role": "user", "content": "hi"}])
    assert len(server.bodies) == 4 and client.usage.errors == 2


async def test_a_stream_cut_after_its_first_chunk_is_not_retried(server: Server) -> None:
    async def cut(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk = {"model": "m", "choices": [{"index": 0, "delta": {"content": "par"}}]}
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: {broken\n\n")
        return response

    server.answer = cut
    async with LLMClient(config(server, max_retries=5), backoff_s=0.001) as client:
        with pytest.raises(LLMCallFailed) as info:
            await client.complete([{"role": "user", "content": "hi"}], stream=True)
    assert info.value.attempts == 1 and len(server.bodies) == 1
    assert server.bodies[0]["stream"] is True
    assert server.bodies[0]["stream_options"] == {"include_usage": True}


async def test_streamed_answer_with_usage(server: Server) -> None:
    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for piece in ("hel", "lo"):
            chunk = {"model": "m2", "choices": [{"index": 0, "delta": {"content": piece}}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        usage = {"model": "m2", "choices": [],
                 "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
        await response.write(f": keep-alive\n\ndata: {json.dumps(usage)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response

    server.answer = stream
    async with LLMClient(config(server)) as client:
        done = await client.complete([{"role": "user", "content": "hi"}], stream=True)
    assert (done.text, done.input_tokens, done.output_tokens) == ("hello", 3, 2)
    assert client.usage.calls == 1 and client.usage.cost_usd == pytest.approx(7e-6)


async def test_cancelling_a_call_leaves_nothing_counted(server: Server) -> None:
    release = anyio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        await release.wait()  # until the client gave up (then nobody reads the answer)
        return await server.echo(request)

    server.answer = hang
    async with LLMClient(config(server)) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.complete, [{"role": "user", "content": "hi"}])
            await server.received.wait()
            assert client.in_flight == 1
            tg.cancel_scope.cancel()
        release.set()
        assert client.in_flight == 0 and client.usage.errors == 0 and client.usage.calls == 0
        server.answer = server.echo
        done = await client.complete([{"role": "user", "content": "again"}])
    assert done.text == "again"


async def test_a_lone_surrogate_in_a_prompt_is_a_typed_error(server: Server) -> None:
    async with LLMClient(config(server)) as client:
        with pytest.raises(LLMCallFailed, match="surrogate"):
            await client.complete([{"role": "user", "content": "bad \udfff"}])
    assert server.bodies == []


@pytest.mark.parametrize("path", ["openai", "litellm"])
async def test_an_unreachable_endpoint_is_pool_unreachable(path: str) -> None:
    """A refused connection names its cause on both paths; it is still a PoolOverloaded
    (retried, another pool tried), so code catching that goes on working."""
    with anyio.fail_after(60):
        async with LLMClient(PoolConfig(name="p", model="openai/m", max_retries=1,
                                        api_base="http://127.0.0.1:9/v1", client=path),
                             backoff_s=0.001) as client:
            with pytest.raises(PoolUnreachable) as info:
                await client.complete([{"role": "user", "content": "hi"}])
    assert isinstance(info.value, PoolOverloaded) and info.value.attempts == 2


def test_the_pool_chooses_its_path() -> None:
    lean = PoolConfig(name="a", model="openai/m", api_base="http://127.0.0.1:1/v1")
    forced = PoolConfig(name="b", model="openai/m", api_base="http://127.0.0.1:1/v1",
                        client="litellm")
    other = PoolConfig(name="c", model="anthropic/claude-x")
    assert [LLMClient(p).path for p in (lean, forced, other)] == ["openai", "litellm", "litellm"]


@pytest.mark.parametrize("fields", [{"client": "httpx"}, {"client": "openai"}])
def test_a_bad_client_setting_is_a_config_error(fields: dict[str, str]) -> None:
    # "openai" without an api_base: the lean path has nowhere to send.
    with pytest.raises(RuntimeConfigError, match="client"):
        PoolConfig(name="p", model="openai/m", **fields)
