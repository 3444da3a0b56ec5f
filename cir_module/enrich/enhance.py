"""Reasoning-enhanced queries (RAR): classify a query, then rewrite what it asks for.

- ``text-only`` and ``image-only`` queries are left as they are.
- A ``modification`` ("make the dress red with long sleeves") is distilled to the
  constraints the target must satisfy, as keywords, **from its text alone**: the reference
  image is withheld, as the RAR recipe prescribes, so the rewrite cannot describe the
  reference instead of the change.
- A ``question`` about the image ("what is the logo on this shirt?") has its references
  resolved with the image: it is the one kind for which the backend sees the picture.

Two kinds of enhancer here: :class:`KeywordDistiller` (rules: filler words dropped, spelling
variants unified; no model, deterministic, what the synthetic benchmark's ablation uses as
the stand-in for an LLM) and :class:`BackendEnhancer` (any :class:`ChatBackend`: a local
transformers model or an OpenAI-compatible endpoint). A chat backend may bring its own
(``query_distiller()``): research's describe-and-verify distiller
(``research.distil.DescribingDistiller``) reads the reference image, the one enhancer whose
``reads_reference`` is true.
:class:`QueryEnhancer` classifies, dispatches and caches.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

from PIL import Image

from cir_module.vlm.chat import ChatBackend, ChatRequest

__all__ = [
    "QUERY_KINDS",
    "BackendEnhancer",
    "Enhancer",
    "KeywordDistiller",
    "QueryEnhancer",
    "classify_query",
]

QUERY_KINDS = ("text-only", "image-only", "question", "modification")

_QUESTION_WORDS = {
    "what", "which", "who", "whom", "whose", "where", "when", "why", "how",
    "is", "are", "was", "were", "does", "do", "did", "can", "could", "would", "will",
}  # fmt: skip


def classify_query(text: str | None, has_image: bool) -> str:
    """One of :data:`QUERY_KINDS` for a query's text and whether it has an image."""
    text = (text or "").strip()
    if not text:
        return "image-only" if has_image else "text-only"
    if not has_image:
        return "text-only"
    first = text.split(maxsplit=1)[0].lower().strip(",.:;!")
    if text.endswith("?") or first in _QUESTION_WORDS:
        return "question"
    return "modification"


class Enhancer(Protocol):
    """Rewrites a batch of queries of one kind. ``reads_reference``: whether a modification's
    rewrite depends on its reference image (then it is cached by text and image)."""

    id: str
    reads_reference: bool

    def modifications(self, texts: Sequence[str], images: Sequence[Image.Image]) -> list[str]: ...

    def questions(self, texts: Sequence[str], images: Sequence[Image.Image]) -> list[str]: ...


# Words that carry no constraint: articles, pronouns, auxiliaries and request phrasing.
_FILLER = {
    "a", "an", "the", "it", "its", "this", "that", "these", "those", "one", "ones",
    "i", "we", "you", "me", "us", "my", "our", "your", "please", "want", "would", "like",
    "should", "must", "be", "is", "are", "needs", "need", "has", "have", "to", "so",
    "also", "just", "then", "and", "of", "for", "there", "make", "let",
}  # fmt: skip
# Spelling variants, unified so that "colour" and "color" are one keyword.
_VARIANTS = {"colour": "color", "colours": "colors", "centre": "center", "grey": "gray"}
_TOKEN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


class KeywordDistiller:
    """Rules: lowercase, keep the words that carry a constraint, unify spelling variants.
    Negations (not, no, without) are kept: they are constraints too."""

    id = "keywords/1"
    reads_reference = False

    def distil(self, text: str) -> str:
        words = [_VARIANTS.get(w, w) for w in _TOKEN.findall(text.lower())]
        kept = [w for w in words if w not in _FILLER]
        return " ".join(kept) if kept else text.strip()

    def modifications(self, texts: Sequence[str], images: Sequence[Image.Image]) -> list[str]:
        return [self.distil(t) for t in texts]

    def questions(self, texts: Sequence[str], images: Sequence[Image.Image]) -> list[str]:
        return list(texts)  # resolving references needs a model that sees the image


