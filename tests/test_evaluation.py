"""Evaluation two ways on a tiny generated benchmark: in-process, and through the real
Weaviate with the real service as vectorizer (flat index), which must agree."""

from __future__ import annotations

import numpy as np
import pytest

from cir_module.data.benchmark import generate_benchmark
from cir_module.eval.inprocess import EvalSplit, evaluate_in_process
from integration.evaluate import evaluate_with_client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory) -> EvalSplit:
    root = tmp_path_factory.mktemp("shapes-eval")
    generate_benchmark(root, seed=9, n_train=0, n_val=0, n_test=12, image_size=64)
    return EvalSplit.load(root, "test")


def test_in_process_and_weaviate_agree(client, local_model, tiny_split):
    local = evaluate_in_process(local_model, tiny_split)
    through = evaluate_with_client(client, tiny_split)
    assert len(through.rankings) == len(tiny_split.triplets) == 12
    for t, ranking in zip(tiny_split.triplets, through.rankings, strict=True):
        assert t.reference not in ranking and len(ranking) == min(50, len(tiny_split.gallery) - 1)
    # Weaviate computes cosine distances in its own float32 code, so candidates whose scores
    # differ by less than that rounding may swap places; anything else must be in our order.
    column = {name: i for i, name in enumerate(tiny_split.gallery)}
    pairs = [
        *zip(through.rankings, local.rankings, strict=True),
        *zip(through.subset_rankings, local.subset_rankings, strict=True),
    ]
    queries = [*range(len(local.rankings))] * 2
    for q, (theirs, ours) in zip(queries, pairs, strict=True):
        assert len(theirs) == len(ours)
        their_scores = local.scores[q, [column[n] for n in theirs]]
        our_scores = local.scores[q, [column[n] for n in ours]]
        np.testing.assert_allclose(their_scores, our_scores, atol=1e-5)
    if through.rankings == local.rankings and through.subset_rankings == local.subset_rankings:
        assert through.metrics == pytest.approx(local.metrics, abs=1e-12)
    assert set(local.metrics) == {
        "R@1",
        "R@5",
        "R@10",
        "R@50",
        "Rsubset@1",
        "Rsubset@2",
        "Rsubset@3",
        "Avg",
    }


def test_enriched_evaluation_ranks_by_the_weighted_image_and_caption_vector(
    client, local_model, tiny_split
):
    """``cir rar eval --enrich-corpus``: the gallery is captioned through the enrichment job
    and Weaviate ranks by (1 - w) image + w caption; the same ranking computed here."""
    from cir_module.data.captions import SceneGraphCaptioner
    from cir_module.enrich import CaptionItem

    captioner = SceneGraphCaptioner.from_benchmark(tiny_split.root, drop=0.3, seed=2)
    through = evaluate_with_client(client, tiny_split, captioner=captioner, caption_weight=0.7)
    gallery = tiny_split.gallery
    captions = captioner.caption([CaptionItem(n, None, {"name": n}) for n in gallery])
    images = local_model.embed_images([tiny_split.open(n) for n in gallery])
    stored = 0.3 * images + 0.7 * local_model.embed_texts(captions)
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    for t, ranking in zip(tiny_split.triplets, through.rankings, strict=True):
        query = local_model.embed_composed([tiny_split.open(t.reference)], [t.caption])[0]
        scores = dict(zip(gallery, stored @ query, strict=True))
        theirs = [scores[n] for n in ranking]
        ours = sorted((s for n, s in scores.items() if n != t.reference), reverse=True)
        np.testing.assert_allclose(theirs, ours[: len(theirs)], atol=1e-5)
    plain = evaluate_with_client(client, tiny_split)
    assert plain.rankings != through.rankings  # the captions moved the vectors
