"""The reranking ablation on a split in CIRR's format: first stage, then the LVLM over the
top K with injection settings and fusion weights varied.

The first stage ranks the whole gallery once (reference excluded, as CIRR does); for each
injection setting the reranker scores every query's top K once (P(YES)); every fusion weight
lambda then re-orders the top K by cosine + lambda * P(YES) without further model calls.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from cir_module.eval.inprocess import EvalSplit, embed_split
from cir_module.rerank.fusion import fuse_scores
from cir_module.rerank.injection import choose_layers
from cir_module.rerank.scorer import LVLMReranker

__all__ = ["FirstStage", "InjectionSetting", "first_stage", "recall_at", "rerank_sweep"]

log = logging.getLogger(__name__)


@dataclass
class FirstStage:
    """Each query's top K gallery names and their cosines, best first."""

    top: list[list[str]]
    cosine: np.ndarray  # queries x K
    targets: list[str]


@dataclass(frozen=True)
class InjectionSetting:
    alpha: float
    layers: str = "all"

    @property
    def name(self) -> str:
        return f"alpha={self.alpha:g}, layers={self.layers}"


def first_stage(model, split: EvalSplit, k: int, batch_size: int = 64) -> FirstStage:
    """Top ``k`` of the gallery per query by the first-stage model (reference excluded)."""
    gallery = split.gallery
    g, q = embed_split(model, split, batch_size)
    scores = q @ g.T
    index = {n: i for i, n in enumerate(gallery)}
    for row, t in enumerate(split.triplets):
        scores[row, index[t.reference]] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return FirstStage(
        top=[[gallery[j] for j in row] for row in order],
        cosine=np.take_along_axis(scores, order, axis=1),
        targets=[t.target for t in split.triplets],
    )


def recall_at(rankings: Iterable[Sequence[str]], targets: Sequence[str], ks=(1, 5, 10)) -> dict:
    """Recall@k in percent (a target outside the list counts as missed)."""
    rankings = list(rankings)
    return {
        f"R@{k}": 100 * float(np.mean([t in r[:k] for r, t in zip(rankings, targets, strict=True)]))
        for k in ks
    }


def p_yes(reranker: LVLMReranker, split: EvalSplit, stage: FirstStage) -> np.ndarray:
    """The reranker's P(YES) for every query's top K (queries x K)."""
    quiet = not log.isEnabledFor(logging.INFO)
    rows = []
    for t, names in tqdm(
        list(zip(split.triplets, stage.top, strict=True)), desc="rerank", disable=quiet, leave=False
    ):
        rows.append(
            reranker.score(split.open(t.reference), t.caption, [split.open(n) for n in names])
        )
    return np.stack(rows)


def rerank_sweep(
    reranker: LVLMReranker,
    split: EvalSplit,
    stage: FirstStage,
    settings: Sequence[InjectionSetting],
    lambdas: Sequence[float],
) -> list[dict]:
    """One row per (injection setting, lambda): R@1/5/10 after fusing and re-ordering."""
    rows = [{"setting": "first stage only", "lambda": None, **recall_at(stage.top, stage.targets)}]
    raug, alpha, layers = reranker.raug, reranker.alpha, reranker.injection_layers
    try:
        for setting in settings:
            reranker.alpha = setting.alpha
            reranker.injection_layers = choose_layers(reranker.num_layers, setting.layers)
            refine = p_yes(reranker, split, stage)
            for lam in lambdas:
                fused = fuse_scores(stage.cosine, refine, lam)
                order = np.argsort(-fused, axis=1, kind="stable")
                ranked = [
                    [names[j] for j in row] for names, row in zip(stage.top, order, strict=True)
                ]
                rows.append(
                    {"setting": setting.name, "lambda": lam, **recall_at(ranked, stage.targets)}
                )
                log.info("%s", rows[-1])
    finally:
        reranker.raug, reranker.alpha, reranker.injection_layers = raug, alpha, layers
    return rows
