"""``/openapi.json`` for routes that parse their own bodies.

The routes read their JSON with :func:`~cir_module.service.body.read_json_body` (any
Content-Type, bounded error messages), so FastAPI never sees a request model and would
describe no request body. :func:`request_body` declares one for the schema only, and
:func:`install_openapi` adds the request models' schemas to ``components``. Parsing and error
bodies are untouched.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from cir_module.service.schemas import (
    ChatCompletionRequest,
    ErrorResponse,
    RerankRequest,
    VectorizeRequest,
)

__all__ = ["ERROR_RESPONSES", "REQUEST_MODELS", "install_openapi", "request_body"]

# The request bodies the routes parse; their schemas go into ``components.schemas``.
REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    VectorizeRequest,
    RerankRequest,
    ChatCompletionRequest,
)
_REF = "#/components/schemas/{model}"

# The failures a route with a JSON body answers, all with the body ``{"error": "..."}``.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (400, "The body is not a JSON object, or an input (image, composed query) is invalid."),
        (401, "CIR_API_TOKEN is set and the caller is neither trusted nor sent the token."),
        (408, "The body stopped arriving (CIR_BODY_TIMEOUT_S)."),
        (413, "The body, an image or the request's pixels are over a limit."),
        (422, "The body does not match the request schema."),
        (503, "The service is at capacity; retry after Retry-After seconds."),
    )
}


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """The ``openapi_extra`` of a route whose JSON body is ``model`` (a request model)."""
    if model not in REQUEST_MODELS:
        raise ValueError(f"{model.__name__} is not in REQUEST_MODELS")
    schema = {"$ref": _REF.format(model=model.__name__)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` include the schemas of :data:`REQUEST_MODELS`."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            _, top = models_json_schema(
                [(model, "validation") for model in REQUEST_MODELS], ref_template=_REF
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(top["$defs"])
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
