"""``cir train``: InfoNCE training on triplets in CIRR's format.

Options default to ``None`` where :class:`~cir_module.training.TrainConfig` has the default
(so that it lives in one place); :func:`train_config` maps them onto the config field by
field, so a flag renamed without its field fails loudly instead of being dropped.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from cir_module.cli.evaluate import print_eval
from cir_module.cli.options import add_dataset_name, add_enhance
from cir_module.models.config import list_models
from cir_module.training.recipes import list_recipes, load_recipe

if TYPE_CHECKING:
    from cir_module.training import TrainConfig

__all__ = ["add_parser", "train_config"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``train``."""
    tr = sub.add_parser("train", help="InfoNCE training on triplets in CIRR's format")
    tr.add_argument("--data", required=True, help="data root (CIRR layout)")
    tr.add_argument("--out", required=True, help="run folder (checkpoint/, trainer state)")
    tr.add_argument(
        "--recipe",
        help=f"start from a registered recipe ({', '.join(list_recipes())}) or a recipe JSON "
        "file; flags given here override it",
    )
    tr.add_argument(
        "--model", help=f"registered config ({', '.join(list_models())}) or JSON (shapes-minilm)"
    )
    tr.add_argument("--pretrained", help="backbone hub id or folder")
    tr.add_argument("--init-from", help="cir checkpoint to fine-tune (keeps its architecture)")
    tr.add_argument("--captions", help="JSON image name -> caption (`cir rar captions`)")
    tr.add_argument("--caption-weight", type=float, help="weight of the caption (0.5)")
    add_enhance(tr, default=None)
    tr.add_argument(
        "--queries",
        help="--enhance vlm: the distilled modifications (`python -m research.cli rar-distil`)",
    )
    tr.add_argument(
        "--scene-loss", type=float, help="weight of the auxiliary scene loss (scene graphs)"
    )
    tr.add_argument(
        "--token-scene-loss",
        type=float,
        help="weight of the scene loss read cell by cell from the image tokens",
    )
    tr.add_argument(
        "--precise-bn", type=int, help="recompute BatchNorm statistics on N images at the end"
    )
    tr.add_argument("--num-scales", type=int, help="pyramid scales (ablation)")
    tr.add_argument("--fusion", help="fusion kind: cross, mlp, sum, image, text")
    add_dataset_name(tr)
    tr.add_argument("--split", default="train")
    tr.add_argument("--epochs", type=float)
    tr.add_argument("--max-minutes", type=float, help="stop (and save) after this long")
    tr.add_argument("--batch-size", type=int)
    tr.add_argument("--accumulate", type=int, help="gradient accumulation steps")
    tr.add_argument("--hard-negatives", type=int, help="img_set negatives per triplet")
    tr.add_argument(
        "--reference-negatives",
        action="store_true",
        default=None,
        help="also use each reference as a negative candidate",
    )
    tr.add_argument("--lr", type=float)
    tr.add_argument("--temperature", type=float, help="initial InfoNCE temperature (0.07)")
    tr.add_argument("--weight-decay", type=float)
    tr.add_argument("--warmup-steps", type=int)
    tr.add_argument("--freeze", choices=["none", "backbone", "vision", "text"])
    tr.add_argument("--unfreeze-last", type=int, help="train the last N frozen vision layers")
    tr.add_argument("--seed", type=int)
    tr.add_argument("--save-every", type=int)
    tr.add_argument("--resume", action="store_true", default=None)
    tr.add_argument("--device")
    tr.add_argument("--eval-split", help="evaluate in-process on this split afterwards")
    tr.set_defaults(func=_train)


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of a ``cir train`` command line: the recipe's values when one
    is named, overridden by the options given; the rest keep the config's defaults."""
    from cir_module.training import TrainConfig

    recipe = load_recipe(args.recipe)["config"] if args.recipe else {}
    unknown = set(recipe) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise SystemExit(f"recipe {args.recipe}: unknown TrainConfig fields {sorted(unknown)}")
    options = {
        "data": args.data,
        "out": args.out,
        "model": args.model,
        "pretrained": args.pretrained,
        "init_from": args.init_from,
        "num_scales": args.num_scales,
        "fusion": args.fusion,
        "split": args.split,
        "dataset_name": args.dataset_name,
        "epochs": args.epochs,
        "max_minutes": args.max_minutes,
        "batch_size": args.batch_size,
        "accumulate": args.accumulate,
        "hard_negatives": args.hard_negatives,
        "reference_negatives": args.reference_negatives,
        "lr": args.lr,
        "temperature": args.temperature,
        "weight_decay": args.weight_decay,
        "warmup_steps": args.warmup_steps,
        "freeze": args.freeze,
        "unfreeze_last": args.unfreeze_last,
        "seed": args.seed,
        "captions": args.captions,
        "caption_weight": args.caption_weight,
        "enhance": args.enhance,
        "queries": args.queries,
        "auxiliary_losses": _auxiliary_losses(args),
        "precise_bn": args.precise_bn,
        "save_every": args.save_every,
        "resume": args.resume,
        "device": args.device,
    }
    given = {k: v for k, v in options.items() if v is not None}
    return TrainConfig(**(recipe | given))


def _auxiliary_losses(args: argparse.Namespace) -> dict[str, dict[str, float]] | None:
    """The benchmark's scene loss (cir_module/training/scene_loss.py), read from the pooled
    embedding (``--scene-loss``) and cell by cell from the image tokens
    (``--token-scene-loss``); None when neither weight is positive."""
    scene = {"embedding": args.scene_loss or 0.0, "tokens": args.token_scene_loss or 0.0}
    return {"scene": scene} if any(w > 0 for w in scene.values()) else None


def _train(args: argparse.Namespace) -> None:
    from cir_module.training import train

    checkpoint = train(train_config(args))
    print(f"checkpoint: {checkpoint}")
    if args.eval_split:
        print_eval(checkpoint, args.data, args.eval_split, args.dataset_name, None, False)
