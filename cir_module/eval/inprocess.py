"""In-process evaluation of a model on a split in CIRR's format (CIRR or the synthetic
benchmark): embed the gallery and the composed queries, rank, compute CIRR's metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from cir_module.eval.metrics import cirr_metrics, cirr_subset_rankings, rank_gallery
from cir_module.eval.readers import CIRTriplet, read_cirr, read_image_split, resolve_image_path
from cir_module.models import CIRModel
from cir_module.models.onnx_model import OnnxCIRModel

__all__ = ["EvalSplit", "RankedResult", "embed_split", "evaluate_in_process", "rank_split"]

log = logging.getLogger(__name__)


@dataclass
class EvalSplit:
    """The queries and the gallery of one split."""

    root: Path
    triplets: list[CIRTriplet]
    paths: dict[str, str]

    @classmethod
    def load(cls, root: str | Path, split: str, name: str = "shapes", limit: int | None = None):
        """Read a split; ``limit`` keeps the first queries (the gallery stays whole)."""
        triplets = read_cirr(root, split, name)
        return cls(
            Path(root), triplets[:limit] if limit else triplets, read_image_split(root, split, name)
        )

    @property
    def gallery(self) -> list[str]:
        return sorted(self.paths)

    def image_path(self, name: str) -> Path:
        return resolve_image_path(self.root, self.paths[name])

    def open(self, name: str) -> Image.Image:
        with Image.open(self.image_path(name)) as img:
            return img.convert("RGB")


@dataclass
class RankedResult:
    metrics: dict[str, float]
    rankings: list[list[str]]  # top 50 of the gallery, reference excluded
    subset_rankings: list[list[str]]
    # query x gallery cosine scores (gallery in sorted order); only in-process runs have them
    scores: np.ndarray | None = None


def _embed(
    fn: Callable[[Sequence], np.ndarray], items: Sequence, batch_size: int, desc: str
) -> np.ndarray:
    parts = []
    quiet = not log.isEnabledFor(logging.INFO)
    for i in tqdm(range(0, len(items), batch_size), desc=desc, disable=quiet, leave=False):
        parts.append(fn(items[i : i + batch_size]))
    return np.concatenate(parts)


def embed_split(
    model: CIRModel | OnnxCIRModel, split: EvalSplit, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Gallery image embeddings (in ``split.gallery`` order) and composed-query embeddings."""
    gallery_vecs = _embed(
        lambda names: model.embed_images([split.open(n) for n in names]),
        split.gallery,
        batch_size,
        "gallery",
    )
    query_vecs = _embed(
        lambda ts: model.embed_composed(
            [split.open(t.reference) for t in ts], [t.caption for t in ts]
        ),
        split.triplets,
        batch_size,
        "queries",
    )
    return gallery_vecs, query_vecs


def evaluate_in_process(
    model: CIRModel | OnnxCIRModel, split: EvalSplit, batch_size: int = 64
) -> RankedResult:
    """CIRR metrics (R@1/5/10/50, Rsubset@1/2/3, Avg) of ``model`` (torch, or an ONNX export
    on onnxruntime) on ``split``."""
    return rank_split(split, *embed_split(model, split, batch_size))


def rank_split(split: EvalSplit, gallery_vecs: np.ndarray, query_vecs: np.ndarray) -> RankedResult:
    """CIRR metrics and rankings of ``split`` from its embeddings (as :func:`embed_split`
    gives them), for callers that also need the vectors."""
    gallery = split.gallery
    scores = query_vecs @ gallery_vecs.T
    exclude = [t.reference for t in split.triplets]
    return RankedResult(
        metrics=cirr_metrics(scores, gallery, split.triplets),
        rankings=rank_gallery(scores, gallery, exclude=exclude, k=50),
        subset_rankings=cirr_subset_rankings(scores, gallery, split.triplets),
        scores=scores,
    )
