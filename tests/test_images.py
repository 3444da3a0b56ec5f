from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from cir_module import InputError
from cir_module.images import decode_base64_image
from tests.conftest import png_b64

RGB = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_formats_decode_to_rgb(fmt):
    out = decode_base64_image(png_b64(RGB, fmt))
    assert out.mode == "RGB" and out.size == (30, 20)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "I;16", "1", "I", "F"])
def test_colour_modes(mode):
    image = RGB.convert(mode) if mode not in ("I;16",) else RGB.convert("L").convert("I;16")
    fmt = "TIFF" if mode in ("CMYK", "I", "F") else "PNG"
    out = decode_base64_image(png_b64(image, fmt))
    assert out.mode == "RGB" and out.size == (30, 20)


def test_sixteen_bit_is_scaled_not_clipped():
    grey = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    out = np.asarray(decode_base64_image(png_b64(grey)))
    assert 100 < out.mean() < 160


def test_gif_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    out = decode_base64_image(base64.b64encode(buffer.getvalue()).decode())
    r, _, b = out.getpixel((4, 4))
    assert r > 200 and b < 50


def test_alpha_composited_on_white():
    clear = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert decode_base64_image(png_b64(clear)).getpixel((0, 0)) == (255, 255, 255)


def test_data_url_and_missing_padding():
    b64 = png_b64(RGB)
    assert decode_base64_image(f"data:image/png;base64,{b64}").size == (30, 20)
    assert decode_base64_image(b64.rstrip("=")).size == (30, 20)


@pytest.mark.parametrize(
    "data, message",
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("!!!not base64***", "not valid base64"),
        (base64.b64encode(b"hello, not an image").decode(), "not a recognised image"),
        (png_b64(RGB)[: len(png_b64(RGB)) // 2], "could not be decoded|not valid base64"),
        (None, "must be a base64 string"),
    ],
)
def test_bad_images_raise_input_error(data, message):
    with pytest.raises(InputError, match=message):
        decode_base64_image(data, what="images[0]")
