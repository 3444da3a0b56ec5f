"""Captioners for RAR enrichment: dense, factual descriptions of stored images.

A captioner has an ``id`` (name and version, stored on every object it captions, so that a
re-run skips what the same captioner already did) and ``caption(items)``, one caption per
item. An item is the decoded image plus the object's properties.

- :class:`ChatCaptioner`: a vision-language model behind a chat backend
  (:mod:`cir_module.vlm.chat`: a local transformers checkpoint or an OpenAI-compatible
  endpoint), asked for the RAR caption recipe (:data:`CAPTION_PROMPT`).
- :class:`cir_module.data.captions.SceneGraphCaptioner` (beside the synthetic benchmark it
  captions): the scene graph written out, with noise standing in for a VLM's mistakes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image

from cir_module.vlm.chat import ChatBackend, ChatRequest

__all__ = ["CAPTION_PROMPT", "CaptionItem", "Captioner", "ChatCaptioner", "clip_words"]

MAX_WORDS = 100
CAPTION_PROMPT = (
    "Describe this image factually in at most 100 words: the main object or scene, colours, "
    "materials, any visible text or logos, and named entities (brands, landmarks, people) "
    "when you recognise them. No opinions and no aesthetic words."
)


@dataclass
class CaptionItem:
    """One stored object to caption."""

    uuid: str
    image: Image.Image
    properties: Mapping[str, Any]


class Captioner(Protocol):
    id: str

    def caption(self, items: Sequence[CaptionItem]) -> list[str]: ...


def clip_words(text: str, limit: int = MAX_WORDS) -> str:
    """At most ``limit`` words (the enrichment recipe's bound)."""
    words = text.split()
    return " ".join(words[:limit])


class ChatCaptioner:
    """Captions from a vision-language model behind a chat backend."""

    version = "1"

    def __init__(self, backend: ChatBackend, prompt: str = CAPTION_PROMPT) -> None:
        self.backend = backend
        self.prompt = prompt
        self.id = f"{backend.id}/caption-{self.version}"

    def caption(self, items: Sequence[CaptionItem]) -> list[str]:
        replies = self.backend.complete([ChatRequest(self.prompt, (item.image,)) for item in items])
        return [clip_words(reply) for reply in replies]
