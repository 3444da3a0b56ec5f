"""Change-verifying reranking: the model captions the reference and each candidate, and
judges whether what changed between the two captions is what the modification asks.

Per query (the shared "prefix", once for all its candidates): the reference's caption
(``DESCRIBE_PROMPT``, greedy). Per candidate: its caption (kept in a bounded cache, since a
gallery's images come back across queries), the change list between the two captions
(:func:`~cir_module.vlm.changes.description_changes`), and P(YES) of ``VERIFY_PROMPT``: the
reference's caption, the modification and that change list, text only. The score is P(YES),
fused with the first-stage cosine as every reranker's is. A folder trained with the per-change
read-out (``--asked-weight``) also answers, at the last token of each change, whether the
modification asks for it; its score is P(YES) times the lowest of those (``asked_readout``): a
candidate with one change nobody asked for scores low however plausible the rest looks.

This is what a ``cir vlm train --stage verify`` folder is served as (its
``cir_reranker.json`` says ``"verify": "changes"``). It splits CIR-CoT's reasoning into what
the model sees (captions) and what it judges (a short list of changes), where the P(YES)
judge over two images had to find the changes itself. PMTFR's injection applies as to the
image judge: RAug-Rep read in the verify prompt's shared half (``cir raug extract --form
prompt``), added at its first token in every chosen layer (:class:`Steering`); docs/results.md
measures it. What does not need torch (captions cached, change
lists, the shared half of the prompt run once) is :mod:`cir_module.rerank.verification`,
which the onnxruntime verifier shares.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from cir_module.rerank.base import VisionLanguageScorer
from cir_module.rerank.registry import register_reranker
from cir_module.rerank.steering import Steering
from cir_module.rerank.verification import (
    ChangeVerification,
    Row,
    VerifiedQuery,
    right_padded,
    verify_row,
)
from cir_module.vlm.prompt import DESCRIBE_PROMPT

__all__ = ["ChangeVerifyingReranker", "VerifiedQuery", "verify_row"]


@register_reranker("changes", title="change verification", steered=True)
class ChangeVerifyingReranker(Steering, ChangeVerification, VisionLanguageScorer):
    """Scores candidates by P(YES) that the changes between two captions do what the
    modification asks (torch), optionally steered by RAug-Rep injection."""

    def __init__(
        self,
        *args,
        describe_tokens: int = 256,
        caption_cache: int = 8192,
        differ: str | None = None,
        change_wording: str | None = None,
        asked_readout: bool = False,
        raug: torch.Tensor | None = None,
        alpha: float = 0.6,
        layers: str | Sequence[int] = "all",
        rationale: bool = False,
        **kwargs,
    ) -> None:
        if rationale:
            raise ValueError(
                "a change verifier writes no rationale of its own: its reasoning is the change "
                "list between two captions"
            )
        VisionLanguageScorer.__init__(self, *args, **kwargs)
        self.setup_steering(raug, alpha, layers)
        self.setup_verification(
            differ=differ,
            change_wording=change_wording,
            asked_readout=asked_readout,
            describe_tokens=describe_tokens,
            caption_cache=caption_cache,
        )

    def describe(self) -> dict:
        return {
            **VisionLanguageScorer.describe(self),
            **self.describe_verification(),
            **self.describe_steering(),
        }

    @torch.inference_mode()
    def write_captions(self, images: Sequence[Image.Image]) -> list[str]:
        return self.generate(DESCRIBE_PROMPT, images, self.describe_tokens)

    @torch.inference_mode()
    def run_shared(self, ids: list[int]) -> Any:
        p = len(ids)
        with self.steering():  # the shared half holds the first token: the injection acts here
            out = self.model.model(
                input_ids=torch.tensor([ids], device=self.device),
                position_ids=torch.arange(p, device=self.device).expand(3, 1, p),
                use_cache=True,
            )
        return out.past_key_values

    @torch.inference_mode()
    def run_rows(self, rows: list[Row], p: int, cache: Any) -> np.ndarray:
        ids, mask, last = right_padded(rows, p, self.tokenizer.pad_token_id)
        n, width = ids.shape
        if cache is not None:
            cache = copy.deepcopy(cache)  # never changed: shared by the query's chunks
            cache.batch_repeat_interleave(n)
        hidden = self.model.model(
            input_ids=torch.from_numpy(ids).to(self.device),
            attention_mask=torch.from_numpy(mask).to(self.device),
            position_ids=torch.arange(p, p + width, device=self.device).expand(3, n, width),
            past_key_values=cache,
            use_cache=cache is not None,
        ).last_hidden_state
        scores = self._p_yes(hidden[torch.arange(n), torch.from_numpy(last)])
        if self.asked_readout:
            for i, (_, ends) in enumerate(rows):
                if ends:
                    scores[i] *= self._p_yes(hidden[i, [at - p for at, _ in ends]]).min()
        return scores
