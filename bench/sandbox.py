"""Sandbox speed: our warm REPL vs `docker exec` (and the reference RLM's per-cell method).

    python bench/sandbox.py [--n 300]

- exec round trip of a trivial cell in a warm DockerSandbox vs `docker exec <same container>
  python3 -c pass` (how per-cell sandboxes run code);
- callback round trip (sandbox -> host coroutine -> sandbox);
- cold start to the first result, and acquire from a warm SandboxPool;
- 1,000 callbacks in one llm_query_batched, each sleeping 100 ms on the host;
- the reference implementation's per-cell method (rlms DockerREPL: `docker exec` of a script
  that loads the whole state with dill, runs the cell, saves it back), emulated faithfully in
  the same container with pickle (rlms' DockerREPL pip-installs dill inside the container and
  needs the network and python:3.11-slim, neither available here), with a 1 MB state.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

import _common  # noqa: F401  (sets sys.path)
import anyio
from _common import percentile, result

from sandbox import DockerSandbox, SandboxPool, build_image

REFERENCE_CELL = r"""
import pickle, sys, io, contextlib
try:
    with open('/tmp/state.pkl', 'rb') as f: state = pickle.load(f)
except FileNotFoundError:
    state = {}
out = io.StringIO()
with contextlib.redirect_stdout(out):
    exec(sys.argv[1], state)
state = {k: v for k, v in state.items() if not k.startswith('__')}
with open('/tmp/state.pkl', 'wb') as f: pickle.dump(state, f)
print(out.getvalue(), end='')
"""


def docker_exec(container_id: str, *args: str) -> None:
    subprocess.run(["docker", "exec", container_id, *args], check=True,
                   capture_output=True)


async def main(n: int) -> None:
    image = build_image(if_missing=True, progress=lambda line: None)

    async def echo(x: str) -> str:
        return x

    async def slow(x: str) -> str:
        await anyio.sleep(0.1)
        return x

    async with DockerSandbox(image=image) as sb:
        pass
    sb = DockerSandbox(image=image)
    sb.register_callback("echo", echo)
    sb.register_callback("llm_query", slow)
    await sb.start()
    try:
        for _ in range(20):
            await sb.exec("pass")
        exec_s = []
        for _ in range(n):
            t = time.perf_counter()
            await sb.exec("pass")
            exec_s.append(time.perf_counter() - t)
        callback_s = []
        await sb.exec("echo('x')")
        for _ in range(n):
            result_ = await sb.exec("t = __import__('time').perf_counter(); echo('x'); "
                                    "d = __import__('time').perf_counter() - t")
            assert result_.ok
            callback_s.append(float(await sb.get_var("d")))
        cid = sb.container.id
        docker_s = []
        for _ in range(max(20, n // 10)):
            t = time.perf_counter()
            await anyio.to_thread.run_sync(docker_exec, cid, "python3", "-c", "pass")
            docker_s.append(time.perf_counter() - t)
        await sb.exec("blob = 'x' * 1_000_000")
        await anyio.to_thread.run_sync(docker_exec, cid, "python3", "-c", REFERENCE_CELL,
                                       "blob = 'x' * 1_000_000")
        reference_s = []
        for _ in range(max(20, n // 10)):
            t = time.perf_counter()
            await anyio.to_thread.run_sync(docker_exec, cid, "python3", "-c", REFERENCE_CELL,
                                           "y = len(blob)")
            reference_s.append(time.perf_counter() - t)
        ours_big = []
        for _ in range(max(20, n // 10)):
            t = time.perf_counter()
            await sb.exec("y = len(blob)")
            ours_big.append(time.perf_counter() - t)
        t = time.perf_counter()
        batch = await sb.exec("r = llm_query_batched([str(i) for i in range(1000)])")
        batched_wall = time.perf_counter() - t
        assert batch.ok, batch.error
    finally:
        await sb.close()

    cold = []
    for _ in range(5):
        t = time.perf_counter()
        async with DockerSandbox(image=image) as cold_sb:
            await cold_sb.exec("pass")
        cold.append(time.perf_counter() - t)

    acquire = []
    async with SandboxPool(lambda: DockerSandbox(image=image), size=2) as pool:
        for _ in range(10):
            t = time.perf_counter()
            box = await pool.acquire()
            acquire.append(time.perf_counter() - t)
            await pool.release(box)

    p50 = percentile(exec_s, 50)
    print(f"warm exec p50 {p50 * 1000:.2f} ms; docker exec p50 "
          f"{percentile(docker_s, 50) * 1000:.1f} ms; callback p50 "
          f"{percentile(callback_s, 50) * 1000:.2f} ms")
    ours_ms = statistics.median(ours_big) * 1000
    print("reference = rlms 0.1.3 DockerREPL per-cell method, EMULATED (its image needs the "
          "network and python:3.11-slim, unavailable here)")
    print(f"reference per-cell (docker exec + pickle of a 1 MB state) p50 "
          f"{percentile(reference_s, 50) * 1000:.1f} ms vs ours {ours_ms:.2f} ms")
    print(f"cold start p50 {percentile(cold, 50) * 1000:.0f} ms; warm pool acquire p50 "
          f"{percentile(acquire, 50) * 1000:.2f} ms; 1,000 x 100 ms callbacks: "
          f"{batched_wall:.2f} s")
    result("exec_p50_ms", p50 * 1000)
    result("docker_exec_p50_ms", percentile(docker_s, 50) * 1000)
    result("docker_exec_ratio", p50 / percentile(docker_s, 50))
    result("callback_p50_ms", percentile(callback_s, 50) * 1000)
    result("cold_start_p50_ms", percentile(cold, 50) * 1000)
    result("warm_acquire_p50_ms", percentile(acquire, 50) * 1000)
    result("batched_1000_wall_s", batched_wall)
    result("rlms_cell_ratio", statistics.median(ours_big) / percentile(reference_s, 50))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=300)
    anyio.run(main, parser.parse_args().n)
