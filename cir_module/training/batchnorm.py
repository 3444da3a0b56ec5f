"""Precise BatchNorm statistics (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021).

During training a BatchNorm normalises with each batch's statistics and keeps an exponential
moving average for inference, which mostly reflects the last few dozen batches and the
weights they were computed with. Recomputing the statistics once, with the final weights,
over a fixed sample of training images gives the population statistics inference assumes.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from cir_module.models import CIRModel
from cir_module.training.data import ImageStore

__all__ = ["recompute_batchnorm_statistics", "recompute_on_images"]


def recompute_batchnorm_statistics(model: CIRModel, batches: Iterable[torch.Tensor]) -> int:
    """Replace the running statistics of every BatchNorm in the image encoder by their
    average over ``batches`` of pixel values (equal-sized batches weigh equally); the
    weights do not change. Returns how many BatchNorm layers were recomputed."""
    norms = [m for m in model.image_encoder.modules() if isinstance(m, nn.BatchNorm2d)]
    if not norms:
        return 0
    saved = [(norm.momentum, norm.training) for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches
        norm.train()
    with torch.no_grad():
        for pixels in batches:
            model.encode_image(pixels)
    for norm, (momentum, training) in zip(norms, saved, strict=True):
        norm.momentum = momentum
        norm.train(training)
    return len(norms)


def recompute_on_images(
    model: CIRModel,
    store: ImageStore,
    names: Sequence[str],
    count: int,
    *,
    batch_size: int = 64,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[int, int]:
    """:func:`recompute_batchnorm_statistics` over ``count`` of ``names`` (read from
    ``store``), drawn with ``seed``; the same arguments give the same sample. Returns how
    many BatchNorm layers and how many images."""
    sample = random.Random(f"{seed}-batchnorm").sample(sorted(names), min(count, len(names)))
    batches = (
        torch.from_numpy(store.pixels(sample[i : i + batch_size])).to(device)
        for i in range(0, len(sample), batch_size)
    )
    return recompute_batchnorm_statistics(model, batches), len(sample)
