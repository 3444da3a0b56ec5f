"""The ``cir`` command: serve, create models, run the demo, manage the local Weaviate."""

from __future__ import annotations

import argparse
import logging
import os
import sys

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> None:
    import uvicorn
    from pydantic import ValidationError

    from cir_module.service import create_app
    from cir_module.settings import ServiceSettings

    overrides = {
        k: v
        for k, v in {"checkpoint": args.checkpoint, "host": args.host, "port": args.port}.items()
        if v is not None
    }
    try:
        settings = ServiceSettings(**overrides)
    except ValidationError as exc:
        from cir_module.service.body import describe_validation_error

        sys.exit(f"cir serve: invalid settings (CIR_* variables): {describe_validation_error(exc)}")
    root = logging.getLogger()
    root.setLevel(settings.log_level.upper())
    if settings.log_format == "json":
        from cir_module.service.observability import JsonLogFormatter

        for handler in root.handlers:
            handler.setFormatter(JsonLogFormatter())
    from cir_module.service.protocol import guarded_h11

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's loggers go through ours (JSON, request ids)
        access_log=False,  # the service writes its own access line, with the request id
        http=guarded_h11(settings.header_timeout_s),
        # X-Forwarded-* rewrite the client address the token check trusts: only from the
        # proxies named in the settings (uvicorn's default trusts 127.0.0.1).
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=settings.trusted_proxies or None,
    )


def _init_model(args: argparse.Namespace) -> None:
    from cir_module.models import create_model

    model = create_model(args.config, pretrained=args.pretrained, num_scales=args.num_scales)
    path = model.save_pretrained(args.out)
    print(
        f"saved {model.config.name} ({model.image_encoder.num_scales} scales, dim {model.dim}) "
        f"to {path}"
    )


def _export(args: argparse.Namespace) -> None:
    import json

    from onnx_export import export_checkpoint

    manifest = export_checkpoint(
        args.checkpoint, args.out, variants=args.variants.split(","), opset=args.opset
    )
    for variant, entry in manifest["variants"].items():
        kept = manifest.get("parity", {}).get(variant, {}).get("kept_fp32", {})
        note = f" (kept in fp32: {', '.join(kept)})" if kept else ""
        print(f"{variant}: {', '.join(entry['files'].values())}{note}")
    print(json.dumps(manifest.get("parity", {}), indent=1))
    print(f"manifest: {args.out}/manifest.json")


def _demo(args: argparse.Namespace) -> None:
    from integration.demo import run_demo

    run_demo(
        checkpoint=args.checkpoint,
        gallery_size=args.gallery_size,
        num_queries=args.queries,
        seed=args.seed,
        top_k=args.top_k,
    )


def _train(args: argparse.Namespace) -> None:
    from cir_module.training import TrainConfig, train

    known = TrainConfig.__dataclass_fields__
    fields = {k: v for k, v in vars(args).items() if k in known and v is not None}
    # The benchmark's scene loss (cir_module/data/scene_loss.py), read two ways.
    scene = {"embedding": args.scene_loss or 0.0, "tokens": args.token_scene_loss or 0.0}
    if any(w > 0 for w in scene.values()):
        fields["auxiliary_losses"] = {"scene": scene}
    checkpoint = train(TrainConfig(**fields))
    print(f"checkpoint: {checkpoint}")
    if args.eval_split:
        _print_eval(checkpoint, args.data, args.eval_split, args.dataset_name, None, False)


def _eval(args: argparse.Namespace) -> None:
    _print_eval(
        args.checkpoint,
        args.data,
        args.split,
        args.name,
        args.limit,
        args.weaviate,
        args.json_out,
        onnx_variant=args.onnx_variant,
    )


