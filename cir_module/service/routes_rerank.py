"""``POST /rerank``: the reranker-transformers contract, for image and text documents."""

from __future__ import annotations

from fastapi import APIRouter, Request

from cir_module.errors import InputError
from cir_module.service.body import read_json_body
from cir_module.service.openapi import ERROR_RESPONSES, request_body
from cir_module.service.schemas import RerankRequest, RerankResponse

__all__ = ["router"]

router = APIRouter(tags=["reranker"])


@router.post(
    "/rerank",
    response_model=RerankResponse,
    response_model_exclude_none=False,
    responses=ERROR_RESPONSES,
    openapi_extra=request_body(RerankRequest),
)
async def rerank(request: Request) -> dict:
    """One score per document, in order (Weaviate takes scores by position).

    The query is a composed-query string or a plain text. Documents are the values of
    ``rerank(property: ...)``: base64 images (a ``blob``), texts, or ``""`` for an object
    without the property (scored lowest). Without ``documents``, ``property`` is scored as one
    document and the answer carries ``score`` (the reference container's single-pair mode).
    """
    body = await read_json_body(request, RerankRequest)
    encoder, enhancer = request.app.state.encoder, request.app.state.enhancer
    if body.documents is None:
        if body.property is None:
            raise InputError(
                "rerank needs 'documents' (a list of documents) or 'property' (one document)", 422
            )
        (score,) = await encoder.rerank(body.query, [body.property or ""], enhancer=enhancer)
        return {
            "query": body.query,
            "scores": None,
            "property": body.property,
            "score": float(score),
        }
    scores = await encoder.rerank(body.query, body.documents, enhancer=enhancer)
    return {
        "query": body.query,
        "scores": [
            {"document": doc, "score": float(s)}
            for doc, s in zip(body.documents, scores, strict=True)
        ],
        "property": None,
        "score": None,
    }
