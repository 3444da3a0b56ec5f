"""The official evaluation protocols of CIRR, FashionIQ and CIRCO, from scores or rankings.

Everything starts from ``scores``, an array ``[n_queries, n_gallery]`` (higher is better),
the ``gallery_names`` its columns stand for, and the queries as :class:`CIRTriplet`.
:func:`rank_gallery` turns scores into ranked names: descending score, ties broken by gallery
order (a stable sort), so results never depend on sort internals.

Protocol choices, as in the official evaluation code:

* CIRR: the reference image is removed from its own query's ranking. ``Rsubset@K`` ranks only
  the query's ``img_set`` members, reference removed too. ``Avg = (R@5 + Rsubset@1) / 2``.
* FashionIQ: the reference is *not* removed (the protocol of the FashionIQ challenge code,
  followed by CLIP4Cir, SEARLE and most later work); ``exclude_reference=True`` removes it.
* CIRCO: the reference is removed; AP@K is normalised by ``min(#ground truths, K)``.

All values are fractions in [0, 1], not percentages, except :func:`recall_percent`'s (the
unit of the reranking tables).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from cir_module.eval.readers import CIRTriplet

__all__ = [
    "CIRCO_KS",
    "CIRR_KS",
    "CIRR_SUBSET_KS",
    "FASHIONIQ_KS",
    "circo_map",
    "circo_metrics",
    "cirr_metrics",
    "cirr_subset_rankings",
    "fashioniq_metrics",
    "rank_gallery",
    "recall_at_k",
    "recall_percent",
]

CIRR_KS: tuple[int, ...] = (1, 5, 10, 50)
CIRR_SUBSET_KS: tuple[int, ...] = (1, 2, 3)
FASHIONIQ_KS: tuple[int, ...] = (10, 50)
CIRCO_KS: tuple[int, ...] = (5, 10, 25, 50)


# --------------------------------------------------------------------------- helpers


def _as_scores(
    scores: npt.ArrayLike, gallery_names: Sequence[str], n_queries: int | None
) -> np.ndarray:
    """``scores`` as a float64 matrix, checked against the gallery and the number of queries."""
    matrix = np.asarray(scores, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(
            f"scores should be a 2-D array [queries, gallery], got shape {matrix.shape}"
        )
    if matrix.shape[1] != len(gallery_names):
        raise ValueError(
            f"scores have {matrix.shape[1]} columns for {len(gallery_names)} gallery names"
        )
    if n_queries is not None and matrix.shape[0] != n_queries:
        raise ValueError(f"scores have {matrix.shape[0]} rows but there are {n_queries} queries")
    if np.isnan(matrix).any():
        # NaN has no place in a descending order; it would land anywhere depending on the sort.
        raise ValueError("scores contain NaN")
    return matrix


def _name_index(gallery_names: Sequence[str]) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, name in enumerate(gallery_names):
        if name in index:
            raise ValueError(f"gallery name {name!r} appears more than once")
        index[name] = i
    return index


def _check_k(k: int | None) -> None:
    if k is not None and k < 1:
        raise ValueError(f"k should be a positive integer or None, got {k}")


def _check_ks(ks: Iterable[int]) -> list[int]:
    ks = list(ks)
    if not ks:
        raise ValueError("ks should name at least one cut-off")
    for k in ks:
        _check_k(k)
    return ks


def _top_indices(row: np.ndarray, candidates: np.ndarray, k: int | None) -> np.ndarray:
    """``candidates`` (ascending gallery indices) ordered by descending ``row``, first ``k``.

    A stable sort on the negated scores keeps tied candidates in gallery order.
    """
    values = row[candidates]
    if k is not None and k < len(candidates):
        # Keep everything scoring at least the k-th best, so ties at the cut are all still
        # there to be ordered by gallery position; then only those few get sorted.
        kth_best = np.partition(values, len(values) - k)[len(values) - k]
        keep = values >= kth_best
        candidates, values = candidates[keep], values[keep]
    order = np.argsort(-values, kind="stable")
    return candidates[order[:k]]


def _ground_truths(triplets: Sequence[CIRTriplet]) -> list[tuple[str, ...]]:
    """Every query's acceptable targets; an error for a query without any (a test split)."""
    truths = []
    for t in triplets:
        truth = t.gt_targets or ((t.target,) if t.target is not None else ())
        if not truth:
            raise ValueError(
                f"query {t.pairid!r} has no target (a test split?): write a submission instead"
            )
        truths.append(truth)
    return truths


def _recall_keys(recalls: Mapping[int, float], prefix: str) -> dict[str, float]:
    return {f"{prefix}@{k}": value for k, value in recalls.items()}


