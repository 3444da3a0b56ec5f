"""A change verifier's checkpoint served on onnxruntime: exported once into a cache, then
reused by every later start (as TensorRT engines are).

A small Qwen2-VL run eagerly by torch on a CPU spends most of its time between operators
(a verify row of the shipped verifier: about 3.5x slower than the same graph on
onnxruntime, its 60-token caption about 5x; docs/reranking.md). ``cir serve`` therefore
serves a change verifier's folder through its export when the settings allow
(``CIR_RERANKER_RUNTIME``): :func:`cached_verifier_export` writes it under the cache folder,
named by a digest of the checkpoint's files and the opset, with the exporter's own parity
check (a graph that misses torch's captions or P(YES) is refused, and nothing is served from
it). A cache entry appears whole or not at all: the export is written beside it and renamed
into place, so replicas starting together never read a half-written folder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

from cir_module.rerank.onnx_vlm import RERANKER_MANIFEST
from onnx_export.export import DEFAULT_OPSET

__all__ = ["cached_verifier_export", "checkpoint_digest"]

log = logging.getLogger(__name__)

# What a checkpoint folder holds that the export reads: weights, configs, tokenizer, settings.
_READ = (".safetensors", ".bin", ".json", ".txt", ".model")
# Raised when an export gains or changes files, so older cache entries are made again
# (2: the int8 verify graph).
EXPORT_FORMAT = 2


def checkpoint_digest(folder: str | Path, opset: int = DEFAULT_OPSET) -> str:
    """A digest of the files the export reads (names and bytes), the opset and the export's
    format."""
    digest = hashlib.blake2b(f"opset={opset};format={EXPORT_FORMAT}".encode(), digest_size=8)
    for path in sorted(Path(folder).iterdir()):
        if path.is_file() and path.suffix in _READ:
            digest.update(path.name.encode())
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def cached_verifier_export(
    folder: str | Path, cache_dir: str | Path, opset: int = DEFAULT_OPSET
) -> Path:
    """The ONNX export of the change verifier at ``folder`` under ``cache_dir``: made (and
    parity-checked) the first time, read afterwards."""
    from onnx_export.verifier import export_verifier

    folder = Path(folder)
    target = Path(cache_dir) / f"{folder.name}-{checkpoint_digest(folder, opset)}"
    if (target / RERANKER_MANIFEST).is_file():
        log.info("serving the verifier's cached export %s", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    building = target.with_name(f"{target.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    log.info("exporting the verifier %s to onnxruntime (once; cached in %s)", folder, target)
    try:
        manifest = export_verifier(folder, building, opset=opset)
        try:
            building.rename(target)
        except OSError:  # another replica finished first: its export is the same
            if not (target / RERANKER_MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    log.info("verifier exported, parity %s", manifest.get("parity"))
    return target
