"""The vision stage's read-out: what lies under each of the tower's merged tokens, and where.

``what`` is the scene loss's :class:`~cir_module.training.scene_loss.CellTokenHead` (empty or
shape, colour, size, texture per cell). ``where`` classifies each token's cell index. Qwen2-VL's
tower has rotary positions only, so its tokens say what they show but not where they are: a
linear probe of the cell index on the tokens of a tower trained on ``what`` alone read 6.4 %
(chance 6.25 %), and the language model then has to find rows and columns through relative
positions whose origin moves with the text before the image. Asked ``where`` as well, the tower
writes its position into each token.

``match`` is the judge stage's: read on the language model's states at the candidate image's
tokens, whether that cell shows what the target must show there. It is dense supervision of
the comparison a YES / NO answer needs (one bit per row alone did not teach it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cir_module.training.scene_loss import CellTokenHead, SceneVocabulary, cell_loss

__all__ = ["CellReader"]


class CellReader(nn.Module):
    """Per merged token: its cell's content (``what``) and its cell index (``where``); per
    candidate token in the language model, whether its cell differs from the target's
    (``match``, a logit)."""

    def __init__(self, hidden: int, vocabulary: SceneVocabulary) -> None:
        super().__init__()
        self.vocabulary = vocabulary
        self.what = CellTokenHead(hidden, vocabulary)
        self.where = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, vocabulary.cells))
        self.match = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, 1))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As :meth:`nn.Module.load_state_dict`; a read-out saved before ``match`` existed
        (every stage folder up to the judge) loads with ``match`` freshly initialised."""
        if strict and not any(k.startswith("match.") for k in state_dict):
            state_dict = {
                **state_dict,
                **{f"match.{k}": v for k, v in self.match.state_dict().items()},
            }
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def losses(
        self, tokens: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(what loss, where loss, what logits)`` for tokens ``[n, cells, hidden]`` and
        labels ``[n, cells, attributes]``."""
        logits = self.what.logits(tokens)
        what = cell_loss(logits, labels, self.vocabulary.class_sizes)
        cells = torch.arange(self.vocabulary.cells, device=tokens.device).repeat(len(tokens))
        where = F.cross_entropy(self.where(tokens).flatten(0, 1), cells)
        return what, where, logits

    def where_accuracy(self, tokens: torch.Tensor) -> float:
        cells = torch.arange(self.vocabulary.cells, device=tokens.device)
        return (self.where(tokens).argmax(-1) == cells).float().mean().item()
