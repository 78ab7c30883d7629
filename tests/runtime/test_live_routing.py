"""The router's live inputs in real runs: a failing pool is avoided, and the span says why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime._observe.tracing import configure_tracing

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
        answer = await harness.ask("q?", max_iterations=4)
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
    answer = await harness.ask("q?", max_iterations=3)
    assert answer.ok, answer.stop_reason
    shown = CASCADE.seen[1][-1]["content"]
    assert "['0: location', '0: description'] 0: description" in shown
    # both prompts first went to the cheap pool; the answer that failed the check went on to
    # the strong pool (once in the batch, once alone); the one that passed did not
    assert answer.usage["wafer"].calls == 3
    assert answer.usage["frontier"].calls == 2 + 2  # the root's two turns, two escalations
