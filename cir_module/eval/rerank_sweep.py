"""The reranking ablation on a split in CIRR's format: a first stage, then the LVLM reranker
over its top K with injection settings and fusion weights varied.

The first stage ranks the whole gallery once (reference excluded, as CIRR does): in-process
here (:func:`first_stage`), or Weaviate's ``nearText`` (``integration.evaluate``). For each
injection setting the reranker scores every query's top K once (P(YES)); every fusion weight
lambda then re-orders the top K by cosine + lambda * P(YES) without further model calls.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from cir_module.eval.inprocess import EvalSplit, embed_split
from cir_module.eval.metrics import recall_percent
from cir_module.models import CIRModel
from cir_module.models.onnx_model import OnnxCIRModel
from cir_module.rerank.fusion import fuse_scores
from cir_module.rerank.injection import choose_layers
from cir_module.rerank.scorer import LVLMReranker

__all__ = [
    "FirstStage",
    "InjectionSetting",
    "first_stage",
    "injection_settings",
    "p_yes",
    "rerank_sweep",
    "weaviate_rerank_row",
]

log = logging.getLogger(__name__)


@dataclass
class FirstStage:
    """Each query's top K gallery names and their cosines, best first."""

    top: list[list[str]]
    cosine: np.ndarray  # queries x K
    targets: list[str]


@dataclass(frozen=True)
class InjectionSetting:
    """RAug-Rep injected at strength ``alpha`` into the decoder ``layers`` (``all``,
    ``first``, ``middle``, ``last``; see :func:`cir_module.rerank.injection.choose_layers`)."""

    alpha: float
    layers: str = "all"

    @property
    def name(self) -> str:
        return f"alpha={self.alpha:g}, layers={self.layers}"


def injection_settings(alphas: Sequence[float], layer_alpha: float) -> list[InjectionSetting]:
    """The settings ``cir rerank eval`` sweeps: no injection, each of ``alphas`` on all
    layers, then ``layer_alpha`` on the first, the middle and the last layer alone."""
    settings = [InjectionSetting(0.0)] + [InjectionSetting(a) for a in alphas]
    return settings + [InjectionSetting(layer_alpha, w) for w in ("first", "middle", "last")]


def first_stage(
    model: CIRModel | OnnxCIRModel, split: EvalSplit, k: int, batch_size: int = 64
) -> FirstStage:
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
    first = recall_percent(stage.top, stage.targets)
    rows = [{"setting": "first stage only", "lambda": None, **first}]
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
                recalls = recall_percent(ranked, stage.targets)
                rows.append({"setting": setting.name, "lambda": lam, **recalls})
                log.info("%s", rows[-1])
    finally:
        reranker.raug, reranker.alpha, reranker.injection_layers = raug, alpha, layers
    return rows


def weaviate_rerank_row(alpha: float, lam: float, recalls: Mapping[str, float]) -> dict:
    """The row of the setting run end to end through Weaviate's ``rerank`` (injection at
    ``alpha`` on all layers, fusion weight ``lam``), to read beside the sweep's row for it."""
    return {"setting": f"Weaviate rerank: {InjectionSetting(alpha).name}", "lambda": lam, **recalls}
