"""The VLM trained here in stages (``cir vlm train --stage vision|caption|verify``, or the
whole chain at once: ``cir vlm train --recipe NAME``): a tower
that sees every object, then captioning, then verifying a caption's changes (the reranker's
YES / NO). The research stages (compare, judge, rewrite) are defined in research/stages.py and
registered here (``stages.register_stage``), run through ``python -m research.cli vlm-train``
with the same loop and folder layout; what a stage can do is probed by ``research.vlm_probe``.

| module | what it holds |
| --- | --- |
| ``config`` | :class:`StageConfig`, one stage's run; the stages declared and their starts |
| ``stages`` | the stages' losses over batches drawn fresh every step; their registry |
| ``train`` | the resumable loop, a stage folder's layout, :func:`load_stage` |
| ``mining`` | the first stage's near misses per training query |
| ``recipe`` | :func:`run_recipe`: a recipe's steps (``recipes/*.json``) in one resumable run |

The names are imported on first use (they need torch and transformers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cir_module.lazy import lazy_exports

if TYPE_CHECKING:
    from cir_module.vlm_training.config import PRODUCT_STAGES, StageConfig, registered_stages
    from cir_module.vlm_training.recipe import list_recipes, run_recipe
    from cir_module.vlm_training.train import StageResult, load_stage, train_stage

__all__ = [
    "PRODUCT_STAGES",
    "StageConfig",
    "StageResult",
    "list_recipes",
    "load_stage",
    "registered_stages",
    "run_recipe",
    "train_stage",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(
            ("PRODUCT_STAGES", "StageConfig", "registered_stages"), "cir_module.vlm_training.config"
        ),
        **dict.fromkeys(
            ("StageResult", "load_stage", "train_stage"), "cir_module.vlm_training.train"
        ),
        **dict.fromkeys(("list_recipes", "run_recipe"), "cir_module.vlm_training.recipe"),
    },
)
