"""Decoding of base64 images as Weaviate sends them (``blob`` properties, ``nearImage``)."""

from __future__ import annotations

import base64
import binascii
import io

from PIL import Image, UnidentifiedImageError

from cir_module.errors import InputError

__all__ = ["MAX_IMAGE_PIXELS", "decode_base64_image", "encode_image_base64"]

# Decompression bombs: refuse anything larger than 64 megapixels before decoding it.
MAX_IMAGE_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

_DATA_URL_PREFIX = "data:"


def _b64_bytes(data: str, what: str, max_bytes: int | None = None) -> bytes:
    if not isinstance(data, str):
        raise InputError(f"{what} must be a base64 string, got {type(data).__name__}")
    payload = data.strip()
    # Browsers and some clients send data URLs ("data:image/png;base64,...."): accept them.
    if payload.startswith(_DATA_URL_PREFIX) and "," in payload:
        payload = payload.split(",", 1)[1]
    if not payload:
        raise InputError(f"{what} is empty")
    # Weaviate sends standard base64; tolerate url-safe alphabet and missing padding.
    if max_bytes is not None and len(payload) * 3 // 4 > max_bytes:
        raise InputError(
            f"{what} is about {len(payload) * 3 // 4} bytes, more than the limit of "
            f"{max_bytes} bytes",
            status_code=413,
        )
    payload = payload.replace("-", "+").replace("_", "/")
    payload += "=" * (-len(payload) % 4)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"{what} is not valid base64: {exc}") from None


def decode_base64_image(
    data: str,
    what: str = "image",
    *,
    max_bytes: int | None = None,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> Image.Image:
    """Decode a base64 string (JPEG, PNG, WebP, GIF, ... any colour mode) to an RGB image.

    Animated images give their first frame; transparency is composited on white, so that
    the same picture with and without an alpha channel embeds alike.
    Raises :class:`InputError` with a message naming ``what`` when the input is unusable.
    """
    raw = _b64_bytes(data, what, max_bytes)
    try:
        with Image.open(io.BytesIO(raw)) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise InputError(
                    f"{what} is {width}x{height} pixels, more than the limit of "
                    f"{max_pixels} pixels",
                    status_code=413,
                )
            img.seek(0)
            img.load()
            return _to_rgb(img)
    except InputError:
        raise
    except Image.DecompressionBombError as exc:
        raise InputError(f"{what} is too large: {exc}", status_code=413) from None
    except UnidentifiedImageError:
        raise InputError(f"{what} is not a recognised image (JPEG, PNG, WebP, GIF, ...)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{what} could not be decoded: {exc}") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img.copy()
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
