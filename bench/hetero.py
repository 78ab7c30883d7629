"""The talk's table, measured: all-frontier vs heterogeneous on wafer-scale vs on RDU.

    python bench/hetero.py [--records 1500] [--per-kind 3] [--seeds 4] [--train-seeds 2]
                           [--time-scale 0.05] [--hard-words SEED]

Three phases, on simulated pools with the published speeds and prices of docs/llm.md:

1. **Learn** (training seeds, wafer-scale placement only): the router starts without a model;
   a large share of sub-calls (``--train-shadow``) is shadowed on the other side (cheap pool
   vs the strongest), and agreement with the strongest is the label. Nobody grades anything.
2. **Score and cost** (held-out seeds, every placement, ``--time-scale``: scores and dollars
   do not depend on it): the router fitted from phase 1's labels routes every sub-call to the
   cheapest pool whose predicted agreement meets the quality target; the default few percent
   are still shadowed, which measures the predictor's calibration on held-out runs.
3. **Time** (one question of each kind, at the published speeds, time scale 1).

``--hard-words SEED`` gives simulated models whose hard records are not the generator's
hedged ones (``oolong.shifted_difficulty``): the router must learn them from its own labels.
Scores are means over questions with a 95% interval (and the paired difference routed minus
frontier); cost and time are ratios to the all-frontier run (lower is better).
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path

import _common  # noqa: F401  (sets sys.path)
import anyio
from _common import result

from heterarch.cli.demo import FRONTIER, RDU, WAFER, RunResult, run_demo
from heterarch.sim.oolong import shifted_difficulty
from runtime._models.content import fit_content, read_labels, reliability

REFERENCE = "wafer-large"  # the strongest pool of the wafer-scale placement


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% interval (normal approximation)."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, float("nan")
    return m, 1.96 * statistics.stdev(values) / math.sqrt(len(values))


def by_label(runs: Sequence[RunResult], label: str) -> dict[tuple[int, int], RunResult]:
    return {(r.seed, r.index): r for r in runs if r.label == label}


async def main(a: argparse.Namespace) -> None:
    hard_words = shifted_difficulty(a.hard_words) if a.hard_words is not None else ()
    if hard_words:
        print(f"simulated models whose hard records have one of the words {hard_words} "
              "(not the generator's hedged ones)")
    train_seeds = [1000 + i for i in range(a.train_seeds)]
    eval_seeds = [2000 + i for i in range(a.seeds)]
    with tempfile.TemporaryDirectory(prefix="bench-hetero-") as tmp:
        train_labels, eval_labels = Path(tmp) / "train.jsonl", Path(tmp) / "eval.jsonl"
        model_path = Path(tmp) / "router.json"
        # 1. learn from shadowed runs
        await run_demo(records=a.records, time_scale=a.time_scale, per_kind=a.per_kind,
                       seeds=train_seeds, hard_words=hard_words, placements=(WAFER,),
                       routing={"labels": str(train_labels), "refit_every": 0,
                                "shadow_fraction": a.train_shadow})
        labels = read_labels(train_labels)
        model = fit_content(labels, reference=REFERENCE)
        model.save(model_path)
        for pool, m in model.pools.items():
            print(f"fitted {pool}: {m.labels} labels, agreement {m.agreement:.4f}, "
                  f"{len(m.weights)} weights")
        routing = {"model": str(model_path), "labels": str(eval_labels), "refit_every": 0}
        # 2. held-out seeds: score and cost
        runs = await run_demo(records=a.records, time_scale=a.time_scale, per_kind=a.per_kind,
                              seeds=eval_seeds, hard_words=hard_words, routing=routing)
        # 3. time at the published speeds
        timed = await run_demo(records=a.records, time_scale=1.0, per_kind=1,
                               seeds=eval_seeds[:1], hard_words=hard_words, routing=routing)
        held_out = read_labels(eval_labels) if eval_labels.exists() else []
    frontier = by_label(runs, FRONTIER.label)
    f_mean, f_ci = mean_ci([r.score for r in frontier.values()])
    print(f"frontier score {f_mean:.3f} +- {f_ci:.3f} over {len(frontier)} questions")
    for placement, suffix in ((WAFER, ""), (RDU, "_rdu")):
        routed = by_label(runs, placement.label)
        pairs = [k for k in routed if k in frontier]
        r_mean, r_ci = mean_ci([routed[k].score for k in pairs])
        d_mean, d_ci = mean_ci([routed[k].score - frontier[k].score for k in pairs])
        for kind in ("count", "compare", "temporal"):
            mine = [k for k in pairs if routed[k].kind == kind]
            if mine:
                mean_routed = statistics.fmean(routed[k].score for k in mine)
                mean_frontier = statistics.fmean(frontier[k].score for k in mine)
                print(f"{placement.label} {kind}: routed {mean_routed:.3f} frontier "
                      f"{mean_frontier:.3f} ({len(mine)} questions)")
        print(f"{placement.label}: score {r_mean:.3f} +- {r_ci:.3f}; routed - frontier "
              f"{d_mean:+.3f} +- {d_ci:.3f} (paired, {len(pairs)} questions)")
        cost = (sum(routed[k].answer.cost_usd for k in pairs)
                / sum(frontier[k].answer.cost_usd for k in pairs))
        t_routed = sum(r.wall_s for r in timed if r.label == placement.label)
        t_frontier = sum(r.wall_s for r in timed if r.label == FRONTIER.label)
        result(f"hetero_cost_ratio{suffix}", cost)
        result(f"hetero_time_ratio{suffix}", t_routed / t_frontier)
        result(f"routed_score{suffix}", r_mean)
        result(f"frontier_score{suffix}", f_mean)
    rel = reliability(model, held_out)
    print(f"calibration on {rel.n} held-out shadowed items: ECE {rel.ece:.4f}, Brier "
          f"{rel.brier:.4f}; bins (predicted -> observed, n): " + ", ".join(
              f"{p:.3f}->{o:.3f} ({n})" for p, o, n in rel.bins))
    routed_labels = [x for x in held_out if x.routed]
    for pool in sorted({x.pool for x in held_out}):
        mine = [x for x in held_out if x.pool == pool]
        print(f"held-out agreement of {pool} with {REFERENCE}: "
              f"{sum(x.agree for x in mine) / len(mine):.4f} over {len(mine)} items "
              f"({sum(x.routed for x in mine)} where the router had chosen it)")
    if routed_labels:
        result("router_agreement", sum(x.agree for x in routed_labels) / len(routed_labels))
    result("router_ece", rel.ece)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1500)
    parser.add_argument("--per-kind", type=int, default=3,
                        help="questions of each kind (count, compare, temporal) per context")
    parser.add_argument("--seeds", type=int, default=4, help="held-out contexts")
    parser.add_argument("--train-seeds", type=int, default=2, help="contexts to learn from")
    parser.add_argument("--train-shadow", type=float, default=0.5,
                        help="share of sub-calls shadowed while learning")
    parser.add_argument("--time-scale", type=float, default=0.05,
                        help="simulated latencies for the scored runs (phase 3 uses 1.0)")
    parser.add_argument("--hard-words", type=int, default=None, metavar="SEED",
                        help="simulated models whose hard records differ from the generator's")
    anyio.run(main, parser.parse_args())
