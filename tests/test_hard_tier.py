"""The hard tier: scenes, edits of every kind, references, hard negatives, phrasings, rendering."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from cir_module.data.hard import (
    EDIT_KINDS,
    NEGATIVE_KINDS,
    PHRASINGS,
    HardEdit,
    HardObject,
    HardScene,
    HardTriplet,
    apply_edit,
    make_hard_triplet,
    phrase_hard_edit,
    random_hard_edit,
    random_scene,
    render,
    scene_from_dict,
    scene_key,
    scene_to_dict,
)
from cir_module.data.hard.phrasing import TEMPLATES, WORDS, template_words, vocabulary
from cir_module.data.hard.scenes import (
    CHANGEABLE,
    COLORS,
    GRID_SIDE,
    MAX_OBJECTS,
    MIN_OBJECTS,
    NUM_CELLS,
    SIZES,
    TEXTURES,
    Clause,
    Ref,
    Step,
    apply_steps,
    in_relation,
    neighbour,
    resolve,
)

N_ITEMS = 350


@pytest.fixture(scope="module")
def triplets() -> list[HardTriplet]:
    return [make_hard_triplet(0, "train", i) for i in range(N_ITEMS)]


def the(scene: HardScene, ref: Ref) -> HardObject:
    found = resolve(scene, ref)
    assert len(found) == 1, (ref, scene)
    return found[0]


def at(scene: HardScene, cell: int) -> HardObject | None:
    return next((o for o in scene if o.cell == cell), None)


def line_cells(line: tuple[str, int]) -> list[int]:
    kind, index = line
    if kind == "row":
        return [index * GRID_SIDE + c for c in range(GRID_SIDE)]
    return [r * GRID_SIDE + index for r in range(GRID_SIDE)]


# --- every edit kind gives exactly its target ------------------------------------------------


def expected_target(reference: HardScene, edit: HardEdit) -> HardScene:
    """The target read from what each clause says (action, references, values), not from its
    steps; only where the text leaves it open (an added object, a count's cells without a
    named line) are the steps consulted."""
    objects = {o.cell: o for o in reference}
    removed: set[int] = set()
    placed: dict[int, HardObject] = {}
    for clause in edit.clauses:
        subject = the(reference, clause.subject) if clause.subject is not None else None
        anchor = the(reference, clause.anchor) if clause.anchor is not None else None
        action = clause.action
        if action == "set":
            removed.add(subject.cell)
            placed[subject.cell] = replace(subject, **{clause.attribute: clause.value})
        elif action == "relative":
            step = 1 if clause.value == "bigger" else -1
            removed.add(subject.cell)
            placed[subject.cell] = replace(subject, size=SIZES[SIZES.index(subject.size) + step])
        elif action == "same_as":
            removed.add(subject.cell)
            value = getattr(anchor, clause.attribute)
            placed[subject.cell] = replace(subject, **{clause.attribute: value})
        elif action == "remove":
            removed.add(subject.cell)
        elif action == "add":
            new = clause.steps[0].new
            assert new.cell not in objects
            placed[new.cell] = new
        elif action == "move":
            removed.add(subject.cell)
            placed[clause.value] = replace(subject, cell=clause.value)
        elif action == "move_next_to":
            cell = neighbour(anchor.cell, clause.value)
            assert cell is not None and cell not in objects
            removed.add(subject.cell)
            placed[cell] = replace(subject, cell=cell)
        elif action == "swap":
            removed |= {subject.cell, anchor.cell}
            placed[anchor.cell] = replace(subject, cell=anchor.cell)
            placed[subject.cell] = replace(anchor, cell=subject.cell)
        elif action == "count":
            group = resolve(reference, clause.subject)
            assert group and len({(o.size, o.texture) for o in group}) == 1
            if clause.line is not None:
                cells = [c for c in line_cells(clause.line) if c not in objects]
            else:
                cells = [s.new.cell for s in clause.steps]
                assert not set(cells) & set(objects)
            assert len(set(cells)) == clause.value
            for cell in cells:
                placed[cell] = replace(group[0], cell=cell)
        elif action == "exclude":
            removed |= {o.cell for o in reference if getattr(o, clause.attribute) != clause.value}
        else:
            raise AssertionError(action)
    kept = [o for cell, o in objects.items() if cell not in removed]
    assert not {o.cell for o in kept} & set(placed)
    return tuple(sorted([*kept, *placed.values()]))


def test_every_edit_kind_gives_exactly_its_target(triplets: list[HardTriplet]) -> None:
    kinds = Counter(t.edit.op for t in triplets)
    assert set(kinds) == set(EDIT_KINDS)
    # Uniform over kinds: 50 expected each.
    assert min(kinds.values()) >= 30, kinds
    actions = set()
    for t in triplets:
        reference, target, edit = t.reference, t.target, t.edit
        actions |= {c.action for c in edit.clauses}
        assert apply_edit(reference, edit) == target == expected_target(reference, edit)
        assert target != reference
        assert MIN_OBJECTS <= len(reference) <= MAX_OBJECTS and 1 <= len(target) <= MAX_OBJECTS
        assert_kind_invariants(reference, target, edit)
    assert actions == {
        "set", "remove", "add", "move", "move_next_to", "swap", "count", "exclude",
        "relative", "same_as",
    }  # fmt: skip


def assert_kind_invariants(reference: HardScene, target: HardScene, edit: HardEdit) -> None:
    """Per kind, what the issue's wording promises, checked on the scene graphs."""
    clause = edit.clauses[0]
    untouched = [o for o in reference if o not in {s.old for s in edit.steps}]
    assert all(o in target for o in untouched)  # nothing else changes
    if edit.kind == "compound":
        assert 2 <= len(edit.clauses) <= 3
        assert {c.action for c in edit.clauses} <= {"set", "remove", "add", "move"}
        olds = [s.old for s in edit.steps if s.old is not None]
        assert len(olds) == len(set(olds))  # distinct objects
    else:
        assert len(edit.clauses) == 1
    if edit.kind == "relational_reference":
        assert clause.subject.kind in ("only", "superlative", "relation")
        assert clause.action in ("set", "remove")
    elif edit.kind == "relational_move":
        subject, anchor = the(reference, clause.subject), the(reference, clause.anchor)
        moved = [o for o in target if replace(o, cell=subject.cell) == subject]
        # Directly next to the anchor, read off the grid coordinates.
        dr, dc = {"above": (-1, 0), "below": (1, 0), "left_of": (0, -1), "right_of": (0, 1)}[
            clause.value
        ]
        assert any((o.row, o.column) == (anchor.row + dr, anchor.column + dc) for o in moved)
        assert at(target, anchor.cell) == anchor and at(target, subject.cell) is None
    elif edit.kind == "swap":
        a, b = the(reference, clause.subject), the(reference, clause.anchor)
        assert at(target, a.cell) == replace(b, cell=a.cell)
        assert at(target, b.cell) == replace(a, cell=b.cell)
        assert len(target) == len(reference)
        assert sorted(set(target) ^ set(reference)) == sorted(
            {a, b, replace(a, cell=b.cell), replace(b, cell=a.cell)}
        )
    elif edit.kind == "count":
        group = dict(clause.subject.attrs)
        before = [o for o in reference if o.color == group["color"] and o.shape == group["shape"]]
        after = [o for o in target if o.color == group["color"] and o.shape == group["shape"]]
        assert len(after) == len(before) + clause.value and clause.value in (2, 3)
        assert len({(o.size, o.texture) for o in after}) == 1  # "more" of the same
        assert len(target) == len(reference) + clause.value
    elif edit.kind == "exclusion":
        attribute, value = clause.attribute, clause.value
        assert all(getattr(o, attribute) == value for o in target)
        assert [o for o in reference if getattr(o, attribute) == value] == list(target)
        assert len(reference) - len(target) >= 2 and len(target) >= 1
    elif edit.kind == "relative_attribute":
        subject = the(reference, clause.subject)
        (new,) = [o for o in target if o.cell == subject.cell]
        if clause.action == "relative":
            step = SIZES.index(new.size) - SIZES.index(subject.size)
            assert step == (1 if clause.value == "bigger" else -1)
        else:
            assert clause.action == "same_as"
            anchor = the(reference, clause.anchor)
            assert getattr(new, clause.attribute) == getattr(anchor, clause.attribute)
            assert getattr(subject, clause.attribute) != getattr(anchor, clause.attribute)


