"""Helpers shared by the benchmarks: servers, worker processes, percentiles, RESULT lines."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
# Run as `python bench/x.py`, bench/ is first on sys.path and bench/sandbox.py would shadow the
# `sandbox` package: put the project root first instead.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if p and Path(p).resolve() != BENCH]


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(name: str, samples_s: list[float]) -> str:
    ms = [s * 1000 for s in samples_s]
    return (f"{name}: n={len(ms)} p50={percentile(ms, 50):.3f} ms p99={percentile(ms, 99):.3f} ms "
            f"mean={statistics.fmean(ms):.3f} ms")


def result(name: str, value: float) -> None:
    print(f"RESULT {name}={value:.4g}", flush=True)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def worker_process(
    nats_url: str, pools: dict[str, int], module: str, namespace: str = "bench"
) -> Iterator[subprocess.Popen[bytes]]:
    """A `heterarch worker` process serving ``pools`` (name -> capacity) for ``module``."""
    lines = [f'namespace = "{namespace}"']
    for pool, capacity in pools.items():
        lines += [f"[pools.{pool}]", 'hardware = "cpu"', f"capacity = {capacity}",
                  f'modules = ["{module}"]']
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write("\n".join(lines) + "\n")
    args = [sys.executable, "-m", "heterarch.cli", "worker", "--config", f.name, "--nats", nats_url,
            "--app-dir", str(ROOT)]
    for pool in pools:
        args += ["--pool", pool]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.unlink(f.name)

