"""Record one real run into a span file: `heterarch rlm` and two worker processes (frontier;
wafer + h100, the wafer pool kept narrow so sub-calls queue), the simulator over HTTP, a real
nats-server, Docker sandboxes, content capture on.

Run as a script to make a span file by hand: ``python -m tests.view.recorded_run OUT_DIR NATS_URL``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from heterarch.sim.oolong import generate_task
from heterarch.sim.simulator import default_profiles, profiles_toml
from runtime._nats_server import free_port
from transports import new_id

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class RecordedRun:
    spans: Path
    log: Path  # the run log of the same run (`heterarch rlm --log`)
    result: subprocess.CompletedProcess[str]
    question: str


def _edit_pool(toml: str, pool: str, old: str, new: str) -> str:
    head, _, rest = toml.partition(f"[pools.{pool}]\n")
    section, sep, tail = rest.partition("\n[pools.")
    assert old in section, (pool, old)
    return head + f"[pools.{pool}]\n" + section.replace(old, new) + sep + tail


def record_run(nats_url: str, simulator_url: str, out: Path, *, records: int = 1500,
               wafer_concurrency: int = 4, down: str = "", max_depth: int = 1) -> RecordedRun:
    """``down``: a pool whose endpoint refuses connections (nothing listens there)."""
    profiles = {k: v for k, v in default_profiles().items()
                if k in ("sim/wafer-small", "sim/h100-open", "sim/frontier")}
    namespace = "vw" + new_id()[:8]
    toml = profiles_toml(profiles, simulator_url, modules=["actors"])
    # the wafer pool narrow: its sub-calls wait their turn (queueing on the timeline)
    toml = _edit_pool(toml, "wafer", "max_concurrency = 64",
                      f"max_concurrency = {wafer_concurrency}")
    if down:
        toml = _edit_pool(toml, down, f'api_base = "{simulator_url}"',
                          f'api_base = "http://127.0.0.1:{free_port()}/v1"\nmax_retries = 1')
    config = out / "pools.toml"
    config.write_text(f'namespace = "{namespace}"\n\n' + toml)
    task = generate_task(n_records=records, seed=3)
    context = out / "context.txt"
    context.write_text(task.context)
    spans = out / "spans.jsonl"
    log = out / "run.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(HETERARCH_TRACE_FILE=str(spans),
               OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="true")
    workers = [
        subprocess.Popen([sys.executable, "-m", "heterarch.cli", "worker", *pools,
                          "--config", str(config), "--nats", nats_url],
                         cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        for pools in (["--pool", "frontier"], ["--pool", "wafer", "--pool", "h100"])
    ]
    question = task.questions[1].text
    try:
        _wait_for_pools(nats_url, namespace, {"frontier", "wafer", "h100"}, env)
        result = subprocess.run(
            [sys.executable, "-m", "heterarch.cli", "rlm", question,
             "--context", str(context), "--root-pool", "frontier", "--nats", nats_url,
             "--namespace", namespace, "--max-depth", str(max_depth), "--log", str(log)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(30)  # a clean stop flushes the workers' spans
    return RecordedRun(spans, log, result, question)


def _wait_for_pools(nats_url: str, namespace: str, pools: set[str],
                    env: dict[str, str]) -> None:
    """Until the cluster's heartbeats show a worker for every pool (the router sends no
    sub-call to a pool it has not heard of); ``heterarch ping`` waits for a heartbeat."""
    deadline = time.monotonic() + 120
    seen: set[str] = set()
    while time.monotonic() < deadline:
        done = subprocess.run(
            [sys.executable, "-m", "heterarch.cli", "ping", "--json", "--nats", nats_url,
             "--namespace", namespace], cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=60)
        if done.returncode == 0:
            seen = set(json.loads(done.stdout)["pools"])
            if pools <= seen:
                return
    raise AssertionError(f"workers of {sorted(pools - seen)} never answered")


if __name__ == "__main__":
    from heterarch.sim.simulator import serve_in_thread

    target = Path(sys.argv[1])
    target.mkdir(parents=True, exist_ok=True)
    with serve_in_thread(default_profiles(), time_scale=0.05) as url:
        run = record_run(sys.argv[2], url, target)
    print(run.result.stdout, run.result.stderr, run.spans)
