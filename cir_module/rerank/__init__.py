"""The second stage: rerankers that rescore the first stage's top K for a composed query.

Which to use: :class:`ChangeVerifyingReranker` (``cir vlm train --stage verify``; it captions
the reference and each candidate and judges whether what changed is what the text asks) is
the reranker that lifts R@1 (docs/results.md, "Second stage: change verification"). The P(YES)
image judge, :class:`LVLMReranker` (``cir rerank train``), scores a candidate image directly,
runs on onnxruntime once exported (:class:`OnnxReranker`, ``cir rerank export``) and takes
PMTFR's injection of reasoning-augmented representations (RAug-Rep: ``cir raug extract``).

:func:`load_reranker` opens any of them from a folder: the class is the one registered for
the kind the folder records (:mod:`~cir_module.rerank.registry`, :class:`Reranker`). What
they share with the other VLM roles (family adapters, the prompt codec, the tiny model
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
    from cir_module.rerank.registry import Reranker, register_reranker, reranker_kind
    from cir_module.rerank.scorer import LVLMReranker
    from cir_module.rerank.verify import ChangeVerifyingReranker

# Ordered by what a user needs (not sorted): the product's rerankers and how to open them
# first, then RAug-Rep and its injection.
__all__ = [  # noqa: RUF022
    "ChangeVerifyingReranker",
    "LVLMReranker",
    "OnnxReranker",
    "Reranker",
    "load_reranker",
    "register_reranker",
    "reranker_kind",
    "fuse_scores",
    "RerankPrompt",
    "EXTRACTORS",
    "LAYER_CHOICES",
    "choose_layers",
    "extract_raug",
    "injected",
    "load_raug",
    "read_cot",
    "save_raug",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ChangeVerifyingReranker": "cir_module.rerank.verify",
        "LVLMReranker": "cir_module.rerank.scorer",
        "OnnxReranker": "cir_module.rerank.onnx_reranker",
        **dict.fromkeys(
            ("Reranker", "register_reranker", "reranker_kind"), "cir_module.rerank.registry"
        ),
        "load_reranker": "cir_module.rerank.load",
        **dict.fromkeys(
            ("EXTRACTORS", "extract_raug", "load_raug", "read_cot", "save_raug"),
            "cir_module.rerank.raug",
        ),
        **dict.fromkeys(
            ("LAYER_CHOICES", "choose_layers", "injected"), "cir_module.rerank.injection"
        ),
    },
)
