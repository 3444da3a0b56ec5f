"""Dataset readers: tiny CIRR, FashionIQ and CIRCO files in their exact official formats."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from cir_module.eval import (
    CIRTriplet,
    read_circo,
    read_cirr,
    read_fashioniq,
    read_fashioniq_split,
    read_image_split,
    resolve_image_path,
)


def write_json(path: Path, payload: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


# Entries copied in shape from the released files (cap.rc2.val.json / cap.rc2.test1.json).
CIRR_VAL = [
    {
        "pairid": 12063,
        "reference": "test1-147-1-img1",
        "target_hard": "test1-1001-2-img0",
        "target_soft": {"test1-1001-2-img0": 1.0, "test1-356-1-img0": 0.5},
        "caption": "remove all but one dog and add a woman hugging it",
        "img_set": {
            "id": 3,
            "members": [
                "test1-147-1-img1",
                "test1-1001-2-img0",
                "test1-356-1-img0",
                "test1-85-0-img1",
                "test1-430-1-img0",
                "test1-23-3-img1",
            ],
            "reference_rank": 0,
            "target_rank": 1,
        },
    },
    {
        "pairid": 7,
        "reference": "dev-0-0-img0",
        "target_hard": "dev-0-1-img0",
        "target_soft": {"dev-0-1-img0": 1.0},
        "caption": "make it blue",
        "img_set": {"id": 4, "members": ["dev-0-0-img0", "dev-0-1-img0"], "reference_rank": 0},
    },
]
CIRR_TEST = [
    {
        "pairid": 0,
        "reference": "test1-0-0-img0",
        "caption": "the dog is now sitting",
        "img_set": {"id": 0, "members": ["test1-0-0-img0", "test1-0-1-img1"], "reference_rank": 0},
    }
]


def test_read_cirr_val(tmp_path: Path) -> None:
    write_json(tmp_path / "captions" / "cap.rc2.val.json", CIRR_VAL)
    triplets = read_cirr(tmp_path, "val")
    assert triplets[0] == CIRTriplet(
        pairid=12063,
        reference="test1-147-1-img1",
        caption="remove all but one dog and add a woman hugging it",
        target="test1-1001-2-img0",
        target_soft={"test1-1001-2-img0": 1.0, "test1-356-1-img0": 0.5},
        subset=tuple(CIRR_VAL[0]["img_set"]["members"]),
        gt_targets=("test1-1001-2-img0",),
    )
    assert [t.pairid for t in triplets] == [12063, 7]


def test_read_cirr_test_split_has_no_targets(tmp_path: Path) -> None:
    write_json(tmp_path / "captions" / "cap.rc2.test1.json", CIRR_TEST)
    [triplet] = read_cirr(tmp_path, "test1")
    assert triplet.target is None
    assert triplet.target_soft == {}
    assert triplet.gt_targets == ()
    assert triplet.subset == ("test1-0-0-img0", "test1-0-1-img1")


def test_read_cirr_uses_the_name(tmp_path: Path) -> None:
    # Our synthetic benchmark writes cap.shapes.<split>.json; no "rc2" may be assumed.
    write_json(tmp_path / "captions" / "cap.shapes.train.json", CIRR_VAL[1:])
    write_json(tmp_path / "image_splits" / "split.shapes.train.json", {"a": "./train/a.png"})
    assert [t.pairid for t in read_cirr(tmp_path, "train", name="shapes")] == [7]
    assert read_image_split(tmp_path, "train", name="shapes") == {"a": "./train/a.png"}
    with pytest.raises(FileNotFoundError, match=r"cap\.rc2\.train\.json"):
        read_cirr(tmp_path, "train")


def test_image_split_and_resolve(tmp_path: Path) -> None:
    split = {"train-10108-0-img0": "./train/34/train-10108-0-img0.png"}
    write_json(tmp_path / "image_splits" / "split.rc2.train.json", split)
    relpath = read_image_split(tmp_path, "train")["train-10108-0-img0"]
    assert resolve_image_path(tmp_path, relpath) == tmp_path / "train/34/train-10108-0-img0.png"
    assert resolve_image_path("root", "dev/x.png") == Path("root/dev/x.png")
    with pytest.raises(ValueError, match="relative"):
        resolve_image_path(tmp_path, "/etc/passwd")


FIQ_VAL = [
    {
        "target": "B008BHCT58",
        "candidate": "B003FGW7MK",
        "captions": ["is solid black with no sleeves", "is black with straps."],
    },
    {"target": "B0084Y8VIC", "candidate": "B00A3OVE7I", "captions": ["is longer", "has a print"]},
]


def test_read_fashioniq(tmp_path: Path) -> None:
    write_json(tmp_path / "captions" / "cap.dress.val.json", FIQ_VAL)
    write_json(tmp_path / "image_splits" / "split.dress.val.json", ["B008BHCT58", "B003FGW7MK"])
    triplets = read_fashioniq(tmp_path, "dress", "val")
    assert triplets[0] == CIRTriplet(
        pairid=0,
        reference="B003FGW7MK",
        # The trailing "." of the second caption goes, as in the common protocol.
        caption="is solid black with no sleeves and is black with straps",
        target="B008BHCT58",
        gt_targets=("B008BHCT58",),
        category="dress",
    )
    assert triplets[1].pairid == 1
    assert triplets[1].caption == "is longer and has a print"
    assert read_fashioniq_split(tmp_path, "dress", "val") == ["B008BHCT58", "B003FGW7MK"]


def test_read_fashioniq_test_split(tmp_path: Path) -> None:
    entries = [{"candidate": "B1", "captions": ["is red", "is short"]}]
    write_json(tmp_path / "captions" / "cap.shirt.test.json", entries)
    [triplet] = read_fashioniq(tmp_path, "shirt", "test")
    assert (triplet.target, triplet.gt_targets, triplet.category) == (None, (), "shirt")


CIRCO_VAL = [
    {
        "reference_img_id": 85932,
        "target_img_id": 323150,
        "relative_caption": "is on a wooden table",
        "shared_concept": "a cup of coffee",
        "gt_img_ids": [323150, 11764, 455037],
        "id": 0,
    }
]


def test_read_circo(tmp_path: Path) -> None:
    write_json(tmp_path / "annotations" / "val.json", CIRCO_VAL)
    assert read_circo(tmp_path, "val") == [
        CIRTriplet(
            pairid=0,
            reference="85932",
            caption="is on a wooden table",
            target="323150",
            gt_targets=("323150", "11764", "455037"),
            shared_concept="a cup of coffee",
        )
    ]


def test_read_circo_test_split(tmp_path: Path) -> None:
    entry = {
        "reference_img_id": 1,
        "relative_caption": "is at night",
        "shared_concept": "a bus",
        "id": 9,
    }
    write_json(tmp_path / "annotations" / "test.json", [entry])
    assert read_circo(tmp_path, "test") == [
        CIRTriplet(
            pairid=9, reference="1", caption="is at night", target=None, shared_concept="a bus"
        )
    ]


def _without(entry: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != key}


# Each reader, reading the split "val", and the file it reads.
READERS: dict[str, tuple[str, Callable[[Path], Any]]] = {
    "cirr": ("captions/cap.rc2.val.json", partial(read_cirr, split="val")),
    "cirr-split": ("image_splits/split.rc2.val.json", partial(read_image_split, split="val")),
    "fiq": ("captions/cap.dress.val.json", partial(read_fashioniq, category="dress", split="val")),
    "fiq-split": (
        "image_splits/split.dress.val.json",
        partial(read_fashioniq_split, category="dress", split="val"),
    ),
    "circo": ("annotations/val.json", partial(read_circo, split="val")),
}


@pytest.mark.parametrize(
    ("reader", "payload", "message"),
    [
        ("cirr", [_without(CIRR_VAL[0], "caption")], r"entry 0: missing key 'caption'"),
        ("cirr", [_without(CIRR_VAL[0], "target_hard")], r"missing key 'target_hard'"),
        ("cirr", [{**CIRR_VAL[0], "pairid": "1"}], r"key 'pairid' should be an integer, got str"),
        ("cirr", [{**CIRR_VAL[0], "pairid": True}], r"key 'pairid' should be an integer, got bool"),
        ("cirr", [{**CIRR_VAL[0], "target_soft": {"x": "hi"}}], r"\['x'\] should be a number"),
        ("cirr", [{**CIRR_VAL[0], "img_set": {"id": 1}}], r"img_set: missing key 'members'"),
        (
            "cirr",
            [{**CIRR_VAL[0], "img_set": {"members": [2]}}],
            r"'members' item 0 should be a str",
        ),
        ("cirr", {"pairid": 1}, r"the top level should be a list, got dict"),
        ("cirr", ["not an object"], r"entry 0 should be an object, got str"),
        ("cirr-split", {"a": 3}, r"the path of image 'a' should be a string"),
        ("fiq", [{**FIQ_VAL[0], "captions": ["only one"]}], r"should hold 2 captions, got 1"),
        ("fiq", [_without(FIQ_VAL[0], "candidate")], r"missing key 'candidate'"),
        ("fiq", [_without(FIQ_VAL[0], "target")], r"missing key 'target'"),
        ("fiq-split", ["a", None], r"item 1 should be a string, got NoneType"),
        ("circo", [_without(CIRCO_VAL[0], "gt_img_ids")], r"missing key 'gt_img_ids'"),
        ("circo", [{**CIRCO_VAL[0], "id": "0"}], r"key 'id' should be an integer"),
        ("circo", [{**CIRCO_VAL[0], "gt_img_ids": [1.5]}], r"'gt_img_ids' item 0 should be an int"),
    ],
)
def test_malformed_files_name_file_and_problem(
    tmp_path: Path, reader: str, payload: Any, message: str
) -> None:
    relpath, read = READERS[reader]
    path = write_json(tmp_path / relpath, payload)
    with pytest.raises(ValueError, match=message) as info:
        read(tmp_path)
    assert str(path) in str(info.value)


def test_invalid_json_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "annotations" / "val.json"
    path.parent.mkdir()
    path.write_text("[{", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON") as info:
        read_circo(tmp_path, "val")
    assert str(path) in str(info.value)
    with pytest.raises(FileNotFoundError, match=r"test\.json"):
        read_circo(tmp_path, "test")
