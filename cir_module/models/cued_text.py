"""How the ``lvlm`` family turns texts into token rows, without torch (the ONNX runtime uses
it too): each text's ids (truncated), then the cue of the input kind (the task prompt's
answer cue and the end of the turn), right-padded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["cued_token_rows"]


def cued_token_rows(
    tokenizer: Any, texts: Sequence[str], cue: Sequence[int], max_length: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """int64 ``input_ids`` and ``attention_mask`` ``[len(texts), width]``."""
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    rows = [[*ids[:max_length], *cue] for ids in encoded]
    width = max(map(len, rows))
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask
