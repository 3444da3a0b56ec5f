"""LVLM reranking: the shared-prefix KV cache with batched candidates against the paper's
per-candidate forward, same weights, same scores.

    python benchmarks/rerank_kv.py [--k 32 64] [--repeats 3] [--model runs/vlm/judge/model]

A small Qwen2-VL-type model with random weights and a locally trained tokenizer (the size of
the reranker this project trains on its synthetic benchmark), or with ``--model`` a trained
reranker folder (e.g. the judge stage of ``cir vlm train``, at its own image side), scores K
candidates for one composed query both ways, with RAug-Rep injected at every layer. It prints
the seconds of each, their ratio and the largest score difference, measured in this one run
(interleaved, best of ``--repeats``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cir_module.data.shapes import random_images
from cir_module.rerank import LVLMReranker, extract_raug
from cir_module.rerank.tiny import build_tiny_reranker

PAIRS = [
    (
        f"The reference shows a {c} {s}. Make it {n}. Does the candidate match?",
        f"The reference has a {c} {s}; the text changes it to {n}; the target must show a "
        f"{n} {s} in the same place.",
    )
    for c, s, n in [
        ("red", "circle", "blue"),
        ("small", "star", "large"),
        ("green", "cross", "grey"),
    ]
]


def timed(fn, *args) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--image-side", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", help="a trained reranker folder instead of random weights")
    parser.add_argument("--json-out")
    args = parser.parse_args()

    if args.model:
        reranker = LVLMReranker.from_pretrained(args.model, batch_size=args.batch_size)
        args.image_side = reranker.image_side
    else:
        folder = Path(tempfile.mkdtemp(prefix="cir-rerank-bench-")) / "model"
        build_tiny_reranker(
            folder,
            [q + " " + r for q, r in PAIRS],
            hidden=args.hidden,
            layers=args.layers,
            heads=4,
            vision_depth=2,
            vision_width=64,
        )
        reranker = LVLMReranker.from_pretrained(
            folder, image_side=args.image_side, batch_size=args.batch_size
        )
    reranker.raug = extract_raug(reranker.model.model, reranker.tokenizer, reranker.layers, PAIRS)
    params = sum(p.numel() for p in reranker.model.parameters())
    per_image = reranker.adapter.image_tokens(reranker.model, args.image_side)
    hidden = reranker.model.config.text_config.hidden_size
    print(
        f"Qwen2-VL-type reranker ({args.model or 'random weights'}): {params / 1e6:.1f} M "
        f"parameters, {reranker.num_layers} layers, hidden {hidden}, "
        f"{per_image} tokens per image, {torch.get_num_threads()} threads"
    )
    print(f"{'K':>4s} {'naive s':>9s} {'kv reuse s':>10s} {'speed-up':>9s} {'max |diff|':>11s}")
    results = []
    for k in args.k:
        images = random_images(k + 1, seed=k)
        reference, candidates = images[0], images[1:]
        text = "remove the square at top-left"
        reranker.score(reference, text, candidates[:2])  # warm-up
        naive = fast = float("inf")
        for _ in range(args.repeats):  # interleaved: drift reaches both alike
            t_naive, s_naive = timed(reranker.score_naive, reference, text, candidates)
            t_fast, s_fast = timed(reranker.score, reference, text, candidates)
            naive, fast = min(naive, t_naive), min(fast, t_fast)
        diff = float(np.abs(s_naive - s_fast).max())
        print(f"{k:4d} {naive:9.3f} {fast:10.3f} {naive / fast:8.2f}x {diff:11.2e}")
        results.append(
            {"k": k, "naive_s": naive, "kv_s": fast, "speedup": naive / fast, "max_abs_diff": diff}
        )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
