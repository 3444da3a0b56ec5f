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
and it is what a rewrite-stage folder (``python -m research.cli vlm-train --stage rewrite``)
is served as (its ``cir_reranker.json`` says ``"verify": "describe"``): importing this module
registers the kind (``CIR_PLUGINS=research.describe`` for the service). RAug-Rep injection
steers a P(YES) judgement and does not apply here. Research: superseded by change
verification (docs/results.md, "A third way: describe, then verify (rewrite stage)").

The same steps written out are the explicit rationale for one result (:meth:`explain`,
:class:`Rationale`): the reference's caption, what the target must show, what the candidate
shows (its caption), and the conclusion: which facts of the target's description the
candidate lacks and which it shows unasked. :class:`RationaleChat` serves it as a chat
backend, so that Weaviate's ``generative-openai`` pointed at the service returns it per result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from cir_module.errors import InputError
from cir_module.rerank.base import VisionLanguageScorer
from cir_module.rerank.registry import recorded_kind, register_reranker
from cir_module.vlm.changes import description_facts
from cir_module.vlm.chat import ChatRequest, register_chat_backend
from cir_module.vlm.prompt import DESCRIBE_PROMPT, REWRITE_PROMPT

__all__ = [
    "DescribedTarget",
    "DescribingReranker",
    "Rationale",
    "RationaleChat",
    "facts",
    "load_describing",
]


# A description's facts: its ``;``-separated phrases (one object each, here).
facts = description_facts


@dataclass(frozen=True)
class DescribedTarget:
    """A query's written reasoning: the reference's caption and the target's description."""

    caption: str
    target: str
    ids: tuple[int, ...]  # the description's tokens and the end of the answer


@dataclass(frozen=True)
class Rationale:
    """Why a result does or does not answer a composed query, step by step."""

    reference: str  # the reference image's caption
    target: str  # what the target must show: the caption rewritten by the modification
    candidate: str  # the result's caption
    missing: tuple[str, ...]  # facts of the target the result does not show
    unexpected: tuple[str, ...]  # facts the result shows that the target does not ask for

    @property
    def satisfied(self) -> bool:
        return not self.missing and not self.unexpected

    def text(self) -> str:
        """The rationale as the chat answer writes it: caption, reasoning, conclusion."""
        if self.satisfied:
            conclusion = "YES: the result shows what the modification asks."
        else:
            parts = [f"missing: {'; '.join(self.missing)}"] if self.missing else []
            parts += [f"not asked for: {'; '.join(self.unexpected)}"] if self.unexpected else []
            conclusion = "NO, " + "; and ".join(parts) + "."
        return (
            f"The reference shows: {self.reference}\n"
            f"The target must show: {self.target}\n"
            f"The result shows: {self.candidate}\n"
            f"Conclusion: {conclusion}"
        )


@register_reranker("describe", title="describe-and-verify")
class DescribingReranker(VisionLanguageScorer):
    """Scores candidates by the likelihood of the target description the model writes."""

    def __init__(self, *args, describe_tokens: int = 256, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.describe_tokens = describe_tokens

    def describe(self) -> dict:
        return {**super().describe(), "verify": "describe"}

    def captions(self, images: Sequence[Image.Image]) -> list[str]:
        """Each image's caption (``DESCRIBE_PROMPT``, greedy): one fact per object."""
        return [
            c.strip() for c in self.generate(DESCRIBE_PROMPT, list(images), self.describe_tokens)
        ]

    @torch.inference_mode()
    def prefix(self, reference: Image.Image, text: str) -> DescribedTarget:
        """The reference captioned, and the caption rewritten by the modification."""
        return self.prefixes([reference], [text])[0]

    @torch.inference_mode()
    def prefixes(
        self, references: Sequence[Image.Image], texts: Sequence[str]
    ) -> list[DescribedTarget]:
        """:meth:`prefix` for many queries at once: each step batched across them (the
        rewrites left-padded), so an evaluation pays one generation per batch, not per query.
        Greedy either way; batched arithmetic may round differently in the last bits."""
        captions = self.captions(references)
        prompts = [
            self._encode(REWRITE_PROMPT, description=c, text=t)
            for c, t in zip(captions, texts, strict=True)
        ]
        width = max(map(len, prompts))
        pad, end = self.tokenizer.pad_token_id, self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor(
            [[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device
        )
        out = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=self.describe_tokens,
            do_sample=False,
            eos_token_id=end,
            pad_token_id=pad,
        )
        targets = [t.strip() for t in self.tokenizer.batch_decode(out[:, width:], True)]
        return [
            DescribedTarget(c, t, (*self.tokenizer.encode(t), end))
            for c, t in zip(captions, targets, strict=True)
        ]

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

    def explain(self, reference: Image.Image, text: str, candidate: Image.Image) -> Rationale:
        """The rationale for one result (see :meth:`explain_all`)."""
        return self.explain_all(reference, text, [candidate])[0]

    @torch.inference_mode()
    def explain_all(
        self,
        reference: Image.Image,
        text: str,
        candidates: Sequence[Image.Image],
        written: DescribedTarget | None = None,
    ) -> list[Rationale]:
        """The rationale for each result: the query's written reasoning (once; ``written``
        when it is at hand) and each result's caption, compared fact by fact."""
        written = written or self.prefix(reference, text)
        target = facts(written.target)
        out = []
        for caption in self.captions(candidates):
            result = facts(caption)
            out.append(
                Rationale(
                    reference=written.caption,
                    target=written.target,
                    candidate=caption,
                    missing=tuple(f for f in target if f not in result),
                    unexpected=tuple(f for f in result if f not in target),
                )
            )
        return out


def load_describing(path: str, **kwargs) -> DescribingReranker:
    """The describe-and-verify model in ``path``; ValueError when the folder is another kind
    of reranker."""
    if recorded_kind(path) != DescribingReranker.kind:
        raise ValueError(
            f"{path} is not a describe-and-verify model (cir vlm train --stage rewrite)"
        )
    return DescribingReranker.from_pretrained(path, **kwargs)


@register_chat_backend(DescribingReranker.kind)
class RationaleChat:
    """A chat backend that answers with :meth:`DescribingReranker.explain`'s rationale.

    A request with two images is a result and its query's reference, in the order Weaviate's
    ``generative-openai`` sends them (the result's stored image, then the query's images);
    its text is the modification. A request with one image is answered with its caption.
    It answers in that form only (``answers_text`` False), and distils queries itself
    (:meth:`query_distiller`)."""

    answers_text = False

    def __init__(self, reranker: DescribingReranker) -> None:
        self.reranker = reranker
        self.id = "rationale:" + reranker.adapter.name

    @classmethod
    def from_pretrained(cls, path: str, **kwargs) -> RationaleChat:
        """The rationale writer of the describe-and-verify folder ``path``."""
        return cls(load_describing(path, **kwargs))

    def query_distiller(self):
        """The query enhancer's rewriter backed by the same model: it reads the reference
        and writes what the edit adds and drops."""
        from research.distil import DescribingDistiller

        return DescribingDistiller(self.reranker)

    def complete(
        self, requests: Sequence[ChatRequest], max_new_tokens: int | None = None
    ) -> list[str]:
        return [self._one(r) for r in requests]

    def _one(self, request: ChatRequest) -> str:
        if len(request.images) == 2:
            candidate, reference = request.images
            return self.reranker.explain(reference, request.text.strip(), candidate).text()
        if len(request.images) == 1:
            return self.reranker.captions(request.images)[0]
        raise InputError(
            "this chat model writes rationales: send the result's image and the query's "
            "reference image (two images), with the modification as the text"
        )
