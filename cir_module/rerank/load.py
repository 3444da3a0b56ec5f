"""One entry point for a reranker folder: a ``cir rerank export`` folder runs on
onnxruntime, anything else (a hub id or checkpoint folder) on torch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cir_module.rerank.onnx_reranker import OnnxReranker, is_onnx_reranker
from cir_module.rerank.scorer import LVLMReranker

__all__ = ["load_reranker"]


def load_reranker(
    path: str | Path,
    *,
    raug: str | Path | None = None,
    alpha: float = 0.6,
    layers: str | Sequence[int] = "all",
    image_side: int | None = None,
    batch_size: int = 16,
    rationale: bool = False,
) -> LVLMReranker | OnnxReranker:
    """The reranker at ``path`` with its injection settings; ``rationale``: each query's
    prompt carries the model's own reasoning path (CIR-CoT), generated once per query."""
    if is_onnx_reranker(path):
        if rationale:
            raise ValueError(
                f"{path} is an ONNX export, which scores but does not generate: a reranker "
                "that writes its own rationale needs the checkpoint folder (torch)"
            )
        reranker = OnnxReranker(path, raug=raug, alpha=alpha, layers=layers, batch_size=batch_size)
        if image_side and image_side != reranker.image_side:
            raise ValueError(
                f"{path} was exported for {reranker.image_side}-pixel images, not {image_side}; "
                "export again with --image-side or leave the setting unset"
            )
        return reranker
    extra = {"image_side": image_side} if image_side else {}
    return LVLMReranker.from_pretrained(
        path,
        raug=raug,
        alpha=alpha,
        layers=layers,
        batch_size=batch_size,
        rationale=rationale,
        **extra,
    )
