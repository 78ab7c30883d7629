"""The talk's table, in one run: all-frontier vs heterogeneous on wafer-scale vs on RDU.

    python bench/hetero.py [--records 1500] [--per-kind 2] [--time-scale 1.0]

Runs ``heterarch demo``'s three configurations on ``--per-kind`` questions of each kind the
generator has (count, comparison between users, since a year), on simulated pools with the published
speeds and prices of docs/llm.md; the automation layer places the root agent and every
sub-call of the heterogeneous runs. Reports the heterogeneous runs' dollars and wall time as
ratios to the all-frontier run (lower is better) and the scores averaged over question kinds.
"""

from __future__ import annotations

import argparse

import _common  # noqa: F401  (sets sys.path)
import anyio
from _common import result

from heterarch.cli.demo import FRONTIER, RDU, WAFER, run_demo, summarize


async def main(records: int, time_scale: float, per_kind: int) -> None:
    by_label = {s.label: s for s in summarize(await run_demo(
        records=records, time_scale=time_scale, per_kind=per_kind))}
    frontier = by_label[FRONTIER.label]
    for placement, suffix in ((WAFER, ""), (RDU, "_rdu")):
        hetero = by_label[placement.label]
        result(f"hetero_cost_ratio{suffix}", hetero.cost_usd / frontier.cost_usd)
        result(f"hetero_time_ratio{suffix}", hetero.wall_s / frontier.wall_s)
        result(f"routed_score{suffix}", hetero.score)
        result(f"frontier_score{suffix}", frontier.score)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1500)
    parser.add_argument("--per-kind", type=int, default=2,
                        help="questions of each kind (count, compare, temporal)")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="multiply simulated latencies; 1.0 keeps the published speeds "
                             "against the runtime's own (unscaled) overhead")
    a = parser.parse_args()
    anyio.run(main, a.records, a.time_scale, a.per_kind)
