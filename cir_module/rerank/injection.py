"""Reasoning-augmented representations into a decoder: add, renormalise, remove exactly.

PMTFR's training-free refinement: at each chosen layer L the first token's hidden state h
(the layer's output at position 0) becomes h + alpha * p_L, rescaled to the norm h had.
With alpha = 0 that is h * (|h| / |h|) = h exactly, so the logits are bit-identical.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # choose_layers is read where torch is absent (the ONNX rerankers)
    import torch
    from torch import nn

__all__ = ["LAYER_CHOICES", "capture_last_token", "choose_layers", "injected"]

LAYER_CHOICES = ("all", "first", "middle", "last")


def choose_layers(num_layers: int, which: str | Sequence[int]) -> list[int]:
    """Layer indices for ``all`` / ``first`` / ``middle`` / ``last`` or an explicit list.

    ``last`` is the last layer whose steered output is still read: the next to last. The
    injection moves a layer's output at the first token, which only later layers attend to,
    so steering the very last layer cannot change the answer at the prompt's end."""
    if not isinstance(which, str):
        layers = sorted({int(i) for i in which})
        if not layers or layers[0] < 0 or layers[-1] >= num_layers:
            raise ValueError(f"layers {list(which)} are not within 0..{num_layers - 1}")
        return layers
    choices = {
        "all": list(range(num_layers)),
        "first": [0],
        "middle": [num_layers // 2],
        "last": [max(num_layers - 2, 0)],
    }
    if which not in choices:
        raise ValueError(f"layers must be one of {LAYER_CHOICES} or a list of indices")
    return choices[which]


def _hidden(output: torch.Tensor | tuple) -> torch.Tensor:
    # Decoder layers return the hidden states alone or first in a tuple, by version.
    return output[0] if isinstance(output, tuple) else output


def _replace_hidden(output: torch.Tensor | tuple, hidden: torch.Tensor) -> torch.Tensor | tuple:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


@contextlib.contextmanager
def injected(
    layers: nn.ModuleList, vectors: torch.Tensor, alpha: float, which: Sequence[int]
) -> Iterator[None]:
    """Within the block, every forward through ``layers[i]`` (``i`` in ``which``) steers
    position 0 by ``alpha * vectors[i]`` and keeps its norm. Use it for passes that contain
    the first token (a full prompt, or the shared prefix); the hooks are gone on exit."""
    import torch

    if vectors.shape[0] != len(layers):
        raise ValueError(f"{vectors.shape[0]} injection vectors for {len(layers)} layers")

    def hook(index: int):
        def steer(_module: nn.Module, _inputs: tuple, output):
            hidden = _hidden(output)
            first = hidden[:, 0]
            moved = first + alpha * vectors[index].to(first.dtype)
            moved = moved * (first.norm(dim=-1, keepdim=True) / moved.norm(dim=-1, keepdim=True))
            hidden = torch.cat([moved.unsqueeze(1), hidden[:, 1:]], dim=1)
            return _replace_hidden(output, hidden)

        return steer

    handles = [layers[i].register_forward_hook(hook(i)) for i in which]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def capture_last_token(layers: nn.ModuleList) -> Iterator[list[torch.Tensor | None]]:
    """Within the block, ``captured[i]`` holds layer i's output at the last position of the
    latest forward (batch x hidden): the points where :func:`injected` acts."""
    captured: list[torch.Tensor | None] = [None] * len(layers)

    def hook(index: int):
        def keep(_module: nn.Module, _inputs: tuple, output) -> None:
            captured[index] = _hidden(output)[:, -1].detach()

        return keep

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()
