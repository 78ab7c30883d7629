"""Zoom sub-calls on a small vision pool vs all on the frontier VLM, on generated screenshots.

    python bench/vision.py [--pages 8] [--time-scale 1.0]

Runs ``heterarch demo --vision``'s two placements (the root and every sub-call on the frontier
vision pool; routed: the root placed among the wafer-scale text pools, page layouts to the
cheapest vision pool that reads their text, crop-and-read to the small vision pool) and reports the
routed run's cost and wall time as ratios to the all-frontier run (lower is better), with both
scores. The figures follow from the published profiles in docs/vision.md and from the routing.
"""

from __future__ import annotations

import argparse

import _common  # noqa: F401  (sets sys.path)
import anyio
from _common import result

from heterarch.cli.vision_demo import run_vision_demo


async def main(pages: int, time_scale: float) -> None:
    frontier, routed = await run_vision_demo(pages=pages, time_scale=time_scale)
    result("vision_cost_ratio", routed.answer.cost_usd / frontier.answer.cost_usd)
    result("vision_time_ratio", routed.wall_s / frontier.wall_s)
    result("vision_routed_score", routed.score)
    result("vision_frontier_score", frontier.score)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pages", type=int, default=8)
    parser.add_argument("--time-scale", type=float, default=1.0)
    a = parser.parse_args()
    anyio.run(main, a.pages, a.time_scale)
