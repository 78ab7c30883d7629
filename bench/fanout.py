"""Fan-out of 1,000 ``llm_query`` calls through an RLM agent onto two simulated pools.

    python bench/fanout.py [--calls 1000] [--latency 0.5] [--concurrency 64]

Two pools served by two worker processes, each call sleeping ``--latency`` seconds in the
simulator with ``--concurrency`` slots per pool. The root RLM's program calls
``llm_query_batched`` with every prompt; the runtime routes them, half to each pool (by tag).
Ideal wall time: ceil(calls / (2 x concurrency)) x latency. Also measures the CPU per sub-call
across all processes of the run (workers and nats-server; tracing off), with the model client
included (``subcall_cpu_total_ms``) and net of it (``cpu_per_subcall_ms``). The model client's
own CPU per call is measured in the same run on both paths: the lean OpenAI-compatible client
the pools use (``llm_client_cpu_ms``) and litellm (``litellm_client_cpu_ms``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (sets sys.path)
import anyio
from _common import ROOT, result

from actors import Query, RLMAgent
from heterarch.sim.simulator import Profile, ScriptedResponder, serve_in_thread
from runtime import ActorSystem, NatsServer, PoolConfig
from runtime._models.llm import LLMClient, litellm_module
from runtime._observe.tracing import configure_tracing

PROGRAM = """```repl
prompts = [f"item {{i}}" for i in range({calls})]
pools = ["left", "right"] * (len(prompts) // 2) + ["left"] * (len(prompts) % 2)
replies = llm_query_batched(prompts, pools=pools)
answer_count = len(replies)
print(answer_count)
```"""


def process_cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of live processes (from /proc: they are still running)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


async def client_cpu_per_call(url: str, path: str, n: int = 200) -> float:
    """The model client's own CPU per call on ``path`` ("openai" or "litellm") against the
    same simulator. The simulator serves from another thread of this process: the CPU counted
    is this thread's only."""
    async with LLMClient(PoolConfig(name="x", model="openai/fast", api_base=url,
                                    max_concurrency=64, client=path)) as client:
        await client.complete([{"role": "user", "content": "warm"}])
        start = time.thread_time()
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(client.complete, [{"role": "user", "content": "x"}])
        return (time.thread_time() - start) / n


async def main(calls: int, latency: float, concurrency: int) -> None:
    litellm_module()
    tracing = configure_tracing(role="bench")  # on only when the environment asks for it
    root = ScriptedResponder([PROGRAM.format(calls=calls), "FINAL_VAR(answer_count)"])
    profiles = {
        "root": Profile("root", "api", 0.0, 1e9, 8, 0, 0, 3, responder=root),
        "left": Profile("left", "h100", latency, 1e9, concurrency, 0, 0, 1),
        "right": Profile("right", "wafer-scale", latency, 1e9, concurrency, 0, 0, 1),
        "fast": Profile("fast", "cpu", 0.0, 1e9, 64, 0, 0, 1),
    }
    with serve_in_thread(profiles) as url, NatsServer() as server, \
            tempfile.TemporaryDirectory() as tmp:
        model_cpu = await client_cpu_per_call(url, "openai")
        litellm_cpu = await client_cpu_per_call(url, "litellm")
        config = Path(tmp) / "pools.toml"
        lines = ['namespace = "fanout"', 'sandbox = "docker"']
        for name in ("root", "left", "right"):
            lines += [f"[pools.{name}]", f'hardware = "{profiles[name].hardware}"',
                      'modules = ["actors"]', f'model = "openai/{name}"', f'api_base = "{url}"',
                      f"max_concurrency = {concurrency}", "capacity = 1000", "tier = 1"]
        config.write_text("\n".join(lines) + "\n")
        import subprocess

        workers = [subprocess.Popen(
            [sys.executable, "-m", "heterarch.cli", "worker", "--config", str(config), "--nats",
             server.url, *args], cwd=ROOT, stdout=subprocess.DEVNULL)
            for args in (["--pool", "root"], ["--pool", "left"], ["--pool", "right"])]
        try:
            async with ActorSystem(nats=server.url, namespace="fanout",
                                   placement_timeout=60) as system:
                for pool in ("root", "left", "right"):
                    await system.node.wait_pool(pool)
                agent = await system.spawn(RLMAgent, pool="root", supervision="temporary")
                assert server.process is not None
                pids = [w.pid for w in workers] + [server.process.pid]
                cpu_before = process_cpu_s(pids)
                started = time.monotonic()
                answer = await agent.ask(Query(question="fan out", max_iterations=3),
                                         timeout=600)
                wall = time.monotonic() - started
                run_cpu = process_cpu_s(pids) - cpu_before
                await system.stop(agent)
        finally:
            for w in workers:
                w.terminate()
            for w in workers:
                w.wait(30)
    if tracing is not None:
        tracing.shutdown()
    assert answer.text == str(calls), answer
    ideal = math.ceil(calls / (2 * concurrency)) * latency
    sub_calls = calls + 2  # plus the root model's two turns
    per_call_total = run_cpu / sub_calls
    ours = max(0.0, per_call_total - model_cpu)
    print(f"{calls} sub-calls of {latency}s on 2 pools x {concurrency}: wall {wall:.2f}s, "
          f"ideal {ideal:.2f}s")
    print(f"CPU per sub-call in the worker processes and nats-server (root agent + "
          f"model-calling agents; the simulator runs in this process and is not counted): "
          f"{per_call_total * 1000:.2f} ms, of which the model client (lean) "
          f"{model_cpu * 1000:.2f} ms (litellm would be {litellm_cpu * 1000:.2f} ms)")
    result("fanout_wall_s", wall)
    result("fanout_ideal_ratio", wall / ideal)
    result("subcall_cpu_total_ms", per_call_total * 1000)
    result("llm_client_cpu_ms", model_cpu * 1000)
    result("litellm_client_cpu_ms", litellm_cpu * 1000)
    result("cpu_per_subcall_ms", ours * 1000)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=64)
    a = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    anyio.run(main, a.calls, a.latency, a.concurrency)
