"""Request and response bodies of the routes: Weaviate's module contracts, the OpenAI chat
subset, and the error body every failure has.

The routes parse request bodies themselves (:func:`~cir_module.service.body.read_json_body`)
and FastAPI validates their answers against the response models; both appear in
``/openapi.json`` (:mod:`cir_module.service.openapi`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ChatChoice",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "ChatMessage",
    "ErrorResponse",
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
    """One vector per text and per image, in the order they were sent."""

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
    """A document as it was sent, and its score (higher ranks first)."""

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
    message (its texts joined, at most two images), greedy decoding, ``max_tokens``."""

    model_config = ConfigDict(extra="ignore")
    model: str = ""
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=2048)
    # OpenAI's newer name for the same bound; Weaviate's generative-openai sends this one.
    max_completion_tokens: int | None = Field(None, ge=1, le=2048)


class ChatChoice(BaseModel):
    """The one completion: always ``index`` 0, an assistant message, ``finish_reason`` stop."""

    index: int
    message: ChatMessage
    finish_reason: str


class ChatCompletionResponse(BaseModel):
    """The OpenAI chat-completions answer, as far as this service fills it."""

    id: str
    object: str
    created: int
    model: str
    choices: list[ChatChoice]


class ErrorResponse(BaseModel):
    """Every failure's body: one message, at most a few thousand characters long."""

    error: str
