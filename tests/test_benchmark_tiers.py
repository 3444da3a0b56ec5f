"""The benchmark writer's tiers: the base tier exactly as before tiers existed, the hard tier
written in the same CIRR layout with its own scene graphs, edit records and scene-loss
vocabulary; and the training recipes that train on either."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from cir_module.data.benchmark import TIERS, generate_benchmark, load_scene_graphs, tier_of
from cir_module.data.hard import EDIT_KINDS, HardObject
from cir_module.training.recipes import list_recipes, load_recipe
from cir_module.training.scene_loss import SceneLabels

SMALL = {"n_train": 40, "n_val": 10, "n_test": 10, "image_size": 64}
# digest() of generate_benchmark(seed=0, **SMALL), computed with the generator as it was
# before tiers were added (commit 06522ce).
BASE_DIGEST = "d73de6950789cb313597001bf6bc46b760c594a69d4894958467bd8daeda51e2"


def digest(root: Path) -> str:
    """sha256 over every file: its relative path, then its bytes, or for a PNG its decoded
    pixels (so that the digest does not depend on the PNG encoder's zlib)."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        if path.suffix == ".png":
            with Image.open(path) as image:
                h.update(f"{image.mode}{image.size}".encode() + image.tobytes())
        else:
            h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def hard_bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hard") / "a"
    generate_benchmark(out, seed=0, tier="hard", **SMALL)
    return out


def test_base_tier_is_byte_identical_to_the_generator_before_tiers(tmp_path):
    generate_benchmark(tmp_path / "b", seed=0, **SMALL)
    assert digest(tmp_path / "b") == BASE_DIGEST
    assert "tier" not in json.loads((tmp_path / "b" / "benchmark.json").read_text())
    assert tier_of(tmp_path / "b").name == "base"


def test_hard_tier_is_deterministic_and_names_its_tier(hard_bench, tmp_path):
    generate_benchmark(tmp_path / "again", seed=0, tier="hard", workers=2, **SMALL)
    assert digest(tmp_path / "again") == digest(hard_bench)
    generate_benchmark(tmp_path / "other", seed=1, tier="hard", **SMALL)
    assert digest(tmp_path / "other") != digest(hard_bench)
    meta = json.loads((hard_bench / "benchmark.json").read_text())
    assert meta["tier"] == "hard" and meta["version"] == TIERS["hard"].version
    assert meta["num_hard_negatives"] == 4 and meta["gallery_negatives"] == 1
    assert tier_of(hard_bench) is TIERS["hard"]


def test_hard_tier_annotations_scene_graphs_and_edit_records(hard_bench):
    for split in ("train", "val", "test"):
        captions = json.loads((hard_bench / "captions" / f"cap.shapes.{split}.json").read_text())
        edits = json.loads((hard_bench / "edits" / f"edits.shapes.{split}.json").read_text())
        scenes = load_scene_graphs(hard_bench, split)
        assert len(captions) == len(edits) == SMALL[f"n_{split}"]
        for caption, edit in zip(captions, edits, strict=True):
            assert edit["pairid"] == caption["pairid"] and edit["op"] in EDIT_KINDS
            # Training groups carry 4 hard negatives; val/test galleries the tier's one each
            # (each undoes one requested change, or is a single-attribute filler).
            negatives = 4 if split == "train" else TIERS["hard"].gallery_negatives
            members = caption["img_set"]["members"]
            assert len(members) == 2 + negatives and caption["target_hard"] in members
            assert len(edit["negatives"]) == negatives
            target = scenes[caption["target_hard"]]
            assert all(isinstance(o, HardObject) for o in target)
            assert scenes[caption["reference"]] != target
        images = list((hard_bench / "images" / split).glob("*.png"))
        assert len(images) == len(scenes)


def test_scene_labels_follow_the_tier(hard_bench, tmp_path):
    labels = SceneLabels.load(str(hard_bench), "test")
    assert labels.vocabulary.cells == 16 and labels.vocabulary.class_sizes == (6, 8, 3, 3)
    name, scene = next(iter(load_scene_graphs(hard_bench, "test").items()))
    rows = labels([name])[0]
    assert rows.shape == (16, 4)
    assert int((rows[:, 0] > 0).sum()) == len(scene)  # one occupied cell per object
    generate_benchmark(tmp_path / "b", seed=0, **SMALL)
    base = SceneLabels.load(str(tmp_path / "b"), "test")
    assert base.vocabulary.cells == 9 and base.vocabulary.class_sizes == (6, 8, 2)


def test_unknown_tier_is_refused(tmp_path):
    with pytest.raises(ValueError, match="base, hard"):
        generate_benchmark(tmp_path / "x", tier="harder", **SMALL)


def test_every_recipe_reads_and_sets_only_train_config_fields():
    from cir_module.training import TrainConfig

    assert "shapes-60min" in list_recipes()
    for name in list_recipes():
        recipe = load_recipe(name)
        assert recipe["description"]
        config = TrainConfig(data="d", out="o", **recipe["config"])
        assert config.model == recipe["config"].get("model", config.model)
