"""Render the ablation JSON files written by scripts/shapes_ablation.sh as a markdown table.

python scripts/results_table.py runs/ablation
"""

from __future__ import annotations

import json
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
KEYS = ("R@1", "R@5", "R@10", "R@50", "Rsubset@1", "Avg")


def main(folder: str) -> None:
    results: dict[str, dict[int, dict[str, float]]] = defaultdict(dict)
    for path in sorted(Path(folder).glob("*-s*.json")):
        run, seed = path.stem.rsplit("-s", 1)
        results[run][int(seed)] = json.loads(path.read_text())["in-process"]
    print("| query | seeds | " + " | ".join(KEYS) + " |")
    print("|---|---|" + "---|" * len(KEYS))
    for run, label in ROWS.items():
        if run not in results:
            continue
        seeds = results[run]
        cells = []
        for key in KEYS:
            values = [100 * m[key] for m in seeds.values()]
            mean = statistics.mean(values)
            spread = f" ± {(max(values) - min(values)) / 2:.1f}" if len(values) > 1 else ""
            cells.append(f"{mean:.1f}{spread}")
        print(f"| {label} | {','.join(map(str, sorted(seeds)))} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
