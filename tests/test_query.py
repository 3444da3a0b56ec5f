from __future__ import annotations

import json

import pytest
from PIL import Image

from cir_module import InputError, compose_query, looks_composed, parse_composed_query
from tests.conftest import png_b64


def test_compose_and_parse_round_trip(tmp_path):
    image = Image.new("RGB", (8, 8), "red")
    b64 = png_b64(image)
    path = tmp_path / "ref.png"
    image.save(path)
    for source in (image, b64, path, path.read_bytes()):
        q = compose_query(source, "make it blue")
        assert looks_composed(q)
        parsed = parse_composed_query(q)
        assert parsed.text == "make it blue"
        assert parse_composed_query(compose_query(parsed.image, "x")).image == parsed.image
    assert json.loads(compose_query(b64, "t")) == {"image": b64, "text": "t"}


def test_plain_texts_are_not_composed():
    for text in ["a red dress", "{curly} braces", "", "image of a cat", '"image"']:
        assert not looks_composed(text)


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"image": "abc", "text": "x"', "not valid JSON"),
        ('{"image": "", "text": "x"}', "non-empty base64"),
        ('{"image": 5, "text": "x"}', "non-empty base64"),
        ('{"image": "abc"}', "needs 'text'"),
        ('{"image": "abc", "text": 3}', "must be a string"),
        ('{"image": "abc", "text": "x", "extra": 1}', "unknown keys"),
    ],
)
def test_malformed_composed_queries(text, message):
    assert looks_composed(text)
    with pytest.raises(InputError, match=message):
        parse_composed_query(text)


def test_compose_rejects_wrong_types():
    with pytest.raises(TypeError):
        compose_query(3.5, "x")
    with pytest.raises(TypeError):
        compose_query("abc", None)
