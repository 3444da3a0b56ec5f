"""What every vision-language-model role shares: the reranker (``cir_module.rerank``), the
captioners and the query enhancer (``cir_module.enrich``), the ``lvlm`` retrieval family
(``cir_module.models.lvlm``).

| module | what it holds |
| --- | --- |
| ``family`` | one adapter per model family (Qwen2-VL, Qwen2.5-VL): model class, image tokens,
  decoder layers, multimodal positions |
| ``prompt`` | templates with ``{image}`` marks into token ids, images into patches, M-RoPE |
| ``changes`` | what changed between two scene descriptions, read from their text |
| ``chat`` | chat backends: a local checkpoint (transformers) or an OpenAI-compatible endpoint |
| ``tiny`` | small Qwen2-VL-type models built offline (tokenizer trained here, random weights) |
| ``layers`` | the vision tower (batched) and decoder layers in plain tensor ops: one code path
  for torch and ONNX |

The names that need torch or transformers are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cir_module.lazy import lazy_exports


def _prompt_names() -> list[str]:
    from cir_module.vlm import prompt

    return prompt.__all__


if TYPE_CHECKING:
    from cir_module.vlm.changes import description_changes, description_facts
    from cir_module.vlm.chat import (
        ChatBackend,
        ChatError,
        ChatRequest,
        OpenAIChat,
        TransformersChat,
    )
    from cir_module.vlm.family import FAMILIES, FamilyAdapter, adapter_for
    from cir_module.vlm.prompt import (
        COMPARE_PROMPT,
        DESCRIBE_PROMPT,
        DESCRIBE_REQUEST,
        IMAGE,
        REWRITE_PROMPT,
        REWRITE_REQUEST,
        VERIFY_PROMPT,
        VERIFY_REQUEST,
        PromptCodec,
        mrope_positions,
    )
    from cir_module.vlm.tiny import build_tiny_vlm, train_tokenizer

__all__ = [
    "COMPARE_PROMPT",
    "DESCRIBE_PROMPT",
    "DESCRIBE_REQUEST",
    "FAMILIES",
    "IMAGE",
    "REWRITE_PROMPT",
    "REWRITE_REQUEST",
    "VERIFY_PROMPT",
    "VERIFY_REQUEST",
    "ChatBackend",
    "ChatError",
    "ChatRequest",
    "FamilyAdapter",
    "OpenAIChat",
    "PromptCodec",
    "TransformersChat",
    "adapter_for",
    "build_tiny_vlm",
    "description_changes",
    "description_facts",
    "mrope_positions",
    "train_tokenizer",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(
            ("ChatBackend", "ChatError", "ChatRequest", "OpenAIChat", "TransformersChat"),
            "cir_module.vlm.chat",
        ),
        **dict.fromkeys(("description_changes", "description_facts"), "cir_module.vlm.changes"),
        **dict.fromkeys(("FAMILIES", "FamilyAdapter", "adapter_for"), "cir_module.vlm.family"),
        # The prompt module needs numpy and Pillow only; its names are listed once, there.
        **dict.fromkeys(_prompt_names(), "cir_module.vlm.prompt"),
        **dict.fromkeys(("build_tiny_vlm", "train_tokenizer"), "cir_module.vlm.tiny"),
    },
)
