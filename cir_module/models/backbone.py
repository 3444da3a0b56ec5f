"""CLIP-family backbones, loaded with ``from_pretrained`` or built from a config.

A family says which transformers classes hold the model, its image processor and its
tokenizer conventions. Adding a family is one more entry in ``FAMILIES``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    PretrainedConfig,
    PreTrainedModel,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
)

from cir_module.models.config import BackboneSpec

__all__ = ["FAMILIES", "Family", "build_backbone", "family_of"]


@dataclass(frozen=True)
class Family:
    """How one CLIP-family architecture is loaded and driven."""

    name: str
    model_cls: type[PreTrainedModel]
    config_cls: type[PretrainedConfig]
    image_processor_cls: type
    # SigLIP was trained on texts padded to the full length; CLIP pools at the EOS token.
    text_padding: str

    def visual_projection(self, model: PreTrainedModel) -> nn.Module:
        """The linear map from pooled vision features to the joint space (identity if none)."""
        return getattr(model, "visual_projection", None) or nn.Identity()


FAMILIES: dict[str, Family] = {
    "clip": Family("clip", CLIPModel, CLIPConfig, CLIPImageProcessor, "longest"),
    "siglip": Family("siglip", SiglipModel, SiglipConfig, SiglipImageProcessor, "max_length"),
}


def family_of(name: str) -> Family:
    """Look a family up by name, with an error that lists the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown backbone family {name!r}; known: {sorted(FAMILIES)}") from None


def build_backbone(spec: BackboneSpec, source: str | Path | None = None) -> PreTrainedModel:
    """Load from ``source`` or ``spec.pretrained``; else build from ``spec.config`` (random)."""
    family = family_of(spec.family)
    source = source or spec.pretrained
    if source is not None:
        return family.model_cls.from_pretrained(str(source))
    if spec.config is None:
        raise ValueError("a backbone spec needs either 'pretrained' or 'config'")
    config: Any = family.config_cls(**spec.config)
    return family.model_cls(config).eval()
