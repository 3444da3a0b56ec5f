"""RAR enrichment: captioners that describe stored images densely and factually, and
reasoning-enhanced queries. The chat backends behind both are in ``cir_module.vlm``."""

from __future__ import annotations

from cir_module.enrich.captioners import (
    CAPTION_PROMPT,
    Captioner,
    CaptionItem,
    ChatCaptioner,
    trained_vlm_captioner,
)
from cir_module.enrich.enhance import (
    QUERY_KINDS,
    BackendEnhancer,
    KeywordDistiller,
    QueryEnhancer,
    classify_query,
)

__all__ = [
    "CAPTION_PROMPT",
    "QUERY_KINDS",
    "BackendEnhancer",
    "CaptionItem",
    "Captioner",
    "ChatCaptioner",
    "KeywordDistiller",
    "QueryEnhancer",
    "classify_query",
    "trained_vlm_captioner",
]
