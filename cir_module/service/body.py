"""Request-body parsing that never depends on a Content-Type header.

Weaviate's reranker client posts JSON without one, so the body is parsed as JSON whatever
the header says; every failure becomes an :class:`InputError` that names the problem.
"""

from __future__ import annotations

import json
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from cir_module.errors import InputError

__all__ = ["describe_validation_error", "read_json_body"]

M = TypeVar("M", bound=BaseModel)


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``field.path: message``."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


async def read_json_body(request: Request, model: type[M]) -> M:
    """Parse the request body as JSON into ``model``; raise :class:`InputError` otherwise."""
    limit = request.app.state.settings.max_request_bytes
    chunks, size = [], 0
    async for chunk in request.stream():  # counted as it arrives: chunked bodies too
        size += len(chunk)
        if size > limit:
            raise InputError(f"request body is more than the limit of {limit} bytes", 413)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise InputError("request body is empty; expected a JSON object")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"request body must be a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"invalid request: {describe_validation_error(exc)}", 422) from None
