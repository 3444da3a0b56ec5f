"""``cir eval``: CIRR's metrics in-process, and through a real Weaviate on request."""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "print_eval"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``eval``."""
    ev = sub.add_parser("eval", help="CIRR metrics in-process and through a real Weaviate")
    ev.add_argument("checkpoint")
    ev.add_argument("--data", required=True)
    ev.add_argument("--split", default="test")
    ev.add_argument("--dataset-name", default="shapes", help="annotation name (rc2 for CIRR)")
    ev.add_argument("--limit", type=int, help="first N queries only")
    ev.add_argument("--weaviate", action="store_true", help="also evaluate through Weaviate")
    ev.add_argument("--json-out", help="write the metrics as JSON")
    ev.add_argument(
        "--onnx-variant",
        choices=["fp32", "fp16", "int8"],
        help="CHECKPOINT is a `cir export` folder: evaluate this variant on onnxruntime",
    )
    ev.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> None:
    print_eval(
        args.checkpoint,
        args.data,
        args.split,
        args.dataset_name,
        args.limit,
        args.weaviate,
        args.json_out,
        onnx_variant=args.onnx_variant,
    )


def print_eval(
    checkpoint: str,
    data: str,
    split: str,
    name: str,
    limit: int | None,
    weaviate: bool,
    json_out: str | None = None,
    onnx_variant: str | None = None,
) -> None:
    """Evaluate ``checkpoint`` on a split (in-process; through Weaviate too when ``weaviate``)
    and print the metrics table; ``json_out`` also writes them as JSON."""
    from cir_module.eval.inprocess import EvalSplit, evaluate_in_process
    from cir_module.eval.report import eval_summary, eval_table, write_json
    from cir_module.models import load_model

    data_split = EvalSplit.load(data, split, name, limit=limit)
    if onnx_variant:  # ``checkpoint`` is a `cir export` folder
        from cir_module.models.onnx_model import load_onnx_model

        model = load_onnx_model(checkpoint, onnx_variant)
        env = {"CIR_ONNX_EXPORT": str(checkpoint), "CIR_ONNX_VARIANT": onnx_variant}
    else:
        model, env = load_model(checkpoint), {}
    results = {"in-process": evaluate_in_process(model, data_split)}
    if weaviate:
        from integration.evaluate import evaluate_through_weaviate

        results["weaviate"] = evaluate_through_weaviate(checkpoint, data_split, env=env)
    print(eval_table(checkpoint, data, split, data_split, results))
    if json_out:
        write_json(json_out, eval_summary(checkpoint, data, split, data_split, results))
