"""The change verifier exported by ``cir rerank export``, served by onnxruntime (no torch): the
same captions (greedy, with the decoder's key / value cache) and the same P(YES) as
:class:`~cir_module.rerank.verify.ChangeVerifyingReranker`, the prompt's shared half run once
per query. The folder holds ``reranker_manifest.json`` (``"kind": "changes"``),
``vision.onnx``, ``decoder.onnx`` (:class:`onnx_export.reranker_graphs.TextDecoderGraph`), the
tokenizer, the image processor and the source folder's ``cir_reranker.json`` (its differ,
read-out and recorded serving), and ``decoder.int8.onnx``, the decoder with int8 matrix
products, which scores the verify rows at ``precision="int8"`` (captions are always the fp32
graph's: a greedy caption must not change with the precision)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cir_module.rerank.onnx_vlm import OnnxVLMExport
from cir_module.rerank.verification import ChangeVerification, Row, right_padded
from cir_module.vlm.folder import KIND_KEY, saved_settings
from cir_module.vlm.prompt import DESCRIBE_PROMPT, mrope_positions

__all__ = ["INT8_DECODER", "PRECISIONS", "VERIFIER_KIND", "OnnxChangeVerifier"]

VERIFIER_KIND = "changes"
INT8_DECODER = "decoder.int8.onnx"
PRECISIONS = ("fp32", "int8")


def _p_yes(logits: np.ndarray) -> np.ndarray:
    """P(YES) over (YES, NO) logits on the last axis."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (shifted[..., 0] / shifted.sum(axis=-1)).astype(np.float32)


class OnnxChangeVerifier(ChangeVerification, OnnxVLMExport):
    """Change verification on the exported vision tower and text decoder."""

    kind = VERIFIER_KIND

    def __init__(
        self,
        folder: str | Path,
        *,
        batch_size: int = 16,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        trt_cache: str | Path | None = None,
        trt_fp16: bool = True,
        precision: str | None = None,
        **settings: Any,
    ) -> None:
        self.open_export(folder, providers, threads, trt_cache, trt_fp16)
        # The source folder's settings travel with the export (differ, read-out, serving).
        recorded = {k: v for k, v in saved_settings(folder).items() if k != KIND_KEY}
        recorded.pop("image_side", None)
        self.served_with = dict(recorded.pop("served_with", None) or {})
        self.setup_verification(**(recorded | settings))
        # The setting, else the precision the folder's lambda was calibrated with, else fp32.
        self.precision = precision or self.served_with.get("precision", "fp32")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is none of {PRECISIONS}")
        # A greedy step runs one token per row: too little work to split across threads,
        # whose hand-offs cost more than they save (a caption about 1.3x faster on one).
        step = self.sessions["decoder"] if threads == 1 else self.open_session("decoder.onnx", 1)
        self.sessions["step"] = step
        self.sessions["verify"] = self.sessions["decoder"]
        if self.precision == "int8":
            if not (self.folder / INT8_DECODER).is_file():
                raise FileNotFoundError(
                    f"{folder} has no {INT8_DECODER} (an export made before int8 verify graphs): "
                    "export it again with `cir rerank export`, or serve it at precision fp32"
                )
            self.sessions["verify"] = self.open_session(INT8_DECODER)
        self.batch_size = batch_size
        self.end_id = self.tokenizer.convert_tokens_to_ids("<|im_end|>")

    def describe(self) -> dict[str, Any]:
        """What ``/meta`` shows."""
        return {
            **self.describe_export(),
            **({"served_with": self.served_with} if self.served_with else {}),
            **self.describe_verification(),
            "precision": self.precision,
        }

    # -- graphs ----------------------------------------------------------------------------------
    def _decode(
        self, ids, positions, keys, values, features=None, graph: str = "decoder"
    ) -> list[np.ndarray]:
        """next_logits, answer_logits, keys, values of one pass of ``graph``: ``decoder``,
        ``step`` (the same graph on one thread, for greedy steps) or ``verify`` (the graph at
        the served precision)."""
        if features is None:  # text only: the placeholder features are never read
            features = np.zeros((ids.shape[0], 1, self.hidden), np.float32)
        return self.sessions[graph].run(
            None,
            {
                "input_ids": ids.astype(np.int64),
                "image_embeds": features,
                "position_ids": positions.astype(np.int64),
                "past_keys": keys,
                "past_values": values,
            },
        )

    # -- the three primitives of change verification ---------------------------------------------
    def write_captions(self, images: Sequence[Image.Image]) -> list[str]:
        """Greedy captions, one token at a time over the growing cache (as ``generate``)."""
        prompt = self.codec.encode(DESCRIBE_PROMPT)
        n = len(images)
        positions = mrope_positions(prompt, self.codec.image_token_id, self.merged_grid)
        logits, _, keys, values = self._decode(
            np.array([prompt] * n),
            np.repeat(positions[:, None], n, axis=1),
            self.empty_cache(n),
            self.empty_cache(n),
            self.image_features(images),
        )
        following = int(positions.max()) + 1
        written: list[list[int]] = [[] for _ in range(n)]
        done = np.zeros(n, dtype=bool)
        for step in range(self.describe_tokens):
            token = logits.argmax(-1)
            for i in np.flatnonzero(~done):
                if token[i] == self.end_id:
                    done[i] = True
                else:
                    written[i].append(int(token[i]))
            if done.all() or step == self.describe_tokens - 1:
                break
            position = np.full((3, n, 1), following + step)
            logits, _, keys, values = self._decode(
                token[:, None], position, keys, values, graph="step"
            )
        return self.tokenizer.batch_decode(written, skip_special_tokens=True)

    def run_shared(self, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        p = len(ids)
        positions = np.broadcast_to(np.arange(p), (3, 1, p))
        _, _, keys, values = self._decode(
            np.array([ids]), positions, self.empty_cache(1), self.empty_cache(1), graph="verify"
        )
        return keys, values

    def run_rows(self, rows: list[Row], p: int, cache: Any) -> np.ndarray:
        ids, _, last = right_padded(rows, p, self.tokenizer.pad_token_id)
        n, width = ids.shape
        keys, values = cache if cache is not None else (self.empty_cache(1), self.empty_cache(1))
        positions = np.broadcast_to(np.arange(p, p + width), (3, n, width))
        _, answers, _, _ = self._decode(
            ids, positions, np.repeat(keys, n, axis=1), np.repeat(values, n, axis=1), graph="verify"
        )
        scores = _p_yes(answers[np.arange(n), last])
        if self.asked_readout:
            for i, (_, ends) in enumerate(rows):
                if ends:
                    scores[i] *= _p_yes(answers[i, [at - p for at, _ in ends]]).min()
        return scores
