"""``cir vlm train --recipe``: the shipped verifier's whole chain as one resumable command, on
a tiny model and a tiny hard benchmark; the folder it writes records lambda, K and the
differ, and the reranker loaded from it carries them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cir_module.cli import build_parser
from cir_module.data.benchmark import generate_benchmark
from cir_module.rerank.load import load_reranker
from cir_module.rerank.verify import ChangeVerifyingReranker
from cir_module.vlm.folder import SERVED_WITH, saved_settings
from cir_module.vlm_training import StageConfig, train_stage
from cir_module.vlm_training.recipe import list_recipes, load_recipe, run_recipe

TINY = dict(
    hidden=32, layers=2, heads=2, vision_depth=1, vision_width=32, vocab_size=400,
    batch_size=12, checkpoint_every=2, steps=3,
)  # fmt: skip


def tiny_recipe(tmp_path: Path) -> Path:
    """The shipped recipe, every stage shrunk, on a benchmark of 40 training queries."""
    recipe = load_recipe("shapes-hard-verifier")
    recipe["data"] |= {"n_train": 40, "n_val": 8, "n_test": 8}
    for step in recipe["steps"]:
        if "stage" in step:
            step |= TINY
        elif "mine" in step:
            step["mine"]["chunk"] = 20
        else:
            step["calibrate"]["limit"] = 8
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(recipe))
    return path


def _log_steps(folder: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (folder / "train_log.jsonl").read_text().splitlines()]


def test_the_shipped_recipe_is_listed_and_checked(tmp_path):
    assert "shapes-hard-verifier" in list_recipes()
    recipe = load_recipe("shapes-hard-verifier")
    assert [s.get("stage") for s in recipe["steps"] if "stage" in s] == [
        "vision", "caption", "verify", "verify",
    ]  # fmt: skip
    assert all(s.get("differ", "fact-diff") == "fact-diff" for s in recipe["steps"])
    bad = {**recipe, "steps": [{"name": "v", "stage": "verify", "init": "nowhere"}]}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="names 'nowhere' before it"):
        load_recipe(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="unknown recipe"):
        load_recipe("no-such-recipe")


def test_the_recipe_runs_resumes_and_records_how_it_is_served(tmp_path):
    recipe, data, out = tiny_recipe(tmp_path), tmp_path / "data", tmp_path / "out"
    # A stopped run, as a killed session leaves it: the vision stage done, the caption stage
    # cut short after one step (its time budget), its last checkpoint on disk.
    generate_benchmark(data, seed=0, tier="hard", n_train=40, n_val=8, n_test=8)
    caption = next(s for s in load_recipe(recipe)["steps"] if s["name"] == "caption")
    vision = next(s for s in load_recipe(recipe)["steps"] if s["name"] == "vision")
    options = {k: v for k, v in vision.items() if k not in ("name", "stage")}
    train_stage(StageConfig(stage="vision", data=str(data), out=str(out / "vision"), **options))
    options = {k: v for k, v in caption.items() if k not in ("name", "stage", "init")}
    stopped = train_stage(
        StageConfig(
            stage="caption", data=str(data), out=str(out / "caption"),
            init=str(out / "vision"), **(options | {"max_minutes": 1e-9}),
        )
    )  # fmt: skip
    assert not stopped.complete and stopped.step == 1
    vision_log = (out / "vision" / "train_log.jsonl").read_text()

    args = build_parser().parse_args(
        ["vlm", "train", "--recipe", str(recipe), "--data", str(data), "--out", str(out)]
    )
    args.func(args)
    # The finished vision stage was not run again; the caption stage went on from step 1.
    assert (out / "vision" / "train_log.jsonl").read_text() == vision_log
    assert _log_steps(out / "caption") == [1, 2, 3]
    for name in ("vision", "caption", "verify", "verify-mined"):
        assert json.loads((out / name / "stage.json").read_text())["complete"]
    mined = json.loads((out / "mined.json").read_text())
    assert mined["k"] == 10 and len(mined["neighbours"]) == 40
    calibration = json.loads((out / "calibrate.json").read_text())
    lambdas = [row["lambda"] for row in calibration["rows"]]
    best = max(calibration["rows"], key=lambda r: (r["R@1"], -r["lambda"]))
    assert calibration["lambda"] == best["lambda"] and lambdas == [0.3, 0.5, 1.0, 2.0, 3.0, 5.0]

    served = saved_settings(out / "model")[SERVED_WITH]
    assert served["lambda"] == calibration["lambda"] and served["k"] == 10
    assert served["differ"] == "fact-diff" and served["first_stage"] == "shapes-hard-conv"
    assert served["precision"] == "int8"  # the recipe's serve, as the shipped folder holds it
    reranker = load_reranker(out / "model")
    assert isinstance(reranker, ChangeVerifyingReranker) and reranker.differ == "fact-diff"
    assert reranker.describe()[SERVED_WITH]["lambda"] == calibration["lambda"]

    # Done: running it again changes nothing but copies the model where it is shipped.
    shipped = run_recipe(recipe, data, out, ship=tmp_path / "shipped")
    assert _log_steps(out / "caption") == [1, 2, 3]
    assert saved_settings(shipped) == saved_settings(out / "model")


def test_the_service_serves_the_shipped_verifier_behind_its_first_stage_unless_told():
    from cir_module.checkpoints import (
        HARD_TIER_MODEL,
        HARD_TIER_VERIFIER,
        shipped_checkpoint,
        shipped_reranker_for,
    )
    from cir_module.settings import ServiceSettings

    hard = str(shipped_checkpoint(HARD_TIER_MODEL))
    shipped = shipped_checkpoint(HARD_TIER_MODEL).parent / HARD_TIER_VERIFIER
    expected = str(shipped) if (shipped / "config.json").is_file() else None
    assert shipped_reranker_for(hard) == expected
    assert ServiceSettings(checkpoint=hard).reranker_folder() == expected
    # Another first stage has no shipped reranker; a setting names one, or none at all.
    assert ServiceSettings(checkpoint=str(shipped_checkpoint())).reranker_folder() is None
    assert ServiceSettings(checkpoint=hard, reranker_model="x/y").reranker_folder() == "x/y"
    assert ServiceSettings(checkpoint=hard, reranker_model="none").reranker_folder() is None
