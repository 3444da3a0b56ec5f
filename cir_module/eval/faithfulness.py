"""How faithful captions are to the synthetic benchmark's scene graphs (RAR's caption quality).

A caption in the tier's description format ("small solid red triangle at row 1, column 2;
...") is read back object by object: each ``;``-separated phrase names a cell after its last
" at " and attribute values before it. Objects are matched by cell. For every object of the
scene graph and every attribute, the caption says it **right**, says it **wrong**, or does not
say it (**missing**: the object is absent from the caption, or the phrase omits the value);
the three shares sum to one. Objects the caption places in an empty cell are **invented**.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cir_module.data.benchmark import Tier

__all__ = ["caption_faithfulness", "read_caption"]


def read_caption(caption: str, tier: Tier) -> dict[int, dict[str, str | None]]:
    """``{cell: {attribute: value or None}}`` for the objects a caption names; phrases
    without a known cell are skipped (they cannot be matched to an object)."""
    cells = {name: i for i, name in enumerate(tier.cell_names)}
    objects: dict[int, dict[str, str | None]] = {}
    for phrase in caption.split(";"):
        words, _, where = phrase.strip().rpartition(" at ")
        if where.strip().rstrip(".") not in cells:
            continue
        said = set(words.split())
        objects[cells[where.strip().rstrip(".")]] = {
            name: next((v for v in values if v in said), None) for name, values in tier.attributes
        }
    return objects


def caption_faithfulness(
    captions: Mapping[str, str], scenes: Mapping[str, Any], tier: Tier
) -> dict[str, Any]:
    """Per attribute the share of the scene graphs' values said right / wrong / missing,
    the share of objects found (at their cell), invented objects per image, and the share of
    captions equal to the tier's own description, over the images ``captions`` names."""
    names = [n for n in captions if n in scenes]
    if not names:
        raise ValueError("no caption names an image with a scene graph")
    counts = {name: {"right": 0, "wrong": 0, "missing": 0} for name, _ in tier.attributes}
    objects = found = invented = exact = 0
    for name in names:
        said = read_caption(captions[name], tier)
        scene = tier.scene_to_dict(scenes[name])
        exact += captions[name].strip() == tier.describe(scenes[name])
        truth_cells = {obj["cell"] for obj in scene}
        invented += sum(cell not in truth_cells for cell in said)
        for obj in scene:
            objects += 1
            phrase = said.get(obj["cell"])
            found += phrase is not None
            for attribute, _ in tier.attributes:
                value = phrase.get(attribute) if phrase else None
                if value is None:
                    counts[attribute]["missing"] += 1
                else:
                    counts[attribute]["right" if value == obj[attribute] else "wrong"] += 1
    return {
        "images": len(names),
        "captions_exact": exact / len(names),
        "objects": objects,
        "objects_found": found / objects,
        "invented_per_image": invented / len(names),
        "attributes": {
            attribute: {k: v / objects for k, v in c.items()} for attribute, c in counts.items()
        },
    }
