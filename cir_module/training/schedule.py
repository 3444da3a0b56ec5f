"""The learning-rate schedule of both trainers (retrieval and reranker): a linear warm-up,
then a half cosine down to zero."""

from __future__ import annotations

import math

__all__ = ["warmup_cosine"]


def warmup_cosine(step: int, warmup: int, total: int, *, cosine_from_start: bool = False) -> float:
    """The factor on the base learning rate at optimizer step ``step`` (from 0) of ``total``:
    a linear ramp to 1 over the first ``warmup`` steps, then a half cosine down to 0 at
    ``total``.

    The cosine spans the steps after the warm-up, unless ``cosine_from_start``: then it spans
    all ``total`` steps and the ramp multiplies its start. That is the reranker's recipe
    (``cir rerank train``), kept as it is so that its runs reproduce.
    """
    if cosine_from_start:
        return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / total))
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1 + math.cos(math.pi * progress))
