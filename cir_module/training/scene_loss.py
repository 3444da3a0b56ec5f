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
finest pyramid scale's token grid is average-pooled onto the scene's grid (3x3 in the base
tier, 4x4 in the hard one) and one shared linear map classifies each cell. A pooled
embedding is asked to carry nine objects at once and a probe of it read shapes at chance;
local tokens only have to say what lies under them, which gives the image tower a per-object
shape signal from the first step.

:class:`SceneLoss` holds both heads and weighs the two readings (weights ``embedding`` and
``tokens``; ``cir train --scene-loss`` and ``--token-scene-loss``). The heads are training aids
only: they are kept in the trainer state (for ``--resume``), never in the checkpoint the
service loads.

What a cell holds comes from the benchmark's tier (:class:`SceneVocabulary`, from
:attr:`cir_module.data.benchmark.Tier.attributes`): the base tier's shape-or-empty, colour and
size; the hard tier adds a third size and a texture.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cir_module.data.benchmark import TIERS, Tier, load_scene_graphs, tier_of
from cir_module.models import CIRModel
from cir_module.training.auxiliary import BatchStates, register_auxiliary_loss

__all__ = ["CellTokenHead", "SceneHead", "SceneLabels", "SceneLoss", "SceneVocabulary"]

IGNORE = -100  # cross_entropy's ignore_index: the other attributes of an empty cell


@dataclass(frozen=True)
class SceneVocabulary:
    """What a scene head classifies per cell: the number of cells and each attribute's values.
    The first attribute gets one more class, 0, for an empty cell."""

    cells: int
    attributes: tuple[tuple[str, tuple[str, ...]], ...]

    @classmethod
    def of(cls, tier: Tier) -> SceneVocabulary:
        return cls(tier.grid_cells, tier.attributes)

    @property
    def side(self) -> int:
        """The grid's side (cells are a square grid in reading order)."""
        return math.isqrt(self.cells)

    @property
    def class_sizes(self) -> tuple[int, ...]:
        """Classes per attribute: the first one's values plus empty, then the others'."""
        sizes = [len(values) for _, values in self.attributes]
        return (sizes[0] + 1, *sizes[1:])


BASE = SceneVocabulary.of(TIERS["base"])
# The base tier's, kept as module names for scripts that probe the shipped model.
GRID_CELLS, GRID_SIDE, CLASS_SIZES = BASE.cells, BASE.side, BASE.class_sizes


def cell_loss(
    logits: torch.Tensor, labels: torch.Tensor, class_sizes: tuple[int, ...] = CLASS_SIZES
) -> torch.Tensor:
    """Sum over the attributes of the mean cross-entropy over cells: ``logits
    [n, cells, sum(class_sizes)]`` against ``labels [n, cells, len(class_sizes)]`` (the other
    attributes of empty cells ignored)."""
    parts = logits.split(tuple(class_sizes), dim=-1)
    labels = labels.to(logits.device)
    return sum(
        F.cross_entropy(part.reshape(-1, part.shape[-1]), labels[..., i].reshape(-1))
        for i, part in enumerate(parts)
    )


class SceneLabels:
    """Per-cell class labels ``[cells, attributes]`` (e.g. shape or empty, colour, size) per
    image name."""

    def __init__(self, scenes: dict, vocabulary: SceneVocabulary = BASE) -> None:
        self.vocabulary = vocabulary
        self._rows = {name: self.encode(scene, vocabulary) for name, scene in scenes.items()}

    @classmethod
    def load(cls, root: str, split: str) -> SceneLabels:
        """The labels of one split of the synthetic benchmark (its scene-graph file), in the
        vocabulary of the folder's tier."""
        return cls(load_scene_graphs(root, split), SceneVocabulary.of(tier_of(root)))

    @staticmethod
    def encode(scene, vocabulary: SceneVocabulary = BASE) -> torch.Tensor:
        """``[cells, attributes]`` long: the first attribute's index + 1 (0 = empty), the
        others' indices (ignored where the cell is empty)."""
        attributes = vocabulary.attributes
        rows = torch.tensor([[0] + [IGNORE] * (len(attributes) - 1)] * vocabulary.cells)
        for obj in scene:
            index = [values.index(getattr(obj, name)) for name, values in attributes]
            rows[obj.cell] = torch.tensor([index[0] + 1, *index[1:]])
        return rows

    def __call__(self, names: list[str]) -> torch.Tensor:
        """``[len(names), cells, attributes]`` labels for the named images."""
        return torch.stack([self._rows[n] for n in names])


class SceneHead(nn.Module):
    """An MLP from a unit embedding to every cell's logits (shape-or-empty, colour, size...)."""

    def __init__(self, dim: int, hidden: int = 256, vocabulary: SceneVocabulary = BASE) -> None:
        super().__init__()
        self.vocabulary = vocabulary
        # Unit embeddings have coordinates near 1/sqrt(dim): the LayerNorm rescales them so
        # that the head learns at the trunk's learning rate.
        self.mlp = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Linear(hidden, vocabulary.cells * sum(vocabulary.class_sizes)),
        )

    def loss(self, embeds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over cells of ``embeds [n, dim]`` against ``labels [n, cells,
        attributes]`` (shape-or-empty, then the other attributes of the occupied cells)."""
        sizes = self.vocabulary.class_sizes
        logits = self.mlp(embeds).reshape(-1, self.vocabulary.cells, sum(sizes))
        return cell_loss(logits, labels, sizes)


class CellTokenHead(nn.Module):
    """Every cell's logits from a square grid of image tokens ``[n, side * side, hidden]``:
    the grid is average-pooled onto the scene grid (cells overlap where the token side is not
    a multiple of the grid's) and one linear map, shared by the cells, classifies each."""

    def __init__(self, hidden: int, vocabulary: SceneVocabulary = BASE) -> None:
        super().__init__()
        self.vocabulary = vocabulary
        classes = sum(vocabulary.class_sizes)
        self.classify = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, classes))

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[n, side * side, hidden]`` -> ``[n, cells, classes]``, cells in reading order."""
        n, count, hidden = tokens.shape
        side = math.isqrt(count)
        if side * side != count:
            raise ValueError(f"{count} tokens do not form a square grid")
        grid = tokens.transpose(1, 2).reshape(n, hidden, side, side)
        cells = F.adaptive_avg_pool2d(grid, self.vocabulary.side).flatten(2).transpose(1, 2)
        return self.classify(cells)

    def loss(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """:func:`cell_loss` of the tokens' cell logits against ``labels [n, cells, attrs]``."""
        return cell_loss(self.logits(tokens), labels, self.vocabulary.class_sizes)


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
        vocabulary = self.labels.vocabulary
        hidden = model.image_encoder.vision.embeddings.embed_dim
        # The keys are those of trainer_state.pt since the heads were added.
        self.heads: dict[str, nn.Module] = {
            "scene_head": SceneHead(model.dim, vocabulary=vocabulary),
            "token_head": CellTokenHead(hidden, vocabulary),
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
