"""``heterarch demo --vision`` end to end: NATS, worker processes, Docker sandboxes, simulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import anyio
import pytest
from rich.console import Console

from runtime._cli.vision_demo import run_vision_demo
from runtime._models.llm import litellm_module
from runtime._nats_server import NatsServer
from runtime._sim.simulator import Simulator, profiles_toml
from runtime._sim.vision import vision_profiles
from runtime._sim.vision_task import VisionRootResponder, make_task, score
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


async def test_heterarch_rlm_takes_screenshots_and_spans_say_why(nats_server: NatsServer,
                                                                  tmp_path: Path) -> None:
    build_image(if_missing=True, progress=lambda line: None)
    task = make_task(seed=5, pages=2, per_page=1)
    shots = []
    for n, png in enumerate(task.screenshots):
        shots += ["--context", str(tmp_path / f"page{n}.png")]
        (tmp_path / f"page{n}.png").write_bytes(png)
    profiles = vision_profiles(VisionRootResponder())
    namespace = f"visioncli{uuid.uuid4().hex[:8]}"
    spans_file = tmp_path / "spans.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["HETERARCH_TRACE_FILE"] = str(spans_file)
    async with Simulator(profiles, time_scale=0) as sim:
        config = tmp_path / "pools.toml"
        config.write_text(f'namespace = "{namespace}"\n'
                          + profiles_toml(profiles, sim.base_url, modules=["actors"]))
        worker = await anyio.open_process(
            [sys.executable, "-m", "runtime._cli", "worker", "--pool", "vision-small",
             "--pool", "vision-frontier", "--config", str(config), "--nats", nats_server.url],
            env=env, stdout=subprocess.DEVNULL, stderr=None)
        try:
            done = await anyio.run_process(
                [sys.executable, "-m", "runtime._cli", "rlm", task.prompt, *shots,
                 "--root-pool", "vision-frontier", "--nats", nats_server.url,
                 "--namespace", namespace], check=False, env=env)
        finally:
            worker.terminate()
            with anyio.fail_after(30):
                await worker.wait()  # a clean stop flushes its spans
    assert done.returncode == 0, done.stderr.decode()
    assert score(done.stdout.decode(), task) == 1.0
    assert "vision-small" in done.stderr.decode()  # its usage line: the zooms went there
    spans = [json.loads(line) for line in spans_file.read_text().splitlines()]
    routed = {(s["attributes"].get("heterarch.pool"), s["attributes"]["heterarch.route.reason"])
              for s in spans if "heterarch.route.reason" in s["attributes"]}
    crop_read = "crop-and-read (1 image(s): vision pools only)"
    assert any(pool == "vision-small" and reason.startswith(crop_read)
               for pool, reason in routed)
    assert any(pool == "vision-frontier" and reason.startswith("global visual reasoning")
               for pool, reason in routed)
