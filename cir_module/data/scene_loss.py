"""The scene loss: an auxiliary loss (:mod:`cir_module.training.auxiliary`, registered as
``scene``) that makes the retrieval embedding spell out the synthetic benchmark's scenes.

In-batch InfoNCE saturates early on the synthetic benchmark (random scenes in a batch differ
in many objects), while the gallery's hard cases differ in one object's shape or size. Where
a data set describes its images (the synthetic benchmark's scene graphs; dense captions
would be another source), a small head reads every cell's object (empty or shape, colour,
size) back from an embedding. It is applied to the image embeddings of every image in the
batch and to each composed query, labelled with its *target's* scene, so the fusion head is
told exactly what the edited scene must contain.

A second, denser form reads the cells from the image *tokens* (:class:`CellTokenHead`): the
finest pyramid scale's token grid is average-pooled onto the scene's 3x3 grid and one shared
linear map classifies each cell. A pooled embedding is asked to carry nine objects at once and
a probe of it read shapes at chance; local tokens only have to say what lies under them, which
gives the image tower a per-object shape signal from the first step.

:class:`SceneLoss` holds both heads and weighs the two readings (weights ``embedding`` and
``tokens``; ``cir train --scene-loss`` and ``--token-scene-loss``). The heads are training aids
only: they are kept in the trainer state (for ``--resume``), never in the checkpoint the
service loads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from cir_module.data.benchmark import load_scene_graphs
from cir_module.data.shapes import CELL_NAMES, COLORS, SHAPES, SIZES, Scene
from cir_module.models import CIRModel
from cir_module.training.auxiliary import BatchStates, register_auxiliary_loss

__all__ = ["CellTokenHead", "SceneHead", "SceneLabels", "SceneLoss"]

GRID_CELLS = len(CELL_NAMES)
GRID_SIDE = math.isqrt(GRID_CELLS)
IGNORE = -100  # cross_entropy's ignore_index: colour and size of an empty cell
CLASS_SIZES = (len(SHAPES) + 1, len(COLORS), len(SIZES))  # shape-or-empty, colour, size


def cell_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over the three attributes of the mean cross-entropy over cells: ``logits
    [n, 9, sum(CLASS_SIZES)]`` against ``labels [n, 9, 3]`` (colour and size of empty cells
    ignored)."""
    parts = logits.split(CLASS_SIZES, dim=-1)
    labels = labels.to(logits.device)
    return sum(
        F.cross_entropy(part.reshape(-1, part.shape[-1]), labels[..., i].reshape(-1))
        for i, part in enumerate(parts)
    )


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
        # Unit embeddings have coordinates near 1/sqrt(dim): the LayerNorm rescales them so
        # that the head learns at the trunk's learning rate.
        self.mlp = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Linear(hidden, GRID_CELLS * sum(CLASS_SIZES)),
        )

    def loss(self, embeds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over cells of ``embeds [n, dim]`` against ``labels [n, 9, 3]``
        (shape-or-empty, then colour and size of the occupied cells)."""
        return cell_loss(self.mlp(embeds).reshape(-1, GRID_CELLS, sum(CLASS_SIZES)), labels)


class CellTokenHead(nn.Module):
    """Every cell's logits from a square grid of image tokens ``[n, side * side, hidden]``:
    the grid is average-pooled onto the 3x3 scene grid (cells overlap where the side is not
    a multiple of 3) and one linear map, shared by the cells, classifies each."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.classify = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, sum(CLASS_SIZES)))

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[n, side * side, hidden]`` -> ``[n, 9, sum(CLASS_SIZES)]``, cells in reading order."""
        n, count, hidden = tokens.shape
        side = math.isqrt(count)
        if side * side != count:
            raise ValueError(f"{count} tokens do not form a square grid")
        grid = tokens.transpose(1, 2).reshape(n, hidden, side, side)
        cells = F.adaptive_avg_pool2d(grid, GRID_SIDE).flatten(2).transpose(1, 2)
        return self.classify(cells)

    def loss(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """:func:`cell_loss` of the tokens' cell logits against ``labels [n, 9, 3]``."""
        return cell_loss(self.logits(tokens), labels)


class SceneLoss:
    """The weighted sum of both readings: :class:`SceneHead` on every image embedding of the
    batch (each query against its target's scene) and :class:`CellTokenHead` on the
    candidates' token grids, cell by cell. Both heads exist whichever weights are set (their
    parameters are in the optimizer and the trainer state either way)."""

    WEIGHTS = ("embedding", "tokens")

    def __init__(
        self, weights: Mapping[str, float], model: CIRModel, data: str, split: str
    ) -> None:
        unknown = set(weights) - set(self.WEIGHTS)
        if unknown:
            raise ValueError(f"scene loss weights are {self.WEIGHTS}, not {sorted(unknown)}")
        self.weight = weights.get("embedding", 0.0)
        self.token_weight = weights.get("tokens", 0.0)
        self.labels = SceneLabels.load(data, split)
        # The keys are those of trainer_state.pt since the heads were added.
        self.heads: dict[str, nn.Module] = {
            "scene_head": SceneHead(model.dim),
            "token_head": CellTokenHead(model.image_encoder.vision.embeddings.embed_dim),
        }

    def __call__(self, states: BatchStates) -> torch.Tensor:
        """Every image embedding against its own scene, each query against its target's;
        the candidates' token grids against their own scenes, cell by cell."""
        batch, names = states.batch, states.candidate_names
        loss = torch.zeros((), device=states.queries.device)
        if self.weight:
            embeds = torch.cat([states.queries, states.references, states.candidates])
            labels = self.labels(batch.targets + batch.references + names)
            loss = loss + self.weight * self.heads["scene_head"].loss(embeds, labels)
        if self.token_weight:
            labels = self.labels(names)
            tokens = states.candidate_tokens
            loss = loss + self.token_weight * self.heads["token_head"].loss(tokens, labels)
        return loss


register_auxiliary_loss("scene", SceneLoss)
