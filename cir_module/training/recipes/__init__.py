"""Training recipes as data: one JSON file per recipe, ``{"description": ..., "config": {...}}``,
where ``config`` holds :class:`~cir_module.training.TrainConfig` fields (all but ``data`` and
``out``). ``cir train --recipe NAME --data D --out O`` starts from the recipe and lets any flag
given on the command line override it. Reading a recipe needs no torch."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["list_recipes", "load_recipe", "recipe_dir"]


def recipe_dir() -> Path:
    """The folder of the registered recipes (``*.json`` in this package)."""
    return Path(str(resources.files("cir_module.training.recipes")))


def list_recipes() -> list[str]:
    """Names of the registered recipes."""
    return sorted(p.stem for p in recipe_dir().glob("*.json"))


def load_recipe(name: str | Path) -> dict[str, Any]:
    """The recipe registered as ``name``, or read from a JSON file path:
    ``{"description": str, "config": {field: value}}``."""
    path = recipe_dir() / f"{name}.json"
    if not path.is_file():
        path = Path(name)
        if not path.is_file():
            raise ValueError(f"unknown recipe {name!r}: not a file and not one of {list_recipes()}")
    recipe = json.loads(path.read_text(encoding="utf-8"))
    if set(recipe) != {"description", "config"} or not isinstance(recipe["config"], dict):
        raise ValueError(f"{path}: a recipe is {{'description': ..., 'config': {{...}}}}")
    if {"data", "out"} & set(recipe["config"]):
        raise ValueError(f"{path}: data and out come from the command line, not the recipe")
    return recipe
