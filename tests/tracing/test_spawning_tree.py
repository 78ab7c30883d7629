"""One RLM run over three processes (CLI + two workers on two pools) is one readable trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime import NatsServer
from runtime._sim.oolong import generate_task
from runtime._sim.simulator import default_profiles, profiles_toml, serve_in_thread
from transports import new_id

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo_simulator() -> Iterator[str]:
    with serve_in_thread(default_profiles(), time_scale=0.05) as url:
        yield url


def test_three_processes_one_trace(nats_server: NatsServer, demo_simulator: str,
                                   tmp_path: Path) -> None:
    profiles = {k: v for k, v in default_profiles().items()
                if k in ("sim/wafer-small", "sim/frontier")}
    namespace = "tr" + new_id()[:8]
    config = tmp_path / "pools.toml"
    config.write_text(f'namespace = "{namespace}"\n\n'
                      + profiles_toml(profiles, demo_simulator, modules=["actors"]))
    context = tmp_path / "context.txt"
    task = generate_task(n_records=120, seed=2)
    context.write_text(task.context)
    spans_file = tmp_path / "spans.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["HETERARCH_TRACE_FILE"] = str(spans_file)
    workers = [
        subprocess.Popen([sys.executable, "-m", "runtime._cli", "worker", "--pool", pool,
                          "--config", str(config), "--nats", nats_server.url],
                         cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        for pool in ("frontier", "wafer")
    ]
    try:
        done = subprocess.run(
            [sys.executable, "-m", "runtime._cli", "rlm", task.questions[1].text,
             "--context", str(context), "--root-pool", "frontier", "--nats", nats_server.url,
             "--namespace", namespace],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(30)  # a clean stop flushes the workers' spans
    assert done.returncode == 0, done.stderr
    spans = [json.loads(line) for line in spans_file.read_text().splitlines()]
    assert len({s["trace_id"] for s in spans}) == 1, "one run, one trace"
    by_id: dict[str, dict[str, Any]] = {s["span_id"]: s for s in spans}
    roots = [s for s in spans if not s["parent_span_id"]]
    assert [r["name"] for r in roots] == ["invoke_agent rlm"]
    for s in spans:
        assert not s["parent_span_id"] or s["parent_span_id"] in by_id, s["name"]

    def parent(s: dict[str, Any]) -> dict[str, Any]:
        return by_id[s["parent_span_id"]]

    # A message's span is a child of its sender's span; the spawn is a sibling before it.
    agent = next(s for s in spans if s["name"] == "invoke_agent RLMAgent")
    assert parent(agent)["name"] == "invoke_agent rlm"
    created = next(s for s in spans if s["name"] == "create_agent RLMAgent")
    assert parent(created)["name"] == "invoke_agent rlm"
    lane = next(s for s in spans if s["name"] == "create_agent LLMAgent")
    assert parent(lane)["name"] == "execute_tool llm_query_batched"
    assert agent["attributes"]["heterarch.pool"] == "frontier"
    assert agent["attributes"]["heterarch.hardware"] == "api"
    names = {s["name"] for s in spans}
    assert {"chat sim/frontier", "execute_tool repl", "execute_tool llm_query_batched",
            "invoke_agent LLMAgent", "chat sim/wafer-small"} <= names
    wafer_agent = next(s for s in spans if s["name"] == "invoke_agent LLMAgent"
                       and s["attributes"]["heterarch.pool"] == "wafer")
    assert wafer_agent["attributes"]["heterarch.hardware"] == "wafer-scale"
    assert len({s["instance"] for s in spans}) == 3  # CLI + two workers
    chats = [s for s in spans if s["name"].startswith("chat ")]
    leaves = sum(float(s["attributes"]["heterarch.cost_usd"]) for s in chats)
    root_cost = float(roots[0]["attributes"]["heterarch.cost_usd"])
    assert root_cost == pytest.approx(leaves)
    assert agent["attributes"]["heterarch.usage.tokens"] == sum(
        s["attributes"]["gen_ai.usage.input_tokens"] + s["attributes"]["gen_ai.usage.output_tokens"]
        for s in chats
    )