def test_references_are_unambiguous(triplets: list[HardTriplet]) -> None:
    ref_kinds = Counter()
    for t in triplets:
        for i, clause in enumerate(t.edit.clauses):
            if clause.action in ("count", "exclude", "add"):
                continue
            for ref, obj in zip(clause.refs(), (s.old for s in clause.steps), strict=False):
                ref_kinds[ref.kind] += 1
                assert resolve(t.reference, ref) == [obj], (t.caption.text, ref)
                if ref.anchor is not None:
                    assert len(resolve(t.reference, ref.anchor)) == 1
            if clause.anchor is not None and clause.action != "swap":
                assert len(resolve(t.reference, clause.anchor)) == 1
            # In a compound edit, also once the other changes are made.
            rest = apply_steps(
                t.reference, [s for j, c in enumerate(t.edit.clauses) if j != i for s in c.steps]
            )
            if clause.subject is not None:
                assert resolve(rest, clause.subject) == [clause.steps[0].old]
    assert set(ref_kinds) == {"attributes", "cell", "only", "superlative", "relation"}
    # Relational references that need the relation: the noun phrase alone is ambiguous.
    needed = [
        t
        for t in triplets
        if t.edit.kind == "relational_reference"
        and t.edit.clauses[0].subject.kind in ("relation", "superlative")
        and len(resolve(t.reference, Ref("attributes", t.edit.clauses[0].subject.attrs))) >= 2
    ]
    assert len(needed) >= 10


