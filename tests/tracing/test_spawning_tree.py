"""One RLM run over three processes (CLI + two workers on two pools) is one readable trace:
checked span by span for a run that answers and for one whose models are down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from heterarch.sim.oolong import generate_task
from heterarch.sim.simulator import default_profiles, profiles_toml, serve_in_thread
from runtime import NatsServer
from runtime._nats_server import free_port
from transports import new_id

ROOT = Path(__file__).resolve().parents[2]
Span = dict[str, Any]


@pytest.fixture
def demo_simulator() -> Iterator[str]:
    with serve_in_thread(default_profiles(), time_scale=0.05) as url:
        yield url


def _run(nats_url: str, simulator_url: str, tmp_path: Path,
         **env_extra: str) -> tuple[subprocess.CompletedProcess[str], list[Span]]:
    """`heterarch rlm` with two worker processes (frontier, wafer), all writing one span
    file; returns the CLI's result and the spans."""
    profiles = {k: v for k, v in default_profiles().items()
                if k in ("sim/wafer-small", "sim/frontier")}
    namespace = "tr" + new_id()[:8]
    config = tmp_path / "pools.toml"
    config.write_text(f'namespace = "{namespace}"\n\n'
                      + profiles_toml(profiles, simulator_url, modules=["actors"])
                      .replace("max_retries = 3", "max_retries = 1"))
    context = tmp_path / "context.txt"
    task = generate_task(n_records=120, seed=2)
    context.write_text(task.context)
    spans_file = tmp_path / "spans.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(HETERARCH_TRACE_FILE=str(spans_file), **env_extra)
    workers = [
        subprocess.Popen([sys.executable, "-m", "heterarch.cli", "worker", "--pool", pool,
                          "--config", str(config), "--nats", nats_url],
                         cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        for pool in ("frontier", "wafer")
    ]
    try:
        done = subprocess.run(
            [sys.executable, "-m", "heterarch.cli", "rlm", task.questions[1].text,
             "--context", str(context), "--root-pool", "frontier", "--nats", nats_url,
             "--namespace", namespace, "--max-depth", "1"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(30)  # a clean stop flushes the workers' spans
    spans = [json.loads(line) for line in spans_file.read_text().splitlines()]
    return done, spans


class Tree:
    def __init__(self, spans: list[Span]) -> None:
        self.spans = spans
        self.by_id = {s["span_id"]: s for s in spans}
        assert len({s["trace_id"] for s in spans}) == 1, "one run, one trace"
        for s in spans:  # no orphans: every parent is in the trace
            assert not s["parent_span_id"] or s["parent_span_id"] in self.by_id, s["name"]

    def named(self, name: str) -> list[Span]:
        return [s for s in self.spans if s["name"] == name]

    def one(self, name: str) -> Span:
        [span] = self.named(name)
        return span

    def parent(self, span: Span) -> Span:
        return self.by_id[span["parent_span_id"]]

    def children(self, span: Span) -> list[Span]:
        return [s for s in self.spans if s["parent_span_id"] == span["span_id"]]


def _operation(span: Span) -> str:
    return str(span["attributes"].get("gen_ai.operation.name", ""))


def _parts(messages: str) -> list[dict[str, Any]]:
    """A messages attribute, which must be the conventions' JSON however long the text."""
    decoded: list[dict[str, Any]] = json.loads(messages)
    for message in decoded:
        assert set(message) >= {"role", "parts"}
        for part in message["parts"]:
            assert part["type"] in ("text", "uri")
    return decoded


def test_a_run_that_answers(nats_server: NatsServer, demo_simulator: str,
                            tmp_path: Path) -> None:
    done, spans = _run(nats_server.url, demo_simulator, tmp_path,
                       OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="true")
    assert done.returncode == 0, done.stderr
    tree = Tree(spans)
    root = tree.one("invoke_agent rlm")
    assert root["parent_span_id"] == "" and root["service"] == "heterarch-cli"
    assert root["status"] == "OK"
    a = root["attributes"]
    conversation = a["gen_ai.conversation.id"]
    assert len(conversation) == 32
    assert _parts(a["gen_ai.input.messages"])[0]["parts"][0]["content"] \
        == done.args[4]  # the question
    answer = _parts(a["gen_ai.output.messages"])[0]
    assert answer["finish_reason"] == "final" and answer["parts"][0]["content"] \
        == done.stdout.strip()
    chats = [s for s in spans if _operation(s) == "chat"]
    assert a["gen_ai.usage.input_tokens"] == sum(
        c["attributes"]["gen_ai.usage.input_tokens"] for c in chats)
    assert a["gen_ai.usage.output_tokens"] == sum(
        c["attributes"]["gen_ai.usage.output_tokens"] for c in chats)
    assert a["heterarch.cost_usd"] == pytest.approx(
        sum(c["attributes"]["heterarch.cost_usd"] for c in chats))

    # The root agent: created under the run, invoked under its creation, named by spawn().
    created = tree.one("create_agent rlm-root")
    assert tree.parent(created) is root
    agent = tree.one("invoke_agent rlm-root")
    assert tree.parent(agent) is created
    assert agent["service"] == "heterarch-worker"
    assert agent["instance"].startswith("worker-frontier@")
    assert agent["status"] == "OK"
    assert agent["attributes"]["gen_ai.conversation.id"] == conversation
    assert agent["attributes"]["heterarch.route.reason"] == "root pool named by the caller"
    assert agent["attributes"]["gen_ai.usage.input_tokens"] == a["gen_ai.usage.input_tokens"]

    # Cells: code and output recorded (content capture is on here).
    cells = tree.named("execute_tool repl")
    assert cells and all(tree.parent(c) is agent for c in cells)
    assert all(c["attributes"]["gen_ai.tool.call.arguments"] for c in cells)
    assert all(c["attributes"]["gen_ai.tool.call.result"].startswith("[cell ") for c in cells)

    # A batch: where its prompts went; each lane created under it, invoked under its creation.
    batches = tree.named("execute_tool llm_query_batched")
    assert batches and all(tree.parent(b)["name"] == "execute_tool repl" for b in batches)
    lanes = [s for s in spans if _operation(s) == "invoke_agent"
             and s["name"].endswith("-lane")]
    assert lanes
    for batch in batches:
        assert batch["attributes"]["heterarch.route.pools"]
        kids = tree.children(batch)
        creates = [k for k in kids if _operation(k) == "create_agent"]
        invokes = [k for k in kids if _operation(k) == "invoke_agent"]
        assert len(creates) + len(invokes) == len(kids)
        # A lane created here is invoked under its create span, never beside it.
        assert not {c["attributes"]["gen_ai.agent.id"] for c in creates} \
            & {i["attributes"]["gen_ai.agent.id"] for i in invokes}
    for lane in lanes:
        pool = lane["attributes"]["heterarch.pool"]
        assert lane["name"] == f"invoke_agent {pool}-lane"
        assert lane["attributes"]["heterarch.hardware"] == {"wafer": "wafer-scale",
                                                            "frontier": "api"}[pool]
        assert lane["attributes"]["heterarch.route.reason"]
        assert lane["service"] == "heterarch-worker" and lane["status"] != "ERROR"
        up = tree.parent(lane)
        assert up["name"] in (f"create_agent {pool}-lane", "execute_tool llm_query_batched")
        lane_chats = [k for k in tree.children(lane) if _operation(k) == "chat"]
        assert lane_chats and all(c["attributes"]["heterarch.pool"] == pool
                                  for c in lane_chats)
    for chat in chats:
        messages = _parts(chat["attributes"]["gen_ai.input.messages"])
        assert messages[0]["role"] in ("system", "user")
        assert _parts(chat["attributes"]["gen_ai.output.messages"])[0]["role"] == "assistant"
    assert len({s["instance"] for s in spans}) == 3  # CLI + two workers
    assert f"trace: {root['trace_id']}" in done.stderr


def test_a_run_whose_models_are_down(nats_server: NatsServer, tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    done, spans = _run(nats_server.url, down, tmp_path)
    assert done.returncode == 3, done.stderr  # no answer, said so
    tree = Tree(spans)
    root = tree.one("invoke_agent rlm")
    agent = tree.one("invoke_agent rlm-root")
    assert tree.parent(agent) is tree.one("create_agent rlm-root")
    assert tree.parent(tree.parent(agent)) is root
    chats = tree.named("chat sim/frontier")
    assert chats and all(tree.parent(c) is agent for c in chats)
    # Every span on the way from the failed model call up to the root failed, with its type.
    for span in (*chats, agent, root):
        assert span["status"] == "ERROR", span["name"]
        assert span["attributes"]["error.type"], span["name"]
    assert chats[0]["attributes"]["error.type"] in agent["status_description"]
    assert agent["attributes"]["error.type"] == root["attributes"]["error.type"]
    assert "gen_ai.input.messages" not in root["attributes"]  # content capture is opt-in
    assert root["attributes"]["gen_ai.usage.input_tokens"] == 0
