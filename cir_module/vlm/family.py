"""What the VLM roles (reranker, captioner, query enhancer) need to know about one family of
vision-language models.

A family adapter names the model class, the special tokens that frame an image, how many
placeholder tokens one image becomes, where the decoder layers are and how multimodal
positions are computed. Qwen2-VL and Qwen2.5-VL share all of it; another family (LLaVA,
InternVL, ...) gets its own adapter and registers it under its ``config.model_type``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cir_module.vlm.folder import VLM_SETTINGS, saved_settings

__all__ = ["FAMILIES", "VLM_SETTINGS", "FamilyAdapter", "adapter_for", "saved_settings"]


@dataclass(frozen=True)
class FamilyAdapter:
    """The family-specific parts of a VLM, as data plus a few accessors."""

    name: str
    load_model: Callable[..., nn.Module]
    load_image_processor: Callable[..., Any]
    image_start: str
    image_pad: str
    image_end: str
    decoder_layers: Callable[[nn.Module], nn.ModuleList]
    lm_head: Callable[[nn.Module], nn.Module]
    rope_index: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

    def image_tokens(self, model: nn.Module, side: int) -> int:
        """Placeholder tokens one ``side`` x ``side`` image becomes in the prompt."""
        vision = model.config.vision_config
        patches = side // vision.patch_size
        return patches * patches // (vision.spatial_merge_size**2)


def _qwen_model(path: str, **kwargs: Any) -> nn.Module:
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(path, **kwargs)


def _qwen_image_processor(path: str) -> Any:
    # The slow (numpy / Pillow) processor: the fast one and the video processor import
    # torchvision, which does not work beside a CPU build of torch.
    from transformers import Qwen2VLImageProcessor

    return Qwen2VLImageProcessor.from_pretrained(path)


def _qwen_rope_index(model: nn.Module, input_ids: torch.Tensor, grid_thw: torch.Tensor):
    position_ids, _ = model.model.get_rope_index(input_ids, grid_thw, None, None)
    return position_ids


_QWEN = dict(
    load_model=_qwen_model,
    load_image_processor=_qwen_image_processor,
    image_start="<|vision_start|>",
    image_pad="<|image_pad|>",
    image_end="<|vision_end|>",
    decoder_layers=lambda m: m.model.language_model.layers,
    lm_head=lambda m: m.lm_head,
    rope_index=_qwen_rope_index,
)

FAMILIES: dict[str, FamilyAdapter] = {
    "qwen2_vl": FamilyAdapter(name="qwen2_vl", **_QWEN),
    "qwen2_5_vl": FamilyAdapter(name="qwen2_5_vl", **_QWEN),
}


def adapter_for(model_type: str) -> FamilyAdapter:
    """The adapter registered for a checkpoint's ``config.model_type``."""
    try:
        return FAMILIES[model_type]
    except KeyError:
        raise ValueError(
            f"no VLM adapter for model_type {model_type!r}; known: {sorted(FAMILIES)}"
        ) from None
