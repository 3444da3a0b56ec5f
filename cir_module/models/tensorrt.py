"""TensorRT's provider options for one exported graph.

TensorRT builds an engine for a range of input shapes. Without an explicit range onnxruntime
builds one for the first shape it sees and rebuilds whenever a batch size or text length
falls outside it, a stall of seconds to minutes in the middle of serving. So each graph gets
one optimisation profile: every named dynamic axis the export recorded in its manifest
(``batch``, ``sequence``) runs from its minimum through the shape engines are tuned for to its
maximum (:class:`TensorRTShapes`, from the service's settings and the export's text length).
Engines are built in fp16 (inputs and outputs stay fp32) and kept in a persistent engine and
timing cache, so a restart reuses them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["TENSORRT", "TensorRTShapes", "profile_options", "tensorrt_options", "with_profile"]

log = logging.getLogger(__name__)

TENSORRT = "TensorrtExecutionProvider"


@dataclass(frozen=True)
class TensorRTShapes:
    """(min, opt, max) of each dynamic axis an export names: ``batch`` (items in one forward:
    at most the service's ``CIR_MAX_BATCH_SIZE``) and ``sequence`` (text tokens: at most the
    export's text length)."""

    batch: tuple[int, int, int] = (1, 8, 32)
    sequence: tuple[int, int, int] = (1, 77, 77)

    @classmethod
    def for_service(cls, opt_batch: int, max_batch: int, max_sequence: int) -> TensorRTShapes:
        """The ranges a service with these limits sends (the opt batch clipped to them)."""
        return cls(
            batch=(1, max(1, min(opt_batch, max_batch)), max_batch),
            sequence=(1, max_sequence, max_sequence),
        )

    def axis(self, name: str) -> tuple[int, int, int] | None:
        return getattr(self, name, None) if name in ("batch", "sequence") else None


def tensorrt_options(cache: str | Path | None, fp16: bool) -> dict[str, Any]:
    """The options every graph shares: fp16 kernels, the engine and timing caches."""
    options: dict[str, Any] = {"trt_fp16_enable": fp16}
    if cache:
        Path(cache).mkdir(parents=True, exist_ok=True)
        options.update(
            trt_engine_cache_enable=True,
            trt_engine_cache_path=str(cache),
            trt_timing_cache_enable=True,
            trt_timing_cache_path=str(cache),
        )
    return options


def profile_options(
    inputs: Sequence[Mapping[str, Any]], shapes: TensorRTShapes
) -> dict[str, str] | None:
    """``trt_profile_{min,opt,max}_shapes`` for a graph whose inputs the export recorded
    (``[{"name", "shape"}]``, a dynamic axis named, a static one a number); ``{}`` when every
    input is static; None when an axis has a name no range is known for (the engine is then
    built per shape, as onnxruntime does without a profile)."""
    rows: dict[str, list[str]] = {"min": [], "opt": [], "max": []}
    for tensor in inputs:
        dims = list(tensor["shape"])
        if all(isinstance(d, int) for d in dims):
            continue
        for k, which in enumerate(rows):
            shape = []
            for dim in dims:
                if isinstance(dim, int):
                    shape.append(dim)
                    continue
                ranged = shapes.axis(dim)
                if ranged is None:
                    return None
                shape.append(ranged[k])
            rows[which].append(f"{tensor['name']}:{'x'.join(map(str, shape))}")
    if not rows["min"]:
        return {}
    return {f"trt_profile_{which}_shapes": ",".join(row) for which, row in rows.items()}


def with_profile(
    chosen: Sequence[str | tuple[str, dict[str, Any]]],
    graph: Mapping[str, Any],
    shapes: TensorRTShapes,
) -> list[str | tuple[str, dict[str, Any]]]:
    """``chosen`` providers for one graph (its manifest entry, ``{"inputs": [...]}``):
    TensorRT's options completed by the graph's optimisation profile."""
    out: list[str | tuple[str, dict[str, Any]]] = []
    for entry in chosen:
        if isinstance(entry, tuple) and entry[0] == TENSORRT:
            profile = profile_options(graph.get("inputs", ()), shapes)
            if profile is None:
                log.warning(
                    "a graph's inputs name an axis with no shape range: TensorRT builds an "
                    "engine per new shape (inputs: %s)",
                    [i["name"] for i in graph.get("inputs", ())],
                )
            entry = (TENSORRT, {**entry[1], **(profile or {})})
        out.append(entry)
    return out