def _ranked_recalls(
    scores: npt.ArrayLike,
    gallery_names: Sequence[str],
    triplets: Sequence[CIRTriplet],
    ks: Sequence[int],
    exclude_reference: bool,
) -> dict[int, float]:
    """Rank the whole gallery for each query (top ``max(ks)`` only) and compute recall@ks."""
    exclude = [t.reference for t in triplets] if exclude_reference else None
    matrix = _as_scores(scores, gallery_names, len(triplets))
    rankings = rank_gallery(matrix, gallery_names, exclude=exclude, k=max(ks))
    return recall_at_k(rankings, _ground_truths(triplets), ks)


# --------------------------------------------------------------------------- rankings, recall


def rank_gallery(
    scores: npt.ArrayLike,
    gallery_names: Sequence[str],
    exclude: Sequence[str | None] | None = None,
    k: int | None = None,
) -> list[list[str]]:
    """Gallery names by descending score for each query (row of ``scores``).

    ``exclude[i]`` (typically query ``i``'s reference image) is left out of query ``i``'s
    ranking; ``None`` or a name outside the gallery excludes nothing. Ties keep gallery order.
    ``k`` keeps only the first ``k`` names, which is much cheaper than a full sort.
    """
    _check_k(k)
    matrix = _as_scores(scores, gallery_names, None)
    if exclude is not None and len(exclude) != matrix.shape[0]:
        raise ValueError(f"exclude has {len(exclude)} entries for {matrix.shape[0]} queries")
    index = _name_index(gallery_names)
    everything = np.arange(len(gallery_names))
    rankings = []
    for q, row in enumerate(matrix):
        excluded = index.get(exclude[q]) if exclude is not None and exclude[q] is not None else None
        candidates = everything if excluded is None else np.delete(everything, excluded)
        rankings.append([gallery_names[i] for i in _top_indices(row, candidates, k)])
    return rankings


def recall_at_k(
    rankings: Sequence[Sequence[str]],
    targets: Sequence[str | Collection[str]],
    ks: Iterable[int],
) -> dict[int, float]:
    """Fraction of queries (in [0, 1]) whose target is among the first ``k`` ranked names.

    ``targets[i]`` is one name or a collection of names; with several, a query counts as a hit
    when any of them is within the first ``k``. Returns ``{k: recall}`` in the order of ``ks``.
    """
    if len(rankings) != len(targets):
        raise ValueError(f"{len(rankings)} rankings but {len(targets)} targets")
    if not rankings:
        raise ValueError("recall of no queries is undefined")
    ks = _check_ks(ks)
    # The best (1-based) rank of any ground truth per query; inf when none is ranked at all.
    best_ranks = []
    for ranking, target in zip(rankings, targets, strict=True):
        wanted = {target} if isinstance(target, str) else set(target)
        hits = [rank for rank, name in enumerate(ranking, start=1) if name in wanted]
        best_ranks.append(min(hits, default=np.inf))
    ranks = np.asarray(best_ranks, dtype=np.float64)
    return {k: float(np.mean(ranks <= k)) for k in ks}


def recall_percent(
    rankings: Sequence[Sequence[str]],
    targets: Sequence[str | Collection[str]],
    ks: Iterable[int] = (1, 5, 10),
) -> dict[str, float]:
    """:func:`recall_at_k` in percent, keyed ``"R@k"``: the reranking ablation's unit.

    A target outside a (top K) ranking counts as missed.
    """
    return {f"R@{k}": 100 * value for k, value in recall_at_k(rankings, targets, ks).items()}


# --------------------------------------------------------------------------- CIRR


def cirr_subset_rankings(
    scores: npt.ArrayLike,
    gallery_names: Sequence[str],
    triplets: Sequence[CIRTriplet],
    k: int | None = None,
) -> list[list[str]]:
    """For each query, its ``img_set`` members (reference removed) by descending score.

    This is the ranking behind CIRR's ``Rsubset@K`` and its ``recall_subset`` submission.
    Every member must be a gallery name; ties keep gallery order.
    """
    _check_k(k)
    matrix = _as_scores(scores, gallery_names, len(triplets))
    index = _name_index(gallery_names)
    rankings = []
    for row, t in zip(matrix, triplets, strict=True):
        if not t.subset:
            raise ValueError(f"query {t.pairid!r} has no img_set members")
        missing = [m for m in t.subset if m not in index]
        if missing:
            raise ValueError(f"query {t.pairid!r}: img_set members not in the gallery: {missing}")
        members = np.array(sorted({index[m] for m in t.subset if m != t.reference}), dtype=np.intp)
        rankings.append([gallery_names[i] for i in _top_indices(row, members, k)])
    return rankings


