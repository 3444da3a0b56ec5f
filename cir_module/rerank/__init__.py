"""The second stage: an LVLM reranker steered by reasoning-augmented representations.

What it shares with the other VLM roles (family adapters, the prompt codec, the tiny model
builder) lives in ``cir_module.vlm``.

The names that need torch are imported on first use, so that the service can import
``fusion`` (numpy only) where torch is not installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cir_module.lazy import lazy_exports
from cir_module.rerank.fusion import fuse_scores
from cir_module.rerank.prompt import RerankPrompt

if TYPE_CHECKING:
    from cir_module.rerank.injection import LAYER_CHOICES, choose_layers, injected
    from cir_module.rerank.load import load_reranker
    from cir_module.rerank.onnx_reranker import OnnxReranker
    from cir_module.rerank.raug import EXTRACTORS, extract_raug, load_raug, read_cot, save_raug
    from cir_module.rerank.scorer import LVLMReranker

__all__ = [
    "EXTRACTORS",
    "LAYER_CHOICES",
    "LVLMReranker",
    "OnnxReranker",
    "RerankPrompt",
    "choose_layers",
    "extract_raug",
    "fuse_scores",
    "injected",
    "load_raug",
    "load_reranker",
    "read_cot",
    "save_raug",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(
            ("LAYER_CHOICES", "choose_layers", "injected"), "cir_module.rerank.injection"
        ),
        "load_reranker": "cir_module.rerank.load",
        "OnnxReranker": "cir_module.rerank.onnx_reranker",
        **dict.fromkeys(
            ("EXTRACTORS", "extract_raug", "load_raug", "read_cot", "save_raug"),
            "cir_module.rerank.raug",
        ),
        "LVLMReranker": "cir_module.rerank.scorer",
    },
)
