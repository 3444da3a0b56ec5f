"""``cir rerank`` (cot, train, export, eval) and ``cir raug extract``: the LVLM reranker on
the synthetic benchmark and its reasoning-augmented representations."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cir_module.training.reranker import RerankTrainConfig

__all__ = ["RERANK_TRAIN_FIXED", "add_parser", "rerank_train_config"]

# RerankTrainConfig fields `cir rerank train` has no flag for: the vision tower's size, kept
# at the values docs/results.md was made with.
RERANK_TRAIN_FIXED = ("vision_depth", "image_side")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``rerank`` and ``raug`` with their verbs."""
    rr = sub.add_parser("rerank", help="the LVLM reranker on the synthetic benchmark")
    rr_sub = rr.add_subparsers(dest="rerank_command", required=True)
    cot = rr_sub.add_parser(
        "cot",
        help="template reasoning paths from the scene graphs, each with its question, "
        "modification and reference image",
    )
    cot.add_argument("--data", required=True)
    cot.add_argument("--out", required=True, help="JSON lines file to write")
    cot.add_argument("--split", default="train")
    cot.add_argument("--limit", type=int, default=256)
    cot.add_argument("--seed", type=int, default=0)
    cot.set_defaults(func=_rerank_cot)
    rtrain = rr_sub.add_parser("train", help="train a small Qwen2-VL-type reranker from scratch")
    rtrain.add_argument("--data", required=True)
    rtrain.add_argument("--out", required=True)
    rtrain.add_argument("--steps", type=int, default=1500)
    rtrain.add_argument("--batch-size", type=int, default=32)
    rtrain.add_argument("--lr", type=float, default=1e-3)
    rtrain.add_argument("--easy-negatives", type=float, default=0.5)
    rtrain.add_argument("--describe-weight", type=float, default=0.5)
    rtrain.add_argument("--group", type=int, default=4, help="candidates per query (listwise)")
    rtrain.add_argument("--warmup-steps", type=int, default=50)
    rtrain.add_argument("--hidden", type=int, default=128)
    rtrain.add_argument("--layers", type=int, default=4)
    rtrain.add_argument("--seed", type=int, default=0)
    rtrain.add_argument("--max-minutes", type=float)
    rtrain.set_defaults(func=_rerank_train)
    rexport = rr_sub.add_parser(
        "export", help="the reranker to ONNX (vision tower + decoder with injection inputs)"
    )
    rexport.add_argument("model", help="reranker checkpoint (hub id or folder)")
    rexport.add_argument("out", help="folder to write")
    rexport.add_argument("--image-side", type=int, help="default: the checkpoint's setting")
    rexport.set_defaults(func=_rerank_export)
    reval = rr_sub.add_parser("eval", help="first stage, then reranking: injection and lambda")
    reval.add_argument("--first-stage", required=True, help="cir checkpoint of the first stage")
    reval.add_argument("--reranker", required=True, help="reranker checkpoint folder")
    reval.add_argument("--raug", help="RAug-Rep file (cir raug extract)")
    reval.add_argument("--data", required=True)
    reval.add_argument("--split", default="test")
    reval.add_argument("--limit", type=int, help="first N queries only")
    reval.add_argument("--k", type=int, default=20, help="candidates reranked per query")
    reval.add_argument("--alphas", type=float, nargs="+", default=[0.3, 0.6, 1.0, 2.0])
    reval.add_argument("--layer-alpha", type=float, default=0.6)
    reval.add_argument("--lambdas", type=float, nargs="+", default=[0.03, 0.06, 0.1, 0.3, 1.0])
    reval.add_argument(
        "--weaviate",
        action="store_true",
        help="first stage from Weaviate's nearText, plus one setting run through its rerank",
    )
    reval.add_argument(
        "--weaviate-only",
        action="store_true",
        help="with --weaviate: only the served setting (no in-process sweep of the reranker)",
    )
    reval.add_argument("--serve", help="reranker folder the service loads (e.g. its ONNX export)")
    reval.add_argument(
        "--controls",
        action="store_true",
        help="add the controls: the reasoning path written in the prompt (from the scene "
        "graphs), and a random vector of RAug-Rep's norms injected",
    )
    reval.add_argument(
        "--rationale",
        action="store_true",
        help="the reranker writes its own reasoning path per query first (CIR-CoT)",
    )
    reval.add_argument(
        "--stored-captions",
        help="JSON {image: caption} (cir rar captions --captioner vlm): a change verifier "
        "takes them as its own captions in the in-process sweep; with --weaviate they are "
        "stored with the gallery, rerank reads the caption property and each query carries "
        "its reference's caption",
    )
    reval.add_argument(
        "--uploaded-reference",
        action="store_true",
        help="with --stored-captions: the queries carry no caption (the service captions the "
        "reference, as for an uploaded image)",
    )
    reval.add_argument("--serve-alpha", type=float, default=0.6)
    reval.add_argument(
        "--serve-lambda",
        type=float,
        help="the served fusion weight (default: the reranker folder's recorded lambda, else 0.06)",
    )
    reval.add_argument("--json-out")
    reval.add_argument(
        "--rankings-out",
        help="with --weaviate: JSON of each query's target, first-stage top K and reranked "
        "order (to compare two runs, e.g. the caption and the image property)",
    )
    reval.set_defaults(func=_rerank_eval)

    raug = sub.add_parser("raug", help="reasoning-augmented representations for the reranker")
    raug_sub = raug.add_subparsers(dest="raug_command", required=True)
    extract = raug_sub.add_parser(
        "extract", help="per-layer mean (or principal) difference, with vs without reasoning"
    )
    extract.add_argument("--reranker", required=True, help="reranker checkpoint (hub id or folder)")
    extract.add_argument("--data", required=True, help='JSON lines {"question", "reasoning"}')
    extract.add_argument("--out", required=True, help="safetensors file to write")
    extract.add_argument("--method", choices=["mean", "pca"], default="mean")
    extract.add_argument(
        "--form",
        choices=["text", "prompt"],
        default="text",
        help="text: a text-only turn, question alone vs question + reasoning (the paper's); "
        "prompt: the reranker's own query prefix with the reference image (a change "
        "verifier: its verify prompt's shared half, on its caption of the reference), without "
        "vs with the reasoning path after the modification (records need reference and text)",
    )
    extract.set_defaults(func=_raug_extract)


