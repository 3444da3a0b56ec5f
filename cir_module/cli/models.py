"""``cir init-model`` and ``cir export``: build a checkpoint from a config; export one to ONNX."""

from __future__ import annotations

import argparse

from cir_module.models.config import list_models

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``init-model`` and ``export``."""
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
    ex.add_argument(
        "--optimize",
        action="store_true",
        help="serve fp32 graphs with onnxruntime's transformer fusions (Attention, "
        "SkipLayerNorm, Gelu) applied offline; the plain graphs where one misses parity",
    )
    ex.add_argument(
        "--int8",
        choices=["dynamic", "static"],
        default="dynamic",
        help="int8 method: dynamic (activation ranges at run time) or static QDQ (calibrated)",
    )
    ex.add_argument(
        "--calibration",
        metavar="DATA",
        help="static int8: benchmark folder whose train split calibrates (default: rendered "
        "synthetic scenes)",
    )
    ex.add_argument("--calibration-size", type=int, default=256, help="pairs to calibrate on")
    ex.set_defaults(func=_export)


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
        args.checkpoint,
        args.out,
        variants=args.variants.split(","),
        opset=args.opset,
        optimize=args.optimize,
        int8=args.int8,
        calibration=args.calibration,
        calibration_size=args.calibration_size,
    )
    for variant, entry in manifest["variants"].items():
        parity = manifest.get("parity", {}).get(variant, {})
        kept = {**parity.get("kept_fp32", {}), **parity.get("kept_plain", {})}
        note = f" (kept in a safer form: {', '.join(kept)})" if kept else ""
        print(f"{variant}: {', '.join(entry['files'].values())}{note}")
    print(json.dumps(manifest.get("optimization", {}), indent=1))
    print(json.dumps(manifest.get("parity", {}), indent=1))
    print(f"manifest: {args.out}/manifest.json")
