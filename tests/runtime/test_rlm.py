"""The RLM agent end to end: simulated models over real HTTP, Docker sandboxes, real actors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import docker
import pytest

from actors import Answer, Budget, Query, RLMAgent
from runtime import ActorSystem, RuntimeConfig, Worker, parse_config
from runtime._agents import agent_services
from runtime._models.llm import litellm_module
from runtime._sim.oolong import generate_task, score
from runtime._sim.simulator import Simulator, default_profiles, profiles_toml
from sandbox import build_image
from sandbox._docker import OWNER_LABEL, default_owner
from transports import MemoryTransport
from transports._memory import MemoryBus

pytestmark = pytest.mark.anyio


class Recording:
    """A scripted root model that remembers what it was shown."""

    def __init__(self, replies: Sequence[str]) -> None:
        self.replies = list(replies)
        self.seen: list[list[dict[str, str]]] = []

    def reply(self, messages: Sequence[dict[str, str]], model: str) -> str:
        self.seen.append(list(messages))
        return self.replies[min(len(self.seen) - 1, len(self.replies) - 1)]


@pytest.fixture(scope="module")
def image() -> str:
    litellm_module()  # imported up front: importing blocks the event loop for seconds
    return build_image(if_missing=True, progress=lambda line: None)


class Harness:
    def __init__(self, sim: Simulator, config: RuntimeConfig, system: ActorSystem) -> None:
        self.sim, self.config, self.system = sim, config, system

    async def ask(self, question: str, context: str = "", **options: Any) -> Answer:
        root = await self.system.spawn(RLMAgent, pool="frontier", supervision="temporary")
        try:
            answer: Answer = await root.ask(
                Query(question=question, context=context, **options), timeout=300
            )
            return answer
        finally:
            await self.system.stop(root)


@pytest.fixture
async def harness(image: str, request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    profiles = default_profiles()
    marker = request.node.get_closest_marker("root_replies")
    if marker is not None:
        profiles["sim/frontier"].responder = marker.args[0]
    for name, rate in (getattr(request, "param", None) or {}).items():
        profiles[name].error_rate = rate
    async with Simulator(profiles, time_scale=0.05) as sim:
        config = parse_config(__import__("tomllib").loads(
            profiles_toml(profiles, sim.base_url, modules=["actors"])
        ))
        pools = ["wafer", "h100", "frontier"]
        services, pool_services = agent_services(config, pools)
        for pool in pool_services.values():
            pool["llm"].backoff_s = 0.01
        bus = MemoryBus()
        worker_t, system_t = MemoryTransport(bus=bus), MemoryTransport(bus=bus)
        async with (
            Worker(config, pools, transport=worker_t, services=services,
                   pool_services=pool_services) as worker,
            ActorSystem(system_t) as system,
        ):
            yield Harness(sim, config, system)
            assert len(worker.node.cells) == 1, "actors leaked on the worker"
            assert len(system.node.cells) == 1
        await worker_t.close()
        await system_t.close()
    client = docker.from_env()
    try:
        mine = f"{OWNER_LABEL}={default_owner()}"
        assert not client.containers.list(all=True, filters={"label": mine}), "sandbox leaked"
    finally:
        client.close()


SYNTAX_THEN_FINAL = Recording(["```repl\ndef (\n```", "FINAL(recovered)"])


@pytest.mark.root_replies(SYNTAX_THEN_FINAL)
async def test_syntax_error_goes_back_to_the_model(harness: Harness) -> None:
    answer = await harness.ask("q?")
    assert answer.ok and answer.text == "recovered" and answer.stop_reason == "final"
    assert "SyntaxError" in SYNTAX_THEN_FINAL.seen[1][-1]["content"]


RAISES = Recording(["```repl\nraise ValueError('nope')\n```", "FINAL(after error)"])


@pytest.mark.root_replies(RAISES)
async def test_exception_goes_back_to_the_model(harness: Harness) -> None:
    answer = await harness.ask("q?")
    assert answer.text == "after error"
    assert "ValueError: nope" in RAISES.seen[1][-1]["content"]


LOOPS = Recording(["```repl\nx = 1\nwhile True:\n    pass\n```", "FINAL_VAR(x)"])


@pytest.mark.root_replies(LOOPS)
async def test_runaway_cell_times_out_and_state_survives(harness: Harness) -> None:
    answer = await harness.ask("q?", cell_timeout_s=1.0)
    assert answer.text == "1"
    assert "TimeoutError" in LOOPS.seen[1][-1]["content"]


FLOODS = Recording(["```repl\nprint('x' * 100_000_000)\n```", "FINAL(done)"])


@pytest.mark.root_replies(FLOODS)
async def test_huge_output_is_truncated_for_the_model(harness: Harness) -> None:
    answer = await harness.ask("q?")
    assert answer.text == "done"
    feedback = FLOODS.seen[1][-1]["content"]
    assert "truncated" in feedback and len(feedback) < 10_000


NEVER = Recording(["Thinking about it."])


@pytest.mark.root_replies(NEVER)
async def test_no_final_answer_stops_at_the_iteration_limit(harness: Harness) -> None:
    answer = await harness.ask("q?", max_iterations=3)
    assert not answer.ok
    assert answer.stop_reason == "max_iterations"
    assert answer.iterations == 3


SPENDS = Recording(["```repl\nprint(llm_query_batched(['Label each record: 0: x'] * 20))\n```"])


@pytest.mark.root_replies(SPENDS)
async def test_budget_ends_the_run_with_the_best_partial_answer(harness: Harness) -> None:
    answer = await harness.ask("q?", budget=Budget(tokens=1500), max_iterations=10)
    assert not answer.ok
    assert answer.stop_reason.startswith("budget: ")
    assert "tokens" in answer.stop_reason
    assert answer.text  # the last output is the best partial answer


CALLS = Recording([
    "```repl\nanswer['content'] = llm_query('Where is the river x?')\nanswer['ready'] = True\n```",
])


@pytest.mark.root_replies(CALLS)
@pytest.mark.parametrize("harness", [{"sim/wafer-small": 1.0}], indirect=True)
async def test_failing_pool_falls_back_to_another(harness: Harness) -> None:
    answer = await harness.ask("q?")
    assert answer.ok, answer.stop_reason
    assert answer.usage["wafer"].errors == 1
    assert sum(u.calls for p, u in answer.usage.items() if p != "frontier") >= 1


async def test_the_demo_task_routed_and_rolled_up(harness: Harness) -> None:
    task = generate_task(n_records=300, seed=3)
    q = task.questions[1]
    answer = await harness.ask(q.text, context=task.context)
    assert answer.ok, answer.stop_reason
    assert score(answer.text, q.answer) > 0.1
    assert {"wafer", "frontier"} <= set(answer.usage)  # easy chunks cheap, hard ones strong
    assert answer.cost_usd == pytest.approx(sum(u.cost_usd for u in answer.usage.values()))
    assert answer.agents_by_depth.get(1, 0) >= 2
