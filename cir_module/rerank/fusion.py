"""Fusing the reranker's judgement with the first-stage similarity."""

from __future__ import annotations

import numpy as np

__all__ = ["DEFAULT_FUSION_LAMBDA", "fuse_scores"]

# PMTFR's lambda: the fusion weight of a reranker whose folder records none.
DEFAULT_FUSION_LAMBDA = 0.06


def fuse_scores(
    match: np.ndarray, refine: np.ndarray, lam: float = DEFAULT_FUSION_LAMBDA
) -> np.ndarray:
    """PMTFR's fusion: s = s_match + lambda * s_refine, per candidate.

    ``match`` is the first-stage cosine (composed query vs candidate), ``refine`` the
    reranker's P(YES); the paper's lambda is 0.06.
    """
    match = np.asarray(match, dtype=np.float32)
    refine = np.asarray(refine, dtype=np.float32)
    if match.shape != refine.shape:
        raise ValueError(f"{match.shape} first-stage scores for {refine.shape} reranker scores")
    return match + np.float32(lam) * refine
