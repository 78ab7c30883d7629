"""The router's live inputs in real runs: a failing pool is avoided, and the span says why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime import configure_tracing

from .conftest import Harness, Recording

pytestmark = pytest.mark.anyio

LABEL = "Label each record with one of: location, entity.\n0: Where is the river x?"
TWICE = Recording([
    f"```repl\nfirst = llm_query_batched([{LABEL!r}] * 4)\nprint(first)\n```",
    f"```repl\nsecond = llm_query({LABEL!r})\nprint(second)\n```",
    "FINAL_VAR(second)",
])


@pytest.mark.root_replies(TWICE)
@pytest.mark.parametrize("harness", [{"sim/wafer-small": 1.0}], indirect=True)
async def test_a_failing_pool_is_avoided_once_its_errors_are_seen(
        harness: Harness, tmp_path: Path) -> None:
    spans = tmp_path / "spans.jsonl"
    tracing = configure_tracing(jsonl_path=spans, role="test")
    try:
        # four identical prompts, each sent: the call cache is off
        answer = await harness.ask("q?", max_iterations=4, cache_calls=False)
    finally:
        tracing.shutdown()
    assert answer.ok, answer.stop_reason
    assert answer.text.startswith("0: ")  # a label, from a pool that works
    # the first batch went to the cheap pool and failed there (then fell back, one by one);
    # the call after it was never sent there: its failures were fed to the router's stats
    assert answer.usage["wafer"].errors >= 4 and answer.usage["wafer"].calls == 0
    records = [json.loads(line) for line in spans.read_text().splitlines()]
    reasons = [r["attributes"]["heterarch.route.reason"] for r in records
               if "heterarch.route.reason" in r["attributes"]]
    assert any("cheapest fit is wafer" in reason for reason in reasons)  # before its errors
    assert any("wafer failing lately, skipped" in reason for reason in reasons)  # after


PLAIN = "Label each record with one of: location, description.\n0: {}"
CASCADE = Recording([
    "```repl\n"
    f"prompts = [{PLAIN.format('Where is the river x located?')!r},\n"
    f"           {PLAIN.format('What does the word x mean?')!r}]\n"
    "batch = llm_query_batched(prompts, escalate_if=r': description$')\n"
    "one = llm_query(prompts[1], escalate_if=r': description$')\n"
    "print(batch, one)\n"
    "```",
    "FINAL(done)",
])


@pytest.mark.root_replies(CASCADE)
async def test_the_cascade_escalates_an_answer_that_fails_its_check(harness: Harness) -> None:
    # the same prompt goes twice, each time paid: the call cache is off
    answer = await harness.ask("q?", max_iterations=3, cache_calls=False)
    assert answer.ok, answer.stop_reason
    shown = CASCADE.seen[1][-1]["content"]
    assert "['0: location', '0: description'] 0: description" in shown
    # both prompts first went to the cheap pool; the answer that failed the check went on to
    # the strong pool (once in the batch, once alone); the one that passed did not
    assert answer.usage["wafer"].calls == 3
    assert answer.usage["frontier"].calls == 2 + 2  # the root's two turns, two escalations


async def test_the_router_sees_the_load_of_the_whole_cluster() -> None:
    """Calls in flight on another worker's model client reach this node's router through the
    workers' stats, and a router with a latency goal moves off the busy pool."""
    import tomllib

    import anyio

    from heterarch.sim.profiles import Profile
    from heterarch.sim.simulator import Simulator, profiles_toml
    from runtime import ComplexityRouter, Task, Worker, agent_services, parse_config
    from transports import MemoryBus, MemoryTransport

    profiles = {
        "sim/wafer-small": Profile("sim/wafer-small", "wafer-scale", 0.0, 1e6, 8, 0.1, 0.1, 1,
                                   fixed_latency_s=60.0),
        "sim/h100-open": Profile("sim/h100-open", "h100", 0.0, 1e6, 8, 0.5, 0.5, 1),
    }
    async with Simulator(profiles) as sim:
        config = parse_config(tomllib.loads(profiles_toml(profiles, sim.base_url,
                                                          modules=["actors"])))
        busy_services, busy_models = agent_services(config, ["wafer"])
        services, models = agent_services(config, ["h100"])
        bus = MemoryBus()
        async with (Worker(config, ["wafer"], transport=MemoryTransport(bus=bus),
                           services=busy_services, pool_services=busy_models),
                    Worker(config, ["h100"], transport=MemoryTransport(bus=bus),
                           services=services, pool_services=models),
                    anyio.create_task_group() as tg):
            client = busy_models["wafer"]["llm"]
            for _ in range(8):  # the other worker's wafer client: eight slow calls in flight
                tg.start_soon(client.complete, [{"role": "user", "content": "label each"}])
            stats = services["route"].stats
            with anyio.fail_after(60):
                while stats.cluster_in_flight.get("wafer", 0) < 8:
                    await anyio.sleep(0.1)
            assert stats.in_flight.get("wafer", 0) == 0  # nothing of it is this node's own
            stats.finished("wafer", 1.0, True)  # a recent latency, as sub-calls report it
            stats.finished("h100", 1.0, True)
            router = ComplexityRouter(config.pools, stats=stats, latency_goal_s=1.5)
            decision = router.route(Task(prompt="label each record"))
            assert decision is not None and decision.pool == "h100"
            assert "wafer too slow now, next cheapest" in decision.reason
            tg.cancel_scope.cancel()
        for pool in (*busy_models.values(), *models.values()):
            await pool["llm"].aclose()
