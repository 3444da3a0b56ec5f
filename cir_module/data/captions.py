"""Captions of the synthetic benchmark's images, written from their scene graphs.

:class:`SceneGraphCaptioner` is a RAR captioner (the protocol of
:mod:`cir_module.enrich.captioners`) that needs no model: it writes out each image's scene
graph, with configurable noise (dropped objects, wrong attributes) standing in for a VLM's
mistakes. ``cir enrich --captioner scene-graph`` and ``cir rar captions`` use it.

:func:`caption_images` writes any captioner's captions of benchmark images to a JSON file,
resumably (``cir rar captions --captioner vlm``: the VLM trained here).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from cir_module.data.benchmark import load_scene_graphs, tier_of
from cir_module.data.shapes import COLORS, SHAPES, Scene, describe
from cir_module.enrich.captioners import Captioner, CaptionItem, clip_words
from cir_module.enrich.resumable import fill_json

__all__ = ["SceneGraphCaptioner", "caption_images"]


class SceneGraphCaptioner:
    """Captions from the benchmark's scene graphs, looked up by the object's ``name``.

    ``drop`` is the chance each shape is left out, ``wrong`` the chance one of its attributes
    (colour or shape) is replaced; the noise is a function of the image name and ``seed``.
    """

    version = "1"

    def __init__(
        self,
        scenes: Mapping[str, Scene],
        *,
        drop: float = 0.0,
        wrong: float = 0.0,
        seed: int = 0,
        name_property: str = "name",
        describe: Callable[[Any], str] = describe,
    ) -> None:
        self.scenes = scenes
        self.describe = describe  # the tier's own words for a scene
        self.drop, self.wrong, self.seed = drop, wrong, seed
        self.name_property = name_property
        self.id = f"scene-graph/{self.version} drop={drop:g} wrong={wrong:g} seed={seed}"

    @classmethod
    def from_benchmark(cls, root: str | Path, **kwargs: Any) -> SceneGraphCaptioner:
        """Every split's scene graphs of a benchmark folder written by ``cir data shapes``,
        described in its tier's words."""
        return cls(load_scene_graphs(root), describe=tier_of(root).describe, **kwargs)

    def caption(self, items: Sequence[CaptionItem]) -> list[str]:
        return [self._one(item) for item in items]

    def _one(self, item: CaptionItem) -> str:
        name = item.properties.get(self.name_property)
        if name not in self.scenes:
            raise KeyError(f"no scene graph for {self.name_property}={name!r}")
        rng = random.Random(f"{self.seed}:{name}")
        kept = []
        for obj in self.scenes[name]:
            if rng.random() < self.drop:
                continue
            if rng.random() < self.wrong:
                if rng.random() < 0.5:
                    obj = replace(obj, color=rng.choice([c for c in COLORS if c != obj.color]))
                else:
                    obj = replace(obj, shape=rng.choice([s for s in SHAPES if s != obj.shape]))
            kept.append(obj)
        count = len(kept)
        text = f"{count} shape{'s' if count != 1 else ''} on a plain background: "
        text += self.describe(kept)
        return clip_words(text)


def caption_images(
    captioner: Captioner,
    names: Sequence[str],
    open_image: Callable[[str], Any],
    out: str | Path,
    chunk: int = 64,
) -> tuple[int, float]:
    """Caption the images ``names`` (``open_image(name)`` gives each one) into the JSON file
    ``out`` (``{name: caption}``). Resumable: names already in ``out`` are skipped, and the
    file is rewritten (atomically) after every ``chunk`` images. Returns how many captions
    this call wrote and the seconds it spent opening and captioning them."""

    def caption(part: list[str]) -> list[str]:
        return captioner.caption([CaptionItem(n, open_image(n), {"name": n}) for n in part])

    _, made, seconds = fill_json(out, names, caption, chunk, desc="caption")
    return made, seconds
