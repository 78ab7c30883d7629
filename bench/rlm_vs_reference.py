"""The same RLM program on the same simulated pools: heterarch vs the reference implementation.

    python bench/rlm_vs_reference.py [--records 10000] [--time-scale 0.2]

The reference (PyPI ``rlms`` 0.1.3, local REPL) is installed into ``bench/.venv-rlms`` (its
own environment; never a dependency) and run in a subprocess against the simulator. Both use
the simulated frontier model as root (the same scripted chunk-and-aggregate program) and for
every sub-call, with recursion depth 2 allowed, so the difference is the runtime: how sub-calls
fan out, and the sandbox. Prints both wall times, the ratio, and whether both gave the same
answer.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (sets sys.path)
import anyio
from _common import ROOT, result

from actors import Query, RLMAgent
from runtime import ActorSystem, NatsServer
from runtime._models.llm import litellm_module
from runtime._sim.oolong import generate_task
from runtime._sim.simulator import default_profiles, profiles_toml, serve_in_thread

VENV = ROOT / "bench" / ".venv-rlms"
REFERENCE = r"""
import json, sys, time
from rlm import RLM
url, context_file, question = sys.argv[1:4]
rlm = RLM(backend="openai", environment="local", max_depth=2, max_iterations=8,
          backend_kwargs={"model_name": "sim/frontier", "base_url": url, "api_key": "x"})
context = open(context_file).read()
started = time.monotonic()
completion = rlm.completion(context, root_prompt=question)
print(json.dumps({"answer": completion.response, "wall": time.monotonic() - started}))
"""


def reference_python() -> str:
    python = VENV / "bin" / "python"
    if not python.exists():
        print("installing the reference implementation (rlms 0.1.3) into bench/.venv-rlms",
              flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "rlms==0.1.3"], check=True)
    return str(python)


async def main(records: int, time_scale: float) -> None:
    litellm_module()
    task = generate_task(n_records=records)
    question = task.questions[1]
    profiles = default_profiles()
    for profile in profiles.values():
        profile.ttft_s *= time_scale
        profile.tokens_per_s /= time_scale
    python = reference_python()
    with serve_in_thread(profiles) as url, tempfile.TemporaryDirectory() as tmp, \
            NatsServer() as server:
        context_file = Path(tmp) / "context.txt"
        context_file.write_text(task.context)
        done = subprocess.run([python, "-c", REFERENCE, url, str(context_file), question.text],
                              capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise SystemExit(f"reference run failed:\n{done.stderr[-3000:]}")
        reference = json.loads(done.stdout.strip().splitlines()[-1])

        config = Path(tmp) / "pools.toml"
        config.write_text('namespace = "ref"\n' + profiles_toml(
            {"sim/frontier": profiles["sim/frontier"]}, url, modules=["actors"]))
        worker = subprocess.Popen([sys.executable, "-m", "runtime._cli", "worker", "--pool",
                                   "frontier", "--config", str(config), "--nats", server.url],
                                  cwd=ROOT, stdout=subprocess.DEVNULL)
        try:
            async with ActorSystem(nats=server.url, namespace="ref",
                                   placement_timeout=60) as system:
                await system.node.wait_pool("frontier")
                ref = await system.node.transport.put_blob(task.context.encode())
                agent = await system.spawn(RLMAgent, pool="frontier", supervision="temporary")
                started = time.monotonic()
                answer = await agent.ask(Query(question=question.text, context_ref=ref,
                                               max_depth=2, pool_override="frontier"),
                                         timeout=1800)
                ours_wall = time.monotonic() - started
                await system.stop(agent)
        finally:
            worker.terminate()
            worker.wait(30)
    same = answer.text.strip() == str(reference["answer"]).strip()
    print(f"question: {question.text} (truth {question.answer})")
    print(f"reference rlms: answer {reference['answer']!r} in {reference['wall']:.2f}s")
    print(f"heterarch:      answer {answer.text!r} in {ours_wall:.2f}s")
    result("reference_wall_s", reference["wall"])
    result("heterarch_wall_s", ours_wall)
    result("rlm_reference_wall_ratio", ours_wall / reference["wall"])
    result("same_answer", 1 if same else 0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=10000)
    parser.add_argument("--time-scale", type=float, default=0.2)
    a = parser.parse_args()
    anyio.run(main, a.records, a.time_scale)
