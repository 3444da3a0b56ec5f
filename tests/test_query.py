from __future__ import annotations

import json

import pytest
from PIL import Image

from cir_module import InputError, compose_query, parse_composed_query, read_composed_query
from tests.conftest import png_b64

PNG = png_b64(Image.new("RGB", (8, 8), "red"))


def test_compose_and_read_round_trip(tmp_path):
    image = Image.new("RGB", (8, 8), "red")
    b64 = png_b64(image)
    path = tmp_path / "ref.png"
    image.save(path)
    for source in (image, b64, path, path.read_bytes()):
        q = compose_query(source, "make it blue")
        parsed = read_composed_query(q)
        assert parsed is not None and parsed.marked
        assert parsed.text == "make it blue"
        assert read_composed_query(compose_query(parsed.image, "x")).image == parsed.image
    assert json.loads(compose_query(b64, "t")) == {"$cir": 1, "image": b64, "text": "t"}


def test_a_stored_reference_carries_its_caption():
    query = compose_query(PNG, "make it blue", caption="a red square")
    parsed = read_composed_query(query)
    assert parsed is not None and parsed.caption == "a red square"
    assert json.loads(query)["caption"] == "a red square"
    assert read_composed_query(compose_query(PNG, "make it blue")).caption is None


def test_legacy_form_is_still_read():
    parsed = read_composed_query(json.dumps({"image": PNG, "text": "make it blue"}))
    assert parsed is not None and not parsed.marked
    assert (parsed.image, parsed.text) == (PNG, "make it blue")


@pytest.mark.parametrize(
    "text",
    [
        "a red dress",
        "{curly} braces",
        "",
        "image of a cat",
        '"image"',
        # Stored texts that merely look like JSON: plain texts, never an error.
        '{"image": "a cat", "caption": "a cat on a mat"}',
        '{"image": "a cat", "text": "on a mat"}',
        '{"image": "' + PNG + '"}',
        '{"image": "' + PNG + '", "text": 5}',
        '{"image": "' + PNG + '", "text": "x", "extra": 1}',
        '{"image": "abc", "text": "x"',
        '[{"image": "' + PNG + '", "text": "x"}]',
        '{"text": "x", "image": "' + PNG + '"} trailing',
    ],
)
def test_plain_texts_are_not_composed(text):
    assert read_composed_query(text) is None


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"$cir": 1, "image": "abc", "text": "x"', "not valid JSON"),
        ('{"$cir": 1, "image": "", "text": "x"}', "non-empty base64"),
        ('{"$cir": 1, "image": 5, "text": "x"}', "non-empty base64"),
        ('{"$cir": 1, "image": "abc"}', "needs 'text'"),
        ('{"$cir": 1, "image": "abc", "text": 3}', "must be a string"),
        ('{"$cir": 1, "image": "abc", "text": "x", "extra": 1}', "unknown keys"),
        ('{"$cir": 1, "image": "abc", "text": "x", "caption": 7}', "'caption' must be a string"),
        ('{"$cir": 2, "image": "abc", "text": "x"}', "reads version 1"),
        (' { "$cir" :1}', "needs 'image'"),
    ],
)
def test_damaged_marked_queries_are_explained(text, message):
    with pytest.raises(InputError, match=message):
        read_composed_query(text)
    with pytest.raises(InputError, match=message):
        parse_composed_query(text)


def test_a_truncated_composed_query_is_explained():
    query = compose_query(PNG, "make it blue")
    for cut in (10, len(query) // 2, len(query) - 1):
        with pytest.raises(InputError, match="composed query"):
            read_composed_query(query[:cut])


def test_compose_rejects_wrong_types():
    with pytest.raises(TypeError):
        compose_query(3.5, "x")
    with pytest.raises(TypeError):
        compose_query("abc", None)
