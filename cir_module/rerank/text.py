"""Text documents in ``/rerank``: a sentence-transformers cross-encoder, as the reference
``reranker-transformers`` container scores them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["CrossEncoderScorer"]


class CrossEncoderScorer:
    """One score per (query, document) pair from a ``CrossEncoder`` checkpoint (hub id or
    folder, loaded with ``from_pretrained`` underneath)."""

    def __init__(self, path: str, *, device: str = "cpu", batch_size: int = 32) -> None:
        try:
            from sentence_transformers import CrossEncoder
        except ImportError as exc:
            raise ImportError(
                "text_reranker_model needs sentence-transformers: pip install "
                "'weaviate-cir[crossencoder]'"
            ) from exc
        self.id = path
        self.batch_size = batch_size
        self.model = CrossEncoder(path, device=device)

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """Scores of ``documents`` against ``query``, in order (higher is more relevant)."""
        if not documents:
            return np.zeros(0, dtype=np.float32)
        scores = self.model.predict(
            [(query, d) for d in documents], batch_size=self.batch_size, show_progress_bar=False
        )
        return np.asarray(scores, dtype=np.float32).reshape(len(documents))
