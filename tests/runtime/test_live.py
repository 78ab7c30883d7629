"""The live view: one run's agents and spend, where it stands, and a last frame that shows the
summary's numbers (a real run: NATS, a worker, the simulator over HTTP, a Docker sandbox)."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from actors import Answer, PoolUsage, RunProgress
from heterarch.cli.live import RunView, run_summary, run_with_live_view
from heterarch.pytest_plugin import StartSimulator, StartWorkers
from heterarch.sim.oolong import generate_task
from runtime import RLM, NatsServer
from runtime._core.protocol import ActorInfo, ModelLoad, NodeInfo, NodeStats


def _text(renderable: object, width: int = 160) -> str:
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def _stats() -> list[NodeStats]:
    """Two runs on one worker: root1 (ours, 10 wafer lanes) and root2 (another run's)."""
    info = NodeInfo(node_id="n", role="worker", host="h", pid=1, started_at=0)
    actors = [ActorInfo(actor_id=root, actor_class="actors.agents._rlm:RLMAgent", name="rlm-root",
                        pool="frontier", parent_id="guardian-x", depth=1)
              for root in ("root1", "root2")]
    actors += [ActorInfo(actor_id=f"c{i}", actor_class="actors.agents._llm_agent:LLMAgent",
                         name="wafer-lane", pool="wafer", parent_id="root1", depth=2)
               for i in range(10)]
    actors += [ActorInfo(actor_id="other", actor_class="actors.agents._llm_agent:LLMAgent",
                         name="h100-lane", pool="h100", parent_id="root2", depth=2)]
    return [NodeStats(info=info, actors=actors, dead_letters={},
                      models={"wafer": ModelLoad(calls=99, tokens=9999, cost_usd=9.0,
                                                 in_flight=3)})]


def test_a_frame_shows_one_run_its_iteration_phase_and_errors() -> None:
    view = RunView("rlm on frontier: how many?")
    view.on_progress(RunProgress(
        agent_id="root1", iteration=2, max_iterations=12, phase="sub-calls 38 of 40 done",
        usage={"wafer": PoolUsage(calls=38, input_tokens=900, output_tokens=100,
                                  cost_usd=0.0123, errors=2)},
        errors=2, sub_calls_done=38, sub_calls_started=40, pools={"wafer": (39, 40)}))
    text = _text(view.render(_stats(), 3.25))
    assert "rlm on frontier: how many?  3.2s  iteration 2/12: sub-calls 38 of 40 done  " \
        "2 failed sub-calls" in text
    assert "rlm-root root1" in text and "wafer-lane x10 pool=wafer" in text
    assert "root2" not in text and "h100" not in text  # another run's agents stay out
    row = next(line for line in text.splitlines() if line.strip().startswith("│ wafer"))
    assert re.split(r"\s*│\s*", row.strip(" │")) == ["wafer", "10", "39/40", "38", "1,000",
                                                     "0.0123", "2", "3"]


@pytest.mark.anyio
async def test_the_last_frame_is_the_summary(heterarch_nats: NatsServer, heterarch_namespace: str,
                                             heterarch_workers: StartWorkers,
                                             heterarch_simulator: StartSimulator) -> None:
    simulated = heterarch_simulator(time_scale=0.05)
    await heterarch_workers(simulated.config(), ["frontier", "wafer"])
    task = generate_task(n_records=120, seed=2)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, color_system=None)
    view = RunView("live test")
    seen: list[RunProgress] = []
    keep = view.on_progress
    view.on_progress = lambda p: (seen.append(p), keep(p))[-1]  # type: ignore[method-assign]
    async with RLM(simulated.config(), nats=heterarch_nats.url,
                   namespace=heterarch_namespace) as rlm:
        answer, wall = await run_with_live_view(
            rlm.system.node, lambda progress: rlm.ask(
                task.questions[1].text, context=task.context, root_pool="frontier",
                max_depth=1, pools=["frontier", "wafer"], progress=progress),
            title="live test", console=console, interval=0.05, view=view)
    assert isinstance(answer, Answer) and answer.ok
    assert view.progress is not None and view.progress.iteration == answer.iterations
    last = out.getvalue().rsplit("live test  ", 1)[1]  # the final frame, as printed
    header, *summary_pools = run_summary(answer, wall)
    assert last.startswith(f"{wall:.1f}s  done: final, {answer.iterations} iterations, "
                           f"${answer.cost_usd:.4f}")
    assert header == f"[final] {answer.iterations} iterations, {wall:.1f}s, " \
        f"${answer.cost_usd:.4f}"
    rows = {cells[0]: cells for line in last.splitlines()
            if len(cells := re.split(r"\s*│\s*", line.strip(" │"))) == 8}
    assert len(summary_pools) == len(answer.usage) == 2  # frontier, wafer
    for pool, u in answer.usage.items():
        assert rows[pool][3:6] == [str(u.calls), f"{u.tokens:,}", f"{u.cost_usd:.4f}"]
    # progress per sub-call and per pool, with the phase: the context first, then the model,
    # a batch reported when it starts (0 of n) and when all of it is done
    phases = [p.phase for p in seen]
    assert phases[0] == "loading the context" and "waiting for the model" in phases
    started = next(p for p in seen if p.phase.startswith("sub-calls 0 of"))
    assert started.sub_calls_started > 0
    last_batch = [p for p in seen if p.phase.startswith("sub-calls")][-1]
    assert last_batch.sub_calls_done == last_batch.sub_calls_started
    assert sum(sent for _, sent in last_batch.pools.values()) >= last_batch.sub_calls_started
    assert all(done == sent for done, sent in last_batch.pools.values())
