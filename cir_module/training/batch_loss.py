"""One batch's training loss: the composed queries against the batch's candidates (InfoNCE),
plus the run's auxiliary losses (:mod:`cir_module.training.auxiliary`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from cir_module.models import CIRModel
from cir_module.training.auxiliary import AuxiliaryLoss, BatchStates
from cir_module.training.data import Batch, ImageStore
from cir_module.training.losses import LogitScale, info_nce

__all__ = ["BatchLoss", "TextCache"]


class TextCache:
    """Text states per caption, computed once when the text tower is frozen."""

    def __init__(self, model: CIRModel, captions: list[str], batch_size: int = 256) -> None:
        # Encoded shortest first, so a batch pads to texts of about its own length rather
        # than to the longest of a random draw.
        captions = sorted(captions, key=len)
        self.index = {c: i for i, c in enumerate(captions)}
        embeds, tokens, masks = [], [], []
        length = 0
        with torch.no_grad():
            for i in range(0, len(captions), batch_size):
                ids = model.tokenize(captions[i : i + batch_size])
                e, t, m = model.encode_text_states(**ids)
                embeds.append(e)
                tokens.append(t.half())
                masks.append(m)
                length = max(length, t.shape[1])
        pad = lambda x: nn.functional.pad(x, (0, 0, 0, length - x.shape[1]))  # noqa: E731
        self.embeds = torch.cat(embeds)
        self.tokens = torch.cat([pad(t) for t in tokens])
        self.masks = torch.cat([nn.functional.pad(m, (0, length - m.shape[1])) for m in masks])

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, ...]:
        rows = torch.tensor([self.index[c] for c in captions])
        mask = self.masks[rows]
        width = int(mask.sum(1).max())  # trim the padding this batch does not need
        return self.embeds[rows], self.tokens[rows, :width].float(), mask[:, :width]


@dataclass
class BatchLoss:
    """The loss of one :class:`Batch`: each composed query (reference + modification text)
    must find its target among the batch's targets and hard negatives.

    ``text_cache``: the frozen text tower's states (None: encode the texts each time).
    ``corpus`` (image name -> caption): every candidate becomes the enriched vector Weaviate
    stores, ``(1 - caption_weight) * image + caption_weight * caption text``.
    ``reference_negatives``: the references are negatives too.
    ``auxiliary``: losses added to InfoNCE, each given the batch's :class:`BatchStates`.
    """

    model: CIRModel
    store: ImageStore
    text_cache: TextCache | None
    logit_scale: LogitScale
    device: str
    reference_negatives: bool = False
    corpus: dict[str, str] | None = None
    caption_weight: float = 0.5
    auxiliary: Sequence[AuxiliaryLoss] = ()

    def __call__(self, batch: Batch) -> torch.Tensor:
        model = self.model
        text_states = self._text(batch)
        queries, references = model.compose(self._pixels(batch.references), *text_states)
        names = batch.targets + batch.negatives
        candidates, tokens = model.encode_image_states(self._pixels(names))
        if references is None and (self.auxiliary or self.reference_negatives):
            # A model that reads the reference together with the text (the lvlm family)
            # has no reference embedding as a by-product: encode it when it is needed.
            references = model.encode_image(self._pixels(batch.references))
        # Losses of the model's own (the lvlm family's prompt-pool pull loss).
        extra = model.regularization() if hasattr(model, "regularization") else 0.0
        if self.auxiliary:
            finest = model.image_encoder.scale_tokens(tokens, 0)
            states = BatchStates(batch, queries, references, candidates, names, finest)
            extra = extra + sum(loss(states) for loss in self.auxiliary)
        if self.corpus is not None:
            candidates = self._with_captions(candidates, names)
        if self.reference_negatives:
            names = names + batch.references
            candidates = torch.cat([candidates, references])
        # The same image under another index is not a negative of this query.
        same = torch.tensor([[n == t for n in names] for t in batch.targets], device=self.device)
        same[torch.arange(len(batch.targets)), torch.arange(len(batch.targets))] = False
        return info_nce(queries, candidates, self.logit_scale(), false_negatives=same) + extra

    def _pixels(self, names: list[str]) -> torch.Tensor:
        return torch.from_numpy(self.store.pixels(names)).to(self.device)

    def _text(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        """The modification texts' states (embedding, tokens, mask)."""
        if self.text_cache is not None:
            return tuple(t.to(self.device) for t in self.text_cache(batch.captions))
        return self.model.encode_text_states(**self.model.tokenize(batch.captions))

    def _with_captions(self, candidates: torch.Tensor, names: list[str]) -> torch.Tensor:
        texts = [self.corpus[n] for n in names]
        if self.text_cache is not None:
            captions = self.text_cache(texts)[0]
        else:
            captions = self.model.encode_text(**self.model.tokenize(texts))
        mixed = (1 - self.caption_weight) * candidates + self.caption_weight * captions
        return torch.nn.functional.normalize(mixed, dim=-1)
