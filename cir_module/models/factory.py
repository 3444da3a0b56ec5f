"""``create_model``: build a :class:`CIRModel` from a registered config name or a JSON file."""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path

from cir_module.models.backbone import family_of, resolve_pretrained
from cir_module.models.config import CIRConfig
from cir_module.models.model import CIRModel

__all__ = ["create_model", "get_model_config", "list_models", "load_model"]


def _config_dir() -> Path:
    return Path(str(resources.files("cir_module.models") / "configs"))


def list_models() -> list[str]:
    """Names of the registered architectures (one JSON file each under ``configs/``)."""
    return sorted(p.stem for p in _config_dir().glob("*.json"))


def get_model_config(name: str | Path) -> CIRConfig:
    """The config registered as ``name``, or read from a JSON file path."""
    candidate = _config_dir() / f"{name}.json"
    if candidate.is_file():
        return CIRConfig.from_json(candidate)
    if Path(name).is_file():
        return CIRConfig.from_json(name)
    raise ValueError(f"unknown model {name!r}: not a file and not one of {list_models()}")


def create_model(
    model: str | Path | CIRConfig,
    pretrained: str | Path | None = None,
    *,
    num_scales: int | None = None,
    scale_embedding: bool | None = None,
    stem: str | None = None,
) -> CIRModel:
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
    )
    if num_scales is not None:
        config.pyramid.num_scales = num_scales
    if scale_embedding is not None:
        config.pyramid.scale_embedding = scale_embedding
    if stem is not None:
        config.pyramid.stem = stem
    if pretrained is not None:
        config.backbone.pretrained = str(pretrained)

    family = family_of(config.backbone.family)
    backbone = family.build(config.backbone, None)
    tokenizer = family.tokenizer(config.backbone, None)
    source = config.backbone.pretrained
    if source is not None:
        image_processor = family.image_processor_cls.from_pretrained(resolve_pretrained(source))
    else:
        side = family.vision_transformer(backbone).embeddings.image_size
        image_processor = family.image_processor_cls(
            size={"shortest_edge": side}
            if family.name != "siglip"
            else {"height": side, "width": side},
            crop_size={"height": side, "width": side},
        )
    return CIRModel(config, backbone, tokenizer, image_processor)


def load_model(path: str | Path) -> CIRModel:
    """Load a checkpoint folder (or a plain CLIP / SigLIP checkpoint) for serving."""
    return CIRModel.from_pretrained(path)
