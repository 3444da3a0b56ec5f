"""Scenes of simple shapes on a 3x3 grid, edited by text (in the spirit of the CSS data set).

A scene is a sorted tuple of objects (cell, shape, colour, size), at most one per cell.
``render`` draws it with positional jitter and background noise. An edit is one
``Edit``: an object replaced by another (change colour / shape / size, move), added or removed.
``random_edit`` draws one, ``apply_edit`` applies it, ``diff_scenes`` recovers it from two
scenes, and ``phrase_edit`` words it with one of two disjoint phrasing sets: ``"train"`` and
``"heldout"`` (other templates, verbs and synonyms, to measure generalisation to unseen
wordings). ``modify`` does all of it at once. Everything is deterministic from the
``random.Random`` passed in.

Objects are referred to by position ("the top-left one", "the circle at top-left") or by a
subset of their attributes ("the small red circle", "the red one"), and only by a reference
that matches exactly one object of the scene.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from itertools import combinations
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "CELL_NAMES",
    "COLORS",
    "MAX_OBJECTS",
    "MIN_OBJECTS",
    "PHRASINGS",
    "SHAPES",
    "SIZES",
    "TEMPLATES",
    "WORDS",
    "Caption",
    "Edit",
    "Scene",
    "ShapeObject",
    "apply_edit",
    "describe",
    "diff_scenes",
    "matching_objects",
    "modify",
    "phrase_edit",
    "random_edit",
    "random_images",
    "random_scene",
    "render",
    "scene_from_dict",
    "scene_key",
    "scene_to_dict",
    "template_words",
]

COLORS: dict[str, tuple[int, int, int]] = {
    "gray": (128, 128, 128),
    "red": (220, 40, 40),
    "blue": (40, 70, 220),
    "green": (40, 170, 60),
    "brown": (140, 90, 40),
    "purple": (140, 50, 190),
    "cyan": (40, 200, 210),
    "yellow": (235, 210, 40),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
SIZES = ("small", "large")
CELL_NAMES = (
    "top-left",
    "top-middle",
    "top-right",
    "middle-left",
    "center",
    "middle-right",
    "bottom-left",
    "bottom-middle",
    "bottom-right",
)
MIN_OBJECTS = 2
MAX_OBJECTS = 5
ATTRIBUTES = ("cell", "shape", "color", "size")


@dataclass(frozen=True, order=True)
class ShapeObject:
    cell: int
    shape: str
    color: str
    size: str


Scene = tuple[ShapeObject, ...]


def random_scene(
    rng: random.Random, min_objects: int = MIN_OBJECTS, max_objects: int = MAX_OBJECTS
) -> Scene:
    """A scene of ``min_objects``-``max_objects`` objects in distinct cells."""
    cells = rng.sample(range(9), rng.randint(min_objects, max_objects))
    return tuple(
        sorted(
            ShapeObject(c, rng.choice(SHAPES), rng.choice(list(COLORS)), rng.choice(SIZES))
            for c in cells
        )
    )


def describe(scene: Scene) -> str:
    """A short readable description, e.g. ``large red circle at top-left; ...``."""
    return "; ".join(f"{o.size} {o.color} {o.shape} at {CELL_NAMES[o.cell]}" for o in scene)


def scene_key(scene: Scene) -> str:
    """A compact canonical string for a scene (equal scenes give equal keys)."""
    return ";".join(f"{o.cell}:{o.shape}:{o.color}:{o.size}" for o in sorted(scene))


def scene_to_dict(scene: Scene) -> list[dict[str, Any]]:
    """The scene graph as JSON-serialisable data: one ``{cell, shape, color, size}`` per object."""
    return [
        {"cell": o.cell, "shape": o.shape, "color": o.color, "size": o.size} for o in sorted(scene)
    ]


def scene_from_dict(data: Iterable[Mapping[str, Any]]) -> Scene:
    """Inverse of ``scene_to_dict``; validates every value and that cells are distinct."""
    objects = []
    for item in data:
        obj = ShapeObject(int(item["cell"]), item["shape"], item["color"], item["size"])
        if not (
            0 <= obj.cell < 9 and obj.shape in SHAPES and obj.color in COLORS and obj.size in SIZES
        ):
            raise ValueError(f"invalid object in scene graph: {dict(item)!r}")
        objects.append(obj)
    if len({o.cell for o in objects}) != len(objects):
        raise ValueError("two objects share a cell")
    return tuple(sorted(objects))


def random_images(n: int, seed: int = 0) -> list[Image.Image]:
    """``n`` rendered random scenes, deterministic from ``seed`` (tests and benchmarks)."""
    rng = random.Random(seed)
    return [render(random_scene(rng), rng) for _ in range(n)]


def render(scene: Scene, rng: random.Random, size: int = 128) -> Image.Image:
    """Draw the scene with small jitter and mild noise, so exact pixel matching fails."""
    noise = np.frombuffer(rng.randbytes(size * size), dtype=np.uint8)
    base = 235 + (noise.astype(np.int16) % 11) - 5
    image = Image.fromarray(np.repeat(base.reshape(size, size, 1), 3, axis=2).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    cell = size / 3
    for obj in scene:
        radius = cell * (0.38 if obj.size == "large" else 0.2)
        jitter = cell * 0.06
        cx = (obj.cell % 3 + 0.5) * cell + rng.uniform(-jitter, jitter)
        cy = (obj.cell // 3 + 0.5) * cell + rng.uniform(-jitter, jitter)
        _draw_shape(draw, obj.shape, cx, cy, radius, COLORS[obj.color])
    return image


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    cx: float,
    cy: float,
    r: float,
    fill: tuple[int, int, int],
) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    else:  # cross
        w = r / 3
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)


# --- edits -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Edit:
    """One edit: ``old`` (an object of the scene) becomes ``new``.

    ``old is None`` adds ``new``; ``new is None`` removes ``old``; otherwise the two differ in
    exactly one of cell (a move), shape, colour or size.
    """

    old: ShapeObject | None
    new: ShapeObject | None

    def __post_init__(self) -> None:
        if self.old is None and self.new is None:
            raise ValueError("an edit needs an old or a new object")
        if self.old is not None and self.new is not None and len(self._changed()) != 1:
            raise ValueError(f"old and new must differ in exactly one attribute: {self}")

    def _changed(self) -> list[str]:
        return [a for a in ATTRIBUTES if getattr(self.old, a) != getattr(self.new, a)]

    @property
    def op(self) -> str:
        """``add``, ``remove``, ``move``, ``shape``, ``color`` or ``size``."""
        if self.old is None:
            return "add"
        if self.new is None:
            return "remove"
        changed = self._changed()[0]
        return "move" if changed == "cell" else changed


def _free_cells(scene: Scene) -> list[int]:
    taken = {o.cell for o in scene}
    return [c for c in range(9) if c not in taken]


def random_edit(
    scene: Scene,
    rng: random.Random,
    obj: ShapeObject | None = None,
    min_objects: int = MIN_OBJECTS,
    max_objects: int = MAX_OBJECTS,
) -> Edit:
    """A random valid edit of ``scene``, of ``obj`` when given (then never an ``add``).

    The operation is uniform over those that keep the object count within
    ``min_objects``-``max_objects`` and need no cell that is not free.
    """
    if not scene:
        raise ValueError("cannot edit an empty scene")
    free = _free_cells(scene)
    ops = ["color", "shape", "size"]
    if free:
        ops.append("move")
    if len(scene) > min_objects:
        ops.append("remove")
    if obj is None and free and len(scene) < max_objects:
        ops.append("add")
    op = rng.choice(ops)
    if op == "add":
        added = ShapeObject(
            rng.choice(free), rng.choice(SHAPES), rng.choice(list(COLORS)), rng.choice(SIZES)
        )
        return Edit(None, added)
    old = rng.choice(scene) if obj is None else obj
    if op == "remove":
        return Edit(old, None)
    if op == "move":
        return Edit(old, replace(old, cell=rng.choice(free)))
    if op == "color":
        return Edit(old, replace(old, color=rng.choice([c for c in COLORS if c != old.color])))
    if op == "shape":
        return Edit(old, replace(old, shape=rng.choice([s for s in SHAPES if s != old.shape])))
    return Edit(old, replace(old, size="small" if old.size == "large" else "large"))


def apply_edit(scene: Scene, edit: Edit) -> Scene:
    """The scene after ``edit``; raises ``ValueError`` if the edit does not fit the scene."""
    objects = list(scene)
    if edit.old is not None:
        if edit.old not in objects:
            raise ValueError(f"{edit.old} is not in the scene")
        objects.remove(edit.old)
    if edit.new is not None:
        if edit.new.cell in {o.cell for o in objects}:
            raise ValueError(f"cell {edit.new.cell} is taken")
        objects.append(edit.new)
    return tuple(sorted(objects))


def diff_scenes(a: Scene, b: Scene) -> Edit | None:
    """The single edit that turns ``a`` into ``b``, or None if they are not one edit apart."""
    only_a = [o for o in a if o not in b]
    only_b = [o for o in b if o not in a]
    if len(only_a) > 1 or len(only_b) > 1 or not (only_a or only_b):
        return None
    try:
        edit = Edit(only_a[0] if only_a else None, only_b[0] if only_b else None)
        # ``apply_edit`` also rejects an added object landing on an occupied cell.
        return edit if apply_edit(a, edit) == tuple(sorted(b)) else None
    except ValueError:
        return None


# --- phrasing ----------------------------------------------------------------------------

PHRASINGS = ("train", "heldout")

# Placeholders: {ref} a reference to the edited object (without article), {color} {shape}
# {size} the new value, {obj} an added object ("small red circle"), {cell} a cell name.
# Size edits use "grow" or "shrink" by direction, so that verbs like "enlarge" can imply it.
_TRAIN_SIZE = (
    "make the {ref} {size}",
    "change the {ref} to {size}",
    "turn the {ref} {size}",
    "resize the {ref} to {size}",
    "the {ref} should be {size}",
)
_HELDOUT_SIZE = (
    "let the {ref} be {size}",
    "the {ref} needs to be {size}",
)
TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {
        "color": (
            "make the {ref} {color}",
            "change the {ref} to {color}",
            "turn the {ref} {color}",
            "paint the {ref} {color}",
            "the {ref} should be {color}",
            "color the {ref} {color}",
        ),
        "shape": (
            "turn the {ref} into a {shape}",
            "replace the {ref} with a {shape}",
            "make the {ref} a {shape}",
            "change the {ref} into a {shape}",
            "the {ref} should be a {shape}",
        ),
        "grow": _TRAIN_SIZE,
        "shrink": _TRAIN_SIZE,
        "remove": (
            "remove the {ref}",
            "delete the {ref}",
            "take away the {ref}",
            "erase the {ref}",
            "take the {ref} out",
        ),
        "add": (
            "add a {obj} at {cell}",
            "put a {obj} at the {cell}",
            "place a {obj} at {cell}",
            "insert a {obj} at the {cell}",
            "draw a {obj} at {cell}",
        ),
        "move": (
            "move the {ref} to {cell}",
            "put the {ref} at the {cell}",
            "relocate the {ref} to {cell}",
            "place the {ref} in the {cell}",
            "the {ref} goes to the {cell}",
        ),
        # Position references; {shape} is the object's own shape.
        "ref_cell": (
            "{cell} one",
            "{shape} at {cell}",
            "one at the {cell}",
            "object at {cell}",
            "{shape} at the {cell}",
        ),
    },
    "heldout": {
        "color": (
            "recolour the {ref} {color}",
            "dye the {ref} {color}",
            "tint the {ref} {color}",
            "I want the {ref} in {color}",
            "switch the {ref} over to {color}",
            "the {ref} needs a coat of {color}",
        ),
        "shape": (
            "swap the {ref} for a {shape}",
            "transform the {ref} into a {shape}",
            "convert the {ref} to a {shape}",
            "exchange the {ref} for a {shape}",
            "use a {shape} instead of the {ref}",
        ),
        "grow": ("enlarge the {ref}", "scale up the {ref}", "blow up the {ref}", *_HELDOUT_SIZE),
        "shrink": (
            "shrink the {ref}",
            "scale down the {ref}",
            "reduce the size of the {ref}",
            *_HELDOUT_SIZE,
        ),
        "remove": (
            "get rid of the {ref}",
            "eliminate the {ref}",
            "discard the {ref}",
            "lose the {ref}",
            "the {ref} has to go",
        ),
        "add": (
            "include a {obj} in the {cell}",
            "introduce a {obj} in the {cell}",
            "stick a {obj} in the {cell}",
            "the {cell} gets a {obj}",
            "also show a {obj} in the {cell}",
        ),
        "move": (
            "shift the {ref} into the {cell}",
            "slide the {ref} over to the {cell}",
            "transfer the {ref} to the {cell}",
            "reposition the {ref} in the {cell}",
            "the {ref} belongs in the {cell}",
        ),
        "ref_cell": (
            "{shape} in the {cell}",
            "shape in the {cell}",
            "thing in the {cell}",
            "{cell} {shape}",
        ),
    },
}

# Words for values, per phrasing set. A tuple offers synonyms (one is drawn each time);
# "violet" and similar are left out: "grey" is the one colour synonym that is unambiguous.
WORDS: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
    "train": {
        "color": {c: (c,) for c in COLORS},
        "shape": {s: (s,) for s in SHAPES},
        "size": {"small": ("small",), "large": ("large",)},
        "cell": {str(i): (name,) for i, name in enumerate(CELL_NAMES)},
        # Noun for an attribute reference that leaves the shape out: "the red one".
        "noun": {"": ("one", "object")},
    },
    "heldout": {
        "color": {c: ("grey",) if c == "gray" else (c,) for c in COLORS},
        "shape": {s: (s,) for s in SHAPES},
        "size": {"small": ("tiny",), "large": ("big", "huge")},
        "cell": {
            str(i): (name,)
            for i, name in enumerate(
                (
                    "upper left corner",
                    "upper middle",
                    "upper right corner",
                    "centre left",
                    "centre",
                    "centre right",
                    "lower left corner",
                    "lower middle",
                    "lower right corner",
                )
            )
        },
        "noun": {"": ("shape", "thing")},
    },
}


@dataclass(frozen=True)
class Caption:
    """A modification text with how it was made.

    ``reference`` holds the attributes the text uses to name the edited object (``{"cell": 0}``,
    ``{"color": "red", "shape": "circle"}``, ...), None for an ``add``; ``template`` is the
    operation template the text was formatted from.
    """

    text: str
    template: str
    reference: dict[str, str | int] | None


def matching_objects(scene: Scene, reference: Mapping[str, str | int]) -> list[ShapeObject]:
    """The objects of ``scene`` that have every attribute value in ``reference``."""
    return [o for o in scene if all(getattr(o, a) == v for a, v in reference.items())]


def _word(phrasing: str, kind: str, value: str | int, rng: random.Random) -> str:
    return rng.choice(WORDS[phrasing][kind][str(value)])


def _attribute_references(scene: Scene, obj: ShapeObject) -> list[dict[str, str | int]]:
    """Every non-empty subset of (size, colour, shape) that singles ``obj`` out."""
    found = []
    for n in (1, 2, 3):
        for names in combinations(("size", "color", "shape"), n):
            reference = {a: getattr(obj, a) for a in names}
            if matching_objects(scene, reference) == [obj]:
                found.append(reference)
    return found


def _reference_text(
    scene: Scene, obj: ShapeObject, rng: random.Random, phrasing: str
) -> tuple[str, dict[str, str | int]]:
    """Name ``obj`` by attributes (half the time, when some subset is unique) or by position."""
    by_attributes = _attribute_references(scene, obj)
    if by_attributes and rng.random() < 0.5:
        reference = rng.choice(by_attributes)
        words = [_word(phrasing, a, reference[a], rng) for a in ("size", "color") if a in reference]
        noun = reference.get("shape", "")
        words.append(_word(phrasing, "shape" if noun else "noun", noun, rng))
        return " ".join(words), reference
    template = rng.choice(TEMPLATES[phrasing]["ref_cell"])
    reference = {"cell": obj.cell} | ({"shape": obj.shape} if "{shape}" in template else {})
    text = template.format(
        cell=_word(phrasing, "cell", obj.cell, rng), shape=_word(phrasing, "shape", obj.shape, rng)
    )
    return text, reference


def phrase_edit(scene: Scene, edit: Edit, rng: random.Random, phrasing: str = "train") -> Caption:
    """Word ``edit`` of ``scene`` with a random template of the ``phrasing`` set."""
    if phrasing not in TEMPLATES:
        raise ValueError(f"phrasing must be one of {PHRASINGS}, not {phrasing!r}")
    op = edit.op
    if op == "size":
        op = "grow" if edit.new.size == "large" else "shrink"
    template = rng.choice(TEMPLATES[phrasing][op])
    reference: dict[str, str | int] | None = None
    ref_text = ""
    if edit.old is not None:
        ref_text, reference = _reference_text(scene, edit.old, rng, phrasing)
        # Guards the promise of the module: a reference never matches two objects.
        assert matching_objects(scene, reference) == [edit.old], (scene, reference)
    new = edit.new
    values = {}
    if new is not None:
        values = {
            "color": _word(phrasing, "color", new.color, rng),
            "shape": _word(phrasing, "shape", new.shape, rng),
            "size": _word(phrasing, "size", new.size, rng),
            "cell": _word(phrasing, "cell", new.cell, rng),
        }
        values["obj"] = f"{values['size']} {values['color']} {values['shape']}"
    return Caption(template.format(ref=ref_text, **values), template, reference)


def modify(
    scene: Scene,
    rng: random.Random,
    phrasing: str = "train",
    min_objects: int = MIN_OBJECTS,
    max_objects: int = MAX_OBJECTS,
) -> tuple[Scene, str]:
    """Apply one random edit; return the edited scene and its modification text."""
    edit = random_edit(scene, rng, min_objects=min_objects, max_objects=max_objects)
    return apply_edit(scene, edit), phrase_edit(scene, edit, rng, phrasing).text


def template_words(phrasing: str) -> set[str]:
    """Lower-cased words of every template of a phrasing set, placeholders left out."""
    return {
        word
        for templates in TEMPLATES[phrasing].values()
        for template in templates
        for word in re.findall(r"[a-z]+", re.sub(r"\{\w+\}", " ", template.lower()))
    }
