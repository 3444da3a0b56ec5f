"""Scenes of the hard benchmark tier and its edits, as data.

A scene is a sorted tuple of up to eight ``HardObject`` (cell on a 4x4 grid, shape, colour,
size, texture), at most one per cell. ``render`` draws it with positional jitter and background
noise; a texture is drawn solid, hollow (an outline) or striped (an outline and stripes).

An edit text makes one to three requested changes (``Clause``), each made of atomic ``Step``
(an object replaced by another that differs in one attribute, added or removed); ``HardEdit``
is the kind of edit with its clauses, ``apply_edit`` applies every step at once (so a swap is
two moves). A clause also records how the text names its objects: a ``Ref`` is resolved in
the reference scene by ``resolve`` and is only used when it names exactly one object.

Spatial words are read on the grid: "left of" an object is anywhere in its row at a smaller
column, "above" anywhere in its column at a smaller row; "directly below" is the next cell
down. Sizes are ordered small < medium < large; "the leftmost" has the smallest column.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from cir_module.data.shapes import COLORS, SHAPES, Edit

__all__ = [
    "ATTRIBUTES",
    "CELL_NAMES",
    "CHANGEABLE",
    "CLAUSE_ACTIONS",
    "COLORS",
    "DESCRIPTOR_ATTRIBUTES",
    "EDIT_KINDS",
    "GRID_SIDE",
    "MAX_OBJECTS",
    "MIN_OBJECTS",
    "NUM_CELLS",
    "REF_KINDS",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "SUPERLATIVES",
    "TEXTURES",
    "VALUES",
    "Clause",
    "HardEdit",
    "HardObject",
    "HardScene",
    "Ref",
    "Step",
    "apply_edit",
    "apply_steps",
    "change_step",
    "describe",
    "free_cells",
    "in_relation",
    "matching",
    "neighbour",
    "other_values",
    "random_images",
    "random_scene",
    "render",
    "resolve",
    "scene_from_dict",
    "scene_key",
    "scene_to_dict",
    "size_step",
]

GRID_SIDE = 4
NUM_CELLS = GRID_SIDE * GRID_SIDE
SIZES = ("small", "medium", "large")  # ordered: "one size bigger" is the next one
TEXTURES = ("solid", "hollow", "striped")
MIN_OBJECTS = 3  # of a reference scene; an edit may leave fewer (exclusion keeps one or more)
MAX_OBJECTS = 8  # of every scene
ATTRIBUTES = ("cell", "shape", "color", "size", "texture")
CHANGEABLE = ("color", "shape", "size", "texture")  # the attributes besides the cell
VALUES: dict[str, tuple[str, ...]] = {
    "color": tuple(COLORS),
    "shape": SHAPES,
    "size": SIZES,
    "texture": TEXTURES,
}
# The attributes a noun phrase can use, in the order the words stand: "small striped red circle".
DESCRIPTOR_ATTRIBUTES = ("size", "texture", "color", "shape")
CELL_NAMES = tuple(
    f"row {r + 1}, column {c + 1}" for r in range(GRID_SIDE) for c in range(GRID_SIDE)
)
RELATIONS = ("left_of", "right_of", "above", "below")
SUPERLATIVES = ("largest", "smallest", "leftmost", "rightmost", "topmost", "bottommost")
EDIT_KINDS = (
    "compound",
    "relational_reference",
    "relational_move",
    "swap",
    "count",
    "exclusion",
    "relative_attribute",
)
CLAUSE_ACTIONS = (
    "set",
    "remove",
    "add",
    "move",
    "move_next_to",
    "swap",
    "count",
    "exclude",
    "relative",
    "same_as",
)
REF_KINDS = ("attributes", "cell", "only", "superlative", "relation")


@dataclass(frozen=True, order=True)
class HardObject:
    cell: int
    shape: str
    color: str
    size: str
    texture: str

    @property
    def row(self) -> int:
        return self.cell // GRID_SIDE

    @property
    def column(self) -> int:
        return self.cell % GRID_SIDE


HardScene = tuple[HardObject, ...]


def random_scene(
    rng: random.Random, min_objects: int = MIN_OBJECTS, max_objects: int = MAX_OBJECTS
) -> HardScene:
    """A scene of ``min_objects``-``max_objects`` objects in distinct cells."""
    cells = rng.sample(range(NUM_CELLS), rng.randint(min_objects, max_objects))
    return tuple(
        sorted(
            HardObject(
                c,
                rng.choice(SHAPES),
                rng.choice(list(COLORS)),
                rng.choice(SIZES),
                rng.choice(TEXTURES),
            )
            for c in cells
        )
    )


def describe(scene: HardScene) -> str:
    """A short readable description, e.g. ``large striped red circle at row 1, column 2; ...``."""
    return "; ".join(
        f"{o.size} {o.texture} {o.color} {o.shape} at {CELL_NAMES[o.cell]}" for o in scene
    )


def scene_key(scene: HardScene) -> str:
    """A compact canonical string for a scene (equal scenes give equal keys)."""
    return ";".join(f"{o.cell}:{o.shape}:{o.color}:{o.size}:{o.texture}" for o in sorted(scene))


def scene_to_dict(scene: HardScene) -> list[dict[str, Any]]:
    """The scene graph as JSON-serialisable data: one dict of the five attributes per object."""
    return [{a: getattr(o, a) for a in ATTRIBUTES} for o in sorted(scene)]


def scene_from_dict(data: Iterable[Mapping[str, Any]]) -> HardScene:
    """Inverse of ``scene_to_dict``; validates every value, the object count and that cells
    are distinct."""
    objects = []
    for item in data:
        if set(item) != set(ATTRIBUTES):
            raise ValueError(f"an object needs exactly the keys {ATTRIBUTES}: {dict(item)!r}")
        cell = item["cell"]
        valid = isinstance(cell, int) and not isinstance(cell, bool) and 0 <= cell < NUM_CELLS
        if not valid or any(item[a] not in values for a, values in VALUES.items()):
            raise ValueError(f"invalid object in scene graph: {dict(item)!r}")
        objects.append(HardObject(**{a: item[a] for a in ATTRIBUTES}))
    if len({o.cell for o in objects}) != len(objects):
        raise ValueError("two objects share a cell")
    if len(objects) > MAX_OBJECTS:
        raise ValueError(f"more than {MAX_OBJECTS} objects")
    return tuple(sorted(objects))


# --- rendering ---------------------------------------------------------------------------

# Radius as a fraction of a cell; large stays inside its cell with the jitter.
_RADIUS = {"small": 0.22, "medium": 0.32, "large": 0.43}
_JITTER = 0.05


def random_images(n: int, seed: int = 0) -> list[Image.Image]:
    """``n`` rendered random scenes, deterministic from ``seed`` (tests and benchmarks)."""
    rng = random.Random(seed)
    return [render(random_scene(rng), rng) for _ in range(n)]


def render(scene: HardScene, rng: random.Random, size: int = 128) -> Image.Image:
    """Draw the scene with small jitter and mild noise, so exact pixel matching fails."""
    noise = np.frombuffer(rng.randbytes(size * size), dtype=np.uint8)
    base = (235 + (noise.astype(np.int16) % 11) - 5).astype(np.uint8).reshape(size, size)
    pixels = np.repeat(base[:, :, None], 3, axis=2)
    cell = size / GRID_SIDE
    # Outline and stripe widths scale with the image: 2 px each at 128 px (32 px cells).
    line = max(1, round(size / 64))
    rows = np.arange(size)[:, None]
    stripes = np.broadcast_to((rows // line) % 2 == 0, (size, size))
    for obj in scene:
        radius = cell * _RADIUS[obj.size]
        jitter = cell * _JITTER
        cx = (obj.column + 0.5) * cell + rng.uniform(-jitter, jitter)
        cy = (obj.row + 0.5) * cell + rng.uniform(-jitter, jitter)
        mask = _shape_mask(obj.shape, cx, cy, radius, size)
        if obj.texture != "solid":
            outline = mask & ~_erode(mask, line)
            mask = outline | (mask & stripes) if obj.texture == "striped" else outline
        pixels[mask] = COLORS[obj.color]
    return Image.fromarray(pixels)


def _shape_mask(shape: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif shape == "square":
        # A little smaller than the circle's box, so that equal sizes look equally big.
        s = r * 0.9
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=255)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=255)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=255)
    else:  # cross, with arms wide enough that a hollow one still shows its inside
        w = r * 0.42
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=255)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=255)
    return np.asarray(image) > 0


def _erode(mask: np.ndarray, steps: int) -> np.ndarray:
    """``mask`` shrunk by ``steps`` pixels (4-neighbourhood)."""
    for _ in range(steps):
        inner = mask.copy()
        inner[1:] &= mask[:-1]
        inner[:-1] &= mask[1:]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        mask = inner
    return mask


# --- references ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    """How a text names one object of the reference scene.

    ``kind`` is one of ``REF_KINDS``: ``attributes`` ("the small red circle": the objects with
    every value of ``attrs``), ``cell`` ("the circle at row 1, column 2": also at ``cell``),
    ``only`` ("the only red one": one attribute that no other object has), ``superlative``
    ("the largest circle": of those matching ``attrs``, the one extreme in ``relation``, one of
    ``SUPERLATIVES``) and ``relation`` ("the circle left of the red square": of those matching
    ``attrs``, the ones in ``relation``, one of ``RELATIONS``, to the ``anchor`` object).
    """

    kind: str
    attrs: tuple[tuple[str, str], ...] = ()
    cell: int | None = None
    relation: str | None = None
    anchor: Ref | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the edits file)."""
        data: dict[str, Any] = {"kind": self.kind, "attrs": dict(self.attrs)}
        if self.cell is not None:
            data["cell"] = self.cell
        if self.relation is not None:
            data["relation"] = self.relation
        if self.anchor is not None:
            data["anchor"] = self.anchor.to_dict()
        return data


