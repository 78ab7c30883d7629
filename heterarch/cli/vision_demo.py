"""``heterarch demo --vision``: questions about web-page screenshots, all-frontier vs routed.

Starts an embedded nats-server, the pool simulator with the two vision pools (a Qwen3-VL-8B-
class model on an H100, a GPT-5-class frontier API: published prices and speeds, see
docs/vision.md) and the wafer-scale text pools of ``heterarch demo``, one worker process per
configuration, renders shop pages with small text, and asks an RLM the same questions twice:
everything (the root agent and every sub-call) on the frontier vision pool, then routed by the
automation layer: the root placed among the wafer-scale text pools like any recursive agent
(the code-writing tier), page layouts to the cheapest vision pool that reads their text at the
size it sees the page, crop-and-read to the cheapest vision pool. Prints score, wall time,
dollars and calls per pool. Everything model-side is SIMULATED and labelled so.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from actors import Answer
from runtime import RLM, NatsServer

from ..sim.profiles import default_profiles
from ..sim.simulator import Simulator, profiles_toml
from ..sim.vision import vision_profiles
from ..sim.vision_task import VisionRootResponder, VisionTask, make_task, score
from .demo import start_workers, wait_for_pools

POOLS = ("vision-small", "vision-frontier")
ROOT_POOL = "vision-frontier"
ROOT_POOLS = ("wafer", "wafer-large")  # the routed run's root: placed among these


@dataclass
class VisionRun:
    label: str
    answer: Answer
    score: float
    wall_s: float


async def run_vision_demo(*, pages: int = 8, seed: int = 11, time_scale: float = 1.0,
                          console: Console | None = None) -> list[VisionRun]:
    """The two runs (all-frontier, routed); prints them and returns them in that order."""
    console = console or Console(width=max(130, Console().width))
    console.rule("[bold]heterarch demo --vision[/] - zoom sub-calls on [yellow]SIMULATED[/] "
                 "vision pools")
    task = make_task(seed, pages)
    console.print(f"context: {pages} generated shop screenshots "
                  f"({task.pages[0].width}x{task.pages[0].height}, text down to 8 px); "
                  f"{len(task.questions)} questions with known answers")
    root = VisionRootResponder()
    profiles = vision_profiles(root)
    text = default_profiles()  # the wafer-scale text pools, answering the root's turns
    for model in ("sim/wafer-small", "sim/wafer-large"):
        profiles[model] = replace(text[model], responder=root)
    with tempfile.TemporaryDirectory(prefix="heterarch-vision-") as tmp, NatsServer() as nats:
        async with Simulator(profiles, time_scale=time_scale) as sim:
            console.print(f"[dim]nats-server at {nats.url}; pool simulator (SIMULATED models) "
                          f"at {sim.base_url}[/]")
            config = Path(tmp) / "pools.toml"
            config.write_text('namespace = "vision"\n\n'
                              + profiles_toml(profiles, sim.base_url, modules=["actors"]))
            workers = start_workers(config, nats.url, [*POOLS, ROOT_POOLS])
            try:
                with console.status("starting 3 worker processes..."):
                    async with RLM(config, nats=nats.url, max_iterations=6) as rlm:
                        await wait_for_pools(rlm, [*POOLS, *ROOT_POOLS])
                        runs = [await _one_run(rlm, task, label, console, routed)
                                for label, routed in (("all on frontier VLM", False),
                                                      ("routed (automation layer)", True))]
            finally:
                for w in workers:
                    w.terminate()
                for w in workers:
                    w.wait(20)
    _print_runs(console, runs)
    return runs


async def _one_run(rlm: RLM, task: VisionTask, label: str, console: Console,
                   routed: bool) -> VisionRun:
    """``routed``: the router places the root (among ``ROOT_POOLS``) and every sub-call
    (among the vision pools); else all on the frontier vision pool."""
    started = time.monotonic()
    if routed:
        answer = await rlm.ask(task.prompt, images=task.screenshots, pools=POOLS,
                               root_pools=ROOT_POOLS)
    else:
        answer = await rlm.ask(task.prompt, images=task.screenshots, root_pool=ROOT_POOL,
                               pool_override=ROOT_POOL)
    run = VisionRun(label, answer, score(answer.text, task), time.monotonic() - started)
    console.print(f"  {label:28} score={run.score:.3f} wall={run.wall_s:.1f}s "
                  f"cost=${answer.cost_usd:.4f} ({answer.stop_reason})")
    return run


def _print_runs(console: Console, runs: list[VisionRun]) -> None:
    table = Table(title="Same screenshots and questions, two placements (models SIMULATED)")
    for column in ("run", "score", "wall s", "$ total"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for pool in (*POOLS, "wafer-large"):
        table.add_column(f"{pool} calls / $", justify="right")
    for r in runs:
        cells = []
        for pool in (*POOLS, "wafer-large"):
            u = r.answer.usage.get(pool)
            cells.append(f"{u.calls} / {u.cost_usd:.4f}" if u else "-")
        table.add_row(r.label, f"{r.score:.3f}", f"{r.wall_s:.1f}",
                      f"{r.answer.cost_usd:.4f}", *cells)
    console.print(table)
    frontier, routed = runs
    cost = routed.answer.cost_usd / frontier.answer.cost_usd
    console.print(f"routed vs all-frontier: cost x{cost:.3f}"
                  f", wall time x{routed.wall_s / frontier.wall_s:.3f}, score "
                  f"{routed.score:.3f} vs {frontier.score:.3f}")
