"""The second stage made by one command: ``cir vlm train --recipe NAME`` runs a recipe's
steps in order, each resumable, and writes the finished verifier with what it is served with.

A recipe (``recipes/NAME.json``, data like the retriever's recipes) names its benchmark (tier
and seed, generated when the ``--data`` folder holds none), the first stage it is paired with,
and its steps, each one of:

* ``{"name": N, "stage": S, "init": STEP, "neighbours": STEP, ...}``: a training stage
  (:func:`~cir_module.vlm_training.train.train_stage`) in ``OUT/N``, started from an earlier
  step's folder, with the :class:`~cir_module.vlm_training.config.StageConfig` fields given;
  ``neighbours`` names a mining step whose file it draws negatives from;
* ``{"name": N, "mine": {"k": 10, "chunk": 500}}``: the first stage's near misses per
  training query (:func:`~cir_module.vlm_training.mining.mine_neighbours`), ``OUT/N.json``;
* ``{"name": N, "calibrate": {"split": "val", "limit": 300, "k": 10, "lambdas": [...]}}``:
  the last stage's verifier over the first stage's top K on the split, one R@1 per fusion
  weight lambda; the best lambda (the smallest of equals) is kept, ``OUT/N.json``.

An optional ``"serve": {"precision": "int8"}`` is recorded with the lambda: the precision of
the verify graph the service runs the verifier's export at (``fp32``, the default, or ``int8``;
``CIR_RERANKER_PRECISION`` overrides it).

A step whose result is complete is skipped, a stage stopped part-way resumes from its last
checkpoint, so running the same command again goes on where it stopped. Stages run by steps
(no time budget), so the result does not depend on the machine's speed. The last step done,
``OUT/model`` is the last stage's model folder with its serving recorded in
``cir_reranker.json``: ``lambda``, ``k``, the ``differ`` and the ``first_stage``
(``served_with``); ``--ship`` also copies it into the package's checkpoints.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import fields
from pathlib import Path
from typing import Any

__all__ = ["RECIPES", "list_recipes", "load_recipe", "run_recipe"]

log = logging.getLogger(__name__)

RECIPES = Path(__file__).parent / "recipes"
_KINDS = ("stage", "mine", "calibrate")


def list_recipes() -> list[str]:
    """The recipes shipped with the package."""
    return sorted(p.stem for p in RECIPES.glob("*.json"))


def load_recipe(name: str | Path) -> dict[str, Any]:
    """A shipped recipe by name, or a recipe JSON file; checked step by step."""
    path = Path(name) if Path(name).suffix == ".json" else RECIPES / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"unknown recipe {name!r}: not a file and not one of {list_recipes()}")
    recipe = json.loads(path.read_text(encoding="utf-8"))
    missing = {"description", "data", "first_stage", "steps"} - set(recipe)
    if missing:
        raise ValueError(f"{path}: a recipe needs {sorted(missing)}")
    from cir_module.vlm_training.config import StageConfig

    known = {f.name for f in fields(StageConfig)} - {"stage", "data", "out", "init", "neighbours"}
    names: set[str] = set()
    for step in recipe["steps"]:
        kinds = [k for k in _KINDS if k in step]
        if len(kinds) != 1 or "name" not in step:
            raise ValueError(f"{path}: a step has a name and one of {_KINDS}: {step}")
        for ref in ("init", "neighbours"):
            if ref in step and step[ref] not in names:
                raise ValueError(f"{path}: step {step['name']!r} names {step[ref]!r} before it")
        if kinds == ["stage"]:
            extra = set(step) - known - {"name", "stage", "init", "neighbours"}
            if extra:
                raise ValueError(f"{path}: step {step['name']!r}: unknown fields {sorted(extra)}")
        names.add(step["name"])
    if not any("calibrate" in s for s in recipe["steps"]):
        raise ValueError(f"{path}: a recipe ends in a calibrate step (its lambda is recorded)")
    serve = recipe.setdefault("serve", {})
    if set(serve) - {"precision"} or serve.get("precision", "fp32") not in ("fp32", "int8"):
        raise ValueError(f"{path}: serve takes a precision, fp32 or int8: {serve}")
    return recipe


def _first_stage_path(name: str) -> Path:
    from cir_module.checkpoints import shipped_checkpoint

    return Path(name) if Path(name).is_dir() else shipped_checkpoint(name)


def _ensure_data(recipe: dict, data: Path) -> None:
    """Generate the recipe's benchmark in ``data`` unless one is there already."""
    if (data / "benchmark.json").is_file():
        return
    from cir_module.data.benchmark import generate_benchmark

    log.info("generating the %s benchmark in %s", recipe["data"], data)
    generate_benchmark(data, workers=2, **recipe["data"])


