"""Official CIR metrics and submission files, checked against values computed by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cir_module.eval import (
    CIRTriplet,
    circo_map,
    circo_metrics,
    circo_submission,
    cirr_metrics,
    cirr_submission,
    cirr_subset_rankings,
    fashioniq_metrics,
    rank_gallery,
    recall_at_k,
    recall_percent,
    write_circo_submission,
    write_cirr_submission,
)

# --------------------------------------------------------------------------- rank_gallery


def test_rank_gallery_orders_by_score_ties_by_gallery_order() -> None:
    names = ["a", "b", "c", "d"]
    scores = np.array([[0.5, 0.9, 0.5, 0.1], [0.2, 0.7, 0.7, 0.7]])
    # Row 0: b (.9), then a and c tie at .5 -> gallery order a, c; then d.
    # Row 1: b, c, d tie at .7 -> gallery order; a last.
    assert rank_gallery(scores, names) == [["b", "a", "c", "d"], ["b", "c", "d", "a"]]
    # k=2 cuts inside the ties: the earliest tied names survive.
    assert rank_gallery(scores, names, k=2) == [["b", "a"], ["b", "c"]]


def test_rank_gallery_excludes_the_reference() -> None:
    names = ["a", "b", "c", "d"]
    scores = np.array([[0.5, 0.9, 0.5, 0.1], [0.2, 0.7, 0.7, 0.7], [1.0, 0.0, 0.0, 0.0]])
    # Row 0 without b, row 1 unchanged (None), row 2: "zz" is not in the gallery.
    assert rank_gallery(scores, names, exclude=["b", None, "zz"], k=3) == [
        ["a", "c", "d"],
        ["b", "c", "d"],
        ["a", "b", "c"],
    ]


def test_rank_gallery_top_k_matches_full_sort() -> None:
    # Integer scores in a small range: many ties, including at every cut-off.
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(20, 40)).astype(np.float32)
    names = [f"img{i}" for i in range(40)]
    exclude = [names[i] for i in rng.integers(0, 40, size=20)]
    full = rank_gallery(scores, names, exclude=exclude)
    assert all(len(r) == 39 and exclude[q] not in r for q, r in enumerate(full))
    for k in (1, 3, 10, 39, 100):
        assert rank_gallery(scores, names, exclude=exclude, k=k) == [r[:k] for r in full]


@pytest.mark.parametrize(
    ("scores", "names", "kwargs", "message"),
    [
        (np.zeros((2, 3)), ["a", "b"], {}, "3 columns for 2 gallery names"),
        (np.zeros(3), ["a", "b", "c"], {}, "2-D"),
        (np.array([[0.0, np.nan]]), ["a", "b"], {}, "NaN"),
        (np.zeros((1, 2)), ["a", "a"], {}, "'a' appears more than once"),
        (np.zeros((1, 2)), ["a", "b"], {"exclude": ["a", "b"]}, "exclude has 2 entries"),
        (np.zeros((1, 2)), ["a", "b"], {"k": 0}, "positive"),
    ],
)
def test_rank_gallery_rejects_bad_input(
    scores: np.ndarray, names: list[str], kwargs: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        rank_gallery(scores, names, **kwargs)


# --------------------------------------------------------------------------- recall_at_k


def test_recall_at_k_single_and_multiple_targets() -> None:
    rankings = [["a", "b", "c"], ["c", "a", "b"], ["b", "c", "a"], ["a", "b", "c"]]
    # Query 0: target a at rank 1. Query 1: a at rank 2. Query 2: any of {x, a}, a at rank 3.
    # Query 3: any of {c, b}, best is b at rank 2. Query 4 would need "z": never ranked.
    targets = ["a", "a", ("x", "a"), ["c", "b"]]
    # R@1 = 1/4, R@2 = 3/4, R@3 = 4/4.
    assert recall_at_k(rankings, targets, [1, 2, 3]) == {1: 0.25, 2: 0.75, 3: 1.0}
    # A target never ranked is a miss at every k: 0/1.
    assert recall_at_k([["a", "b"]], ["z"], [1, 50]) == {1: 0.0, 50: 0.0}


def test_recall_at_k_rejects_mismatch() -> None:
    with pytest.raises(ValueError, match="2 rankings but 1 targets"):
        recall_at_k([["a"], ["b"]], ["a"], [1])
    with pytest.raises(ValueError, match="no queries"):
        recall_at_k([], [], [1])


def test_recall_percent_is_recall_at_k_in_percent() -> None:
    # Top-3 lists as the reranking ablation has them: target 1st, 3rd, absent, 2nd.
    rankings = [["a", "b", "c"], ["b", "c", "a"], ["b", "c", "d"], ["c", "a", "b"]]
    targets = ["a", "a", "a", "a"]
    assert recall_percent(rankings, targets) == {"R@1": 25.0, "R@5": 75.0, "R@10": 75.0}
    assert recall_percent(rankings, targets, ks=(2,)) == {"R@2": 50.0}


# --------------------------------------------------------------------------- CIRR

CIRR_GALLERY = ["g0", "g1", "g2", "g3", "g4", "g5", "g6"]
CIRR_QUERIES = [
    CIRTriplet(1, "g0", "q1", "g3", subset=("g0", "g1", "g2", "g3", "g4", "g5")),
    CIRTriplet(2, "g3", "q2", "g6", subset=("g3", "g6", "g2", "g4", "g5", "g0")),
    CIRTriplet(3, "g5", "q3", "g4", subset=("g5", "g4", "g0", "g1", "g2", "g3")),
]
#                        g0    g1   g2   g3    g4   g5   g6
CIRR_SCORES = np.array(
    [
        [0.99, 0.8, 0.7, 0.1, 0.2, 0.3, 0.9],
        [0.5, 0.6, 0.1, 0.95, 0.2, 0.3, 0.6],
        [0.1, 0.2, 0.3, 0.4, 0.9, 1.0, 0.5],
    ]
)


def test_cirr_rankings_by_hand() -> None:
    refs = [t.reference for t in CIRR_QUERIES]
    # Q1 without its reference g0 (the top score): g6 .9, g1 .8, g2 .7, g5 .3, g4 .2, g3 .1
    #   -> target g3 at rank 6. Subset (members minus g0): g1, g2, g5, g4, g3 -> rank 5.
    # Q2 without g3: g1 .6 and g6 .6 tie (g1 first in the gallery), g0 .5, g5, g4, g2
    #   -> target g6 at rank 2. Subset (g6, g2, g4, g5, g0; g1 not a member): g6, g0, g5, g4, g2
    #   -> rank 1.
    # Q3 without g5: g4 .9, g6 .5, g3, g2, g1, g0 -> rank 1. Subset: g4, g3, g2, g1, g0 -> 1.
    assert rank_gallery(CIRR_SCORES, CIRR_GALLERY, exclude=refs) == [
        ["g6", "g1", "g2", "g5", "g4", "g3"],
        ["g1", "g6", "g0", "g5", "g4", "g2"],
        ["g4", "g6", "g3", "g2", "g1", "g0"],
    ]
    assert cirr_subset_rankings(CIRR_SCORES, CIRR_GALLERY, CIRR_QUERIES) == [
        ["g1", "g2", "g5", "g4", "g3"],
        ["g6", "g0", "g5", "g4", "g2"],
        ["g4", "g3", "g2", "g1", "g0"],
    ]


def test_cirr_metrics_by_hand() -> None:
    # Full-gallery ranks of the targets 6, 2, 1; subset ranks 5, 1, 1 (see the test above).
    # R@1 = 1/3 (Q3), R@5 = 2/3 (Q2, Q3), R@10 = R@50 = 3/3.
    # Rsubset@1 = Rsubset@2 = Rsubset@3 = 2/3 (Q2, Q3; Q1 is at subset rank 5).
    # Avg = (R@5 + Rsubset@1) / 2 = (2/3 + 2/3) / 2 = 2/3.
    metrics = cirr_metrics(CIRR_SCORES, CIRR_GALLERY, CIRR_QUERIES)
    assert metrics == pytest.approx(
        {
            "R@1": 1 / 3,
            "R@5": 2 / 3,
            "R@10": 1.0,
            "R@50": 1.0,
            "Rsubset@1": 2 / 3,
            "Rsubset@2": 2 / 3,
            "Rsubset@3": 2 / 3,
            "Avg": 2 / 3,
        }
    )
    assert list(metrics) == [
        "R@1",
        "R@5",
        "R@10",
        "R@50",
        "Rsubset@1",
        "Rsubset@2",
        "Rsubset@3",
        "Avg",
    ]


def test_cirr_metrics_errors() -> None:
    no_target = [CIRTriplet(0, "g0", "q", None, subset=("g0", "g1"))]
    with pytest.raises(ValueError, match="no target"):
        cirr_metrics(CIRR_SCORES[:1], CIRR_GALLERY, no_target)
    stray_member = [CIRTriplet(0, "g0", "q", "g1", subset=("g0", "g1", "zz"))]
    with pytest.raises(ValueError, match=r"not in the gallery: \['zz'\]"):
        cirr_metrics(CIRR_SCORES[:1], CIRR_GALLERY, stray_member)
    with pytest.raises(ValueError, match="3 rows but there are 1 queries"):
        cirr_metrics(CIRR_SCORES, CIRR_GALLERY, stray_member)


# --------------------------------------------------------------------------- FashionIQ


def _fiq_case() -> dict[str, tuple[np.ndarray, list[str], list[CIRTriplet]]]:
    # 60 images n0..n59 scored so that n_i is ranked i+1 (score -i) for every query.
    names = [f"n{i}" for i in range(60)]
    row = -np.arange(60, dtype=np.float64)
    dress = [CIRTriplet(0, "n0", "q", "n10"), CIRTriplet(1, "n5", "q", "n2")]
    shirt = [CIRTriplet(0, "n0", "q", "n55")]
    return {
        "dress": (np.stack([row, row]), names, dress),
        "shirt": (row[None, :], names, shirt),
    }


def test_fashioniq_metrics_keep_the_reference_by_default() -> None:
    # Reference kept: dress Q0 target n10 at rank 11 (miss @10, hit @50); Q1 n2 at rank 3.
    #   dress R@10 = 1/2, R@50 = 2/2. shirt: n55 at rank 56 -> R@10 = R@50 = 0.
    #   R@10 = (0.5 + 0) / 2 = 0.25; R@50 = (1 + 0) / 2 = 0.5; Avg = (0.25 + 0.5) / 2 = 0.375.
    assert fashioniq_metrics(_fiq_case()) == pytest.approx(
        {
            "dress/R@10": 0.5,
            "dress/R@50": 1.0,
            "shirt/R@10": 0.0,
            "shirt/R@50": 0.0,
            "R@10": 0.25,
            "R@50": 0.5,
            "Avg": 0.375,
        }
    )


def test_fashioniq_metrics_can_exclude_the_reference() -> None:
    # Reference n0 removed: dress Q0 n10 moves to rank 10 (hit @10); Q1 (ref n5 below n2)
    #   stays at rank 3. dress R@10 = R@50 = 1. shirt: n55 at rank 55, still a miss.
    #   R@10 = R@50 = (1 + 0) / 2 = 0.5; Avg = 0.5.
    metrics = fashioniq_metrics(_fiq_case(), exclude_reference=True)
    assert metrics["dress/R@10"] == 1.0
    assert (metrics["R@10"], metrics["R@50"], metrics["Avg"]) == (0.5, 0.5, 0.5)


# --------------------------------------------------------------------------- CIRCO


def test_circo_map_by_hand() -> None:
    triplets = [
        CIRTriplet(0, "ref", "q", "b", gt_targets=("b", "d", "x")),
        CIRTriplet(1, "ref", "q", "a", gt_targets=("a",)),
        CIRTriplet(2, "ref", "q", "a", gt_targets=("a", "b", "c", "d")),
    ]
    rankings = [
        ["a", "b", "c", "d", "e", "f"],
        ["a", "b", "c", "d", "e", "f"],
        ["a", "b", "e", "f", "g", "h"],
    ]
    # Q0: rel = 0 1 0 1 0, 3 ground truths ("x" is never ranked). P@2 = 1/2, P@4 = 2/4.
    #   AP@2 = (P@2) / min(3, 2) = (1/2) / 2 = 1/4.
    #   AP@5 = (P@2 + P@4) / min(3, 5) = (1/2 + 1/2) / 3 = 1/3.
    # Q1: rel = 1 0 0 0 0, one ground truth. AP@2 = AP@5 = P@1 / 1 = 1.
    # Q2: rel = 1 1 0 0 0, 4 ground truths. AP@2 = (1 + 1) / min(4, 2) = 1 (normalised by K,
    #   not by the 4 ground truths); AP@5 = (1 + 1) / min(4, 5) = 1/2.
    # mAP@2 = (1/4 + 1 + 1) / 3 = 3/4; mAP@5 = (1/3 + 1 + 1/2) / 3 = 11/18.
    assert circo_map(rankings, triplets, ks=(2, 5)) == pytest.approx(
        {"mAP@2": 0.75, "mAP@5": 11 / 18}
    )


def test_circo_map_drops_the_reference() -> None:
    # The reference ranked first is ignored: the ground truth "a" counts at rank 1, AP = 1.
    triplet = CIRTriplet(0, "ref", "q", "a", gt_targets=("a",))
    assert circo_map([["ref", "a", "b"]], [triplet], ks=(1, 5)) == {"mAP@1": 1.0, "mAP@5": 1.0}


def test_circo_metrics_from_scores() -> None:
    names = ["10", "20", "30", "40"]
    triplets = [CIRTriplet(7, "10", "q", "30", gt_targets=("30", "40"))]
    scores = np.array([[0.9, 0.1, 0.5, 0.2]])
    # Ranking without the reference "10": 30 (.5), 40 (.2), 20 (.1); rel = 1 1 0.
    #   AP@1 = 1 / min(2, 1) = 1; AP@5 = (1 + 1) / min(2, 5) = 1. With the reference left in
    #   (ranked first) AP@5 would be (1/2 + 2/3) / 2 instead.
    assert circo_metrics(scores, names, triplets, ks=(1, 5)) == {"mAP@1": 1.0, "mAP@5": 1.0}
    with pytest.raises(ValueError, match="no target"):
        circo_metrics(scores, names, [CIRTriplet(7, "10", "q", None)])


# --------------------------------------------------------------------------- submissions


def _cirr_test_split() -> tuple[np.ndarray, list[str], list[CIRTriplet]]:
    """A CIRR-like test split: 60 images, 4 queries whose reference scores highest."""
    names = [f"test1-{i}-0-img0" for i in range(60)]
    rng = np.random.default_rng(1)
    scores = rng.random((4, 60))
    triplets = []
    for q in range(4):
        reference = 10 * q
        scores[q, reference] = 2.0
        members = tuple(names[reference : reference + 6])
        triplets.append(CIRTriplet(100 + q, names[reference], "q", None, subset=members))
    return scores, names, triplets


def test_cirr_submission_structure(tmp_path: Path) -> None:
    scores, names, triplets = _cirr_test_split()
    refs = [t.reference for t in triplets]
    rankings = rank_gallery(scores, names, exclude=refs, k=50)
    subset = cirr_subset_rankings(scores, names, triplets, k=3)
    pairids = [t.pairid for t in triplets]
    recall, recall_subset = cirr_submission(pairids, rankings, subset)

    assert list(recall) == ["version", "metric", "100", "101", "102", "103"]
    assert (recall["version"], recall["metric"]) == ("rc2", "recall")
    assert (recall_subset["version"], recall_subset["metric"]) == ("rc2", "recall_subset")
    assert list(recall_subset)[2:] == ["100", "101", "102", "103"]
    for pairid, triplet, ranking in zip(pairids, triplets, rankings, strict=True):
        top, top_subset = recall[str(pairid)], recall_subset[str(pairid)]
        assert len(top) == 50 and len(set(top)) == 50 and top == ranking
        assert len(top_subset) == 3 and set(top_subset) <= set(triplet.subset)
        # The reference scores highest everywhere, yet appears in neither file.
        assert triplet.reference not in top and triplet.reference not in top_subset

    prefix = tmp_path / "out" / "test1_"
    paths = write_cirr_submission(prefix, pairids, rankings, subset)
    assert [p.name for p in paths] == [
        "test1_recall_submission.json",
        "test1_recall_subset_submission.json",
    ]
    assert [json.loads(p.read_text()) for p in paths] == [recall, recall_subset]


def test_cirr_submission_rejects_bad_rankings() -> None:
    top50 = [f"n{i}" for i in range(50)]
    with pytest.raises(ValueError, match="query '1' ranks 49 images, needs 50"):
        cirr_submission([1], [top50[:49]], [top50[:3]])
    with pytest.raises(ValueError, match="query '1' ranks 2 images, needs 3"):
        cirr_submission([1], [top50], [top50[:2]])
    with pytest.raises(ValueError, match="'1' appears more than once"):
        cirr_submission([1, 1], [top50, top50], [top50[:3]] * 2)
    with pytest.raises(ValueError, match="more than once"):
        cirr_submission([1], [[*top50[:49], "n0"]], [top50[:3]])
    with pytest.raises(ValueError, match="2 query ids but 1 rankings"):
        cirr_submission([1, 2], [top50], [top50[:3]] * 2)


def test_circo_submission_structure(tmp_path: Path) -> None:
    names = [str(1000 + i) for i in range(59)] + ["not-a-coco-id"]
    scores = -np.arange(60, dtype=np.float64)[None, :].repeat(2, axis=0)
    triplets = [CIRTriplet(5, "1000", "q", None), CIRTriplet(6, "1003", "q", None)]
    rankings = rank_gallery(scores, names, exclude=[t.reference for t in triplets], k=50)
    submission = circo_submission([t.pairid for t in triplets], rankings)

    assert list(submission) == ["5", "6"]
    # Scores fall with the index: query 5 (reference 1000) gets 1001..1050,
    # query 6 (reference 1003) gets 1000..1002 and 1004..1050, all as integers.
    assert submission["5"] == list(range(1001, 1051))
    assert submission["6"] == [1000, 1001, 1002, *range(1004, 1051)]
    for ids, triplet in zip(submission.values(), triplets, strict=True):
        assert len(ids) == 50 and all(type(i) is int for i in ids)
        assert int(triplet.reference) not in ids
    # A name that is not a number stays a string.
    assert circo_submission([0], [names[::-1][:50]])["0"][0] == "not-a-coco-id"

    path = write_circo_submission(tmp_path / "circo_test.json", [5, 6], rankings)
    assert json.loads(path.read_text()) == submission
    with pytest.raises(ValueError, match="ranks 3 images, needs 50"):
        circo_submission([0], [names[:3]])
