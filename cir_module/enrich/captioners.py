"""Captioners for RAR enrichment: dense, factual descriptions of stored images.

A captioner has an ``id`` (name and version, stored on every object it captions, so that a
re-run skips what the same captioner already did) and ``caption(items)``, one caption per
item. An item is the decoded image plus the object's properties.

- :class:`ChatCaptioner`: a vision-language model behind a chat backend
  (:mod:`cir_module.enrich.backends`: a local transformers checkpoint or an OpenAI-compatible
  endpoint), asked for the RAR caption recipe (:data:`CAPTION_PROMPT`).
- :class:`SceneGraphCaptioner`: for the synthetic benchmark, the scene graph written out, with
  configurable noise (dropped objects, wrong attributes) standing in for a VLM's mistakes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from cir_module.data.shapes import COLORS, SHAPES, describe, scene_from_dict
from cir_module.enrich.backends import ChatBackend, ChatRequest

__all__ = ["CAPTION_PROMPT", "CaptionItem", "Captioner", "ChatCaptioner", "SceneGraphCaptioner"]

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
        replies = self.backend.complete([ChatRequest(self.prompt, item.image) for item in items])
        return [clip_words(reply) for reply in replies]


class SceneGraphCaptioner:
    """Captions from the benchmark's scene graphs, looked up by the object's ``name``.

    ``drop`` is the chance each shape is left out, ``wrong`` the chance one of its attributes
    (colour or shape) is replaced; the noise is a function of the image name and ``seed``.
    """

    version = "1"

    def __init__(
        self,
        scenes: Mapping[str, Any],
        *,
        drop: float = 0.0,
        wrong: float = 0.0,
        seed: int = 0,
        name_property: str = "name",
    ) -> None:
        self.scenes = scenes
        self.drop, self.wrong, self.seed = drop, wrong, seed
        self.name_property = name_property
        self.id = f"scene-graph/{self.version} drop={drop:g} wrong={wrong:g} seed={seed}"

    @classmethod
    def from_benchmark(cls, root: str | Path, **kwargs: Any) -> SceneGraphCaptioner:
        """Every split's scene graphs of a benchmark folder written by ``cir data shapes``."""
        scenes: dict[str, Any] = {}
        for path in sorted(Path(root, "scene_graphs").glob("scenes.*.json")):
            scenes.update(json.loads(path.read_text()))
        return cls(scenes, **kwargs)

    def caption(self, items: Sequence[CaptionItem]) -> list[str]:
        return [self._one(item) for item in items]

    def _one(self, item: CaptionItem) -> str:
        name = item.properties.get(self.name_property)
        if name not in self.scenes:
            raise KeyError(f"no scene graph for {self.name_property}={name!r}")
        rng = random.Random(f"{self.seed}:{name}")
        kept = []
        for obj in scene_from_dict(self.scenes[name]):
            if rng.random() < self.drop:
                continue
            if rng.random() < self.wrong:
                if rng.random() < 0.5:
                    obj = replace(obj, color=rng.choice([c for c in COLORS if c != obj.color]))
                else:
                    obj = replace(obj, shape=rng.choice([s for s in SHAPES if s != obj.shape]))
            kept.append(obj)
        count = len(kept)
        text = f"{count} shape{'s' if count != 1 else ''} on a plain background: " + describe(kept)
        return clip_words(text)
