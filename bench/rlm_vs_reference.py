"""The same RLM program on the same simulated pools: heterarch vs the reference implementation.

    python bench/rlm_vs_reference.py [--records 10000] [--time-scale 0.2]

The reference (PyPI ``rlms`` 0.1.3, local REPL) is installed into ``bench/.venv-rlms`` (its
own environment; never a dependency) and run in a subprocess against the simulator. Both use
the simulated frontier model as root (the same scripted chunk-and-aggregate program) and for
every sub-call, with recursion depth 2 allowed, so the difference is the runtime: how sub-calls
fan out, and the sandbox. Prints both wall times, the ratio, and whether both gave the same
answer. Then both run a plain fan-out at equal concurrency (16 concurrent sub-calls, the
reference's limit): one root call whose program sends 1,000 chunks through
``llm_query_batched``, every model call 0.2 s (``rlm_reference_ratio_equal_concurrency``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (sets sys.path)
import anyio
from _common import ROOT, result

from actors import Answer, Query, RLMAgent
from heterarch.sim.oolong import generate_task
from heterarch.sim.simulator import (
    Profile,
    default_profiles,
    profiles_toml,
    serve_in_thread,
)
from runtime import ActorSystem, NatsServer
from runtime._models.llm import litellm_module
from transports import new_id

VENV = ROOT / "bench" / ".venv-rlms"
REFERENCE = r"""
import json, sys, time
from rlm import RLM
url, context_file, question, model = sys.argv[1:5]
rlm = RLM(backend="openai", environment="local", max_depth=2, max_iterations=8,
          backend_kwargs={"model_name": model, "base_url": url, "api_key": "x"})
context = open(context_file).read()
started = time.monotonic()
completion = rlm.completion(context, root_prompt=question)
print(json.dumps({"answer": completion.response, "wall": time.monotonic() - started}))
"""


# The equal-concurrency workload: one root call writes a program that sends 1,000 chunks of the
# context through llm_query_batched and sums the answers; every model call takes 0.2 s.
FANOUT_CHUNKS = 1000
FANOUT_PROGRAM = """```repl
chunks = [context[i:i + 100] for i in range(0, len(context), 100)]
replies = llm_query_batched([f"Count the items: {c}" for c in chunks])
answer["content"] = str(sum(int(r.strip()) for r in replies))
answer["ready"] = True
```"""


class FanoutResponder:
    """The root model writes ``FANOUT_PROGRAM``; each sub-call answers 1."""

    def reply(self, messages: Sequence[dict[str, str]], model: str) -> str:
        if str(messages[-1].get("content", "")).startswith("Count the items:"):
            return "1"
        return FANOUT_PROGRAM


def run_reference(python: str, url: str, context_file: Path, question: str,
                  model: str) -> dict[str, Any]:
    done = subprocess.run([python, "-c", REFERENCE, url, str(context_file), question, model],
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"reference run failed:\n{done.stderr[-3000:]}")
    reference: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return reference


def reference_python() -> str:
    python = VENV / "bin" / "python"
    if not python.exists():
        print("installing the reference implementation (rlms 0.1.3) into bench/.venv-rlms",
              flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "rlms==0.1.3"], check=True)
    return str(python)


async def run_heterarch(server: NatsServer, url: str, model: str, profile: Profile,
                        context: str, question: str, tmp: Path,
                        concurrency: int | None) -> tuple[float, Answer]:
    """One run of the program on a worker of ``model``'s pool, every sub-call there too;
    ``concurrency``: the pool's ``max_concurrency`` (None: the profile's)."""
    if concurrency is not None:
        profile = dataclasses.replace(profile, concurrency=concurrency)
    namespace = "ref" + new_id()[:8]
    config = tmp / f"pools-{namespace}.toml"
    config.write_text(f'namespace = "{namespace}"\n'
                      + profiles_toml({model: profile}, url, modules=["actors"]))
    pool = tomllib.loads(config.read_text())["pools"].popitem()[0]
    worker = subprocess.Popen([sys.executable, "-m", "heterarch.cli", "worker", "--pool",
                               pool, "--config", str(config), "--nats", server.url],
                              cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        async with ActorSystem(nats=server.url, namespace=namespace,
                               placement_timeout=60) as system:
            await system.node.wait_pool(pool)
            ref = await system.node.transport.put_blob(context.encode())
            agent = await system.spawn(RLMAgent, pool=pool, supervision="temporary")
            started = time.monotonic()
            answer = await agent.ask(Query(question=question, context_ref=ref, max_depth=2,
                                           pool_override=pool), timeout=1800)
            wall = time.monotonic() - started
            await system.stop(agent)
    finally:
        worker.terminate()
        worker.wait(30)
    return wall, answer


async def main(records: int, time_scale: float) -> None:
    litellm_module()
    task = generate_task(n_records=records)
    question = task.questions[1]
    profiles = default_profiles()
    for profile in profiles.values():
        profile.ttft_s *= time_scale
        profile.tokens_per_s /= time_scale
    python = reference_python()
    fanout = Profile("sim/fanout", "api", 0.0, 1e9, 64, 0.0, 0.0, 3, fixed_latency_s=0.2,
                     responder=FanoutResponder())
    frontier = profiles["sim/frontier"]
    with serve_in_thread({**profiles, "sim/fanout": fanout}) as url, \
            tempfile.TemporaryDirectory() as tmp, NatsServer() as server:
        context_file = Path(tmp) / "context.txt"
        context_file.write_text(task.context)
        reference = run_reference(python, url, context_file, question.text, "sim/frontier")
        ours_wall, answer = await run_heterarch(server, url, "sim/frontier", frontier,
                                                task.context, question.text, Path(tmp), None)
        items = "x" * (100 * FANOUT_CHUNKS)
        fanout_file = Path(tmp) / "items.txt"
        fanout_file.write_text(items)
        fanout_reference = run_reference(python, url, fanout_file, "How many items?",
                                         "sim/fanout")
        equal_wall, equal = await run_heterarch(server, url, "sim/fanout", fanout, items,
                                                "How many items?", Path(tmp), 16)
    same = (answer.text.strip() == str(reference["answer"]).strip()
            and equal.text.strip() == str(fanout_reference["answer"]).strip()
            == str(FANOUT_CHUNKS))
    floor = math.ceil(FANOUT_CHUNKS / 16) * 0.2 + 0.2
    print(f"question: {question.text} (truth {question.answer})")
    print(f"reference rlms: answer {reference['answer']!r} in {reference['wall']:.2f}s")
    print(f"heterarch:      answer {answer.text!r} in {ours_wall:.2f}s "
          f"(pool concurrency {frontier.concurrency}, the reference's is 16)")
    print(f"{FANOUT_CHUNKS} sub-calls of 0.2 s, both at 16 concurrent sub-calls (floor "
          f"{floor:.1f}s): reference {fanout_reference['wall']:.2f}s "
          f"(answer {fanout_reference['answer']!r}), heterarch {equal_wall:.2f}s "
          f"(answer {equal.text!r})")
    result("reference_wall_s", reference["wall"])
    result("heterarch_wall_s", ours_wall)
    result("rlm_reference_wall_ratio", ours_wall / reference["wall"])
    result("reference_equal_concurrency_wall_s", fanout_reference["wall"])
    result("heterarch_equal_concurrency_wall_s", equal_wall)
    result("rlm_reference_ratio_equal_concurrency", equal_wall / fanout_reference["wall"])
    result("same_answer", 1 if same else 0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=10000)
    parser.add_argument("--time-scale", type=float, default=0.2)
    a = parser.parse_args()
    anyio.run(main, a.records, a.time_scale)
