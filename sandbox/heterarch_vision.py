"""Image helpers inside the sandbox REPL: load, crop, zoom, grid, annotate, send to a model.

Runs inside the sandbox (Python 3.9+, Pillow 9.4+; no heterarch imports). The RLM prelude
imports it and wraps ``llm_query`` / ``llm_query_batched`` so that they take ``images=``:

    page = context[0]                              # a Pillow image
    top = zoom(page, (0, 0, 640, 300), 2)          # crop a box and enlarge it 2x
    for box, tile in grid(page, 3, 2):             # 3 rows x 2 columns of crops
        ...
    llm_query("Read the price.", images=[top])     # PNG/JPEG bytes, Pillow images or paths
    llm_query_batched(prompts, images=[[a], [b]])  # one list of images per prompt

Every image remembers which part of its source it shows (``img.info["heterarch.view"]``: the
page id and the box, in the source's pixels) through crops and zooms, and carries it to the
model in a PNG text chunk. Bad input raises an ``ImageError`` here, before anything is sent:
``NotAnImage``, ``ImageTooLarge`` (over 20 MB encoded, or over 50 megapixels), ``EmptyCrop``.
"""

import base64
import io
import json
import os

from PIL import Image, ImageDraw, ImageFont, PngImagePlugin, UnidentifiedImageError

VIEW_KEY = "heterarch.view"
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # what one image may weigh, encoded (OpenAI's limit)
MAX_PIXELS = 50_000_000

__all__ = ["EmptyCrop", "ImageError", "ImageTooLarge", "NotAnImage", "annotate", "crop",
           "grid", "install", "load_image", "zoom"]


class ImageError(ValueError):
    """A bad image for a model call (the message says what to do)."""


class NotAnImage(ImageError):
    pass


class ImageTooLarge(ImageError):
    pass


class EmptyCrop(ImageError):
    pass


