"""``POST /rerank``: the reranker-transformers contract, for image candidates."""

from __future__ import annotations

from fastapi import APIRouter, Request

from cir_module.errors import InputError
from cir_module.service.body import read_json_body
from cir_module.service.schemas import RerankRequest

__all__ = ["router"]

router = APIRouter(tags=["reranker"])


@router.post("/rerank")
async def rerank(request: Request) -> dict:
    """One score per document, in order (Weaviate takes scores by position).

    The query is a composed-query string (or a plain text); documents are the candidates'
    base64 images, i.e. ``rerank(property: "<blob property>", query: ...)``.
    """
    body = await read_json_body(request, RerankRequest)
    if not body.query.strip():
        raise InputError("rerank needs a query: pass rerank(query: <composed query string>)")
    if not body.documents:
        raise InputError("rerank needs at least one document")
    scores = await request.app.state.encoder.rerank(body.query, body.documents)
    return {
        "scores": [
            {"document": doc, "score": float(s)}
            for doc, s in zip(body.documents, scores, strict=True)
        ]
    }
