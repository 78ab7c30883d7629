"""The LLM client against the pool simulator: real litellm, real HTTP."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from runtime import PoolConfig
from runtime._llm import LLMCallFailed, LLMClient, litellm_module
from runtime._simulator import (
    EchoResponder,
    Profile,
    ScriptedResponder,
    Simulator,
    default_profiles,
)

pytestmark = pytest.mark.anyio


def _pool(sim: Simulator, model: str, **kw: object) -> PoolConfig:
    return PoolConfig(name=kw.pop("name", "p"), model=f"openai/{model}",  # type: ignore[arg-type]
                      api_base=sim.base_url, **kw)  # type: ignore[arg-type]


def _profile(model: str, **kw: object) -> Profile:
    base: dict[str, object] = dict(hardware="test", ttft_s=0.0, tokens_per_s=1e6,
                                   concurrency=4, input_price_per_mtok=1.0,
                                   output_price_per_mtok=2.0, tier=1)
    base.update(kw)
    return Profile(model, **base)  # type: ignore[arg-type]


async def test_completion_usage_and_cost() -> None:
    async with Simulator({"m": _profile("m", responder=EchoResponder())}) as sim:
        client = LLMClient(_pool(sim, "m", input_price_per_mtok=1.0, output_price_per_mtok=2.0))
        result = await client.complete([{"role": "user", "content": "hello there"}])
    assert result.text == "hello there"
    assert result.input_tokens == 3 and result.output_tokens == 3
    assert result.cost_usd == pytest.approx((3 * 1.0 + 3 * 2.0) / 1e6)
    assert result.attempts == 1


async def test_price_falls_back_to_litellms_table() -> None:
    pool = PoolConfig(name="x", model="openai/gpt-4o-mini", api_base="http://127.0.0.1:1/v1")
    per_token = litellm_module().model_cost["gpt-4o-mini"]["input_cost_per_token"]
    assert LLMClient(pool).cost(1000, 0) == pytest.approx(1000 * per_token)


async def test_streaming_through_litellm() -> None:
    async with Simulator({"m": _profile("m", responder=ScriptedResponder(["x" * 100]))}) as sim:
        stream = await litellm_module().acompletion(
            model="openai/m", api_base=sim.base_url, api_key="k", stream=True,
            messages=[{"role": "user", "content": "hi"}],
        )
        parts = [chunk.choices[0].delta.content or "" async for chunk in stream]
    assert "".join(parts) == "x" * 100
    assert len(parts) > 2


async def test_retries_then_typed_error() -> None:
    profiles = {"bad": _profile("bad", error_rate=1.0), "flaky": _profile("flaky", error_rate=0.5)}
    async with Simulator(profiles, seed=3) as sim:
        bad = LLMClient(_pool(sim, "bad", max_retries=2), backoff_s=0.01)
        with pytest.raises(LLMCallFailed) as info:
            await bad.complete([{"role": "user", "content": "x"}])
        assert info.value.attempts == 3
        flaky = LLMClient(_pool(sim, "flaky", max_retries=10), backoff_s=0.01)
        results = [await flaky.complete([{"role": "user", "content": "x"}]) for _ in range(5)]
    assert any(r.attempts > 1 for r in results)


async def test_unknown_model_is_not_retried() -> None:
    async with Simulator({"m": _profile("m")}) as sim:
        client = LLMClient(_pool(sim, "nope", max_retries=5), backoff_s=0.01)
        with pytest.raises(LLMCallFailed) as info:
            await client.complete([{"role": "user", "content": "x"}])
    assert info.value.attempts == 1


async def test_concurrency_limit_queues() -> None:
    async with Simulator({"m": _profile("m", concurrency=3, ttft_s=0.05)}) as sim:
        client = LLMClient(_pool(sim, "m", max_concurrency=50))
        async with anyio.create_task_group() as tg:
            for _ in range(12):
                tg.start_soon(client.complete, [{"role": "user", "content": "x"}])
        assert sim.peak_in_flight["m"] == 3
        assert sim.requests == 12


async def test_malformed_http_gets_400_and_the_server_keeps_serving() -> None:
    async with Simulator({"m": _profile("m")}) as sim:
        for raw in (b"GARBAGE\r\n\r\n", b"POST /v1/chat/completions HTTP/1.1\r\n"
                    b"Content-Length: 5\r\n\r\n{nope", b"POST /v1/chat/completions HTTP/1.1\r\n"
                    b"Content-Length: 2\r\n\r\n[]"):
            reader, writer = await asyncio.open_connection(sim.host, sim.port)
            writer.write(raw)
            status = await reader.readline()
            writer.close()
            assert b" 400 " in status
        result = await LLMClient(_pool(sim, "m")).complete([{"role": "user", "content": "ok"}])
    assert result.text == "ok"


async def test_bad_input_to_the_client() -> None:
    with pytest.raises(ValueError, match="no model"):
        LLMClient(PoolConfig(name="cpu"))
    async with Simulator({"m": _profile("m")}) as sim:
        with pytest.raises(ValueError):
            await LLMClient(_pool(sim, "m")).complete([])


async def test_default_profiles_span_the_hardware() -> None:
    profiles = default_profiles()
    hardware = {p.hardware for p in profiles.values()}
    assert {"wafer-scale", "h100", "api", "cpu"} <= hardware
    frontier, wafer = profiles["sim/frontier"], profiles["sim/wafer-small"]
    assert frontier.tier > wafer.tier
    assert frontier.output_price_per_mtok > wafer.output_price_per_mtok
