"""The reranking ablation on a split in CIRR's format: a first stage, then the LVLM reranker
over its top K with injection settings and fusion weights varied.

The first stage ranks the whole gallery once (reference excluded, as CIRR does): in-process
here (:func:`first_stage`), or Weaviate's ``nearText`` (``integration.evaluate``). For each
injection setting the reranker scores every query's top K once (P(YES)); every fusion weight
lambda then re-orders the top K by cosine + lambda * P(YES) without further model calls.
Every row after the no-injection run is also read against it, query by query: the change in
R@1 with a paired bootstrap interval, and how far P(YES) moved.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from cir_module.data.benchmark import load_scene_graphs, tier_of
from cir_module.data.reasoning import reasoning_path
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
    "oracle_texts",
    "p_yes",
    "query_prefixes",
    "r1_difference",
    "r1_interval",
    "random_like",
    "rerank_sweep",
    "weaviate_rerank_row",
]

log = logging.getLogger(__name__)

QUERY_CHUNK = 16  # queries whose reasoning a describe-and-verify reranker writes together
ORACLE = "control: reasoning path in the prompt"


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


def p_yes(
    reranker: LVLMReranker,
    split: EvalSplit,
    stage: FirstStage,
    texts: Sequence[str] | None = None,
) -> np.ndarray:
    """The reranker's P(YES) for every query's top K (queries x K); ``texts`` replace the
    queries' modification texts (e.g. with a reasoning path written in)."""
    texts = texts or [t.caption for t in split.triplets]
    references = [split.open(t.reference) for t in split.triplets]
    states = query_prefixes(reranker, references, texts)
    return np.stack(
        [
            reranker.score_prefixed(state, [split.open(n) for n in names])
            for state, names in zip(states, stage.top, strict=True)
        ]
    )


def query_prefixes(reranker, references: Sequence, texts: Sequence[str]) -> list:
    """Every query's :meth:`prefix` (its shared half, or its written reasoning), asked for
    :data:`QUERY_CHUNK` queries at a time: a reranker that writes per query (describe-and-
    verify) batches the writing."""
    quiet = not log.isEnabledFor(logging.INFO)
    states: list = []
    for start in tqdm(range(0, len(texts), QUERY_CHUNK), desc="rerank", disable=quiet, leave=False):
        end = start + QUERY_CHUNK
        states += reranker.prefixes(references[start:end], texts[start:end])
    return states


def _hits(ranked: Sequence[Sequence[str]], targets: Sequence[str]) -> np.ndarray:
    return np.array([bool(r) and r[0] == t for r, t in zip(ranked, targets, strict=True)], float)


