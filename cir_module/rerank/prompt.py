"""The reranker's prompt: the reference image and the modification text (the prefix, the
same for every candidate of a query), then the candidate image and a YES / NO question (the
suffix). ``{image}`` marks where an image's placeholder tokens go (``cir_module.vlm.prompt``
encodes it).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RerankPrompt"]


@dataclass(frozen=True)
class RerankPrompt:
    """The prompt, split where the candidate begins; ``{image}`` marks an image."""

    prefix: str = (
        "<|im_start|>user\nReference image: {image}\nModification: {text}\nCandidate image: "
    )
    suffix: str = (
        "{image}\nIs the candidate the reference image changed as the modification asks? "
        "Answer YES or NO.<|im_end|>\n<|im_start|>assistant\n"
    )
    yes: str = "YES"
    no: str = "NO"
