"""The composed-query fusion head: reference image + modification text -> one query vector."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ComposedFusionHead"]


class ComposedFusionHead(nn.Module):
    """``normalize(img + txt + MLP([img, txt]))`` with the MLP's last layer zero-initialised.

    At initialisation it is exactly the normalised sum of the two unit embeddings, a
    zero-shot baseline that already works with any CLIP-family backbone; training moves the
    residual away from zero.
    """

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(2 * dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, dim),
        )
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """Both inputs unit-normalised, shape ``[batch, dim]``; returns unit vectors."""
        residual = self.mlp(torch.cat([image_embeds, text_embeds], dim=-1))
        return F.normalize(image_embeds + text_embeds + residual, dim=-1)
