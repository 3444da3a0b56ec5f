"""What a torch reranker needs to take PMTFR's injection: the RAug-Rep vectors, alpha and the
layers steered, set once (:meth:`Steering.setup_steering`) and applied, by
:func:`~cir_module.rerank.injection.injected`, around the passes that contain the prompt's
first token (:meth:`Steering.steering`). The P(YES) image judge
(:class:`~cir_module.rerank.scorer.LVLMReranker`) steers its query prefix; the change verifier
(:class:`~cir_module.rerank.verify.ChangeVerifyingReranker`) the shared half of its verify
prompt. ``cir_module.eval.rerank_sweep`` sets ``raug``, ``alpha`` and ``injection_layers``
directly between its runs."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import torch

from cir_module.rerank.injection import choose_layers, injected
from cir_module.rerank.raug import load_raug

__all__ = ["Steering"]


class Steering:
    """Mixin for a torch reranker with decoder ``layers`` and a ``device``."""

    layers: torch.nn.ModuleList
    device: torch.device

    @classmethod
    def from_pretrained(cls, path: str | Path, *, raug: str | Path | None = None, **kwargs):
        """Load the checkpoint (hub id or folder; the scorer's ``from_pretrained``) and,
        optionally, the RAug-Rep vectors ``cir raug extract`` wrote for it."""
        vectors = load_raug(raug)[0] if raug else None
        return super().from_pretrained(path, raug=vectors, **kwargs)  # type: ignore[misc]

    def setup_steering(
        self,
        raug: torch.Tensor | None = None,
        alpha: float = 0.6,
        layers: str | Sequence[int] = "all",
    ) -> None:
        """RAug-Rep vectors (layers x hidden; None: no injection), alpha and the layers."""
        if raug is not None and raug.shape[0] != len(self.layers):
            raise ValueError(f"RAug-Rep has {raug.shape[0]} layers, the model {len(self.layers)}")
        self.raug = raug.to(self.device) if raug is not None else None
        self.alpha = float(alpha)
        self.injection_layers = choose_layers(len(self.layers), layers)

    def describe_steering(self) -> dict:
        """What ``/meta`` shows of the injection."""
        return {
            "raug": self.raug is not None,
            "alpha": self.alpha,
            "injection_layers": self.injection_layers,
        }

    def steering(self) -> contextlib.AbstractContextManager:
        """The injection around a pass that contains the first token (nothing without
        vectors or layers)."""
        if self.raug is None or not self.injection_layers:
            return contextlib.nullcontext()
        return injected(self.layers, self.raug, self.alpha, self.injection_layers)
