"""Heterogeneous vs homogeneous placement on the demo task, in one run.

    python bench/hetero.py [--records 3000] [--time-scale 0.2]

Runs the demo's three placements (all-wafer, all-frontier, routed) and reports the routed run's
cost and wall time as ratios to the all-frontier run (lower is better), with both scores.
"""

from __future__ import annotations

import argparse

import _common  # noqa: F401  (sets sys.path)
import anyio
from _common import result

from runtime._cli.demo import run_demo


async def main(records: int, time_scale: float) -> None:
    cheap, frontier, routed = await run_demo(records=records, time_scale=time_scale)
    result("hetero_cost_ratio", routed.answer.cost_usd / frontier.answer.cost_usd)
    result("hetero_time_ratio", routed.wall_s / frontier.wall_s)
    result("routed_score", routed.score)
    result("frontier_score", frontier.score)
    result("cheap_score", cheap.score)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--time-scale", type=float, default=0.2)
    a = parser.parse_args()
    anyio.run(main, a.records, a.time_scale)