def test_spatial_words_on_the_grid() -> None:
    def obj(cell: int) -> HardObject:
        return HardObject(cell, "circle", "red", "small", "solid")

    # Cell = 4 * row + column. "left of": same row, smaller column; "above": same column.
    assert in_relation(obj(5), "left_of", obj(7)) and in_relation(obj(7), "right_of", obj(5))
    assert not in_relation(obj(4), "left_of", obj(1)) and not in_relation(obj(5), "left_of", obj(5))
    assert in_relation(obj(1), "above", obj(13)) and in_relation(obj(13), "below", obj(1))
    assert not in_relation(obj(1), "above", obj(14)) and not in_relation(obj(2), "below", obj(1))
    assert [neighbour(5, r) for r in ("above", "below", "left_of", "right_of")] == [1, 9, 4, 6]
    assert neighbour(3, "right_of") is None and neighbour(12, "below") is None
    assert neighbour(4, "left_of") is None and neighbour(2, "above") is None
    scene = (obj(4), replace(obj(1), shape="square"), replace(obj(6), shape="square"))
    left_of_square = Ref("relation", (), relation="left_of", anchor=Ref("cell", (), cell=6))
    assert resolve(scene, left_of_square) == [obj(4)]
    assert resolve(scene, replace(left_of_square, anchor=Ref("cell", (), cell=1))) == []


def test_duplicate_objects_need_a_relation() -> None:
    twins = tuple(
        sorted(
            [
                HardObject(0, "circle", "red", "small", "solid"),
                HardObject(1, "square", "blue", "large", "solid"),
                HardObject(2, "circle", "red", "small", "solid"),
                HardObject(9, "cross", "green", "medium", "hollow"),
            ]
        )
    )
    left_of_square = Ref("relation", (("shape", "circle"),), relation="left_of",
                         anchor=Ref("attributes", (("shape", "square"),)))  # fmt: skip
    circles = resolve(twins, Ref("attributes", (("shape", "circle"),)))
    assert circles == [twins[0], twins[2]]
    assert resolve(twins, left_of_square) == [twins[0]]
    assert resolve(twins, replace(left_of_square, relation="right_of")) == [twins[2]]
    assert resolve(twins, Ref("superlative", (), relation="largest")) == [twins[1]]
    assert resolve(twins, Ref("superlative", (), relation="bottommost")) == [twins[3]]
    leftmost_circle = Ref("superlative", (("shape", "circle"),), relation="leftmost")
    assert resolve(twins, leftmost_circle) == [twins[0]]
    assert resolve(twins, Ref("only", (("texture", "hollow"),))) == [twins[3]]
    # A tie is no reference.
    assert len(resolve(twins, Ref("superlative", (), relation="topmost"))) == 3
    # The two circles share every attribute but their cell: only a relation or a superlative
    # can name one of them.
    named = Counter()
    for seed in range(300):
        edit = random_hard_edit(twins, random.Random(seed), "relational_reference")
        subject, old = edit.clauses[0].subject, edit.clauses[0].steps[0].old
        assert resolve(twins, subject) == [old]
        if old in circles:
            named[subject.kind] += 1
    assert set(named) == {"relation", "superlative"}


