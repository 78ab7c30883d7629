"""The demo task: exact ground truth, the simulated root and sub models, and why routing pays.

The last test runs the root model's own program on a generated context, its sub-calls going
through the router and the real LLM client to the simulator (litellm, HTTP).
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable
from typing import Any

import anyio
import anyio.from_thread
import pytest

from heterarch.sim.oolong import (
    CATEGORIES,
    QUESTION_FORMS,
    Accuracy,
    LabelResponder,
    Record,
    RootResponder,
    generate_task,
    label_prompts,
    parse_question,
    score,
    true_label,
)
from heterarch.sim.profiles import RoutingResponder, default_profiles
from heterarch.sim.simulator import Simulator
from runtime import ComplexityRouter, LLMClient, PoolConfig, Task

FENCE = re.compile(r"```repl\n(.*?)```", re.S)


def test_ground_truth_matches_a_brute_force_count() -> None:
    task = generate_task(n_records=800, seed=11)
    lines = [line for line in task.context.splitlines() if line.startswith("Date:")]
    assert len(lines) == 800 == len(task.records)
    assert [q.kind for q in task.questions] == ["count"] * 6 + ["compare", "temporal"] * 3
    for q in task.questions:
        counts: dict[int, int] = {}
        for line in lines:
            user = int(line.split("User: ")[1].split(" ")[0])
            label = true_label(line.split("Instance: ")[1].strip())
            year = int(line.split("Date: ")[1][:4])
            if label == q.category and (not q.users or user in q.users) and (
                    year >= q.since_year):
                counts[user] = counts.get(user, 0) + 1
        if q.kind == "compare":
            a, b = q.users
            assert counts.get(a, 0) != counts.get(b, 0)
            assert q.answer == str(a if counts.get(a, 0) > counts.get(b, 0) else b)
        else:
            assert sum(counts.values()) == q.answer
        parsed = parse_question(q.text)
        assert parsed is not None and parsed.category == q.category
        assert (parsed.users, parsed.since_year, parsed.compare) == (
            frozenset(q.users), q.since_year, q.kind == "compare")


def test_the_generator_is_seeded_and_sized() -> None:
    assert generate_task(n_records=200, seed=3) == generate_task(n_records=200, seed=3)
    assert generate_task(n_records=200, seed=3) != generate_task(n_records=200, seed=4)
    big = generate_task(target_chars=1_000_000)
    assert 900_000 < len(big.context) < 1_100_000 and len(big.records) == 3000
    hard = sum(r.hard for r in big.records) / len(big.records)
    assert 0.25 < hard < 0.35
    assert {r.label for r in big.records} == set(CATEGORIES)
    assert all(true_label(r.text) == r.label for r in big.records)


def test_score() -> None:
    assert score(12, 12) == 1.0
    assert score("The answer is 14.", 12) == pytest.approx(0.5625)
    assert score("10", 12) == pytest.approx(0.5625)
    assert score("no number", 3) == 0.0 and score(None, 3) == 0.0
    assert score("User 41234 has more.", "41234") == 1.0 and score("41235", "41234") == 0.0


def label_accuracy(responder: LabelResponder, records: list[Record], model: str) -> float:
    prompt = "Label each record.\n" + "\n".join(f"{i}: {r.text}" for i, r in enumerate(records))
    reply = responder.reply([{"role": "user", "content": prompt}], model)
    labels = [line.split(": ", 1)[1] for line in reply.splitlines()]
    return sum(lbl == r.label for lbl, r in zip(labels, records, strict=True)) / len(records)


def test_cheap_pools_mislabel_hard_records_far_more_than_the_frontier() -> None:
    task = generate_task(n_records=1500, hard_fraction=0.5, seed=5)
    hard = [r for r in task.records if r.hard]
    easy = [r for r in task.records if not r.hard]
    profiles = default_profiles()

    def sub(model: str) -> LabelResponder:
        responder = profiles[model].responder
        assert isinstance(responder, RoutingResponder)
        assert isinstance(responder.label, LabelResponder)
        return responder.label

    on_hard = {m: label_accuracy(sub(m), hard, m) for m in profiles}
    on_easy = {m: label_accuracy(sub(m), easy, m) for m in profiles}
    assert on_hard["sim/cpu-tiny"] < on_hard["sim/wafer-small"] < on_hard["sim/h100-open"] < (
        on_hard["sim/frontier"])
    assert on_hard["sim/wafer-small"] < 0.7 and on_hard["sim/frontier"] > 0.95
    assert min(on_easy[m] for m in ("sim/wafer-small", "sim/h100-open", "sim/frontier")) > 0.98


def test_a_weak_models_errors_do_not_cancel_out() -> None:
    task = generate_task(n_records=1200, hard_fraction=0.5, seed=9)
    records = [r for r in task.records if r.hard and r.label == "location"]
    weak = LabelResponder(Accuracy(1.0, 0.5))
    prompt = "\n".join(f"{i}: {r.text}" for i, r in enumerate(records))
    reply = weak.reply([{"role": "user", "content": prompt}], "m")
    wrong = {line.split(": ", 1)[1] for line in reply.splitlines()} - {"location"}
    assert wrong == {"description"}
    same = LabelResponder(Accuracy(1.0, 0.5)).reply([{"role": "user", "content": prompt}], "m")
    assert same == reply  # deterministic


def test_sub_responder_ignores_lines_that_are_not_records() -> None:
    prompt = "Label each: x\nnot a record\n0: Who wrote the novel y?"
    reply = LabelResponder(Accuracy(1.0, 1.0)).reply([{"role": "user", "content": prompt}], "m")
    assert reply == "0: human being"
    assert LabelResponder(Accuracy(1, 1)).reply([{"role": "user", "content": "hi"}], "m") == (
        "cannot label: no lines of the form `<number>: <record>` in the prompt")


SYSTEM = {"role": "system", "content": "You have a REPL with `context`..."}
QUESTION_MSG = {"role": "user", "content": "Question: How many records of users 123, 456 are "
                                           "about a location?"}


def test_root_responder_turns() -> None:
    root = RootResponder()
    chat: list[dict[str, str]] = [SYSTEM, QUESTION_MSG]
    explore = root.reply(chat, "m")
    assert "print(len(context))" in explore
    chat += [{"role": "assistant", "content": explore},
             {"role": "user", "content": "[cell 1 output]\n1000\nDate: ..."}]
    program = root.reply(chat, "m")
    assert "llm_query_batched" in program and "'location'" in program
    assert "{123, 456}" in program
    chat += [{"role": "assistant", "content": program},
             {"role": "user", "content": "[cell 1 output]\n80 records, 4 sub-calls, 9 about "
                                         "location"}]
    finish = root.reply(chat, "m")
    assert 'answer["ready"] = True' in finish
    assert RootResponder(finish="final_var").reply(chat, "m").endswith("FINAL_VAR(result)")
    with pytest.raises(ValueError):
        RootResponder(finish="shout")


def test_root_responder_retries_a_failed_program_then_gives_up() -> None:
    root = RootResponder(retries=1)
    chat: list[dict[str, str]] = [SYSTEM, QUESTION_MSG, {"role": "assistant", "content": "e"},
                                  {"role": "user", "content": "ok"},
                                  {"role": "assistant", "content": "p"},
                                  {"role": "user", "content": "[error] NameError: x"}]
    again = root.reply(chat, "m")
    assert again.startswith("The program failed") and "llm_query_batched" in again
    chat += [{"role": "assistant", "content": again},
             {"role": "user", "content": "[error] NameError: x"}]
    assert root.reply(chat, "m").endswith("FINAL(unknown)")
    plain = root.reply([SYSTEM, {"role": "user", "content": "What?"}], "m")
    assert plain.startswith("I cannot parse this question")
    assert all(form in plain for form in QUESTION_FORMS)
    assert plain.endswith("FINAL(cannot answer: the simulated model did not understand the "
                          "question)")


def run_program(context: str, question: str,
                batched: Callable[..., list[str]]) -> tuple[dict[str, Any], str]:
    """Run the root model's program as the RLM sandbox would (namespace, print capture)."""
    chat = [SYSTEM, {"role": "user", "content": f"Question: {question}"},
            {"role": "assistant", "content": "explored"}, {"role": "user", "content": "..."}]
    code = FENCE.search(RootResponder().reply(chat, "m"))
    assert code is not None
    namespace: dict[str, Any] = {"context": context, "llm_query_batched": batched,
                                 "answer": {"content": "", "ready": False}}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code.group(1), namespace)
    finish = FENCE.search(RootResponder().reply(
        [*chat, {"role": "assistant", "content": "program"},
         {"role": "user", "content": out.getvalue()}], "m"))
    assert finish is not None
    exec(finish.group(1), namespace)
    return namespace, out.getvalue()


