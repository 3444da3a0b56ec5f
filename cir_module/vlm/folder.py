"""What a VLM checkpoint folder says about itself, read without torch: its settings file
(:data:`VLM_SETTINGS`) and the kind it records (which reranker class or chat backend
serves it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_KIND",
    "KIND_KEY",
    "SERVED_WITH",
    "VLM_SETTINGS",
    "recorded_kind",
    "saved_settings",
]

VLM_SETTINGS = "cir_reranker.json"


def saved_settings(path: str | Path) -> dict[str, Any]:
    """The settings a checkpoint folder carries (:data:`VLM_SETTINGS`); empty for a hub id
    or a folder without them."""
    saved = Path(path) / VLM_SETTINGS
    return json.loads(saved.read_text()) if saved.is_file() else {}


# The key of :data:`VLM_SETTINGS` that names how a folder is served, its "kind" (the key's
# name is historical), and the kind of a folder that names none: the P(YES) image judge.
KIND_KEY = "verify"
DEFAULT_KIND = "yes"
# The key under which a folder made by a recipe records how it is served: the fusion weight
# ``lambda`` and the ``k`` it was calibrated at, the ``first_stage`` it follows, its ``differ``
# (``cir vlm train --recipe``; the service's settings override them).
SERVED_WITH = "served_with"


def recorded_kind(path: str | Path) -> str:
    """The kind a checkpoint folder records (which reranker class or chat backend serves
    it); :data:`DEFAULT_KIND` for a hub id or a folder that records none."""
    return saved_settings(path).get(KIND_KEY, DEFAULT_KIND)
