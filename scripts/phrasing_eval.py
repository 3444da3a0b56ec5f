"""A first stage on the training phrasings and on the held-out ones, through Weaviate.

Each ``--pair DATA HELDOUT`` names two folders holding the same test triplets, worded with the
training phrasings and with the held-out ones (``cir data shapes ... --n-train 0 --n-val 0
--phrasing-for-test heldout``). One service and one Weaviate serve every pair. Per pair: R@1
with each wording, the held-out drop with a paired 95 % bootstrap interval and McNemar's exact
p, and R@1 per edit kind with each wording. ``--baseline`` reads an earlier run's JSON (another
checkpoint on the same folders) and adds, per folder, the change in R@1 against it, paired.

Usage: python scripts/phrasing_eval.py CHECKPOINT --pair DATA HELDOUT [--pair ...]
           [--json-out FILE] [--baseline FILE] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from phrasing_diagnosis import r1_per_kind  # this folder's script, on sys.path when run

from cir_module.eval.inprocess import EvalSplit
from cir_module.eval.rerank_sweep import r1_difference, r1_interval
from integration.evaluate import evaluate_with_client
from integration.stack import connect, local_stack


def mcnemar_p(a: list[bool], b: list[bool]) -> float:
    """Two-sided exact McNemar p of paired hits: a binomial test on the discordant pairs."""
    only_a = sum(x and not y for x, y in zip(a, b, strict=True))
    only_b = sum(y and not x for x, y in zip(a, b, strict=True))
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def folder_run(split: EvalSplit, rankings: list[list[str]]) -> dict:
    """R@1 (percent) with its interval, per edit kind, and the per-query top-1 and targets."""
    targets = [t.target for t in split.triplets]
    return {
        "r1": round(100 * float(np.mean(hits(rankings, targets))), 2),
        "r1_interval": [round(x, 2) for x in r1_interval(rankings, targets)],
        "per_kind": r1_per_kind(split, rankings),
        "top1": [r[0] if r else None for r in rankings],
        "targets": targets,
    }


def top1_rankings(run: dict) -> list[list[str]]:
    """A run's top-1 results as rankings (what the R@1 helpers take)."""
    return [[x] if x else [] for x in run["top1"]]


def hits(rankings: list[list[str]], targets: list[str]) -> list[bool]:
    return [bool(r) and r[0] == t for r, t in zip(rankings, targets, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument(
        "--pair", nargs=2, action="append", required=True, metavar=("DATA", "HELDOUT")
    )
    parser.add_argument("--json-out")
    parser.add_argument("--baseline", help="an earlier run's --json-out on the same folders")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()

    folders = list(dict.fromkeys(f for pair in args.pair for f in pair))
    runs: dict[str, dict] = {}
    with local_stack(args.checkpoint) as stack, connect(stack.weaviate) as client:
        for folder in folders:
            split = EvalSplit.load(folder, "test", limit=args.limit)
            result = evaluate_with_client(client, split)
            runs[folder] = folder_run(split, result.rankings)

    report: dict = {"checkpoint": args.checkpoint, "folders": runs, "pairs": []}
    for data, heldout in args.pair:
        a, b = runs[data], runs[heldout]
        ranked_a, ranked_b = top1_rankings(a), top1_rankings(b)
        drop, low, high = r1_difference(ranked_b, ranked_a, a["targets"])
        report["pairs"].append(
            {
                "data": data,
                "heldout": heldout,
                "r1_train_phrasing": a["r1"],
                "r1_heldout": b["r1"],
                "heldout_minus_train": round(drop, 2),
                "interval": [round(low, 2), round(high, 2)],
                "mcnemar_p": round(
                    mcnemar_p(hits(ranked_a, a["targets"]), hits(ranked_b, b["targets"])), 4
                ),
            }
        )
    if args.baseline:
        base = json.loads(Path(args.baseline).read_text())["folders"]
        report["against_baseline"] = {}
        for folder, run in runs.items():
            if folder not in base:
                continue
            old = base[folder]
            assert old["targets"] == run["targets"], folder
            diff, low, high = r1_difference(top1_rankings(run), top1_rankings(old), run["targets"])
            report["against_baseline"][folder] = {
                "baseline_r1": old["r1"],
                "r1": run["r1"],
                "difference": round(diff, 2),
                "interval": [round(low, 2), round(high, 2)],
            }
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report) + "\n")
    summary = {k: v for k, v in report.items() if k != "folders"}
    summary["per_kind"] = {f: r["per_kind"] for f, r in runs.items()}
    summary["r1"] = {f: [r["r1"], r["r1_interval"]] for f, r in runs.items()}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
