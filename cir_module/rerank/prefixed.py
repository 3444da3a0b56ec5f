"""Scoring through a query's prefix: what every reranker that computes a query's half once
(:meth:`prefix`) and continues from it per candidate (:meth:`score_prefixed`) derives from
those two."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

__all__ = ["PrefixedScoring"]


class PrefixedScoring:
    """Mixin: :meth:`score` and :meth:`prefixes` from the class's ``prefix`` and
    ``score_prefixed``."""

    def score(
        self, reference: Image.Image, text: str, candidates: Sequence[Image.Image]
    ) -> np.ndarray:
        """A score per candidate: the query's prefix once, then its candidates."""
        if not candidates:
            return np.zeros(0, dtype=np.float32)
        return self.score_prefixed(self.prefix(reference, text), candidates)

    def prefixes(self, references: Sequence[Image.Image], texts: Sequence[str]) -> list:
        """The prefix of many queries (one after another here; a reranker that writes per
        query batches them)."""
        return [self.prefix(r, t) for r, t in zip(references, texts, strict=True)]
