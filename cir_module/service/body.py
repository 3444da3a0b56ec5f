"""Request-body parsing that never depends on a Content-Type header.

Weaviate's reranker client posts JSON without one, so the body is parsed as JSON whatever
the header says; every failure becomes an :class:`InputError` that names the problem, in a
message of bounded length (a 2 MB body must not come back as a 40 MB error).
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
# (raw bytes that are not UTF-8 already fail to decode).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


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


async def _read(request: Request, limit: int, timeout_s: float) -> bytes:
    chunks, size = [], 0
    stream = request.stream().__aiter__()
    while True:
        try:
            # Each read must arrive in time: a body that stops arriving is not held forever.
            chunk = await asyncio.wait_for(stream.__anext__(), timeout_s)
        except StopAsyncIteration:
            return b"".join(chunks)
        except TimeoutError:
            raise InputError(
                f"request body stopped arriving (nothing for {timeout_s:g}s)", 408
            ) from None
        except ClientDisconnect:
            raise ClientGone() from None
        size += len(chunk)  # counted as it arrives: chunked bodies too
        if size > limit:
            raise InputError(f"request body is more than the limit of {limit} bytes", 413)
        chunks.append(chunk)


async def read_json_body(request: Request, model: type[M]) -> M:
    """Parse the request body as JSON into ``model``; raise :class:`InputError` otherwise."""
    settings = request.app.state.settings
    raw = await _read(request, settings.max_request_bytes, settings.body_timeout_s)
    if not raw.strip():
        raise InputError("request body is empty; expected a JSON object")
    try:
        data = json.loads(raw)
    except UnicodeDecodeError as exc:
        raise InputError(f"request body is not valid JSON (not UTF-8: {exc.reason})") from None
    except RecursionError:
        raise InputError("request body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and integers past the conversion limit
        raise InputError(bounded(f"request body is not valid JSON: {exc}")) from None
    if not isinstance(data, dict):
        raise InputError(f"request body must be a JSON object, got {type(data).__name__}")
    if _SURROGATE_ESCAPE.search(raw):
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
