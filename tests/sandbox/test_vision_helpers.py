"""The REPL's image helpers (``sandbox/heterarch_vision.py``), run here on the host's Pillow."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from actors.agents._images import decode_wire_image
from heterarch.sim import vision, webpages
from sandbox import heterarch_vision as hv

PAGE = webpages.layout("web:9:1")


def page_image() -> Image.Image:
    return hv.load_image(webpages.render(PAGE))


def view(image: Image.Image) -> tuple[str, list[float]]:
    data = json.loads(image.info[hv.VIEW_KEY])
    return data["page"], data["box"]


def test_crops_and_zooms_remember_what_part_of_the_page_they_show() -> None:
    page = page_image()
    part = hv.crop(page, (100, 200, 500, 400))
    assert part.size == (400, 200) and view(part) == (PAGE.page_id, [100, 200, 500, 400])
    big = hv.zoom(part, (100, 50, 300, 150), 3)  # a box inside the crop, in its pixels
    assert big.size == (600, 300) and view(big) == (PAGE.page_id, [200, 250, 400, 350])
    again = hv.crop(big, (0, 0, 300, 150))  # half of the zoomed image: a quarter of its view
    assert view(again) == (PAGE.page_id, [200, 250, 300, 300])
    assert hv.crop(page, (-50, -50, 10_000, 10_000)).size == page.size  # clipped


def test_grid_covers_the_image_and_annotate_keeps_its_view() -> None:
    page = page_image()
    tiles = hv.grid(page, 3, 2)
    assert len(tiles) == 6
    assert sum(t.width * t.height for _, t in tiles) == page.width * page.height
    marked = hv.annotate(page, [b for _, b in PAGE.regions], [r for r, _ in PAGE.regions])
    assert marked.size == page.size and view(marked)[0] == PAGE.page_id


def test_a_zoomed_crop_travels_and_reads_as_the_part_it_shows() -> None:
    card = next(box for role, box in PAGE.regions if role == "card")
    wire = hv.to_wire(hv.zoom(page_image(), card, 2))
    data = decode_wire_image(wire)  # what the host accepts
    reply = vision.VisionResponder(vision.QWEN3_VL_VISION).reply_images(
        [{"role": "user", "content": "Read"}], [data], "m")
    inside = [f"{e.kind}: {e.text}" for e in sorted(PAGE.elements, key=lambda e: (e.box[1],
              e.box[0])) if e.box[0] >= card[0] and e.box[2] <= card[2]
              and e.box[1] >= card[1] and e.box[3] <= card[3]]
    assert reply.splitlines() == inside


def test_paths_bytes_and_jpeg_load(tmp_path: Path) -> None:
    path = tmp_path / "shot.jpg"
    Image.new("RGB", (40, 30), "white").save(path, format="JPEG")
    assert hv.load_image(str(path)).size == (40, 30)
    assert hv.to_wire(path.read_bytes())["__image__"] == "image/jpeg"
    assert hv.to_wire(str(path))["__image__"] == "image/png"


@pytest.mark.parametrize(("bad", "error"), [
    (b"hello", hv.NotAnImage),
    ("/no/such/file.png", hv.NotAnImage),
    (12345, hv.NotAnImage),
    (b"\x89PNG\r\n\x1a\n" + bytes(100 * 2**20), hv.ImageTooLarge),
])
def test_bad_images_raise_typed_errors(bad: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        hv.to_wire(bad)
    assert issubclass(error, hv.ImageError) and issubclass(error, ValueError)


def test_bad_crops_and_zooms_raise_typed_errors() -> None:
    page = page_image()
    for box in [(10, 10, 10, 50), (5000, 0, 6000, 10), "abc", (1, 2, 3)]:
        with pytest.raises(hv.EmptyCrop):
            hv.crop(page, box)
    with pytest.raises(hv.ImageError, match="positive"):
        hv.zoom(page, None, 0)
    with pytest.raises(hv.ImageTooLarge):
        hv.zoom(page, None, 100)
    with pytest.raises(hv.EmptyCrop):
        hv.grid(page, 0, 2)
    gif = io.BytesIO()
    Image.new("RGB", (4, 4)).save(gif, format="GIF")
    with pytest.raises(hv.NotAnImage, match="GIF"):
        hv.load_image(gif.getvalue())


def test_install_twice_wraps_once() -> None:
    sent: list[object] = []

    def llm_query(prompt: str, **options: object) -> str:
        sent.append(options.get("images"))
        return "ok"

    namespace: dict[str, object] = {"llm_query": llm_query}
    hv.install(namespace)
    hv.install(namespace)  # the prelude runs again in a sandbox started ahead
    query = namespace["llm_query"]
    assert callable(query) and query("read", images=[page_image()]) == "ok"
    wire = sent[0]
    assert isinstance(wire, list) and decode_wire_image(wire[0])
