"""Complexity learned from content: labels by agreement, a fitted predictor per pool, the
quality target, shadowing, and routing only where a worker is alive."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest

from heterarch.sim.oolong import (
    Accuracy,
    LabelResponder,
    generate_task,
    label_prompts,
    shifted_difficulty,
)
from runtime import parse_config
from runtime._config import PoolConfig
from runtime._models.content import (
    ContentModel,
    ItemLabel,
    Learner,
    QualityRouter,
    agreement,
    fit_content,
    items_of,
    read_labels,
    reliability,
)
from runtime._models.routing import ComplexityRouter, PoolStats, RouteService, Task

from .conftest import Harness, Recording

POOLS = {
    "cheap": PoolConfig(name="cheap", model="m1", tier=1, input_price_per_mtok=0.1,
                        output_price_per_mtok=0.1),
    "mid": PoolConfig(name="mid", model="m2", tier=2, input_price_per_mtok=0.2,
                      output_price_per_mtok=0.4),
    "strong": PoolConfig(name="strong", model="m3", tier=3, input_price_per_mtok=0.25,
                         output_price_per_mtok=0.69),
}
WEAK = LabelResponder(Accuracy(0.998, 0.55))
STRONG = LabelResponder(Accuracy(0.999, 0.99))


def labels_from(seeds: list[int], weak: LabelResponder = WEAK, strong: LabelResponder = STRONG,
                pool: str = "cheap") -> list[ItemLabel]:
    """What shadowing records: the weak model's answers against the strong one's."""
    out = []
    for seed in seeds:
        task = generate_task(n_records=600, seed=seed)
        for prompt in label_prompts([r.line() for r in task.records]):
            chat = [{"role": "user", "content": prompt}]
            mine, theirs = weak.reply(chat, "weak"), strong.reply(chat, "strong")
            out += [ItemLabel(pool, text, agree) for text, agree in
                    agreement(prompt, mine, theirs)]
    return out


def test_items_and_agreement() -> None:
    prompt = "Label each record.\n0: Where is x?\n1: Who wrote y?\n2: What is z?"
    assert items_of(prompt) == ["Where is x?", "Who wrote y?", "What is z?"]
    assert items_of("no numbers here") == ["no numbers here"]
    got = agreement(prompt, "0: location\n1: entity\n2: Description",
                    "0: location\n1: human being\n2: description")
    assert got == [("Where is x?", True), ("Who wrote y?", False), ("What is z?", True)]
    assert agreement("plain", " Yes ", "yes") == [("plain", True)]


@pytest.mark.parametrize("hard_words", [(), shifted_difficulty(3)])
def test_the_predictor_learns_which_items_a_pool_gets_wrong(
        hard_words: tuple[str, ...], tmp_path: Path) -> None:
    """Fitted on agreement labels of some contexts, it predicts the weak model's trouble on
    others: with the generator's hard records, and with models whose hard records differ
    (the predictor never sees which is which, only the content)."""
    weak = LabelResponder(Accuracy(0.998, 0.55, hard_words=hard_words))
    strong = LabelResponder(Accuracy(0.999, 0.99, hard_words=hard_words))
    model = fit_content(labels_from([1, 2], weak, strong), reference="strong")
    held_out = labels_from([3], weak, strong)
    right = [x for x in held_out if x.agree]
    wrong = [x for x in held_out if not x.agree]
    router = QualityRouter(POOLS, Learner(model=model))
    p_right = [router.predict(f"0: {x.text}", ["cheap"])["cheap"][0] for x in right]
    p_wrong = [router.predict(f"0: {x.text}", ["cheap"])["cheap"][0] for x in wrong]
    assert sum(p_wrong) / len(p_wrong) < sum(p_right) / len(p_right) - 0.2
    rel = reliability(model, held_out)
    assert rel.n == len(held_out) and rel.bins and 0 <= rel.ece < 0.15
    path = tmp_path / "model.json"
    model.save(path)
    again = ContentModel.load(path)
    assert again.pools["cheap"].p([1, 2, 3]) == pytest.approx(model.pools["cheap"].p([1, 2, 3]),
                                                                abs=1e-4)


def test_the_cheapest_pool_that_meets_the_target_and_the_reason_says_what_was_predicted(
        ) -> None:
    model = fit_content(labels_from([1, 2]), reference="strong")
    # Within 3%: on the simulator's plain records the two models disagree about 1% of the
    # time (each is wrong on about 0.4% of them), and two contexts are few labels.
    router = QualityRouter({k: POOLS[k] for k in ("cheap", "strong")}, Learner(model=model),
                           tolerance=0.03)
    task = generate_task(n_records=600, seed=5)
    plain, hedged = [], []
    for prompt in label_prompts([r.line() for r in task.records]):
        (hedged if prompt.startswith("These records are ambiguous") else plain).append(prompt)
    decisions = [router.route(Task(prompt=p)) for p in hedged]
    assert all(d is not None and d.pool == "strong" for d in decisions)
    assert decisions[0] is not None
    reason = decisions[0].reason
    assert "quality target 0.970 (match strong within 0.03)" in reason
    assert "predicted agreement with strong" in reason and "cheap 0." in reason
    cheap = [router.route(Task(prompt=p)) for p in plain]
    assert sum(d is not None and d.pool == "cheap" for d in cheap) >= len(plain) // 2
    # an absolute target nothing cheap can meet: everything goes to the strongest
    strict = QualityRouter(POOLS, Learner(model=model), target=0.9999)
    assert all((d := strict.route(Task(prompt=p))) is not None and d.pool == "strong"
               for p in plain)
    # no model yet, or not a plain call: the next router decides
    assert QualityRouter(POOLS, Learner()).route(Task(prompt=plain[0])) is None
    assert router.route(Task(prompt=plain[0], kind="rlm")) is None
    assert router.route(Task(prompt=plain[0], hint="hard")) is None


def test_pools_without_a_live_worker_are_never_chosen() -> None:
    stats = PoolStats()
    stats.live = lambda: {"strong": 4, "mid": 0}
    complexity = ComplexityRouter(POOLS, stats=stats)
    decision = complexity.route(Task(prompt="Label each record: 0: x"))
    assert decision is not None and decision.pool == "mid"
    assert "no live worker: cheap" in decision.reason
    model = fit_content(labels_from([1]), reference="strong")
    quality = QualityRouter(POOLS, Learner(model=model), stats=stats)
    decision = quality.route(Task(prompt="0: What does the word x mean?"))
    assert decision is not None and decision.pool == "strong"
    assert "no live worker: cheap" in decision.reason
    stats.live = lambda: None  # a node too new to know: every pool counts
    decision = complexity.route(Task(prompt="Label each record: 0: x"))
    assert decision is not None and decision.pool == "cheap"


def test_shadowing_labels_the_cheaper_side_and_refits(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    learner = Learner(shadow_fraction=1.0, labels_path=path, refit_every=10)
    route = RouteService(ComplexityRouter(POOLS), pools=POOLS, learner=learner)
    assert route.shadow_of("p", "cheap") == "strong"  # a cheap call is checked by the strongest
    assert route.shadow_of("p", "strong") == "cheap"  # the strongest's is compared to cheapest
    assert route.shadow_of("p", "strong", exclude=["cheap"]) == "mid"
    learner.shadow_fraction = 0.0
    assert route.shadow_of("p", "cheap") is None
    learner.shadow_fraction = 0.3
    drawn = sum(route.shadow_of(f"prompt {i}", "cheap") is not None for i in range(2000))
    assert 450 < drawn < 750  # deterministic per prompt, about the fraction overall
    assert learner.draws_shadow("x") == (zlib.crc32(b"x") / 2**32 < 0.3)

    import anyio

    prompt = "0: Where is x?\n1: Who wrote y?"
    new = anyio.run(lambda: route.learn(prompt, ("cheap", "0: location\n1: entity"),
                                        ("strong", "0: location\n1: human being")))
    assert [(x.pool, x.agree, x.routed) for x in new] == [("cheap", True, True),
                                                          ("cheap", False, True)]
    new = anyio.run(lambda: route.learn(prompt, ("strong", "0: location\n1: entity"),
                                        ("mid", "0: location\n1: entity")))
    assert [(x.pool, x.agree, x.routed) for x in new] == [("mid", True, False)] * 2
    assert [json.loads(line)["pool"] for line in path.read_text().splitlines()] == \
        ["cheap", "cheap", "mid", "mid"]
    assert read_labels(path) == learner.labels
    assert route.agreement() == {"cheap": 0.5, "mid": 1.0}
    # enough new labels: the router fits itself again (in a thread) and uses the model
    learner.labels += labels_from([1])
    learner.fresh = 10
    anyio.run(lambda: route.learn(prompt, ("cheap", "0: location"), ("strong", "0: location")))
    assert learner.model is not None and "cheap" in learner.model.pools


def test_the_routing_table_of_the_config() -> None:
    config = parse_config({"routing": {"quality_target": 0.98, "shadow_fraction": 0.05},
                           "pools": {"a": {"model": "x"}}})
    assert config.routing is not None
    assert config.routing.quality_target == 0.98 and config.routing.shadow_fraction == 0.05
    assert parse_config({}).routing is None


SHADOW_PROMPTS = [f"Label each record with one of: location, entity.\n0: Where is the river {w}?"
                  for w in ("alder", "brisk", "corvo")]
SHADOWED = Recording([
    f"```repl\nreplies = llm_query_batched({SHADOW_PROMPTS!r})\nprint(replies)\n```",
    "FINAL_VAR(replies)",
])


@pytest.mark.anyio
@pytest.mark.root_replies(SHADOWED)
@pytest.mark.parametrize("harness", [{"routing": {"shadow_fraction": 1.0, "labels": ""}}],
                         indirect=True)
async def test_a_shadowed_batch_labels_the_cheap_pool_by_the_strongest(
        harness: Harness) -> None:
    """Every sub-call drawn for shadowing also runs on the strongest pool, alongside; the
    agreement is the label (no person, no ground truth) and the strongest's answer stands.
    The question's message shows the head of the context (the model need not look first)."""
    route = harness.worker_services["route"]
    answer = await harness.ask("q?", context="Date: 2020 || User: 1 || Instance: x\n" * 50,
                               max_iterations=3)
    assert answer.ok, answer.stop_reason
    assert answer.usage["wafer"].calls == 3  # routed: the cheap pool
    assert answer.usage["frontier"].calls == 2 + 3  # the root's two turns, three shadows
    labels = route.learner.labels
    assert [(x.pool, x.routed) for x in labels] == [("wafer", True)] * 3
    assert route.agreement() == {"wafer": 1.0}  # easy records: the two agree
    first = SHADOWED.seen[0][1]["content"]
    assert first.startswith("Question: q?") and "The context begins:\nDate: 2020" in first


HARD = ("These records are ambiguous: reason carefully about each one. Label each record with "
        "one of: location, entity.\n0: Where is the river alder located?")
NO_WEAKER = Recording([
    f"```repl\nreplies = llm_query_batched([{HARD!r}] * 2, escalate_if=r': location$')\n"
    "print(replies)\n```",
    "FINAL_VAR(replies)",
])


@pytest.mark.anyio
@pytest.mark.root_replies(NO_WEAKER)
async def test_the_cascade_never_escalates_to_a_weaker_pool(harness: Harness) -> None:
    """An answer of the strongest pool that fails the check stays: no 'escalation' to the
    strongest pool left, which would be a weaker one."""
    answer = await harness.ask("q?", max_iterations=3)
    assert answer.ok, answer.stop_reason
    assert answer.text == "['0: location', '0: location']"
    assert "wafer" not in answer.usage and "h100" not in answer.usage
