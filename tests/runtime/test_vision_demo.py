"""``heterarch demo --vision`` end to end: NATS, worker processes, Docker sandboxes, simulator."""

from __future__ import annotations

import pytest
from rich.console import Console

from runtime._cli.vision_demo import run_vision_demo
from runtime._models.llm import litellm_module
from sandbox import build_image

pytestmark = pytest.mark.anyio


@pytest.mark.slow
async def test_the_vision_demo_routes_zooms_to_the_small_pool() -> None:
    litellm_module()
    build_image(if_missing=True, progress=lambda line: None)
    console = Console(record=True, width=140)
    frontier, routed = await run_vision_demo(pages=2, time_scale=0, console=console)
    assert frontier.score == routed.score == 1.0
    assert set(frontier.answer.usage) == {"vision-frontier"}
    small, big = routed.answer.usage["vision-small"], routed.answer.usage["vision-frontier"]
    assert small.calls == 2 * 8  # every block but the header of each page, zoomed and read
    assert big.calls == 2 + 2  # the root's two turns, one layout per page
    assert routed.answer.cost_usd < frontier.answer.cost_usd
    assert "routed vs all-frontier: cost x" in console.export_text()
