"""The second stage: an LVLM reranker steered by reasoning-augmented representations."""

from __future__ import annotations

from cir_module.rerank.family import FAMILIES, FamilyAdapter, adapter_for
from cir_module.rerank.fusion import fuse_scores
from cir_module.rerank.injection import LAYER_CHOICES, choose_layers, injected
from cir_module.rerank.raug import EXTRACTORS, extract_raug, load_raug, read_cot, save_raug
from cir_module.rerank.scorer import LVLMReranker, RerankPrompt

__all__ = [
    "EXTRACTORS",
    "FAMILIES",
    "LAYER_CHOICES",
    "FamilyAdapter",
    "LVLMReranker",
    "RerankPrompt",
    "adapter_for",
    "choose_layers",
    "extract_raug",
    "fuse_scores",
    "injected",
    "load_raug",
    "read_cot",
    "save_raug",
]
