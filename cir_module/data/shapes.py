"""Scenes of simple shapes on a 3x3 grid, edited by text (in the spirit of the CSS data set).

A scene is a tuple of objects (shape, colour, size, cell). ``render`` draws it with positional
jitter and background noise; ``modify`` applies one random edit and returns the edited scene
with a modification text phrased in one of several ways. Everything is deterministic from
the ``random.Random`` passed in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "COLORS",
    "SHAPES",
    "Scene",
    "ShapeObject",
    "describe",
    "modify",
    "random_scene",
    "render",
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


@dataclass(frozen=True, order=True)
class ShapeObject:
    cell: int
    shape: str
    color: str
    size: str


Scene = tuple[ShapeObject, ...]


def random_scene(rng: random.Random, min_objects: int = 2, max_objects: int = 5) -> Scene:
    """A scene of 2-5 objects in distinct cells."""
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


_PHRASES = {
    "color": [
        "make the {ref} {value}",
        "change the {ref} to {value}",
        "turn the {ref} {value}",
        "paint the {ref} {value}",
        "the {ref} should be {value}",
    ],
    "shape": [
        "turn the {ref} into a {value}",
        "replace the {ref} with a {value}",
        "make the {ref} a {value}",
        "change the {ref} into a {value}",
        "swap the {ref} for a {value}",
    ],
    "size": [
        "make the {ref} {value}",
        "the {ref} should be {value}",
        "change the {ref} to {value}",
        "resize the {ref} to {value}",
        "turn the {ref} {value}",
    ],
    "remove": [
        "remove the {ref}",
        "delete the {ref}",
        "take away the {ref}",
        "get rid of the {ref}",
        "drop the {ref}",
    ],
    "add": [
        "add a {value} at {cell}",
        "put a {value} at {cell}",
        "place a {value} at {cell}",
        "insert a {value} at {cell}",
        "draw a {value} at {cell}",
    ],
    "move": [
        "move the {ref} to {cell}",
        "put the {ref} at {cell} instead",
        "shift the {ref} to {cell}",
        "the {ref} goes to {cell}",
        "relocate the {ref} to {cell}",
    ],
}


def _reference(scene: Scene, obj: ShapeObject, rng: random.Random) -> str:
    """Refer to ``obj`` by attributes when that is unambiguous, else by position."""
    by_attrs = f"{obj.size} {obj.color} {obj.shape}"
    unique = sum((o.size, o.color, o.shape) == (obj.size, obj.color, obj.shape) for o in scene) == 1
    if unique and rng.random() < 0.5:
        return by_attrs
    return f"{obj.shape} at {CELL_NAMES[obj.cell]}"


def modify(scene: Scene, rng: random.Random) -> tuple[Scene, str]:
    """Apply one random edit; return the edited scene and its modification text."""
    ops = ["color", "shape", "size", "move", "add"] + (["remove"] if len(scene) > 1 else [])
    free = [c for c in range(9) if c not in {o.cell for o in scene}]
    if not free:
        ops = [op for op in ops if op not in ("add", "move")]
    op = rng.choice(ops)
    obj = rng.choice(scene)
    ref = _reference(scene, obj, rng)
    rest = tuple(o for o in scene if o != obj)
    phrase = rng.choice(_PHRASES[op])
    if op == "color":
        value = rng.choice([c for c in COLORS if c != obj.color])
        new = (*rest, replace(obj, color=value))
    elif op == "shape":
        value = rng.choice([s for s in SHAPES if s != obj.shape])
        new = (*rest, replace(obj, shape=value))
    elif op == "size":
        value = "small" if obj.size == "large" else "large"
        new = (*rest, replace(obj, size=value))
    elif op == "remove":
        value, new = "", rest
    elif op == "move":
        value, cell = "", rng.choice(free)
        new = (*rest, replace(obj, cell=cell))
        return tuple(sorted(new)), phrase.format(ref=ref, cell=CELL_NAMES[cell])
    else:  # add
        added = ShapeObject(
            rng.choice(free), rng.choice(SHAPES), rng.choice(list(COLORS)), rng.choice(SIZES)
        )
        value = f"{added.size} {added.color} {added.shape}"
        return tuple(sorted((*scene, added))), phrase.format(
            value=value, cell=CELL_NAMES[added.cell]
        )
    return tuple(sorted(new)), phrase.format(ref=ref, value=value)
