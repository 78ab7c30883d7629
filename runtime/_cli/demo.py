"""``heterarch demo``: one long-context question, three ways, on four simulated pools.

Starts an embedded nats-server, the pool simulator, one worker process per pool, generates an
OOLONG-style task (~1M characters), and asks an RLM the same question three times: every
sub-call on the cheap wafer-scale pool, every sub-call on the frontier pool, and routed by the
automation layer. Prints answer vs truth (score 0.75^|error|), wall time, tokens and dollars
per pool, side by side. Everything model-side is SIMULATED and labelled so.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from opentelemetry import trace
from rich.console import Console
from rich.table import Table

from actors import Answer, Budget, ImageRef, Query, RLMAgent

from .._nats_server import NatsServer
from .._sim.oolong import Task, generate_task, score
from .._sim.simulator import Simulator, default_profiles, profiles_toml
from .._system import ActorSystem

POOLS = ("wafer", "h100", "frontier", "cpu")
tracer = trace.get_tracer("heterarch")
ROOT_POOL = "frontier"


@dataclass
class RunResult:
    label: str
    answer: Answer
    truth: int
    wall_s: float

    @property
    def score(self) -> float:
        return score(self.answer.text, self.truth)


async def ask_rlm(system: ActorSystem, question: str, *, context_ref: str = "",
                  context: str = "", root_pool: str = ROOT_POOL, pool_override: str = "",
                  max_depth: int = 1, max_iterations: int = 8, budget: Budget | None = None,
                  timeout: float = 900.0, images: list[ImageRef] | None = None) -> Answer:
    """Spawn a root RLM agent on ``root_pool``, ask it, stop it. ``images``: an image
    context (screenshots in the blob store)."""
    with tracer.start_as_current_span(
        "invoke_agent rlm", attributes={"gen_ai.operation.name": "invoke_agent",
                                        "gen_ai.agent.name": "rlm", "heterarch.pool": root_pool},
    ):
        # Transient: if its worker dies, the root restarts on another worker of the pool and
        # the ask below is sent again (the context is a blob, so nothing is lost).
        root = await system.spawn(RLMAgent, pool=root_pool, name="rlm-root",
                                  supervision="transient")
        try:
            query = Query(question=question, context=context, context_ref=context_ref,
                          max_depth=max_depth, max_iterations=max_iterations,
                          budget=budget or Budget(), pool_override=pool_override,
                          images=images or [])
            answer: Answer = await root.ask(query, timeout=timeout)
        finally:
            await system.stop(root)
        span = trace.get_current_span()
        span.set_attribute("heterarch.cost_usd", answer.cost_usd)
        span.set_attribute("heterarch.stop_reason", answer.stop_reason)
        return answer


def start_workers(config: Path, nats_url: str, pools: tuple[str, ...]) -> list[
    subprocess.Popen[bytes]
]:
    return [
        subprocess.Popen(
            [sys.executable, "-m", "runtime._cli", "worker", "--pool", pool, "--config",
             str(config), "--nats", nats_url],
            stdout=subprocess.DEVNULL,
        )
        for pool in pools
    ]


async def run_demo(*, records: int = 3000, time_scale: float = 1.0, question_index: int = 1,
                   console: Console | None = None) -> list[RunResult]:
    console = console or Console(width=max(130, Console().width))
    console.rule("[bold]heterarch demo[/] - heterogeneous recursion on [yellow]SIMULATED[/] pools")
    task = generate_task(n_records=records, target_chars=records * 340)
    question = task.questions[question_index]
    console.print(f"context: {len(task.context):,} characters, {records:,} records "
                  f"(generated, exact answers known)")
    console.print(f"question: [bold]{question.text}[/]  (truth: {question.answer})")
    with tempfile.TemporaryDirectory(prefix="heterarch-demo-") as tmp, NatsServer() as nats:
        console.print(f"[dim]embedded nats-server at {nats.url}[/]")
        profiles = default_profiles()
        async with Simulator(profiles, time_scale=time_scale) as sim:
            console.print(f"[dim]pool simulator (SIMULATED models) at {sim.base_url}[/]")
            config = Path(tmp) / "pools.toml"
            config.write_text('namespace = "demo"\n\n'
                              + profiles_toml(profiles, sim.base_url, modules=["actors"]))
            workers = start_workers(config, nats.url, POOLS)
            try:
                with console.status("starting 4 worker processes (one per pool)..."):
                    async with ActorSystem(nats=nats.url, namespace="demo",
                                           placement_timeout=60) as system:
                        await _wait_for_pools(system, POOLS)
                        ref = await system.node.transport.put_blob(task.context.encode())
                        results = []
                        for label, override in (("all on wafer (cheap)", "wafer"),
                                                ("all on frontier", "frontier"),
                                                ("routed (automation layer)", "")):
                            results.append(await _one_run(system, task, question_index, ref,
                                                          label, override, console))
            finally:
                for w in workers:
                    w.terminate()
                for w in workers:
                    w.wait(20)
    _print_results(console, results)
    return results


async def _wait_for_pools(system: ActorSystem, pools: tuple[str, ...]) -> None:
    for pool in pools:
        await system.node.wait_pool(pool)


async def _one_run(system: ActorSystem, task: Task, index: int, ref: str, label: str,
                   override: str, console: Console) -> RunResult:
    question = task.questions[index]
    started = time.monotonic()
    answer = await ask_rlm(system, question.text, context_ref=ref, pool_override=override)
    result = RunResult(label, answer, question.answer, time.monotonic() - started)
    console.print(f"  {label:28} answer={answer.text!r:8} truth={question.answer} "
                  f"score={result.score:.3f} wall={result.wall_s:.1f}s "
                  f"cost=${answer.cost_usd:.4f} ({answer.stop_reason})")
    return result


def _print_results(console: Console, results: list[RunResult]) -> None:
    table = Table(title="Same question, three placements (models SIMULATED)")
    table.add_column("run")
    table.add_column("answer / truth")
    table.add_column("score")
    table.add_column("wall s", justify="right")
    table.add_column("$ total", justify="right")
    for pool in POOLS:
        table.add_column(f"{pool} tok / $", justify="right")
    for r in results:
        cells = []
        for pool in POOLS:
            u = r.answer.usage.get(pool)
            cells.append(f"{u.tokens:,} / {u.cost_usd:.4f}" if u else "-")
        table.add_row(r.label, f"{r.answer.text} / {r.truth}", f"{r.score:.3f}",
                      f"{r.wall_s:.1f}", f"{r.answer.cost_usd:.4f}", *cells)
    console.print(table)
    if len(results) == 3:
        frontier, routed = results[1], results[2]
        console.print(
            f"routed vs all-frontier: cost x{routed.answer.cost_usd / frontier.answer.cost_usd:.2f}"
            f", wall time x{routed.wall_s / frontier.wall_s:.2f}, score "
            f"{routed.score:.3f} vs {frontier.score:.3f}"
        )


def demo_command(args: Any) -> int:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    if getattr(args, "vision", False):
        from .vision_demo import run_vision_demo

        anyio.run(lambda: run_vision_demo(pages=args.pages, time_scale=args.time_scale))
        return 0
    anyio.run(lambda: run_demo(records=args.records, time_scale=args.time_scale))
    return 0
