"""The tables and rows the evaluation commands print and write, pinned character for character
(scripts and docs/results.md read them)."""

from __future__ import annotations

import json
from pathlib import Path

from cir_module.eval import CIRTriplet
from cir_module.eval.inprocess import EvalSplit, RankedResult
from cir_module.eval.report import eval_summary, eval_table, rar_row, rerank_table, write_json
from cir_module.eval.rerank_sweep import (
    InjectionSetting,
    injection_settings,
    r1_difference,
    weaviate_rerank_row,
)

SPLIT = EvalSplit(
    root=Path("data"),
    triplets=[CIRTriplet(i, f"r{i}", "edit", f"t{i}", subset=(f"r{i}", f"t{i}")) for i in range(2)],
    paths={f"{kind}{i}": f"./{kind}{i}.png" for kind in "rt" for i in range(2)},
)
IN_PROCESS = RankedResult({"R@1": 0.5, "Avg": 0.75}, [["t0"], ["r0"]], [["t0"], ["t1"]])
WEAVIATE = RankedResult({"R@1": 0.5, "Avg": 0.7}, [["t0"], ["t1"]], [["t0"], ["t1"]])


def test_eval_table_in_process_only() -> None:
    table = eval_table("ckpt", "data", "test", SPLIT, {"in-process": IN_PROCESS})
    assert table.splitlines() == [
        "ckpt on data [test], 2 queries, gallery 4",
        "                    R@1        Avg",
        "in-process        50.00      75.00",
    ]


def test_eval_table_compares_in_process_and_weaviate() -> None:
    results = {"in-process": IN_PROCESS, "weaviate": WEAVIATE}
    assert eval_table(Path("ckpt"), "data", "val", SPLIT, results).splitlines()[1:] == [
        "                    R@1        Avg",
        "in-process        50.00      75.00",
        "weaviate          50.00      70.00",
        "identical top-50 rankings: 1/2; largest metric difference: 5.00 points",
    ]


def test_eval_summary_written_as_json(tmp_path: Path) -> None:
    summary = eval_summary(Path("ckpt"), "data", "test", SPLIT, {"in-process": IN_PROCESS})
    write_json(tmp_path / "eval.json", summary)
    assert (tmp_path / "eval.json").read_text() == json.dumps(
        {
            "checkpoint": "ckpt",
            "data": "data",
            "split": "test",
            "queries": 2,
            "in-process": {"R@1": 0.5, "Avg": 0.75},
        },
        indent=2,
    )


def test_rerank_table_rows() -> None:
    rows = [
        {"setting": "first stage only", "lambda": None, "R@1": 91.66, "R@5": 100.0, "R@10": 100.0},
        {"setting": InjectionSetting(0.6, "last").name, "lambda": 0.1, "R@1": 50, "R@5": 75.04,
         "R@10": 100.0},
        weaviate_rerank_row("alpha=0.6, layers=all", 0.06, [["a", "b"], ["c", "d"]], ["a", "d"]),
    ]  # fmt: skip
    rows[1]["R@1 CI"] = [41.25, 58.5]
    rows[1] |= {"dR@1": -1.25, "dR@1 CI": [-3.0, 0.5], "mean |dP|": 0.00123}
    rows[1]["r(dP, dP written)"] = 0.4567
    assert rows[2]["R@1 CI"] == [0.0, 100.0]
    lines = rerank_table(rows).splitlines()
    assert [line.rstrip() for line in lines] == [
        "setting                                           lambda    R@1    R@1 95% CI    R@5"
        "   R@10   dR@1    dR@1 95% CI  mean |dP| r(written)",
        "first stage only                                           91.7                100.0"
        "  100.0",
        "alpha=0.6, layers=last                               0.1   50.0  [41.2, 58.5]   75.0"
        "  100.0   -1.2   [-3.0, +0.5]   1.23e-03     +0.457",
        "Weaviate rerank: alpha=0.6, layers=all              0.06   50.0  [0.0, 100.0]  100.0"
        "  100.0",
    ]


def test_r1_difference_is_paired() -> None:
    targets = ["a", "b", "c", "d"]
    ranked = [["a"], ["x"], ["c"], ["d"]]  # hits 1 0 1 1
    baseline = [["a"], ["b"], ["x"], ["x"]]  # hits 1 1 0 0
    delta, low, high = r1_difference(ranked, baseline, targets)
    assert delta == 25.0 and low <= delta <= high and low >= -100 and high <= 100
    assert r1_difference(ranked, ranked, targets) == (0.0, 0.0, 0.0)  # every draw pairs


def test_injection_settings_of_the_sweep() -> None:
    names = [s.name for s in injection_settings([0.3, 1.0], layer_alpha=0.6)]
    assert names == [
        "alpha=0, layers=all",
        "alpha=0.3, layers=all",
        "alpha=1, layers=all",
        "alpha=0.6, layers=first",
        "alpha=0.6, layers=middle",
        "alpha=0.6, layers=last",
    ]


def test_rar_row_in_percent() -> None:
    row = rar_row("ckpt", "plain", "keywords", {"R@1": 0.94, "Avg": 0.123456})
    assert json.dumps(row) == (
        '{"checkpoint": "ckpt", "corpus": "plain", "queries": "keywords", "R@1": 94.0, '
        '"Avg": 12.35}'
    )
