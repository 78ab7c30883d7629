"""Tracing overhead: the ask round trip and the fan-out benchmark, tracing off vs on.

    python bench/tracing.py

Each benchmark runs twice in subprocesses (a tracer provider is per process): without any
tracing configuration, and with every process (bench client and workers) exporting all spans
through the batch span processor to a span file (``HETERARCH_TRACE_FILE``). Reports on / off
wall time for both; ``tracing_overhead_ratio`` is the larger.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

import _common  # noqa: F401  (sets sys.path)
from _common import ROOT, result


def run(script: str, args: list[str], trace_file: str | None) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "HETERARCH_"))}
    if trace_file:
        env["HETERARCH_TRACE_FILE"] = trace_file
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"{script} failed:\n{done.stderr[-3000:]}")
    return {m[0]: float(m[1]) for m in re.findall(r"RESULT (\w+)=([\d.eE+-]+)", done.stdout)}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        spans = os.path.join(tmp, "spans.jsonl")
        ask_off = run("ask_rtt.py", ["--n", "2000"], None)
        ask_on = run("ask_rtt.py", ["--n", "2000"], spans)
        fan_off = run("fanout.py", ["--calls", "500"], None)
        fan_on = run("fanout.py", ["--calls", "500"], spans)
        with open(spans) as f:
            span_count = sum(1 for _ in f)
    ask_ratio = ask_on["ask_rtt_p50_us"] / ask_off["ask_rtt_p50_us"]
    fan_ratio = fan_on["fanout_wall_s"] / fan_off["fanout_wall_s"]
    print(f"ask p50: {ask_off['ask_rtt_p50_us']:.0f} us off, {ask_on['ask_rtt_p50_us']:.0f} us on")
    print(f"fan-out of 500 calls: {fan_off['fanout_wall_s']:.2f}s off, "
          f"{fan_on['fanout_wall_s']:.2f}s on; {span_count:,} spans exported")
    result("tracing_ask_ratio", ask_ratio)
    result("tracing_fanout_ratio", fan_ratio)
    result("tracing_overhead_ratio", max(ask_ratio, fan_ratio))


if __name__ == "__main__":
    main()
