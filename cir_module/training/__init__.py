"""Training: InfoNCE for the pyramid encoder and the composed-query head.

``recipes`` (one JSON file per recipe, torch-free to list and read) holds what was found to
work, so that ``cir train --recipe NAME`` trains a model in one command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cir_module.lazy import lazy_exports
from cir_module.training.recipes import list_recipes, load_recipe

if TYPE_CHECKING:
    from cir_module.training.trainer import TrainConfig, train

__all__ = ["TrainConfig", "list_recipes", "load_recipe", "train"]

# The trainer needs torch: loaded when first looked up.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {"TrainConfig": "cir_module.training.trainer", "train": "cir_module.training.trainer"},
)
