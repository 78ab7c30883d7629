"""Sub-call timeouts derived from the work (``actors/_timeouts.py``), not 600 s / 3600 s."""

from __future__ import annotations

import json

import pytest

from actors.agents._timeouts import (
    RETRY_AFTER_MAX_S,
    child_timeout,
    model_call_s,
    prompts_timeout,
    with_margin,
)
from runtime import PoolConfig

from .conftest import HANG_TIMEOUT_S, Harness, Recording

POOL = PoolConfig(name="p", model="openai/x", timeout_s=2.0, max_retries=2, max_concurrency=4)


def test_a_model_call_takes_its_attempts_and_backoffs() -> None:
    # Each retry may wait up to the longest Retry-After the client honours.
    assert model_call_s(POOL) == pytest.approx(3 * 2.0 + 2 * RETRY_AFTER_MAX_S)
    assert model_call_s(PoolConfig(name="cpu")) is None  # no model: the old ceilings


def test_prompts_wait_for_their_waves_and_a_child_for_its_iterations_or_wall_budget() -> None:
    call = model_call_s(POOL)
    assert call is not None
    assert prompts_timeout(POOL) == with_margin(call)
    assert prompts_timeout(POOL, 4) == with_margin(call)  # one wave of max_concurrency
    assert prompts_timeout(POOL, 9) == with_margin(3 * call)
    unbounded = child_timeout(POOL, max_iterations=5, cell_timeout_s=10.0)
    assert unbounded == with_margin(150.0 + 5 * (call + 10.0))
    assert child_timeout(POOL, max_iterations=5, cell_timeout_s=10.0, wall_s=20.0) == \
        with_margin(20.0 + call + 10.0) < unbounded


HANGS = Recording([
    "```repl\nimport json, time\nt = time.monotonic()\n"
    "r = llm_query_batched(['Label each record: 0: x', 'Label each record: 1: y'])\n"
    "answer['content'] = json.dumps([time.monotonic() - t, r])\nanswer['ready'] = True\n```",
])


@pytest.mark.anyio
@pytest.mark.root_replies(HANGS)
@pytest.mark.parametrize("harness", [{"hang": ["sim/wafer-small"]}], indirect=True)
async def test_a_batch_on_a_hanging_model_fails_per_item_within_the_derived_timeout(
        harness: Harness) -> None:
    answer = await harness.ask("q?", pool_override="wafer", max_iterations=2)
    assert answer.ok, answer.stop_reason
    elapsed, items = json.loads(answer.text)
    pool = harness.config.pools["wafer"]
    assert pool.timeout_s == HANG_TIMEOUT_S
    derived = prompts_timeout(pool, len(items))
    assert derived < 60  # not the 600 s ceiling
    assert len(items) == 2
    for item in items:  # each item its own typed error; the batch returned
        assert item.startswith("[error] LLMTimeout: "), item
    assert 2 * HANG_TIMEOUT_S <= elapsed < derived  # both attempts waited, then failed
