"""A JSON file ``{key: text}`` filled chunk by chunk and resumed where it stopped: what the
batch jobs over a benchmark write (the VLM's captions, its distilled queries)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm.auto import tqdm

__all__ = ["fill_json"]

log = logging.getLogger(__name__)


def fill_json(
    out: str | Path,
    keys: Sequence[str],
    make: Callable[[list[str]], list[str]],
    chunk: int,
    desc: str,
) -> tuple[dict[str, str], int, float]:
    """Fill ``out`` with ``make(part)`` for the ``keys`` it lacks, ``chunk`` keys at a time,
    rewriting the file atomically after each chunk (a stop loses at most the chunk at hand).
    Returns the whole mapping, how many keys this call made, and the seconds ``make`` took."""
    out = Path(out)
    done: dict[str, str] = json.loads(out.read_text()) if out.is_file() else {}
    todo = [k for k in dict.fromkeys(keys) if k not in done]
    seconds = 0.0
    quiet = not log.isEnabledFor(logging.INFO)
    with tqdm(total=len(todo), desc=desc, disable=quiet) as bar:
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            began = time.perf_counter()
            done.update(zip(part, make(part), strict=True))
            seconds += time.perf_counter() - began
            tmp = out.with_suffix(out.suffix + ".tmp")
            tmp.write_text(json.dumps(done, indent=0))
            os.replace(tmp, out)
            bar.update(len(part))
    return done, len(todo), seconds
