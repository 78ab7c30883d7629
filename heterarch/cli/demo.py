"""``heterarch demo``: the talk's table, on simulated pools with published speeds and prices.

Starts an embedded nats-server, the pool simulator, one worker process per configuration,
generates an OOLONG-style task (~1M characters) and asks an RLM one question of each kind
(count, comparison between users, since a year) three ways: every call on the frontier API
(GPT-5-class), heterogeneous on wafer-scale pools (Cerebras-class), heterogeneous on an RDU pool
(SambaNova-class). In the heterogeneous runs the automation layer places the root agent and
every sub-call. Prints score, wall time and dollars per configuration and the ratios to the
all-frontier run. Everything model-side is SIMULATED and labelled so.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console
from rich.table import Table

from actors import Answer
from runtime import RLM, NatsServer

from ..sim.oolong import QUESTION_KINDS, Task, generate_task, score
from ..sim.simulator import Simulator, default_profiles, profiles_toml


@dataclass(frozen=True)
class Placement:
    """One configuration of the table: its label and the pools its run may use."""

    label: str
    pools: tuple[str, ...]


FRONTIER = Placement("all frontier (GPT-5-class API)", ("frontier",))
WAFER = Placement("heterogeneous on wafer-scale", ("wafer", "wafer-large"))
RDU = Placement("heterogeneous on RDU", ("rdu",))
PLACEMENTS = (FRONTIER, WAFER, RDU)


@dataclass
class RunResult:
    label: str
    answer: Answer
    truth: int | str
    wall_s: float
    kind: str = "count"
    seed: int = 0  # the context's seed: with the question's index, pairs the placements' runs
    index: int = 0

    @property
    def score(self) -> float:
        return score(self.answer.text, self.truth)


@dataclass(frozen=True)
class Summary:
    """One configuration over all questions: mean score, total wall time and dollars."""

    label: str
    score: float
    wall_s: float
    cost_usd: float


def start_workers(config: Path, nats_url: str, groups: Sequence[str | Sequence[str]]) -> list[
    subprocess.Popen[bytes]
]:
    """One ``heterarch worker`` process per pool, or per group of pools."""
    workers = []
    for group in groups:
        pools = [group] if isinstance(group, str) else list(group)
        args = [sys.executable, "-m", "heterarch.cli", "worker", "--config", str(config),
                "--nats", nats_url]
        for pool in pools:
            args += ["--pool", pool]
        workers.append(subprocess.Popen(args, stdout=subprocess.DEVNULL))
    return workers


async def wait_for_pools(rlm: RLM, pools: Sequence[str]) -> None:
    """Until a worker serves each of ``pools`` (``NoWorkerForPool`` after its timeout)."""
    for pool in pools:
        await rlm.system.node.wait_pool(pool)


def questions_per_kind(task: Task, n: int = 1) -> list[int]:
    """Indexes of the first ``n`` questions of each kind (count, compare, temporal)."""
    return [i for kind in QUESTION_KINDS
            for i in [j for j, q in enumerate(task.questions) if q.kind == kind][:n]]


def routing_toml(routing: dict[str, Any]) -> str:
    """The ``[routing]`` table (quality target, the learning router) of the demo's config."""
    lines = ["[routing]"]
    for key, value in routing.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n\n"


