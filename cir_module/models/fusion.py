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


class SelfAttention(nn.Module):
    """Multi-head self-attention with a key padding mask, parameters named as in
    ``nn.MultiheadAttention`` (``in_proj_weight``, ``in_proj_bias``, ``out_proj``).

    Written out rather than taken from ``nn.MultiheadAttention`` because that module's
    traced graph fixes the sequence length, which must stay dynamic in an ONNX export.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor) -> torch.Tensor:
        """``x [batch, seq, width]``; ``key_padding_mask [batch, seq]``, True = ignore."""
        batch, seq, width = x.shape
        q, k, v = (
            F.linear(x, self.in_proj_weight, self.in_proj_bias)
            .reshape(batch, seq, 3, self.heads, width // self.heads)
            .permute(2, 0, 3, 1, 4)
        )
        keep = ~key_padding_mask[:, None, None, :]
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        return self.out_proj(attended.transpose(1, 2).reshape(batch, seq, width))


class PreNormEncoderLayer(nn.Module):
    """A pre-norm transformer layer (ReLU MLP, no dropout), state-dict compatible with
    ``nn.TransformerEncoderLayer(width, heads, 4 * width, norm_first=True)``."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.self_attn = SelfAttention(width, heads)
        self.linear1 = nn.Linear(width, 4 * width)
        self.linear2 = nn.Linear(4 * width, width)
        self.norm1 = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x), key_padding_mask)
        return x + self.linear2(F.relu(self.linear1(self.norm2(x))))


class PreNormEncoder(nn.Module):
    """A stack of :class:`PreNormEncoderLayer` (parameters under ``layers.<i>``)."""

    def __init__(self, width: int, heads: int, depth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(PreNormEncoderLayer(width, heads) for _ in range(depth))

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, key_padding_mask)
        return x


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
        self.encoder = PreNormEncoder(width, heads, layers)
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
        hidden = self.encoder(sequence, padding)
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
