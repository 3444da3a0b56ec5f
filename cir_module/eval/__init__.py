"""Evaluation on public CIR benchmarks: dataset readers, official metrics, submission files.

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
    "resolve_image_path",
    "write_circo_submission",
    "write_cirr_submission",
]