async def run_demo(*, records: int = 3000, time_scale: float = 1.0,
                   questions: Sequence[int] | None = None, per_kind: int = 1, seed: int = 7,
                   console: Console | None = None, seeds: Sequence[int] = (),
                   hard_words: tuple[str, ...] = (),
                   routing: dict[str, Any] | None = None,
                   placements: Sequence[Placement] = ()) -> list[RunResult]:
    """Every placement on every question; returns the runs (``summarize`` them).

    ``seeds``: one generated context per seed (default: ``seed``), the same questions of each;
    ``hard_words``: which records the simulated models find hard (default: the generator's
    hedged ones); ``routing``: the config's ``[routing]`` table (default: the learning router
    with its defaults, labels kept in a temporary file); ``placements``: which
    configurations (default: all three)."""
    console = console or Console(width=max(130, Console().width))
    console.rule("[bold]heterarch demo[/] - heterogeneous recursion on [yellow]SIMULATED[/] pools")
    placements = tuple(placements) or PLACEMENTS
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="heterarch-demo-") as tmp, NatsServer() as nats:
        profiles = default_profiles(hard_words=hard_words)
        async with Simulator(profiles, time_scale=time_scale) as sim:
            console.print(f"[dim]embedded nats-server at {nats.url}; pool simulator (SIMULATED "
                          f"models, published speeds and prices) at {sim.base_url}[/]")
            path = Path(tmp) / "pools.toml"
            table = routing if routing is not None else {"labels": str(Path(tmp) / "labels")}
            path.write_text('namespace = "demo"\n\n' + routing_toml(table)
                            + profiles_toml(profiles, sim.base_url, modules=["actors"]))
            workers = start_workers(path, nats.url, [p.pools for p in placements])
            try:
                with console.status("starting one worker process per configuration..."):
                    async with RLM(path, nats=nats.url, max_iterations=8,
                                   placement_timeout=120) as rlm:
                        for placement in placements:
                            await wait_for_pools(rlm, placement.pools)
                        for one_seed in seeds or (seed,):
                            task = generate_task(n_records=records,
                                                 target_chars=records * 340, seed=one_seed)
                            chosen = (list(questions) if questions is not None
                                      else questions_per_kind(task, per_kind))
                            console.print(f"context (seed {one_seed}): {len(task.context):,} "
                                          f"characters, {records:,} records (generated, exact "
                                          f"answers known); {len(chosen)} questions")
                            for index in chosen:
                                question = task.questions[index]
                                console.print(f"[bold]{question.kind}:[/] "
                                              f"{question.text[:110]} (truth: {question.answer})")
                                for placement in placements:
                                    results.append(await _one_run(rlm, task, index, placement,
                                                                  console, seed=one_seed))
            finally:
                for w in workers:
                    w.terminate()
                for w in workers:
                    w.wait(20)
    print_table(console, summarize(results))
    return results


async def _one_run(rlm: RLM, task: Task, index: int, placement: Placement,
                   console: Console, *, seed: int = 0) -> RunResult:
    question = task.questions[index]
    started = time.monotonic()
    answer = await rlm.ask(question.text, context=task.context, pools=placement.pools)
    result = RunResult(placement.label, answer, question.answer, time.monotonic() - started,
                       question.kind, seed, index)
    pools = ", ".join(f"{p} {u.calls}" for p, u in sorted(answer.usage.items()))
    console.print(f"  {placement.label:32} answer={answer.text!r:9} score={result.score:.3f} "
                  f"wall={result.wall_s:5.1f}s cost=${answer.cost_usd:.4f} calls: {pools} "
                  f"({answer.stop_reason})")
    return result


def summarize(results: Sequence[RunResult]) -> list[Summary]:
    """Per configuration, in first-seen order: the score averaged over question kinds (the
    mean of each kind's mean), summed wall time and dollars."""
    labels = list(dict.fromkeys(r.label for r in results))
    return [Summary(label, statistics.fmean(
                        statistics.fmean(r.score for r in runs if r.kind == kind)
                        for kind in dict.fromkeys(r.kind for r in runs)),
                    sum(r.wall_s for r in runs), sum(r.answer.cost_usd for r in runs))
            for label in labels for runs in [[r for r in results if r.label == label]]]


def print_table(console: Console, summaries: Sequence[Summary]) -> None:
    """The talk's table: score, wall time, dollars, and the ratios to the first row."""
    if not summaries:
        return
    base = summaries[0]
    table = Table(title="Same questions, three configurations (models SIMULATED with "
                        "published speeds and prices; see docs/llm.md)")
    for column in ("configuration", "score", "wall s", "$", "cost vs frontier",
                   "time vs frontier"):
        table.add_column(column, justify="left" if column == "configuration" else "right")
    for s in summaries:
        cheaper = base.cost_usd / s.cost_usd if s.cost_usd else float("inf")
        faster = base.wall_s / s.wall_s if s.wall_s else float("inf")
        table.add_row(s.label, f"{s.score:.3f}", f"{s.wall_s:.1f}", f"{s.cost_usd:.4f}",
                      f"{cheaper:.1f}x cheaper", f"{faster:.1f}x faster")
    console.print(table)


def demo_command(args: Any) -> int:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    if getattr(args, "vision", False):
        from .vision_demo import run_vision_demo

        anyio.run(lambda: run_vision_demo(pages=args.pages, time_scale=args.time_scale))
        return 0
    from ..sim.oolong import shifted_difficulty

    seed = getattr(args, "hard_words", None)
    hard_words = shifted_difficulty(seed) if seed is not None else ()
    anyio.run(lambda: run_demo(records=args.records, time_scale=args.time_scale,
                               hard_words=hard_words))
    return 0
