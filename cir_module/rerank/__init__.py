"""The second stage: an LVLM reranker steered by reasoning-augmented representations."""

from __future__ import annotations

from cir_module.rerank.family import FAMILIES, FamilyAdapter, adapter_for
from cir_module.rerank.fusion import fuse_scores
from cir_module.rerank.injection import LAYER_CHOICES, choose_layers, injected
from cir_module.rerank.load import load_reranker
from cir_module.rerank.onnx_reranker import OnnxReranker
from cir_module.rerank.prompt import RerankPrompt
from cir_module.rerank.raug import EXTRACTORS, extract_raug, load_raug, read_cot, save_raug
from cir_module.rerank.scorer import LVLMReranker

__all__ = [
    "EXTRACTORS",
    "FAMILIES",
    "LAYER_CHOICES",
    "FamilyAdapter",
    "LVLMReranker",
    "OnnxReranker",
    "RerankPrompt",
    "adapter_for",
    "choose_layers",
    "extract_raug",
    "fuse_scores",
    "injected",
    "load_raug",
    "load_reranker",
    "read_cot",
    "save_raug",
]
