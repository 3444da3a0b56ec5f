"""``create_model``: build a :class:`CIRModel` from a registered config name or a JSON file;
``load_model``: load a checkpoint folder for serving."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cir_module.models.config import CIRConfig, get_model_config
from cir_module.models.lvlm import LVLMRetriever
from cir_module.models.model import CIR_CONFIG_NAME, CIRModel

__all__ = ["create_model", "load_model"]


def create_model(
    model: str | Path | CIRConfig,
    pretrained: str | Path | None = None,
    *,
    num_scales: int | None = None,
    scale_embedding: bool | None = None,
    stem: str | None = None,
) -> CIRModel | LVLMRetriever:
    """Build a model from a config (name, JSON path or :class:`CIRConfig`).

    ``pretrained`` (hub id or local folder) overrides the config's backbone source. Without
    one and without ``backbone.pretrained``, the backbone is randomly initialised from
    ``backbone.config`` with an offline word-level tokenizer: the path tests and from-scratch
    training take.
    """
    config = model if isinstance(model, CIRConfig) else get_model_config(model)
    config = dataclasses.replace(
        config,
        backbone=dataclasses.replace(config.backbone),
        pyramid=dataclasses.replace(config.pyramid),
        lvlm=dataclasses.replace(config.lvlm),
    )
    if num_scales is not None:
        config.pyramid.num_scales = num_scales
    if scale_embedding is not None:
        config.pyramid.scale_embedding = scale_embedding
    if stem is not None:
        config.pyramid.stem = stem
    if pretrained is not None:
        config.backbone.pretrained = str(pretrained)
    if config.backbone.family == "lvlm":  # a vision-language model reads every input
        return LVLMRetriever.from_config(config)
    return CIRModel.from_config(config)


def load_model(path: str | Path) -> CIRModel | LVLMRetriever:
    """Load a checkpoint folder (or a plain CLIP / SigLIP checkpoint) for serving."""
    saved = Path(path) / CIR_CONFIG_NAME
    if saved.is_file() and CIRConfig.from_json(saved).backbone.family == "lvlm":
        return LVLMRetriever.from_pretrained(path)
    return CIRModel.from_pretrained(path)
