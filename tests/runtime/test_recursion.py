"""Recursion that works: a root that calls ``rlm_query_batched`` at ``max_depth=2``, on both
transports; one failed item of a batch is that item's error text, never an ExceptionGroup."""

from __future__ import annotations

import pytest

from actors import Query
from heterarch.sim.oolong import generate_task, score

from .conftest import Harness, Recording

pytestmark = pytest.mark.anyio

SPLITS = Recording([
    "```repl\n"
    "parts = context.split('=====\\n')\n"
    "answers = rlm_query_batched(['How many records are about a location?'] * len(parts),\n"
    "                            parts)\n"
    "print(answers)\n"
    "total = sum(int(a) for a in answers)\n"
    "```",
    "FINAL_VAR(total)",
])


@pytest.mark.root_replies(SPLITS)
@pytest.mark.parametrize("harness", [{"transport": "memory"}, {"transport": "nats"}],
                         indirect=True, ids=["memory", "nats"])
async def test_a_root_delegates_to_child_agents_at_depth_2(harness: Harness) -> None:
    halves = [generate_task(n_records=150, seed=seed) for seed in (21, 22)]
    truth = sum(h.questions[1].answer for h in halves)  # "... about a location?" in each
    assert all(h.questions[1].category == "location" for h in halves)
    answer = await harness.ask("How many records are about a location, in all parts?",
                               context="=====\n".join(h.context for h in halves),
                               max_depth=2, max_iterations=4)
    assert answer.ok, answer.stop_reason
    assert score(answer.text, truth) > 0.1  # children ran the whole program on their part
    assert answer.agents_by_depth[1] == 2  # two child RLM agents ...
    assert answer.agents_by_depth[2] >= 2  # ... each with model lanes of its own
    assert "h100" in answer.usage  # the children's own model: routed to a tier-2 pool
    assert Query(question="").max_depth == 2  # the one default depth


ONE_BAD = Recording([
    "```repl\n"
    "label = 'Label each record with one of: location.\\n0: Where is the river x located?'\n"
    "replies = llm_query_batched([label, label], pools=['wafer', 'no-such-pool'])\n"
    "children = rlm_query_batched(['q?', 'q?'], ['a', 'b'], pool='no-such-pool')\n"
    "print(replies)\n"
    "print(children)\n"
    "```",
    "FINAL(seen)",
])


@pytest.mark.root_replies(ONE_BAD)
async def test_a_failed_item_is_its_own_error_text(harness: Harness) -> None:
    answer = await harness.ask("q?", max_iterations=3, max_depth=2)
    assert answer.ok, answer.stop_reason
    shown = ONE_BAD.seen[1][-1]["content"]
    assert "ExceptionGroup" not in shown and "TaskGroup" not in shown
    assert "'0: location'" in shown  # the good item is answered
    assert shown.count("[error] ") == 3  # the bad one, and both children, say what failed
    assert "no-such-pool" in shown
