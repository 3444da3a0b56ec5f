"""Evaluation: dataset readers, the official metrics, the runners that produce rankings, and
what the evaluation commands print. One module per job:

* ``readers.py``: CIRR, FashionIQ and CIRCO annotations -> :class:`CIRTriplet`.
* ``metrics.py``: the pure metrics, from scores or rankings (ranking, recall, CIRR, FashionIQ,
  CIRCO mAP); no model, no I/O.
* ``submissions.py``: the CIRR / CIRCO test-server files, for splits without targets.
* ``inprocess.py``: :class:`~cir_module.eval.inprocess.EvalSplit` (a split's queries and
  gallery) and ``cir eval``'s in-process runner (embed, rank, CIRR metrics).
* ``rerank_sweep.py``: ``cir rerank eval``'s ablation: the in-process first stage, then the
  reranker over its top K with injection settings and fusion weights varied.
* ``report.py``: the tables and rows that ``cir eval``, ``cir rerank eval`` and
  ``cir rar eval`` print and write.
* ``integration/evaluate.py`` (outside this package): the same runs through a real Weaviate
  with the service as vectorizer and reranker (``cir eval --weaviate``, ``cir rerank eval
  --weaviate``, ``cir rar eval``). It needs the launcher in ``integration/``, which only the
  CLI imports; its rankings go through the same metrics and tables.

This package re-exports the readers, the metrics and the submission writers; the runners
(which load models and rerankers) and the report are imported from their own modules.

Read a data set (:func:`read_cirr`, :func:`read_fashioniq`, :func:`read_circo`), score every
query against the gallery, then compute the official metrics (:func:`cirr_metrics`,
:func:`fashioniq_metrics`, :func:`circo_metrics`) or, for test splits without targets, write
the files the test servers take (:func:`write_cirr_submission`, :func:`write_circo_submission`).
"""

from __future__ import annotations

from cir_module.eval.metrics import (
    CIRCO_KS,
    CIRR_KS,
    CIRR_SUBSET_KS,
    FASHIONIQ_KS,
    circo_map,
    circo_metrics,
    cirr_metrics,
    cirr_metrics_from_rankings,
    cirr_subset_rankings,
    fashioniq_metrics,
    rank_gallery,
    recall_at_k,
    recall_percent,
)
from cir_module.eval.readers import (
    FASHIONIQ_CATEGORIES,
    CIRTriplet,
    read_circo,
    read_cirr,
    read_fashioniq,
    read_fashioniq_split,
    read_image_split,
    resolve_image_path,
)
from cir_module.eval.submissions import (
    CIRCO_TOP,
    CIRR_SUBSET_TOP,
    CIRR_TOP,
    circo_submission,
    cirr_submission,
    write_circo_submission,
    write_cirr_submission,
)

__all__ = [
    "CIRCO_KS",
    "CIRCO_TOP",
    "CIRR_KS",
    "CIRR_SUBSET_KS",
    "CIRR_SUBSET_TOP",
    "CIRR_TOP",
    "FASHIONIQ_CATEGORIES",
    "FASHIONIQ_KS",
    "CIRTriplet",
    "circo_map",
    "circo_metrics",
    "circo_submission",
    "cirr_metrics",
    "cirr_metrics_from_rankings",
    "cirr_submission",
    "cirr_subset_rankings",
    "fashioniq_metrics",
    "rank_gallery",
    "read_circo",
    "read_cirr",
    "read_fashioniq",
    "read_fashioniq_split",
    "read_image_split",
    "recall_at_k",
    "recall_percent",
    "resolve_image_path",
    "write_circo_submission",
    "write_cirr_submission",
]
