"""The learned router: fitted with scikit-learn from recorded runs (spans with content, labelled
by the generator's truth), evaluated on held-out tasks (other seeds, other question kinds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from heterarch.cli.main import build_parser
from heterarch.sim.oolong import Question, generate_task, label_items, label_prompts
from heterarch.sim.profiles import POOL_NAMES, default_profiles
from heterarch.sim.simulator import Simulator
from runtime import (
    ComplexityRouter,
    LLMClient,
    PoolConfig,
    RouteService,
    RuntimeConfig,
    Task,
    agent_services,
    configure_tracing,
)
from runtime._models.learned import LearnedRouter
from runtime.errors import RuntimeConfigError

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
MODELS = ("sim/wafer-small", "sim/h100-open", "sim/frontier")


def lines_for(task_seed: int, kinds: tuple[str, ...]) -> list[list[str]]:
    """The records each question of these kinds selects (what the root program labels)."""
    task = generate_task(n_records=500, seed=task_seed)
    out = []
    for q in task.questions:
        if q.kind in kinds:
            out.append([r.line() for r in task.records if selected(q, r.user, r.date)])
    return out


def selected(q: Question, user: int, date: str) -> bool:
    return (not q.users or user in q.users) and int(date[:4]) >= q.since_year


async def test_fit_on_recorded_runs_then_route_held_out_tasks(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    profiles = {m: p for m, p in default_profiles().items() if m in MODELS}
    spans = tmp_path / "spans.jsonl"
    async with Simulator(profiles, time_scale=0.0) as sim:
        pools = {POOL_NAMES[m]: PoolConfig(
            name=POOL_NAMES[m], model=f"openai/{m}", api_base=sim.base_url, tier=p.tier,
            input_price_per_mtok=p.input_price_per_mtok,
            output_price_per_mtok=p.output_price_per_mtok, max_concurrency=32)
            for m, p in profiles.items()}
        clients = {name: LLMClient(pool) for name, pool in pools.items()}
        try:
            # recorded runs: count questions of two seeds, every pool tried on every prompt
            tracing = configure_tracing(jsonl_path=spans, role="test")
            try:
                prompts = [p for seed in (1, 2) for lines in lines_for(seed, ("count",))[:2]
                           for p in label_prompts(lines)]
                async with anyio.create_task_group() as tg:
                    for prompt in prompts:
                        for client in clients.values():
                            tg.start_soon(client.complete, [{"role": "user", "content": prompt}])
            finally:
                tracing.shutdown()
            router_json = tmp_path / "router.json"
            fitted = await anyio.run_process(
                [sys.executable, "-m", "heterarch.cli", "route", "fit", str(spans), "--out",
                 str(router_json)], cwd=ROOT, check=False)
            assert fitted.returncode == 0, fitted.stderr.decode()
            assert b"router model written" in fitted.stdout
            model = json.loads(router_json.read_text())
            assert set(model["pools"]) == set(pools)
            learned = LearnedRouter(model, pools)
            route = RouteService(learned)

            # held out: other seeds, the other question kinds
            async def run(choose: object) -> tuple[int, int, float, list[str]]:
                right = total = 0
                cost = 0.0
                reasons: list[str] = []
                for seed in (3, 4):
                    for lines in lines_for(seed, ("compare", "temporal")):
                        for prompt in label_prompts(lines):
                            if isinstance(choose, str):
                                pool = choose
                            else:
                                decision = route(prompt=prompt)
                                pool, _ = decision.pool, reasons.append(decision.reason)
                            done = await clients[pool].complete(
                                [{"role": "user", "content": prompt}])
                            items = label_items(prompt, done.text)
                            right += sum(items)
                            total += len(items)
                            cost += done.cost_usd
                return right, total, cost, reasons

            r_right, r_total, r_cost, reasons = await run(learned)
            f_right, f_total, f_cost, _ = await run("frontier")
            w_right, w_total, _, _ = await run("wafer")
        finally:
            for client in clients.values():
                await client.aclose()
    assert r_total == f_total > 100
    assert r_right / r_total >= f_right / f_total - 0.01  # frontier-level labels ...
    assert r_cost < f_cost / 2  # ... at well under half the price
    assert r_right / r_total > w_right / w_total + 0.05  # and far better than all-cheap
    assert all(reason.startswith("learned: ") for reason in reasons)
    assert any(reason.startswith("learned: frontier, the cheapest pool with P(right) >= 0.97")
               and "cheaper: wafer P=0.5" in reason for reason in reasons)  # hard chunks
    assert any(reason.startswith("learned: wafer, ") for reason in reasons)  # plain ones
    chosen = {learned.route(Task(prompt=p)).pool  # type: ignore[union-attr]
              for lines in lines_for(3, ("compare",)) for p in label_prompts(lines)}
    assert chosen == {"wafer", "frontier"}  # plain chunks cheap, ambiguous ones strong
    # what a worker started with `--router router.json` routes with
    config = RuntimeConfig(pools=pools)
    service = agent_services(config, learned=router_json)[0]["route"]
    hard = label_prompts([r.line() for r in generate_task(n_records=60, seed=9).records
                          if r.hard])[0]
    assert service(prompt=hard).reason.startswith("learned: frontier, ")
    agent = service(prompt="Summarize this.", kind="rlm")  # not the learned model's kind
    assert agent.reason == ComplexityRouter(pools).route(Task(prompt="Summarize this.",
                                                              kind="rlm")).reason  # type: ignore[union-attr]
    assert service.stats is not None and service.stats is not learned
    assert build_parser().parse_args(["worker", "--pool", "wafer", "--config", "p.toml",
                                      "--router", "router.json"]).router == "router.json"


def test_a_bad_router_model_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "router.json"
    bad.write_text('{"format": "something-else", "pools": {}}')
    with pytest.raises(RuntimeConfigError, match="not a router model"):
        LearnedRouter.load(bad, {})
    bad.write_text("{not json")
    with pytest.raises(RuntimeConfigError, match="cannot read the router model"):
        LearnedRouter.load(bad, {})
    missing = subprocess.run(
        [sys.executable, "-m", "heterarch.cli", "route", "fit", str(tmp_path / "none.jsonl"),
         "--out", str(tmp_path / "r.json")], cwd=ROOT, capture_output=True, text=True,
        timeout=120)
    assert missing.returncode == 1 and "heterarch: error:" in missing.stderr
