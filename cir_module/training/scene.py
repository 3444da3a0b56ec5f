"""Scene supervision: an auxiliary loss that makes the retrieval embedding spell out the scene.

In-batch InfoNCE saturates early on the synthetic benchmark (random scenes in a batch differ
in many objects), while the gallery's hard cases differ in one object's shape or size. Where
a data set describes its images (the synthetic benchmark's scene graphs; dense captions
would be another source), a small head reads every cell's object (empty or shape, colour,
size) back from an embedding. It is applied to the image embeddings of every image in the
batch and to each composed query, labelled with its *target's* scene, so the fusion head is
told exactly what the edited scene must contain.

The head is a training aid only: it is kept in the trainer state (for ``--resume``), never
in the checkpoint the service loads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cir_module.data.benchmark import load_scene_graphs
from cir_module.data.shapes import CELL_NAMES, COLORS, SHAPES, SIZES, Scene

__all__ = ["SceneHead", "SceneLabels"]

GRID_CELLS = len(CELL_NAMES)
IGNORE = -100  # cross_entropy's ignore_index: colour and size of an empty cell


class SceneLabels:
    """Per-cell class labels ``[cells, 3]`` (shape or empty, colour, size) per image name."""

    def __init__(self, scenes: dict[str, Scene]) -> None:
        self._rows = {name: self.encode(scene) for name, scene in scenes.items()}

    @classmethod
    def load(cls, root: str, split: str) -> SceneLabels:
        """The labels of one split of the synthetic benchmark (its scene-graph file)."""
        return cls(load_scene_graphs(root, split))

    @staticmethod
    def encode(scene: Scene) -> torch.Tensor:
        """``[9, 3]`` long: shape index + 1 (0 = empty), colour and size indices (ignored
        where the cell is empty)."""
        rows = torch.tensor([[0, IGNORE, IGNORE]] * GRID_CELLS)
        colors = list(COLORS)
        for obj in scene:
            rows[obj.cell] = torch.tensor(
                [SHAPES.index(obj.shape) + 1, colors.index(obj.color), SIZES.index(obj.size)]
            )
        return rows

    def __call__(self, names: list[str]) -> torch.Tensor:
        """``[len(names), 9, 3]`` labels for the named images."""
        return torch.stack([self._rows[n] for n in names])


class SceneHead(nn.Module):
    """An MLP from a unit embedding to every cell's shape-or-empty, colour and size logits."""

    def __init__(self, dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.sizes = (len(SHAPES) + 1, len(COLORS), len(SIZES))
        # Unit embeddings have coordinates near 1/sqrt(dim): the LayerNorm rescales them so
        # that the head learns at the trunk's learning rate.
        self.mlp = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Linear(hidden, GRID_CELLS * sum(self.sizes)),
        )

    def loss(self, embeds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over cells of ``embeds [n, dim]`` against ``labels [n, 9, 3]``
        (shape-or-empty, then colour and size of the occupied cells)."""
        logits = self.mlp(embeds).reshape(-1, GRID_CELLS, sum(self.sizes))
        parts = logits.split(self.sizes, dim=-1)
        labels = labels.to(embeds.device)
        return sum(
            F.cross_entropy(part.reshape(-1, part.shape[-1]), labels[..., i].reshape(-1))
            for i, part in enumerate(parts)
        )
