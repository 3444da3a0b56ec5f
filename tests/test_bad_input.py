"""Hostile and odd input against the real service over HTTP: every malformed request gets a
4xx with a JSON error that says what was wrong, odd-but-valid images get vectors, and the
service stays up. Includes property-based tests of the request parsers."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cir_module.errors import InputError
from cir_module.images import decode_base64_image
from cir_module.query import read_composed_query
from tests.conftest import png_b64, scene_images

pytestmark = pytest.mark.integration

SCENE = scene_images(1, seed=8)[0]


def encoded(image: Image.Image, fmt: str, **save: object) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return base64.b64encode(buffer.getvalue()).decode()


def png_declaring(width: int, height: int) -> str:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    raw = base64.b64decode(png_b64(Image.new("RGB", (1, 1))))
    ihdr = struct.pack(">II", width, height) + raw[24:29]
    chunk = b"IHDR" + ihdr
    patched = raw[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return base64.b64encode(patched + raw[33:]).decode()


def animated_gif() -> str:
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "green", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    return base64.b64encode(buffer.getvalue()).decode()


def post(service, path: str, body: object) -> httpx.Response:
    return httpx.post(f"{service.url}{path}", content=json.dumps(body).encode(), timeout=60)


ODD_BUT_VALID = {
    "cmyk-jpeg": encoded(SCENE.convert("CMYK"), "JPEG"),
    "16-bit-png": encoded(Image.fromarray(np.full((32, 32), 40000, np.uint16)), "PNG"),
    "rgba-png": encoded(SCENE.convert("RGBA"), "PNG"),
    "animated-gif": animated_gif(),
    "palette-png": encoded(SCENE.convert("P"), "PNG"),
    "one-pixel": png_b64(Image.new("RGB", (1, 1), "red")),
    "data-url": "data:image/png;base64," + png_b64(SCENE),
}


@pytest.mark.parametrize("name", list(ODD_BUT_VALID))
def test_odd_but_valid_images_get_vectors(service, name):
    r = post(service, "/vectorize", {"images": [ODD_BUT_VALID[name]]})
    assert r.status_code == 200, r.text
    vector = np.array(r.json()["imageVectors"][0])
    assert np.isfinite(vector).all() and abs(np.linalg.norm(vector) - 1) < 1e-4


TRUNCATED = png_b64(SCENE)[:200]
BAD = [
    ("/vectorize", {"images": [""]}, 400, "images[0] is empty"),
    ("/vectorize", {"images": [TRUNCATED]}, 400, "images[0]"),
    (
        "/vectorize",
        {"images": [base64.b64encode(b"GIF89a" + b"\0" * 20).decode()]},
        400,
        "images[0]",
    ),
    ("/vectorize", {"images": [png_declaring(100_000, 100_000)]}, 413, "pixels"),
    (
        "/vectorize",
        {"images": [base64.b64encode(b"%PDF-1.7 not an image").decode()]},
        400,
        "not a recognised image",
    ),
    ("/vectorize", {"images": [1]}, 422, "images.0"),
    ("/vectorize", {"images": None, "texts": None}, 422, "texts: Input should be a valid list"),
    ("/vectorize", {"texts": [{"image": "x"}]}, 422, "texts.0"),
    ("/vectorize", {"texts": ['{"$cir": 1, "image": "' + png_b64(SCENE) + '"}']}, 400, "text"),
    (
        "/vectorize",
        {"texts": ['{"$cir": 1, "image": "' + png_b64(SCENE) + '", "text": 5}']},
        400,
        "text",
    ),
    ("/vectorize", {"texts": ['{"$cir": 1, "image": "", "text": "x"}']}, 400, "composed query"),
    (
        "/vectorize",
        {"texts": ['{"$cir": 1, "image": "' + TRUNCATED + '", "text": "x"}']},
        400,
        "texts[0] (composed query image)",
    ),
    ("/rerank", {"query": "q", "documents": "not a list"}, 422, "documents"),
    ("/rerank", {"query": 5, "documents": [png_b64(SCENE)]}, 422, "query"),
    (
        "/rerank",
        {"query": '{"$cir": 1, "image": "abc", "text": ', "documents": [png_b64(SCENE)]},
        400,
        "composed query",
    ),
]
# A truncated rerank document is not a bad request: it ranks last, and the chunk's other
# documents are ranked (tests/test_catalogue_input.py).


@pytest.mark.parametrize(("path", "body", "status", "message"), BAD)
def test_bad_input_gets_the_right_4xx_and_the_service_stays_up(
    service, path, body, status, message
):
    r = post(service, path, body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert message in r.json()["error"]
    assert httpx.get(f"{service.url}/.well-known/live").status_code == 204


def test_empty_and_long_texts_get_vectors(service):
    r = post(service, "/vectorize", {"texts": ["", " ", "red " * 5000]})
    assert r.status_code == 200
    vectors = np.array(r.json()["textVectors"])
    assert vectors.shape[0] == 3 and np.isfinite(vectors).all()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(["/vectorize", "/rerank"]),
    body=st.dictionaries(
        st.sampled_from(["texts", "images", "query", "documents", "property", "other"]),
        JSON_VALUES,
        max_size=4,
    ),
)
def test_any_json_body_gets_an_answer_never_a_500(service, path, body):
    r = post(service, path, body)
    assert r.status_code < 500, (body, r.text)
    if r.status_code >= 400:
        assert isinstance(r.json()["error"], str) and r.json()["error"]


@settings(max_examples=300, deadline=None)
@given(st.text() | st.builds(lambda d: json.dumps(d), JSON_VALUES))
def test_composed_query_reader_accepts_or_explains(text):
    try:
        parsed = read_composed_query(text)
    except InputError as exc:
        # Only a text that carries the marker may be refused.
        assert text.lstrip().startswith("{") and '"$cir"' in text
        assert exc.message and 400 <= exc.status_code < 500
    else:
        assert parsed is None or (isinstance(parsed.image, str) and isinstance(parsed.text, str))


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=512)
    | st.builds(lambda b: base64.b64decode(png_b64(SCENE))[:b], st.integers(0, 400))
)
def test_image_decoder_accepts_or_explains(raw):
    try:
        image = decode_base64_image(base64.b64encode(raw).decode(), "x")
    except InputError as exc:
        assert exc.message.startswith("x ") and exc.status_code in (400, 413)
    else:
        assert image.mode == "RGB"