def matching(scene: HardScene, attrs: Iterable[tuple[str, str | int]]) -> list[HardObject]:
    """The objects of ``scene`` that have every ``(attribute, value)`` of ``attrs``."""
    pairs = tuple(attrs)
    return [o for o in scene if all(getattr(o, a) == v for a, v in pairs)]


def in_relation(obj: HardObject, relation: str, anchor: HardObject) -> bool:
    """Whether ``obj`` is ``relation`` (``left_of``, ...) to ``anchor``: same row or column."""
    if relation in ("left_of", "right_of"):
        if obj.row != anchor.row:
            return False
        return obj.column < anchor.column if relation == "left_of" else obj.column > anchor.column
    if obj.column != anchor.column:
        return False
    return obj.row < anchor.row if relation == "above" else obj.row > anchor.row


def neighbour(cell: int, relation: str) -> int | None:
    """The cell directly ``relation`` of ``cell`` (``below``: one row down), None off the grid."""
    row, column = divmod(cell, GRID_SIDE)
    row += {"above": -1, "below": 1}.get(relation, 0)
    column += {"left_of": -1, "right_of": 1}.get(relation, 0)
    if not (0 <= row < GRID_SIDE and 0 <= column < GRID_SIDE):
        return None
    return row * GRID_SIDE + column