def cirr_metrics(
    scores: npt.ArrayLike,
    gallery_names: Sequence[str],
    triplets: Sequence[CIRTriplet],
) -> dict[str, float]:
    """CIRR's official metrics: ``R@1/5/10/50``, ``Rsubset@1/2/3`` and ``Avg``.

    ``R@K`` ranks the whole gallery minus the query's reference; ``Rsubset@K`` ranks the
    query's ``img_set`` members minus the reference. ``Avg = (R@5 + Rsubset@1) / 2``.
    """
    matrix = _as_scores(scores, gallery_names, len(triplets))
    exclude = [t.reference for t in triplets]
    rankings = rank_gallery(matrix, gallery_names, exclude=exclude, k=max(CIRR_KS))
    subset_rankings = cirr_subset_rankings(matrix, gallery_names, triplets, k=max(CIRR_SUBSET_KS))
    return cirr_metrics_from_rankings(rankings, subset_rankings, triplets)


def cirr_metrics_from_rankings(
    rankings: Sequence[Sequence[str]],
    subset_rankings: Sequence[Sequence[str]],
    triplets: Sequence[CIRTriplet],
) -> dict[str, float]:
    """:func:`cirr_metrics` from rankings already made (e.g. by a vector database): the
    gallery ranking and the ``img_set`` ranking of each query, references removed."""
    truths = _ground_truths(triplets)
    recalls = recall_at_k(rankings, truths, CIRR_KS)
    subset = recall_at_k(subset_rankings, truths, CIRR_SUBSET_KS)
    return {
        **_recall_keys(recalls, "R"),
        **_recall_keys(subset, "Rsubset"),
        "Avg": (recalls[5] + subset[1]) / 2,
    }


# --------------------------------------------------------------------------- FashionIQ


def fashioniq_metrics(
    per_category: Mapping[str, tuple[npt.ArrayLike, Sequence[str], Sequence[CIRTriplet]]],
    exclude_reference: bool = False,
) -> dict[str, float]:
    """FashionIQ's ``<cat>/R@10``, ``<cat>/R@50``, their means ``R@10``, ``R@50``, and ``Avg``.

    ``per_category`` maps a category (dress, shirt, toptee) to ``(scores, gallery_names,
    triplets)``, the gallery being that category's image split. The reference stays in the
    gallery by default, as in the commonly used protocol; ``exclude_reference=True`` removes
    it. ``Avg`` is the mean of ``R@10`` and ``R@50``.
    """
    if not per_category:
        raise ValueError("fashioniq_metrics needs at least one category")
    results: dict[str, float] = {}
    for category, (scores, gallery_names, triplets) in per_category.items():
        recalls = _ranked_recalls(scores, gallery_names, triplets, FASHIONIQ_KS, exclude_reference)
        results.update(_recall_keys(recalls, f"{category}/R"))
    for k in FASHIONIQ_KS:
        results[f"R@{k}"] = float(np.mean([results[f"{c}/R@{k}"] for c in per_category]))
    results["Avg"] = float(np.mean([results[f"R@{k}"] for k in FASHIONIQ_KS]))
    return results


# --------------------------------------------------------------------------- CIRCO


def circo_map(
    rankings: Sequence[Sequence[str]],
    triplets: Sequence[CIRTriplet],
    ks: Iterable[int] = CIRCO_KS,
) -> dict[str, float]:
    """CIRCO's ``mAP@K``: the mean over queries of AP@K.

    AP@K = (1 / min(n_gt, K)) * sum_{k=1..K} P@k * rel(k), where rel(k) says whether the k-th
    ranked image is one of the query's ``gt_img_ids`` and P@k is the precision of the first k.
    The reference is dropped from each ranking should it be there (the protocol excludes it;
    rankings from :func:`rank_gallery` with ``exclude=`` references are already right).
    """
    if len(rankings) != len(triplets):
        raise ValueError(f"{len(rankings)} rankings but {len(triplets)} queries")
    if not rankings:
        raise ValueError("mAP of no queries is undefined")
    ks = _check_ks(ks)
    depth = max(ks)
    ap: dict[int, list[float]] = {k: [] for k in ks}
    for ranking, t, truth in zip(rankings, triplets, _ground_truths(triplets), strict=True):
        gt = set(truth)
        ranked = [name for name in ranking if name != t.reference][:depth]
        relevant = np.zeros(depth)
        relevant[: len(ranked)] = [name in gt for name in ranked]
        precision_at = np.cumsum(relevant) / np.arange(1, depth + 1)
        for k in ks:
            ap[k].append(float(np.sum((precision_at * relevant)[:k]) / min(len(gt), k)))
    return {f"mAP@{k}": float(np.mean(values)) for k, values in ap.items()}


def circo_metrics(
    scores: npt.ArrayLike,
    gallery_names: Sequence[str],
    triplets: Sequence[CIRTriplet],
    ks: Iterable[int] = CIRCO_KS,
) -> dict[str, float]:
    """CIRCO's ``mAP@K`` from scores: rank without the reference, then :func:`circo_map`."""
    ks = _check_ks(ks)
    matrix = _as_scores(scores, gallery_names, len(triplets))
    references = [t.reference for t in triplets]
    rankings = rank_gallery(matrix, gallery_names, exclude=references, k=max(ks))
    return circo_map(rankings, triplets, ks)
