"""Render the ablation JSON files written by research/shapes_ablation.sh (or
scripts/lvlm_ablation.sh) as a markdown table; with one seed, R@1 carries its 95 % Wilson
interval over the split's queries.

python scripts/results_table.py runs/ablation
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROWS = {
    "image": "image only (reference embedding)",
    "text": "text only (modification embedding)",
    "sum": "sum fusion, M = 3",
    "m1": "ours (cross fusion), M = 1",
    "m2": "ours (cross fusion), M = 2",
    "m3": "ours (cross fusion), M = 3",
    "m4": "ours (cross fusion), M = 4",
    "m3hn": "ours, M = 3, 4 hard negatives + references as negatives",
}
LVLM_ROWS = {  # scripts/lvlm_ablation.sh (its folder has an "lvlm" run)
    "dual": "dual encoder (shapes-minilm-conv), same budget",
    "lvlm": "lvlm: task prompt, pool 16 (top 2 x 4), weighted mean, M = 3",
    "notask": "lvlm, no task prompt",
    "nopool": "lvlm, no soft-prompt pool",
    "pool4": "lvlm, pool 4",
    "pool32": "lvlm, pool 32",
    "last": "lvlm, last-token pooling",
    "mean": "lvlm, mean pooling",
    "m1": "lvlm, M = 1",
}
KEYS = ("R@1", "R@5", "R@10", "R@50", "Rsubset@1", "Avg")


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion ``p`` over ``n`` trials."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def main(folder: str) -> None:
    results: dict[str, dict[int, dict[str, float]]] = defaultdict(dict)
    queries: dict[str, int] = {}
    for path in sorted(Path(folder).glob("*-s*.json")):
        run, seed = path.stem.rsplit("-s", 1)
        saved = json.loads(path.read_text())
        results[run][int(seed)] = saved["in-process"]
        queries[run] = saved.get("queries", 0)
    rows = LVLM_ROWS if "lvlm" in results else ROWS
    print("| query | seeds | " + " | ".join(KEYS) + " |")
    print("|---|---|" + "---|" * len(KEYS))
    for run, label in rows.items():
        if run not in results:
            continue
        seeds = results[run]
        cells = []
        for key in KEYS:
            values = [100 * m[key] for m in seeds.values()]
            mean = statistics.mean(values)
            spread = f" ± {(max(values) - min(values)) / 2:.1f}" if len(values) > 1 else ""
            if key == "R@1" and len(values) == 1 and queries[run]:
                low, high = wilson(values[0] / 100, queries[run])
                spread = f" [{100 * low:.1f}, {100 * high:.1f}]"
            cells.append(f"{mean:.1f}{spread}")
        print(f"| {label} | {','.join(map(str, sorted(seeds)))} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