def _bootstrap(values: np.ndarray, samples: int, seed: int) -> tuple[float, float]:
    """95 % percentile interval of the mean, in percent (queries resampled with replacement)."""
    draws = np.random.default_rng(seed).integers(0, len(values), (samples, len(values)))
    means = 100 * values[draws].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def r1_interval(
    ranked: Sequence[Sequence[str]], targets: Sequence[str], samples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """A 95 % bootstrap interval of R@1 in percent (queries resampled with replacement)."""
    return _bootstrap(_hits(ranked, targets), samples, seed)


def r1_difference(
    ranked: Sequence[Sequence[str]],
    baseline: Sequence[Sequence[str]],
    targets: Sequence[str],
    samples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """R@1 of ``ranked`` minus R@1 of ``baseline`` on the same queries, in points, with a
    paired 95 % bootstrap interval (the same resampled queries for both): much narrower than
    two separate intervals when the rankings mostly agree."""
    diff = _hits(ranked, targets) - _hits(baseline, targets)
    return (float(100 * diff.mean()), *_bootstrap(diff, samples, seed))


def oracle_texts(reranker: LVLMReranker, split: EvalSplit) -> list[str]:
    """Each query's text with its reasoning path from the scene graphs written in: the
    upper bound the injection of a reasoning representation approximates (a control)."""
    scenes = load_scene_graphs(split.root)
    describe = tier_of(split.root).describe
    return [
        reranker.prompt.with_reasoning(t.caption, reasoning_path(describe, scenes, t))
        for t in split.triplets
    ]


def random_like(raug: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Random directions with each layer's RAug-Rep norm (the injection's other control)."""
    noise = torch.randn(raug.shape, generator=torch.Generator().manual_seed(seed))
    noise = noise.to(raug.device, raug.dtype)
    return noise / noise.norm(dim=-1, keepdim=True) * raug.norm(dim=-1, keepdim=True)


def _row(name: str, lam: float | None, ranked: list[list[str]], targets: list[str]) -> dict:
    low, high = r1_interval(ranked, targets)
    return {
        "setting": name,
        "lambda": lam,
        **recall_percent(ranked, targets),
        "R@1 CI": [low, high],
    }


def rerank_sweep(
    reranker: LVLMReranker,
    split: EvalSplit,
    stage: FirstStage,
    settings: Sequence[InjectionSetting],
    lambdas: Sequence[float],
    *,
    controls: bool = False,
) -> list[dict]:
    """One row per (injection setting, lambda): R@1/5/10 after fusing and re-ordering, with a
    95 % bootstrap interval of R@1. ``controls`` adds the reasoning path written in the prompt
    (no injection) and, with RAug-Rep loaded, a random vector of the same norms injected at
    each setting's alpha. With a setting of alpha 0 among ``settings`` (no injection), every
    later row also carries ``dR@1`` (against it at the same lambda, with a paired interval)
    and ``mean |dP|``, the mean absolute change of P(YES) over the top K; with the controls,
    ``r(dP, dP written)``: the correlation, over every query's top K, of the row's change of
    P(YES) with the change the written reasoning path makes (1: the injection moves the
    judgement as the reasoning does; about 0 for the random vector)."""
    rows = [_row("first stage only", None, stage.top, stage.targets)]
    # A kind without injection (an ONNX export, describe-and-verify) has nothing to set: its
    # rows are scored as it is.
    steered = hasattr(reranker, "injection_layers")
    raug, alpha, layers = (
        (reranker.raug, reranker.alpha, reranker.injection_layers) if steered else (None, 0, [])
    )
    runs: list[tuple[str, InjectionSetting, torch.Tensor | None, list[str] | None]] = [
        (setting.name, setting, raug, None) for setting in settings
    ]
    if controls:
        runs.append((ORACLE, InjectionSetting(0.0), raug, oracle_texts(reranker, split)))
        if raug is not None:
            noise = random_like(raug)
            runs += [
                (f"control: random vector, {s.name}", s, noise, None) for s in settings if s.alpha
            ]
    base: tuple[np.ndarray, dict[float, list[list[str]]]] | None = None  # no injection
    moves: dict[str, np.ndarray] = {}  # each later run's P(YES) minus the base's
    try:
        for name, setting, vectors, texts in runs:
            if steered:
                reranker.raug, reranker.alpha = vectors, setting.alpha
                reranker.injection_layers = choose_layers(reranker.num_layers, setting.layers)
            refine = p_yes(reranker, split, stage, texts)
            if base is not None:
                moves[name] = refine - base[0]
            by_lambda = {}
            for lam in lambdas:
                order = np.argsort(-fuse_scores(stage.cosine, refine, lam), axis=1, kind="stable")
                ranked = [
                    [names[j] for j in row] for names, row in zip(stage.top, order, strict=True)
                ]
                by_lambda[lam] = ranked
                row = _row(name, lam, ranked, stage.targets)
                if base is not None:
                    delta, low, high = r1_difference(ranked, base[1][lam], stage.targets)
                    moved = float(np.abs(moves[name]).mean())
                    row |= {"dR@1": delta, "dR@1 CI": [low, high], "mean |dP|": moved}
                rows.append(row)
                log.info("%s", rows[-1])
            if base is None and setting.alpha == 0 and texts is None:
                base = refine, by_lambda
    finally:
        if steered:
            reranker.raug, reranker.alpha, reranker.injection_layers = raug, alpha, layers
    # Does the injection move P(YES) the way writing the reasoning path does? Read whatever
    # the judge's quality: the correlation of the two changes over every (query, candidate).
    written = moves.get(ORACLE)
    if written is not None:
        for row in rows:
            moved = moves.get(row["setting"])
            if moved is not None and row["setting"] != ORACLE:
                row["r(dP, dP written)"] = _correlation(moved, written)
    return rows


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    scale = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / scale if scale > 0 else 0.0


def weaviate_rerank_row(
    setting: str, lam: float, ranked: list[list[str]], targets: list[str]
) -> dict:
    """The row of a setting run end to end through Weaviate's ``rerank`` (the service's
    reranker, fusion weight ``lam``), to read beside the sweep's row for it."""
    return _row(f"Weaviate rerank: {setting}", lam, ranked, targets)