MODIFICATION_PROMPT = (
    'A user edits an image with this request: "{text}"\n'
    "List, as comma-separated keywords, what the edited image must show: objects, "
    "attributes, positions, and what must be absent. Keywords only, at most 30 words."
)
QUESTION_PROMPT = (
    "Rewrite the question so that it names what it refers to in the image, without pronouns "
    "or 'this' / 'that': \"{text}\". Reply with the rewritten question only."
)


class BackendEnhancer:
    """Rewrites with a chat model: modifications from the text alone, questions with the
    image."""

    reads_reference = False  # RAR withholds it: the rewrite must say the change, not the image

    def __init__(self, backend: ChatBackend, max_words: int = 30) -> None:
        self.backend = backend
        self.max_words = max_words
        self.id = f"chat/{backend.id}"

    def _clean(self, reply: str, fallback: str) -> str:
        words = reply.replace("\n", " ").split()[: self.max_words]
        return " ".join(words) if words else fallback

    def modifications(self, texts: Sequence[str], images: Sequence[Image.Image]) -> list[str]:
        requests = [ChatRequest(MODIFICATION_PROMPT.format(text=t)) for t in texts]
        return [
            self._clean(r, t) for r, t in zip(self.backend.complete(requests), texts, strict=True)
        ]

    def questions(self, texts: Sequence[str], images: Sequence[Image.Image]) -> list[str]:
        requests = [
            ChatRequest(QUESTION_PROMPT.format(text=t), (im,))
            for t, im in zip(texts, images, strict=True)
        ]
        return [
            self._clean(r, t) for r, t in zip(self.backend.complete(requests), texts, strict=True)
        ]


def _image_key(image: Image.Image) -> str:
    return hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest()


class QueryEnhancer:
    """Classifies each (text, image) query and rewrites modifications and questions, with an
    LRU cache: a modification is keyed by its text alone (by text and image when the enhancer
    reads the reference), a question by text and image."""

    def __init__(self, enhancer: Enhancer, cache_size: int = 4096) -> None:
        self.enhancer = enhancer
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, ...], str] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @property
    def id(self) -> str:
        return self.enhancer.id

    def enhance(self, texts: Sequence[str], images: Sequence[Image.Image | None]) -> list[str]:
        """The rewritten text of every query (unchanged for text-only and image-only)."""
        out = list(texts)
        todo: dict[str, list[int]] = {"modification": [], "question": []}
        keys: list[tuple[str, ...] | None] = []
        for i, (text, image) in enumerate(zip(texts, images, strict=True)):
            kind = classify_query(text, image is not None)
            if kind not in todo:
                keys.append(None)
                continue
            by_text = kind == "modification" and not self.enhancer.reads_reference
            key = (kind, text) if by_text else (kind, text, _image_key(image))
            keys.append(key)
            with self._lock:
                cached = self._cache.get(key)
                if cached is not None:
                    self._cache.move_to_end(key)
                    self.hits += 1
                    out[i] = cached
                    continue
                self.misses += 1
            todo[kind].append(i)
        if todo["modification"]:
            rows = todo["modification"]
            rewritten = self.enhancer.modifications(
                [texts[i] for i in rows], [images[i] for i in rows]
            )
            self._store(rows, keys, out, rewritten)
        if todo["question"]:
            rows = todo["question"]
            rewritten = self.enhancer.questions([texts[i] for i in rows], [images[i] for i in rows])
            self._store(rows, keys, out, rewritten)
        return out

    def _store(self, rows, keys, out, rewritten) -> None:
        with self._lock:
            for i, text in zip(rows, rewritten, strict=True):
                out[i] = text
                self._cache[keys[i]] = text
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)

    def describe(self) -> dict[str, object]:
        """What ``/meta`` shows."""
        return {
            "enhancer": self.id,
            "cache": len(self._cache),
            "hits": self.hits,
            "misses": self.misses,
        }
