"""What the evaluation commands print and write.

* ``cir eval``: :func:`eval_table` (one row per place the model ran, metrics in percent, and
  how far in-process and Weaviate agree) and :func:`eval_summary` (its ``--json-out``).
* ``cir rerank eval``: :func:`rerank_table` of the rows :func:`~cir_module.eval.rerank_sweep.
  rerank_sweep` returns.
* ``cir rar eval``: :func:`rar_row`, printed as one JSON line.

:func:`write_json` writes any of them. Nothing here runs a model: the runners are in
:mod:`cir_module.eval.inprocess`, :mod:`cir_module.eval.rerank_sweep` and
``integration.evaluate``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # types only: the report formats results, it runs nothing
    from cir_module.eval.inprocess import EvalSplit, RankedResult

__all__ = ["eval_summary", "eval_table", "rar_row", "rerank_table", "write_json"]


def eval_table(
    checkpoint: str | Path,
    data: str,
    split: str,
    data_split: EvalSplit,
    results: Mapping[str, RankedResult],
) -> str:
    """``cir eval``'s table: a title line, the metric names, one row per entry of ``results``
    (``in-process``, ``weaviate``) in percent; with both, how many top-50 rankings are
    identical and the largest metric difference."""
    keys = list(results["in-process"].metrics)
    lines = [
        f"{checkpoint} on {data} [{split}], {len(data_split.triplets)} queries, "
        f"gallery {len(data_split.gallery)}",
        f"{'':12}" + "".join(f"{k:>11}" for k in keys),
    ]
    for where, result in results.items():
        lines.append(f"{where:12}" + "".join(f"{100 * result.metrics[k]:11.2f}" for k in keys))
    if "weaviate" in results:
        a, b = results["in-process"], results["weaviate"]
        same = sum(x == y for x, y in zip(a.rankings, b.rankings, strict=True))
        diff = max(abs(a.metrics[k] - b.metrics[k]) for k in keys)
        lines.append(
            f"identical top-50 rankings: {same}/{len(a.rankings)}; "
            f"largest metric difference: {100 * diff:.2f} points"
        )
    return "\n".join(lines)


def eval_summary(
    checkpoint: str | Path,
    data: str,
    split: str,
    data_split: EvalSplit,
    results: Mapping[str, RankedResult],
) -> dict[str, Any]:
    """``cir eval --json-out``: the run's identity and each place's metrics (fractions)."""
    return {
        "checkpoint": str(checkpoint),
        "data": data,
        "split": split,
        "queries": len(data_split.triplets),
        **{where: r.metrics for where, r in results.items()},
    }


def rerank_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """``cir rerank eval``'s table: setting, lambda (blank for the first stage), R@1 with its
    95 % bootstrap interval when the row has one, R@5 and R@10, in percent; then, for rows
    read against the no-injection run, the change in R@1 with its paired interval and the
    mean absolute change of P(YES); and, with the controls, how that change correlates with
    the one the written reasoning path makes."""
    head = (
        f"{'setting':48s} {'lambda':>7s} {'R@1':>6s} {'R@1 95% CI':>13s} {'R@5':>6s} "
        f"{'R@10':>6s} {'dR@1':>6s} {'dR@1 95% CI':>14s} {'mean |dP|':>10s} {'r(written)':>10s}"
    )
    lines = [head]
    for row in rows:
        lam = "" if row["lambda"] is None else f"{row['lambda']:g}"
        ci = "[{:.1f}, {:.1f}]".format(*row["R@1 CI"]) if "R@1 CI" in row else ""
        line = (
            f"{row['setting']:48s} {lam:>7s} {row['R@1']:6.1f} {ci:>13s} {row['R@5']:6.1f} "
            f"{row['R@10']:6.1f}"
        )
        if "dR@1" in row:
            dci = "[{:+.1f}, {:+.1f}]".format(*row["dR@1 CI"])
            line += f" {row['dR@1']:+6.1f} {dci:>14s} {row['mean |dP|']:10.2e}"
        if "r(dP, dP written)" in row:
            line += f" {row['r(dP, dP written)']:+10.3f}"
        lines.append(line)
    return "\n".join(lines)


def rar_row(
    checkpoint: str, corpus: str, queries: str, metrics: Mapping[str, float]
) -> dict[str, Any]:
    """``cir rar eval``'s row: which corpus (``plain`` or the captioner's id) and which
    queries (``off`` or the enhancement), then the metrics in percent to two decimals."""
    return {
        "checkpoint": checkpoint,
        "corpus": corpus,
        "queries": queries,
        **{k: round(100 * v, 2) for k, v in metrics.items()},
    }


def write_json(path: str | Path, value: Any) -> None:
    """``value`` as indented JSON (the ``--json-out`` files of the evaluation commands)."""
    Path(path).write_text(json.dumps(value, indent=2))
