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
judge over two images had to find the changes itself. RAug-Rep injection steers the image
judge's prompt and does not apply here.
"""

from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from cir_module.rerank.base import VisionLanguageScorer
from cir_module.rerank.registry import register_reranker
from cir_module.vlm.changes import DIFFERS, description_changes, recorded_differ
from cir_module.vlm.prompt import DESCRIBE_PROMPT, VERIFY_PROMPT

__all__ = ["ChangeVerifyingReranker", "VerifiedQuery", "verify_row"]


def verify_row(tokenizer, description: str, text: str, changes: str) -> tuple[list[int], list]:
    """``VERIFY_PROMPT``'s ids for one change list (as the codec encodes it: the template
    holds no image), and for each change in the list (not "nothing changed" or the "and N
    more" tail) ``(position of its last token, the change)``."""
    prompt = VERIFY_PROMPT.format(description=description, text=text, changes=changes)
    encoded = tokenizer(prompt, return_offsets_mapping=True, add_special_tokens=False)
    token_at: dict[int, int] = {}
    for i, (begin, end) in enumerate(encoded["offset_mapping"]):
        for char in range(begin, end):
            token_at.setdefault(char, i)
    ends, start = [], prompt.index("\nChanges: ") + len("\nChanges: ")
    for change in changes.split("; "):
        end = start + len(change)
        listed = change != "nothing changed" and not change.startswith("and ")
        if listed and end - 1 in token_at:  # a character no token covers marks nothing
            ends.append((token_at[end - 1], change))
        start = end + 2
    return encoded["input_ids"], ends


# Where a verify prompt's candidate half begins: everything before it (the reference's
# caption and the modification) is the same for every candidate of a query.
_CHANGES = "\nChanges:"


@dataclass
class VerifiedQuery:
    """A query's shared half: the reference's caption and the modification, and once a
    candidate was verified, the prompt's shared token ids and their key / value cache (every
    later candidate, in any chunk of the query, continues from it)."""

    caption: str
    text: str
    ids: list[int] | None = field(default=None, repr=False)
    cache: Any = field(default=None, repr=False)


@register_reranker("changes", title="change verification")
class ChangeVerifyingReranker(VisionLanguageScorer):
    """Scores candidates by P(YES) that the changes between two captions do what the
    modification asks."""

    # The service sends it the candidates' stored captions (text documents) as they are.
    reads_captions = True

    def __init__(
        self,
        *args,
        describe_tokens: int = 256,
        caption_cache: int = 8192,
        differ: str | None = None,
        change_wording: str | None = None,
        asked_readout: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        # The folder records its differ (``change_wording`` in folders written before differs
        # had names; neither: the oldest folders, whole grid facts).
        legacy = {"change_wording": change_wording} if change_wording else {}
        self.differ = differ or recorded_differ(legacy)
        if self.differ not in DIFFERS:
            raise ValueError(f"differ {self.differ!r} is none of {tuple(DIFFERS)}")
        self.asked_readout = asked_readout
        self.describe_tokens = describe_tokens
        self.caption_cache = caption_cache
        self._captions: OrderedDict[str, str] = OrderedDict()
        self.captioned = 0  # images captioned so far (a stored caption costs none)

    def describe(self) -> dict:
        return {
            **super().describe(),
            "verify": "changes",
            "differ": self.differ,
            "asked_readout": self.asked_readout,
            "captioned": self.captioned,
        }

    @staticmethod
    def _key(image: Image.Image) -> str:
        digest = hashlib.blake2b(image.tobytes(), digest_size=16)
        digest.update(f"{image.mode}{image.size}".encode())
        return digest.hexdigest()

    def captions(self, images: Sequence[Image.Image]) -> list[str]:
        """Each image's caption (``DESCRIBE_PROMPT``, greedy, batched), from the cache when
        the same pixels were captioned before."""
        keys = [self._key(im) for im in images]
        todo = list(dict.fromkeys(k for k in keys if k not in self._captions))
        if todo:
            self.captioned += len(todo)
            first = {k: im for k, im in zip(keys, images, strict=True) if k in todo}
            for start in range(0, len(todo), self.batch_size):
                batch = todo[start : start + self.batch_size]
                written = self.generate(
                    DESCRIBE_PROMPT, [first[k] for k in batch], self.describe_tokens
                )
                for k, caption in zip(batch, written, strict=True):
                    self._captions[k] = caption.strip()
        out = []
        for k in keys:
            self._captions.move_to_end(k)
            out.append(self._captions[k])
        while len(self._captions) > self.caption_cache:
            self._captions.popitem(last=False)
        return out

    @torch.inference_mode()
    def prefix(self, reference: Image.Image, text: str) -> VerifiedQuery:
        """The reference captioned (once per query; cached by its pixels)."""
        return VerifiedQuery(self.captions([reference])[0], text)

    def prefix_from_caption(self, caption: str, text: str) -> VerifiedQuery:
        """A query whose reference's caption is known (stored by the enrichment job):
        nothing is captioned."""
        return VerifiedQuery(caption.strip(), text)

    def prefixes(
        self, references: Sequence[Image.Image], texts: Sequence[str]
    ) -> list[VerifiedQuery]:
        """:meth:`prefix` for many queries: their references captioned in batches."""
        captions = self.captions(references)
        return [VerifiedQuery(c, t) for c, t in zip(captions, texts, strict=True)]

    def changes_between(self, before: str, after: str) -> str:
        """The change list between two descriptions, by the differ this verifier was trained
        with."""
        return description_changes(before, after, differ=self.differ)

    def changes(self, state: VerifiedQuery, candidates: Sequence[Image.Image]) -> list[str]:
        """Each candidate's change list against the reference, as the verifier reads it."""
        return [self.changes_between(state.caption, c) for c in self.captions(candidates)]

    @torch.inference_mode()
    def score_prefixed(self, state: VerifiedQuery, candidates: Sequence[Image.Image]) -> np.ndarray:
        """P(YES) per candidate: its caption's changes from the reference's, judged."""
        return self.verified(state, self.changes(state, candidates))

    @torch.inference_mode()
    def score_captions(self, state: VerifiedQuery, captions: Sequence[str]) -> np.ndarray:
        """P(YES) per candidate given by its caption (stored by the enrichment job)."""
        lists = [self.changes_between(state.caption, c.strip()) for c in captions]
        return self.verified(state, lists)

    @torch.inference_mode()
    def verify(self, description: str, text: str, changes: Sequence[str]) -> np.ndarray:
        """P(YES) of ``VERIFY_PROMPT`` for each change list against one reference
        description and modification; with ``asked_readout``, times the lowest P(YES) at the
        end of the list's changes."""
        return self.verified(VerifiedQuery(description, text), changes)

    def _shared(self, state: VerifiedQuery) -> tuple[list[int], Any]:
        """The shared half's ids and key / value cache, computed on first use."""
        if state.cache is None:
            request = VERIFY_PROMPT.format(description=state.caption, text=state.text, changes="")
            head = request[: request.index(_CHANGES) + len(_CHANGES)]
            ids = self.tokenizer(head, add_special_tokens=False)["input_ids"]
            p = len(ids)
            out = self.model.model(
                input_ids=torch.tensor([ids], device=self.device),
                position_ids=torch.arange(p, device=self.device).expand(3, 1, p),
                use_cache=True,
            )
            state.ids, state.cache = ids, out.past_key_values
        return state.ids, state.cache

    @torch.inference_mode()
    def verified(self, state: VerifiedQuery, changes: Sequence[str]) -> np.ndarray:
        """P(YES) per change list, each row continuing from the query's shared half (its
        key / value cache computed once), in right-padded batches. A row whose tokens do not
        begin with the shared half's (a tokenizer that merges across the boundary) runs
        whole, so every score is that of the prompt as the verifier was trained on it."""
        if not changes:
            return np.zeros(0, dtype=np.float32)
        encoded = [verify_row(self.tokenizer, state.caption, state.text, c) for c in changes]
        shared, cache = self._shared(state)
        p = len(shared)
        scores = np.zeros(len(changes), dtype=np.float32)
        apart = [i for i, (ids, _) in enumerate(encoded) if ids[:p] != shared]
        together = sorted(set(range(len(changes))) - set(apart))
        for start in range(0, len(together), self.batch_size):
            rows = together[start : start + self.batch_size]
            scores[rows] = self._batch([encoded[i] for i in rows], p, cache)
        for start in range(0, len(apart), self.batch_size):
            rows = apart[start : start + self.batch_size]
            scores[rows] = self._batch([encoded[i] for i in rows], 0, None)
        return scores

    def _batch(self, encoded: list[tuple[list[int], list]], p: int, cache: Any) -> np.ndarray:
        """P(YES) of rows (their ids and change ends), all but their first ``p`` tokens run
        on a copy of ``cache`` (p = 0: whole)."""
        rows = [ids[p:] for ids, _ in encoded]
        n, width = len(rows), max(map(len, rows))
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=self.device)
        mask = torch.tensor(
            [[1] * (p + len(r)) + [0] * (width - len(r)) for r in rows], device=self.device
        )
        positions = torch.arange(p, p + width, device=self.device).expand(3, n, width)
        if cache is not None:
            cache = copy.deepcopy(cache)  # never changed: shared by the query's chunks
            cache.batch_repeat_interleave(n)
        hidden = self.model.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=cache is not None,
        ).last_hidden_state
        last = torch.tensor([len(r) - 1 for r in rows], device=self.device)
        scores = self._p_yes(hidden[torch.arange(n), last])
        if self.asked_readout:
            for i, (_, ends) in enumerate(encoded):
                if ends:
                    scores[i] *= self._p_yes(hidden[i, [at - p for at, _ in ends]]).min()
        return scores
