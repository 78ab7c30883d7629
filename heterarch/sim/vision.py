"""Simulated vision-language models: how they see an image, what it costs, how well they read.

A ``VisionSpec`` is one provider's published image handling:

* ``openai_tiles``: OpenAI's high-detail rule. The image is scaled to fit 2048 x 2048, then
  down so its short side is at most 768; it costs ``base + per_tile x`` the number of 512-pixel
  tiles that cover it (GPT-5: 70 + 140 per tile; GPT-4o: 85 + 170).
* ``qwen_patches``: Qwen3-VL's processor. The image keeps its resolution (rounded to multiples
  of 32: 16-pixel patches merged 2 x 2), scaled only to stay within ``min_pixels`` ..
  ``max_pixels``; one token per 32 x 32 pixels.

What a model reads depends on the height of the text in the pixels it actually sees (after its
resize): ``read_accuracy`` is a logistic curve around ``legible_px`` (the height it reads right
half the time; stronger tiers read smaller text). ``VisionResponder`` answers from the ground
truth of a generated page (``webpages``): it finds the page and the box an image shows from the
image's ``heterarch.view`` chunk, and misreads each text element with the probability the curve
gives (deterministic: seeded by the model, the element and the size it was seen at).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from . import webpages
from .profiles import Profile, Responder

__all__ = ("GPT5_VISION", "QWEN3_VL_VISION", "ImageSeen", "VisionResponder", "VisionSpec",
           "decode_image", "reply_with_images", "request_images", "vision_profiles")


@dataclass(frozen=True)
class VisionSpec:
    """How one model family sees images (see the module docstring)."""

    rule: str  # "openai-tiles" or "qwen-patches"
    legible_px: float  # text height (in the model's pixels) read right half the time
    base_tokens: int = 0
    tile_tokens: int = 0
    min_pixels: int = 0
    max_pixels: int = 0
    spread_px: float = 0.8  # how sharply accuracy rises around legible_px

    @classmethod
    def openai_tiles(cls, base: int, per_tile: int, *, legible_px: float) -> VisionSpec:
        return cls("openai-tiles", legible_px, base_tokens=base, tile_tokens=per_tile)

    @classmethod
    def qwen_patches(cls, *, legible_px: float, min_pixels: int = 65_536,
                     max_pixels: int = 16_777_216) -> VisionSpec:
        return cls("qwen-patches", legible_px, min_pixels=min_pixels, max_pixels=max_pixels)

    def model_size(self, width: int, height: int) -> tuple[int, int]:
        """The size the model works at, after its provider's resize."""
        if width < 1 or height < 1:
            raise ValueError(f"an image needs a positive size, not {width}x{height}")
        if self.rule == "openai-tiles":
            scale = min(1.0, 2048 / max(width, height))
            w, h = width * scale, height * scale
            scale = min(1.0, 768 / min(w, h))
            return max(1, round(w * scale)), max(1, round(h * scale))
        pixels = width * height
        scale = 1.0
        if pixels > self.max_pixels:
            scale = math.sqrt(self.max_pixels / pixels)
        elif pixels < self.min_pixels:
            scale = math.sqrt(self.min_pixels / pixels)
        return (max(32, round(width * scale / 32) * 32), max(32, round(height * scale / 32) * 32))

    def tokens(self, width: int, height: int) -> int:
        """Input tokens one image of this size costs."""
        w, h = self.model_size(width, height)
        if self.rule == "openai-tiles":
            return self.base_tokens + self.tile_tokens * math.ceil(w / 512) * math.ceil(h / 512)
        return (w // 32) * (h // 32) + 2  # + the vision start and end tokens

    @property
    def reliable_px(self) -> float:
        """The text height (model pixels) read right 98% of the time: what a pool declares
        (``PoolConfig.legible_px``) for the router."""
        return round(self.legible_px + 4 * self.spread_px, 2)

    def read_accuracy(self, text_px: float) -> float:
        """Chance of reading a text this many model pixels high exactly right."""
        return 1.0 / (1.0 + math.exp(-(text_px - self.legible_px) / self.spread_px))


# Published image rules (sources in docs/vision.md). legible_px: the tier assumption.
GPT5_VISION = VisionSpec.openai_tiles(70, 140, legible_px=5.5)
QWEN3_VL_VISION = VisionSpec.qwen_patches(legible_px=6.5)


@dataclass(frozen=True)
class ImageSeen:
    """One decoded image of a request: its size and, for a generated page, what it shows."""

    width: int
    height: int
    view: tuple[str, tuple[float, float, float, float]] | None


def decode_image(data: bytes) -> ImageSeen:
    """Size and ``heterarch.view`` of PNG/JPEG bytes; ``ValueError`` if they are not one."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in ("PNG", "JPEG"):
                raise ValueError(f"unsupported image format {image.format}")
            info = image.info.get(webpages.VIEW_KEY)
            return ImageSeen(image.width, image.height, webpages.read_view(info))
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"not a PNG or JPEG image: {exc}") from None


_CONFUSIONS = {"0": "8", "8": "3", "3": "8", "5": "6", "6": "5", "1": "7", "7": "1", "9": "0",
               "2": "7", "4": "1", "e": "c", "c": "e", "a": "o", "o": "a", "l": "1", "i": "l",
               "n": "m", "m": "n", "t": "f", "s": "5", "r": "n", "h": "b", "u": "v", "d": "cl"}


def misread(text: str, rng: random.Random) -> str:
    """``text`` with one character confused for a look-alike (never the same text)."""
    spots = [i for i, ch in enumerate(text) if ch.lower() in _CONFUSIONS]
    if not spots:
        return text[:-1] if len(text) > 1 else "?"
    i = rng.choice(spots)
    return text[:i] + _CONFUSIONS[text[i].lower()] + text[i + 1:]


class VisionResponder:
    """A vision model answering from the ground truth of generated pages.

    ``reply_images(messages, images, model)``: a prompt that asks for the ``layout`` gets the
    page's blocks (role and box, in the pixels of the image given); any other prompt gets a
    transcription of every text element wholly inside the image, top to bottom, one
    ``kind: text`` line each, each misread with the chance ``spec.read_accuracy`` gives for
    the height the model saw it at. Chats without images go to ``text`` (if given).
    """

    def __init__(self, spec: VisionSpec, text: Responder | None = None) -> None:
        self.spec = spec
        self.text = text

    def reply(self, messages: Sequence[dict[str, str]], model: str) -> str:
        if self.text is None:
            return "I need an image to answer this."
        return self.text.reply(messages, model)

    def reply_images(self, messages: Sequence[dict[str, str]], images: Sequence[bytes],
                     model: str) -> str:
        prompt = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        parts = []
        for data in images:
            seen = decode_image(data)
            if seen.view is None:
                parts.append("I cannot make out any text in this image.")
                continue
            page = webpages.layout(seen.view[0])
            if re.search(r"\blayout\b", prompt, re.I):
                parts.append(self._layout(page, seen))
            else:
                parts.append(self._transcribe(page, seen, model))
        return "\n\n".join(parts)

    @staticmethod
    def _to_image(seen: ImageSeen, box: tuple[float, float, float, float]) -> tuple[int, ...]:
        assert seen.view is not None
        x0, y0, x1, y1 = seen.view[1]
        sx, sy = seen.width / max(1e-9, x1 - x0), seen.height / max(1e-9, y1 - y0)
        return (round((box[0] - x0) * sx), round((box[1] - y0) * sy),
                round((box[2] - x0) * sx), round((box[3] - y0) * sy))

    def _layout(self, page: webpages.Page, seen: ImageSeen) -> str:
        lines = []
        for role, box in page.regions:
            fb = tuple(float(v) for v in box)
            if _inside((fb[0], fb[1], fb[2], fb[3]), seen):
                lines.append(f"{role}: " + ",".join(map(str, self._to_image(
                    seen, (fb[0], fb[1], fb[2], fb[3])))))
        return "\n".join(lines) or "no blocks"

    def _transcribe(self, page: webpages.Page, seen: ImageSeen, model: str) -> str:
        assert seen.view is not None
        x0, _, x1, _ = seen.view[1]
        model_w, _ = self.spec.model_size(seen.width, seen.height)
        scale = seen.width / max(1e-9, x1 - x0) * model_w / seen.width  # page px -> model px
        lines = []
        for e in sorted(page.elements, key=lambda e: (e.box[1], e.box[0])):
            fb = tuple(float(v) for v in e.box)
            if not _inside((fb[0], fb[1], fb[2], fb[3]), seen):
                continue
            seen_px = e.font_px * scale
            seed = hashlib.sha256(f"{model}|{page.page_id}|{e.key}|{seen_px:.1f}".encode())
            rng = random.Random(seed.digest())
            ok = rng.random() < self.spec.read_accuracy(seen_px)
            lines.append(f"{e.kind}: {e.text if ok else misread(e.text, rng)}")
        return "\n".join(lines) or "no text"


def _inside(box: tuple[float, float, float, float], seen: ImageSeen) -> bool:
    """Whether ``box`` (page pixels) lies wholly inside the part of the page the image shows."""
    assert seen.view is not None
    x0, y0, x1, y1 = seen.view[1]
    return box[0] >= x0 and box[1] >= y0 and box[2] <= x1 and box[3] <= y1


def vision_profiles(root: Responder | None = None) -> dict[str, Profile]:
    """Two vision pools with published figures (docs/vision.md): a small open VLM on one H100
    and a frontier VLM API. ``root`` answers the chats without images (an RLM root's turns)."""
    profiles = [
        Profile("sim/vlm-small", "h100", 0.15, 130.0, 32, 0.08, 0.50, 2,
                responder=VisionResponder(QWEN3_VL_VISION, root),
                modalities=("text", "image"), vision=QWEN3_VL_VISION,
                description="Qwen3-VL-8B-class VLM on one H100 (simulated)"),
        Profile("sim/frontier-vlm", "api", 0.89, 80.0, 64, 1.25, 10.00, 3,
                responder=VisionResponder(GPT5_VISION, root), reasoning_tokens=320,
                modalities=("text", "image"), vision=GPT5_VISION,
                description="GPT-5-class frontier VLM API, medium reasoning (simulated)"),
    ]
    return {p.model: p for p in profiles}


_DATA_URL = re.compile(r"^data:image/(png|jpeg|jpg);base64,", re.I)


def request_images(profile: Profile, raw_messages: Sequence[object]) -> tuple[list[bytes], int]:
    """The images of a chat request (OpenAI ``image_url`` parts, as base64 data URLs) and the
    input tokens they cost on ``profile``. ``ValueError`` (the simulator answers 400) for an
    image sent to a text-only model, a URL that is not a PNG/JPEG data URL, or bad bytes."""
    images: list[bytes] = []
    for message in raw_messages:
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else ():
            if not isinstance(part, dict) or part.get("type") != "image_url":
                continue
            url = (part.get("image_url") or {}).get("url", "")
            match = _DATA_URL.match(url) if isinstance(url, str) else None
            if match is None:
                raise ValueError("image_url must be a data:image/png or image/jpeg base64 URL")
            try:
                images.append(base64.b64decode(url[match.end():], validate=True))
            except binascii.Error:
                raise ValueError("image_url data is not valid base64") from None
    if images and ("image" not in profile.modalities or profile.vision is None):
        raise ValueError(f"model {profile.model!r} does not accept image input")
    tokens = 0
    for data in images:
        seen = decode_image(data)
        assert profile.vision is not None
        tokens += profile.vision.tokens(seen.width, seen.height)
    return images, tokens


def reply_with_images(responder: Responder, messages: Sequence[dict[str, str]],
                      images: Sequence[bytes], model: str) -> str:
    """Ask ``responder`` about ``images`` (``ValueError`` if it cannot read images)."""
    read = getattr(responder, "reply_images", None)
    if read is None:
        raise ValueError(f"model {model!r} has no vision responder")
    text: str = read(messages, images, model)
    return text
