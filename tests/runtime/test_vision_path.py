"""Images end to end: Docker sandbox -> callback -> blob store (NATS) -> model client ->
simulator and back; text-only pools never get one; bad images fail typed inside the REPL."""

from __future__ import annotations

import base64
import io
import re
import tomllib
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import nats
import pytest
from PIL import Image

from actors import Answer, Query, RLMAgent
from actors.agents import store_image
from actors.agents._images import decode_wire_image, inspect_image
from actors.errors import HeterarchError, InvalidImage
from heterarch.sim import webpages
from heterarch.sim.simulator import Simulator, default_profiles, profiles_toml
from heterarch.sim.vision import vision_profiles
from runtime import ActorSystem, NatsServer, Worker, agent_services, parse_config
from runtime._models.llm import litellm_module
from sandbox import build_image

pytestmark = pytest.mark.anyio


class Recording:
    """A scripted root model that remembers what it was shown."""

    def __init__(self, replies: Sequence[str]) -> None:
        self.replies = list(replies)
        self.seen: list[list[dict[str, str]]] = []

    def reply(self, messages: Sequence[dict[str, str]], model: str) -> str:
        self.seen.append(list(messages))
        return self.replies[min(len(self.seen) - 1, len(self.replies) - 1)]


PAGE = webpages.layout("web:21:0")
CARD, CARD2 = [box for role, box in PAGE.regions if role == "card"][:2]
PROGRAM = f"""```repl
page = context[0]
print("read:", llm_query("Read all text in this crop.", images=[zoom(page, {CARD!r}, 2)]))
both = llm_query_batched(["Read all text in this crop."] * 2,
                         images=[[zoom(page, {CARD!r}, 2)], zoom(page, {CARD2!r}, 2)])
print("batch:", " | ".join(text.replace(chr(10), " / ") for text in both))
import os
from PIL import Image
noise = Image.frombytes("RGB", (1200, 1200), os.urandom(1200 * 1200 * 3))  # a 4 MB PNG
print("noise:", llm_query("Read all text in this crop.", images=[noise]))
def typed(call):
    try:
        call()
    except ImageError as exc:
        print("typed:", type(exc).__name__, "|", exc)
typed(lambda: llm_query("Read this.", images=[page], pool="wafer"))
typed(lambda: llm_query("Read this.", images=[b"hello, not an image"]))
typed(lambda: llm_query("Read this.", images=[b"\\x89PNG\\r\\n\\x1a\\n" + bytes(100 * 2**20)]))
typed(lambda: crop(page, (10, 10, 10, 50)))
typed(lambda: llm_query_batched(["a", "b"], images=[[page]]))
print("still alive:", page.size)
```"""


@dataclass
class Run:
    answer: Answer
    root: Recording
    images_received: dict[str, int]
    seen_on_nats: list[tuple[str, bytes]]


async def run_program(nats_server: NatsServer, program: str) -> Run:
    """An RLM on the frontier vision pool whose root model writes ``program`` then finishes,
    over NATS (every message recorded by a raw subscriber), with a Docker sandbox."""
    litellm_module()  # imported up front: importing blocks the event loop for seconds
    build_image(if_missing=True, progress=lambda line: None)
    root = Recording([program, "FINAL(done)"])
    profiles = {**default_profiles(), **vision_profiles(root)}
    namespace = f"vision{uuid.uuid4().hex[:8]}"
    seen_on_nats: list[tuple[str, bytes]] = []
    sniffer = await nats.connect(nats_server.url)

    async def sniff(msg: nats.aio.msg.Msg) -> None:
        seen_on_nats.append((msg.subject, msg.data))

    await sniffer.subscribe(">", cb=sniff)
    try:
        async with Simulator(profiles, time_scale=0) as sim:
            config = parse_config(tomllib.loads(
                f'namespace = "{namespace}"\n'
                + profiles_toml(profiles, sim.base_url, modules=["actors"])))
            pools = ["wafer", "vision-small", "vision-frontier"]
            services, pool_services = agent_services(config, pools)
            async with (
                Worker(config, pools, nats=nats_server.url, namespace=namespace,
                       services=services, pool_services=pool_services),
                ActorSystem(nats=nats_server.url, namespace=namespace) as system,
            ):
                screenshot = await store_image(system.node.transport,
                                               webpages.render(PAGE))
                agent = await system.spawn(RLMAgent, pool="vision-frontier")
                answer = await agent.ask(Query(question="Read page 0.", images=[screenshot],
                                               max_depth=1, cache_calls=False), timeout=300)
                await system.stop(agent)
            images_received = dict(sim.images_received)
    finally:
        await sniffer.drain()
    assert all(n == 0 for model, n in images_received.items()
               if "image" not in profiles[model].modalities)
    return Run(answer, root, images_received, seen_on_nats)


