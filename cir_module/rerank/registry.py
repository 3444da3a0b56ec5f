"""What every reranker answers (:class:`Reranker`), and which class serves a model folder.

A checkpoint folder records how it is served in its ``cir_reranker.json`` (key ``verify``,
written by the trainer that made it): absent or ``"yes"`` for the P(YES) image judge,
``"changes"`` for the change verifier. Each reranker class registers itself under its kind
with :func:`register_reranker`; :func:`reranker_kind` looks a kind up. The classes of this
package are imported on first lookup (:data:`KNOWN_KINDS`), so that reading the registry
needs no torch; a kind from elsewhere (``research``) is registered by importing its module.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
from PIL import Image

from cir_module.vlm.folder import DEFAULT_KIND, KIND_KEY, recorded_kind

__all__ = [
    "DEFAULT_KIND",
    "KIND_KEY",
    "KNOWN_KINDS",
    "Reranker",
    "RerankerKind",
    "recorded_kind",
    "register_reranker",
    "reranker_kind",
]

# The modules that define this package's kinds: imported the first time a kind is looked up.
KNOWN_KINDS = {
    "yes": "cir_module.rerank.scorer",
    "changes": "cir_module.rerank.verify",
}


@runtime_checkable
class Reranker(Protocol):
    """A second stage: scores candidate images for a composed query, the query's half of
    the work (its "prefix") computed once and reused by every candidate."""

    image_side: int

    def describe(self) -> dict:
        """What ``/meta`` shows."""

    def prefix(self, reference: Image.Image, text: str) -> Any:
        """The query's shared state."""

    def prefixes(self, references: Sequence[Image.Image], texts: Sequence[str]) -> list:
        """:meth:`prefix` of many queries."""

    def score_prefixed(self, state: Any, candidates: Sequence[Image.Image]) -> np.ndarray:
        """One score in [0, 1] per candidate, continuing from a query's :meth:`prefix`."""

    def score(
        self, reference: Image.Image, text: str, candidates: Sequence[Image.Image]
    ) -> np.ndarray:
        """:meth:`prefix`, then :meth:`score_prefixed`."""


@dataclass(frozen=True)
class RerankerKind:
    """A registered kind: its class, the name a results table gives it, and whether the
    class takes the image judge's steering (RAug-Rep injection, a rationale prompt)."""

    name: str
    cls: type
    title: str
    steered: bool


_KINDS: dict[str, RerankerKind] = {}

T = TypeVar("T", bound=type)


def register_reranker(name: str, *, title: str, steered: bool = False) -> Callable[[T], T]:
    """Class decorator: serve folders of kind ``name`` with the decorated class (which
    gets ``kind = name``)."""

    def register(cls: T) -> T:
        cls.kind = name
        _KINDS[name] = RerankerKind(name, cls, title, steered)
        return cls

    return register


def reranker_kind(name: str) -> RerankerKind:
    """The registered kind ``name``; ValueError when no imported module registered it."""
    if name not in _KINDS and name in KNOWN_KINDS:
        importlib.import_module(KNOWN_KINDS[name])
    if name not in _KINDS:
        raise ValueError(
            f"no reranker is registered for kind {name!r} (registered: {sorted(_KINDS)}); a "
            "research model's kind is registered by its module (python -m research...)"
        )
    return _KINDS[name]
