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

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from opentelemetry import trace
from rich.console import Console
from rich.table import Table

from actors import Answer, Budget, ImageRef, Inbox, Query, RLMAgent
from actors._semconv import (
    ATTR_GENAI_CONVERSATION_ID,
    ATTR_GENAI_INPUT_MESSAGES,
    ATTR_GENAI_OUTPUT_MESSAGES,
    content_capture_enabled,
    genai_messages,
)
from actors.agents._spans import mark_exception, mark_outcome, usage_attributes
from runtime._config import RuntimeConfig, load_config
from runtime._models.routing import RouteService
from runtime._nats_server import NatsServer
from runtime._system import ActorSystem

from ..sim.oolong import QUESTION_KINDS, Task, generate_task, score
from ..sim.simulator import Simulator, default_profiles, profiles_toml

tracer = trace.get_tracer("heterarch")


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


def place_root(route: RouteService, question: str, *, config: RuntimeConfig,
               pools: Sequence[str] = ()) -> tuple[str, str]:
    """The root agent's pool, chosen like any recursive sub-task (``kind="rlm"``, depth 0),
    among ``pools`` (empty: all pools of ``config``). Returns ``(pool, reason)``."""
    exclude = set(config.pools) - set(pools) if pools else set()
    decision = route(prompt=question, kind="rlm", depth=0, exclude=exclude)
    return decision.pool, f"root: {decision.reason}"


async def ask_rlm(system: ActorSystem, question: str, *, context_ref: str = "",
                  context: str = "", root_pool: str = "", route: RouteService | None = None,
                  config: RuntimeConfig | None = None, pools: Sequence[str] = (),
                  pool_override: str = "", max_depth: int = 2, max_iterations: int = 8,
                  budget: Budget | None = None, timeout: float = 900.0,
                  images: list[ImageRef] | None = None,
                  progress: Inbox | None = None, root_pools: Sequence[str] = ()) -> Answer:
    """Spawn a root RLM agent, ask it, stop it.

    The root runs on ``root_pool``, or where ``route`` (with ``config``) places it among
    ``root_pools`` (default: ``pools``); the run's sub-calls may use only ``pools`` (empty:
    any). ``images``: an image
    context (screenshots in the blob store). ``progress``: where the root reports ``RunProgress``
    (the live view)."""
    reason = "root pool named by the caller"
    if not root_pool:
        if route is None or config is None:
            raise ValueError("ask_rlm needs root_pool, or route and config to place the root")
        root_pool, reason = place_root(route, question, config=config,
                                       pools=root_pools or pools)
    conversation = uuid.uuid4().hex
    with tracer.start_as_current_span(
        "invoke_agent rlm", record_exception=False, set_status_on_exception=False,
        attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "rlm",
                    "gen_ai.provider.name": "heterarch", "openinference.span.kind": "AGENT",
                    ATTR_GENAI_CONVERSATION_ID: conversation, "heterarch.pool": root_pool,
                    "heterarch.route.reason": reason},
    ) as span:
        if content_capture_enabled() and span.is_recording():
            span.set_attribute(ATTR_GENAI_INPUT_MESSAGES, genai_messages(
                [{"role": "user", "content": question}]))
            span.set_attribute("input.value", question)  # OpenInference: the UIs' input column
        try:
            # Transient: if its worker dies, the root restarts on another worker of the pool
            # and the ask below is sent again (the context is a blob, so nothing is lost).
            root = await system.spawn(RLMAgent, pool=root_pool, name="rlm-root",
                                      supervision="transient")
            span.set_attribute("gen_ai.agent.id", root.actor_id)  # the agent this run invokes
            try:
                query = Query(question=question, context=context, context_ref=context_ref,
                              max_depth=max_depth, max_iterations=max_iterations,
                              budget=budget or Budget(), pool_override=pool_override,
                              images=images or [], pools=list(pools), route_reason=reason,
                              conversation_id=conversation, progress=progress)
                answer: Answer = await root.ask(query, timeout=timeout)
            finally:
                await system.stop(root)
        except Exception as exc:
            mark_exception(span, exc)
            raise
        if span.is_recording():
            span.set_attributes({**usage_attributes(answer.usage),
                                 "heterarch.stop_reason": answer.stop_reason,
                                 "heterarch.iterations": answer.iterations})
            if content_capture_enabled():
                span.set_attribute(ATTR_GENAI_OUTPUT_MESSAGES, genai_messages(
                    [{"role": "assistant", "content": answer.text}],
                    finish_reason=answer.stop_reason))
                span.set_attribute("output.value", answer.text)
            mark_outcome(span, answer.stop_reason)
        return answer


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