_SUPERLATIVE_KEYS = {
    "largest": lambda o: SIZES.index(o.size),
    "smallest": lambda o: -SIZES.index(o.size),
    "leftmost": lambda o: -o.column,
    "rightmost": lambda o: o.column,
    "topmost": lambda o: -o.row,
    "bottommost": lambda o: o.row,
}


def resolve(scene: HardScene, ref: Ref) -> list[HardObject]:
    """The objects of ``scene`` that ``ref`` names (exactly one when the text is unambiguous)."""
    matches = matching(scene, ref.attrs)
    if ref.kind in ("attributes", "only"):
        return matches
    if ref.kind == "cell":
        return [o for o in matches if o.cell == ref.cell]
    if ref.kind == "superlative":
        key = _SUPERLATIVE_KEYS[ref.relation]
        best = max((key(o) for o in matches), default=None)
        return [o for o in matches if key(o) == best]
    if ref.kind == "relation":
        anchors = resolve(scene, ref.anchor)
        if len(anchors) != 1:
            return []
        return [o for o in matches if in_relation(o, ref.relation, anchors[0])]
    raise ValueError(f"unknown reference kind {ref.kind!r}")


# --- edits ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step(Edit):
    """One atomic change: ``old`` (an object of the scene) becomes ``new``.

    Shapes' ``Edit`` over hard objects: ``old is None`` adds ``new``; ``new is None`` removes
    ``old``; otherwise the two differ in exactly one attribute, texture included (the cell: a
    move). ``op`` is ``add``, ``remove``, ``move``, ``shape``, ``color``, ``size`` or
    ``texture``.
    """

    old: HardObject | None
    new: HardObject | None

    def _changed(self) -> list[str]:
        return [a for a in ATTRIBUTES if getattr(self.old, a) != getattr(self.new, a)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the op and both objects (None where absent)."""
        return {
            "op": self.op,
            "old": None if self.old is None else scene_to_dict((self.old,))[0],
            "new": None if self.new is None else scene_to_dict((self.new,))[0],
        }


def change_step(obj: HardObject, attribute: str, value: str | int) -> Step:
    """The step that sets ``attribute`` of ``obj`` to ``value`` (the cell: a move)."""
    return Step(obj, replace(obj, **{attribute: value}))


def other_values(attribute: str, *values: str) -> list[str]:
    """The values of ``attribute`` (one of ``CHANGEABLE``) other than ``values``, in order."""
    return [v for v in VALUES[attribute] if v not in values]


def size_step(size: str, direction: str, steps: int = 1) -> str | None:
    """The size ``steps`` sizes ``direction`` (``bigger``/``smaller``), None past the ends."""
    index = SIZES.index(size) + (steps if direction == "bigger" else -steps)
    return SIZES[index] if 0 <= index < len(SIZES) else None


def free_cells(scene: HardScene) -> list[int]:
    """The cells no object of ``scene`` occupies, in order."""
    taken = {o.cell for o in scene}
    return [c for c in range(NUM_CELLS) if c not in taken]


def apply_steps(scene: HardScene, steps: Iterable[Step]) -> HardScene:
    """The scene after every step at once: all old objects go, then all new ones come.

    Raises ``ValueError`` when an old object is missing or changed twice, or two objects would
    share a cell.
    """
    steps = tuple(steps)
    objects = list(scene)
    olds = [s.old for s in steps if s.old is not None]
    if len(set(olds)) != len(olds):
        raise ValueError("two steps change the same object")
    for old in olds:
        if old not in objects:
            raise ValueError(f"{old} is not in the scene")
        objects.remove(old)
    objects += [s.new for s in steps if s.new is not None]
    if len({o.cell for o in objects}) != len(objects):
        raise ValueError("two objects share a cell")
    return tuple(sorted(objects))


@dataclass(frozen=True)
class Clause:
    """One requested change of an edit text and the steps that make it.

    ``action`` (one of ``CLAUSE_ACTIONS``) and the fields it uses:

    * ``set``: ``subject`` gets ``attribute`` = ``value``; ``relative``: ``subject`` one size
      ``value`` (``"bigger"`` / ``"smaller"``); ``same_as``: ``subject`` gets the
      ``attribute`` of ``anchor``;
    * ``remove``: ``subject``; ``add``: the object of ``steps[0].new``; ``move``: ``subject``
      to cell ``value``; ``move_next_to``: ``subject`` to the cell directly ``value`` (a
      relation) of ``anchor``; ``swap``: ``subject`` and ``anchor`` exchange cells;
    * ``count``: ``value`` more objects like those ``subject`` names (same colour and shape,
      and the size and texture they share), into the free cells of ``line`` (``("row", 2)``)
      when the text names one, otherwise into the cells of the steps;
    * ``exclude``: every object whose ``attribute`` is not ``value`` is removed.
    """

    action: str
    steps: tuple[Step, ...]
    subject: Ref | None = None
    anchor: Ref | None = None
    attribute: str | None = None
    value: str | int | None = None
    line: tuple[str, int] | None = None

    def __post_init__(self) -> None:
        if self.action not in CLAUSE_ACTIONS:
            raise ValueError(f"unknown clause action {self.action!r}")
        if not self.steps:
            raise ValueError("a clause needs at least one step")

    def refs(self) -> tuple[Ref, ...]:
        """The references the text of this clause uses (subject first)."""
        return tuple(r for r in (self.subject, self.anchor) if r is not None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the edits file)."""
        data: dict[str, Any] = {"action": self.action}
        for name in ("subject", "anchor"):
            ref = getattr(self, name)
            if ref is not None:
                data[name] = ref.to_dict()
        for name in ("attribute", "value", "line"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        data["steps"] = [s.to_dict() for s in self.steps]
        return data


@dataclass(frozen=True)
class HardEdit:
    """An edit of kind ``kind`` (one of ``EDIT_KINDS``): one to three requested changes."""

    kind: str
    clauses: tuple[Clause, ...]

    def __post_init__(self) -> None:
        if self.kind not in EDIT_KINDS:
            raise ValueError(f"unknown edit kind {self.kind!r}")
        if not self.clauses:
            raise ValueError("an edit needs at least one clause")

    @property
    def op(self) -> str:
        """The kind (named like shapes' ``Edit.op``, for R@1 per kind)."""
        return self.kind

    @property
    def steps(self) -> tuple[Step, ...]:
        """Every atomic step of every clause."""
        return tuple(s for c in self.clauses for s in c.steps)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the kind and its clauses."""
        return {"op": self.kind, "clauses": [c.to_dict() for c in self.clauses]}


def apply_edit(scene: HardScene, edit: HardEdit) -> HardScene:
    """The scene after ``edit``; raises ``ValueError`` if the edit does not fit the scene."""
    return apply_steps(scene, edit.steps)