def load_image(source):
    """A Pillow image from PNG/JPEG ``bytes``, a path inside the sandbox, or an image."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise NotAnImage("no image file at %r" % path)
        if os.path.getsize(path) > MAX_IMAGE_BYTES:
            raise ImageTooLarge("%s is %d bytes; at most %d" % (path, os.path.getsize(path),
                                                                 MAX_IMAGE_BYTES))
        with open(path, "rb") as f:
            source = f.read()
    if isinstance(source, (bytearray, memoryview)):
        source = bytes(source)
    if not isinstance(source, bytes):
        raise NotAnImage("images must be PNG/JPEG bytes, a path or a Pillow image, not %s"
                         % type(source).__name__)
    if len(source) > MAX_IMAGE_BYTES:
        raise ImageTooLarge("the image is %d bytes; at most %d: crop or shrink it first"
                            % (len(source), MAX_IMAGE_BYTES))
    try:
        image = Image.open(io.BytesIO(source))
        if image.format not in ("PNG", "JPEG"):
            raise NotAnImage("only PNG and JPEG images are accepted, not %s" % image.format)
        _check_pixels(image.width, image.height)
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise NotAnImage("these bytes are not a PNG or JPEG image (%s)" % exc) from None
    return image


def _check_pixels(width, height):
    if width * height > MAX_PIXELS:
        raise ImageTooLarge("the image has %dx%d pixels; at most %d in all"
                            % (width, height, MAX_PIXELS))


def _view(image):
    """(page id, box in source pixels) of ``image``; a fresh image is its own whole source."""
    try:
        data = json.loads(image.info.get(VIEW_KEY, ""))
        return str(data["page"]), [float(v) for v in data["box"]]
    except (TypeError, ValueError, KeyError):
        return "", [0.0, 0.0, float(image.width), float(image.height)]


def _with_view(image, page, box):
    image.info = dict(image.info)
    image.info[VIEW_KEY] = json.dumps({"page": page, "box": [round(v, 2) for v in box]})
    return image


def crop(image, box):
    """The part of ``image`` inside ``box`` = (left, top, right, bottom), clipped to it."""
    image = load_image(image)
    try:
        left, top, right, bottom = (float(v) for v in box)
    except (TypeError, ValueError):
        raise EmptyCrop("box must be four numbers (left, top, right, bottom), not %r"
                        % (box,)) from None
    left, top = max(0.0, left), max(0.0, top)
    right, bottom = min(float(image.width), right), min(float(image.height), bottom)
    if right - left < 1 or bottom - top < 1:
        raise EmptyCrop("the box %r leaves nothing of a %dx%d image"
                        % (tuple(box), image.width, image.height))
    page, (x0, y0, x1, y1) = _view(image)
    sx, sy = (x1 - x0) / image.width, (y1 - y0) / image.height
    part = image.crop((round(left), round(top), round(right), round(bottom)))
    return _with_view(part, page, [x0 + left * sx, y0 + top * sy,
                                   x0 + right * sx, y0 + bottom * sy])


def zoom(image, box=None, factor=2.0):
    """Crop ``box`` (all of it if None) and enlarge it ``factor`` times (Lanczos)."""
    image = load_image(image)
    part = crop(image, box if box is not None else (0, 0, image.width, image.height))
    if not factor > 0:
        raise ImageError("zoom factor must be positive, not %r" % (factor,))
    size = (max(1, round(part.width * factor)), max(1, round(part.height * factor)))
    _check_pixels(*size)
    page, view = _view(part)
    return _with_view(part.resize(size, Image.Resampling.LANCZOS), page, view)


def grid(image, rows, cols, overlap=0):
    """``rows`` x ``cols`` crops covering ``image`` (``overlap`` pixels shared at the seams),
    as a list of ``(box, crop)`` in reading order."""
    image = load_image(image)
    if int(rows) < 1 or int(cols) < 1:
        raise EmptyCrop("a grid needs at least one row and one column")
    out = []
    for r in range(int(rows)):
        for c in range(int(cols)):
            box = (c * image.width / cols - overlap, r * image.height / rows - overlap,
                   (c + 1) * image.width / cols + overlap, (r + 1) * image.height / rows + overlap)
            out.append((box, crop(image, box)))
    return out


def annotate(image, boxes, labels=None, color=(220, 30, 30)):
    """A copy of ``image`` with each box outlined (and labelled): to show a model, or to look."""
    image = load_image(image).convert("RGB")
    page, view = _view(image)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for i, box in enumerate(boxes):
        draw.rectangle(tuple(box), outline=color, width=2)
        if labels is not None and i < len(labels):
            draw.text((box[0] + 3, box[1] + 2), str(labels[i]), fill=color, font=font)
    return _with_view(image, page, view)


def to_wire(source):
    """The form an image travels to the host in: PNG (or JPEG as it is), base64, checked."""
    image = load_image(source)
    if isinstance(source, bytes) and image.format == "JPEG":
        data, mime = source, "image/jpeg"
    else:
        page, view = _view(image)
        meta = PngImagePlugin.PngInfo()
        if page:
            meta.add_text(VIEW_KEY, json.dumps({"page": page, "box": view}))
        out = io.BytesIO()
        image.save(out, format="PNG", pnginfo=meta)
        data, mime = out.getvalue(), "image/png"
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageTooLarge("the image encodes to %d bytes; at most %d: crop or shrink it"
                            % (len(data), MAX_IMAGE_BYTES))
    return {"__image__": mime, "data": base64.b64encode(data).decode("ascii")}


def images_from_wire(items):
    """Pillow images from the host's wire forms (how image contexts are loaded)."""
    return [load_image(base64.b64decode(item["data"])) for item in items]


def _image_list(images):
    if images is None:
        return None
    if isinstance(images, (bytes, str, os.PathLike, Image.Image)):
        images = [images]
    return [to_wire(i) for i in images]


def install(namespace):
    """Wrap the namespace's ``llm_query`` / ``llm_query_batched`` to take ``images=``, and
    put the helpers and their errors in it. Running it again changes nothing (a sandbox
    started ahead has run the prelude once already)."""
    callback_error = namespace.get("CallbackError", Exception)

    def host_error(exc):
        text = str(exc)
        return ImageError(text) if text.startswith("InvalidImage") else exc

    single = namespace.get("llm_query")
    batched = namespace.get("llm_query_batched")
    if getattr(single, "takes_images", False):
        single = None  # wrapped already
    if getattr(batched, "takes_images", False):
        batched = None
    if single is not None:
        def llm_query(prompt, images=None, **options):
            if images is not None:
                options["images"] = _image_list(images)
            try:
                return single(prompt, **options)
            except callback_error as exc:
                raise host_error(exc) from None

        llm_query.takes_images = True  # type: ignore[attr-defined]
        namespace["llm_query"] = llm_query
    if batched is not None:
        def llm_query_batched(prompts, images=None, **options):
            if images is not None:
                if len(images) != len(prompts):
                    raise ImageError("images= needs one entry (an image or a list) per prompt")
                options["images"] = [_image_list(i) or [] for i in images]
            try:
                return batched(prompts, **options)
            except callback_error as exc:
                raise host_error(exc) from None

        llm_query_batched.takes_images = True  # type: ignore[attr-defined]
        namespace["llm_query_batched"] = llm_query_batched
    for name in __all__:
        if name != "install":
            namespace[name] = globals()[name]
