"""Describe-and-verify reranking: the model writes what the target must show, then each
candidate is scored by how likely the model finds that description of it.

Per query (the shared "prefix", once for all its candidates, as with P(YES)):

1. the model captions the reference image (``DESCRIBE_PROMPT``, the caption stage's task);
2. it rewrites that caption by the modification into the target's description
   (``REWRITE_PROMPT``, text only: the rewrite stage's task).

Per candidate: the description's mean token log-probability under the captioning prompt with
the candidate as its image; the score is its exponential (the geometric-mean probability per
token, in (0, 1], fused with the first-stage cosine as P(YES) is). A candidate that differs
from the description in one attribute pays for that attribute's token; the rest of the
description costs every candidate alike.

This is CIR-CoT's caption -> reasoning -> conclusion with the conclusion read as a likelihood,
and it is what a ``cir vlm train --stage rewrite`` folder is served as (its
``cir_reranker.json`` says ``"verify": "describe"``). RAug-Rep injection steers a P(YES)
judgement and does not apply here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from cir_module.rerank.scorer import LVLMReranker
from cir_module.vlm.prompt import DESCRIBE_PROMPT, REWRITE_PROMPT

__all__ = ["DescribedTarget", "DescribingReranker"]


@dataclass(frozen=True)
class DescribedTarget:
    """A query's written reasoning: the reference's caption and the target's description."""

    caption: str
    target: str
    ids: tuple[int, ...]  # the description's tokens and the end of the answer


class DescribingReranker(LVLMReranker):
    """Scores candidates by the likelihood of the target description the model writes."""

    def __init__(self, *args, describe_tokens: int = 256, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.raug is not None or self.rationale:
            raise ValueError(
                "a describe-and-verify reranker writes its own reasoning and takes no RAug-Rep "
                "injection or rationale prompt (those steer a P(YES) judgement)"
            )
        self.describe_tokens = describe_tokens

    def describe(self) -> dict:
        return {**super().describe(), "verify": "describe"}

    @torch.inference_mode()
    def prefix(self, reference: Image.Image, text: str) -> DescribedTarget:
        """The reference captioned, and the caption rewritten by the modification."""
        caption = self.generate(DESCRIBE_PROMPT, [reference], self.describe_tokens)[0].strip()
        target = self.generate(
            REWRITE_PROMPT, [], self.describe_tokens, description=caption, text=text
        )[0].strip()
        end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        return DescribedTarget(caption, target, (*self.tokenizer.encode(target), end))

    @torch.inference_mode()
    def score_prefixed(
        self, state: DescribedTarget, candidates: Sequence[Image.Image]
    ) -> np.ndarray:
        """exp(mean log P(description | candidate)) per candidate."""
        if not candidates:
            return np.zeros(0, dtype=np.float32)
        prompt = self._encode(DESCRIBE_PROMPT)
        ids = torch.tensor([[*prompt, *state.ids]], device=self.device)
        answer = torch.tensor(state.ids, device=self.device)
        head = self.adapter.lm_head(self.model)
        scores = []
        for start in range(0, len(candidates), self.batch_size):
            batch = candidates[start : start + self.batch_size]
            pixels, grid = self._pixels(batch)
            hidden = self.model.model(
                input_ids=ids.expand(len(batch), -1), pixel_values=pixels, image_grid_thw=grid
            ).last_hidden_state
            # Position i predicts token i + 1: the description's tokens follow the prompt.
            logits = head(hidden[:, len(prompt) - 1 : -1]).float()
            picked = torch.log_softmax(logits, -1)[:, torch.arange(len(answer)), answer]
            scores.append(picked.mean(-1).exp().cpu().numpy())
        return np.concatenate(scores)

    def score_naive(
        self, reference: Image.Image, text: str, candidates: Sequence[Image.Image]
    ) -> np.ndarray:
        """The same scores (the description is written once per query either way)."""
        return self.score(reference, text, candidates)
