"""Random edits of the hard tier, one builder per kind of ``EDIT_KINDS``.

``random_hard_edit`` draws an edit of a kind for a scene (or None when the scene allows none).
The references of an edit are chosen here, not when it is worded, so both phrasing sets name
the same objects the same way: by attributes or cell for plain changes, by a relation,
superlative or uniqueness for ``relational_reference``. Each is checked to name exactly its
object in the reference scene.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from itertools import combinations

from cir_module.data.hard.scenes import (
    CHANGEABLE,
    COLORS,
    DESCRIPTOR_ATTRIBUTES,
    EDIT_KINDS,
    GRID_SIDE,
    MAX_OBJECTS,
    RELATIONS,
    SHAPES,
    SIZES,
    SUPERLATIVES,
    TEXTURES,
    Clause,
    HardEdit,
    HardObject,
    HardScene,
    Ref,
    Step,
    apply_steps,
    change_step,
    free_cells,
    in_relation,
    matching,
    neighbour,
    other_values,
    resolve,
    size_step,
)

__all__ = [
    "exclusion_steps",
    "lines_with_free",
    "random_hard_edit",
    "swap_steps",
]


# --- references -----------------------------------------------------------------------------


def _unique_attributes(
    scene: HardScene, obj: HardObject, names: tuple[str, ...] = DESCRIPTOR_ATTRIBUTES
) -> list[tuple[tuple[str, str], ...]]:
    """Every non-empty subset of ``names`` whose values single ``obj`` out in ``scene``."""
    return [
        attrs
        for n in range(1, len(names) + 1)
        for subset in combinations(names, n)
        if matching(scene, attrs := tuple((a, getattr(obj, a)) for a in subset)) == [obj]
    ]


def _simple_ref(
    scene: HardScene, obj: HardObject, rng: random.Random, also: tuple[HardScene, ...] = ()
) -> Ref:
    """By attributes (two times in three, when some subset is unique) or by cell.

    The reference must also name ``obj`` alone in each scene of ``also`` (the scenes the other
    changes of a compound edit make), so that no reading order makes it ambiguous.
    """
    subsets = [
        attrs
        for attrs in _unique_attributes(scene, obj)
        if all(matching(other, attrs) == [obj] for other in also)
    ]
    if subsets and rng.random() < 2 / 3:
        return Ref("attributes", rng.choice(subsets))
    shape = (("shape", obj.shape),) if rng.random() < 0.5 else ()
    return Ref("cell", shape, cell=obj.cell)


def _anchor_ref(scene: HardScene, obj: HardObject, rng: random.Random) -> Ref | None:
    """A short attribute reference for an anchor ("the red square"), None if there is none."""
    subsets = _unique_attributes(scene, obj)
    short = [s for s in subsets if len(s) <= 2]
    return Ref("attributes", rng.choice(short or subsets)) if subsets else None


def _descriptors(obj: HardObject) -> list[tuple[tuple[str, str], ...]]:
    """Noun phrases a relational reference can use: "object", "circle", "red one", "red circle"."""
    color, shape = ("color", obj.color), ("shape", obj.shape)
    return [(), (shape,), (color,), (color, shape)]


def _relational_refs(scene: HardScene, obj: HardObject, rng: random.Random) -> dict[str, list]:
    """Candidate ``only``, ``superlative`` and ``relation`` references to ``obj``.

    Each candidate is ``(ref, strong)``; strong ones need the relation or superlative (the noun
    phrase alone matches several objects).
    """
    found: dict[str, list[tuple[Ref, bool]]] = {"only": [], "superlative": [], "relation": []}
    for attribute in ("color", "shape", "texture", "size"):
        ref = Ref("only", ((attribute, getattr(obj, attribute)),))
        if resolve(scene, ref) == [obj]:
            found["only"].append((ref, True))
    for superlative in SUPERLATIVES:
        for attrs in _descriptors(obj)[:3]:
            ref = Ref("superlative", attrs, relation=superlative)
            # Of a single object any superlative is true: not a reference worth the name.
            if len(matching(scene, attrs)) >= 2 and resolve(scene, ref) == [obj]:
                found["superlative"].append((ref, True))
    for anchor in scene:
        for relation in RELATIONS:
            if anchor == obj or not in_relation(obj, relation, anchor):
                continue
            anchor_ref = _anchor_ref(scene, anchor, rng)
            if anchor_ref is None:
                continue
            for attrs in _descriptors(obj):
                ref = Ref("relation", attrs, relation=relation, anchor=anchor_ref)
                if resolve(scene, ref) == [obj]:
                    found["relation"].append((ref, len(matching(scene, attrs)) >= 2))
    return found


def _relational_ref(scene: HardScene, obj: HardObject, rng: random.Random) -> Ref | None:
    """A relational, superlative or uniqueness reference to ``obj`` (kind drawn uniformly)."""
    found = _relational_refs(scene, obj, rng)
    kinds = [k for k, refs in found.items() if refs]
    if not kinds:
        return None
    candidates = found[rng.choice(kinds)]
    strong = [ref for ref, is_strong in candidates if is_strong]
    if strong and rng.random() < 0.8:
        return rng.choice(strong)
    return rng.choice([ref for ref, _ in candidates])


# --- edits of each kind ---------------------------------------------------------------------


def _set_clause(obj: HardObject, rng: random.Random, subject: Ref | None = None) -> Clause:
    attribute = rng.choice(CHANGEABLE)
    value = rng.choice(other_values(attribute, getattr(obj, attribute)))
    return Clause(
        "set", (change_step(obj, attribute, value),), subject, attribute=attribute, value=value
    )


def _random_object(cell: int, rng: random.Random) -> HardObject:
    return HardObject(
        cell, rng.choice(SHAPES), rng.choice(list(COLORS)), rng.choice(SIZES), rng.choice(TEXTURES)
    )


def _compound(scene: HardScene, rng: random.Random) -> HardEdit | None:
    """Two or three of set / remove / add / move, on distinct objects and distinct free cells."""
    objects = list(scene)
    rng.shuffle(objects)
    free = free_cells(scene)
    rng.shuffle(free)
    count = len(scene)
    plans: list[Clause] = []
    for _ in range(rng.choice((2, 3))):
        options = ["set"] if objects else []
        if objects and count > 2:
            options.append("remove")
        if objects and free:
            options.append("move")
        if free and count < MAX_OBJECTS:
            options.append("add")
        action = rng.choice(options)
        if action == "add":
            plans.append(Clause("add", (Step(None, _random_object(free.pop(), rng)),)))
            count += 1
            continue
        obj = objects.pop()
        if action == "set":
            plans.append(_set_clause(obj, rng))
        elif action == "remove":
            plans.append(Clause("remove", (Step(obj, None),)))
            count -= 1
        else:
            cell = free.pop()
            plans.append(Clause("move", (change_step(obj, "cell", cell),), value=cell))
    clauses = []
    for i, clause in enumerate(plans):
        old = clause.steps[0].old
        if old is not None:
            rest = apply_steps(scene, [s for j, c in enumerate(plans) if j != i for s in c.steps])
            clause = replace(clause, subject=_simple_ref(scene, old, rng, also=(rest,)))
        clauses.append(clause)
    return HardEdit("compound", tuple(clauses))


def _relational_reference(scene: HardScene, rng: random.Random) -> HardEdit | None:
    objects = list(scene)
    rng.shuffle(objects)
    for obj in objects:
        ref = _relational_ref(scene, obj, rng)
        if ref is not None:
            break
    else:
        return None
    if rng.random() < 0.25:
        clause = Clause("remove", (Step(obj, None),), ref)
    else:
        clause = _set_clause(obj, rng, ref)
    return HardEdit("relational_reference", (clause,))


def _relational_move(scene: HardScene, rng: random.Random) -> HardEdit | None:
    free = set(free_cells(scene))
    options = [
        (obj, anchor, relation)
        for obj in scene
        for anchor in scene
        if obj != anchor
        for relation in RELATIONS
        if neighbour(anchor.cell, relation) in free
    ]
    if not options:
        return None
    obj, anchor, relation = rng.choice(options)
    step = change_step(obj, "cell", neighbour(anchor.cell, relation))
    subject, anchor_ref = _simple_ref(scene, obj, rng), _simple_ref(scene, anchor, rng)
    return HardEdit(
        "relational_move", (Clause("move_next_to", (step,), subject, anchor_ref, value=relation),)
    )


def swap_steps(a: HardObject, b: HardObject) -> tuple[Step, Step]:
    return change_step(a, "cell", b.cell), change_step(b, "cell", a.cell)


def _differ_beyond_cell(a: HardObject, b: HardObject) -> bool:
    return any(getattr(a, x) != getattr(b, x) for x in CHANGEABLE)


def _swap(scene: HardScene, rng: random.Random) -> HardEdit | None:
    pairs = [(a, b) for a, b in combinations(scene, 2) if _differ_beyond_cell(a, b)]
    if not pairs:
        return None
    a, b = rng.sample(rng.choice(pairs), 2)
    refs = _simple_ref(scene, a, rng), _simple_ref(scene, b, rng)
    return HardEdit("swap", (Clause("swap", swap_steps(a, b), *refs),))


def lines_with_free(scene: HardScene, n: int) -> list[tuple[str, int, list[int]]]:
    """Rows and columns with exactly ``n`` free cells, with those cells."""
    free = set(free_cells(scene))
    lines = []
    for index in range(GRID_SIDE):
        for kind, cells in (
            ("row", [index * GRID_SIDE + c for c in range(GRID_SIDE)]),
            ("column", [r * GRID_SIDE + index for r in range(GRID_SIDE)]),
        ):
            cells = [c for c in cells if c in free]
            if len(cells) == n:
                lines.append((kind, index, cells))
    return lines


def _count_groups(scene: HardScene) -> list[HardObject]:
    """One member of each (colour, shape) group whose members share size and texture."""
    groups: dict[tuple[str, str], list[HardObject]] = {}
    for obj in scene:
        groups.setdefault((obj.color, obj.shape), []).append(obj)
    return [
        members[0]
        for members in groups.values()
        if len({(o.size, o.texture) for o in members}) == 1
    ]


def _count(scene: HardScene, rng: random.Random) -> HardEdit | None:
    counts = [n for n in (2, 3) if len(scene) + n <= MAX_OBJECTS]
    groups = _count_groups(scene)
    if not counts or not groups:
        return None
    n, proto = rng.choice(counts), rng.choice(groups)
    lines = lines_with_free(scene, n)
    # A named line with exactly n free cells fixes where the new objects go.
    if lines:
        kind, index, cells = rng.choice(lines)
        line: tuple[str, int] | None = (kind, index)
    else:
        cells, line = sorted(rng.sample(free_cells(scene), n)), None
    steps = tuple(Step(None, replace(proto, cell=c)) for c in cells)
    group = Ref("attributes", (("color", proto.color), ("shape", proto.shape)))
    return HardEdit("count", (Clause("count", steps, group, value=n, line=line),))


def exclusion_steps(scene: HardScene, attribute: str, value: str) -> tuple[Step, ...]:
    return tuple(Step(o, None) for o in scene if getattr(o, attribute) != value)


def _exclusion(scene: HardScene, rng: random.Random) -> HardEdit | None:
    options = []
    for attribute in CHANGEABLE:
        for value in sorted({getattr(o, attribute) for o in scene}):
            removed = len(exclusion_steps(scene, attribute, value))
            if removed >= 2 and removed < len(scene):
                options.append((attribute, value))
    if not options:
        return None
    attribute, value = rng.choice(options)
    clause = Clause(
        "exclude", exclusion_steps(scene, attribute, value), attribute=attribute, value=value
    )
    return HardEdit("exclusion", (clause,))


def _relative_attribute(scene: HardScene, rng: random.Random) -> HardEdit | None:
    if rng.random() < 0.5:
        options = [
            (obj, direction)
            for obj in scene
            for direction in ("bigger", "smaller")
            if size_step(obj.size, direction)
        ]
        obj, direction = rng.choice(options)
        step = change_step(obj, "size", size_step(obj.size, direction))
        clause = Clause(
            "relative", (step,), _simple_ref(scene, obj, rng), attribute="size", value=direction
        )
        return HardEdit("relative_attribute", (clause,))
    options = [
        (obj, anchor, attribute)
        for obj in scene
        for anchor in scene
        for attribute in CHANGEABLE
        if getattr(obj, attribute) != getattr(anchor, attribute)
    ]
    if not options:
        return None
    obj, anchor, attribute = rng.choice(options)
    step = change_step(obj, attribute, getattr(anchor, attribute))
    subject, anchor_ref = _simple_ref(scene, obj, rng), _simple_ref(scene, anchor, rng)
    clause = Clause("same_as", (step,), subject, anchor_ref, attribute=attribute)
    return HardEdit("relative_attribute", (clause,))


_BUILDERS: dict[str, Callable[[HardScene, random.Random], HardEdit | None]] = {
    "compound": _compound,
    "relational_reference": _relational_reference,
    "relational_move": _relational_move,
    "swap": _swap,
    "count": _count,
    "exclusion": _exclusion,
    "relative_attribute": _relative_attribute,
}


def random_hard_edit(
    scene: HardScene, rng: random.Random, kind: str | None = None
) -> HardEdit | None:
    """A random edit of ``kind`` (drawn uniformly when None), or None if ``scene`` allows none."""
    kind = rng.choice(EDIT_KINDS) if kind is None else kind
    if kind not in _BUILDERS:
        raise ValueError(f"edit kind must be one of {EDIT_KINDS}, not {kind!r}")
    return _BUILDERS[kind](scene, rng)