def rerank_train_config(args: argparse.Namespace) -> RerankTrainConfig:
    """The :class:`RerankTrainConfig` of a ``cir rerank train`` command line (the fields in
    :data:`RERANK_TRAIN_FIXED` keep their defaults)."""
    from cir_module.training.reranker import RerankTrainConfig

    options = {
        "data": args.data,
        "out": args.out,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "warmup_steps": args.warmup_steps,
        "seed": args.seed,
        "hidden": args.hidden,
        "layers": args.layers,
        "easy_negatives": args.easy_negatives,
        "describe_weight": args.describe_weight,
        "group": args.group,
        "max_minutes": args.max_minutes,
    }
    return RerankTrainConfig(**options)


def _rerank_cot(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from cir_module.training.reranker import reasoning_records

    records = reasoning_records(args.data, args.split, args.limit, args.seed)
    Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in records))
    print(f"wrote {len(records)} reasoning paths to {args.out}")


def _rerank_train(args: argparse.Namespace) -> None:
    from cir_module.training.reranker import train_reranker

    print(f"reranker saved to {train_reranker(rerank_train_config(args))}")


def _rerank_export(args: argparse.Namespace) -> None:
    from onnx_export.reranker import export_reranker

    manifest = export_reranker(args.model, args.out, image_side=args.image_side)
    print(f"exported {manifest['family']} reranker to {args.out}")
    print(f"parity (max |dP(YES)| torch vs onnxruntime): {manifest['parity']}")


