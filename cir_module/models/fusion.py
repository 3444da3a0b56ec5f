"""Composed-query fusion heads: reference image + modification text -> one query vector.

Every head computes ``normalize(img + txt + residual)`` with the residual's last layer
zero-initialised: untrained, a head is the normalised sum of the two unit embeddings, a
zero-shot baseline that already works with any CLIP-family backbone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cir_module.models.config import FusionSpec

__all__ = ["ComposedFusionHead", "CrossFusionHead", "FixedQuery", "FusionHead", "build_fusion"]


def _zero_last(layer: nn.Linear) -> nn.Linear:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class FusionHead(nn.Module):
    """Base of the trained heads: ``normalize(img + txt + self.residual(...))``."""

    needs_tokens = False

    def residual(
        self,
        image_embeds: torch.Tensor,
        text_embeds: torch.Tensor,
        image_tokens: torch.Tensor | None,
        text_tokens: torch.Tensor | None,
        text_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self,
        image_embeds: torch.Tensor,
        text_embeds: torch.Tensor,
        image_tokens: torch.Tensor | None = None,
        text_tokens: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Unit embeddings ``[batch, dim]`` (plus token states for heads that need them) ->
        unit composed queries ``[batch, dim]``."""
        residual = self.residual(image_embeds, text_embeds, image_tokens, text_tokens, text_mask)
        return F.normalize(image_embeds + text_embeds + residual, dim=-1)


class ComposedFusionHead(FusionHead):
    """Residual MLP over the concatenated global embeddings (``kind: mlp``)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(2 * dim, hidden_dim), nn.GELU(), _zero_last(nn.Linear(hidden_dim, dim))
        )

    def residual(
        self, image_embeds: torch.Tensor, text_embeds: torch.Tensor, *_: object
    ) -> torch.Tensor:
        return self.mlp(torch.cat([image_embeds, text_embeds], dim=-1))


class CrossFusionHead(FusionHead):
    """A small transformer over [query token; reference-image tokens; text tokens] (``kind:
    cross``): the modification can address a region or one object of the reference, which
    two pooled vectors cannot express."""

    needs_tokens = True

    def __init__(
        self, dim: int, image_hidden: int, text_hidden: int, width: int, layers: int, heads: int
    ) -> None:
        super().__init__()
        self.image_in = nn.Linear(image_hidden, width)
        self.text_in = nn.Linear(text_hidden, width)
        self.query = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.type_embedding = nn.Parameter(torch.zeros(3, width))  # query, image, text
        layer = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(width), _zero_last(nn.Linear(width, dim)))

    def residual(
        self,
        image_embeds: torch.Tensor,
        text_embeds: torch.Tensor,
        image_tokens: torch.Tensor | None,
        text_tokens: torch.Tensor | None,
        text_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        if image_tokens is None or text_tokens is None or text_mask is None:
            raise ValueError("the cross fusion head needs image tokens, text tokens and mask")
        batch = image_embeds.shape[0]
        sequence = torch.cat(
            [
                self.query.expand(batch, 1, -1) + self.type_embedding[0],
                self.image_in(image_tokens) + self.type_embedding[1],
                self.text_in(text_tokens) + self.type_embedding[2],
            ],
            dim=1,
        )
        keep = text_mask.new_ones(batch, 1 + image_tokens.shape[1]).bool()
        padding = ~torch.cat([keep, text_mask.bool()], dim=1)
        hidden = self.encoder(sequence, src_key_padding_mask=padding)
        return self.out(hidden[:, 0])


class FixedQuery(FusionHead):
    """Baselines without parameters: ``image`` (the reference alone), ``text`` (the
    modification alone) and ``sum`` (their normalised sum, never trained away)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(
        self, image_embeds: torch.Tensor, text_embeds: torch.Tensor, *_: object, **__: object
    ) -> torch.Tensor:
        if self.kind == "image":
            return image_embeds
        if self.kind == "text":
            return text_embeds
        return F.normalize(image_embeds + text_embeds, dim=-1)


def build_fusion(spec: FusionSpec, dim: int, image_hidden: int, text_hidden: int) -> nn.Module:
    """The head named by ``spec.kind``: ``mlp``, ``cross``, or a baseline (``image``,
    ``text``, ``sum``)."""
    if spec.kind in ("image", "text", "sum"):
        return FixedQuery(spec.kind)
    if spec.kind == "mlp":
        return ComposedFusionHead(dim, spec.hidden_dim)
    if spec.kind == "cross":
        return CrossFusionHead(
            dim, image_hidden, text_hidden, spec.hidden_dim, spec.layers, spec.heads
        )
    raise ValueError(f"unknown fusion kind {spec.kind!r}; known: mlp, cross, image, text, sum")
