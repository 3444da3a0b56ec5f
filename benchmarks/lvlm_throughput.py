"""Throughput of the lvlm family (CIR-LVLM, a VLM as every encoder) against the dual encoder,
in one run on this machine: gallery images per second and composed queries per second.

    python benchmarks/lvlm_throughput.py --lvlm runs/lvlm-ablation/lvlm-s0/checkpoint
        [--dual cir_module/checkpoints/shapes-hard-conv] [--batch 32] [--rounds 5]
        [--seconds 4] [--threads 2] [--onnx]

Both models embed the same rendered hard-tier scenes and modification texts in batches of
``--batch``, in-process (no HTTP: the model's own cost). The machine is shared and its speed
drifts, so the two alternate in ``--rounds`` windows of ``--seconds`` each and every ratio is
taken from this one run (median of the windows). ``--onnx`` adds both models' fp32 ONNX
exports on onnxruntime (exported to a temporary folder first).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cir_module.data.hard import random_images
from cir_module.models import load_model
from cir_module.models.onnx_model import load_onnx_model

TEXTS = [
    "make the large striped circle at row 2, column 3 red",
    "remove every triangle and add a small hollow blue square at row 4, column 1",
    "move the object at row 1, column 4 so it is directly below the striped circle",
    "keep only the squares",
]


def rate(work: Callable[[], object], items: int, seconds: float) -> float:
    """Items per second of ``work`` (``items`` per call), run for about ``seconds``."""
    work()  # warm: first-call allocations and lazy initialisation are not throughput
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        work()
        done += items
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lvlm", required=True, help="an lvlm checkpoint (cir train output)")
    parser.add_argument("--dual", default="cir_module/checkpoints/shapes-hard-conv")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--onnx", action="store_true", help="also the fp32 ONNX exports")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    images = random_images(args.batch, seed=1)
    texts = [TEXTS[i % len(TEXTS)] for i in range(args.batch)]
    models = {"dual": load_model(args.dual), "lvlm": load_model(args.lvlm)}
    if args.onnx:
        from onnx_export.export import export_checkpoint

        folder = Path(tempfile.mkdtemp(prefix="lvlm-throughput-"))
        for name, source in (("dual", args.dual), ("lvlm", args.lvlm)):
            export_checkpoint(source, folder / name, variants=("fp32",))
            models[f"{name} onnx"] = load_onnx_model(folder / name, threads=args.threads)
    work = {
        (name, kind): fn
        for name, model in models.items()
        for kind, fn in (
            ("images/s", lambda m=model: m.embed_images(images)),
            ("queries/s", lambda m=model: m.embed_composed(images, texts)),
        )
    }
    rates: dict[tuple[str, str], list[float]] = {key: [] for key in work}
    for _ in range(args.rounds):  # interleaved: drift hits every side alike
        for key, fn in work.items():
            rates[key].append(rate(fn, args.batch, args.seconds))
    median = {key: statistics.median(values) for key, values in rates.items()}
    print(f"batch {args.batch}, {args.threads} threads, median of {args.rounds} rounds")
    print("| model | images/s | queries/s |")
    print("|---|---|---|")
    for name in models:
        print(f"| {name} | {median[name, 'images/s']:.1f} | {median[name, 'queries/s']:.1f} |")
    for backend in ("", " onnx") if args.onnx else ("",):
        for kind in ("images/s", "queries/s"):
            ratio = median[f"lvlm{backend}", kind] / median[f"dual{backend}", kind]
            print(f"lvlm / dual{backend}, {kind}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
