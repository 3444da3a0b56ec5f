"""The small reranker this project builds offline: a tiny Qwen2-VL (``cir_module.vlm.tiny``)
whose tokenizer knows the reranker's prompt and keeps its answers YES / NO single tokens."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cir_module.rerank.prompt import RerankPrompt
from cir_module.vlm.tiny import build_tiny_vlm

__all__ = ["build_tiny_reranker"]


def build_tiny_reranker(folder: str | Path, corpus: Iterable[str] = (), **sizes: Any) -> Path:
    """A randomly initialised reranker in ``folder``; ``corpus`` adds texts to the tokenizer's
    training (e.g. the benchmark's captions), ``sizes`` go to :func:`build_tiny_vlm`."""
    prompt = RerankPrompt()
    text = [prompt.prefix, prompt.suffix, *corpus]
    return build_tiny_vlm(folder, text, words=(prompt.yes, prompt.no), **sizes)