def _print_eval(
    checkpoint: str,
    data: str,
    split: str,
    name: str,
    limit: int | None,
    weaviate: bool,
    json_out: str | None = None,
    onnx_variant: str | None = None,
) -> None:
    import json

    from cir_module.eval.inprocess import EvalSplit, evaluate_in_process
    from cir_module.models import load_model

    data_split = EvalSplit.load(data, split, name, limit=limit)
    if onnx_variant:  # ``checkpoint`` is a `cir export` folder
        from cir_module.models.onnx_model import OnnxCIRModel

        model = OnnxCIRModel(checkpoint, onnx_variant)
        env = {"CIR_ONNX_EXPORT": str(checkpoint), "CIR_ONNX_VARIANT": onnx_variant}
    else:
        model, env = load_model(checkpoint), {}
    results = {"in-process": evaluate_in_process(model, data_split)}
    if weaviate:
        from integration.evaluate import evaluate_through_weaviate

        results["weaviate"] = evaluate_through_weaviate(checkpoint, data_split, env=env)
    keys = list(results["in-process"].metrics)
    print(
        f"{checkpoint} on {data} [{split}], {len(data_split.triplets)} queries, "
        f"gallery {len(data_split.gallery)}"
    )
    print(f"{'':12}" + "".join(f"{k:>11}" for k in keys))
    for where, result in results.items():
        print(f"{where:12}" + "".join(f"{100 * result.metrics[k]:11.2f}" for k in keys))
    if weaviate:
        a, b = results["in-process"], results["weaviate"]
        same = sum(x == y for x, y in zip(a.rankings, b.rankings, strict=True))
        diff = max(abs(a.metrics[k] - b.metrics[k]) for k in keys)
        print(
            f"identical top-50 rankings: {same}/{len(a.rankings)}; "
            f"largest metric difference: {100 * diff:.2f} points"
        )
    if json_out:
        summary = {
            "checkpoint": str(checkpoint),
            "data": data,
            "split": split,
            "queries": len(data_split.triplets),
            **{where: r.metrics for where, r in results.items()},
        }
        with open(json_out, "w") as fh:
            json.dump(summary, fh, indent=2)


def _data_shapes(args: argparse.Namespace) -> None:
    from cir_module.data.benchmark import generate_benchmark

    summary = generate_benchmark(
        args.out,
        seed=args.seed,
        n_train=args.n_train,
        n_val=args.n_val,
        n_test=args.n_test,
        image_size=args.image_size,
        phrasing_for_test=args.phrasing_for_test,
        workers=args.workers,
        overwrite=args.overwrite,
    )
    print(summary)


def _weaviate_install(args: argparse.Namespace) -> None:
    from integration.weaviate_server import install_weaviate

    print(install_weaviate(args.version))


def _raug_extract(args: argparse.Namespace) -> None:
    from cir_module.rerank import LVLMReranker, extract_raug, read_cot, save_raug
    from cir_module.rerank.raug import layer_norms

    pairs = read_cot(args.data)
    reranker = LVLMReranker.from_pretrained(args.model)
    vectors = extract_raug(
        reranker.model.model, reranker.tokenizer, reranker.layers, pairs, args.method
    )
    path = save_raug(
        vectors,
        args.out,
        model=str(args.model),
        method=args.method,
        pairs=len(pairs),
        position="last token, decoder layer outputs",
    )
    print(f"wrote {tuple(vectors.shape)} RAug-Rep ({args.method}, {len(pairs)} pairs) to {path}")
    print(f"per-layer norms: {layer_norms(vectors)}")