async def _wait_for_pools(system: ActorSystem, pools: Sequence[str]) -> None:
    for pool in pools:
        await system.node.wait_pool(pool)


def questions_per_kind(task: Task, n: int = 1) -> list[int]:
    """Indexes of the first ``n`` questions of each kind (count, compare, temporal)."""
    return [i for kind in QUESTION_KINDS
            for i in [j for j, q in enumerate(task.questions) if q.kind == kind][:n]]


async def run_demo(*, records: int = 3000, time_scale: float = 1.0,
                   questions: Sequence[int] | None = None, per_kind: int = 1, seed: int = 7,
                   console: Console | None = None) -> list[RunResult]:
    """Every placement on every question; returns the runs (``summarize`` them)."""
    console = console or Console(width=max(130, Console().width))
    console.rule("[bold]heterarch demo[/] - heterogeneous recursion on [yellow]SIMULATED[/] pools")
    task = generate_task(n_records=records, target_chars=records * 340, seed=seed)
    chosen = list(questions) if questions is not None else questions_per_kind(task, per_kind)
    console.print(f"context: {len(task.context):,} characters, {records:,} records "
                  f"(generated, exact answers known); {len(chosen)} questions")
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="heterarch-demo-") as tmp, NatsServer() as nats:
        profiles = default_profiles()
        async with Simulator(profiles, time_scale=time_scale) as sim:
            console.print(f"[dim]embedded nats-server at {nats.url}; pool simulator (SIMULATED "
                          f"models, published speeds and prices) at {sim.base_url}[/]")
            path = Path(tmp) / "pools.toml"
            path.write_text('namespace = "demo"\n\n'
                            + profiles_toml(profiles, sim.base_url, modules=["actors"]))
            config = load_config(path)
            from runtime import agent_services

            services, _ = agent_services(config)
            route: RouteService = services["route"]
            workers = start_workers(path, nats.url, [p.pools for p in PLACEMENTS])
            try:
                with console.status("starting one worker process per configuration..."):
                    async with ActorSystem(nats=nats.url, namespace="demo",
                                           placement_timeout=120) as system:
                        for placement in PLACEMENTS:
                            await _wait_for_pools(system, placement.pools)
                        ref = await system.node.transport.put_blob(task.context.encode())
                        for index in chosen:
                            question = task.questions[index]
                            console.print(f"[bold]{question.kind}:[/] {question.text[:110]} "
                                          f"(truth: {question.answer})")
                            for placement in PLACEMENTS:
                                results.append(await _one_run(
                                    system, route, config, task, index, ref, placement, console))
            finally:
                for w in workers:
                    w.terminate()
                for w in workers:
                    w.wait(20)
    print_table(console, summarize(results))
    return results


async def _one_run(system: ActorSystem, route: RouteService, config: RuntimeConfig, task: Task,
                   index: int, ref: str, placement: Placement, console: Console) -> RunResult:
    question = task.questions[index]
    started = time.monotonic()
    answer = await ask_rlm(system, question.text, context_ref=ref, route=route, config=config,
                           pools=placement.pools)
    result = RunResult(placement.label, answer, question.answer, time.monotonic() - started,
                       question.kind)
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
    anyio.run(lambda: run_demo(records=args.records, time_scale=args.time_scale))
    return 0