async def test_an_image_goes_from_the_repl_to_the_model_and_back(
        nats_server: NatsServer) -> None:
    run = await run_program(nats_server, PROGRAM)
    answer, root, images_received, seen_on_nats = (
        run.answer, run.root, run.images_received, run.seen_on_nats)
    assert answer.text == "done", answer
    output = root.seen[1][-1]["content"]
    price = next(e for e in PAGE.elements if e.kind == "price" and e.box[0] >= CARD[0]
                 and e.box[2] <= CARD[2] and e.box[1] >= CARD[1] and e.box[3] <= CARD[3])
    assert f"price: {price.text}" in output  # read by the small vision model, exactly
    name2 = next(e for e in PAGE.elements if e.kind == "name" and e.box[0] >= CARD2[0]
                 and e.box[2] <= CARD2[2] and e.box[1] >= CARD2[1] and e.box[3] <= CARD2[3])
    batch = next(line for line in output.splitlines() if line.startswith("batch:"))
    assert f"price: {price.text}" in batch and f"name: {name2.text}" in batch
    assert "noise: I cannot make out any text in this image." in output  # 4 MB, past NATS's
    assert images_received["sim/vlm-small"] == 4  # 1 MB max_payload: only the blob store
    assert answer.usage["vision-small"].calls == 4
    chunks = [data for subject, data in seen_on_nats if b"heterarch.PromptChunk" in data]
    assert any(b"image/png" in data for data in chunks)  # the batch went as a chunk, refs only
    typed = [line for line in output.splitlines() if line.startswith("typed:")]
    assert [line.split(" | ")[0] for line in typed] == [
        "typed: ImageError", "typed: NotAnImage", "typed: ImageTooLarge", "typed: EmptyCrop",
        "typed: ImageError"]
    assert "text-only" in typed[0] and "one entry" in typed[4]
    assert "still alive: (1280," in output
    # Image bytes only ever crossed NATS as Object Store chunks, never inside a message.
    png, png_b64 = b"\x89PNG\r\n\x1a\n", base64.b64encode(b"\x89PNG\r\n\x1a\n")[:10]
    assert any(png in data for subject, data in seen_on_nats if subject.startswith("$O."))
    for subject, data in seen_on_nats:
        if not subject.startswith("$O."):
            assert png not in data and png_b64 not in data, subject


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims this size (no pixel data worth the name)."""
    head = b"\x00\x00\x00\x0dIHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big")
    head += b"\x08\x02\x00\x00\x00"
    crc = zlib.crc32(head[4:]).to_bytes(4, "big")
    return b"\x89PNG\r\n\x1a\n" + head + crc


def test_the_host_trusts_no_image_from_a_sandbox() -> None:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format="GIF")
    good = io.BytesIO()
    Image.new("RGB", (8, 8)).save(good, format="PNG")
    hostile: list[object] = [
        "a string", None, {"__image__": "image/png"}, {"__image__": "text/html", "data": ""},
        {"__image__": "image/png", "data": "not base64!"},
        {"__image__": "image/png", "data": "A" * (30 * 2**20)},  # 22 MB decoded
        {"__image__": "image/png", "data": base64.b64encode(out.getvalue()).decode()},
        {"__image__": "image/png", "data": base64.b64encode(png_header(60_000, 60_000)).decode()},
        {"__image__": "image/png", "data": base64.b64encode(good.getvalue()[:40]).decode()},
    ]
    for item in hostile:
        with pytest.raises(InvalidImage) as caught:
            decode_wire_image(item)
        assert isinstance(caught.value, HeterarchError) and caught.value.reason
    assert inspect_image(good.getvalue()) == ("image/png", 8, 8)


DOC = Path(__file__).resolve().parents[2] / "docs" / "vision.md"


async def test_the_repl_example_in_docs_vision_md_runs(nats_server: NatsServer) -> None:
    doc = await anyio.Path(DOC).read_text("utf-8")
    section = doc[doc.index("## Images in the REPL"):]
    example = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    run = await run_program(nats_server, f"```repl\n{example}print('ok')\n```")
    output = run.root.seen[1][-1]["content"]
    assert "[error]" not in output and "ok" in output, output
    assert run.images_received["sim/vlm-small"] == 3  # llm_query, then a batch of two
