"""An exported model (``cir export``) served by onnxruntime, with :class:`CIRModel`'s numpy API.

The export folder holds ``manifest.json``, the tokenizer files and one ONNX file per graph
(``image``, ``text``, ``fusion``; for the ``lvlm`` family ``image``, ``text``, ``composed``)
and variant (``fp32``, ``fp16``, ``int8``). :func:`load_onnx_model` opens either. Preprocessing
is Pillow and numpy; torch is not touched on this path.

Execution providers are tried in the order TensorRT -> CUDA -> CPU; the one in use is
reported by :meth:`OnnxCIRModel.describe` (and so by ``/meta``), and a fallback is logged as a
warning.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cir_module.models.cued_text import cued_token_rows
from cir_module.models.preprocess import ImagePreprocessor
from cir_module.models.tensorrt import TENSORRT, TensorRTShapes, tensorrt_options, with_profile

__all__ = [
    "MANIFEST_NAME",
    "PROVIDER_ORDER",
    "OnnxCIRModel",
    "OnnxLVLMRetriever",
    "choose_providers",
    "load_onnx_model",
    "onnxruntime_module",
    "serving_session_options",
]

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def onnxruntime_module() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError(
            "serving an ONNX export needs onnxruntime: pip install 'weaviate-cir[cpu]' "
            "(or '[gpu]' for onnxruntime-gpu)"
        ) from exc
    return onnxruntime


def serving_session_options(threads: int | None = None) -> Any:
    """Session options for a serving process: full graph optimisation, no spinning."""
    ort = onnxruntime_module()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    # Idle intra-op threads spin by default; between two batches that spinning takes the
    # cores from request decoding and the HTTP loop, which a serving process needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def choose_providers(
    requested: Sequence[str] | None = None,
    trt_cache: str | Path | None = None,
    trt_fp16: bool = True,
) -> list[str | tuple[str, dict[str, Any]]]:
    """The execution providers to use, best first, among those this onnxruntime offers.

    ``requested`` (names) restricts the choice; unknown or unavailable names are dropped with a
    warning. TensorRT builds fp16 engines unless ``trt_fp16`` is False and keeps them in
    ``trt_cache``; each graph adds its optimisation profile
    (:func:`~cir_module.models.tensorrt.with_profile`).
    """
    available = set(onnxruntime_module().get_available_providers())
    wanted = list(requested) if requested else list(PROVIDER_ORDER)
    chosen: list[str | tuple[str, dict[str, Any]]] = []
    for name in wanted:
        if name not in available:
            # Asked for by name: say so. The default list names GPU providers that a CPU
            # build of onnxruntime never has; that is not worth a warning.
            level = logging.WARNING if requested else logging.DEBUG
            log.log(level, "execution provider %s is not in this onnxruntime; skipped", name)
            continue
        if name == TENSORRT:
            chosen.append((name, tensorrt_options(trt_cache, trt_fp16)))
        else:
            chosen.append(name)
    if "CPUExecutionProvider" not in [c if isinstance(c, str) else c[0] for c in chosen]:
        chosen.append("CPUExecutionProvider")  # the fallback for nodes others cannot run
    return chosen


class OnnxCIRModel:
    """A ``cir export`` folder on onnxruntime: ``embed_images`` / ``embed_texts`` /
    ``embed_composed`` as on :class:`CIRModel`, float32 unit vectors out."""

    def __init__(
        self,
        folder: str | Path,
        variant: str = "fp32",
        providers: Sequence[str] | None = None,
        trt_cache: str | Path | None = None,
        threads: int | None = None,
        trt_fp16: bool = True,
        trt_opt_batch: int = 8,
        max_batch: int = 32,
    ) -> None:
        """Open the ``variant`` of an export on onnxruntime. ``providers``, ``threads`` and
        ``trt_cache`` as :func:`choose_providers`; TensorRT (when chosen) builds one engine
        per graph for batches of 1 to ``max_batch`` (tuned for ``trt_opt_batch``) and texts
        up to the export's length, in fp16 unless ``trt_fp16`` is False."""
        from transformers import AutoTokenizer

        ort = onnxruntime_module()
        self.folder = Path(folder)
        manifest_file = self.folder / MANIFEST_NAME
        if not manifest_file.is_file():
            raise FileNotFoundError(f"{folder} is not an ONNX export: no {MANIFEST_NAME}")
        self.manifest = json.loads(manifest_file.read_text())
        variants = self.manifest["variants"]
        if variant not in variants:
            raise ValueError(f"{folder} has no {variant!r} variant; it has {sorted(variants)}")
        self.variant = variant
        self.preprocess = ImagePreprocessor(**self.manifest["preprocessing"])
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.text_padding = self.manifest["text"]["padding"]
        self.text_max_length = int(self.manifest["text"]["max_length"])
        self.dim = int(self.manifest["model"]["dimension"])

        options = serving_session_options(threads)
        chosen = choose_providers(providers, trt_cache, trt_fp16)
        shapes = TensorRTShapes.for_service(trt_opt_batch, max_batch, self.text_max_length)
        # Each graph's providers: TensorRT's options completed by the graph's own profile.
        self.session_providers = {
            graph: with_profile(chosen, self.manifest["graphs"].get(graph, {}), shapes)
            for graph in variants[variant]["files"]
        }
        self.sessions = {
            graph: ort.InferenceSession(
                str(self.folder / files),
                sess_options=options,
                providers=self.session_providers[graph],
            )
            for graph, files in variants[variant]["files"].items()
        }
        self.provider = self.sessions["image"].get_providers()[0]
        first_choice = chosen[0] if isinstance(chosen[0], str) else chosen[0][0]
        if self.provider != first_choice:
            # onnxruntime-gpu lists CUDA / TensorRT even where no GPU or library is present,
            # and silently runs on the next provider: make that visible.
            log.warning(
                "onnxruntime could not use %s and fell back to %s", first_choice, self.provider
            )
        self._inputs = {g: {i.name for i in s.get_inputs()} for g, s in self.sessions.items()}

    # -- graphs ------------------------------------------------------------------------------
    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        # An exporter drops inputs a graph does not use (a sum fusion ignores the tokens).
        wanted = self._inputs[graph]
        return self.sessions[graph].run(None, {k: v for k, v in feeds.items() if k in wanted})

    def pixels(self, images: Sequence[Image.Image]) -> np.ndarray:
        """PIL images -> the float32 ``[batch, 3, size, size]`` the image graph takes."""
        return self.preprocess(images)

    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Texts -> int64 ``input_ids`` and ``attention_mask`` (truncated, not rejected)."""
        batch = self.tokenizer(
            list(texts),
            padding=self.text_padding,
            truncation=True,
            max_length=self.text_max_length,
            return_tensors="np",
        )
        return {
            "input_ids": batch["input_ids"].astype(np.int64),
            "attention_mask": batch["attention_mask"].astype(np.int64),
        }

    def encode_image(self, pixel_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixels -> unit image embeddings and the image tokens."""
        embeds, tokens = self._run("image", {"pixel_values": pixel_values})
        return embeds, tokens

    def encode_text(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> list[np.ndarray]:
        """Token ids -> unit text embeddings and the text tokens."""
        return self._run("text", {"input_ids": input_ids, "attention_mask": attention_mask})

    # -- numpy front end (as on CIRModel) -----------------------------------------------------
    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """PIL images -> float32 unit vectors ``[n, dim]``."""
        return self.encode_image(self.pixels(images))[0].astype(np.float32, copy=False)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Strings -> float32 unit vectors ``[n, dim]``."""
        return self.encode_text(**self.tokenize(texts))[0].astype(np.float32, copy=False)

    def embed_composed(self, images: Sequence[Image.Image], texts: Sequence[str]) -> np.ndarray:
        """Pairs (reference image, modification text) -> float32 unit vectors ``[n, dim]``."""
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        image_embeds, image_tokens = self.encode_image(self.pixels(images))
        tokens = self.tokenize(texts)
        text_embeds, text_tokens = self.encode_text(**tokens)
        (query,) = self._run(
            "fusion",
            {
                "image_embeds": image_embeds,
                "image_tokens": image_tokens,
                "text_embeds": text_embeds,
                "text_tokens": text_tokens,
                "text_mask": tokens["attention_mask"],
            },
        )
        return query.astype(np.float32, copy=False)

    def describe(self) -> dict[str, Any]:
        """What ``/meta`` reports: the exported model's facts plus runtime and provider."""
        return {
            **self.manifest["model"],
            "runtime": "onnxruntime",
            "variant": self.variant,
            "provider": self.provider,
            # 0: onnxruntime's default, one per core.
            "intra_op_threads": self.sessions["image"].get_session_options().intra_op_num_threads,
            "export": str(self.folder),
        }


class OnnxLVLMRetriever(OnnxCIRModel):
    """An ``lvlm`` export: each input kind is one whole graph (the language model reads the
    image and the text together), texts tokenised with their kind's cue."""

    def tokenize(self, texts: Sequence[str], kind: str = "composed") -> dict[str, np.ndarray]:
        """Texts -> int64 ``input_ids`` and ``attention_mask``, each text followed by the cue
        of ``kind`` and right-padded (as :meth:`LVLMRetriever.tokenize`)."""
        settings = self.manifest["text"]
        ids, mask = cued_token_rows(
            self.tokenizer, texts, settings["cues"][kind], self.text_max_length, settings["pad_id"]
        )
        return {"input_ids": ids, "attention_mask": mask}

    def _vectors(self, graph: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self._run(graph, feeds)[0].astype(np.float32, copy=False)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """PIL images -> float32 unit vectors ``[n, dim]``."""
        return self._vectors("image", {"pixel_values": self.pixels(images)})

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Strings -> float32 unit vectors ``[n, dim]``."""
        return self._vectors("text", self.tokenize(texts, kind="text"))

    def embed_composed(self, images: Sequence[Image.Image], texts: Sequence[str]) -> np.ndarray:
        """Pairs (reference image, modification text) -> float32 unit vectors ``[n, dim]``."""
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        feeds = {"pixel_values": self.pixels(images), **self.tokenize(texts)}
        return self._vectors("composed", feeds)


def load_onnx_model(folder: str | Path, variant: str = "fp32", **kwargs: Any) -> OnnxCIRModel:
    """The runtime for a ``cir export`` folder, by the family its manifest names."""
    manifest_file = Path(folder) / MANIFEST_NAME
    if not manifest_file.is_file():
        raise FileNotFoundError(f"{folder} is not an ONNX export: no {MANIFEST_NAME}")
    family = json.loads(manifest_file.read_text())["model"].get("family")
    runtime = OnnxLVLMRetriever if family == "lvlm" else OnnxCIRModel
    return runtime(folder, variant, **kwargs)
