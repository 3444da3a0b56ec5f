"""The ``cir`` command: serve, create models, run the demo, manage the local Weaviate."""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from cir_module.service import create_app
    from cir_module.settings import ServiceSettings

    overrides = {
        k: v
        for k, v in {"checkpoint": args.checkpoint, "host": args.host, "port": args.port}.items()
        if v is not None
    }
    settings = ServiceSettings(**overrides)
    logging.getLogger().setLevel(settings.log_level.upper())
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
    )


def _init_model(args: argparse.Namespace) -> None:
    from cir_module.models import create_model

    model = create_model(args.config, pretrained=args.pretrained, num_scales=args.num_scales)
    path = model.save_pretrained(args.out)
    print(
        f"saved {model.config.name} ({model.image_encoder.num_scales} scales, dim {model.dim}) "
        f"to {path}"
    )


def _demo(args: argparse.Namespace) -> None:
    from integration.demo import run_demo

    run_demo(
        checkpoint=args.checkpoint,
        gallery_size=args.gallery_size,
        num_queries=args.queries,
        seed=args.seed,
        top_k=args.top_k,
    )


def _weaviate_install(args: argparse.Namespace) -> None:
    from integration.weaviate_server import install_weaviate

    print(install_weaviate(args.version))


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

    demo = sub.add_parser(
        "demo", help="local Weaviate + service + sample gallery, composed queries"
    )
    demo.add_argument("--checkpoint", help="model to serve (default: a model built from tiny-clip)")
    demo.add_argument("--gallery-size", type=int, default=60)
    demo.add_argument("--queries", type=int, default=3)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--top-k", type=int, default=5)
    demo.set_defaults(func=_demo)

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
