"""Where the second stage misses R@1: per edit kind, and a sample of its failures to read.

Reads the rankings ``cir rerank eval --rankings-out`` writes (the first stage's top K and the
reranked order per test query) and the captions the verifier read (``--stored-captions``).
Prints R@1 per edit kind before and after rerank; how many failures have the target outside
the first stage's top K (the first stage's miss, not the verifier's); how many read a caption
(reference, target or the wrong top result) other than its scene graph in words; and, for a
seeded random sample of failures, the modification with the change lists of the target and
of the wrong top result, as the verifier read them, to be classified by hand.

Usage: python scripts/verifier_errors.py DATA RANKINGS CAPTIONS [--sample N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from pathlib import Path

from phrasing_diagnosis import r1_per_kind  # this folder's script, on sys.path when run

from cir_module.data.benchmark import load_edit_ops, load_scene_graphs, tier_of
from cir_module.eval.inprocess import EvalSplit
from cir_module.vlm.changes import DEFAULT_DIFFER, description_changes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("rankings")
    parser.add_argument("captions")
    parser.add_argument("--sample", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--differ", default=DEFAULT_DIFFER)
    args = parser.parse_args()

    ranked = json.loads(Path(args.rankings).read_text())
    captions = json.loads(Path(args.captions).read_text())
    split = EvalSplit.load(args.data, "test", limit=len(ranked["targets"]))
    ops = load_edit_ops(split.root, "test")
    scenes, describe = load_scene_graphs(args.data, "test"), tier_of(args.data).describe

    if ranked["targets"] != [t.target for t in split.triplets]:
        raise SystemExit(f"{args.rankings} ranks another split, or in another order")
    total = Counter(ops[t.pairid] for t in split.triplets)
    first, after = r1_per_kind(split, ranked["first_stage"]), r1_per_kind(split, ranked["reranked"])
    print(f"{'edit kind':<22} {'queries':>7} {'first stage':>11} {'reranked':>9}")
    for op, count in total.most_common():
        print(f"{op:<22} {count:>7} {first[op]:>11.1f} {after[op]:>9.1f}")
    r1 = {
        name: 100 * sum(r[0] == t.target for r, t in zip(ranked[name], split.triplets, strict=True))
        for name in ("first_stage", "reranked")
    }
    n = len(split.triplets)
    print(f"{'all':<22} {n:>7} {r1['first_stage'] / n:>11.1f} {r1['reranked'] / n:>9.1f}")

    failures = [i for i, t in enumerate(split.triplets) if ranked["reranked"][i][0] != t.target]

    outside = [i for i in failures if ranked["targets"][i] not in ranked["first_stage"][i]]
    misread = [
        i
        for i in failures
        if any(
            captions[name] != describe(scenes[name])
            for name in (
                split.triplets[i].reference,
                split.triplets[i].target,
                ranked["reranked"][i][0],
            )
        )
    ]
    print(
        f"\n{len(failures)} failures: {len(outside)} with the target outside the first "
        f"stage's top K, {len(misread)} reading a caption other than the scene graph's"
    )

    for i in sorted(random.Random(args.seed).sample(failures, min(args.sample, len(failures)))):
        t, top = split.triplets[i], ranked["reranked"][i][0]
        place = (
            ranked["reranked"][i].index(t.target) + 1 if t.target in ranked["reranked"][i] else None
        )
        print(f"\n#{i} {ops[t.pairid]} | {t.caption} | target reranked at {place}")
        for who, name in (("target", t.target), ("top", top)):
            changes = description_changes(captions[t.reference], captions[name], differ=args.differ)
            print(f"  {who:<6}: {changes}")


if __name__ == "__main__":
    main()
