"""Nothing paid twice, and prompts only where they fit: the RLM run's call cache and the
context windows its sub-calls see, end to end (simulated models over real HTTP, a Docker
sandbox; the cache's bucket on the memory transport or a real nats-server)."""

from __future__ import annotations

import json

import pytest

from runtime._agents import _call_caches

from .conftest import Harness, Recording

pytestmark = pytest.mark.anyio

PROGRAM = Recording([
    "```repl\nimport json\n"
    "prompts = ['Label each record: 0: Where is x?', 'Label each record: 1: Who is y?'] * 2\n"
    "first = llm_query_batched(prompts)\n"
    "again = llm_query_batched(prompts[:2] + ['Label each record: 2: When is z?'])\n"
    "huge = llm_query_batched(['Label each record: 0: ' + 'x' * 1_200_000, prompts[0]])\n"
    "try:\n    llm_query('Label each record: 0: ' + 'y' * 1_200_000)\n"
    "except Exception as exc:\n    huge.append(f'{type(exc).__name__}: {exc}')\n"
    "answer['content'] = json.dumps([first, again, huge])\nanswer['ready'] = True\n```",
])


@pytest.mark.root_replies(PROGRAM)
async def test_identical_sub_calls_of_a_run_are_paid_once(harness: Harness) -> None:
    answer = await harness.ask("q?", conversation_id="run-a", max_iterations=2)
    assert answer.ok, answer.stop_reason
    first, again, huge = json.loads(answer.text)
    assert first[0] == first[2] and first[1] == first[3]
    assert again[:2] == first[:2]
    assert huge[0].startswith("[error] PromptTooLong") and "split the prompt" in huge[0]
    assert huge[1] == first[0]
    assert "PromptTooLong" in huge[2] and "272,000 tokens" in huge[2]  # one call: raised
    # one root turn, three distinct sub-calls; everything else came from the run's cache
    assert harness.sim.requests == 4
    wafer = answer.usage["wafer"]
    assert (wafer.calls, wafer.cache_hits) == (3, 5)
    assert wafer.cache_saved_usd > 0 and wafer.cache_saved_tokens > 0
    # the system prompt names the sub-models' real windows
    system = PROGRAM.seen[0][0]["content"]
    assert "wafer 8,192 tokens" in system and "frontier 272,000 tokens" in system
    assert "PromptTooLong" in system and "100,000" not in system


@pytest.mark.root_replies(PROGRAM)
@pytest.mark.parametrize("harness", [{"transport": "nats"}], indirect=True)
async def test_a_run_asked_again_pays_for_nothing_it_had(harness: Harness) -> None:
    """A root restarted after its worker died is asked the same query again: with a
    deterministic program it finds every answer its run had in the bucket (its own model turn
    included), even in a fresh process (the local map emptied here); another run pays."""
    first = await harness.ask("q?", conversation_id="run-b", max_iterations=2)
    paid = harness.sim.requests
    for cache in _call_caches.values():
        cache._local.clear()  # a fresh process: only the bucket remembers
    again = await harness.ask("q?", conversation_id="run-b", max_iterations=2)
    assert again.ok and again.text == first.text
    assert harness.sim.requests == paid
    assert sum(u.calls for u in again.usage.values()) == 0
    assert again.cost_usd == 0.0
    assert again.usage["frontier"].cache_hits == 1  # the root's own turn
    other = await harness.ask("q?", conversation_id="run-c", max_iterations=2)
    assert other.ok and harness.sim.requests == 2 * paid


@pytest.mark.root_replies(PROGRAM)
async def test_the_cache_is_off_when_the_query_says_so(harness: Harness) -> None:
    answer = await harness.ask("q?", conversation_id="run-d", max_iterations=2,
                               cache_calls=False)
    assert answer.ok, answer.stop_reason
    assert harness.sim.requests == 1 + 4 + 3 + 1  # every sub-call paid
    assert answer.usage["wafer"].cache_hits == 0


@pytest.mark.root_replies(PROGRAM)
async def test_answers_are_shared_across_runs_only_when_asked(harness: Harness) -> None:
    await harness.ask("q?", conversation_id="run-e", max_iterations=2, cache_across_runs=True)
    paid = harness.sim.requests
    shared = await harness.ask("q?", conversation_id="run-f", max_iterations=2,
                               cache_across_runs=True)
    assert shared.ok and harness.sim.requests == paid and shared.cost_usd == 0.0


@pytest.mark.root_replies(PROGRAM)
@pytest.mark.parametrize("harness", [{"transport": "nats"}], indirect=True)
async def test_a_restarted_root_counts_what_its_first_life_paid_once(harness: Harness) -> None:
    """The same run asked again by a new life of its root (what a restart after a kill does:
    same run, same query, a fresh process): every call the first life paid is counted once,
    at its real usage, though none is sent again; the run's repeats stay cache hits."""
    first = await harness.ask("q?", conversation_id="run-g", max_iterations=2, run_id="run-g")
    paid = harness.sim.requests
    for cache in _call_caches.values():
        cache._local.clear()  # a fresh process: only the bucket remembers
    again = await harness.ask("q?", conversation_id="run-g", max_iterations=2, run_id="run-g")
    assert again.ok and again.text == first.text
    assert harness.sim.requests == paid  # nothing sent again
    calls = sum(u.calls for u in again.usage.values())
    assert calls == paid == sum(u.reclaimed_calls for u in again.usage.values())
    assert again.cost_usd == pytest.approx(first.cost_usd)
    assert sum(u.tokens for u in again.usage.values()) == sum(
        u.tokens for u in first.usage.values())
    # a repeat within the second life is a cache hit, as it was in the first
    wafer, before = again.usage["wafer"], first.usage["wafer"]
    assert (wafer.calls, wafer.cache_hits) == (before.calls, before.cache_hits)
