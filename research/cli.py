"""``python -m research.cli``: the ``cir`` command with the research verbs and reranker kinds.

Every ``cir`` verb works here as there; in addition:

- ``vlm-train``: ``cir vlm train`` with every stage (compare, judge and rewrite included:
  :mod:`research.stages`);
- ``vlm-probe``: what a stage's model can do (:func:`research.vlm_probe.probe_stage`);
- ``rar-distil``: a split's modifications distilled by the describe-and-verify model.

The describe-and-verify kind is registered (:mod:`research.describe`) in this process, and
``CIR_PLUGINS`` names it for every service this command starts (``--weaviate`` runs), so a
rewrite-stage folder is served as it was trained to be.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from types import SimpleNamespace

from cir_module.cli import VERB_GROUPS
from cir_module.cli import main as cir_main

__all__ = ["PLUGIN", "main"]

PLUGIN = "research.describe"


def _add_vlm_train(sub: argparse._SubParsersAction) -> None:
    import research.stages  # noqa: F401  (registers the compare, judge and rewrite stages)
    from cir_module.cli.vlm import add_train_arguments
    from cir_module.vlm_training.config import registered_stages

    add_train_arguments(
        sub.add_parser("vlm-train", help="cir vlm train with every stage (research included)"),
        registered_stages(),
    )


def _add_vlm_probe(sub: argparse._SubParsersAction) -> None:
    probe = sub.add_parser("vlm-probe", help="cells read, captions written, judgements made")
    probe.add_argument("folder", help="a stage's folder (vlm-train --out)")
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


def _add_rar_distil(sub: argparse._SubParsersAction) -> None:
    distil = sub.add_parser(
        "rar-distil", help="a split's modifications distilled by the describe-and-verify VLM"
    )
    distil.add_argument("--data", required=True)
    distil.add_argument("--model", required=True, help="describe-and-verify folder (rewrite)")
    distil.add_argument("--split", default="train")
    distil.add_argument("--limit", type=int, help="the split's first N queries")
    distil.add_argument("--out", required=True, help="JSON {reference\ttext: distilled}; resumes")
    distil.set_defaults(func=_rar_distil)


def _probe(args: argparse.Namespace) -> None:
    from research.vlm_probe import probe_stage

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


def _rar_distil(args: argparse.Namespace) -> None:
    from pathlib import Path

    from cir_module.data.benchmark import load_scene_graphs, tier_of
    from cir_module.eval.inprocess import EvalSplit
    from cir_module.training.data import query_key
    from research.describe import load_describing
    from research.distil import DescribingDistiller, agreement, constraints, distil_queries

    try:
        distiller = DescribingDistiller(load_describing(args.model))
    except ValueError as exc:
        sys.exit(str(exc))
    split = EvalSplit.load(args.data, args.split, limit=args.limit)
    queries = [(t.reference, t.caption) for t in split.triplets]
    distilled, made, seconds = distil_queries(distiller, queries, split.open, args.out)
    rate = f", {made / seconds:.2f} queries/s" if made else ""
    print(f"distilled {made} queries to {args.out} in {seconds:.1f} s{rate}")
    if not (Path(args.data) / "scene_graphs").is_dir():
        return  # a benchmark without scene graphs (CIRR): nothing to score against
    # Against the scene graphs: what the edit truly adds and drops.
    scenes, describe = load_scene_graphs(args.data, args.split), tier_of(args.data).describe
    truth = {
        query_key(t.reference, t.caption): constraints(
            describe(scenes[t.reference]), describe(scenes[t.target])
        )
        for t in split.triplets
        if t.target
    }
    print(json.dumps(agreement(distilled, truth)))


# The research verbs, as ``cir``'s verb groups are: a module-like object with ``add_parser``.
RESEARCH_VERBS = tuple(
    SimpleNamespace(add_parser=add) for add in (_add_vlm_train, _add_vlm_probe, _add_rar_distil)
)


def main(argv: list[str] | None = None) -> None:
    """Run a ``cir`` or research verb with the research kinds registered."""
    import importlib

    importlib.import_module(PLUGIN)
    plugins = json.loads(os.environ.get("CIR_PLUGINS") or "[]")
    if PLUGIN not in plugins:
        os.environ["CIR_PLUGINS"] = json.dumps([*plugins, PLUGIN])
    cir_main(argv, groups=(*VERB_GROUPS, *RESEARCH_VERBS), prog="python -m research.cli")


if __name__ == "__main__":
    main()
