"""Images on their way from a sandbox to a model: checked, kept in the blob store, and turned
into OpenAI ``image_url`` content parts only where the model call is made.

The REPL helpers (``sandbox/heterarch_vision.py``) send each image as ``{"__image__": mime,
"data": base64}``. Nothing from a sandbox is trusted: ``decode_wire_image`` checks the shape,
the size before decoding, the base64, the format (PNG or JPEG, by its bytes, not its label)
and the pixel count, and raises ``InvalidImage`` with the reason.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from collections.abc import Sequence
from typing import Any

from ..errors import InvalidImage
from ._messages import ImageRef
from ._ports import BlobStore

MAX_IMAGE_BYTES = 20 * 1024 * 1024  # one image, encoded (OpenAI's per-image limit)
MAX_PIXELS = 50_000_000
_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg"}


def inspect_image(data: bytes) -> tuple[str, int, int]:
    """``(mime, width, height)`` of PNG/JPEG bytes; ``InvalidImage`` for anything else."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidImage(f"{len(data):,} bytes; at most {MAX_IMAGE_BYTES:,} per image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                mime = _FORMATS.get(str(image.format))
                if mime is None:
                    raise InvalidImage(f"{image.format} is not accepted: send PNG or JPEG")
                width, height = image.size
                if width < 1 or height < 1 or width * height > MAX_PIXELS:
                    raise InvalidImage(f"{width}x{height} pixels; 1 to {MAX_PIXELS:,} in all")
                image.verify()  # a truncated or corrupt file fails here, not at the provider
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        if isinstance(exc, InvalidImage):
            raise
        raise InvalidImage(f"not a PNG or JPEG image ({type(exc).__name__})") from None
    return mime, width, height


def decode_wire_image(item: object) -> bytes:
    """The bytes of one image as the REPL helpers send it, checked (see the module)."""
    if not (isinstance(item, dict) and isinstance(item.get("data"), str)
            and item.get("__image__") in _FORMATS.values()):
        raise InvalidImage("expected an image from the REPL helpers: pass PNG/JPEG bytes, a "
                           "path or a Pillow image to llm_query(..., images=[...])")
    text: str = item["data"]
    if len(text) > (MAX_IMAGE_BYTES + 2) // 3 * 4:
        raise InvalidImage(f"about {len(text) * 3 // 4:,} bytes; at most {MAX_IMAGE_BYTES:,}")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage("the image data is not base64") from None
    inspect_image(data)
    return data


async def store_image(blobs: BlobStore, data: bytes) -> ImageRef:
    """Check ``data`` and put it in the blob store."""
    mime, width, height = inspect_image(data)
    ref = await blobs.put_blob(data)
    return ImageRef(ref=ref, mime=mime, width=width, height=height, size=len(data))


async def store_wire_images(blobs: BlobStore, items: object) -> list[ImageRef]:
    """Check and store a list of images sent by a sandbox (all or none are stored)."""
    if not isinstance(items, list):
        raise InvalidImage("images= must be a list")
    decoded = [decode_wire_image(item) for item in items]
    return [await store_image(blobs, data) for data in decoded]


async def image_parts(blobs: BlobStore, images: Sequence[ImageRef]) -> list[dict[str, Any]]:
    """OpenAI ``image_url`` content parts (base64 data URLs) for stored images."""
    parts: list[dict[str, Any]] = []
    for image in images:
        data = await blobs.get_blob(image.ref)
        url = f"data:{image.mime};base64,{base64.b64encode(data).decode('ascii')}"
        parts.append({"type": "image_url", "image_url": {"url": url}})
    return parts


async def wire_images(blobs: BlobStore, images: Sequence[ImageRef]) -> list[dict[str, str]]:
    """Stored images in the form the REPL helpers load (an image context)."""
    out = []
    for image in images:
        data = await blobs.get_blob(image.ref)
        out.append({"__image__": image.mime, "data": base64.b64encode(data).decode("ascii")})
    return out
