"""RAR enrichment: captioners that describe stored images densely and factually, the chat
backends behind them, and reasoning-enhanced queries."""

from __future__ import annotations

from cir_module.enrich.captioners import (
    CAPTION_PROMPT,
    Captioner,
    CaptionItem,
    ChatCaptioner,
)
from cir_module.enrich.enhance import (
    QUERY_KINDS,
    BackendEnhancer,
    KeywordDistiller,
    QueryEnhancer,
    classify_query,
)
from cir_module.vlm.chat import (
    ChatBackend,
    ChatError,
    ChatRequest,
    OpenAIChat,
    TransformersChat,
)

__all__ = [
    "CAPTION_PROMPT",
    "QUERY_KINDS",
    "BackendEnhancer",
    "CaptionItem",
    "Captioner",
    "ChatBackend",
    "ChatCaptioner",
    "ChatError",
    "ChatRequest",
    "KeywordDistiller",
    "OpenAIChat",
    "QueryEnhancer",
    "TransformersChat",
    "classify_query",
]
