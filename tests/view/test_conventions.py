"""Every span of two real runs (one on healthy pools, one whose wafer pool refuses connections)
checked against the OpenTelemetry GenAI conventions' required and recommended attributes, span
kinds and statuses, plus what GenAI trace UIs read (OpenInference input/output, a cost)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .recorded_run import RecordedRun

pytestmark = pytest.mark.timeout(600)

Span = dict[str, Any]

# operation -> (kinds the conventions allow, attributes required, attributes recommended)
CONVENTIONS: dict[str, tuple[set[str], set[str], set[str]]] = {
    "create_agent": ({"CLIENT"}, {"gen_ai.operation.name", "gen_ai.provider.name"},
                     {"gen_ai.agent.name", "gen_ai.agent.id"}),
    "invoke_agent": ({"CLIENT", "INTERNAL"}, {"gen_ai.operation.name", "gen_ai.provider.name"},
                     {"gen_ai.agent.name", "gen_ai.agent.id"}),
    "execute_tool": ({"INTERNAL"}, {"gen_ai.operation.name", "gen_ai.provider.name"},
                     {"gen_ai.tool.name", "gen_ai.tool.call.id", "gen_ai.tool.type"}),
    "chat": ({"CLIENT"}, {"gen_ai.operation.name", "gen_ai.provider.name",
                          "gen_ai.request.model"},
             {"server.address", "server.port"}),
}
# recommended on a chat call that answered
CHAT_ANSWERED = {"gen_ai.response.model", "gen_ai.response.id", "gen_ai.response.finish_reasons",
                 "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"}


def _spans(run: RecordedRun) -> list[Span]:
    return [json.loads(line) for line in run.spans.read_text().splitlines()]


def _check_span(span: Span) -> list[str]:
    """What is wrong with this span (empty: nothing)."""
    a = span["attributes"]
    operation = a.get("gen_ai.operation.name")
    problems = []
    if operation not in CONVENTIONS:
        return [f"{span['name']}: no known gen_ai.operation.name ({operation!r})"]
    kinds, required, recommended = CONVENTIONS[operation]
    if span["kind"] not in kinds:
        problems.append(f"{span['name']}: kind {span['kind']} not in {sorted(kinds)}")
    problems += [f"{span['name']}: no {name} (required)" for name in required - set(a)]
    problems += [f"{span['name']}: no {name} (recommended)" for name in recommended - set(a)]
    if not span["name"].startswith(f"{operation} "):
        problems.append(f"{span['name']}: not named '{operation} {{name or model}}'")
    if span["status"] == "ERROR":
        if not a.get("error.type"):
            problems.append(f"{span['name']}: ERROR without error.type")
    elif span["status"] != "OK":
        problems.append(f"{span['name']}: ended {span['status']}, not OK")
    if operation == "chat":
        if span["status"] == "OK":
            problems += [f"{span['name']}: answered without {name}"
                         for name in CHAT_ANSWERED - set(a)]
            reasons = a.get("gen_ai.response.finish_reasons") or []
            output = json.loads(a.get("gen_ai.output.messages", "[]"))
            if [m.get("finish_reason") for m in output] != list(reasons)[:len(output)]:
                problems.append(f"{span['name']}: output finish_reason != finish_reasons")
            if a.get("llm.cost.total") != a.get("heterarch.cost_usd"):
                problems.append(f"{span['name']}: no cost a GenAI UI reads")
        if "gen_ai.input.messages" not in a:  # content capture is on in these runs
            problems.append(f"{span['name']}: the call's input is not recorded")
        if not isinstance(a.get("server.port"), int):
            problems.append(f"{span['name']}: server.port is not an int")
    if operation == "execute_tool" and a.get("gen_ai.tool.name") == "repl" \
            and "gen_ai.tool.call.result" not in a:
        problems.append(f"{span['name']}: a cell without its result")
    return problems


@pytest.mark.parametrize("which", ["good_run", "down_run"])
def test_every_span_follows_the_genai_conventions(which: str,
                                                  request: pytest.FixtureRequest) -> None:
    run: RecordedRun = request.getfixturevalue(which)
    spans = _spans(run)
    assert len({s["trace_id"] for s in spans}) == 1  # one run, one trace
    ids = {s["span_id"] for s in spans}
    assert all(not s["parent_span_id"] or s["parent_span_id"] in ids for s in spans)
    problems = [p for s in spans for p in _check_span(s)]
    assert problems == [], "\n".join(sorted(set(problems)))
    # the run's root: what the UIs show in their input/output columns, OK for an answer
    [root] = [s for s in spans if not s["parent_span_id"]]
    a = root["attributes"]
    assert a["input.value"] == run.question
    assert a["output.value"] == run.result.stdout.strip()
    assert a["openinference.span.kind"] == "AGENT" and root["status"] == "OK"
    # every tool call has its own id
    calls = [s["attributes"]["gen_ai.tool.call.id"] for s in spans
             if s["attributes"].get("gen_ai.operation.name") == "execute_tool"]
    assert len(calls) == len(set(calls)) > 0


def test_spans_say_where_prompts_ran_and_why_a_pool_failed(down_run: RecordedRun) -> None:
    spans = _spans(down_run)
    failed = [s for s in spans if s["attributes"].get("gen_ai.operation.name") == "chat"
              and s["status"] == "ERROR"]
    assert failed and all(s["attributes"]["heterarch.pool"] == "wafer" for s in failed)
    # a refused connection names its cause; it is no overload
    assert {s["attributes"]["error.type"] for s in failed} == {"PoolUnreachable"}
    for s in failed:
        assert "gen_ai.input.messages" in s["attributes"]  # what was asked, though it failed
    batches = [s for s in spans if s["name"] == "execute_tool llm_query_batched"]
    for batch in batches:
        a = batch["attributes"]
        served = dict(p.split("=") for p in a["heterarch.route.pools"])
        assert "wafer" not in served  # where the prompts were answered: not the dead pool
        assert sum(int(n) for n in served.values()) == a["heterarch.batch"]
        planned = dict(p.split("=") for p in a["heterarch.route.planned"])
        if "wafer" in planned:  # the router sent some there: the batch says they failed, why
            assert f"wafer={planned['wafer']} PoolUnreachable" in a["heterarch.route.failed"]
            fallbacks = [e["attributes"] for e in batch["events"]
                         if e["name"] == "route.fallback"]
            assert {"pool": "wafer", "error.type": "PoolUnreachable",
                    "prompts": int(planned["wafer"])} in fallbacks
    # the CLI's summary from the same facts: the dead pool's failures are in it
    summary = down_run.result.stderr
    wafer = next(line for line in summary.splitlines() if line.strip().startswith("wafer"))
    assert f"errors={len(failed)}" in wafer
