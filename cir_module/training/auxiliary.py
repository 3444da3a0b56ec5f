"""Auxiliary losses: extra loss terms that a data set adds to the trainer's InfoNCE.

A data set that knows more about its images than the triplets say (the synthetic benchmark's
scene graphs, for one) can supervise the model with it. Such a loss is an
:class:`AuxiliaryLoss`: a few heads of its own and a function of one batch's embeddings
(:class:`BatchStates`). A run asks for it by name and weights in
``TrainConfig.auxiliary_losses`` (``{name: {weight name: weight}}``); the trainer then

- builds it once, with :func:`build_auxiliary_loss`, unless all its weights are zero;
- trains its heads with the model's optimizer;
- adds its value to every batch's InfoNCE loss;
- keeps its heads in ``trainer_state.pt`` under the names the loss gives them (for
  ``--resume``), never in the checkpoint the service loads.

Where the names come from: a loss registers a factory under a name with
:func:`register_auxiliary_loss`, in the module that defines it. So that the trainer imports
no data set's loss at module level, :data:`KNOWN_LOSSES` names that module for the losses of
this package, and :func:`build_auxiliary_loss` imports it the first time a run asks for the
name. Known today:

- ``scene`` (:mod:`cir_module.training.scene_loss`): every grid cell's object read back from
  the embeddings (weight ``embedding``) and from the image tokens (weight ``tokens``); the
  CLI's ``--scene-loss`` and ``--token-scene-loss``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from cir_module.models import CIRModel
from cir_module.training.data import Batch

__all__ = [
    "KNOWN_LOSSES",
    "AuxiliaryLoss",
    "AuxiliaryLossFactory",
    "BatchStates",
    "build_auxiliary_loss",
    "register_auxiliary_loss",
]


@dataclass
class BatchStates:
    """What the model computed on one batch, as an auxiliary loss sees it."""

    batch: Batch
    queries: torch.Tensor  # [B, dim] composed queries (unit vectors)
    references: torch.Tensor  # [B, dim] the references' image embeddings
    candidates: torch.Tensor  # [C, dim] image embeddings of the targets, then hard negatives
    candidate_names: list[str]  # the C candidates' image names
    candidate_tokens: torch.Tensor  # [C, grid * grid, hidden] their finest-scale tokens


class AuxiliaryLoss(Protocol):
    """A weighted loss term with heads of its own (training aids, not part of the model)."""

    # Head name -> module. The names are the keys of the heads in trainer_state.pt.
    heads: dict[str, nn.Module]

    def __call__(self, states: BatchStates) -> torch.Tensor:
        """The weighted loss of one batch (a scalar)."""
        ...


# Called with the run's weights for the loss, the model (for its sizes), and the data root
# and split the run trains on.
AuxiliaryLossFactory = Callable[[Mapping[str, float], CIRModel, str, str], AuxiliaryLoss]

# Name -> the module that registers it (imported on first use).
KNOWN_LOSSES: dict[str, str] = {"scene": "cir_module.training.scene_loss"}

_registry: dict[str, AuxiliaryLossFactory] = {}


def register_auxiliary_loss(name: str, factory: AuxiliaryLossFactory) -> None:
    """Make ``name`` usable in ``TrainConfig.auxiliary_losses``."""
    _registry[name] = factory


def build_auxiliary_loss(
    name: str, weights: Mapping[str, float], model: CIRModel, data: str, split: str
) -> AuxiliaryLoss:
    """The auxiliary loss registered as ``name``, built for ``model`` on ``data``/``split``
    with ``weights``; its heads are on the CPU."""
    if name not in _registry and name in KNOWN_LOSSES:
        importlib.import_module(KNOWN_LOSSES[name])
    if name not in _registry:
        known = sorted(set(_registry) | set(KNOWN_LOSSES))
        raise ValueError(f"unknown auxiliary loss {name!r}; known: {', '.join(known)}")
    return _registry[name](weights, model, data, split)
