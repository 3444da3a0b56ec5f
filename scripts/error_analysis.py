"""Where a model misses R@1 on the synthetic benchmark: R@1 per edit, and how each wrong
top-1 result differs from the target (by comparing scene graphs).

Usage: python scripts/error_analysis.py CHECKPOINT DATA [--split test]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

from cir_module.data.benchmark import BENCHMARK_NAME, load_scene_graphs, tier_of
from cir_module.eval.inprocess import EvalSplit, evaluate_in_process
from cir_module.models import load_model


def scene_difference(target, found, attributes: tuple[str, ...]) -> tuple[str, ...]:
    """What ``found`` changes relative to ``target``, one entry per cell: ``missing``
    (an object of the target is absent), ``extra``, or which of ``attributes`` differ."""
    a = {o.cell: o for o in target}
    b = {o.cell: o for o in found}
    diff: list[str] = []
    for cell in sorted(set(a) | set(b)):
        if cell not in b:
            diff.append("missing")
        elif cell not in a:
            diff.append("extra")
        else:
            diff += [k for k in attributes if getattr(a[cell], k) != getattr(b[cell], k)]
    return tuple(sorted(diff))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    split = EvalSplit.load(args.data, args.split)
    result = evaluate_in_process(load_model(args.checkpoint), split)
    edits = json.loads(
        (Path(args.data) / "edits" / f"edits.{BENCHMARK_NAME}.{args.split}.json").read_text()
    )
    scenes = load_scene_graphs(args.data, args.split)
    attributes = tuple(name for name, _ in tier_of(args.data).attributes)

    hits: dict[str, list[bool]] = defaultdict(list)
    misses: Counter[tuple[str, ...]] = Counter()
    for triplet, edit, ranking in zip(split.triplets, edits, result.rankings, strict=True):
        hit = ranking[0] == triplet.target
        hits[edit["op"]].append(hit)
        if not hit:
            misses[scene_difference(scenes[triplet.target], scenes[ranking[0]], attributes)] += 1

    print(f"R@1 {100 * result.metrics['R@1']:.1f} over {len(split.triplets)} queries")
    for op, values in sorted(hits.items()):
        print(f"  {op:<20} {len(values):>4} queries  R@1 {100 * sum(values) / len(values):.1f}")
    print(f"wrong top-1 vs target ({sum(misses.values())} misses):")
    for diff, count in misses.most_common(8):
        print(f"  {count:>4}  {' + '.join(diff) or 'same scene'}")


if __name__ == "__main__":
    main()
