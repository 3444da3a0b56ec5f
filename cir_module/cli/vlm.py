"""``cir vlm train``, ``cir vlm probe`` and ``cir vlm mine``: the VLM trained here in stages
(vision, caption, compare, judge; rewrite, verify), each stage one resumable command, what a
stage's model can do, and the first stage's near misses the verify stage may train on."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cir_module.vlm_training.config import StageConfig

__all__ = ["add_parser", "stage_config"]

# Flags with choices or help beyond their name; every other StageConfig field gets a flag
# named after it, typed by its default.
_HELP = {
    "stage": "vision: the tower learns to see every object; caption: image -> description; "
    "compare: two images -> what changed; judge: reference + text + candidate -> YES / NO; "
    "rewrite (from caption): description + text -> the target's description; "
    "verify (from caption or rewrite): description + text + what changed -> YES / NO",
    "data": "synthetic benchmark folder (its tier, and the judge's training triplets)",
    "out": "the stage's folder; the same command resumes it",
    "init": "the folder of the stage this one starts from (every stage but vision)",
    "change_wording": "verify stage: change lists as whole facts or as one short edit per object",
    "max_minutes": "stop (checkpointed) after this many minutes; the same command resumes",
    "neighbours": "verify stage: the first stage's near misses per query (cir vlm mine --out)",
    "neighbour_negatives": "verify stage: the share of negatives drawn from --neighbours",
}


def _config_fields() -> list[dataclasses.Field]:
    from cir_module.vlm_training.config import StageConfig

    return list(dataclasses.fields(StageConfig))


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``vlm`` with its verbs ``train``, ``probe`` and ``mine``."""
    from cir_module.vlm_training.config import STAGES

    vlm = sub.add_parser("vlm", help="the VLM trained here in stages")
    vlm_sub = vlm.add_subparsers(dest="vlm_command", required=True)
    train = vlm_sub.add_parser("train", help="run or resume one stage")
    for field in _config_fields():
        flag = "--" + field.name.replace("_", "-")
        extra = {"help": _HELP.get(field.name)}
        if field.name == "stage":
            train.add_argument(flag, required=True, choices=STAGES, **extra)
        elif field.default is dataclasses.MISSING:
            train.add_argument(flag, required=True, **extra)
        elif field.default is None:
            kind = float if field.name == "max_minutes" else str
            train.add_argument(flag, type=kind, **extra)
        else:
            train.add_argument(flag, type=type(field.default), default=field.default, **extra)
    train.set_defaults(func=_train)
    probe = vlm_sub.add_parser("probe", help="cells read, captions written, judgements made")
    probe.add_argument("folder", help="a stage's folder (cir vlm train --out)")
    probe.add_argument("--images", type=int, default=256, help="fresh scenes whose cells are read")
    probe.add_argument("--captions", type=int, default=32, help="fresh scenes to describe")
    probe.add_argument("--judge-split", default="val")
    probe.add_argument("--judge-queries", type=int, default=200)
    probe.add_argument(
        "--rationales",
        type=int,
        default=0,
        help="rewrite stage: queries whose rationales are checked",
    )
    probe.add_argument("--seed", type=int, default=12345)
    probe.set_defaults(func=_probe)
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


def _train(args: argparse.Namespace) -> None:
    from cir_module.vlm_training.train import train_stage

    result = train_stage(stage_config(args))
    state = "complete" if result.complete else "stopped (run the same command to resume)"
    print(f"{args.stage} stage {state} at step {result.step}: {result.folder}")


def _probe(args: argparse.Namespace) -> None:
    import json

    from cir_module.vlm_training.probe import probe_stage

    report = probe_stage(
        args.folder,
        images=args.images,
        captions=args.captions,
        judge_split=args.judge_split,
        judge_queries=args.judge_queries,
        rationales=args.rationales,
        seed=args.seed,
    )
    print(json.dumps(report, indent=2))


def _mine(args: argparse.Namespace) -> None:
    from cir_module.models import load_model
    from cir_module.vlm_training.mining import mine_neighbours

    mined = mine_neighbours(
        load_model(args.first_stage), args.data, args.out, args.k, args.chunk, args.limit
    )
    print(f"{len(mined)} training queries mined, {args.k} negatives each: {args.out}")
