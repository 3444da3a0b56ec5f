"""Change verification without a runtime: what the torch verifier (``verify.py``) and the
onnxruntime one (``onnx_verifier.py``) share. Per query (the shared "prefix", once for all its
candidates): the reference's caption (stored, or written once and cached by its pixels). Per
candidate: its caption (stored, sent by Weaviate as the document, or written and cached), the
change list between the two captions (the differ the folder records), and P(YES) of
``VERIFY_PROMPT``: the reference's caption, the modification and that change list, text only.
With the per-change read-out (``asked_readout``) the score is P(YES) times the lowest P(YES)
at the last token of each change. The prompt's shared half (up to ``"Changes:"``) is run once
per query and its key / value cache reused by every candidate row.

A backend supplies three things: :meth:`ChangeVerification.write_captions` (greedy captions
of images), :meth:`~ChangeVerification.run_shared` (the shared half's cache) and
:meth:`~ChangeVerification.run_rows` (scores of rows continuing from a cache)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from cir_module.rerank.prefixed import PrefixedScoring
from cir_module.vlm.changes import DIFFERS, description_changes, recorded_differ
from cir_module.vlm.prompt import VERIFY_PROMPT, in_chat_template

__all__ = ["ChangeVerification", "VerifiedQuery", "verify_row"]

# Where a verify prompt's candidate half begins: everything before it (the reference's
# caption and the modification) is the same for every candidate of a query.
_CHANGES = "\nChanges:"

Row = tuple[list[int], list[tuple[int, str]]]  # a prompt's ids, (end of each change, change)


def verify_row(tokenizer, description: str, text: str, changes: str) -> Row:
    """``VERIFY_PROMPT``'s ids for one change list (as the codec encodes it: the template
    holds no image), and for each change in the list (not "nothing changed" or the "and N
    more" tail) ``(position of its last token, the change)``."""
    prompt = in_chat_template(
        tokenizer, VERIFY_PROMPT.format(description=description, text=text, changes=changes)
    )
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


@dataclass
class VerifiedQuery:
    """A query's shared half: the reference's caption and the modification, and once it ran
    (:meth:`ChangeVerification.shared_half`), the prompt's shared token ids and their key /
    value cache (every candidate, in any chunk of the query, continues from it)."""

    caption: str
    text: str
    ids: list[int] | None = field(default=None, repr=False)
    cache: Any = field(default=None, repr=False)


class ChangeVerification(PrefixedScoring):
    """Mixin: scoring by change verification over a backend's three primitives."""

    tokenizer: Any
    batch_size: int
    # The service sends it the candidates' stored captions (text documents) as they are.
    reads_captions = True

    def setup_verification(
        self,
        *,
        differ: str | None = None,
        change_wording: str | None = None,
        asked_readout: bool = False,
        describe_tokens: int = 256,
        caption_cache: int = 8192,
    ) -> None:
        """The folder's recorded settings (``change_wording`` in folders written before
        differs had names; neither: the oldest folders, whole grid facts)."""
        legacy = {"change_wording": change_wording} if change_wording else {}
        self.differ = differ or recorded_differ(legacy)
        if self.differ not in DIFFERS:
            raise ValueError(f"differ {self.differ!r} is none of {tuple(DIFFERS)}")
        self.asked_readout = asked_readout
        self.describe_tokens = describe_tokens
        self.caption_cache = caption_cache
        self._captions: OrderedDict[str, str] = OrderedDict()
        self.captioned = 0  # images captioned so far (a stored caption costs none)

    def describe_verification(self) -> dict:
        return {
            "verify": "changes",
            "differ": self.differ,
            "asked_readout": self.asked_readout,
            "captioned": self.captioned,
        }

    # -- the backend's primitives --------------------------------------------------------------
    def write_captions(self, images: Sequence[Image.Image]) -> list[str]:
        """Greedy captions (``DESCRIBE_PROMPT``) of a batch of images."""
        raise NotImplementedError

    def run_shared(self, ids: list[int]) -> Any:
        """The key / value cache of the shared half's ids (batch 1)."""
        raise NotImplementedError

    def run_rows(self, rows: list[Row], p: int, cache: Any) -> np.ndarray:
        """Scores of ``rows`` (ids and change ends), all but their first ``p`` tokens run on a
        copy of ``cache`` (p = 0, cache None: whole)."""
        raise NotImplementedError

    # -- captions --------------------------------------------------------------------------------
    @staticmethod
    def _key(image: Image.Image) -> str:
        digest = hashlib.blake2b(image.tobytes(), digest_size=16)
        digest.update(f"{image.mode}{image.size}".encode())
        return digest.hexdigest()

    def captions(self, images: Sequence[Image.Image]) -> list[str]:
        """Each image's caption (greedy, batched), from the cache when the same pixels were
        captioned before."""
        keys = [self._key(im) for im in images]
        todo = list(dict.fromkeys(k for k in keys if k not in self._captions))
        if todo:
            self.captioned += len(todo)
            first = {k: im for k, im in zip(keys, images, strict=True) if k in todo}
            for start in range(0, len(todo), self.batch_size):
                batch = todo[start : start + self.batch_size]
                written = self.write_captions([first[k] for k in batch])
                for k, caption in zip(batch, written, strict=True):
                    self._captions[k] = caption.strip()
        out = []
        for k in keys:
            self._captions.move_to_end(k)
            out.append(self._captions[k])
        self._trim_captions()
        return out

    def _trim_captions(self) -> None:
        """Forget the least recently used captions past ``caption_cache``."""
        while len(self._captions) > self.caption_cache:
            self._captions.popitem(last=False)

    # -- scoring ---------------------------------------------------------------------------------
    def remember_captions(self, images: Sequence[Image.Image], captions: Sequence[str]) -> None:
        """Take stored captions of these images as the model's own (e.g. the enrichment
        job's, written by this model): they are not captioned again."""
        for image, caption in zip(images, captions, strict=True):
            key = self._key(image)
            self._captions[key] = caption.strip()
            self._captions.move_to_end(key)
        self._trim_captions()

    def prefix(self, reference: Image.Image, text: str) -> VerifiedQuery:
        """The reference captioned (once per query; cached by its pixels) and the prompt's
        shared half run."""
        return self.shared_half(VerifiedQuery(self.captions([reference])[0], text))

    def prefix_from_caption(self, caption: str, text: str) -> VerifiedQuery:
        """A query whose reference's caption is known (stored by the enrichment job):
        nothing is captioned."""
        return self.shared_half(VerifiedQuery(caption.strip(), text))

    def prefixes(
        self, references: Sequence[Image.Image], texts: Sequence[str]
    ) -> list[VerifiedQuery]:
        """:meth:`prefix` for many queries: their references captioned in batches."""
        captions = self.captions(references)
        return [self.shared_half(VerifiedQuery(c, t)) for c, t in zip(captions, texts, strict=True)]

    def shared_half(self, state: VerifiedQuery) -> VerifiedQuery:
        """``state`` with the prompt's shared half (everything before the change list) run
        once: its token ids and key / value cache, which every candidate row continues."""
        if state.cache is None:
            request = VERIFY_PROMPT.format(description=state.caption, text=state.text, changes="")
            request = in_chat_template(self.tokenizer, request)
            head = request[: request.index(_CHANGES) + len(_CHANGES)]
            state.ids = self.tokenizer(head, add_special_tokens=False)["input_ids"]
            state.cache = self.run_shared(state.ids)
        return state

    def changes_between(self, before: str, after: str) -> str:
        """The change list between two descriptions, by the differ this verifier was trained
        with."""
        return description_changes(before, after, differ=self.differ)

    def changes(self, state: VerifiedQuery, candidates: Sequence[Image.Image]) -> list[str]:
        """Each candidate's change list against the reference, as the verifier reads it."""
        return [self.changes_between(state.caption, c) for c in self.captions(candidates)]

    def score_prefixed(self, state: VerifiedQuery, candidates: Sequence[Image.Image]) -> np.ndarray:
        """P(YES) per candidate: its caption's changes from the reference's, judged."""
        return self.verified(state, self.changes(state, candidates))

    def score_captions(self, state: VerifiedQuery, captions: Sequence[str]) -> np.ndarray:
        """P(YES) per candidate given by its caption (stored by the enrichment job)."""
        return self.verified(
            state, [self.changes_between(state.caption, c.strip()) for c in captions]
        )

    def verify(self, description: str, text: str, changes: Sequence[str]) -> np.ndarray:
        """P(YES) for each change list against one reference description and modification."""
        return self.verified(VerifiedQuery(description, text), changes)

    def verified(self, state: VerifiedQuery, changes: Sequence[str]) -> np.ndarray:
        """P(YES) per change list, each row continuing from the query's shared half (its key
        / value cache computed once), in right-padded batches. A row whose tokens do not
        begin with the shared half's (a tokenizer that merges across the boundary) runs
        whole, so every score is that of the prompt as the verifier was trained on it."""
        if not changes:
            return np.zeros(0, dtype=np.float32)
        rows = [verify_row(self.tokenizer, state.caption, state.text, c) for c in changes]
        self.shared_half(state)
        shared, p = state.ids, len(state.ids)
        scores = np.zeros(len(changes), dtype=np.float32)
        together = [i for i, (ids, _) in enumerate(rows) if ids[:p] == shared]
        apart = [i for i, (ids, _) in enumerate(rows) if ids[:p] != shared]
        for group, start_at, cache in ((together, p, state.cache), (apart, 0, None)):
            for start in range(0, len(group), self.batch_size):
                batch = group[start : start + self.batch_size]
                scores[batch] = self.run_rows([rows[i] for i in batch], start_at, cache)
        return scores


def right_padded(rows: list[Row], p: int, pad: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows' ids after their first ``p`` tokens, right-padded with ``pad``; the attention mask
    over cache and new tokens; each row's last real position among the new tokens."""
    tails = [ids[p:] for ids, _ in rows]
    width = max(map(len, tails))
    ids = np.array([t + [pad] * (width - len(t)) for t in tails], dtype=np.int64)
    mask = np.array([[1] * (p + len(t)) + [0] * (width - len(t)) for t in tails], dtype=np.int64)
    return ids, mask, np.array([len(t) - 1 for t in tails])
