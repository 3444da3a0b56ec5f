"""``POST /vectorize``: the multi2vec-clip contract."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request, Response

from cir_module.service.body import read_json_body
from cir_module.service.openapi import ERROR_RESPONSES, request_body
from cir_module.service.schemas import VectorizeRequest, VectorizeResponse

__all__ = ["router"]

router = APIRouter(tags=["vectorizer"])


@router.post(
    "/vectorize",
    response_model=VectorizeResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=request_body(VectorizeRequest),
)
async def vectorize(request: Request) -> Response:
    """One vector per text and per image, in order; composed-query texts get composed vectors.
    An empty request gets empty lists, as the reference container answers."""
    body = await read_json_body(request, VectorizeRequest)
    state = request.app.state
    text_vecs, image_vecs = await state.encoder.vectorize(
        body.texts, body.images, enhancer=state.enhancer
    )
    # Written here rather than validated against the response model: two float lists need no
    # checking, and the response model's pass costs a share of a small model's forward.
    body = {"textVectors": text_vecs.tolist(), "imageVectors": image_vecs.tolist()}
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")
