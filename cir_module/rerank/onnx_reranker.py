"""The LVLM reranker exported by ``cir rerank export``, served by onnxruntime.

The same scores as :class:`LVLMReranker` (the shared prefix once, its key / value cache
reused by batches of candidates; injection applied on the prefix pass), with the RAug-Rep
vectors, alpha and the steered layers as decoder inputs: changing them needs no re-export.
The folder holds ``reranker_manifest.json``, ``vision.onnx``, ``decoder.onnx``, the tokenizer
and the image processor.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cir_module.rerank.injection import choose_layers
from cir_module.rerank.onnx_vlm import (
    RERANKER_MANIFEST,
    OnnxVLMExport,
    is_onnx_reranker,
    onnx_kind,
)
from cir_module.rerank.prefixed import PrefixedScoring
from cir_module.rerank.prompt import RerankPrompt
from cir_module.vlm.prompt import answer_tokens, mrope_positions

__all__ = ["RERANKER_MANIFEST", "OnnxPrefix", "OnnxReranker", "is_onnx_reranker", "onnx_kind"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OnnxPrefix:
    """A query's prefix run: its keys and values, the suffix ids, the prompt's positions."""

    keys: np.ndarray
    values: np.ndarray
    suffix: np.ndarray
    positions: np.ndarray
    length: int


class OnnxReranker(PrefixedScoring, OnnxVLMExport):
    """P(YES) per candidate from the exported vision tower and decoder."""

    def __init__(
        self,
        folder: str | Path,
        *,
        raug: str | Path | np.ndarray | None = None,
        alpha: float = 0.6,
        layers: str | Sequence[int] = "all",
        batch_size: int = 16,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        trt_cache: str | Path | None = None,
        trt_fp16: bool = True,
    ) -> None:
        self.open_export(folder, providers, threads, trt_cache, trt_fp16)
        self.prompt = RerankPrompt(**self.manifest["prompt"])
        self.yes_id, self.no_id = answer_tokens(
            self.codec.tokenizer, self.prompt.yes, self.prompt.no
        )
        self.batch_size = batch_size
        self.raug = self._raug(raug)
        self.alpha = float(alpha)
        self.injection_layers = choose_layers(self.num_layers, layers)

    def _raug(self, raug: str | Path | np.ndarray | None) -> np.ndarray | None:
        if raug is None:
            return None
        if not isinstance(raug, np.ndarray):
            from cir_module.rerank.raug import load_raug

            raug = load_raug(raug)[0].float().numpy()
        if raug.shape != (self.num_layers, self.hidden):
            raise ValueError(
                f"RAug-Rep of shape {raug.shape}; "
                f"the model needs ({self.num_layers}, {self.hidden})"
            )
        return raug.astype(np.float32)

    def describe(self) -> dict[str, Any]:
        """What ``/meta`` shows."""
        return {
            **self.describe_export(),
            "raug": self.raug is not None,
            "alpha": self.alpha,
            "injection_layers": self.injection_layers,
        }

    # -- graphs ------------------------------------------------------------------------------
    def _decode(self, ids, features, positions, keys, values, steer: bool):
        vectors = self.raug if self.raug is not None else np.zeros((self.num_layers, self.hidden))
        inject = np.zeros(self.num_layers, dtype=np.float32)
        if steer and self.raug is not None:
            inject[self.injection_layers] = 1.0
        return self.sessions["decoder"].run(
            None,
            {
                "input_ids": ids,
                "image_embeds": features,
                "position_ids": positions,
                "past_keys": keys,
                "past_values": values,
                "raug": vectors.astype(np.float32),
                "alpha": np.array(self.alpha, dtype=np.float32),
                "inject": inject,
            },
        )

    def prefix(self, reference: Image.Image, text: str) -> OnnxPrefix:
        """The query's half of the prompt run once, injection applied (see LVLMReranker)."""
        prefix = self.codec.encode(self.prompt.prefix, text=text)
        suffix = self.codec.encode(self.prompt.suffix)
        positions = mrope_positions(prefix + suffix, self.codec.image_token_id, self.merged_grid)
        empty = self.empty_cache(1)
        _, keys, values = self._decode(
            np.array([prefix]),
            self.image_features([reference]),
            positions[:, None, : len(prefix)],
            empty,
            empty,
            steer=True,
        )
        return OnnxPrefix(keys, values, np.array([suffix]), positions, len(prefix))

    def score_prefixed(self, state: OnnxPrefix, candidates: Sequence[Image.Image]) -> np.ndarray:
        """P(YES) per candidate, continuing from a query's :meth:`prefix`."""
        if not candidates:
            return np.zeros(0, dtype=np.float32)
        p = state.length
        scores = []
        for start in range(0, len(candidates), self.batch_size):
            batch = candidates[start : start + self.batch_size]
            n = len(batch)
            logits, _, _ = self._decode(
                np.repeat(state.suffix, n, axis=0),
                self.image_features(batch),
                np.repeat(state.positions[:, None, p:], n, axis=1),
                np.repeat(state.keys, n, axis=1),
                np.repeat(state.values, n, axis=1),
                steer=False,
            )
            shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
            scores.append((shifted[:, 0] / shifted.sum(axis=-1)).astype(np.float32))
        return np.concatenate(scores)
