"""Generated web-page screenshots with small text, their ground truth, and questions about them.

``generate_pages(seed, n)`` lays out ``n`` shop pages (a header and navigation, product cards
with names, prices, badges and buttons, a checkout form, fine print in the footer) and knows
every text element: its kind, what it names, its text, its box and its font size in pixels.
``render(page)`` draws it with Pillow as a PNG that carries its identity (a ``heterarch.view``
text chunk: page id, the box shown, in page pixels). The layout is a pure function of the page
id, so the simulator finds the ground truth of any crop from the id and the box alone.

``questions(pages)`` asks things only a zoomed read answers: a product's price, a badge, the
label of a button, a form field, the shipping fee in the fine print.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

PAGE_WIDTH = 1280
VIEW_KEY = "heterarch.view"  # the PNG text chunk naming the page and the box an image shows

_PRODUCTS = ["alder lamp", "brisk kettle", "corvo chair", "delta desk", "ember rug",
             "fjord mug", "gable shelf", "heron vase", "ivory clock", "jumbo pillow",
             "karst stool", "lumen sconce", "mirth blanket", "nadir mirror", "oaken tray",
             "pylon fan", "quill pen", "raven bookend", "sable throw", "tundra jug"]
_BADGES = ["In stock", "Only 2 left", "Sale -15%", "Back soon", "New", "Ships in 3 days"]
_BUTTONS = ["Add to cart", "Buy now", "Notify me", "Save for later"]
_FIELDS = ["Email", "Full name", "Street", "Postcode", "City", "Phone"]
_SITES = ["Northwind Home", "Kestrel Goods", "Larch & Co", "Pebble Supply"]


@dataclass(frozen=True)
class Element:
    """One piece of text on a page. ``key`` says what it is (``price:alder lamp``)."""

    kind: str
    key: str
    text: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in page pixels
    font_px: int


@dataclass(frozen=True)
class Page:
    page_id: str
    width: int
    height: int
    elements: tuple[Element, ...]
    regions: tuple[tuple[str, tuple[int, int, int, int]], ...]  # (name, box): the layout

    def element(self, key: str) -> Element:
        return next(e for e in self.elements if e.key == key)


@dataclass(frozen=True)
class Question:
    text: str
    answer: str
    page_index: int
    key: str


def page_id(seed: int, index: int) -> str:
    return f"web:{seed}:{index}"


def layout(pid: str) -> Page:
    """The page named ``pid`` (``web:<seed>:<index>``); ``ValueError`` for any other name."""
    try:
        prefix, seed_text, index_text = pid.split(":")
        seed, index = int(seed_text), int(index_text)
    except ValueError:
        raise ValueError(f"not a generated page id: {pid!r}") from None
    if prefix != "web" or index < 0:
        raise ValueError(f"not a generated page id: {pid!r}")
    rng = random.Random(f"{seed}:{index}")
    elements: list[Element] = []
    regions: list[tuple[str, tuple[int, int, int, int]]] = []

    def text(kind: str, key: str, value: str, x: int, y: int, px: int) -> None:
        width = max(px, int(len(value) * px * 0.55))
        elements.append(Element(kind, key, value, (x, y, x + width, y + px + 2), px))

    text("title", "site", rng.choice(_SITES), 40, 24, 26)
    for i, link in enumerate(("Home", "Living", "Kitchen", "Office", "Sale", "Help")):
        text("link", f"nav:{link}", link, 640 + i * 100, 34, 11)
    regions.append(("header", (0, 0, PAGE_WIDTH, 90)))

    products = rng.sample(_PRODUCTS, 6)
    top = 120
    for n, name in enumerate(products):
        x = 40 + (n % 3) * 410
        y = top + (n // 3) * 330
        regions.append(("card", (x, y, x + 380, y + 300)))
        text("name", f"name:{name}", name.title(), x + 10, y + 200, 13)
        price = f"${rng.randint(5, 240)}.{rng.randint(0, 99):02d}"
        text("price", f"price:{name}", price, x + 10, y + 222, rng.choice((8, 9, 10)))
        text("badge", f"badge:{name}", rng.choice(_BADGES), x + 200, y + 224, 8)
        text("button", f"button:{name}", rng.choice(_BUTTONS), x + 10, y + 262, 10)

    form_top = top + 700
    fields = rng.sample(_FIELDS, 4)
    for n, field in enumerate(fields):
        y = form_top + 40 + n * 48
        text("field", f"field:{n + 1}", field, 60, y, 9)
        text("hint", f"hint:{field}", f"e.g. {rng.choice(_PRODUCTS).split()[0]}-{n}", 260, y, 8)
    text("button", "button:checkout", rng.choice(("Place order", "Pay now", "Continue")),
         60, form_top + 240, 10)
    regions.append(("form", (0, form_top, 640, form_top + 280)))

    foot = form_top + 320
    fee = f"${rng.randint(2, 19)}.{rng.choice(('00', '50', '95'))}"
    text("fine", "shipping", f"Shipping {fee} on orders under $50", 40, foot + 20, 8)
    text("fine", "returns", f"Returns within {rng.choice((14, 30, 60))} days", 40, foot + 40, 8)
    regions.append(("footer", (0, foot, PAGE_WIDTH, foot + 70)))
    return Page(pid, PAGE_WIDTH, foot + 80, tuple(elements), tuple(regions))


def generate_pages(seed: int, n: int) -> list[Page]:
    return [layout(page_id(seed, i)) for i in range(n)]


def questions(pages: Sequence[Page], seed: int, per_page: int = 2) -> list[Question]:
    """Questions whose answers are small text: prices, badges, buttons, fields, fine print."""
    rng = random.Random(f"questions:{seed}")
    out: list[Question] = []
    for index, page in enumerate(pages):
        products = [e.key.split(":", 1)[1] for e in page.elements if e.kind == "price"]
        asks = [
            ("price:{p}", "What is the price of the {p} on page {i}?"),
            ("badge:{p}", "What does the badge next to the {p} on page {i} say?"),
            ("button:{p}", "What does the button under the {p} on page {i} say?"),
            ("field:3", "What is the label of the third checkout field on page {i}?"),
            ("shipping", "What does the shipping line in the footer of page {i} say?"),
        ]
        for key_t, text_t in rng.sample(asks, per_page):
            product = rng.choice(products)
            key = key_t.format(p=product)
            out.append(Question(text_t.format(p=product, i=index), page.element(key).text,
                                index, key))
    return out


def view_info(pid: str, box: Sequence[float]) -> str:
    """The ``heterarch.view`` value: which page and which box (page pixels) an image shows."""
    return json.dumps({"page": pid, "box": [round(float(v), 2) for v in box]})


def read_view(info: Any) -> tuple[str, tuple[float, float, float, float]] | None:
    """Parse a ``heterarch.view`` value; None when absent or malformed."""
    try:
        data = json.loads(info)
        box = tuple(float(v) for v in data["box"])
        if len(box) != 4:
            return None
        return str(data["page"]), (box[0], box[1], box[2], box[3])
    except (TypeError, ValueError, KeyError):
        return None


def render(page: Page) -> bytes:
    """The page as PNG bytes (white background, boxes for cards and fields, the text)."""
    from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

    image = Image.new("RGB", (page.width, page.height), "white")
    draw = ImageDraw.Draw(image)
    fonts: dict[int, Any] = {}
    for _role, (x0, y0, x1, y1) in page.regions:
        draw.rectangle((x0 + 4, y0 + 4, x1 - 4, y1 - 4), outline=(225, 225, 225))
    for e in page.elements:
        if e.kind == "name":  # a product photo placeholder above each name
            x, y = e.box[0], e.box[1] - 190
            draw.rectangle((x, y, x + 360, y + 180), fill=(236, 238, 242))
        if e.kind == "button":
            draw.rectangle((e.box[0] - 4, e.box[1] - 3, e.box[2] + 4, e.box[3] + 3),
                           fill=(40, 90, 200))
        font = fonts.get(e.font_px)
        if font is None:
            font = fonts[e.font_px] = ImageFont.load_default(size=e.font_px)
        color = "white" if e.kind == "button" else (30, 30, 30)
        draw.text((e.box[0], e.box[1]), e.text, fill=color, font=font)
    meta = PngImagePlugin.PngInfo()
    meta.add_text(VIEW_KEY, view_info(page.page_id, (0, 0, page.width, page.height)))
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=meta)
    return out.getvalue()
