"""The page of a run with child agents (``rlm_query_batched`` at depth 2): each child RLM agent
appears with its own iterations, tokens and dollars."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace

from heterarch.cli.view import build_run, read_spans, render_page
from heterarch.sim.oolong import generate_task
from runtime import configure_tracing
from tests._otel import reset_tracing

from .conftest import Harness, Recording

pytestmark = pytest.mark.anyio

SPLITS = Recording([
    "```repl\n"
    "parts = context.split('=====\\n')\n"
    "answers = rlm_query_batched(['How many records are about a location?'] * len(parts),\n"
    "                            parts)\n"
    "total = sum(int(a) for a in answers)\n"
    "```",
    "FINAL_VAR(total)",
])


@pytest.fixture
def spans_file(tmp_path: Path) -> Iterator[Path]:
    reset_tracing()
    yield tmp_path / "spans.jsonl"
    reset_tracing()  # OTel's set-once provider put back: no other test sees this one


@pytest.mark.root_replies(SPLITS)
async def test_child_agents_on_the_page(harness: Harness, spans_file: Path) -> None:
    handle = configure_tracing(jsonl_path=spans_file, capture_content=True)
    halves = [generate_task(n_records=150, seed=seed) for seed in (21, 22)]
    with trace.get_tracer("tests").start_as_current_span("invoke_agent rlm"):
        answer = await harness.ask("How many records are about a location, in all parts?",
                                   context="=====\n".join(h.context for h in halves),
                                   max_depth=2, max_iterations=4)
    handle.shutdown()
    assert answer.ok, answer.stop_reason
    run = build_run(read_spans(spans_file))
    assert len(run.iterations) == 2  # the root's: the batch of children, then FINAL_VAR
    assert len(run.children) == answer.agents_by_depth[1] == 2
    for _, steps in run.children:
        assert steps and all(it.chat is not None for it in steps)
    page = render_page(run)
    assert "Child agents (2)" in page and page.count("class='child-agent'") == 2
