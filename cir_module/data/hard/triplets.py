"""Hard negatives and triplets of the hard tier.

A hard negative differs from the target in exactly one of the requested changes (a clause of
the edit): left undone, done with a wrong value, to a wrong object, or reversed (the anchor
moved or recoloured instead of the object the text names). Clauses take turns, so each
requested change gets a negative before any gets a second; single-attribute changes of the
target fill up when the variants run out.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Any

from cir_module.data.hard.edits import (
    exclusion_steps,
    lines_with_free,
    random_hard_edit,
    swap_steps,
)
from cir_module.data.hard.phrasing import PHRASINGS, HardCaption, phrase_hard_edit
from cir_module.data.hard.scenes import (
    CHANGEABLE,
    EDIT_KINDS,
    GRID_SIDE,
    MAX_OBJECTS,
    RELATIONS,
    Clause,
    HardEdit,
    HardObject,
    HardScene,
    Step,
    apply_steps,
    change_step,
    free_cells,
    neighbour,
    other_values,
    random_scene,
    resolve,
    size_step,
)

__all__ = [
    "NEGATIVE_KINDS",
    "HardNegative",
    "HardTriplet",
    "hard_negatives",
    "make_hard_triplet",
]

_MAX_ATTEMPTS = 1000
NEGATIVE_KINDS = ("undone", "wrong_value", "wrong_object", "reversed", "filler")
_OPPOSITE = {"left_of": "right_of", "right_of": "left_of", "above": "below", "below": "above"}


@dataclass(frozen=True)
class HardNegative:
    """A hard negative and how it was made.

    ``clause`` is the index of the requested change done differently and ``steps`` what
    replaced that clause's steps (applied with the other clauses' steps to the reference);
    for a ``filler`` ``clause`` is None and ``steps`` is the one step applied to the target.
    ``how`` is one of ``NEGATIVE_KINDS``.
    """

    scene: HardScene
    clause: int | None
    how: str
    steps: tuple[Step, ...]


def _similar(scene: HardScene, obj: HardObject, exclude: set[HardObject]) -> list[HardObject]:
    """Other objects, those sharing more attributes with ``obj`` first (ties in scene order)."""
    others = [o for o in scene if o != obj and o not in exclude]
    return sorted(others, key=lambda o: -sum(getattr(o, a) == getattr(obj, a) for a in CHANGEABLE))


Variant = tuple[str, tuple[Step, ...]]  # (how, the steps that replace a clause's steps)


def _wrong_attribute(
    reference: HardScene, clause: Clause, touched: set[HardObject], rng: random.Random
) -> list[Variant]:
    """``set``, ``relative`` and ``same_as``: another value, another object, or reversed."""
    step = clause.steps[0]
    subject, attribute = step.old, clause.attribute
    old_value, new_value = getattr(subject, attribute), getattr(step.new, attribute)
    if clause.action == "relative":
        # Two sizes in the asked direction, or one the other way.
        other_way = "smaller" if clause.value == "bigger" else "bigger"
        wrong = [size_step(old_value, clause.value, 2), size_step(old_value, other_way)]
    else:
        wrong = other_values(attribute, old_value, new_value)
    out = [("wrong_value", (change_step(subject, attribute, v),)) for v in wrong if v]
    if clause.action == "same_as":  # the anchor takes the subject's value instead
        (anchor,) = resolve(reference, clause.anchor)
        out.append(("reversed", (change_step(anchor, attribute, old_value),)))
    for other in _similar(reference, subject, touched)[:3]:
        value = size_step(other.size, clause.value) if clause.action == "relative" else new_value
        if value is not None and getattr(other, attribute) != value:
            out.append(("wrong_object", (change_step(other, attribute, value),)))
    return out


def _wrong_removal(
    reference: HardScene, clause: Clause, touched: set[HardObject], rng: random.Random
) -> list[Variant]:
    subject = clause.steps[0].old
    return [("wrong_object", (Step(o, None),)) for o in _similar(reference, subject, touched)[:3]]


def _wrong_addition(
    reference: HardScene, clause: Clause, touched: set[HardObject], rng: random.Random
) -> list[Variant]:
    """The added object with one attribute or its cell different."""
    new = clause.steps[0].new
    out = []
    for attribute in CHANGEABLE:
        value = rng.choice(other_values(attribute, getattr(new, attribute)))
        out.append(("wrong_value", (Step(None, replace(new, **{attribute: value})),)))
    cell = rng.choice(free_cells(reference))
    return [*out, ("wrong_value", (Step(None, replace(new, cell=cell)),))]


def _wrong_move(
    reference: HardScene, clause: Clause, touched: set[HardObject], rng: random.Random
) -> list[Variant]:
    """``move``: a cell next to the right one; ``move_next_to``: another side of the anchor,
    or the anchor moved next to the subject; both: another object moved there."""
    subject, dest = clause.steps[0].old, clause.steps[0].new.cell
    free = free_cells(reference)
    if clause.action == "move":
        cells = [neighbour(dest, relation) for relation in RELATIONS]
    else:
        (anchor,) = resolve(reference, clause.anchor)
        cells = [neighbour(anchor.cell, r) for r in RELATIONS if r != clause.value]
    out = [("wrong_value", (change_step(subject, "cell", c),)) for c in cells if c in free]
    if clause.action == "move_next_to":
        cell = neighbour(subject.cell, _OPPOSITE[clause.value])
        if cell in free:
            out.append(("reversed", (change_step(anchor, "cell", cell),)))
    for other in _similar(reference, subject, touched)[:3]:
        out.append(("wrong_object", (change_step(other, "cell", dest),)))
    return out


def _wrong_swap(
    reference: HardScene, clause: Clause, touched: set[HardObject], rng: random.Random
) -> list[Variant]:
    """The two exchange an attribute instead of their cells, or one swaps with another."""
    a, b = clause.steps[0].old, clause.steps[1].old
    out = [
        (
            "wrong_value",
            (change_step(a, attr, getattr(b, attr)), change_step(b, attr, getattr(a, attr))),
        )
        for attr in CHANGEABLE
        if getattr(a, attr) != getattr(b, attr)
    ]
    out += [("wrong_object", swap_steps(o, b)) for o in _similar(reference, a, {a, b})[:2]]
    out += [("wrong_object", swap_steps(a, o)) for o in _similar(reference, b, {a, b})[:2]]
    return out


def _wrong_count(
    reference: HardScene, clause: Clause, touched: set[HardObject], rng: random.Random
) -> list[Variant]:
    """One fewer or one more, one of them unlike the others, or (a named line) another line."""
    steps = clause.steps
    proto = steps[0].new
    out: list[Variant] = [("wrong_value", steps[:-1])]
    spare = [c for c in free_cells(reference) if c not in {s.new.cell for s in steps}]
    if spare:
        extra = Step(None, replace(proto, cell=rng.choice(spare)))
        out.append(("wrong_value", (*steps, extra)))
    for attribute in CHANGEABLE:
        value = rng.choice(other_values(attribute, getattr(proto, attribute)))
        odd = rng.randrange(len(steps))
        unlike = Step(None, replace(steps[odd].new, **{attribute: value}))
        out.append(("wrong_value", (*steps[:odd], unlike, *steps[odd + 1 :])))
    if clause.line is not None:
        for kind, line_index, cells in _lines_at_least(reference, len(steps)):
            if (kind, line_index) != clause.line:
                moved = (
                    Step(None, replace(proto, cell=c))
                    for c in sorted(rng.sample(cells, len(steps)))
                )
                out.append(("wrong_value", tuple(moved)))
    return out


def _wrong_exclusion(
    reference: HardScene, clause: Clause, touched: set[HardObject], rng: random.Random
) -> list[Variant]:
    """One that should go left, one that should stay removed, the opposite, another value."""
    steps, attribute, value = clause.steps, clause.attribute, clause.value
    kept = [o for o in reference if getattr(o, attribute) == value]
    out = [("undone", steps[:i] + steps[i + 1 :]) for i in range(len(steps))]
    if len(kept) >= 2:
        out += [("wrong_object", (*steps, Step(o, None))) for o in kept]
    out.append(("wrong_value", tuple(Step(o, None) for o in kept)))
    for other in sorted({getattr(o, attribute) for o in reference} - {value}):
        wrong = exclusion_steps(reference, attribute, other)
        if len(wrong) < len(reference):
            out.append(("wrong_value", wrong))
    return out


_WRONG: dict[str, Callable[[HardScene, Clause, set[HardObject], random.Random], list[Variant]]] = {
    "set": _wrong_attribute,
    "relative": _wrong_attribute,
    "same_as": _wrong_attribute,
    "remove": _wrong_removal,
    "add": _wrong_addition,
    "move": _wrong_move,
    "move_next_to": _wrong_move,
    "swap": _wrong_swap,
    "count": _wrong_count,
    "exclude": _wrong_exclusion,
}


def _variants(
    reference: HardScene, edit: HardEdit, index: int, rng: random.Random
) -> list[Variant]:
    """Ways to do clause ``index`` of ``edit`` wrongly, in the order to try them: leaving it
    undone first where other clauses remain, the rest shuffled."""
    clause = edit.clauses[index]
    touched = {s.old for s in edit.steps if s.old is not None}
    out = _WRONG[clause.action](reference, clause, touched, rng)
    rng.shuffle(out)
    if len(edit.clauses) > 1:
        out.insert(0, ("undone", ()))
    return out


def _lines_at_least(scene: HardScene, n: int) -> list[tuple[str, int, list[int]]]:
    return [line for k in range(n, GRID_SIDE + 1) for line in lines_with_free(scene, k)]


def _filler(target: HardScene, edit: HardEdit, rng: random.Random) -> tuple[Step, HardScene] | None:
    """A single-attribute change of ``target``: any object, any attribute or a move."""
    obj = rng.choice(target)
    attribute = rng.choice((*CHANGEABLE, "cell"))
    if attribute != "cell":
        step = change_step(
            obj, attribute, rng.choice(other_values(attribute, getattr(obj, attribute)))
        )
        return step, apply_steps(target, (step,))
    # Where a count edit names no line, its new objects could stand anywhere: moving one would
    # give another right answer, not a negative.
    unplaced = {
        s.new for c in edit.clauses if c.action == "count" and c.line is None for s in c.steps
    }
    free = free_cells(target)
    if obj in unplaced or not free:
        return None
    step = change_step(obj, "cell", rng.choice(free))
    return step, apply_steps(target, (step,))


def hard_negatives(
    reference: HardScene,
    edit: HardEdit,
    target: HardScene,
    rng: random.Random,
    count: int,
    excluded: frozenset[HardScene] | set[HardScene] = frozenset(),
) -> list[HardNegative] | None:
    """``count`` distinct hard negatives, or None if they cannot be found.

    Clauses take turns, so each requested change gets a negative before any gets a second
    (the first for a compound edit: that change left undone); fillers make up the rest.
    """
    found: list[HardNegative] = []
    seen = {reference, target}

    def take(negative: HardNegative) -> None:
        scene = negative.scene
        if scene not in seen and scene not in excluded and 1 <= len(scene) <= MAX_OBJECTS:
            seen.add(scene)
            found.append(negative)

    pools = [_variants(reference, edit, i, rng) for i in range(len(edit.clauses))]
    while len(found) < count and any(pools):
        for index, pool in enumerate(pools):
            if len(found) == count or not pool:
                continue
            how, replacement = pool.pop(0)
            steps = [
                s
                for i, c in enumerate(edit.clauses)
                for s in (replacement if i == index else c.steps)
            ]
            # A wrong change may collide with another one (two objects in a cell): skipped.
            with suppress(ValueError):
                take(HardNegative(apply_steps(reference, steps), index, how, replacement))
    for _ in range(50 * count):
        if len(found) == count:
            break
        filler = _filler(target, edit, rng)
        if filler is not None:
            take(HardNegative(filler[1], None, "filler", (filler[0],)))
    return found if len(found) == count else None


# --- triplets ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HardTriplet:
    """A reference, its edit and text, the target, hard negatives and the img_set order."""

    reference: HardScene
    edit: HardEdit
    target: HardScene
    caption: HardCaption
    negatives: tuple[HardScene, ...]
    # Permutation of [reference, target, *negatives] giving img_set["members"].
    member_order: tuple[int, ...]
    negative_notes: tuple[HardNegative, ...]

    @property
    def scenes(self) -> tuple[HardScene, ...]:
        return (self.reference, self.target, *self.negatives)

    @property
    def record(self) -> dict[str, Any]:
        """The edit note for the edits/ JSON: kind, clauses with steps, templates, negatives."""
        return {
            "op": self.edit.op,
            "template": self.caption.template,
            "parts": list(self.caption.parts),
            "reference": list(self.caption.reference),
            "clauses": self.edit.to_dict()["clauses"],
            # In the order of ``negatives``, i.e. of scenes[2:].
            "negatives": [{"clause": n.clause, "how": n.how} for n in self.negative_notes],
        }


def make_hard_triplet(
    seed: int,
    split: str,
    index: int,
    *,
    phrasing: str = "train",
    num_hard_negatives: int = 4,
    excluded: frozenset[HardScene] | set[HardScene] = frozenset(),
) -> HardTriplet:
    """Item ``index`` of ``split``: a function of its arguments only.

    The edit kind is drawn once per item (uniform over ``EDIT_KINDS``), so redrawn attempts do
    not skew the mix; attempts whose scene allows no edit of that kind, or whose reference,
    target or negatives fall in ``excluded`` (the scenes of the splits drawn before), are
    redrawn with the next attempt number.
    """
    if phrasing not in PHRASINGS:
        raise ValueError(f"phrasing must be one of {PHRASINGS}, not {phrasing!r}")
    kind = random.Random(f"hard:{seed}:{split}:{index}:kind").choice(EDIT_KINDS)
    for attempt in range(_MAX_ATTEMPTS):
        key = f"hard:{seed}:{split}:{index}:{attempt}"
        rng = random.Random(f"{key}:scene")
        reference = random_scene(rng)
        edit = random_hard_edit(reference, rng, kind)
        if edit is None:
            continue
        target = apply_steps(reference, edit.steps)
        if reference in excluded or target in excluded or target == reference:
            continue
        notes = hard_negatives(reference, edit, target, rng, num_hard_negatives, excluded)
        if notes is None:
            continue
        order = list(range(2 + num_hard_negatives))
        rng.shuffle(order)
        caption = phrase_hard_edit(reference, edit, random.Random(f"{key}:text"), phrasing)
        negatives = tuple(n.scene for n in notes)
        return HardTriplet(reference, edit, target, caption, negatives, tuple(order), tuple(notes))
    raise RuntimeError(f"no valid triplet for {split} item {index} in {_MAX_ATTEMPTS} attempts")
