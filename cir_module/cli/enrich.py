"""``cir enrich`` (caption a collection's images and write them back) and ``cir rar``
(captions and evaluation of RAR enrichment on the synthetic benchmark)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from cir_module.cli.options import add_captioner, add_enhance

if TYPE_CHECKING:
    from cir_module.data.captions import SceneGraphCaptioner
    from cir_module.enrich import Captioner
    from integration.enrich import EnrichReport

__all__ = ["add_parser", "captioner_from_args"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``enrich`` and ``rar`` with its verbs."""
    en = sub.add_parser("enrich", help="caption a collection's images and write them back")
    en.add_argument("--collection", required=True)
    en.add_argument("--host", default="127.0.0.1")
    en.add_argument("--port", type=int, default=8080)
    en.add_argument("--grpc-port", type=int, default=50051)
    add_captioner(en)
    en.add_argument("--image-property", default="image")
    en.add_argument("--caption-property", default="caption")
    # The Ray job keeps no cursor (its batches come back out of order): a rerun resumes by
    # skipping the objects already captioned. A state file would be silently unused there.
    where = en.add_mutually_exclusive_group()
    where.add_argument(
        "--state",
        help="state file: cursor and counts, for resuming (single-process job; not with --ray, "
        "which resumes by skipping what is captioned)",
    )
    en.add_argument("--journal", help="JSON lines: one line per object written")
    en.add_argument("--batch-size", type=int, default=16)
    en.add_argument("--limit", type=int, help="caption at most this many objects")
    en.add_argument("--dry-run", action="store_true", help="caption, but write nothing")
    where.add_argument("--ray", action="store_true", help="caption on Ray Data (the ray extra)")
    en.add_argument("--ray-address", help="Ray cluster address (default: a local instance)")
    en.add_argument("--ray-actors", type=int, default=2, help="captioner actors")
    en.add_argument("--ray-gpus", type=float, default=0, help="GPUs per captioner actor")
    en.set_defaults(func=_enrich)

    rar = sub.add_parser("rar", help="RAR enrichment on the synthetic benchmark")
    rar_sub = rar.add_subparsers(dest="rar_command", required=True)
    caps = rar_sub.add_parser("captions", help="captions of the benchmark's images, as JSON")
    caps.add_argument("--data", required=True)
    caps.add_argument("--out", required=True, help="JSON {image: caption}; a rerun resumes it")
    add_captioner(caps, with_data=False)
    caps.add_argument(
        "--split", action="append", help="a model: caption this split's images (repeatable; all)"
    )
    caps.add_argument("--limit", type=int, help="a model: at most this many images per split")
    caps.add_argument(
        "--targets-only",
        action="store_true",
        help="a model: only the split's triplet targets (the candidates aligned training "
        "mixes captions into, with --hard-negatives 0)",
    )
    caps.add_argument("--batch-size", type=int, default=16)
    caps.set_defaults(func=_rar_captions)
    faith = rar_sub.add_parser(
        "faithfulness", help="captions against the scene graphs: attributes right/wrong/missing"
    )
    faith.add_argument("captions", help="JSON {image: caption} (cir rar captions)")
    faith.add_argument("--data", required=True)
    faith.set_defaults(func=_rar_faithfulness)
    rar_eval = rar_sub.add_parser("eval", help="through Weaviate, enriched")
    add_captioner(rar_eval, with_data=False)
    rar_eval.add_argument(
        "--batch-size", type=int, default=16, help="a local model: images per batch"
    )
    rar_eval.add_argument("checkpoint")
    rar_eval.add_argument("--data", required=True)
    rar_eval.add_argument("--split", default="test")
    rar_eval.add_argument("--limit", type=int)
    rar_eval.add_argument("--enrich-corpus", action="store_true", help="caption the gallery")
    rar_eval.add_argument("--caption-weight", type=float, default=0.5)
    add_enhance(rar_eval, default="none")
    rar_eval.add_argument(
        "--chat-model",
        help="--enhance vlm: a chat model that distils queries itself (a plugin's kind, "
        "e.g. research's describe-and-verify folder through python -m research.cli)",
    )
    rar_eval.add_argument("--json-out")
    rar_eval.set_defaults(func=_rar_eval)


def _scene_graph_captioner(args: argparse.Namespace) -> SceneGraphCaptioner:
    from cir_module.data.captions import SceneGraphCaptioner

    return SceneGraphCaptioner.from_benchmark(
        args.data, drop=args.drop, wrong=args.wrong, seed=args.seed
    )


