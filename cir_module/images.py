"""Decoding of base64 images as Weaviate sends them (``blob`` properties, ``nearImage``).

Decoding is two steps so that a service can bound what an image costs before paying it:
:func:`probe_base64_image` reads only the header (format, size) and checks the limits;
:func:`decode_probed` then decodes, reduced as far as the model allows (JPEG's DCT scaling at
decode, Pillow's integer ``reduce`` after), so that no giant intermediate is made.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import ctypes.util
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from cir_module.errors import InputError

__all__ = [
    "MAX_IMAGE_PIXELS",
    "ImageLimits",
    "ProbedImage",
    "decode_base64_image",
    "decode_probed",
    "encode_image_base64",
    "image_signature",
    "probe_base64_image",
    "release_memory",
]

# Decompression bombs: refuse anything larger than 64 megapixels before decoding it.
MAX_IMAGE_PIXELS = 64_000_000
# Pillow's own bomb check (an error at twice its threshold) must never fire before ours, whose
# limit is configurable: ours is checked on the header, before any pixel is decoded.
Image.MAX_IMAGE_PIXELS = None
warnings.simplefilter("ignore", Image.DecompressionBombWarning)

_DATA_URL_PREFIX = "data:"
_BASE64_CHARS = re.compile(r"^[A-Za-z0-9+/=_\-\s]*$")
# The first bytes of every format the service reads (Pillow's plugins accept more, but a
# stored text is only ever taken for an image when it starts like one of these).
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


@dataclass(frozen=True)
class ImageLimits:
    """What one image may cost: encoded bytes, declared pixels, aspect ratio."""

    max_bytes: int | None = None
    max_pixels: int = MAX_IMAGE_PIXELS
    max_aspect_ratio: float = 20.0


@dataclass(frozen=True)
class ProbedImage:
    """An image whose header was read and accepted: raw bytes, format and declared size."""

    raw: bytes
    format: str
    width: int
    height: int
    what: str

    @property
    def pixels(self) -> int:
        return self.width * self.height


def _payload(data: str) -> str:
    payload = data.strip()
    # Browsers and some clients send data URLs ("data:image/png;base64,...."): accept them.
    if payload.startswith(_DATA_URL_PREFIX) and "," in payload:
        payload = payload.split(",", 1)[1]
    return payload


def _b64decode(payload: str) -> bytes:
    # Weaviate sends standard base64; tolerate url-safe alphabet and missing padding.
    payload = payload.replace("-", "+").replace("_", "/")
    payload += "=" * (-len(payload) % 4)
    return base64.b64decode(payload, validate=True)


def image_signature(data: str) -> str | None:
    """The image format ``data`` (base64, or a data URL) starts like, or None.

    Reads only the first few bytes: cheap enough to tell stored images from stored texts.
    """
    if not isinstance(data, str):
        return None
    head = _payload(data)[:24]
    if len(head) < 8 or not _BASE64_CHARS.match(head):
        return None
    try:
        start = _b64decode(head[: len(head) - len(head) % 4])
    except (binascii.Error, ValueError):
        return None
    if start[:4] == b"RIFF" and start[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in _SIGNATURES if start.startswith(magic)), None)


def _b64_bytes(data: str, what: str, max_bytes: int | None = None) -> bytes:
    if not isinstance(data, str):
        raise InputError(f"{what} must be a base64 string, got {type(data).__name__}")
    payload = _payload(data)
    if not payload:
        raise InputError(f"{what} is empty")
    if max_bytes is not None and len(payload) * 3 // 4 > max_bytes:
        raise InputError(
            f"{what} is about {len(payload) * 3 // 4} bytes, more than the limit of "
            f"{max_bytes} bytes",
            status_code=413,
        )
    try:
        return _b64decode(payload)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"{what} is not valid base64: {exc}") from None


def probe_base64_image(data: str, what: str = "image", limits: ImageLimits | None = None):
    """Read the header of a base64 image and check it against ``limits``; no pixel decoded.

    Raises :class:`InputError` (400 unusable, 413 over a limit) naming ``what``.
    """
    limits = limits or ImageLimits()
    raw = _b64_bytes(data, what, limits.max_bytes)
    try:
        with Image.open(io.BytesIO(raw)) as img:
            fmt, (width, height) = img.format or "?", img.size
    except UnidentifiedImageError:
        raise InputError(f"{what} is not a recognised image (JPEG, PNG, WebP, GIF, ...)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{what} could not be decoded: {exc}") from None
    if width < 1 or height < 1:
        raise InputError(f"{what} declares an empty size {width}x{height}")
    if width * height > limits.max_pixels:
        raise InputError(
            f"{what} is {width}x{height} pixels, more than the limit of {limits.max_pixels} pixels",
            status_code=413,
        )
    if max(width, height) / min(width, height) > limits.max_aspect_ratio:
        raise InputError(
            f"{what} is {width}x{height} pixels: aspect ratio above the limit of "
            f"{limits.max_aspect_ratio:g}",
            status_code=413,
        )
    return ProbedImage(raw, fmt, width, height, what)


def decode_probed(probed: ProbedImage, min_side: int | None = None) -> Image.Image:
    """Decode a probed image to RGB, reduced at decode by an integer factor while its
    shortest side stays at least ``REDUCING_GAP`` x ``min_side`` (the model's input side);
    full size when ``min_side`` is None.

    Animated images give their first frame; transparency is composited on white, so that
    the same picture with and without an alpha channel embeds alike.
    """
    what = probed.what
    try:
        with Image.open(io.BytesIO(probed.raw)) as img:
            img.seek(0)
            factor = _reduction(img.size, min_side)
            if factor > 1 and img.format == "JPEG":
                # JPEG scales by 1/2, 1/4 or 1/8 while decoding: the full image never exists.
                img.draft(img.mode, (img.size[0] // factor, img.size[1] // factor))
            img.load()
            factor = _reduction(img.size, min_side)
            if factor > 1:
                if img.mode not in _REDUCIBLE:
                    # reduce refuses palette, 1-bit and 16-bit images, and on the modes it
                    # takes that are not colours (palette indices) it would average nonsense.
                    img = _to_rgb(img)
                img = img.reduce(factor)
            return _to_rgb(img)
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(f"{what} is not a recognised image (JPEG, PNG, WebP, GIF, ...)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(f"{what} could not be decoded: {exc}") from None


# The modes whose pixels are colours (or alpha) that a box filter may average.
_REDUCIBLE = frozenset({"RGB", "RGBA", "L", "LA"})
# Reduction keeps this many times the model's side, so that the model's own (antialiased)
# resize still does the last step and the embedding barely changes (Pillow's reducing_gap).
REDUCING_GAP = 4


def _reduction(size: tuple[int, int], min_side: int | None) -> int:
    """The largest integer factor that keeps the shortest side at ``REDUCING_GAP`` x
    ``min_side`` or more."""
    if not min_side:
        return 1
    return max(1, min(size) // (REDUCING_GAP * min_side))


def decode_base64_image(
    data: str,
    what: str = "image",
    *,
    max_bytes: int | None = None,
    max_pixels: int = MAX_IMAGE_PIXELS,
    max_aspect_ratio: float = float("inf"),
    min_side: int | None = None,
) -> Image.Image:
    """Decode a base64 string (JPEG, PNG, WebP, GIF, ... any colour mode) to an RGB image.

    :func:`probe_base64_image` then :func:`decode_probed`. Raises :class:`InputError` with a
    message naming ``what`` when the input is unusable.
    """
    limits = ImageLimits(max_bytes, max_pixels, max_aspect_ratio)
    return decode_probed(probe_base64_image(data, what, limits), min_side)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bit instead of clipping to white.
        img = img.point(lambda v: v * (1 / 256)).convert("L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def encode_image_base64(image: Image.Image, format: str = "PNG") -> str:
    """Encode a PIL image as a base64 string, the form Weaviate stores in a ``blob``."""
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(ctypes.util.find_library("c"))
except OSError:  # no C library to load by that name: nothing to trim
    _LIBC = None


def release_memory() -> None:
    """Hand freed heap memory back to the system (glibc keeps it otherwise: the RSS of a
    process that once decoded a large image stays high)."""
    trim = getattr(_LIBC, "malloc_trim", None)  # glibc only
    if trim is not None:
        trim(0)