def _stage(step: dict, data: Path, out: Path) -> Path:
    from cir_module.vlm_training.config import StageConfig
    from cir_module.vlm_training.train import read_stage, train_stage

    folder = out / step["name"]
    if read_stage(folder).get("complete"):
        return folder
    options = {k: v for k, v in step.items() if k not in ("name", "stage", "init", "neighbours")}
    cfg = StageConfig(
        stage=step["stage"],
        data=str(data),
        out=str(folder),
        init=str(out / step["init"]) if "init" in step else None,
        neighbours=str(out / f"{step['neighbours']}.json") if "neighbours" in step else None,
        **options,
    )
    result = train_stage(cfg)
    if not result.complete:  # only a time budget stops a stage early; recipes set none
        raise RuntimeError(f"{folder} stopped at step {result.step}; run the command again")
    return folder


def _mine(step: dict, data: Path, out: Path, first_stage: Path) -> None:
    from cir_module.models import load_model
    from cir_module.vlm_training.mining import mine_neighbours

    path = out / f"{step['name']}.json"
    if path.is_file():
        return
    tmp = path.with_suffix(".tmp")  # mine_neighbours writes once, at its end
    mine_neighbours(load_model(first_stage), data, tmp, **step["mine"])
    tmp.replace(path)


def _calibrate(step: dict, data: Path, out: Path, first_stage: Path, model: Path) -> dict:
    """R@1 per lambda of the verifier at ``model`` over the first stage's top K."""
    from cir_module.eval.inprocess import EvalSplit
    from cir_module.eval.rerank_sweep import InjectionSetting, rerank_sweep
    from cir_module.eval.rerank_sweep import first_stage as rank
    from cir_module.models import load_model
    from cir_module.rerank.load import load_reranker

    path = out / f"{step['name']}.json"
    if path.is_file():
        return json.loads(path.read_text())
    options = step["calibrate"]
    name = options.get("split", "val")
    split = EvalSplit.load(data, name, limit=options.get("limit"))
    top = rank(load_model(first_stage), split, options["k"])
    rows = rerank_sweep(
        load_reranker(model), split, top, [InjectionSetting(0.0)], options["lambdas"]
    )
    first, swept = rows[0], rows[1:]
    best = max(swept, key=lambda r: (r["R@1"], -r["lambda"]))
    result = {
        "split": name,
        "queries": len(split.triplets),
        "k": options["k"],
        "first_stage_r1": first["R@1"],
        "lambda": best["lambda"],
        "r1": best["R@1"],
        "rows": [{"lambda": r["lambda"], "R@1": r["R@1"]} for r in swept],
    }
    path.write_text(json.dumps(result, indent=2))
    return result


def _finish(
    stage_folder: Path, out: Path, calibration: dict, first_stage: str, serve: dict
) -> Path:
    """``OUT/model``: the last stage's model with how it is served recorded."""
    from cir_module.vlm.changes import recorded_differ
    from cir_module.vlm.folder import SERVED_WITH, VLM_SETTINGS, saved_settings

    model = out / "model"
    if model.exists():
        shutil.rmtree(model)
    shutil.copytree(stage_folder / "model", model)
    settings = saved_settings(model)
    settings[SERVED_WITH] = {
        "lambda": calibration["lambda"],
        "k": calibration["k"],
        "first_stage": first_stage,
        "differ": recorded_differ(settings),
        "calibration": {k: v for k, v in calibration.items() if k != "rows"},
        **serve,
    }
    (model / VLM_SETTINGS).write_text(json.dumps(settings, indent=2))
    return model


def run_recipe(
    name: str | Path, data: str | Path, out: str | Path, *, ship: str | Path | None = None
) -> Path:
    """Run (or resume) the recipe ``name`` on the benchmark ``data`` in the folder ``out``;
    returns the finished model folder (``out/model``), also copied to ``ship`` if given."""
    recipe = load_recipe(name)
    data, out = Path(data), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _ensure_data(recipe, data)
    first_stage = _first_stage_path(recipe["first_stage"])
    last_stage: Path | None = None
    calibration: dict | None = None
    for step in recipe["steps"]:
        log.info("recipe %s: step %s", name, step["name"])
        if "stage" in step:
            last_stage = _stage(step, data, out)
        elif "mine" in step:
            _mine(step, data, out, first_stage)
        else:
            if last_stage is None:
                raise ValueError("a calibrate step comes after a stage")
            calibration = _calibrate(step, data, out, first_stage, last_stage / "model")
    assert last_stage is not None and calibration is not None  # load_recipe checked
    model = _finish(last_stage, out, calibration, recipe["first_stage"], recipe["serve"])
    if ship:
        ship = Path(ship)
        if ship.exists():
            shutil.rmtree(ship)
        shutil.copytree(model, ship)
        return ship
    return model
