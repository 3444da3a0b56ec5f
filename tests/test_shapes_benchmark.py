"""The shapes scenes, their edits and phrasings, and the CIRR-format benchmark generator."""

from __future__ import annotations

import json
import random
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from cir_module.data.benchmark import SPLITS, generate_benchmark, load_scene_graphs
from cir_module.data.shapes import (
    MAX_OBJECTS,
    MIN_OBJECTS,
    PHRASINGS,
    TEMPLATES,
    WORDS,
    Edit,
    Scene,
    ShapeObject,
    apply_edit,
    diff_scenes,
    matching_objects,
    modify,
    phrase_edit,
    random_edit,
    random_scene,
    scene_from_dict,
    scene_to_dict,
    template_words,
)

SMALL = {"n_train": 40, "n_val": 10, "n_test": 10, "image_size": 64}
CIRR_KEYS = {"pairid", "reference", "target_hard", "target_soft", "caption", "img_set"}
CIRR_SET_KEYS = {"id", "members", "reference_rank", "target_rank"}


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "a"
    summary = generate_benchmark(out, seed=0, **SMALL)
    assert summary["splits"]["train"]["triplets"] == 40
    assert summary["images"] == sum(s["images"] for s in summary["splits"].values())
    return out


# --- scenes and edits --------------------------------------------------------------------


def value_words(phrasing: str, kind: str, value: str | int) -> tuple[str, ...]:
    return WORDS[phrasing][kind][str(value)]


def mentions(text: str, phrasing: str, kind: str, value: str | int) -> bool:
    return any(re.search(rf"\b{re.escape(w)}\b", text) for w in value_words(phrasing, kind, value))


@pytest.mark.parametrize("phrasing", PHRASINGS)
def test_edit_text_states_the_edit(phrasing: str) -> None:
    ops = set()
    for seed in range(600):
        scene = random_scene(random.Random(seed))
        rng = random.Random(f"edit-{seed}")
        edit = random_edit(scene, rng)
        caption = phrase_edit(scene, edit, rng, phrasing)
        target = apply_edit(scene, edit)
        ops.add(edit.op)

        assert target != scene
        assert MIN_OBJECTS <= len(target) <= MAX_OBJECTS
        assert diff_scenes(scene, target) == edit  # one edit apart, and exactly this one
        key = {"size": "grow" if edit.new and edit.new.size == "large" else "shrink"}
        assert caption.template in TEMPLATES[phrasing][key.get(edit.op, edit.op)]
        text, new = caption.text, edit.new
        if edit.op == "color":
            assert mentions(text, phrasing, "color", new.color), text
        elif edit.op == "shape":
            assert mentions(text, phrasing, "shape", new.shape), text
        elif edit.op == "size" and "{size}" in caption.template:
            assert mentions(text, phrasing, "size", new.size), text
        elif edit.op in ("move", "add"):
            assert mentions(text, phrasing, "cell", new.cell), text
        if edit.op == "add":
            assert caption.reference is None
            for kind in ("shape", "color", "size"):
                assert mentions(text, phrasing, kind, getattr(new, kind)), text

        # modify() is the same draw in one call.
        assert modify(scene, random.Random(f"edit-{seed}"), phrasing) == (target, caption.text)
    assert ops == {"add", "remove", "move", "color", "shape", "size"}


@pytest.mark.parametrize("phrasing", PHRASINGS)
def test_references_are_unambiguous_and_spelled_out(phrasing: str) -> None:
    kinds = set()
    for seed in range(600):
        rng = random.Random(seed)
        scene = random_scene(rng)
        edit = random_edit(scene, rng)
        caption = phrase_edit(scene, edit, rng, phrasing)
        if caption.reference is None:
            continue
        kinds.add("position" if "cell" in caption.reference else "attributes")
        assert matching_objects(scene, caption.reference) == [edit.old], caption
        for kind, value in caption.reference.items():
            assert mentions(caption.text, phrasing, kind, value), caption
    assert kinds == {"position", "attributes"}


def test_duplicate_objects_are_named_by_position() -> None:
    twins = (
        ShapeObject(0, "circle", "red", "small"),
        ShapeObject(1, "circle", "red", "small"),
        ShapeObject(2, "circle", "red", "large"),
    )
    for seed in range(100):
        edit = Edit(twins[0], None)
        caption = phrase_edit(twins, edit, random.Random(seed))
        assert "cell" in caption.reference
    # The large one is unique by size alone; "the large one" must single it out.
    seen = set()
    for seed in range(200):
        caption = phrase_edit(twins, Edit(twins[2], None), random.Random(seed))
        seen.add(tuple(sorted(caption.reference)))
        assert matching_objects(twins, caption.reference) == [twins[2]]
    assert ("size",) in seen