def captioner_from_args(args: argparse.Namespace) -> Captioner:
    """The captioner the flags of :func:`~cir_module.cli.options.add_captioner` name (and
    ``--batch-size`` for a local model); exits with a message when one is missing."""
    from cir_module.enrich import ChatCaptioner, trained_vlm_captioner
    from cir_module.vlm.chat import OpenAIChat, TransformersChat

    if args.captioner == "scene-graph":
        if not args.data:
            sys.exit("--captioner scene-graph needs --data (a benchmark with scene_graphs/)")
        return _scene_graph_captioner(args)
    if not args.model:
        sys.exit(f"--captioner {args.captioner} needs --model")
    if args.captioner == "vlm":
        return trained_vlm_captioner(args.model, batch_size=args.batch_size)
    if args.captioner == "transformers":
        return ChatCaptioner(TransformersChat(args.model, batch_size=args.batch_size))
    if not args.url:
        sys.exit("--captioner openai needs --url (the endpoint's base URL, e.g. .../v1)")
    backend = OpenAIChat(
        args.url, args.model, api_key=os.environ.get("CIR_CAPTIONER_API_KEY"),
        concurrency=args.concurrency,
    )  # fmt: skip
    return ChatCaptioner(backend)


def _enrich(args: argparse.Namespace) -> None:
    import json

    import weaviate

    from integration.enrich import enrich_collection

    captioner = captioner_from_args(args)
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


def _enrich_on_ray(args: argparse.Namespace, collection, captioner_id: str) -> EnrichReport:
    import functools

    import ray

    from integration.enrich_ray import enrich_collection_ray

    ray.init(address=args.ray_address, ignore_reinit_error=True, include_dashboard=False)
    # Each actor builds its own captioner from the same arguments.
    factory = functools.partial(captioner_from_args, args)
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

    if args.captioner == "scene-graph":  # every image, from its scene graph: no pixels read
        captioner = _scene_graph_captioner(args)
        names = sorted(captioner.scenes)
        items = [CaptionItem(uuid=n, image=None, properties={"name": n}) for n in names]
        captions = dict(zip(names, captioner.caption(items), strict=True))
        Path(args.out).write_text(json.dumps(captions, indent=0))
        print(f"wrote {len(captions)} captions ({captioner.id}) to {args.out}")
        return
    from cir_module.data.captions import caption_images
    from cir_module.eval.inprocess import EvalSplit
    from cir_module.eval.readers import read_cirr

    captioner = captioner_from_args(args)
    names, opener = [], {}
    for split in args.split or ["train", "val", "test"]:
        images = EvalSplit.load(args.data, split)
        pool = images.paths
        if args.targets_only:
            pool = {t.target for t in read_cirr(args.data, split, "shapes") if t.target}
        chosen = sorted(pool)[: args.limit]
        names += chosen
        opener.update(dict.fromkeys(chosen, images.open))
    made, seconds = caption_images(captioner, names, lambda n: opener[n](n), args.out)
    rate = f", {made / seconds:.2f} captions/s" if made else ""
    print(f"wrote {made} captions ({captioner.id}) to {args.out} in {seconds:.1f} s{rate}")


def _rar_faithfulness(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from cir_module.data.benchmark import load_scene_graphs, tier_of
    from cir_module.eval.faithfulness import caption_faithfulness

    captions = json.loads(Path(args.captions).read_text())
    result = caption_faithfulness(captions, load_scene_graphs(args.data), tier_of(args.data))
    print(json.dumps(result, indent=2))


def _rar_eval(args: argparse.Namespace) -> None:
    import json

    from cir_module.eval.inprocess import EvalSplit
    from cir_module.eval.report import rar_row, write_json
    from integration.evaluate import evaluate_through_weaviate

    split = EvalSplit.load(args.data, args.split, limit=args.limit)
    captioner = captioner_from_args(args) if args.enrich_corpus else None
    # The service's setting spells "none" as "off".
    env = {"CIR_QUERY_ENHANCEMENT": args.enhance} if args.enhance != "none" else {}
    if args.enhance == "vlm":
        if not args.chat_model:
            sys.exit("--enhance vlm needs --chat-model (a chat model that distils queries itself)")
        env["CIR_CHAT_MODEL"] = args.chat_model
    result = evaluate_through_weaviate(
        args.checkpoint, split, env=env, captioner=captioner, caption_weight=args.caption_weight
    )
    corpus = captioner.id if captioner else "plain"
    row = rar_row(args.checkpoint, corpus, args.enhance, result.metrics)
    print(json.dumps(row))
    if args.json_out:
        write_json(args.json_out, row)
