"""Training: InfoNCE for the pyramid encoder and the composed-query head."""

from __future__ import annotations

from cir_module.training.trainer import TrainConfig, train

__all__ = ["TrainConfig", "train"]
