"""The automation layer's decisions: static rules, complexity, budget, chains, fallbacks."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
import pytest

from actors.errors import HeterarchError
from runtime import (
    BudgetAwareRouter,
    ChainRouter,
    Complexity,
    ComplexityRouter,
    NoPoolFits,
    PoolConfig,
    PoolStats,
    PromptTooLong,
    RouteDecision,
    Router,
    RouteService,
    Rule,
    StaticRouter,
    Task,
    estimate_complexity,
)
from runtime._models.windows import pool_window

POOLS = {
    "wafer": PoolConfig(name="wafer", model="m/w", tier=1, input_price_per_mtok=0.1,
                        output_price_per_mtok=0.1),
    "h100": PoolConfig(name="h100", model="m/h", tier=2, input_price_per_mtok=0.6,
                       output_price_per_mtok=0.6),
    "frontier": PoolConfig(name="frontier", model="m/f", tier=3, input_price_per_mtok=3,
                           output_price_per_mtok=15),
    "cpu": PoolConfig(name="cpu", tier=0),  # no model: never a candidate
}
EASY = "Label each record with one of: a, b.\n0: Where is x?"
HARD = "These records are ambiguous: reason carefully about each one. Label each record.\n0: x"


def pool_of(decision: RouteDecision | None) -> str:
    assert decision is not None
    assert decision.reason  # every decision says why
    return decision.pool


def test_complexity_estimate() -> None:
    assert estimate_complexity("What is the capital of France?") is Complexity.CONSTANT
    assert estimate_complexity(EASY) is Complexity.LINEAR
    assert estimate_complexity("How many records are about a location?") is Complexity.LINEAR
    assert estimate_complexity("\n".join(["line"] * 30)) is Complexity.LINEAR
    assert estimate_complexity(HARD) is Complexity.QUADRATIC
    assert estimate_complexity("Compare each pair of statements") is Complexity.QUADRATIC
    assert estimate_complexity("Find statements that contradict") is Complexity.QUADRATIC


def test_complexity_router_picks_the_cheapest_sufficient_pool() -> None:
    router = ComplexityRouter(POOLS)
    assert pool_of(router.route(Task(prompt=EASY))) == "wafer"
    hard = router.route(Task(prompt=HARD))
    assert pool_of(hard) == "frontier"
    assert hard is not None and "quadratic" in hard.reason and "tier 3" in hard.reason
    assert pool_of(router.route(Task(prompt="Label each record " + "x" * 200_000))) == "h100"
    assert pool_of(router.route(Task(prompt="Summarize", kind="rlm"))) == "h100"


def test_token_estimate_and_hints_override_the_text() -> None:
    router = ComplexityRouter(POOLS)
    assert Task(prompt="abcd" * 10).prompt_tokens == 10
    assert Task(tokens=50_000).prompt_tokens == 50_000
    assert pool_of(router.route(Task(tokens=50_000))) == "h100"
    assert pool_of(router.route(Task(prompt=EASY, hint="hard"))) == "frontier"
    easy = router.route(Task(prompt=HARD, hint="easy"))
    assert pool_of(easy) == "wafer" and easy is not None and "caller says easy" in easy.reason


def test_fallback_on_pool_failure() -> None:
    router = ComplexityRouter(POOLS)
    assert pool_of(router.route(Task(prompt=HARD), exclude={"frontier"})) == "h100"
    weakest = router.route(Task(prompt=HARD), exclude={"frontier", "h100"})
    assert pool_of(weakest) == "wafer"
    assert weakest is not None and "using the strongest" in weakest.reason
    assert router.route(Task(prompt=HARD), exclude={"frontier", "h100", "wafer"}) is None


def test_pools_failing_lately_are_skipped() -> None:
    stats = PoolStats()
    for _ in range(3):
        stats.started("wafer")
        stats.finished("wafer", 0.1, ok=False)
    assert stats.recent_errors("wafer") == 3 and stats.in_flight["wafer"] == 0
    decision = ComplexityRouter(POOLS, stats=stats).route(Task(prompt=EASY))
    assert pool_of(decision) == "h100"
    assert decision is not None and "wafer failing lately" in decision.reason


def test_latency_goal_skips_a_busy_pool() -> None:
    stats = PoolStats()
    for _ in range(5):
        stats.finished("wafer", 10.0, ok=True)
    stats.finished("h100", 0.1, ok=True)
    assert stats.latency("wafer") == pytest.approx(10.0) and stats.latency("frontier") is None
    router = ComplexityRouter(POOLS, stats=stats, latency_goal_s=1.0)
    decision = router.route(Task(prompt="count the records"))
    assert pool_of(decision) == "h100"
    assert decision is not None and "too slow" in decision.reason
    # A queue makes an otherwise fast pool too slow too.
    stats.finished("wafer", 0.0, ok=True)
    for _ in range(POOLS["h100"].max_concurrency * 20):
        stats.started("h100")
    assert pool_of(router.route(Task(prompt="count the records"), exclude={"wafer"})) == (
        "frontier")


def test_budget_aware_downgrade() -> None:
    router = BudgetAwareRouter(ComplexityRouter(POOLS), threshold=0.2)
    assert pool_of(router.route(Task(prompt=HARD, budget_left=0.9))) == "frontier"
    poor = router.route(Task(prompt=HARD, budget_left=0.1))
    assert pool_of(poor) == "h100" and poor is not None and "budget thin" in poor.reason
    # Nothing cheaper than the cheapest: the decision stands.
    assert pool_of(router.route(Task(prompt=EASY, budget_left=0.05))) == "wafer"


def test_static_rules() -> None:
    router = StaticRouter([Rule(pool="h100", tag="zoom"), Rule(pool="frontier", pattern=r"legal"),
                           Rule(pool="wafer", tag="ocr", pattern=r"^scan")], default="wafer")
    zoom = router.route(Task(prompt="x", tag="zoom"))
    assert pool_of(zoom) == "h100" and zoom is not None and "tag 'zoom'" in zoom.reason
    assert pool_of(router.route(Task(prompt="a LEGAL memo"))) == "frontier"
    assert pool_of(router.route(Task(prompt="scan it", tag="ocr"))) == "wafer"
    default = router.route(Task(prompt="hello"))
    assert pool_of(default) == "wafer" and default is not None and "default" in default.reason
    assert pool_of(router.route(Task(prompt="x", tag="zoom"), exclude={"h100"})) == "wafer"
    assert StaticRouter([Rule(pool="h100", tag="zoom")]).route(Task(prompt="x")) is None


def test_chain_takes_the_first_answer() -> None:
    router = ChainRouter([
        StaticRouter([Rule(pool="h100", tag="zoom"), Rule(pool="frontier", pattern=r"legal")]),
        ComplexityRouter(POOLS),
    ])
    assert pool_of(router.route(Task(prompt="x", tag="zoom"))) == "h100"
    assert pool_of(router.route(Task(prompt="a legal memo"))) == "frontier"
    assert pool_of(router.route(Task(prompt="hello"))) == "wafer"
    assert pool_of(router.route(Task(prompt="x", tag="zoom"), exclude={"h100"})) == "wafer"


class RoundRobin(Router):
    """A user's own router: plugs in by implementing ``route``."""

    def __init__(self, pools: list[str]) -> None:
        self.pools = pools
        self.turn = 0

    def route(self, task: Task, *, exclude: Iterable[str] = ()) -> RouteDecision | None:
        left = [p for p in self.pools if p not in set(exclude)]
        if not left:
            return None
        self.turn += 1
        return RouteDecision(left[self.turn % len(left)], "round robin")


