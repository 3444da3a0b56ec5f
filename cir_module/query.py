"""Composed queries as they travel through Weaviate: the text of a JSON object.

A composed query is ``{"$cir": 1, "image": "<base64 image>", "text": "<modification text>"}``
serialised to a string (:func:`compose_query` writes it). An optional ``"caption"`` carries the
reference's stored caption when the reference is a stored, enriched object (the property
``cir enrich`` writes): the change verifier then reads it instead of captioning the image.
The string is sent as a ``nearText`` concept and as ``rerank(query: ...)``; the service tells
it from ordinary texts by one rule
(:func:`read_composed_query`, docs/design.md decision 2):

* **Marked**: a text that begins with a JSON object whose first key is ``"$cir"`` is a composed
  query. If it is damaged (bad JSON, a missing or wrong field), the caller gets a clear 4xx.
* **Legacy** (the form before the marker, still read): a text that is exactly a JSON object
  with the two string keys ``image`` and ``text``, whose ``image`` starts like an image file
  (PNG, JPEG, GIF, WebP, BMP, TIFF), and decodes, is a composed query.
* **Everything else is a plain text**, embedded by the text tower. A stored text that merely
  looks like JSON (``{"image": "a cat", "caption": "..."}``) can therefore never fail an import.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from cir_module.errors import InputError
from cir_module.images import encode_image_base64, image_signature

__all__ = [
    "COMPOSED_QUERY_VERSION",
    "ComposedQuery",
    "compose_query",
    "is_text",
    "parse_composed_query",
    "read_composed_query",
]

COMPOSED_QUERY_VERSION = 1
_MARKED = re.compile(r'^\s*\{\s*"\$cir"\s*:')


@dataclass(frozen=True)
class ComposedQuery:
    """A parsed composed query: the reference image (still base64) and the modification text.

    ``marked`` is False for the legacy form: a legacy query whose image then fails to decode
    is taken as a plain text, as it would have to be for a stored text.
    """

    image: str
    text: str
    marked: bool = True
    caption: str | None = None  # the reference's stored caption, when the client sent it


def compose_query(
    image: Image.Image | bytes | str | Path, text: str, caption: str | None = None
) -> str:
    """Build the composed-query string for a reference image and a modification text;
    ``caption``: the reference's stored caption, if it is a stored, enriched object (the
    second stage then captions nothing of the query).

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
    query = {"$cir": COMPOSED_QUERY_VERSION, "image": encoded, "text": text}
    if caption:
        if not isinstance(caption, str):
            raise TypeError(f"caption must be a str, got {type(caption).__name__}")
        query["caption"] = caption
    return json.dumps(query, separators=(",", ":"))


def read_composed_query(text: str) -> ComposedQuery | None:
    """The composed query ``text`` holds, or None for a plain text (the module's rule).

    Raises :class:`InputError` saying what is wrong only for a marked query.
    """
    if _MARKED.match(text):
        return parse_composed_query(text)
    stripped = text.strip()
    if not (stripped.startswith("{") and stripped.endswith("}") and '"image"' in stripped):
        return None
    try:
        obj = json.loads(stripped)
    except (ValueError, RecursionError):
        return None
    if (
        isinstance(obj, dict)
        and set(obj) == {"image", "text"}
        and isinstance(obj["text"], str)
        and is_text(obj["text"])
        and image_signature(obj["image"]) is not None
    ):
        return ComposedQuery(image=obj["image"], text=obj["text"], marked=False)
    return None


def parse_composed_query(text: str) -> ComposedQuery:
    """Parse a marked composed-query string; raise :class:`InputError` saying what is wrong."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InputError(f"composed query is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InputError("composed query must be a JSON object with '$cir', 'image' and 'text'")
    version = obj.get("$cir")
    # The integer itself: 1.0, 1e0 and true compare equal to 1 in Python but are other
    # versions on the wire (a client that writes them is not writing this format).
    if type(version) is not int or version != COMPOSED_QUERY_VERSION:
        raise InputError(
            f"composed query '$cir' is {version!r}; this service reads version "
            f"{COMPOSED_QUERY_VERSION}"
        )
    unknown = sorted(set(obj) - {"$cir", "image", "text", "caption"})
    if unknown:
        raise InputError(
            f"composed query has unknown keys {unknown}; expected '$cir', 'image', 'text' "
            "and optionally 'caption'"
        )
    image, mod = obj.get("image"), obj.get("text")
    if not isinstance(image, str) or not image.strip():
        raise InputError("composed query needs 'image': a non-empty base64 string")
    if mod is None:
        raise InputError("composed query needs 'text': the modification text")
    if not isinstance(mod, str):
        raise InputError(f"composed query 'text' must be a string, got {type(mod).__name__}")
    if not is_text(mod):
        raise InputError("composed query 'text' holds a lone UTF-16 surrogate (not a character)")
    caption = obj.get("caption")
    if caption is not None and not (isinstance(caption, str) and is_text(caption)):
        raise InputError("composed query 'caption' must be a string (the reference's caption)")
    return ComposedQuery(image=image, text=mod, caption=caption or None)


def is_text(value: str) -> bool:
    """Whether ``value`` is text a tokenizer can read: no lone UTF-16 surrogate, which JSON's
    ``\\udXXX`` escapes can put into a Python string but UTF-8 cannot encode."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