def test_heldout_phrasings_are_disjoint_from_train() -> None:
    for phrasing in PHRASINGS:
        for key, templates in TEMPLATES[phrasing].items():
            assert len(set(templates)) >= (4 if key == "ref_cell" else 5), (phrasing, key)
    train = {t for ts in TEMPLATES["train"].values() for t in ts}
    heldout = {t for ts in TEMPLATES["heldout"].values() for t in ts}
    assert not train & heldout
    # Not only the strings: the verbs and nouns of the held-out set never occur in train.
    function_words = {"the", "a", "to", "in", "into", "be"}
    assert template_words("train") & template_words("heldout") <= function_words
    for kind in ("cell", "noun"):
        train_words = {w for ws in WORDS["train"][kind].values() for w in ws}
        heldout_words = {w for ws in WORDS["heldout"][kind].values() for w in ws}
        assert not train_words & heldout_words, kind
    assert value_words("heldout", "color", "gray") == ("grey",)
    assert not set(value_words("heldout", "size", "large")) & {"small", "large"}


def test_diff_scenes() -> None:
    rng = random.Random(3)
    scene = random_scene(rng, 3, 3)
    once = apply_edit(scene, random_edit(scene, rng))
    assert diff_scenes(scene, scene) is None
    assert diff_scenes(scene, once) is not None
    first, second = scene[0], scene[1]
    twice = apply_edit(
        apply_edit(
            scene, Edit(first, replace(first, size="small" if first.size == "large" else "large"))
        ),
        Edit(
            second,
            replace(second, cell=next(c for c in range(9) if c not in {o.cell for o in scene})),
        ),
    )
    assert diff_scenes(scene, twice) is None  # two objects changed
    a = (ShapeObject(0, "circle", "red", "small"), ShapeObject(1, "square", "red", "small"))
    b = (ShapeObject(0, "circle", "blue", "large"), ShapeObject(1, "square", "red", "small"))
    assert diff_scenes(a, b) is None  # two attributes of one object
    with pytest.raises(ValueError):
        Edit(a[0], b[0])
    with pytest.raises(ValueError):
        apply_edit(a, Edit(None, ShapeObject(1, "circle", "red", "small")))  # cell taken


def test_scene_graph_round_trip() -> None:
    rng = random.Random(0)
    for _ in range(50):
        scene = random_scene(rng)
        data = json.loads(json.dumps(scene_to_dict(scene)))
        assert scene_from_dict(data) == scene
    with pytest.raises(ValueError):
        scene_from_dict([{"cell": 0, "shape": "blob", "color": "red", "size": "small"}])
    with pytest.raises(ValueError):
        scene_from_dict([{"cell": 4, "shape": "circle", "color": "red", "size": "small"}] * 2)


# --- the generated benchmark -------------------------------------------------------------


