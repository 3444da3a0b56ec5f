"""Request-body parsing that never depends on a Content-Type header.

Weaviate's reranker client posts JSON without one, so the body is parsed as JSON whatever
the header says; every failure becomes an :class:`InputError` that names the problem, in a
message of bounded length (a 2 MB body must not come back as a 40 MB error).

What a body may cost is bounded before it is parsed. Parsed JSON takes up to about 20 times
its text (``[{},{},...]``: three bytes a value, 72 bytes a dict), and a list of a million
invalid items costs pydantic a million error objects; so the values a body holds are counted
on its bytes first (:func:`json_values`) and a body with more than ``max_json_values`` is
refused unparsed. What is left is the body itself: its bytes, then its text, then the parsed
strings, each of them alive with at most one other.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from cir_module.errors import ClientGone, InputError

__all__ = [
    "MAX_ERROR_CHARS",
    "bounded",
    "describe_errors",
    "describe_validation_error",
    "read_json_body",
]

M = TypeVar("M", bound=BaseModel)

MAX_ERROR_CHARS = 2000
MAX_PROBLEMS = 5
# A JSON escape of a UTF-16 surrogate: the only way a lone surrogate gets into a parsed body
# (the body is decoded strictly, so encoded surrogates already fail to decode).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
# A JSON string, as the parser reads one: a quote, then anything but a quote or a backslash,
# or a backslash and the character it escapes, up to the closing quote (unrolled: fast in re).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_STRUCTURE = (b",", b"[", b"{")


def bounded(message: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``message``, cut to ``limit`` characters with a note of how much was left out."""
    if len(message) <= limit:
        return message
    return f"{message[:limit]}... ({len(message) - limit} more characters)"


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, ``field.path: message``, the first few of them."""
    return describe_errors(exc.errors(include_input=False, include_url=False))


def describe_errors(errors: Sequence[dict[str, Any]]) -> str:
    """:func:`describe_validation_error` for pydantic's error dicts (FastAPI's too)."""
    parts = []
    for err in errors[:MAX_PROBLEMS]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    if len(errors) > MAX_PROBLEMS:
        parts.append(f"and {len(errors) - MAX_PROBLEMS} more problems")
    return bounded("; ".join(parts))


def _lone_surrogate(value: Any, path: str) -> str | None:
    """The path of the first string under ``value`` that holds a lone surrogate."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if not isinstance(value, dict | list):
        return None
    for key, item in value.items() if isinstance(value, dict) else enumerate(value):
        found = _lone_surrogate(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def json_values(raw: bytes | bytearray, budget: int) -> int:
    """How many values (array items, object members) the JSON in ``raw`` holds at most,
    counted without parsing it; counting stops once more than ``budget`` are certain.

    Every value after a container's first is preceded by a comma, and every container opens
    with ``[`` or ``{``: their count outside strings bounds the values a parse builds. The
    cheap count (those bytes anywhere) is exact enough unless strings hold many of them; only
    then are the strings found and their share taken off, at most ``budget`` strings of them
    (each string is a value or a key itself).
    """
    total = sum(raw.count(c) for c in _STRUCTURE)
    if total <= budget:
        return total
    for n, match in enumerate(_JSON_STRING.finditer(raw), start=1):
        if n > budget:
            return n
        start, end = match.span()
        total -= sum(raw.count(c, start, end) for c in _STRUCTURE)
    return total


async def _read(request: Request, limit: int, timeout_s: float) -> bytearray:
    # With a Content-Length (the middleware has checked it against the limit) the body is
    # written into one block of that size: a buffer grown chunk by chunk, or chunks joined
    # at the end, leave as much again resident in the heap after they are freed.
    declared = request.headers.get("content-length")
    body = bytearray(int(declared)) if declared is not None else bytearray()
    size = 0
    stream = request.stream()
    try:
        while True:
            # Each read must arrive in time: a body that stops arriving is not held forever.
            async with asyncio.timeout(timeout_s):
                chunk = await anext(stream, None)
            if chunk is None:
                del body[size:]  # shorter than declared: the server refuses that itself
                return body
            if size + len(chunk) > limit:  # counted as it arrives: chunked bodies too
                raise InputError(f"request body is more than the limit of {limit} bytes", 413)
            body[size : size + len(chunk)] = chunk  # in place while it fits, grown after
            size += len(chunk)
    except TimeoutError:
        body.clear()
        raise InputError(
            f"request body stopped arriving (nothing for {timeout_s:g}s)", 408
        ) from None
    except ClientDisconnect:
        body.clear()
        raise ClientGone() from None
    except InputError:
        # An exception's traceback keeps this frame, and so ``body``, alive until the
        # garbage collector runs: the memory is handed back now.
        body.clear()
        raise


def _text(raw: bytearray, budget: int) -> str:
    """The body's text, once its values are counted (:func:`json_values`) and found within
    ``budget``."""
    if not raw or raw.isspace():
        raise InputError("request body is empty; expected a JSON object")
    if json_values(raw, budget) > budget:
        raise InputError(
            f"request body holds more JSON values (array items, object members) than the "
            f"limit of {budget} (CIR_MAX_JSON_VALUES)",
            413,
        )
    try:
        # Strictly: JSON text is Unicode, and encoded surrogates are not characters.
        return raw.decode(json.detect_encoding(raw))
    except UnicodeDecodeError as exc:
        raise InputError(f"request body is not valid JSON (not UTF-8: {exc.reason})") from None


async def read_json_body(request: Request, model: type[M]) -> M:
    """Parse the request body as JSON into ``model``; raise :class:`InputError` otherwise."""
    settings = request.app.state.settings
    raw = await _read(request, settings.max_request_bytes, settings.body_timeout_s)
    try:
        text = _text(raw, settings.max_json_values)
    finally:
        # Freed now, whatever still refers to the buffer (a refusal's traceback does): the
        # bytes must not live on beside the text and what is parsed from it.
        raw.clear()
    try:
        data = json.loads(text)
    except RecursionError:
        raise InputError("request body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and integers past the conversion limit
        raise InputError(bounded(f"request body is not valid JSON: {exc}")) from None
    if not isinstance(data, dict):
        raise InputError(f"request body must be a JSON object, got {type(data).__name__}")
    if _SURROGATE_ESCAPE.search(text):
        try:
            where = _lone_surrogate(data, "")
        except RecursionError:
            raise InputError("request body is nested too deeply") from None
        if where is not None:
            raise InputError(f"{where}: text holds a lone UTF-16 surrogate (not a character)")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"invalid request: {describe_validation_error(exc)}", 422) from None
