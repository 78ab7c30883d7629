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

from heterarch.cli.vision_demo import run_vision_demo
from heterarch.sim.simulator import Simulator, profiles_toml
from heterarch.sim.vision import vision_profiles
from heterarch.sim.vision_task import VisionRootResponder, make_task, score
from runtime import NatsServer
from runtime._models.llm import litellm_module
from sandbox import build_image

pytestmark = pytest.mark.anyio


@pytest.mark.slow
async def test_the_vision_demo_routes_the_root_layouts_and_zooms_and_spans_say_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    litellm_module()
    build_image(if_missing=True, progress=lambda line: None)
    spans_file = tmp_path / "spans.jsonl"
    for name in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HETERARCH_TRACE_FILE", str(spans_file))  # the workers' spans
    console = Console(record=True, width=140)
    frontier, routed = await run_vision_demo(pages=2, time_scale=0, console=console)
    assert frontier.score == routed.score == 1.0
    assert set(frontier.answer.usage) == {"vision-frontier"}
    assert set(routed.answer.usage) == {"wafer-large", "vision-small"}
    assert routed.answer.usage["wafer-large"].calls == 2  # the root's two turns
    # every block but the header of each page, zoomed and read; and one layout per page
    assert routed.answer.usage["vision-small"].calls == 2 * 8 + 2
    assert routed.answer.cost_usd < frontier.answer.cost_usd
    assert "routed vs all-frontier: cost x" in console.export_text()
    spans = [json.loads(line) for line in spans_file.read_text().splitlines()]
    why = [(s["attributes"].get("heterarch.pool"), s["attributes"]["heterarch.route.reason"])
           for s in spans if "heterarch.route.reason" in s["attributes"]]
    roots = [r for _, r in why if r.startswith("root: ")]
    assert roots and all("recursive agent needs tier 2: cheapest fit is wafer-large (tier 3)"
                         in r for r in roots)
    layouts = [(pool, r) for pool, r in why if r.startswith("global visual reasoning")]
    assert layouts and all(pool in (None, "vision-small") for pool, _ in layouts)
    assert all("text 13 px (vision-small sees 13.0 px, reads >= 9.7; vision-frontier sees "
               "8.2 px, reads >= 8.7): legible to vision-small" in r for _, r in layouts)


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
            [sys.executable, "-m", "heterarch.cli", "worker", "--pool", "vision-small",
             "--pool", "vision-frontier", "--config", str(config), "--nats", nats_server.url],
            env=env, stdout=subprocess.DEVNULL, stderr=None)
        try:
            done = await anyio.run_process(
                [sys.executable, "-m", "heterarch.cli", "rlm", task.prompt, *shots,
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
    assert any(pool == "vision-small" and reason.startswith("global visual reasoning")
               and "legible to vision-small" in reason for pool, reason in routed)
