"""The model client on both of its paths (lean OpenAI-compatible HTTP and litellm), over real
HTTP to the pool simulator. ``test_openai_http.py`` runs the lean path against a second server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from actors.agents import PoolUsage, merge_usage
from heterarch.sim.profiles import EchoResponder, Profile, ScriptedResponder
from heterarch.sim.simulator import Simulator
from runtime import (
    ContextWindowExceeded,
    LLMCallFailed,
    LLMClient,
    LLMTimeout,
    PoolConfig,
    PoolOverloaded,
    RateLimited,
)
from runtime._models.llm import litellm_module

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["openai", "litellm"])
def path(request: pytest.FixtureRequest) -> str:
    """Every test here runs on both client paths."""
    return str(request.param)


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., LLMClient]]:
    """``clients(config, ...)`` makes an ``LLMClient`` that is closed after the test."""
    made: list[LLMClient] = []

    def make(config: PoolConfig, **kw: Any) -> LLMClient:
        made.append(LLMClient(config, **kw))
        return made[-1]

    yield make
    for client in made:
        await client.aclose()

Clients = Callable[..., LLMClient]
USER = [{"role": "user", "content": "hello there"}]  # 11 characters: 3 tokens


def profile(model: str, **kw: object) -> Profile:
    base: dict[str, object] = dict(hardware="test-hw", ttft_s=0.0, tokens_per_s=1e6,
                                   concurrency=16, input_price_per_mtok=1.0,
                                   output_price_per_mtok=2.0, tier=1,
                                   responder=EchoResponder())
    base.update(kw)
    return Profile(model, **base)  # type: ignore[arg-type]


def pool(sim: Simulator, model: str, path: str, **kw: object) -> PoolConfig:
    fields: dict[str, object] = dict(name="p", hardware="test-hw", model=f"openai/{model}",
                                     api_base=sim.base_url, client=path)
    fields.update(kw)
    return PoolConfig(**fields)  # type: ignore[arg-type]


async def test_usage_and_cost_from_the_pool_prices(path: str, clients: Clients) -> None:
    async with Simulator({"m": profile("m")}) as sim:
        client = clients(pool(sim, "m", path, input_price_per_mtok=10.0,
                              output_price_per_mtok=30.0))
        first = await client.complete(USER)
        second = await client.complete(USER, max_tokens=50, temperature=0.0)
    assert first.text == "hello there" and first.model == "openai/m" and first.pool == "p"
    assert (first.input_tokens, first.output_tokens, first.attempts) == (3, 3, 1)
    assert first.cost_usd == pytest.approx((3 * 10.0 + 3 * 30.0) / 1e6)
    assert second.cost_usd == first.cost_usd
    u = client.usage
    assert (u.calls, u.input_tokens, u.output_tokens, u.errors) == (2, 6, 6, 0)
    assert u.cost_usd == pytest.approx(2 * first.cost_usd)
    assert (client.calls, client.tokens) == (2, 12)


async def test_price_falls_back_to_litellms_table(path: str, clients: Clients) -> None:
    # The simulator serves a model named like a real one; the pool config gives no price.
    async with Simulator({"gpt-4o-mini": profile("gpt-4o-mini")}) as sim:
        client = clients(pool(sim, "gpt-4o-mini", path))
        done = await client.complete(USER)
    table = litellm_module().model_cost["gpt-4o-mini"]
    expected = 3 * table["input_cost_per_token"] + 3 * table["output_cost_per_token"]
    assert done.cost_usd == pytest.approx(expected) and done.cost_usd > 0


async def test_unknown_price_counts_as_zero(path: str, clients: Clients) -> None:
    async with Simulator({"m": profile("m")}) as sim:
        done = await clients(pool(sim, "m", path)).complete(USER)
    assert done.cost_usd == 0.0 and done.input_tokens == 3


async def test_streaming_gives_the_same_completion(path: str, clients: Clients) -> None:
    text = "streamed " * 20
    responder = ScriptedResponder([text])
    async with Simulator({"m": profile("m", responder=responder)}) as sim:
        client = clients(pool(sim, "m", path, input_price_per_mtok=1.0,
                              output_price_per_mtok=1.0))
        streamed = await client.complete(USER, stream=True)
        plain = await client.complete(USER)
    assert streamed.text == plain.text == text
    assert (streamed.input_tokens, streamed.output_tokens) == (plain.input_tokens,
                                                               plain.output_tokens)
    assert streamed.cost_usd == plain.cost_usd > 0


async def test_retries_on_429_and_500_then_a_typed_error(path: str, clients: Clients) -> None:
    profiles = {"bad": profile("bad", error_rate=1.0), "flaky": profile("flaky", error_rate=0.5)}
    async with Simulator(profiles, seed=3) as sim:
        bad = clients(pool(sim, "bad", path, max_retries=2), backoff_s=0.001)
        with pytest.raises(LLMCallFailed) as info:
            await bad.complete(USER)
        assert isinstance(info.value, RateLimited | PoolOverloaded)
        assert info.value.attempts == 3 and info.value.pool == "p"
        assert bad.usage.errors == 1 and bad.usage.calls == 0
        assert sim.requests == 3
        flaky = clients(pool(sim, "flaky", path, max_retries=20), backoff_s=0.001)
        results = [await flaky.complete(USER) for _ in range(6)]
    assert any(r.attempts > 1 for r in results)
    assert flaky.usage.calls == 6 and flaky.usage.errors == 0


async def test_rate_limited_and_overloaded_are_told_apart(path: str, clients: Clients) -> None:
    seen: set[type[LLMCallFailed]] = set()
    async with Simulator({"bad": profile("bad", error_rate=1.0)}, seed=5) as sim:
        client = clients(pool(sim, "bad", path, max_retries=0), backoff_s=0.001)
        for _ in range(12):
            with pytest.raises(LLMCallFailed) as info:
                await client.complete(USER)
            seen.add(type(info.value))
    assert seen == {RateLimited, PoolOverloaded}


async def test_a_4xx_is_not_retried(path: str, clients: Clients) -> None:
    async with Simulator({"m": profile("m")}) as sim:
        client = clients(pool(sim, "no-such-model", path, max_retries=5), backoff_s=0.001)
        with pytest.raises(LLMCallFailed) as info:
            await client.complete(USER)
        assert sim.requests == 0  # the 404 came before any model work
    assert type(info.value) is LLMCallFailed and info.value.attempts == 1
    assert "NotFound" in info.value.reason


async def test_timeouts_are_retried_then_raise_llm_timeout(path: str, clients: Clients) -> None:
    async with Simulator({"slow": profile("slow", fixed_latency_s=30.0)}) as sim:
        client = clients(pool(sim, "slow", path, timeout_s=0.2, max_retries=1), backoff_s=0.001)
        with pytest.raises(LLMTimeout) as info:
            await client.complete(USER)
    assert info.value.attempts == 2
    assert isinstance(info.value, TimeoutError)


async def test_the_pool_concurrency_limit_queues_calls(path: str, clients: Clients) -> None:
    # The simulator would take 16 at once; the client lets only 2 out. Checked by counts.
    async with Simulator({"slow": profile("slow", fixed_latency_s=30.0)}) as sim:
        client = clients(pool(sim, "slow", path, max_concurrency=2))
        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(client.complete, USER)
            with anyio.fail_after(30):
                while client.in_flight < 6 or sim.in_flight["slow"] < 2:
                    await anyio.sleep(0.01)
            await anyio.wait_all_tasks_blocked()
            assert sim.in_flight["slow"] == 2 and sim.queued["slow"] == 0
            assert client.in_flight == 6
            tg.cancel_scope.cancel()
    assert sim.peak_in_flight["slow"] == 2
    assert client.in_flight == 0 and client.usage.errors == 0  # cancelled is not failed


async def test_span_per_call_with_genai_attributes(path: str, clients: Clients) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("heterarch")
    profiles = {"m": profile("m"), "bad": profile("bad", error_rate=1.0)}
    async with Simulator(profiles) as sim:
        client = clients(pool(sim, "m", path, input_price_per_mtok=1.0,
                              output_price_per_mtok=2.0),
                           tracer=tracer)
        await client.complete(USER)
        failing = clients(pool(sim, "bad", path, name="q", max_retries=1), tracer=tracer,
                            backoff_s=0.001)
        with pytest.raises(LLMCallFailed):
            await failing.complete(USER)
    ok, failed = exporter.get_finished_spans()
    assert ok.name == "chat m" and ok.kind is trace.SpanKind.CLIENT
    attrs = dict(ok.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "m" and attrs["gen_ai.response.model"] == "m"
    assert attrs["gen_ai.usage.input_tokens"] == 3 and attrs["gen_ai.usage.output_tokens"] == 3
    assert attrs["heterarch.pool"] == "p" and attrs["heterarch.hardware"] == "test-hw"
    assert attrs["heterarch.cost_usd"] == pytest.approx(9e-6)
    assert failed.name == "chat bad" and failed.status.status_code is trace.StatusCode.ERROR
    assert (failed.attributes or {})["heterarch.pool"] == "q"
    assert [e.name for e in failed.events] == ["retry", "exception"]
    assert (failed.attributes or {})["error.type"] in ("RateLimited", "PoolOverloaded")
    provider.shutdown()


async def test_usage_rolls_up_across_clients(path: str, clients: Clients) -> None:
    async with Simulator({"m": profile("m")}) as sim:
        a = clients(pool(sim, "m", path, name="a", input_price_per_mtok=1.0,
                           output_price_per_mtok=1.0))
        b = clients(pool(sim, "m", path, name="b"))
        await a.complete(USER)
        await a.complete(USER)
        await b.complete(USER)
    total = merge_usage(a.usage_by_pool(), b.usage_by_pool())
    total = merge_usage(total, a.usage_by_pool())
    assert set(total) == {"a", "b"}
    assert total["a"].calls == 4 and total["b"].calls == 1
    assert total["a"].tokens == 24 and total["a"].hardware == "test-hw"
    assert a.usage.calls == 2  # the copies do not alias the live totals
    assert isinstance(total["b"], PoolUsage)


async def test_bad_input_to_the_client(path: str, clients: Clients) -> None:
    with pytest.raises(ValueError, match="no model"):
        LLMClient(PoolConfig(name="cpu"))
    async with Simulator({"m": profile("m")}) as sim:
        with pytest.raises(ValueError):
            await clients(pool(sim, "m", path)).complete([])


async def test_a_missing_api_key_for_a_remote_pool() -> None:
    client = LLMClient(PoolConfig(name="x", model="openai/gpt-4o-mini",
                                  api_key_env="HETERARCH_TEST_NO_SUCH_KEY"))
    with pytest.raises(LLMCallFailed, match="HETERARCH_TEST_NO_SUCH_KEY"):
        await client.complete(USER)


async def test_a_shared_long_prefix_is_cached_on_its_replica(path: str, clients: Clients) -> None:
    """The simulator's prefix cache per replica: with ``prompt_cache_key`` the calls that share
    a long prefix reach the replica that has it (hits after the first); without the key a
    plain round-robin spreads them and each replica misses once."""
    shared = "Instructions that every sub-call repeats. " * 200  # about 2,000 tokens
    prompts = [[{"role": "user", "content": f"{shared}\nitem {i}"}] for i in range(8)]
    models = {"keyed": profile("keyed", prefix_cache=True, replicas=4),
              "plain": profile("plain", prefix_cache=True, replicas=4)}
    async with Simulator(models) as sim:
        prices = dict(input_price_per_mtok=1.0, output_price_per_mtok=2.0,
                      cached_input_price_per_mtok=0.1)
        keyed = clients(pool(sim, "keyed", path, prompt_cache_key=True, **prices))
        plain = clients(pool(sim, "plain", path, **prices))
        keyed_done = [await keyed.complete(p) for p in prompts]
        plain_done = [await plain.complete(p) for p in prompts]
    assert [d.cached_tokens > 0 for d in keyed_done] == [False] + [True] * 7
    assert [d.cached_tokens > 0 for d in plain_done] == [False] * 4 + [True] * 4
    hit = keyed_done[1]
    assert hit.cached_tokens % 128 == 0 and hit.cached_tokens <= hit.input_tokens
    full = (hit.input_tokens * 1.0 + hit.output_tokens * 2.0) / 1e6
    assert hit.cost_usd == pytest.approx(full - hit.cached_tokens * 0.9 / 1e6)
    assert keyed.usage.cached_input_tokens == sum(d.cached_tokens for d in keyed_done)
    assert sim.cached_tokens["keyed"] == keyed.usage.cached_input_tokens


async def test_a_prompt_longer_than_the_window_is_not_sent(path: str, clients: Clients) -> None:
    async with Simulator({"m": profile("m")}) as sim:
        client = clients(pool(sim, "m", path, context_window=100))
        with pytest.raises(ContextWindowExceeded) as info:
            await client.complete([{"role": "user", "content": "x" * 1_000}])
        assert (info.value.attempts, info.value.prompt_tokens, info.value.window) == (0, 250, 100)
        assert sim.requests == 0 and client.usage.errors == 1
        done = await client.complete([{"role": "user", "content": "x" * 300}])
    assert done.text == "x" * 300


async def test_identical_calls_of_a_run_are_paid_once(path: str, clients: Clients) -> None:
    """The run's cache (here the memory transport's bucket): an identical call under the same
    scope is answered from it, concurrent ones wait for the first; another run pays again
    unless both share answers across runs."""
    from runtime._models.call_cache import CallCache
    from transports import MemoryTransport

    transport = MemoryTransport()
    await transport.connect()
    try:
        async with Simulator({"m": profile("m")}) as sim:
            cache = CallCache(lambda: transport.key_value("calls", ttl=60))
            client = clients(pool(sim, "m", path, input_price_per_mtok=10.0,
                                  output_price_per_mtok=30.0), cache=cache)
            done = await gather(*(client.complete(USER, cache_scope="run-1") for _ in range(4)))
            first = next(d for d in done if not d.cached)
            again = [d for d in done if d is not first]
            other = await client.complete(USER, max_tokens=9, cache_scope="run-1")
            assert sim.requests == 2  # the max_tokens call differs: its own key
            assert not first.cached and all(a.cached and a.text == first.text for a in again)
            assert again[0].cost_usd == 0.0 and again[0].saved_usd == first.cost_usd
            u = client.usage
            assert (u.calls, u.cache_hits, u.cache_saved_usd) == (2, 3, 3 * first.cost_usd)
            assert u.cache_saved_tokens == 3 * (first.input_tokens + first.output_tokens)
            # A new process (an empty local map) of the same run finds the answers in the bucket.
            fresh = clients(pool(sim, "m", path), cache=CallCache(
                lambda: transport.key_value("calls", ttl=60)))
            assert (await fresh.complete(USER, max_tokens=9, cache_scope="run-1")).cached
            assert not (await client.complete(USER, cache_scope="run-2")).cached  # its own run
            await client.complete(USER, cache_scope="run-3", cache_across_runs=True)
            shared = await fresh.complete(USER, cache_scope="run-4", cache_across_runs=True)
            assert shared.cached and sim.requests == 4
            assert other.text == first.text
    finally:
        await transport.close()


async def gather(*calls: Any) -> list[Any]:
    results: list[Any] = [None] * len(calls)

    async def one(i: int, call: Any) -> None:
        results[i] = await call

    async with anyio.create_task_group() as tg:
        for i, call in enumerate(calls):
            tg.start_soon(one, i, call)
    return results