# --- hard negatives ----------------------------------------------------------------------


def test_each_hard_negative_differs_in_exactly_one_requested_change(
    triplets: list[HardTriplet],
) -> None:
    hows = Counter()
    for t in triplets:
        assert len(t.negatives) == len(t.negative_notes) == 4
        assert len(set(t.scenes)) == 6
        for scene, note in zip(t.negatives, t.negative_notes, strict=True):
            assert note.scene == scene and note.how in NEGATIVE_KINDS
            hows[note.how] += 1
            assert scene not in (t.reference, t.target) and 1 <= len(scene) <= MAX_OBJECTS
            if note.clause is None:  # a filler: one attribute of one object of the target
                (step,) = note.steps
                assert apply_steps(t.target, note.steps) == scene and step.op != "add"
                assert len(set(scene) - set(t.target)) == len(set(t.target) - set(scene)) == 1
                continue
            original = t.edit.clauses[note.clause].steps
            assert note.steps != original
            steps = [
                s
                for i, c in enumerate(t.edit.clauses)
                for s in (note.steps if i == note.clause else c.steps)
            ]
            assert apply_steps(t.reference, steps) == scene
            if note.how == "undone" and len(t.edit.clauses) > 1:
                assert note.steps == ()
        if t.edit.kind == "compound":
            # Every requested change has a negative where only it is done differently.
            assert {n.clause for n in t.negative_notes} >= set(range(len(t.edit.clauses)))
    assert set(hows) == set(NEGATIVE_KINDS)
    # Fillers only make up the rest.
    assert hows["filler"] < 0.1 * sum(hows.values())


def test_compound_negative_leaves_each_change_undone() -> None:
    for i in range(200):
        t = make_hard_triplet(3, "val", i)
        if t.edit.kind != "compound":
            continue
        for index, clause in enumerate(t.edit.clauses):
            undone = apply_steps(
                t.reference,
                [s for j, c in enumerate(t.edit.clauses) if j != index for s in c.steps],
            )
            notes = [n for n in t.negative_notes if n.clause == index and n.how == "undone"]
            assert notes and notes[0].scene == undone, clause


# --- determinism and phrasings -------------------------------------------------------------


def test_deterministic_from_the_arguments(triplets: list[HardTriplet]) -> None:
    again = [make_hard_triplet(0, "train", i) for i in range(40)]
    assert again == triplets[:40]
    other_seed = [make_hard_triplet(1, "train", i) for i in range(40)]
    assert sum(a.reference != b.reference for a, b in zip(again, other_seed, strict=True)) >= 38
    other_split = [make_hard_triplet(0, "test", i) for i in range(40)]
    assert sum(a.reference != b.reference for a, b in zip(again, other_split, strict=True)) >= 38
    assert make_hard_triplet(0, "train", 5, num_hard_negatives=2).member_order != ()
    assert len(make_hard_triplet(0, "train", 5, num_hard_negatives=2).negatives) == 2


def test_one_gallery_negative_is_the_first_of_four(triplets: list[HardTriplet]) -> None:
    # The evaluation splits draw one hard negative: the same triplet, with the negative that
    # four would have started with (the first requested change undone or done wrong), unless
    # the four could not all be found and the item moved to a later attempt.
    ones = [make_hard_triplet(0, "train", i, num_hard_negatives=1) for i in range(40)]
    same = [(a, b) for a, b in zip(triplets[:40], ones, strict=True) if a.reference == b.reference]
    assert len(same) >= 38
    for four, one in same:
        assert (one.edit, one.caption, one.target) == (four.edit, four.caption, four.target)
        assert one.negatives == four.negatives[:1]
        assert one.negative_notes[0].clause == 0


def test_edit_record_is_json(triplets: list[HardTriplet]) -> None:
    for t in triplets[:50]:
        record = json.loads(json.dumps(t.record))
        assert record["op"] == t.edit.kind and record["template"] == t.caption.template
        assert len(record["clauses"]) == len(t.edit.clauses)
        assert [n["how"] for n in record["negatives"]] == [n.how for n in t.negative_notes]
        steps = [s for c in record["clauses"] for s in c["steps"]]
        assert [s["op"] for s in steps] == [s.op for s in t.edit.steps]


