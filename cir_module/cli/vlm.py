"""``cir vlm train`` and ``cir vlm mine``: the VLM trained here in stages (the product's:
vision, caption, verify), each stage one resumable command, or a recipe's whole chain in one
(``--recipe``), and the first stage's near misses the verify stage may train on. The
research stages (compare, judge, rewrite) and the stage probe run through ``python -m
research.cli`` (``vlm-train``, ``vlm-probe``)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cir_module.vlm_training.config import StageConfig

__all__ = ["add_parser", "add_train_arguments", "stage_config", "train_from_args"]

# Flags with choices or help beyond their name; every other StageConfig field gets a flag
# named after it, typed by its default.
_HELP = {
    "stage": "vision: the tower learns to see every object; caption: image -> description; "
    "compare: two images -> what changed; judge: reference + text + candidate -> YES / NO; "
    "rewrite (from caption): description + text -> the target's description; "
    "verify (from caption or rewrite): description + text + what changed -> YES / NO "
    "(compare, judge and rewrite are research: python -m research.cli vlm-train)",
    "data": "synthetic benchmark folder (its tier, and the judge's training triplets)",
    "out": "the stage's folder; the same command resumes it",
    "init": "the folder of the stage this one starts from (every stage but vision)",
    "differ": "verify stage: what writes its change lists (fact-diff: general; grid-edits, "
    "grid-facts: the synthetic benchmark's grammar)",
    "max_minutes": "stop (checkpointed) after this many minutes; the same command resumes",
    "neighbours": "verify stage: the first stage's near misses per query (cir vlm mine --out)",
    "neighbour_negatives": "verify stage: the share of negatives drawn from --neighbours",
}


def _config_fields() -> list[dataclasses.Field]:
    from cir_module.vlm_training.config import StageConfig

    return list(dataclasses.fields(StageConfig))


def add_train_arguments(
    train: argparse.ArgumentParser, stages: tuple[str, ...], *, recipes: bool = False
) -> None:
    """One flag per :class:`StageConfig` field on ``train``, ``--stage`` one of ``stages``;
    with ``recipes``, ``--recipe`` (and ``--ship``) instead of ``--stage``."""
    if recipes:
        from cir_module.vlm_training.recipe import list_recipes

        train.add_argument(
            "--recipe",
            help=f"run a recipe's whole chain ({', '.join(list_recipes())} or a JSON file), "
            "resumable: the same command goes on where it stopped; --data is generated when "
            "empty, every stage flag but --data and --out comes from the recipe",
        )
        train.add_argument(
            "--ship",
            help="with --recipe: also copy the finished model folder here (the package's: "
            "cir_module/checkpoints/NAME)",
        )
    for field in _config_fields():
        flag = "--" + field.name.replace("_", "-")
        extra = {"help": _HELP.get(field.name)}
        if field.name == "stage":
            train.add_argument(flag, required=not recipes, choices=stages, **extra)
        elif field.default is dataclasses.MISSING:
            train.add_argument(flag, required=True, **extra)
        elif field.default is None:
            kind = float if field.name == "max_minutes" else str
            train.add_argument(flag, type=kind, **extra)
        else:
            train.add_argument(flag, type=type(field.default), default=field.default, **extra)
    train.set_defaults(func=train_from_args)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``vlm`` with its verbs ``train`` (the product's stages) and ``mine``."""
    from cir_module.vlm_training.config import PRODUCT_STAGES

    vlm = sub.add_parser("vlm", help="the VLM trained here in stages")
    vlm_sub = vlm.add_subparsers(dest="vlm_command", required=True)
    add_train_arguments(
        vlm_sub.add_parser("train", help="run or resume one stage, or a recipe's chain"),
        PRODUCT_STAGES,
        recipes=True,
    )
    mine = vlm_sub.add_parser(
        "mine", help="the first stage's top K per training query, target left out"
    )
    mine.add_argument("--first-stage", required=True, help="the retriever's checkpoint folder")
    mine.add_argument("--data", required=True, help="synthetic benchmark folder")
    mine.add_argument("--out", required=True, help="JSON file written (verify stage: --neighbours)")
    mine.add_argument("--k", type=int, default=10, help="negatives kept per query")
    mine.add_argument(
        "--chunk", type=int, default=500, help="queries ranked together (their image sets)"
    )
    mine.add_argument("--limit", type=int, help="the first N training queries only")
    mine.set_defaults(func=_mine)


def stage_config(args: argparse.Namespace) -> StageConfig:
    """The :class:`StageConfig` of a ``cir vlm train`` command line."""
    from cir_module.vlm_training.config import StageConfig

    return StageConfig(**{f.name: getattr(args, f.name) for f in _config_fields()})


def train_from_args(args: argparse.Namespace) -> None:
    """Run or resume the stage (or the recipe) a ``vlm train`` command line names."""
    from cir_module.vlm_training.train import train_stage

    if getattr(args, "recipe", None):
        from cir_module.vlm_training.recipe import run_recipe

        if args.stage:
            raise SystemExit("--recipe runs every stage of the recipe: leave out --stage")
        model = run_recipe(args.recipe, args.data, args.out, ship=args.ship)
        print(f"recipe {args.recipe} complete: {model}")
        return
    if not args.stage:
        raise SystemExit("cir vlm train needs --stage or --recipe")

    result = train_stage(stage_config(args))
    state = "complete" if result.complete else "stopped (run the same command to resume)"
    print(f"{args.stage} stage {state} at step {result.step}: {result.folder}")


def _mine(args: argparse.Namespace) -> None:
    from cir_module.models import load_model
    from cir_module.vlm_training.mining import mine_neighbours

    mined = mine_neighbours(
        load_model(args.first_stage), args.data, args.out, args.k, args.chunk, args.limit
    )
    print(f"{len(mined)} training queries mined, {args.k} negatives each: {args.out}")
