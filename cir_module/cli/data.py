"""``cir data``: data sets (``cir data shapes``: the synthetic shapes benchmark)."""

from __future__ import annotations

import argparse

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``data`` and its verbs."""
    data = sub.add_parser("data", help="data sets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    shapes = data_sub.add_parser("shapes", help="generate the synthetic shapes benchmark")
    shapes.add_argument("out")
    shapes.add_argument("--seed", type=int, default=0)
    shapes.add_argument("--n-train", type=int, default=20000)
    shapes.add_argument("--n-val", type=int, default=1000)
    shapes.add_argument("--n-test", type=int, default=1000)
    shapes.add_argument("--image-size", type=int, default=128)
    shapes.add_argument("--phrasing-for-test", choices=["train", "heldout"], default="train")
    shapes.add_argument("--workers", type=int, default=2)
    shapes.add_argument("--overwrite", action="store_true")
    shapes.add_argument(
        "--tier",
        choices=["base", "hard"],
        default="base",
        help="base: one edit per text on a 3x3 grid; hard: compositional and relational edits "
        "of up to 8 textured objects on a 4x4 grid",
    )
    shapes.set_defaults(func=_data_shapes)


def _data_shapes(args: argparse.Namespace) -> None:
    from cir_module.data.benchmark import generate_benchmark

    summary = generate_benchmark(
        args.out,
        seed=args.seed,
        n_train=args.n_train,
        n_val=args.n_val,
        n_test=args.n_test,
        image_size=args.image_size,
        phrasing_for_test=args.phrasing_for_test,
        workers=args.workers,
        overwrite=args.overwrite,
        tier=args.tier,
    )
    print(summary)
