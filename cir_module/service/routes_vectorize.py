"""``POST /vectorize``: the multi2vec-clip contract."""

from __future__ import annotations

from fastapi import APIRouter, Request

from cir_module.errors import InputError
from cir_module.service.body import read_json_body
from cir_module.service.schemas import VectorizeRequest

__all__ = ["router"]

router = APIRouter(tags=["vectorizer"])


@router.post("/vectorize")
async def vectorize(request: Request) -> dict:
    """One vector per text and per image, in order; composed-query texts get composed vectors."""
    body = await read_json_body(request, VectorizeRequest)
    if not body.texts and not body.images:
        raise InputError("nothing to vectorize: 'texts' and 'images' are both empty or missing")
    text_vecs, image_vecs = await request.app.state.encoder.vectorize(body.texts, body.images)
    return {"textVectors": text_vecs.tolist(), "imageVectors": image_vecs.tolist()}
