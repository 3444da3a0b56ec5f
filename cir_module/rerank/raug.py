"""Extracting reasoning-augmented representations (RAug-Rep) from (question, reasoning) pairs.

For each pair the model reads the question alone and the question followed by its reasoning
path; R^q_L and R^c_L are layer L's outputs at the **last token** of each (the state from
which the next token is predicted, and the point where the injection acts: decoder layer
outputs, before the final norm). Two extractors of p_L from the differences D_L = R^c_L - R^q_L:

- ``mean`` (the paper): p_L = mean(D_L).
- ``pca``: the first principal component of D_L, signed to agree with the mean and scaled to
  the mean's projection on it: the direction most pairs share, with less of each pair's noise.

Where the two are read (``FORMS``):

- ``text`` (the paper's): a text-only chat turn, the question alone and followed by the
  reasoning. The data is JSON lines ``{"question": ..., "reasoning": ...}``.
- ``prompt``: the reranker's own query prefix (reference image, modification, up to where the
  candidate image goes), without and with the reasoning path written after the modification,
  exactly the CIR-CoT prompt a judge trained here reads. The records also need
  ``"reference"`` (an image file) and ``"text"`` (the modification).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from cir_module.rerank.injection import capture_last_token
from cir_module.vlm.prompt import USER_TURN, in_chat_template

__all__ = [
    "EXTRACTORS",
    "FORMS",
    "extract_raug",
    "extract_raug_in_prompt",
    "load_raug",
    "read_cot",
    "save_raug",
]

log = logging.getLogger(__name__)

EXTRACTORS = ("mean", "pca")
FORMS = ("text", "prompt")
QUESTION = f"{USER_TURN[0]}{{question}}{USER_TURN[1]}"


def read_cot(
    path: str | Path, keys: Sequence[str] = ("question", "reasoning")
) -> list[tuple[str, ...]]:
    """The ``keys`` of every record of a JSON-lines file (by default (question, reasoning)
    pairs), with the line of any bad record."""
    pairs = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            pairs.append(tuple(str(record[k]) for k in keys))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            expected = ", ".join(keys)
            raise ValueError(f"{path}:{n}: expected {{{expected}}}: {exc}") from None
    if not pairs:
        raise ValueError(f"{path} holds no (question, reasoning) pairs")
    return pairs


def extract_raug(
    model: torch.nn.Module,
    tokenizer,
    layers: torch.nn.ModuleList,
    pairs: Iterable[tuple[str, str]],
    method: str = "mean",
) -> torch.Tensor:
    """p_L for every decoder layer (layers x hidden), from (question, reasoning) pairs."""
    device = next(model.parameters()).device

    def forwards(pair: tuple[str, str]) -> list[Callable[[], object]]:
        question, reasoning = pair
        question = in_chat_template(tokenizer, QUESTION.format(question=question))
        q_ids = tokenizer.encode(question, add_special_tokens=False)
        c_ids = q_ids + tokenizer.encode(reasoning, add_special_tokens=False)
        return [
            partial(model, input_ids=torch.tensor([ids], device=device)) for ids in (q_ids, c_ids)
        ]

    return _extract(layers, pairs, forwards, method)


def extract_raug_in_prompt(
    reranker, examples: Iterable[tuple[Image.Image, str, str]], method: str = "mean"
) -> torch.Tensor:
    """p_L for every decoder layer from (reference image, modification, reasoning) examples,
    read in the reranker's own query prefix without and with the reasoning path (form
    ``prompt``); the model unsteered while it is read."""

    def forwards(example: tuple[Image.Image, str, str]) -> list[Callable[[], object]]:
        reference, text, reasoning = example
        reasoned = reranker.prompt.with_reasoning(text, reasoning)
        return [partial(reranker.prefix, reference, field) for field in (text, reasoned)]

    saved, reranker.raug = reranker.raug, None
    try:
        return _extract(reranker.layers, examples, forwards, method)
    finally:
        reranker.raug = saved


@torch.inference_mode()
def _extract(
    layers: torch.nn.ModuleList,
    examples: Iterable[Any],
    forwards: Callable[[Any], list[Callable[[], object]]],
    method: str,
) -> torch.Tensor:
    """p_L from each example's two forwards (without, then with the reasoning path): the
    difference of every layer's output at the last token, combined by ``method``."""
    if method not in EXTRACTORS:
        raise ValueError(f"method must be one of {EXTRACTORS}, not {method!r}")
    quiet = not log.isEnabledFor(logging.INFO)
    diffs = []
    for example in tqdm(list(examples), desc="raug", disable=quiet, leave=False):
        states = []
        for forward in forwards(example):
            with capture_last_token(layers) as captured:
                forward()
            states.append(torch.stack([c[0] for c in captured]).float())
        diffs.append(states[1] - states[0])
    if not diffs:
        raise ValueError("no (question, reasoning) pairs")
    d = torch.stack(diffs, dim=1)  # layers x pairs x hidden
    mean = d.mean(dim=1)
    if method == "mean":
        return mean
    return _principal(d, mean)


def _principal(d: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    centred = d - d.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    direction = vh[:, 0]  # layers x hidden, unit norm
    along = (mean * direction).sum(dim=-1, keepdim=True)
    return direction * along  # the sign and size of the mean along the component


def save_raug(vectors: torch.Tensor, path: str | Path, **metadata: object) -> Path:
    """Write the vectors (layers x hidden) with string metadata to a safetensors file."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {"raug": vectors.contiguous().cpu()},
        str(path),
        metadata={k: json.dumps(v) for k, v in metadata.items()},
    )
    return path


def load_raug(path: str | Path) -> tuple[torch.Tensor, dict]:
    """The vectors and metadata :func:`save_raug` wrote."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
        return f.get_tensor("raug"), meta


def layer_norms(vectors: torch.Tensor) -> Sequence[float]:
    """Per-layer norms, for the extraction log."""
    return [round(float(x), 4) for x in vectors.norm(dim=-1)]