def _rerank_eval(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from cir_module.eval.inprocess import EvalSplit
    from cir_module.eval.report import rerank_table, write_json
    from cir_module.eval.rerank_sweep import (
        InjectionSetting,
        first_stage,
        injection_settings,
        rerank_sweep,
        weaviate_rerank_row,
    )
    from cir_module.models import load_model
    from cir_module.rerank import load_reranker
    from cir_module.rerank.fusion import DEFAULT_FUSION_LAMBDA
    from cir_module.rerank.registry import reranker_kind

    split = EvalSplit.load(args.data, args.split, limit=args.limit)
    if args.weaviate_only and not args.weaviate:
        sys.exit("--weaviate-only needs --weaviate")
    reranker = load_reranker(args.reranker, raug=args.raug, rationale=args.rationale)
    captions = json.loads(Path(args.stored_captions).read_text()) if args.stored_captions else None
    if captions and not args.weaviate_only and getattr(reranker, "reads_captions", False):
        # The in-process sweep reads them too: the verifier takes them as its own captions.
        names = [n for n in split.gallery if n in captions]
        reranker.remember_captions([split.open(n) for n in names], [captions[n] for n in names])
    recorded = (getattr(reranker, "served_with", None) or {}).get("lambda")
    serve_lambda = args.serve_lambda if args.serve_lambda is not None else recorded
    served = None
    if args.weaviate:
        from integration.evaluate import weaviate_rerank_run

        env = {
            "CIR_RERANKER_MODEL": str(args.serve or args.reranker),
            "CIR_RERANKER_ALPHA": str(args.serve_alpha),
            "CIR_RERANKER_RATIONALE": "1" if args.rationale else "0",
            **({"CIR_RERANKER_LAMBDA": str(serve_lambda)} if serve_lambda is not None else {}),
            **({"CIR_RERANKER_RAUG": str(args.raug)} if args.raug else {}),
        }
        stage, served, latency = weaviate_rerank_run(
            args.first_stage,
            split,
            args.k,
            env,
            stored_captions=captions,
            stored_reference=not args.uploaded_reference,
        )
    else:
        stage = first_stage(load_model(args.first_stage), split, args.k)
    # Without RAug-Rep vectors every injection setting would score the same: run one.
    settings = (
        injection_settings(args.alphas, args.layer_alpha) if args.raug else [InjectionSetting(0.0)]
    )
    if args.weaviate_only:
        rows = rerank_sweep(reranker, split, stage, [], [])  # the first stage's row only
    else:
        rows = rerank_sweep(reranker, split, stage, settings, args.lambdas, controls=args.controls)
    if served is not None:
        kind = reranker_kind(reranker.kind)
        # A steered run's row is named by its injection; any other by the kind's title.
        name = InjectionSetting(args.serve_alpha).name if kind.steered and args.raug else kind.title
        lam = serve_lambda if serve_lambda is not None else DEFAULT_FUSION_LAMBDA
        row = weaviate_rerank_row(name, lam, served, stage.targets)
        rows.append({**row, "k": args.k, "latency": latency.summary()})
        print(f"per query through Weaviate, K = {args.k}: {latency.summary()}")
        if args.rankings_out:
            rankings = {"targets": stage.targets, "first_stage": stage.top, "reranked": served}
            write_json(args.rankings_out, rankings)
    print(rerank_table(rows))
    if args.json_out:
        write_json(args.json_out, rows)


def _raug_extract(args: argparse.Namespace) -> None:
    from PIL import Image

    from cir_module.rerank import extract_raug, load_reranker, read_cot, save_raug
    from cir_module.rerank.raug import extract_raug_in_prompt, layer_norms
    from cir_module.rerank.steering import Steering

    reranker = load_reranker(args.reranker)
    if not isinstance(reranker, Steering):
        sys.exit(f"{args.reranker} takes no injection: RAug-Rep is read from a torch reranker")
    if args.form == "prompt":
        records = read_cot(args.data, keys=("reference", "text", "reasoning"))
        examples = [(Image.open(ref).convert("RGB"), t, r) for ref, t, r in records]
        vectors = extract_raug_in_prompt(reranker, examples, args.method)
        position = "last token of the query prefix, decoder layer outputs"
    else:
        records = read_cot(args.data)
        vectors = extract_raug(
            reranker.model.model, reranker.tokenizer, reranker.layers, records, args.method
        )
        position = "last token, decoder layer outputs"
    path = save_raug(
        vectors,
        args.out,
        model=str(args.reranker),
        method=args.method,
        form=args.form,
        pairs=len(records),
        position=position,
    )
    print(
        f"wrote {tuple(vectors.shape)} RAug-Rep ({args.method}, {args.form} form, "
        f"{len(records)} pairs) to {path}"
    )
    print(f"per-layer norms: {layer_norms(vectors)}")
