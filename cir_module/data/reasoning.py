"""Reasoning paths written from the benchmark's scene graphs: what the reference shows, what
the text asks, what the target must show. The reranker's trainer, its RAug-Rep source and
the VLM's stages read them."""

from __future__ import annotations

__all__ = ["describe_pair", "reasoning_path"]


def describe_pair(describe, scenes: dict, reference: str, candidate: str) -> str:
    """What both images of an example show, in words: the dense supervision written after
    the answer (``describe`` is the tier's :attr:`~cir_module.data.benchmark.Tier.describe`)."""
    return (
        f" The reference shows {describe(scenes[reference])}."
        f" The candidate shows {describe(scenes[candidate])}."
    )


def reasoning_path(describe, scenes: dict, triplet) -> str:
    """The reasoning path of a triplet: what the reference shows, what the text asks, what
    the target must show (from the scene graphs)."""
    return (
        f"The reference shows {describe(scenes[triplet.reference])}. The text asks to "
        f"{triplet.caption}. The target must show {describe(scenes[triplet.target])}, nothing "
        "else changed. So the answer depends on whether the candidate shows exactly that."
    )
