"""The pyramid image encoder (PMTFR's Pyramid Patcher on a CLIP-family vision tower).

The image is seen at ``M`` scales: copy ``k`` is resized to half the grid of copy ``k-1``
and patchified by the *same* patch embedding, which is the same as patchifying the original
with a patch ``2**k`` times larger. Each copy gets position embeddings interpolated to its
grid and a learned scale embedding; all tokens are concatenated into one sequence before
the transformer, so attention mixes fine detail and coarse layout.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvStem", "PyramidImageEncoder", "downscale_matrix", "pyramid_grids"]


def pyramid_grids(base_grid: int, num_scales: int) -> list[int]:
    """Token-grid side of each scale: ``base_grid``, then halved (rounded up, at least 1)."""
    if num_scales < 1:
        raise ValueError(f"num_scales must be >= 1, got {num_scales}")
    return [max(1, math.ceil(base_grid / 2**k)) for k in range(num_scales)]


def downscale_matrix(source: int, target: int) -> torch.Tensor:
    """The ``[target, source]`` matrix of antialiased bilinear resizing along one axis.

    Resizing is separable, so ``M_h @ image @ M_w.T`` equals ``F.interpolate(..., mode=
    "bilinear", antialias=True)``. Written as two matrix products it exports to ONNX (the
    TorchScript exporter has no antialiased resize) and runs as fast as the native op.
    """
    # Resizing the identity along its height gives the matrix (a width-1 basis would be
    # simpler, but the antialiased kernel mishandles inputs one pixel wide).
    basis = torch.eye(source, dtype=torch.float32).reshape(1, 1, source, source)
    resized = F.interpolate(
        basis, size=(target, source), mode="bilinear", antialias=True, align_corners=False
    )
    return resized[0, 0].contiguous()


class ConvStem(nn.Module):
    """Convolutional patchify, the "early convolutions" of Xiao et al. (2021): a 4x4 stride-4
    convolution, then stride-2 3x3 convolutions (BatchNorm, ReLU) until the grid of a
    ``patch x patch`` linear embedding is reached, and a 1x1 projection to the transformer's
    width. Channels double per stage up to that width. Trains far faster from scratch than
    a linear patch embedding; ~5% of a small ViT's compute.

    The convolutions are shared by the pyramid's scales, the BatchNorms are not (one set per
    scale): a copy at half the size has other feature statistics, and running statistics
    shared by all scales normalise none of them as training did (R@1 62.0 with shared
    running statistics vs 66.8 with per-scale ones, on the same weights).
    """

    def __init__(self, patch_size: int, hidden: int, num_scales: int = 1) -> None:
        super().__init__()
        halvings = int(math.log2(patch_size // 4)) if patch_size >= 4 else -1
        if halvings < 0 or 4 * 2**halvings != patch_size:
            raise ValueError(f"a conv stem needs a power-of-two patch size >= 4, got {patch_size}")
        widths = [max(16, hidden >> (halvings - k)) for k in range(halvings + 1)]
        self.convs = nn.ModuleList(
            nn.Conv2d(3, width, 4, stride=4, bias=False)
            if k == 0
            else nn.Conv2d(widths[k - 1], width, 3, stride=2, padding=1, bias=False)
            for k, width in enumerate(widths)
        )
        # BatchNorm rather than GroupNorm: GroupNorm trained slower (R@1 26.6 vs 32.8 at
        # equal steps). In eval mode it is a fixed per-sample affine map, so an image's
        # embedding does not depend on what it is batched with.
        self.norms = nn.ModuleList(
            nn.ModuleList(nn.BatchNorm2d(width) for width in widths) for _ in range(num_scales)
        )
        self.project = nn.Conv2d(widths[-1], hidden, 1)
        self._register_load_state_dict_pre_hook(_split_shared_norms, with_module=True)

    def forward(self, pixel_values: torch.Tensor, scale: int = 0) -> torch.Tensor:
        """``[batch, 3, H, W]`` of pyramid scale ``scale`` -> ``[batch, hidden, H / patch,
        W / patch]``."""
        # Channels-last runs these convolutions about 1.4x faster on CPU (oneDNN).
        x = pixel_values.contiguous(memory_format=torch.channels_last)
        for conv, norm in zip(self.convs, self.norms[scale], strict=True):
            x = F.relu(norm(conv(x)), inplace=True)
        return self.project(x)


def _split_shared_norms(stem: ConvStem, state_dict: dict, prefix: str, *_: object) -> None:
    """Load a stem saved before the norms were per scale (one ``nn.Sequential`` under
    ``layers``: conv, norm, ReLU per stage, then the projection): its convolutions and
    projection keep their weights and every scale starts from the one set of norms."""
    projection = 3 * len(stem.convs)
    for key in [k for k in state_dict if k.startswith(prefix + "layers.")]:
        index, name = key[len(prefix + "layers.") :].split(".", 1)
        layer, value = int(index), state_dict.pop(key)
        if layer == projection:
            state_dict[f"{prefix}project.{name}"] = value
        elif layer % 3 == 0:
            state_dict[f"{prefix}convs.{layer // 3}.{name}"] = value
        else:
            for scale in range(len(stem.norms)):
                state_dict[f"{prefix}norms.{scale}.{layer // 3}.{name}"] = value.clone()


class PyramidImageEncoder(nn.Module):
    """Multi-scale visual tokens through one CLIP or SigLIP vision transformer.

    ``vision`` is the backbone's vision transformer (``CLIPVisionTransformer`` or
    ``SiglipVisionTransformer``) and ``projection`` its map into the joint space; both are
    shared with the backbone, not copied. With one scale and no scale embedding the output
    equals the backbone's own image features.
    """

    def __init__(
        self,
        vision: nn.Module,
        projection: nn.Module,
        num_scales: int = 1,
        scale_embedding: bool = True,
        stem: str = "patch",
    ) -> None:
        super().__init__()
        self.vision = vision
        self.projection = projection
        embeddings = vision.embeddings
        self.patch_size: int = embeddings.patch_size
        self.image_size: int = embeddings.image_size
        self.grids = pyramid_grids(self.image_size // self.patch_size, num_scales)
        hidden = embeddings.embed_dim
        self.has_class_token = hasattr(embeddings, "class_embedding")
        # Zero-initialised so that a pretrained backbone starts from its own behaviour.
        self.scale_embedding = (
            nn.Parameter(torch.zeros(num_scales, hidden)) if scale_embedding else None
        )
        if stem not in ("patch", "conv"):
            raise ValueError(f"unknown stem {stem!r}; known: patch, conv")
        # The conv stem replaces the backbone's patch embedding, which then goes unused.
        self.stem = ConvStem(self.patch_size, hidden, num_scales) if stem == "conv" else None
        # Resize matrices for the native input size; derived data, so not in checkpoints.
        for k, grid in enumerate(self.grids[1:], start=1):
            matrix = downscale_matrix(self.image_size, grid * self.patch_size)
            self.register_buffer(f"downscale_{k}", matrix, persistent=False)

    @property
    def num_scales(self) -> int:
        return len(self.grids)

    def num_tokens(self) -> int:
        """Length of the token sequence the transformer sees."""
        return sum(g * g for g in self.grids) + int(self.has_class_token)

    def scale_tokens(self, hidden: torch.Tensor, scale: int = 0) -> torch.Tensor:
        """The tokens of one scale, ``[batch, grid * grid, hidden]`` in reading order, out of
        a sequence laid out as :meth:`tokens` builds it (class token first, then the scales
        from finest to coarsest)."""
        start = int(self.has_class_token) + sum(g * g for g in self.grids[:scale])
        return hidden[:, start : start + self.grids[scale] ** 2]

    def _patch_positions(self, grid: int) -> torch.Tensor:
        table = self.vision.embeddings.position_embedding.weight
        if self.has_class_token:
            table = table[1:]
        native = math.isqrt(table.shape[0])
        if grid == native:
            return table.unsqueeze(0)
        square = table.reshape(1, native, native, -1).permute(0, 3, 1, 2)
        resized = F.interpolate(square, size=(grid, grid), mode="bicubic", align_corners=False)
        return resized.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)

    def tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The concatenated multi-scale token sequence, before the transformer."""
        embeddings = self.vision.embeddings
        dtype = embeddings.patch_embedding.weight.dtype
        pixel_values = pixel_values.to(dtype)
        parts = []
        for k, grid in enumerate(self.grids):
            side = grid * self.patch_size
            scaled = pixel_values
            native = scaled.shape[-1] == scaled.shape[-2] == self.image_size
            if k > 0 and native:
                matrix = getattr(self, f"downscale_{k}").to(dtype)
                scaled = matrix @ pixel_values @ matrix.T
            elif scaled.shape[-1] != side or scaled.shape[-2] != side:
                scaled = F.interpolate(
                    pixel_values,
                    size=(side, side),
                    mode="bilinear",
                    antialias=True,
                    align_corners=False,
                )
            grid_features = (
                self.stem(scaled, k) if self.stem else embeddings.patch_embedding(scaled)
            )
            patches = grid_features.flatten(2).transpose(1, 2)
            patches = patches + self._patch_positions(grid)
            if self.scale_embedding is not None:
                patches = patches + self.scale_embedding[k]
            parts.append(patches)
        if self.has_class_token:
            cls = embeddings.class_embedding + embeddings.position_embedding.weight[0]
            parts.insert(0, cls.expand(pixel_values.shape[0], 1, -1))
        return torch.cat(parts, dim=1)

    def encode(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image features in the joint space (not normalised) ``[batch, dim]`` and the
        transformer's output tokens ``[batch, tokens, hidden]`` (for token-level fusion)."""
        vision = self.vision
        hidden = self.tokens(pixel_values)
        if hasattr(vision, "pre_layrnorm"):  # CLIP: pre-norm, pool the class token
            hidden = vision.pre_layrnorm(hidden)
            hidden = vision.encoder(inputs_embeds=hidden).last_hidden_state
            pooled = vision.post_layernorm(hidden[:, 0, :])
        else:  # SigLIP: post-norm, attention-pooling head over all tokens
            hidden = vision.post_layernorm(vision.encoder(inputs_embeds=hidden).last_hidden_state)
            pooled = vision.head(hidden)
        return self.projection(pooled), hidden

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Image features in the joint space (not normalised), shape ``[batch, dim]``."""
        return self.encode(pixel_values)[0]
