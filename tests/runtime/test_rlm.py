"""The RLM agent end to end: simulated models over real HTTP, Docker sandboxes, real actors."""

from __future__ import annotations

import pytest

from actors import Budget
from heterarch.sim.oolong import generate_task, score

from .conftest import Harness, Recording

pytestmark = pytest.mark.anyio


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
    answer = await harness.ask("q?", budget=Budget(tokens=1500), max_iterations=10,
                               cache_calls=False)
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