def test_same_seed_same_files_other_seed_differs(
    bench: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    again = tmp_path_factory.mktemp("bench") / "again"
    # Two render processes: results must not depend on workers either.
    generate_benchmark(again, seed=0, workers=2, **SMALL)
    assert tree(bench) == tree(again)
    other = tmp_path_factory.mktemp("bench") / "other"
    generate_benchmark(other, seed=1, **SMALL)
    files, other_files = tree(bench), tree(other)
    assert files.keys() != other_files.keys() or files != other_files
    name = "captions/cap.shapes.train.json"
    assert files[name] != other_files[name]
    image = "images/train/shapes-train-0.png"
    assert files[image] != other_files[image]


def test_layout_and_cirr_format(bench: Path) -> None:
    meta = read_json(bench / "benchmark.json")
    assert meta["seed"] == 0 and meta["counts"] == {"train": 40, "val": 10, "test": 10}
    assert meta["image_size"] == 64 and meta["version"]
    for split in SPLITS:
        captions = read_json(bench / "captions" / f"cap.shapes.{split}.json")
        image_split = read_json(bench / "image_splits" / f"split.shapes.{split}.json")
        graphs = load_scene_graphs(bench, split)
        assert len(captions) == meta["counts"][split]
        assert (
            set(image_split)
            == set(graphs)
            == {p.stem for p in (bench / "images" / split).glob("*.png")}
        )
        for name, rel in image_split.items():
            assert re.fullmatch(rf"shapes-{split}-\d+", name)
            assert rel == f"./images/{split}/{name}.png"
        with Image.open(bench / image_split[captions[0]["reference"]]) as image:
            assert image.size == (64, 64)
        # One image per unique scene.
        assert len(set(graphs.values())) == len(graphs)
        referenced = set()
        for pairid, item in enumerate(captions):
            assert set(item) == CIRR_KEYS and set(item["img_set"]) == CIRR_SET_KEYS
            assert item["pairid"] == pairid and isinstance(item["caption"], str)
            assert item["target_soft"] == {item["target_hard"]: 1.0}
            members = item["img_set"]["members"]
            assert len(members) == len(set(members)) == 6
            assert members[item["img_set"]["reference_rank"]] == item["reference"]
            assert members[item["img_set"]["target_rank"]] == item["target_hard"]
            referenced.update(members)
        assert referenced <= set(image_split)
        assert referenced == set(image_split)  # the gallery is exactly the split's images


def test_splits_share_no_scene(bench: Path) -> None:
    seen: dict[Scene, str] = {}
    for split in SPLITS:
        for scene in load_scene_graphs(bench, split).values():
            assert scene not in seen, (split, seen.get(scene))
            seen[scene] = split
    # Without a split, the reader gives every split's images (names are unique across splits).
    every = load_scene_graphs(bench)
    assert len(every) == len(seen) and set(every.values()) == set(seen)
    assert every == {k: v for s in SPLITS for k, v in load_scene_graphs(bench, s).items()}


def test_triplets_and_hard_negatives_follow_the_scene_graphs(bench: Path) -> None:
    for split in SPLITS:
        graphs = load_scene_graphs(bench, split)
        captions = read_json(bench / "captions" / f"cap.shapes.{split}.json")
        edits = read_json(bench / "edits" / f"edits.shapes.{split}.json")
        for item, note in zip(captions, edits, strict=True):
            reference, target = graphs[item["reference"]], graphs[item["target_hard"]]
            assert reference != target
            edit = diff_scenes(reference, target)
            assert edit is not None and edit.op == note["op"]
            if note["reference"] is not None:
                assert matching_objects(reference, note["reference"]) == [edit.old]
            negatives = set(item["img_set"]["members"]) - {item["reference"], item["target_hard"]}
            assert len(negatives) == 4
            for name in negatives:
                negative = graphs[name]
                assert negative not in (target, reference)
                assert diff_scenes(target, negative) is not None, (target, negative)
                assert MIN_OBJECTS <= len(negative) <= MAX_OBJECTS


def test_heldout_test_phrasing_keeps_the_scenes(
    bench: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    out = tmp_path_factory.mktemp("bench") / "heldout"
    # The held-out splits are drawn first, so n_train does not change them.
    generate_benchmark(out, seed=0, **(SMALL | {"n_train": 0}), phrasing_for_test="heldout")
    assert read_json(out / "benchmark.json")["phrasing"]["test"] == "heldout"
    for name in ("scene_graphs/scenes.shapes.test.json", "captions/cap.shapes.val.json"):
        assert (out / name).read_bytes() == (bench / name).read_bytes()
    heldout = {t for ts in TEMPLATES["heldout"].values() for t in ts}
    notes = read_json(out / "edits" / "edits.shapes.test.json")
    assert all(note["template"] in heldout for note in notes)
    ours = [c["caption"] for c in read_json(out / "captions" / "cap.shapes.test.json")]
    theirs = [c["caption"] for c in read_json(bench / "captions" / "cap.shapes.test.json")]
    assert all(a != b for a, b in zip(ours, theirs, strict=True))


def test_refuses_to_overwrite_unless_asked(bench: Path, tmp_path: Path) -> None:
    with pytest.raises(FileExistsError):
        generate_benchmark(bench, seed=0, **SMALL)
    generate_benchmark(tmp_path, seed=0, n_train=2, n_val=1, n_test=1, image_size=32)
    generate_benchmark(tmp_path, seed=0, n_train=1, n_val=1, n_test=1, overwrite=True)
    assert len(read_json(tmp_path / "captions" / "cap.shapes.train.json")) == 1
    with pytest.raises(ValueError):
        generate_benchmark(tmp_path / "x", phrasing_for_test="novel")
