"""The automation layer's decisions, and the demo task's ground truth."""

from __future__ import annotations

import pytest

from runtime import PoolConfig
from runtime._oolong import (
    CATEGORIES,
    Accuracy,
    LabelResponder,
    RootResponder,
    generate_task,
    score,
    true_label,
)
from runtime._routing import (
    BudgetAwareRouter,
    ChainRouter,
    Complexity,
    ComplexityRouter,
    NoPoolFits,
    PoolStats,
    RouteService,
    Rule,
    StaticRouter,
    Task,
    estimate_complexity,
)

POOLS = {
    "wafer": PoolConfig(name="wafer", model="m/w", tier=1, input_price_per_mtok=0.1,
                        output_price_per_mtok=0.1),
    "h100": PoolConfig(name="h100", model="m/h", tier=2, input_price_per_mtok=0.6,
                       output_price_per_mtok=0.6),
    "frontier": PoolConfig(name="frontier", model="m/f", tier=3, input_price_per_mtok=3,
                           output_price_per_mtok=15),
    "cpu": PoolConfig(name="cpu", tier=0),  # no model: never a candidate
}


def test_complexity_estimate() -> None:
    assert estimate_complexity("What is the capital of France?") is Complexity.CONSTANT
    assert estimate_complexity("Label each record with one of: a, b") is Complexity.LINEAR
    assert estimate_complexity("These records are ambiguous: reason carefully.") is (
        Complexity.QUADRATIC
    )
    assert estimate_complexity("Compare each pair of statements") is Complexity.QUADRATIC


def test_complexity_router_picks_the_cheapest_sufficient_pool() -> None:
    router = ComplexityRouter(POOLS)
    easy = router.route(Task(prompt="Label each record: 0: Where is x?"))
    hard = router.route(Task(prompt="These records are ambiguous: reason carefully. 0: x"))
    long = router.route(Task(prompt="Label each record " + "x" * 200_000))
    agent = router.route(Task(prompt="Summarize", kind="rlm"))
    assert easy is not None and easy.pool == "wafer"
    assert hard is not None and hard.pool == "frontier"
    assert long is not None and long.pool == "h100"
    assert agent is not None and agent.pool == "h100"
    assert "tier" in hard.reason
    fallback = router.route(Task(prompt="ambiguous"), exclude={"frontier"})
    assert fallback is not None and fallback.pool == "h100"


def test_latency_goal_skips_a_slow_pool() -> None:
    stats = PoolStats()
    for _ in range(5):
        stats.finished("wafer", 10.0, ok=True)
    stats.finished("h100", 0.1, ok=True)
    router = ComplexityRouter(POOLS, stats=stats, latency_goal_s=1.0)
    decision = router.route(Task(prompt="count the records"))
    assert decision is not None and decision.pool == "h100"
    assert "too slow" in decision.reason


def test_budget_aware_downgrade() -> None:
    router = BudgetAwareRouter(ComplexityRouter(POOLS), threshold=0.2)
    rich = router.route(Task(prompt="ambiguous", budget_left=0.9))
    poor = router.route(Task(prompt="ambiguous", budget_left=0.1))
    assert rich is not None and rich.pool == "frontier"
    assert poor is not None and poor.pool == "h100" and "budget" in poor.reason


def test_static_rules_then_complexity() -> None:
    router = ChainRouter([
        StaticRouter([Rule(pool="h100", tag="zoom"), Rule(pool="frontier", pattern=r"legal")]),
        ComplexityRouter(POOLS),
    ])
    assert router.route(Task(prompt="x", tag="zoom")).pool == "h100"  # type: ignore[union-attr]
    assert router.route(Task(prompt="a legal memo")).pool == "frontier"  # type: ignore[union-attr]
    assert router.route(Task(prompt="hello")).pool == "wafer"  # type: ignore[union-attr]


def test_route_service_raises_when_nothing_fits() -> None:
    service = RouteService(StaticRouter([]))
    with pytest.raises(NoPoolFits):
        service(prompt="x")


def test_generated_truth_matches_a_brute_force_count() -> None:
    task = generate_task(n_records=500, seed=11)
    lines = [line for line in task.context.splitlines() if line.startswith("Date:")]
    assert len(lines) == 500
    for q in task.questions:
        count = 0
        for line in lines:
            user = int(line.split("User: ")[1].split(" ")[0])
            label = true_label(line.split("Instance: ")[1].strip())
            if label == q.category and (not q.users or user in q.users):
                count += 1
        assert count == q.answer
    assert score(q.answer, q.answer) == 1.0
    assert score(str(q.answer + 2), q.answer) == pytest.approx(0.5625)
    assert score("no number", 3) == 0.0


def test_cheap_models_mislabel_hard_records_more() -> None:
    task = generate_task(n_records=600, hard_fraction=0.5, seed=5)
    hard = [r for r in task.records if r.hard]
    prompt = "\n".join(f"{i}: {r.text}" for i, r in enumerate(hard))

    def accuracy(responder: LabelResponder) -> float:
        reply = responder.reply([{"role": "user", "content": prompt}], "m")
        labels = [line.split(": ", 1)[1] for line in reply.splitlines()]
        return sum(lbl == r.label for lbl, r in zip(labels, hard, strict=True)) / len(hard)

    cheap = accuracy(LabelResponder(Accuracy(0.97, 0.55)))
    frontier = accuracy(LabelResponder(Accuracy(0.995, 0.97)))
    assert cheap < 0.7 < 0.9 < frontier


def test_root_responder_turns() -> None:
    root = RootResponder()
    q = [{"role": "system", "content": "s"},
         {"role": "user", "content": "Question: How many records are about a location?"}]
    assert "```repl" in root.reply(q, "m")
    program = root.reply([*q, {"role": "assistant", "content": "x"}], "m")
    assert "llm_query_batched" in program and "'location'" in program
    assert 'answer["ready"] = True' in root.reply(
        [*q, {"role": "assistant", "content": "x"}] * 2, "m"
    )
    assert set(CATEGORIES) >= {"location"}
