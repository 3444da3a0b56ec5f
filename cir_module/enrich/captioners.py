"""Captioners for RAR enrichment: dense, factual descriptions of stored images.

A captioner has an ``id`` (name and version, stored on every object it captions, so that a
re-run skips what the same captioner already did) and ``caption(items)``, one caption per
item. An item is the decoded image plus the object's properties.

- :class:`ChatCaptioner`: a vision-language model behind a chat backend
  (:mod:`cir_module.vlm.chat`: a local transformers checkpoint or an OpenAI-compatible
  endpoint), asked for the RAR caption recipe (:data:`CAPTION_PROMPT`); the VLM trained here
  (``cir vlm train``) is asked the request its caption stage learned
  (:func:`trained_vlm_captioner`).
- :class:`cir_module.data.captions.SceneGraphCaptioner` (beside the synthetic benchmark it
  captions): the scene graph written out, with noise standing in for a VLM's mistakes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from cir_module.vlm.chat import ChatBackend, ChatRequest

__all__ = [
    "CAPTION_PROMPT",
    "CaptionItem",
    "Captioner",
    "ChatCaptioner",
    "clip_words",
    "trained_vlm_captioner",
]

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
    """Captions from a vision-language model behind a chat backend. ``name`` names the
    request in the captioner's id, so captions asked another way are not taken for these."""

    version = "1"

    def __init__(
        self, backend: ChatBackend, prompt: str = CAPTION_PROMPT, name: str = "caption"
    ) -> None:
        self.backend = backend
        self.prompt = prompt
        self.id = f"{backend.id}/{name}-{self.version}"

    def caption(self, items: Sequence[CaptionItem]) -> list[str]:
        replies = self.backend.complete([ChatRequest(self.prompt, (item.image,)) for item in items])
        return [clip_words(reply) for reply in replies]


def trained_vlm_captioner(path: str | Path, batch_size: int = 16) -> ChatCaptioner:
    """The VLM trained here (a ``cir vlm train`` stage's ``model/``, caption stage or later)
    as a captioner: asked :data:`~cir_module.vlm.prompt.DESCRIBE_REQUEST`, the request its
    caption stage learned, at the image side its folder records. Its descriptions (up to 8
    objects of about 9 words each in the hard tier) fit the recipe's 100 words."""
    from cir_module.vlm.chat import TransformersChat
    from cir_module.vlm.prompt import DESCRIBE_REQUEST

    backend = TransformersChat(path, batch_size=batch_size, max_new_tokens=256)
    return ChatCaptioner(backend, prompt=DESCRIBE_REQUEST, name="describe")