def test_the_root_program_is_exact_with_a_perfect_sub_model() -> None:
    task = generate_task(n_records=400, seed=2)
    perfect = LabelResponder(Accuracy(1.0, 1.0))
    for q in task.questions:  # every kind: counts, comparisons, since a year
        ns, out = run_program(task.context, q.text, lambda prompts, **_: [
            perfect.reply([{"role": "user", "content": p}], "m") for p in prompts])
        assert ns["answer"] == {"content": str(q.answer), "ready": True}
        assert re.search(r"\d+ records, \d+ sub-calls, \d+ about ", out)


@pytest.mark.anyio
async def test_routing_hard_chunks_to_the_frontier_wins() -> None:
    """Sub-calls through the router and the real client: routed beats all-cheap on score and
    all-frontier on cost."""
    task = generate_task(n_records=600, seed=4)
    q = task.questions[1]  # all users, one category
    async with Simulator(time_scale=0.0) as sim:
        names = {"sim/wafer-small": "wafer", "sim/h100-open": "h100", "sim/frontier": "frontier"}
        pools = {name: PoolConfig(
            name=name, model=f"openai/{model}", api_base=sim.base_url, tier=p.tier,
            input_price_per_mtok=p.input_price_per_mtok,
            output_price_per_mtok=p.output_price_per_mtok, max_concurrency=16)
            for model, name in names.items() for p in [sim.profiles[model]]}
        clients = {name: LLMClient(pool) for name, pool in pools.items()}
        router = ComplexityRouter(pools)
        used: dict[str, set[str]] = {}

        async def solve(choose: Callable[[str], str]) -> tuple[float, float]:
            cost = 0.0

            def batched(prompts: list[str], **_: Any) -> list[str]:
                async def all_of() -> list[str]:
                    nonlocal cost
                    replies = [""] * len(prompts)

                    async def one(i: int) -> None:
                        nonlocal cost
                        pool = choose(prompts[i])
                        used.setdefault(pool, set()).add(prompts[i][:20])
                        done = await clients[pool].complete(
                            [{"role": "user", "content": prompts[i]}])
                        replies[i] = done.text
                        cost += done.cost_usd

                    async with anyio.create_task_group() as tg:
                        for i in range(len(prompts)):
                            tg.start_soon(one, i)
                    return replies

                return anyio.from_thread.run(all_of)

            ns, _ = await anyio.to_thread.run_sync(run_program, task.context, q.text, batched)
            return score(ns["answer"]["content"], q.answer), cost

        def routed_pool(prompt: str) -> str:
            decision = router.route(Task(prompt=prompt))
            assert decision is not None
            return decision.pool

        routed = await solve(routed_pool)
        assert used.keys() == {"wafer", "frontier"}  # plain chunks cheap, hedged ones strong
        assert all(p.startswith("These records") for p in used["frontier"])
        cheap = await solve(lambda _: "wafer")
        frontier = await solve(lambda _: "frontier")
        for client in clients.values():
            await client.aclose()
    assert routed[0] > cheap[0] + 0.3
    assert routed[1] < frontier[1] / 2


def test_the_root_program_sends_unsure_answers_up_the_cascade() -> None:
    """Sub-models may say `<n>: unsure`; the program asks for a stronger pool for any chunk
    with such an answer (``escalate_if``), and a model that knows when it cannot tell says so
    on some of the hard records it would get wrong."""
    task = generate_task(n_records=200, seed=3)
    seen: dict[str, Any] = {}

    def batched(prompts: list[str], **options: Any) -> list[str]:
        seen.update(options, prompts=prompts)
        return ["0: location"] * len(prompts)

    run_program(task.context, task.questions[0].text, batched)
    check = re.compile(seen["escalate_if"], re.MULTILINE)
    assert check.search("0: location\n1: unsure") and not check.search("0: location")
    assert all("`<number>: unsure` if you cannot tell" in p for p in seen["prompts"])
    doubting = LabelResponder(Accuracy(1.0, 0.0))
    hedged = [p for p in label_prompts([r.line() for r in task.records])
              if p.startswith("These records are ambiguous")]
    reply = doubting.reply([{"role": "user", "content": hedged[0]}], "m")
    assert check.search(reply) and "description" in reply  # unsure of some, wrong on others
