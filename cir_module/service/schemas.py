"""Request and response bodies of Weaviate's module contracts."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ChatCompletionRequest",
    "ChatMessage",
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
    """reranker-transformers: ``{"query": q, "documents": [...], "property": ""}``; without
    ``documents``, ``property`` is the one document to score."""

    model_config = ConfigDict(extra="ignore")
    query: str
    documents: list[str] | None = None
    property: str | None = None


class RerankScore(BaseModel):
    document: str
    score: float


class RerankResponse(BaseModel):
    """The reference container's shape: ``scores`` for documents, ``score`` for the
    single-pair mode; the other one is null."""

    query: str
    scores: list[RerankScore] | None = None
    property: str | None = None
    score: float | None = None


class ChatMessage(BaseModel):
    """An OpenAI chat message: ``content`` a string or a list of ``text`` / ``image_url``
    parts."""

    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | list[dict[str, Any]]


class ChatCompletionRequest(BaseModel):
    """The OpenAI chat-completions request, as far as this service honours it: the last user
    message (one text, at most one image), greedy decoding, ``max_tokens``."""

    model_config = ConfigDict(extra="ignore")
    model: str = ""
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=2048)
