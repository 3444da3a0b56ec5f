"""What the second stage costs per query through Weaviate, against the first stage alone, in
one run on this machine.

    python benchmarks/rerank_latency.py --reranker cir_module/checkpoints/shapes-hard-verifier \\
        --data .cache/data/hard-s0 [--first-stage cir_module/checkpoints/shapes-hard-conv] \\
        [--limit 200] [--k 10 50] [--captions runs/captions-hard-s0-test.json] \\
        [--serve models/verifier-onnx] [--runtime auto|torch|onnx]

For each K and each way of reranking, a local stack (Weaviate and the service with the
reranker) holds the test split's gallery, and every query is sent twice by the v4 client:
``nearText`` alone (the first stage) and ``nearText`` with ``rerank``. The ways:

* ``stored``: ``rerank(property: "caption")`` on captions stored with the gallery (as ``cir
  enrich`` writes them), the query carrying its reference's stored caption: nothing is
  captioned at query time;
* ``uploaded``: the same stored captions, but the query carries none (an uploaded reference):
  the service captions each reference once;
* ``image``: ``rerank(property: "image")``: the service captions the candidates (cached by
  their pixels, so a gallery's images come back cheaper as the run goes on).

The captions are the reranker's own, as ``cir rar captions --captioner vlm`` writes them
(computed here once and kept in ``--captions``, a JSON file a rerun reads). Printed: p50 and
p90 of each call in milliseconds and the ratio of the p50 with
``rerank`` to the first stage's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cir_module.checkpoints import HARD_TIER_MODEL, shipped_checkpoint
from cir_module.data.captions import caption_images
from cir_module.enrich import trained_vlm_captioner
from cir_module.eval.inprocess import EvalSplit
from integration.evaluate import weaviate_rerank_run

WAYS = ("stored", "uploaded", "image")


def gallery_captions(reranker_folder: str, split: EvalSplit, path: Path) -> dict:
    """The reranker's own captions of the split's gallery, as ``cir rar captions --captioner
    vlm`` writes them (``path``, resumable: a rerun reads what is there)."""
    captioner = trained_vlm_captioner(reranker_folder)
    caption_images(captioner, split.gallery, split.open, path)
    return json.loads(path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reranker", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--first-stage", default=str(shipped_checkpoint(HARD_TIER_MODEL)))
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--k", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS))
    parser.add_argument(
        "--captions",
        type=Path,
        help="JSON of the gallery's captions, written once and read by reruns (default: "
        "runs/captions-DATA-SPLIT.json)",
    )
    parser.add_argument(
        "--serve",
        help="the folder the service serves as its reranker, e.g. the verifier's ONNX export "
        "(cir rerank export); default: --reranker",
    )
    parser.add_argument(
        "--runtime",
        choices=("auto", "torch", "onnx"),
        default="auto",
        help="CIR_RERANKER_RUNTIME of the service: auto (the default a user gets: a change "
        "verifier's checkpoint on onnxruntime on the CPU), torch, onnx",
    )
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()

    split = EvalSplit.load(args.data, args.split, limit=args.limit)
    path = args.captions or Path(f"runs/captions-{Path(args.data).name}-{args.split}.json")
    captions = gallery_captions(args.reranker, split, path)
    env = {
        "CIR_RERANKER_MODEL": args.serve or args.reranker,
        "CIR_RERANKER_RUNTIME": args.runtime,
        "CIR_TORCH_THREADS": "2",
    }
    rows = []
    print("| K | rerank | first stage p50 / p90 ms | with rerank p50 / p90 ms | p50 ratio |")
    print("| --- | --- | --- | --- | --- |")
    for k in args.k:
        for way in args.ways:
            _, _, latency = weaviate_rerank_run(
                args.first_stage,
                split,
                k,
                env,
                stored_captions=None if way == "image" else captions,
                stored_reference=way == "stored",
            )
            s = latency.summary()
            ratio = s["with_rerank_median_ms"] / s["first_stage_median_ms"]
            rows.append({"k": k, "way": way, **s, "ratio": round(ratio, 2)})
            print(
                f"| {k} | {way} | {s['first_stage_median_ms']} / {s['first_stage_p90_ms']} | "
                f"{s['with_rerank_median_ms']} / {s['with_rerank_p90_ms']} | {ratio:.2f}x |",
                flush=True,
            )
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
