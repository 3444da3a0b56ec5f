"""The VLM trained here in stages (``cir vlm train --stage vision|caption|judge``): a tower
that sees every object, then captioning, then judging (the reranker's YES / NO).

| module | what it holds |
| --- | --- |
| ``config`` | :class:`StageConfig`, one stage's run |
| ``stages`` | the three stages' losses over batches drawn fresh every step |
| ``train`` | the resumable loop, a stage folder's layout, :func:`load_stage` |
| ``probe`` | what a stage can do: cells read, captions written, judgements on a split |

The names are imported on first use (they need torch and transformers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cir_module.lazy import lazy_exports

if TYPE_CHECKING:
    from cir_module.vlm_training.config import STAGES, StageConfig
    from cir_module.vlm_training.probe import probe_stage
    from cir_module.vlm_training.train import StageResult, load_stage, train_stage

__all__ = ["STAGES", "StageConfig", "StageResult", "load_stage", "probe_stage", "train_stage"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(("STAGES", "StageConfig"), "cir_module.vlm_training.config"),
        "probe_stage": "cir_module.vlm_training.probe",
        **dict.fromkeys(
            ("StageResult", "load_stage", "train_stage"), "cir_module.vlm_training.train"
        ),
    },
)