def test_route_service_with_a_custom_router() -> None:
    service = RouteService(ChainRouter([StaticRouter([Rule(pool="frontier", tag="vip")]),
                                        RoundRobin(["wafer", "h100"])]))
    picks = [service(prompt="x").pool for _ in range(4)]
    assert picks == ["h100", "wafer", "h100", "wafer"]
    assert service(prompt="x", tag="vip").pool == "frontier"
    assert service(prompt="x", exclude=["h100"]).pool == "wafer"
    with pytest.raises(NoPoolFits) as info:
        service(prompt="x", exclude=["h100", "wafer"])
    assert isinstance(info.value, HeterarchError) and isinstance(info.value, LookupError)


def test_route_service_passes_hints_and_tokens() -> None:
    service = RouteService(ComplexityRouter(POOLS))
    assert service(prompt="x", hint="hard").pool == "frontier"
    assert service(prompt="x", tokens=100_000).pool == "h100"
    assert service(prompt="x", kind="rlm", depth=2).pool == "h100"
    assert isinstance(service.stats, PoolStats)


def test_a_prompt_goes_only_to_pools_whose_window_it_fits() -> None:
    pools = {
        "wafer": msgspec.structs.replace(POOLS["wafer"], context_window=8_192),
        "h100": msgspec.structs.replace(POOLS["h100"], context_window=32_768),
        "frontier": msgspec.structs.replace(POOLS["frontier"], context_window=200_000),
    }
    service = RouteService(ComplexityRouter(pools), pools=pools)
    assert service(prompt=EASY).pool == "wafer"
    long_easy = EASY + "\n" + "1: Where is y?\n" * 3_000  # about 12,000 tokens
    decision = service(prompt=long_easy)
    assert decision.pool == "h100"  # the cheapest pool it fits, not wafer's 8k
    assert service(prompt=long_easy, exclude=["h100"]).pool == "frontier"
    with pytest.raises(PromptTooLong) as info:  # at once, before any router decides
        service(prompt="x" * 1_000_000)
    error = info.value
    assert isinstance(error, NoPoolFits)
    assert (error.largest_pool, error.largest_window) == ("frontier", 200_000)
    assert error.prompt_tokens == 250_000 and "split the prompt" in str(error)
    with pytest.raises(PromptTooLong) as info:  # the pools it may use, not all of them
        service(prompt=long_easy, exclude=["h100", "frontier"])
    assert info.value.largest_pool == "wafer"


def test_a_window_comes_from_the_config_else_litellms_model_map() -> None:
    assert pool_window(PoolConfig(name="a", model="openai/gpt-4o", context_window=1_000)) == 1_000
    assert pool_window(PoolConfig(name="b", model="openai/gpt-4o")) == 128_000
    assert pool_window(PoolConfig(name="c", model="openai/no-such-model-here")) == 0
    assert pool_window(PoolConfig(name="d")) == 0
