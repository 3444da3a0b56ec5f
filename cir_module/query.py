"""Composed queries as they travel through Weaviate: the text of a JSON object.

A composed query is ``{"image": "<base64 image>", "text": "<modification text>"}`` serialised
to a string. It is sent as a ``nearText`` concept and as ``rerank(query: ...)``; the service
recognises it among ordinary texts (see docs/design decision 2).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from cir_module.errors import InputError
from cir_module.images import encode_image_base64

__all__ = ["ComposedQuery", "compose_query", "looks_composed", "parse_composed_query"]


@dataclass(frozen=True)
class ComposedQuery:
    """A parsed composed query: the reference image (still base64) and the modification text."""

    image: str
    text: str


def compose_query(image: Image.Image | bytes | str | Path, text: str) -> str:
    """Build the composed-query string for a reference image and a modification text.

    ``image`` may be a PIL image, raw encoded bytes (PNG, JPEG, ...), a path to an image file,
    or a base64 string already. The result goes into ``nearText(concepts=[...])`` and
    ``rerank(query=...)`` unchanged.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if isinstance(image, Image.Image):
        encoded = encode_image_base64(image)
    elif isinstance(image, bytes | bytearray):
        encoded = base64.b64encode(bytes(image)).decode("ascii")
    elif isinstance(image, Path):
        encoded = base64.b64encode(image.read_bytes()).decode("ascii")
    elif isinstance(image, str):
        encoded = image
    else:
        raise TypeError(f"unsupported image type {type(image).__name__}")
    return json.dumps({"image": encoded, "text": text}, separators=(",", ":"))


def looks_composed(text: str) -> bool:
    """True when ``text`` is meant as a composed query (a JSON object naming an image).

    Deliberately loose: a text that starts like one but is malformed must reach
    :func:`parse_composed_query` and be answered with a clear error, not be embedded
    silently as a plain text.
    """
    stripped = text.lstrip()
    return stripped.startswith("{") and '"image"' in stripped


def parse_composed_query(text: str) -> ComposedQuery:
    """Parse a composed-query string; raise :class:`InputError` saying what is wrong."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"composed query is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InputError("composed query must be a JSON object with 'image' and 'text'")
    unknown = sorted(set(obj) - {"image", "text"})
    if unknown:
        raise InputError(f"composed query has unknown keys {unknown}; expected 'image', 'text'")
    image, mod = obj.get("image"), obj.get("text")
    if not isinstance(image, str) or not image.strip():
        raise InputError("composed query needs 'image': a non-empty base64 string")
    if mod is None:
        raise InputError("composed query needs 'text': the modification text")
    if not isinstance(mod, str):
        raise InputError(f"composed query 'text' must be a string, got {type(mod).__name__}")
    return ComposedQuery(image=image, text=mod)
