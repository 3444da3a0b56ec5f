"""The hard tier of the synthetic benchmark: edits that need composition and reasoning.

Scenes hold 3-8 objects on a 4x4 grid with a texture besides shape, colour and size
(``scenes``). Each query is one edit of a kind in ``EDIT_KINDS``, drawn uniformly:

* ``compound``: two or three simple changes in one sentence ("make the circle red and remove
  the square");
* ``relational_reference``: a change of an object named by a relation ("the circle left of
  the red square"), a superlative ("the largest object") or uniqueness ("the only blue one");
* ``relational_move``: "put the triangle directly below the cross";
* ``swap``: two objects exchange cells;
* ``count``: "add two more blue circles" (copies of the blue circles, which share size and
  texture), into a named row or column when one has exactly that many free cells;
* ``exclusion``: "remove every object that is not red" (two or more go, one or more stay);
* ``relative_attribute``: "make the square one size bigger", "make the circle the same colour
  as the square".

Every reference names exactly one object of the reference scene (in a compound edit, also of
the scene the other changes make). Hard negatives differ from the target in exactly one of
the requested changes: left undone, done with a wrong value, to a wrong object, or reversed
(the anchor moved or recoloured instead); single-attribute changes of the target fill up.

Modules: ``scenes`` (objects, rendering, references, steps and edit records), ``edits``
(a random edit of each kind), ``phrasing`` (the two phrasing sets), ``triplets`` (hard
negatives and ``make_hard_triplet``). The names below are the ones a benchmark writer needs.

``make_hard_triplet`` is a function of its arguments only, like shapes' ``make_triplet``:
scenes and edits come from one generator, texts from another, so the held-out phrasing words
the same triplets.
"""

from __future__ import annotations

from cir_module.data.hard.edits import random_hard_edit
from cir_module.data.hard.phrasing import PHRASINGS, HardCaption, phrase_hard_edit
from cir_module.data.hard.scenes import (
    CELL_NAMES,
    EDIT_KINDS,
    GRID_SIDE,
    MAX_OBJECTS,
    SIZES,
    TEXTURES,
    HardEdit,
    HardObject,
    HardScene,
    apply_edit,
    describe,
    random_images,
    random_scene,
    render,
    scene_from_dict,
    scene_key,
    scene_to_dict,
)
from cir_module.data.hard.triplets import (
    NEGATIVE_KINDS,
    HardNegative,
    HardTriplet,
    hard_negatives,
    make_hard_triplet,
)

__all__ = [
    "CELL_NAMES",
    "EDIT_KINDS",
    "GRID_SIDE",
    "MAX_OBJECTS",
    "NEGATIVE_KINDS",
    "PHRASINGS",
    "SIZES",
    "TEXTURES",
    "HardCaption",
    "HardEdit",
    "HardNegative",
    "HardObject",
    "HardScene",
    "HardTriplet",
    "apply_edit",
    "describe",
    "hard_negatives",
    "make_hard_triplet",
    "phrase_hard_edit",
    "random_hard_edit",
    "random_images",
    "random_scene",
    "render",
    "scene_from_dict",
    "scene_key",
    "scene_to_dict",
]