def test_excluded_scenes_are_avoided(triplets: list[HardTriplet]) -> None:
    t = triplets[7]
    excluded = frozenset({t.reference, t.negatives[0]})
    redrawn = make_hard_triplet(0, "train", 7, excluded=excluded)
    assert not set(redrawn.scenes) & excluded
    assert redrawn.edit.kind == t.edit.kind  # the kind is drawn once per item


def all_templates(phrasing: str) -> set[str]:
    return {t for ts in TEMPLATES[phrasing].values() for t in ts}


def test_heldout_phrasing_words_the_same_triplets(triplets: list[HardTriplet]) -> None:
    train_templates, heldout_templates = all_templates("train"), all_templates("heldout")
    for t in triplets[:150]:
        h = make_hard_triplet(0, "train", triplets.index(t), phrasing="heldout")
        assert (h.reference, h.edit, h.target, h.negatives, h.member_order) == (
            t.reference, t.edit, t.target, t.negatives, t.member_order,
        )  # fmt: skip
        assert h.caption.reference == t.caption.reference
        assert set(t.caption.parts) <= train_templates
        assert set(h.caption.parts) <= heldout_templates
        assert h.caption.text != t.caption.text
    with pytest.raises(ValueError):
        make_hard_triplet(0, "train", 0, phrasing="novel")


def test_phrasing_sets_are_disjoint() -> None:
    assert set(TEMPLATES["train"]) == set(TEMPLATES["heldout"])
    for phrasing in PHRASINGS:
        for key, templates in TEMPLATES[phrasing].items():
            assert len(set(templates)) >= 3, (phrasing, key)
    assert not all_templates("train") & all_templates("heldout")
    # Not only the strings: the verbs and nouns of the held-out set never occur in train.
    function_words = {"the", "a", "and", "that", "to", "in", "into", "be", "of", "it", "so", "by"}
    shared = template_words("train") & template_words("heldout")
    assert shared <= function_words, shared
    # Every word, in templates and values alike: only function words, the colours and shapes
    # (the content to be read) and two words used in other senses are shared. "over" is a
    # training particle ("send ... over to") and a held-out relation, "fill" a training verb
    # ("fill the empty cells") and a held-out attribute noun; they stay so that the texts, and
    # every figure measured on them, stay as they are.
    content = {w for kind in ("color", "shape", "shapes") for ws in WORDS["train"][kind].values()
               for w in ws}  # fmt: skip
    every = {p: template_words(p).union(*(re.findall(r"[a-z0-9]+", w.lower())
             for kinds in WORDS[p].values() for ws in kinds.values() for w in ws))
             for p in PHRASINGS}  # fmt: skip
    assert every["train"] & every["heldout"] <= function_words | content | {"over", "fill"}
    for kind in (
        "size", "texture", "noun", "nouns", "relation", "superlative", "attribute", "count",
        "cell", "row", "column",
    ):  # fmt: skip
        train = {w for ws in WORDS["train"][kind].values() for w in ws}
        heldout = {w for ws in WORDS["heldout"][kind].values() for w in ws}
        assert not train & heldout, kind
        assert set(WORDS["train"][kind]) == set(WORDS["heldout"][kind]), kind


@pytest.mark.parametrize("phrasing", PHRASINGS)
def test_texts_state_the_values(triplets: list[HardTriplet], phrasing: str) -> None:
    words = set(vocabulary())
    for index, t in enumerate(triplets[:120]):
        caption = phrase_hard_edit(t.reference, t.edit, random.Random(index), phrasing)
        text = caption.text
        assert set(re.findall(r"[a-z0-9]+", text.lower())) <= words, text

        def says(kind: str, value: object, text: str = text) -> bool:
            return any(w in text for w in WORDS[phrasing][kind][str(value)])

        for clause in t.edit.clauses:
            if clause.action == "set":
                assert says(clause.attribute, clause.value), text
            elif clause.action == "move":
                assert says("cell", clause.value), text
            elif clause.action == "add":
                new = clause.steps[0].new
                assert says("cell", new.cell) and says("shape", new.shape), text
                assert says("color", new.color) and says("texture", new.texture), text
            elif clause.action == "move_next_to":
                assert says("relation", clause.value), text
            elif clause.action == "count":
                assert says("shapes", clause.steps[0].new.shape), text
                if clause.line is not None:
                    assert says(clause.line[0], clause.line[1]), text
            elif clause.action == "exclude":
                assert says(clause.attribute, clause.value), text
            elif clause.action == "same_as":
                assert says("attribute", clause.attribute), text
            for ref in clause.refs():
                if ref.kind in ("superlative", "relation"):
                    assert says(ref.kind if ref.kind == "relation" else "superlative", ref.relation)


