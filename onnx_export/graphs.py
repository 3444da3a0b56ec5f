"""The graphs a model is exported as, each a thin torch wrapper (:func:`graphs_of`).

A :class:`CIRModel`: a composed query needs the reference's token states and the text's token
states, a gallery image only its embedding, a text query only its embedding. Exporting the
image tower, the text tower and the fusion head separately lets the runtime run exactly the
towers a request needs, and batch image work from gallery imports and composed queries
together.

An :class:`LVLMRetriever` (the ``lvlm`` family) reads each input in one pass of its language
model: three whole graphs, ``image``, ``text`` and ``composed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cir_module.models import CIRModel, LVLMRetriever

__all__ = [
    "GRAPHS",
    "LVLM_GRAPHS",
    "FusionGraph",
    "GraphSpec",
    "ImageGraph",
    "LVLMGraph",
    "TextGraph",
    "graph_feeds",
    "graphs_of",
]


class ImageGraph(nn.Module):
    """``pixel_values [batch, 3, size, size]`` -> unit ``image_embeds`` and ``image_tokens``."""

    def __init__(self, model: CIRModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, tokens = self.model.image_encoder.encode(pixel_values)
        return F.normalize(features, dim=-1), tokens


class TextGraph(nn.Module):
    """``input_ids``, ``attention_mask`` -> unit ``text_embeds`` and ``text_tokens``."""

    def __init__(self, model: CIRModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        embeds, tokens, _ = self.model.encode_text_states(input_ids, attention_mask)
        return embeds, tokens


class FusionGraph(nn.Module):
    """Both towers' outputs (and the text mask) -> the unit composed ``query``."""

    def __init__(self, model: CIRModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        image_embeds: torch.Tensor,
        image_tokens: torch.Tensor,
        text_embeds: torch.Tensor,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
    ) -> torch.Tensor:
        return self.model.fusion(
            image_embeds,
            text_embeds,
            image_tokens=image_tokens,
            text_tokens=text_tokens,
            text_mask=text_mask,
        )


@dataclass(frozen=True)
class GraphSpec:
    """How one graph is exported: its wrapper, names and dynamic axes."""

    name: str
    wrapper: type[nn.Module]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]


GRAPHS: tuple[GraphSpec, ...] = (
    GraphSpec(
        "image",
        ImageGraph,
        ("pixel_values",),
        ("image_embeds", "image_tokens"),
        {"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}, "image_tokens": {0: "batch"}},
    ),
    GraphSpec(
        "text",
        TextGraph,
        ("input_ids", "attention_mask"),
        ("text_embeds", "text_tokens"),
        {
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
            "text_embeds": {0: "batch"},
            "text_tokens": {0: "batch", 1: "sequence"},
        },
    ),
    GraphSpec(
        "fusion",
        FusionGraph,
        ("image_embeds", "image_tokens", "text_embeds", "text_tokens", "text_mask"),
        ("query",),
        {
            "image_embeds": {0: "batch"},
            "image_tokens": {0: "batch"},
            "text_embeds": {0: "batch"},
            "text_tokens": {0: "batch", 1: "sequence"},
            "text_mask": {0: "batch", 1: "sequence"},
            "query": {0: "batch"},
        },
    ),
)


class LVLMGraph(nn.Module):
    """One input kind of an ``lvlm`` model, whole: pixels and / or token ids (with the kind's
    cue, from its ``tokenize``) -> the unit embedding."""

    kind = "composed"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        pixels = inputs[0] if self.kind != "text" else None
        ids, mask = inputs[-2:] if self.kind != "image" else (None, None)
        return self.model._encode(self.kind, pixels, ids, mask)


class LVLMImageGraph(LVLMGraph):
    kind = "image"


class LVLMTextGraph(LVLMGraph):
    kind = "text"


_PIXELS = {"pixel_values": {0: "batch"}}
_IDS = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}

LVLM_GRAPHS: tuple[GraphSpec, ...] = (
    GraphSpec(
        "image",
        LVLMImageGraph,
        ("pixel_values",),
        ("image_embeds",),
        {**_PIXELS, "image_embeds": {0: "batch"}},
    ),
    GraphSpec(
        "text",
        LVLMTextGraph,
        ("input_ids", "attention_mask"),
        ("text_embeds",),
        {**_IDS, "text_embeds": {0: "batch"}},
    ),
    GraphSpec(
        "composed",
        LVLMGraph,
        ("pixel_values", "input_ids", "attention_mask"),
        ("query",),
        {**_PIXELS, **_IDS, "query": {0: "batch"}},
    ),
)


def graphs_of(model: nn.Module) -> tuple[GraphSpec, ...]:
    """The graphs ``model`` is exported as."""
    return LVLM_GRAPHS if isinstance(model, LVLMRetriever) else GRAPHS


@torch.no_grad()
def graph_feeds(model: nn.Module, images: list, texts: list[str]) -> dict[str, tuple]:
    """Each graph's inputs for ``images`` and ``texts`` (the export traces on such inputs,
    and checks parity on them)."""
    pixels = model.pixels(images)
    if isinstance(model, LVLMRetriever):
        text = model.tokenize(texts, kind="text")
        composed = model.tokenize(texts)
        return {
            "image": (pixels,),
            "text": (text["input_ids"], text["attention_mask"]),
            "composed": (pixels, composed["input_ids"], composed["attention_mask"]),
        }
    tokens = model.tokenize(texts)
    image_embeds, image_tokens = model.image_encoder.encode(pixels)
    text_embeds, text_tokens, mask = model.encode_text_states(**tokens)
    image_embeds = F.normalize(image_embeds, dim=-1)
    return {
        "image": (pixels,),
        "text": (tokens["input_ids"], tokens["attention_mask"]),
        "fusion": (image_embeds, image_tokens, text_embeds, text_tokens, mask),
    }