def _rerank_cot(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from cir_module.rerank.training import reasoning_pairs

    pairs = reasoning_pairs(args.data, args.split, args.limit, args.seed)
    Path(args.out).write_text(
        "".join(json.dumps({"question": q, "reasoning": r}) + "\n" for q, r in pairs)
    )
    print(f"wrote {len(pairs)} (question, reasoning) pairs to {args.out}")


def _rerank_train(args: argparse.Namespace) -> None:
    from cir_module.rerank.training import RerankTrainConfig, train_reranker

    fields = RerankTrainConfig.__dataclass_fields__
    cfg = RerankTrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    print(f"reranker saved to {train_reranker(cfg)}")


def _rerank_export(args: argparse.Namespace) -> None:
    from onnx_export.reranker import export_reranker

    manifest = export_reranker(args.model, args.out, image_side=args.image_side)
    print(f"exported {manifest['family']} reranker to {args.out}")
    print(f"parity (max |dP(YES)| torch vs onnxruntime): {manifest['parity']}")


def _rerank_eval(args: argparse.Namespace) -> None:
    import json

    from cir_module.eval.inprocess import EvalSplit
    from cir_module.models import load_model
    from cir_module.rerank import LVLMReranker
    from cir_module.rerank.evaluate import InjectionSetting, first_stage, rerank_sweep

    split = EvalSplit.load(args.data, args.split, limit=args.limit)
    served = None
    if args.weaviate:
        from integration.rerank_eval import weaviate_rerank_run

        env = {
            "CIR_RERANKER_MODEL": str(args.serve or args.reranker),
            "CIR_RERANKER_ALPHA": str(args.serve_alpha),
            "CIR_RERANKER_LAMBDA": str(args.serve_lambda),
            **({"CIR_RERANKER_RAUG": str(args.raug)} if args.raug else {}),
        }
        stage, served = weaviate_rerank_run(args.first_stage, split, args.k, env)
    else:
        stage = first_stage(load_model(args.first_stage), split, args.k)
    reranker = LVLMReranker.from_pretrained(args.reranker, raug=args.raug)
    settings = [InjectionSetting(0.0)] + [InjectionSetting(a) for a in args.alphas]
    settings += [InjectionSetting(args.layer_alpha, w) for w in ("first", "middle", "last")]
    rows = rerank_sweep(reranker, split, stage, settings, args.lambdas)
    if served is not None:
        name = f"Weaviate rerank: alpha={args.serve_alpha:g}, layers=all"
        rows.append({"setting": name, "lambda": args.serve_lambda, **served})
    print(f"{'setting':40s} {'lambda':>7s} {'R@1':>6s} {'R@5':>6s} {'R@10':>6s}")
    for row in rows:
        lam = "" if row["lambda"] is None else f"{row['lambda']:g}"
        print(
            f"{row['setting']:40s} {lam:>7s} {row['R@1']:6.1f} {row['R@5']:6.1f} {row['R@10']:6.1f}"
        )
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows, f, indent=2)


def _scene_graph_captioner(args: argparse.Namespace):
    from cir_module.data.captions import SceneGraphCaptioner

    return SceneGraphCaptioner.from_benchmark(
        args.data, drop=args.drop, wrong=args.wrong, seed=args.seed
    )


def _captioner(args: argparse.Namespace):
    from cir_module.enrich import ChatCaptioner, OpenAIChat, TransformersChat

    if args.captioner == "scene-graph":
        if not args.data:
            sys.exit("--captioner scene-graph needs --data (a benchmark with scene_graphs/)")
        return _scene_graph_captioner(args)
    if not args.model:
        sys.exit(f"--captioner {args.captioner} needs --model")
    if args.captioner == "transformers":
        return ChatCaptioner(TransformersChat(args.model, batch_size=args.batch_size))
    if not args.url:
        sys.exit("--captioner openai needs --url (the endpoint's base URL, e.g. .../v1)")
    backend = OpenAIChat(
        args.url, args.model, api_key=os.environ.get("CIR_CAPTIONER_API_KEY"),
        concurrency=args.concurrency,
    )  # fmt: skip
    return ChatCaptioner(backend)


def _enrich_on_ray(args: argparse.Namespace, collection, captioner_id: str):
    import functools

    import ray

    from integration.enrich_ray import enrich_collection_ray

    ray.init(address=args.ray_address, ignore_reinit_error=True, include_dashboard=False)
    # Each actor builds its own captioner from the same arguments.
    factory = functools.partial(_captioner, args)
    return enrich_collection_ray(
        collection,
        factory,
        captioner_id=captioner_id,
        image_property=args.image_property,
        caption_property=args.caption_property,
        journal=args.journal,
        batch_size=args.batch_size,
        concurrency=args.ray_actors,
        num_gpus=args.ray_gpus,
        limit=args.limit,
        dry_run=args.dry_run,
    )


