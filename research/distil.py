"""Query distillation by the describe-and-verify VLM (``CIR_QUERY_ENHANCEMENT=vlm`` with
``CIR_PLUGINS=research.describe``; research: R@1 fell, docs/results.md, "The trained VLM as
query distiller (issue 20)").

RAR distils a modification to the constraints the target must satisfy. Its recipe withholds
the reference image, because a general LLM given the image tends to describe it instead of
the change. The hard tier's edits cannot be distilled from their text alone, though: "take
away the cross below the medium gray one" names a constraint only once the image says which
cross that is and what it looks like. So this distiller reads the reference, with the model
of ``cir vlm train --stage rewrite`` (a describe-and-verify folder):

1. it captions the reference (one fact per object);
2. it rewrites the caption by the modification into the target's description;
3. the constraint keywords are the difference: each fact the target has that the reference
   lacks, then ``no`` + each fact of the reference the target drops
   (:func:`constraints`). A rewrite that changes nothing leaves the modification as it is.

A question about the image is answered with it: its text is kept and the reference's caption
appended, so that "this" and "that" name what the image shows.

:func:`distil_queries` runs the same steps over a benchmark split's queries into a resumable
JSON file (``python -m research.cli rar-distil``), the texts a retriever is trained on
(``cir train --enhance vlm --queries``) so
that training sees what the service will send; :func:`agreement` scores such a file against
true constraints.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from PIL import Image

from cir_module.enrich.resumable import fill_json
from cir_module.training.data import query_key
from cir_module.vlm.changes import description_facts as facts

__all__ = ["DescribingDistiller", "agreement", "constraints", "distil_queries", "query_key"]


def constraints(reference: str, target: str) -> str:
    """The constraint keywords that take a scene described as ``reference`` to one described
    as ``target``: the target's new facts, then ``no`` + each dropped fact, ``; ``-joined;
    ``""`` when the two descriptions hold the same facts."""
    before, after = facts(reference), facts(target)
    added = [f for f in after if f not in before]
    dropped = [f"no {f}" for f in before if f not in after]
    return "; ".join(added + dropped)


class DescribingDistiller:
    """A query enhancer (:class:`~cir_module.enrich.enhance.Enhancer`) backed by a
    describe-and-verify model. Torch inference holds no state between calls, so it shares
    the model with the chat endpoint's rationale without a lock."""

    reads_reference = True

    def __init__(self, reranker) -> None:
        # ``reranker``: a :class:`research.describe.DescribingReranker` (not imported here:
        # the describe module offers this distiller, so the import would close a circle).
        self.reranker = reranker
        self.id = "vlm:" + reranker.adapter.name

    def modifications(self, texts: Sequence[str], images: Sequence[Image.Image]) -> list[str]:
        written = self.reranker.prefixes(list(images), list(texts))
        return [constraints(w.caption, w.target) or t for w, t in zip(written, texts, strict=True)]

    def questions(self, texts: Sequence[str], images: Sequence[Image.Image]) -> list[str]:
        captions = self.reranker.captions(images)
        return [f"{t} (the image shows: {c})" for t, c in zip(texts, captions, strict=True)]


def distil_queries(
    distiller: DescribingDistiller,
    queries: Sequence[tuple[str, str]],
    open_image: Callable[[str], Image.Image],
    out: str | Path,
    chunk: int = 32,
) -> tuple[dict[str, str], int, float]:
    """Distil ``(reference name, modification)`` queries into the JSON file ``out``
    ({:func:`query_key`: distilled text}), ``chunk`` at a time, resumably
    (:func:`~cir_module.enrich.resumable.fill_json`). Returns the file's whole mapping, how
    many queries this call distilled, and the seconds it spent."""
    pairs = {query_key(r, t): (r, t) for r, t in queries}

    def distil(keys: list[str]) -> list[str]:
        batch = [pairs[k] for k in keys]
        return distiller.modifications([t for _, t in batch], [open_image(r) for r, _ in batch])

    return fill_json(out, list(pairs), distil, chunk, desc="distil")


def agreement(distilled: Mapping[str, str], truth: Mapping[str, str]) -> dict[str, float]:
    """Distilled constraints against true ones, for the keys of ``truth``: the share exactly
    right (the same facts), and fact-level precision and recall."""
    exact = said = right = wanted = 0
    for key, true in truth.items():
        got, want = set(facts(distilled[key])), set(facts(true))
        exact += got == want
        said += len(got)
        wanted += len(want)
        right += len(got & want)
    n = max(len(truth), 1)
    return {
        "queries": len(truth),
        "exact": exact / n,
        "fact_precision": right / max(said, 1),
        "fact_recall": right / max(wanted, 1),
    }
