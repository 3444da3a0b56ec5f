"""``cir up``: a standing local stack (Weaviate + the service) until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``up``."""
    up = sub.add_parser("up", help="run a local Weaviate + the service until Ctrl-C")
    up.add_argument("--checkpoint", help="model to serve (default: the shipped checkpoint)")
    up.add_argument("--weaviate-port", type=int, default=8080, help="Weaviate's REST port")
    up.add_argument("--grpc-port", type=int, default=50051, help="Weaviate's gRPC port")
    up.add_argument("--service-port", type=int, help="the service's port (default: a free one)")
    up.add_argument(
        "--data-dir", help="keep Weaviate's data in this folder (default: temporary, removed)"
    )
    up.set_defaults(func=_up)


def _up(args: argparse.Namespace) -> None:
    from pathlib import Path

    from cir_module.checkpoints import shipped_checkpoint
    from integration.processes import ProcessFailed
    from integration.up import StackStopped, stand_up

    data_dir = Path(args.data_dir).resolve() if args.data_dir else None
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
    try:
        stand_up(
            args.checkpoint or shipped_checkpoint(),
            http_port=args.weaviate_port,
            grpc_port=args.grpc_port,
            service_port=args.service_port,
            data_dir=data_dir,
            on_ready=lambda text: print(text, flush=True),
        )
    except (ProcessFailed, StackStopped) as exc:
        sys.exit(f"cir up: {exc}")
    print("stopped", flush=True)
