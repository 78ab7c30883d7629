"""Simulated vision models: image tokens, legibility, generated pages, routing by modality."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import msgspec
import pytest
from PIL import Image

from heterarch.sim import vision, webpages
from heterarch.sim.profiles import default_profiles
from heterarch.sim.simulator import Simulator
from heterarch.sim.vision import GPT5_VISION, QWEN3_VL_VISION
from runtime import (
    ComplexityRouter,
    LLMCallFailed,
    LLMClient,
    NoPoolFits,
    PoolConfig,
    RouteService,
    Rule,
    StaticRouter,
    Task,
)
from sandbox import heterarch_vision as hv

GPT4O = vision.VisionSpec.openai_tiles(85, 170, legible_px=5.5)


def test_openai_tiles_match_the_published_examples() -> None:
    # OpenAI's worked examples: 1024x1024 -> 768x768, 4 tiles, 765 tokens;
    # 2048x4096 -> 768x1536, 6 tiles, 1105 tokens.
    assert GPT4O.model_size(1024, 1024) == (768, 768)
    assert GPT4O.tokens(1024, 1024) == 765
    assert GPT4O.model_size(2048, 4096) == (768, 1536)
    assert GPT4O.tokens(2048, 4096) == 1105
    assert vision.GPT5_VISION.tokens(1024, 1024) == 70 + 4 * 140


def test_qwen_patches_keep_the_resolution() -> None:
    spec = vision.QWEN3_VL_VISION
    assert spec.model_size(1280, 960) == (1280, 960)
    assert spec.tokens(1280, 960) == 40 * 30 + 2
    w, h = spec.model_size(8000, 8000)  # over max_pixels: scaled down
    assert w * h <= spec.max_pixels + 64 * 8000
    assert spec.model_size(10, 10) == (256, 256)  # under min_pixels: scaled up
    with pytest.raises(ValueError, match="positive size"):
        spec.model_size(0, 10)


def test_accuracy_falls_with_text_size_and_rises_with_tier() -> None:
    small, frontier = vision.QWEN3_VL_VISION, vision.GPT5_VISION
    sizes = [3.0, 5.0, 6.5, 8.0, 12.0]
    for spec in (small, frontier):
        accuracies = [spec.read_accuracy(px) for px in sizes]
        assert accuracies == sorted(accuracies)
        assert accuracies[0] < 0.1 and accuracies[-1] > 0.99
    assert all(frontier.read_accuracy(px) > small.read_accuracy(px) for px in sizes)


def test_pages_are_a_pure_function_of_their_id() -> None:
    assert webpages.layout("web:3:1") == webpages.generate_pages(3, 2)[1]
    assert webpages.layout("web:3:1") != webpages.layout("web:4:1")
    for bad in ("web:x:1", "file:/etc/passwd", "web:1:-1", ""):
        with pytest.raises(ValueError, match="not a generated page id"):
            webpages.layout(bad)
    pages = webpages.generate_pages(5, 3)
    for q in webpages.questions(pages, 5):
        assert pages[q.page_index].element(q.key).text == q.answer


def view_png(page: webpages.Page, box: tuple[int, int, int, int], zoom: float) -> bytes:
    """A crop of the rendered page, zoomed, as the REPL helpers send it."""
    wire = hv.to_wire(hv.zoom(webpages.render(page), box, zoom))
    return base64.b64decode(wire["data"])


def test_the_responder_reads_zoomed_crops_and_misreads_small_text() -> None:
    page = webpages.layout("web:7:0")
    responder = vision.VisionResponder(vision.GPT5_VISION)
    user = [{"role": "user", "content": "Read all text in this crop."}]
    whole = responder.reply_images(user, [webpages.render(page)], "m")
    truth = {f"{e.kind}: {e.text}" for e in page.elements}
    misread = [line for line in whole.splitlines() if line not in truth]
    assert misread  # 8-pixel text on a page scaled to a 768 short side: some is wrong
    card = next(box for role, box in page.regions if role == "card")
    zoomed = responder.reply_images(user, [view_png(page, card, 2.0)], "m")
    inside = [e for e in page.elements if e.box[0] >= card[0] and e.box[2] <= card[2]
              and e.box[1] >= card[1] and e.box[3] <= card[3]]
    assert zoomed.splitlines() == [f"{e.kind}: {e.text}" for e in inside]
    layout = responder.reply_images([{"role": "user", "content": "Give the layout."}],
                                    [webpages.render(page)], "m")
    assert layout.splitlines()[0] == "header: 0,0,1280,90"


def test_an_image_without_a_view_has_nothing_to_read() -> None:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(out, format="JPEG")
    responder = vision.VisionResponder(vision.QWEN3_VL_VISION)
    reply = responder.reply_images([{"role": "user", "content": "Read"}], [out.getvalue()], "m")
    assert reply == "I cannot make out any text in this image."


def image_message(data: bytes) -> list[dict[str, object]]:
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    return [{"role": "user", "content": [{"type": "text", "text": "Read all text."},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


# Both model-client paths. litellm's own aiohttp transport sends a request body as raw bytes,
# which aiohttp warns about past 1 MiB (not ours to fix; the lean path streams such bodies).
LITELLM_RAW_BODY = pytest.mark.filterwarnings(
    "ignore:Sending a large body directly with raw bytes:ResourceWarning")


@pytest.mark.anyio
@pytest.mark.parametrize("client", ["openai", pytest.param("litellm", marks=LITELLM_RAW_BODY)])
async def test_images_over_http_cost_tiles_and_text_only_models_refuse_them(client: str) -> None:
    profiles = {**default_profiles(), **vision.vision_profiles()}
    page = webpages.layout("web:2:0")
    card = next(box for role, box in page.regions if role == "card")
    png = view_png(page, card, 2.0)
    async with Simulator(profiles, time_scale=0) as sim, \
            LLMClient(PoolConfig(name="vision-small", model="openai/sim/vlm-small",
                                 api_base=sim.base_url, max_retries=0, input_price_per_mtok=1.0,
                                 output_price_per_mtok=1.0, client=client)) as vlm, \
            LLMClient(PoolConfig(name="wafer", model="openai/sim/wafer-small",
                                 api_base=sim.base_url, max_retries=0, client=client)) as text_only:
        done = await vlm.complete(image_message(png))
        price = page.element(next(e.key for e in page.elements if e.kind == "price"
                                  and e.box[0] >= card[0] and e.box[2] <= card[2]
                                  and e.box[1] >= card[1] and e.box[3] <= card[3]))
        assert f"price: {price.text}" in done.text
        seen = Image.open(io.BytesIO(png)).size
        assert done.input_tokens >= vision.QWEN3_VL_VISION.tokens(*seen)
        noise = io.BytesIO()  # over 1 MiB: past NATS's max_payload and aiohttp's raw-bytes limit
        Image.frombytes("RGB", (1200, 1200), os.urandom(1200 * 1200 * 3)).save(noise, "PNG")
        assert noise.tell() > 2**20
        big = await vlm.complete(image_message(noise.getvalue()))
        assert big.text == "I cannot make out any text in this image."
        with pytest.raises(LLMCallFailed, match="does not accept image input"):
            await text_only.complete(image_message(png))
        assert sim.images_received["sim/wafer-small"] == 0
        assert sim.images_received["sim/vlm-small"] == 2
        with pytest.raises(LLMCallFailed, match="not a PNG or JPEG"):
            await vlm.complete(image_message(b"%PDF-1.4 not an image"))


VISION_POOLS = {
    "wafer": PoolConfig(name="wafer", model="m/w", tier=1, input_price_per_mtok=0.1,
                        output_price_per_mtok=0.1),
    "vision-small": PoolConfig(name="vision-small", model="m/v", tier=2,
                               input_price_per_mtok=0.08, output_price_per_mtok=0.5,
                               modalities=["text", "image"]),
    "vision-frontier": PoolConfig(name="vision-frontier", model="m/f", tier=3,
                                  input_price_per_mtok=1.25, output_price_per_mtok=10,
                                  modalities=["text", "image"]),
}


def test_crops_go_to_the_small_vision_pool_and_global_reasoning_to_the_frontier() -> None:
    router = ComplexityRouter(VISION_POOLS)
    read = router.route(Task(prompt="Read all text in this crop.", images=1))
    assert read is not None and read.pool == "vision-small"
    assert "crop-and-read" in read.reason and "vision pools only" in read.reason
    plan = router.route(Task(prompt="Give the layout of this page.", images=1))
    assert plan is not None and plan.pool == "vision-frontier"
    assert "global visual reasoning" in plan.reason
    text = router.route(Task(prompt="Read this sentence."))
    assert text is not None and text.pool == "wafer"  # text alone: the cheapest pool


def test_layouts_go_to_the_cheapest_pool_that_reads_their_text() -> None:
    pools = {name: msgspec.structs.replace(pool, legible_px=spec.reliable_px,
                                           image_resize=spec.rule)
             for name, pool, spec in (
                 ("vision-small", VISION_POOLS["vision-small"], QWEN3_VL_VISION),
                 ("vision-frontier", VISION_POOLS["vision-frontier"], GPT5_VISION))}
    route = RouteService(ComplexityRouter({**VISION_POOLS, **pools}), pools=VISION_POOLS)
    layout = "Give the layout of this page."
    page = route(prompt=layout, images=1, text_px=13, image_sizes=[(1280, 1220)])
    assert page.pool == "vision-small"  # 13 px at full size; the frontier sees it at 8.2
    assert "text 13 px (vision-small sees 13.0 px, reads >= 9.7" in page.reason
    assert "legible to vision-small" in page.reason
    small = route(prompt=layout, images=1, text_px=9, image_sizes=[(600, 400)])
    assert small.pool == "vision-frontier"  # no resize for it; 9 px is below the small's 9.7
    assert "legible to vision-frontier" in small.reason
    tiny = route(prompt=layout, images=1, text_px=7, image_sizes=[(1280, 1220)])
    assert tiny.pool == "vision-frontier" and "legible to none needs tier 3" in tiny.reason
    huge = route(prompt=layout, images=1, text_px=11, image_sizes=[(5000, 5000)])
    assert huge.pool == "vision-frontier"  # the small's processor shrinks it below 9.7
    said = route(prompt=layout, images=1)  # no text size said: the tier rule alone
    assert said.pool == "vision-frontier" and "text" not in said.reason.split("(")[0]


def test_no_router_sends_an_image_to_a_text_only_pool() -> None:
    static = StaticRouter([Rule(pool="wafer", tag="zoom")], default="wafer")
    route = RouteService(static, pools=VISION_POOLS)
    assert route(prompt="x", tag="zoom").pool == "wafer"  # text: the rule holds
    with pytest.raises(NoPoolFits, match="modalities"):
        route(prompt="x", tag="zoom", images=1)  # the rule's pool is text-only: refused
    chained = RouteService(StaticRouter([Rule(pool="wafer", tag="zoom"),
                                         Rule(pool="vision-small", tag="zoom")]),
                           pools=VISION_POOLS)
    assert chained(prompt="x", tag="zoom", images=2).pool == "vision-small"
    text_only = {"wafer": VISION_POOLS["wafer"]}
    with pytest.raises(NoPoolFits):
        RouteService(ComplexityRouter(text_only), pools=text_only)(prompt="x", images=1)


def test_heterarch_simulate_serves_the_vision_pools() -> None:
    root = Path(__file__).parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "heterarch.cli", "simulate", "--port", "0",
                             "--time-scale", "0"], stdout=subprocess.PIPE, text=True, cwd=root)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().rsplit(" ", 1)[1].strip()
        page = webpages.layout("web:4:0")
        card = next(box for role, box in page.regions if role == "card")
        body = json.dumps({"model": "sim/vlm-small",
                           "messages": image_message(view_png(page, card, 2.0))}).encode()
        request = urllib.request.Request(url + "/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            reply = json.loads(response.read())
        assert reply["choices"][0]["message"]["content"].startswith("name: ")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
