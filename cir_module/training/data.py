"""Training triplets in CIRR's annotation format (CIRR itself, or the synthetic benchmark)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from cir_module.eval.readers import CIRTriplet, read_cirr, read_image_split, resolve_image_path
from cir_module.models.preprocess import ImagePreprocessor

__all__ = ["Batch", "ImageStore", "TripletData", "query_key"]


def query_key(reference: str, text: str) -> str:
    """A query's key in a distilled-queries file: its reference image's name and its text."""
    return f"{reference}\t{text}"


class ImageStore:
    """Decoded images of one split, read lazily and kept as uint8 arrays at model size."""

    def __init__(self, root: Path, paths: dict[str, str], preprocess: ImagePreprocessor) -> None:
        self.root = root
        self.paths = paths
        self.preprocess = preprocess
        self._cache: dict[str, np.ndarray] = {}

    def _load(self, name: str) -> np.ndarray:
        if name not in self._cache:
            with Image.open(resolve_image_path(self.root, self.paths[name])) as img:
                self._cache[name] = np.asarray(self.preprocess.resize(img.convert("RGB")))
        return self._cache[name]

    def pixels(self, names: Sequence[str]) -> np.ndarray:
        """Normalised float32 pixels ``[n, 3, size, size]`` for the named images."""
        return self.preprocess.normalize(np.stack([self._load(n) for n in names]))


@dataclass
class Batch:
    references: list[str]
    captions: list[str]
    targets: list[str]
    negatives: list[str]  # hard negatives, appended to the candidates


class TripletData:
    """The triplets of one split and the names of their hard negatives."""

    def __init__(self, root: str | Path, split: str, name: str = "shapes") -> None:
        self.root = Path(root)
        self.triplets: list[CIRTriplet] = [
            t for t in read_cirr(self.root, split, name) if t.target is not None
        ]
        self.paths = read_image_split(self.root, split, name)

    def __len__(self) -> int:
        return len(self.triplets)

    def rewrite_captions(self, rewrite: Callable[[str], str]) -> None:
        """Replace every modification text by ``rewrite(text)`` (query enhancement)."""
        new = {c: rewrite(c) for c in self.captions()}
        self.triplets = [replace(t, caption=new[t.caption]) for t in self.triplets]

    def rewrite_queries(self, distilled: Mapping[str, str]) -> None:
        """Replace every modification text by its distilled text for its reference
        (a distilled-queries file, ``python -m research.cli rar-distil``: keys from
        :func:`query_key`)."""
        keys = [query_key(t.reference, t.caption) for t in self.triplets]
        missing = [k for k in keys if k not in distilled]
        if missing:
            raise ValueError(
                f"the distilled queries lack {len(missing)} of {len(keys)} triplets of this "
                f"split, e.g. {missing[0]!r}: run python -m research.cli rar-distil over the split"
            )
        self.triplets = [
            replace(t, caption=distilled[k]) for t, k in zip(self.triplets, keys, strict=True)
        ]

    def captions(self) -> list[str]:
        return sorted({t.caption for t in self.triplets})

    def batches(self, batch_size: int, hard_negatives: int, rng: random.Random) -> Iterator[Batch]:
        """Shuffled full batches; each triplet brings up to ``hard_negatives`` members of its
        image set that are neither its reference nor its target."""
        order = list(range(len(self.triplets)))
        rng.shuffle(order)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            chosen = [self.triplets[i] for i in order[start : start + batch_size]]
            negatives: list[str] = []
            for t in chosen:
                pool = [m for m in t.subset if m not in (t.reference, t.target)]
                negatives += rng.sample(pool, min(hard_negatives, len(pool)))
            yield Batch(
                references=[t.reference for t in chosen],
                captions=[t.caption for t in chosen],
                targets=[t.target for t in chosen],
                negatives=negatives,
            )
