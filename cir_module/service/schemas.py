"""Request and response bodies of Weaviate's module contracts."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "RerankRequest",
    "RerankResponse",
    "RerankScore",
    "VectorizeRequest",
    "VectorizeResponse",
]


class VectorizeRequest(BaseModel):
    """multi2vec-clip: ``{"texts": [...], "images": [...]}``, each omitted when empty."""

    model_config = ConfigDict(extra="ignore")
    texts: list[str] = Field(default_factory=list)
    images: list[str] = Field(default_factory=list)


class VectorizeResponse(BaseModel):
    textVectors: list[list[float]]
    imageVectors: list[list[float]]


class RerankRequest(BaseModel):
    """reranker-transformers: ``{"query": q, "documents": [...], "property": ""}``."""

    model_config = ConfigDict(extra="ignore")
    query: str
    documents: list[str]
    property: str = ""


class RerankScore(BaseModel):
    document: str
    score: float


class RerankResponse(BaseModel):
    scores: list[RerankScore]