def _rar_captions(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from cir_module.enrich import CaptionItem

    captioner = _scene_graph_captioner(args)
    names = sorted(captioner.scenes)
    items = [CaptionItem(uuid=n, image=None, properties={"name": n}) for n in names]
    captions = dict(zip(names, captioner.caption(items), strict=True))
    Path(args.out).write_text(json.dumps(captions, indent=0))
    print(f"wrote {len(captions)} captions ({captioner.id}) to {args.out}")


def _rar_eval(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from cir_module.eval.inprocess import EvalSplit
    from integration.evaluate import evaluate_through_weaviate

    split = EvalSplit.load(args.data, args.split, limit=args.limit)
    captioner = _scene_graph_captioner(args) if args.enrich_corpus else None
    env = {"CIR_QUERY_ENHANCEMENT": args.enhance} if args.enhance != "off" else {}
    result = evaluate_through_weaviate(
        args.checkpoint, split, env=env, captioner=captioner, caption_weight=args.caption_weight
    )
    row = {
        "checkpoint": args.checkpoint,
        "corpus": captioner.id if captioner else "plain",
        "queries": args.enhance,
        **{k: round(100 * v, 2) for k, v in result.metrics.items()},  # percent
    }
    print(json.dumps(row))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(row, indent=2))


def _enrich(args: argparse.Namespace) -> None:
    import json

    import weaviate

    from integration.enrich import enrich_collection

    captioner = _captioner(args)
    with weaviate.connect_to_local(
        host=args.host, port=args.port, grpc_port=args.grpc_port, skip_init_checks=True
    ) as client:
        if args.ray:
            report = _enrich_on_ray(args, client.collections.get(args.collection), captioner.id)
        else:
            report = enrich_collection(
                client.collections.get(args.collection),
                captioner,
                image_property=args.image_property,
                caption_property=args.caption_property,
                state_file=args.state,
                journal=args.journal,
                batch_size=args.batch_size,
                limit=args.limit,
                dry_run=args.dry_run,
            )
    print(json.dumps(report.as_dict(), indent=2))
    if report.failed:
        sys.exit(1)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``cir`` (exposed for documentation and tests)."""
    from cir_module.models import list_models
    from integration.weaviate_server import WEAVIATE_VERSION

    parser = argparse.ArgumentParser(prog="cir", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the inference service (CIR_* env settings)")
    serve.add_argument("--checkpoint", help="checkpoint folder or hub id (CIR_CHECKPOINT)")
    serve.add_argument("--host", help="bind address (CIR_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (CIR_PORT, default 8080)")
    serve.set_defaults(func=_serve)

    init = sub.add_parser("init-model", help="build a model from a config and save a checkpoint")
    init.add_argument("config", help=f"registered config ({', '.join(list_models())}) or JSON")
    init.add_argument("out", help="checkpoint folder to write")
    init.add_argument("--pretrained", help="backbone hub id or folder (from_pretrained)")
    init.add_argument("--num-scales", type=int, help="override the pyramid's number of scales")
    init.set_defaults(func=_init_model)

    ex = sub.add_parser("export", help="export a checkpoint to ONNX, validated against torch")
    ex.add_argument("checkpoint", help="checkpoint folder written by cir")
    ex.add_argument("out", help="export folder to write")
    ex.add_argument("--variants", default="fp32,int8", help="comma list of fp32, fp16, int8")
    ex.add_argument("--opset", type=int, default=18)
    ex.set_defaults(func=_export)

    demo = sub.add_parser(
        "demo", help="local Weaviate + service + sample gallery, composed queries"
    )
    demo.add_argument("--checkpoint", help="model to serve (default: the shipped checkpoint)")
    demo.add_argument("--gallery-size", type=int, default=100)
    demo.add_argument("--queries", type=int, default=5)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--top-k", type=int, default=5)
    demo.set_defaults(func=_demo)

    tr = sub.add_parser("train", help="InfoNCE training on triplets in CIRR's format")
    tr.add_argument("--data", required=True, help="data root (CIRR layout)")
    tr.add_argument("--out", required=True, help="run folder (checkpoint/, trainer state)")
    tr.add_argument("--model", default="shapes-minilm", help="registered config or JSON")
    tr.add_argument("--pretrained", help="backbone hub id or folder")
    tr.add_argument("--init-from", help="cir checkpoint to fine-tune (keeps its architecture)")
    tr.add_argument("--captions", help="JSON image name -> caption (`cir rar captions`)")
    tr.add_argument("--caption-weight", type=float, help="weight of the caption (0.5)")
    tr.add_argument("--enhance", choices=["none", "keywords"], help="rewrite modification texts")
    tr.add_argument(
        "--scene-loss", type=float, help="weight of the auxiliary scene loss (scene graphs)"
    )
    tr.add_argument(
        "--token-scene-loss",
        type=float,
        help="weight of the scene loss read cell by cell from the image tokens",
    )
    tr.add_argument(
        "--precise-bn", type=int, help="recompute BatchNorm statistics on N images at the end"
    )
    tr.add_argument("--num-scales", type=int, help="pyramid scales (ablation)")
    tr.add_argument("--fusion", help="fusion kind: cross, mlp, sum, image, text")
    tr.add_argument("--dataset-name", default="shapes", help="annotation name (rc2 for CIRR)")
    tr.add_argument("--split", default="train")
    tr.add_argument("--epochs", type=float)
    tr.add_argument("--max-minutes", type=float, help="stop (and save) after this long")
    tr.add_argument("--batch-size", type=int)
    tr.add_argument("--accumulate", type=int, help="gradient accumulation steps")
    tr.add_argument("--hard-negatives", type=int, help="img_set negatives per triplet")
    tr.add_argument(
        "--reference-negatives",
        action="store_true",
        default=None,
        help="also use each reference as a negative candidate",
    )
    tr.add_argument("--lr", type=float)
    tr.add_argument("--temperature", type=float, help="initial InfoNCE temperature (0.07)")
    tr.add_argument("--weight-decay", type=float)
    tr.add_argument("--warmup-steps", type=int)
    tr.add_argument("--freeze", choices=["none", "backbone", "vision", "text"])
    tr.add_argument("--unfreeze-last", type=int, help="train the last N frozen vision layers")
    tr.add_argument("--seed", type=int)
    tr.add_argument("--save-every", type=int)
    tr.add_argument("--resume", action="store_true", default=None)
    tr.add_argument("--device")
    tr.add_argument("--eval-split", help="evaluate in-process on this split afterwards")
    tr.set_defaults(func=_train)

    ev = sub.add_parser("eval", help="CIRR metrics in-process and through a real Weaviate")
    ev.add_argument("checkpoint")
    ev.add_argument("--data", required=True)
    ev.add_argument("--split", default="test")
    ev.add_argument("--name", default="shapes", help="annotation name (rc2 for CIRR)")
    ev.add_argument("--limit", type=int, help="first N queries only")
    ev.add_argument("--weaviate", action="store_true", help="also evaluate through Weaviate")
    ev.add_argument("--json-out", help="write the metrics as JSON")
    ev.add_argument(
        "--onnx-variant",
        choices=["fp32", "fp16", "int8"],
        help="CHECKPOINT is a `cir export` folder: evaluate this variant on onnxruntime",
    )
    ev.set_defaults(func=_eval)

    data = sub.add_parser("data", help="data sets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    shapes = data_sub.add_parser("shapes", help="generate the synthetic shapes benchmark")
    shapes.add_argument("out")
    shapes.add_argument("--seed", type=int, default=0)
    shapes.add_argument("--n-train", type=int, default=20000)
    shapes.add_argument("--n-val", type=int, default=1000)
    shapes.add_argument("--n-test", type=int, default=1000)
    shapes.add_argument("--image-size", type=int, default=128)
    shapes.add_argument("--phrasing-for-test", choices=["train", "heldout"], default="train")
    shapes.add_argument("--workers", type=int, default=2)
    shapes.add_argument("--overwrite", action="store_true")
    shapes.set_defaults(func=_data_shapes)

    rr = sub.add_parser("rerank", help="the LVLM reranker on the synthetic benchmark")
    rr_sub = rr.add_subparsers(dest="rerank_command", required=True)
    cot = rr_sub.add_parser("cot", help="template reasoning paths from the scene graphs")
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
    reval.add_argument("--serve", help="reranker folder the service loads (e.g. its ONNX export)")
    reval.add_argument("--serve-alpha", type=float, default=0.6)
    reval.add_argument("--serve-lambda", type=float, default=0.06)
    reval.add_argument("--json-out")
    reval.set_defaults(func=_rerank_eval)

    en = sub.add_parser("enrich", help="caption a collection's images and write them back")
    en.add_argument("--collection", required=True)
    en.add_argument("--host", default="127.0.0.1")
    en.add_argument("--port", type=int, default=8080)
    en.add_argument("--grpc-port", type=int, default=50051)
    en.add_argument(
        "--captioner", choices=["scene-graph", "transformers", "openai"], default="scene-graph"
    )
    en.add_argument("--data", help="scene-graph: benchmark folder with scene_graphs/")
    en.add_argument("--model", help="transformers: checkpoint; openai: the served model name")
    en.add_argument("--url", help="openai: base URL of a chat-completions endpoint (.../v1)")
    en.add_argument("--concurrency", type=int, default=4, help="openai: requests in flight")
    en.add_argument("--drop", type=float, default=0.0, help="scene-graph noise: drop a shape")
    en.add_argument("--wrong", type=float, default=0.0, help="scene-graph noise: wrong attribute")
    en.add_argument("--seed", type=int, default=0)
    en.add_argument("--image-property", default="image")
    en.add_argument("--caption-property", default="caption")
    en.add_argument("--state", help="state file: cursor and counts, for resuming")
    en.add_argument("--journal", help="JSON lines: one line per object written")
    en.add_argument("--batch-size", type=int, default=16)
    en.add_argument("--limit", type=int, help="caption at most this many objects")
    en.add_argument("--dry-run", action="store_true", help="caption, but write nothing")
    en.add_argument("--ray", action="store_true", help="caption on Ray Data (the ray extra)")
    en.add_argument("--ray-address", help="Ray cluster address (default: a local instance)")
    en.add_argument("--ray-actors", type=int, default=2, help="captioner actors")
    en.add_argument("--ray-gpus", type=float, default=0, help="GPUs per captioner actor")
    en.set_defaults(func=_enrich)

    rar = sub.add_parser("rar", help="RAR enrichment on the synthetic benchmark")
    rar_sub = rar.add_subparsers(dest="rar_command", required=True)
    caps = rar_sub.add_parser("captions", help="scene-graph captions of every image, as JSON")
    caps.add_argument("--data", required=True)
    caps.add_argument("--out", required=True)
    for p in (caps, rar_eval := rar_sub.add_parser("eval", help="through Weaviate, enriched")):
        p.add_argument("--drop", type=float, default=0.0, help="noise: drop a shape")
        p.add_argument("--wrong", type=float, default=0.0, help="noise: wrong attribute")
        p.add_argument("--seed", type=int, default=0)
    caps.set_defaults(func=_rar_captions)
    rar_eval.add_argument("checkpoint")
    rar_eval.add_argument("--data", required=True)
    rar_eval.add_argument("--split", default="test")
    rar_eval.add_argument("--limit", type=int)
    rar_eval.add_argument("--enrich-corpus", action="store_true", help="caption the gallery")
    rar_eval.add_argument("--caption-weight", type=float, default=0.5)
    rar_eval.add_argument("--enhance", choices=["off", "keywords"], default="off")
    rar_eval.add_argument("--json-out")
    rar_eval.set_defaults(func=_rar_eval)

    raug = sub.add_parser("raug", help="reasoning-augmented representations for the reranker")
    raug_sub = raug.add_subparsers(dest="raug_command", required=True)
    extract = raug_sub.add_parser(
        "extract", help="per-layer mean (or principal) difference, with vs without reasoning"
    )
    extract.add_argument("--model", required=True, help="reranker checkpoint (hub id or folder)")
    extract.add_argument("--data", required=True, help='JSON lines {"question", "reasoning"}')
    extract.add_argument("--out", required=True, help="safetensors file to write")
    extract.add_argument("--method", choices=["mean", "pca"], default="mean")
    extract.set_defaults(func=_raug_extract)

    wv = sub.add_parser("weaviate-install", help="build the pinned Weaviate into the cache")
    wv.add_argument("--version", default=WEAVIATE_VERSION)
    wv.set_defaults(func=_weaviate_install)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``cir`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # one line per HTTP call drowns the demo's output
        logging.getLogger("httpx").setLevel(logging.WARNING)
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
