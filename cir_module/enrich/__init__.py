"""RAR enrichment: captioners that describe stored images densely and factually."""

from __future__ import annotations

from cir_module.enrich.captioners import Captioner, CaptionItem, SceneGraphCaptioner

__all__ = ["CaptionItem", "Captioner", "SceneGraphCaptioner"]
