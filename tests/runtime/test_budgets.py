"""Hard budgets in real runs: reserved before dispatch, settled after, per-item refusals."""

from __future__ import annotations

import pytest

from actors import Budget

from .conftest import Harness, Recording

pytestmark = pytest.mark.anyio

LABEL = "Label each record with one of: location, entity. 0: Where is the river x?"
THOUSAND = Recording([
    "```repl\n"
    f"replies = llm_query_batched([{LABEL!r}] * 1000, max_tokens=16)\n"
    "refused = [r for r in replies if r.startswith('[error] BudgetExceeded')]\n"
    "print(len(refused), 'refused;', len(replies) - len(refused), 'answered')\n"
    "```",
    "FINAL(not reached: the budget stops the run first)",
])


@pytest.mark.root_replies(THOUSAND)
async def test_a_batch_of_1000_stops_at_the_token_budget(harness: Harness) -> None:
    budget = 20_000
    # identical prompts, each paid: the call cache is off (tests/runtime/test_call_cache.py)
    answer = await harness.ask("q?", budget=Budget(tokens=budget), max_iterations=4,
                               cache_calls=False)
    spent = sum(u.tokens for u in answer.usage.values())
    print(f"RESULT budget_overshoot={spent / budget:.4g}")
    assert spent / budget <= 1.05
    assert answer.usage["wafer"].calls > 100  # it spent the budget, not nothing
    assert answer.stop_reason.startswith("budget: tokens budget exhausted: spent ")
    assert answer.stop_reason.endswith(f"of {budget:,}")
    # the cell's output is the best partial answer: refused items were error strings
    assert " refused; " in answer.text and "ExceptionGroup" not in answer.text
    assert int(answer.text.split()[0]) > 0


FRONTIER_BATCH = Recording([
    "```repl\n"
    f"replies = llm_query_batched([{LABEL!r}] * 200, pools=['frontier'] * 200)\n"
    "print(sum(r.startswith('[error] BudgetExceeded') for r in replies), 'refused')\n"
    "```",
    "FINAL(not reached)",
])


@pytest.mark.root_replies(FRONTIER_BATCH)
async def test_a_dollar_budget_holds_on_an_expensive_pool(harness: Harness) -> None:
    budget = 0.05
    answer = await harness.ask("q?", budget=Budget(dollars=budget), max_iterations=4,
                               cache_calls=False)
    assert answer.cost_usd <= budget * 1.05
    assert 1 < answer.usage["frontier"].calls < 200
    assert answer.stop_reason.startswith("budget: dollars budget exhausted: spent $")
    assert "refused" in answer.text and int(answer.text.split()[0]) > 0


CHILDREN = Recording([
    "```repl\n"
    "answers = rlm_query_batched(['How many records are about a location?'] * 4,\n"
    "                            [context] * 4)\n"
    "print(answers)\n"
    "```",
    "FINAL(children done)",
])


@pytest.mark.root_replies(CHILDREN)
async def test_children_get_a_share_of_what_is_left(harness: Harness) -> None:
    from heterarch.sim.oolong import generate_task

    budget = 12_000
    context = generate_task(n_records=200, seed=5).context
    answer = await harness.ask("q?", context=context, budget=Budget(tokens=budget),
                               max_iterations=3, max_depth=2, cache_calls=False)
    spent = sum(u.tokens for u in answer.usage.values())
    assert spent <= budget * 1.05, answer.usage
    assert answer.ok and answer.agents_by_depth[1] == 4  # four children, each with a share
    # where the children's models ran: one turn each (the context's head comes with the
    # question, so they write their program at once), but for the share that ran out
    assert answer.usage["h100"].calls >= 3
    shown = CHILDREN.seen[1][-1]["content"]  # the children's answers, as the root saw them
    assert "ExceptionGroup" not in shown
    assert "budget: tokens budget exhausted" in shown  # a share ran out, and said so
