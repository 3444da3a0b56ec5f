"""The LVLM reranker: P(YES) that a candidate is the reference changed as the text asks.

The prompt (:mod:`cir_module.rerank.prompt`): the reference image and the modification
text (the prefix, the same for every candidate of a query), then the candidate image and a
YES / NO question (the suffix). The score is P(YES) from the next-token logits over the YES
and NO tokens, with reasoning-augmented representations injected at the first token when
configured.

The paper's way runs the whole prompt once per candidate. Here the prefix runs once per
query, injection applied (the first token is in it), and its key / value cache is reused by
every candidate, batched: :meth:`LVLMReranker.score` (and :meth:`score_naive`, the paper's
way, kept for tests and the benchmark).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from cir_module.rerank.base import VisionLanguageScorer
from cir_module.rerank.registry import register_reranker
from cir_module.rerank.steering import Steering
from cir_module.vlm.family import VLM_SETTINGS

__all__ = ["RERANKER_SETTINGS", "LVLMReranker", "PrefixState"]

log = logging.getLogger(__name__)

RERANKER_SETTINGS = VLM_SETTINGS


@dataclass(frozen=True)
class PrefixState:
    """A query's prefix run: its key / value cache, the full prompt's ids and positions, and
    the prefix length."""

    cache: object
    ids: torch.Tensor
    positions: torch.Tensor
    length: int


@register_reranker("yes", title="P(YES) image judge", steered=True)
class LVLMReranker(Steering, VisionLanguageScorer):
    """Scores candidates for a composed query by P(YES) of the image judge's prompt, steered
    by RAug-Rep injection and, optionally, the model's own reasoning path."""

    def __init__(
        self,
        *args,
        raug: torch.Tensor | None = None,
        alpha: float = 0.6,
        layers: str | Sequence[int] = "all",
        rationale: bool = False,
        rationale_tokens: int = 256,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.setup_steering(raug, alpha, layers)
        self.rationale = rationale  # each query's prompt carries the model's own reasoning
        self.rationale_tokens = rationale_tokens
        self._line_ends: list[int] | None = None

    def describe(self) -> dict:
        """What ``/meta`` shows."""
        return {**super().describe(), **self.describe_steering(), "rationale": self.rationale}

    # -- rationale (CIR-CoT) -----------------------------------------------------------------
    def query_text(self, reference: Image.Image, text: str) -> str:
        """The prompt's text field for a query: the modification, followed by the model's own
        reasoning path when the reranker writes one (``rationale``)."""
        if not self.rationale:
            return text
        return self.prompt.with_reasoning(text, self.write_rationale(reference, text))

    def _newline_ids(self) -> list[int]:
        """Token ids whose text holds a line break: a rationale ends at the first one."""
        if self._line_ends is None:
            decode = self.tokenizer.decode
            self._line_ends = [i for i in range(len(self.tokenizer)) if "\n" in decode([i])]
        return self._line_ends

    @torch.inference_mode()
    def write_rationale(self, reference: Image.Image, text: str) -> str:
        """The model's reasoning path for a query (what the reference shows, what the text
        asks, what the target must show), generated greedily from the prompt's head up to
        the end of its line; the injection is not applied while it is written."""
        text += self.prompt.reasoning_mark
        stop = self._newline_ids()
        written = self.generate(
            self.prompt.head, [reference], self.rationale_tokens, stop, text=text
        )
        return written[0].split("\n")[0].strip()

    # -- scoring -----------------------------------------------------------------------------
    @torch.inference_mode()
    def prefix(self, reference: Image.Image, text: str) -> PrefixState:
        """The query's half of the prompt run once (injection applied: the first token is in
        it); every candidate of the query, in any request, continues from it."""
        prefix = self._encode(self.prompt.prefix, text=self.query_text(reference, text))
        suffix = self._encode(self.prompt.suffix)
        ref_pixels, ref_grid = self._pixels([reference])
        # Multimodal (3-D) positions depend on the whole prompt: compute them for one full
        # prompt; every candidate has the same image size, hence the same positions.
        full = torch.tensor([prefix + suffix], device=self.device)
        positions = self.adapter.rope_index(self.model, full, torch.cat([ref_grid, ref_grid]))
        p = len(prefix)
        with self.steering():
            out = self.model.model(
                input_ids=full[:, :p],
                pixel_values=ref_pixels,
                image_grid_thw=ref_grid,
                position_ids=positions[:, :, :p],
                cache_position=torch.arange(p, device=self.device),
                use_cache=True,
            )
        return PrefixState(out.past_key_values, full, positions, p)

    @torch.inference_mode()
    def score_prefixed(self, state: PrefixState, candidates: Sequence[Image.Image]) -> np.ndarray:
        """P(YES) per candidate, continuing from a query's :meth:`prefix`."""
        if not candidates:
            return np.zeros(0, dtype=np.float32)
        p, s = state.length, state.ids.shape[1] - state.length
        scores = []
        for start in range(0, len(candidates), self.batch_size):
            batch = candidates[start : start + self.batch_size]
            n = len(batch)
            pixels, grid = self._pixels(batch)
            cache = copy.deepcopy(state.cache)  # never changed: shared by concurrent requests
            cache.batch_repeat_interleave(n)
            out = self.model.model(
                input_ids=state.ids[:, p:].expand(n, s),
                pixel_values=pixels,
                image_grid_thw=grid,
                position_ids=state.positions[:, :, p:].expand(3, n, s),
                past_key_values=cache,
                cache_position=torch.arange(p, p + s, device=self.device),
                use_cache=True,
            )
            scores.append(self._p_yes(out.last_hidden_state[:, -1]))
        return np.concatenate(scores)

    @torch.inference_mode()
    def score_naive(
        self, reference: Image.Image, text: str, candidates: Sequence[Image.Image]
    ) -> np.ndarray:
        """P(YES) per candidate, one full forward each (the paper's way)."""
        query = self.query_text(reference, text)
        ids = self._encode(self.prompt.prefix + self.prompt.suffix, text=query)
        full = torch.tensor([ids], device=self.device)
        scores = []
        for candidate in candidates:
            pixels, grid = self._pixels([reference, candidate])
            with self.steering():
                out = self.model.model(input_ids=full, pixel_values=pixels, image_grid_thw=grid)
            scores.append(self._p_yes(out.last_hidden_state[:, -1]))
        return np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)
