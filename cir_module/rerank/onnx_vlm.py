"""An exported VLM's folder (``cir rerank export``) opened for onnxruntime, without torch:
what the P(YES) reranker (``onnx_reranker.py``) and the change verifier
(``onnx_verifier.py``) both read. The folder holds ``reranker_manifest.json`` (its ``kind``:
``"yes"``, or ``"changes"`` for a change verifier), ``vision.onnx``, ``decoder.onnx``, the
tokenizer and the image processor."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cir_module.models.onnx_model import (
    choose_providers,
    onnxruntime_module,
    serving_session_options,
)
from cir_module.vlm.prompt import PromptCodec

__all__ = ["RERANKER_MANIFEST", "OnnxVLMExport", "is_onnx_reranker", "onnx_kind"]

RERANKER_MANIFEST = "reranker_manifest.json"


def is_onnx_reranker(path: str | Path) -> bool:
    """Whether ``path`` is a ``cir rerank export`` folder."""
    return (Path(path) / RERANKER_MANIFEST).is_file()


def onnx_kind(path: str | Path) -> str:
    """The kind an export's manifest records (exports before kinds: the P(YES) judge)."""
    return json.loads((Path(path) / RERANKER_MANIFEST).read_text()).get("kind", "yes")


class OnnxVLMExport:
    """Mixin: an export's manifest, prompt codec, decoder cache shape and sessions
    (:meth:`open_export`), and its vision tower's features (:meth:`image_features`)."""

    def open_export(
        self,
        folder: str | Path,
        providers: Sequence[str] | None,
        threads: int | None,
        trt_cache: str | Path | None = None,
        trt_fp16: bool = True,
    ) -> None:
        from transformers import AutoTokenizer, Qwen2VLImageProcessor

        self.folder = Path(folder)
        if not is_onnx_reranker(folder):
            raise FileNotFoundError(f"{folder} is not a reranker export: no {RERANKER_MANIFEST}")
        self.manifest = manifest = json.loads((self.folder / RERANKER_MANIFEST).read_text())
        self.image_side = int(manifest["image_side"])
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.codec = PromptCodec(
            self.tokenizer,
            Qwen2VLImageProcessor.from_pretrained(self.folder),
            *manifest["image_markers"],
            int(manifest["image_tokens"]),
            self.image_side,
        )
        shape = manifest["decoder"]
        self.num_layers, self.hidden = int(shape["layers"]), int(shape["hidden"])
        self.kv_heads, self.head_dim = int(shape["kv_heads"]), int(shape["head_dim"])
        self.merged_grid = tuple(manifest["merged_grid"])
        self.family = manifest["family"]
        self._options = serving_session_options(threads)
        self._providers = choose_providers(providers, trt_cache, trt_fp16)
        self.sessions = {g: self.open_session(f"{g}.onnx") for g in ("vision", "decoder")}
        self.provider = self.sessions["decoder"].get_providers()[0]

    def open_session(self, name: str, threads: int | None = None) -> Any:
        """An onnxruntime session of the export's graph file ``name`` (``threads``: its own
        intra-op threads instead of the export's)."""
        options = serving_session_options(threads) if threads else self._options
        return onnxruntime_module().InferenceSession(
            str(self.folder / name), sess_options=options, providers=self._providers
        )

    def describe_export(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "runtime": "onnxruntime",
            "provider": self.provider,
            "layers": self.num_layers,
            "image_side": self.image_side,
        }

    def image_features(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Placeholder-token features per image (images x tokens x hidden)."""
        pixels, _ = self.codec.pixels(images)
        rows = pixels.reshape(len(images), -1, pixels.shape[-1]).astype(np.float32)
        session = self.sessions["vision"]
        return np.stack([session.run(None, {"pixel_values": r})[0] for r in rows])

    def empty_cache(self, batch: int) -> np.ndarray:
        """A key (or value) cache of no positions."""
        return np.zeros((self.num_layers, batch, self.kv_heads, 0, self.head_dim), np.float32)
