"""Contrastive losses."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LogitScale", "info_nce"]


class LogitScale(nn.Module):
    """A learnable inverse temperature, stored as a log and clamped (CLIP's recipe)."""

    def __init__(self, init_temperature: float = 0.07, max_scale: float = 100.0) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / init_temperature)))
        self.max_log = math.log(max_scale)

    def forward(self) -> torch.Tensor:
        return self.log_scale.clamp(max=self.max_log).exp()


def info_nce(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    scale: torch.Tensor,
    false_negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE of ``queries [B, D]`` against ``candidates [C, D]`` (C >= B, unit vectors).

    Query ``i``'s positive is candidate ``i``; all other candidates (the other targets of the
    batch, then any extra hard negatives) are negatives, except those marked in the boolean
    ``false_negatives [B, C]`` (the same image as the positive under another index).
    """
    logits = scale * queries @ candidates.T
    if false_negatives is not None:
        logits = logits.masked_fill(false_negatives, float("-inf"))
    labels = torch.arange(queries.shape[0], device=queries.device)
    return F.cross_entropy(logits, labels)