# --- scene graphs and rendering ------------------------------------------------------------


def test_scene_graph_round_trip_and_validation() -> None:
    rng = random.Random(0)
    for _ in range(50):
        scene = random_scene(rng)
        assert scene_from_dict(json.loads(json.dumps(scene_to_dict(scene)))) == scene
        assert len(scene_key(scene).split(";")) == len(scene)
    good = {"cell": 0, "shape": "circle", "color": "red", "size": "medium", "texture": "striped"}
    assert scene_from_dict([good]) == (HardObject(0, "circle", "red", "medium", "striped"),)
    bad = [
        [good | {"shape": "blob"}],
        [good | {"texture": "dotted"}],
        [good | {"size": "huge"}],
        [good | {"cell": NUM_CELLS}],
        [good | {"cell": "3"}],
        [good | {"cell": True}],
        [{k: v for k, v in good.items() if k != "texture"}],
        [good | {"rotation": 90}],
        [good, good | {"color": "blue"}],  # two objects in one cell
        [good | {"cell": c} for c in range(MAX_OBJECTS + 1)],
    ]
    for data in bad:
        with pytest.raises(ValueError):
            scene_from_dict(data)


def test_steps_and_edits_validate() -> None:
    a = HardObject(0, "circle", "red", "small", "solid")
    b = HardObject(1, "square", "blue", "large", "hollow")
    with pytest.raises(ValueError):
        Step(None, None)
    with pytest.raises(ValueError):
        Step(a, replace(a, color="blue", size="large"))
    with pytest.raises(ValueError):
        apply_steps((a, b), [Step(None, replace(a, cell=1))])  # cell taken
    with pytest.raises(ValueError):
        apply_steps((a,), [Step(b, None)])  # not in the scene
    with pytest.raises(ValueError):
        HardEdit("rotate", (Clause("remove", (Step(a, None),)),))
    swapped = apply_steps((a, b), [Step(a, replace(a, cell=1)), Step(b, replace(b, cell=0))])
    assert swapped == (replace(b, cell=0), replace(a, cell=1))
    with pytest.raises(ValueError):
        random_hard_edit((a, b), random.Random(0), "unknown")


def test_render_is_deterministic_and_draws_textures_apart() -> None:
    scene = random_scene(random.Random(1))
    first = np.asarray(render(scene, random.Random(7)))
    assert np.array_equal(first, np.asarray(render(scene, random.Random(7))))
    assert not np.array_equal(first, np.asarray(render(scene, random.Random(8))))
    assert first.shape == (128, 128, 3)

    red = np.array(COLORS["red"])
    counts, centres, column = {}, {}, {}
    for texture in TEXTURES:
        obj = HardObject(5, "square", "red", "large", texture)  # row 1, column 1: centre 48,48
        pixels = np.asarray(render((obj,), random.Random(0))).astype(int)
        is_red = np.all(pixels == red, axis=2)
        counts[texture] = int(is_red.sum())
        centres[texture] = bool(is_red[46:51, 46:51].all())
        column[texture] = is_red[38:58, 48]
    assert counts["hollow"] < counts["striped"] < counts["solid"]
    assert centres["solid"] and not centres["hollow"] and not column["hollow"][5:15].any()
    # Stripes: the centre column alternates red and background inside the outline.
    changes = np.count_nonzero(np.diff(column["striped"].astype(int)))
    assert changes >= 6 and not column["striped"].all()
    for size in SIZES:  # sizes draw apart too
        obj = HardObject(5, "circle", "red", size, "solid")
        counts[size] = int(np.all(np.asarray(render((obj,), random.Random(0))) == red, 2).sum())
    assert counts["small"] < counts["medium"] < counts["large"]


def test_every_kind_builds_on_random_scenes() -> None:
    rng = random.Random(11)
    built = Counter()
    for _ in range(200):
        scene = random_scene(rng)
        for kind in EDIT_KINDS:
            edit = random_hard_edit(scene, rng, kind)
            if edit is None:
                continue
            built[kind] += 1
            assert edit.kind == kind and apply_edit(scene, edit) != scene
    assert set(built) == set(EDIT_KINDS)
    assert all(n >= 100 for n in built.values()), built
    assert CHANGEABLE == ("color", "shape", "size", "texture")
