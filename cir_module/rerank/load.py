"""One entry point for a reranker folder: a ``cir rerank export`` folder runs on
onnxruntime, a checkpoint folder (or hub id) on torch as the class its recorded kind names
(:mod:`cir_module.rerank.registry`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cir_module.rerank.registry import Reranker, recorded_kind, reranker_kind

__all__ = ["load_reranker"]


def load_reranker(
    path: str | Path,
    *,
    raug: str | Path | None = None,
    alpha: float | None = None,
    layers: str | Sequence[int] | None = None,
    image_side: int | None = None,
    batch_size: int | None = None,
    rationale: bool = False,
    device: str | None = None,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    trt_cache: str | Path | None = None,
    trt_fp16: bool = True,
    precision: str | None = None,
    **options,
) -> Reranker:
    """The reranker at ``path``. ``raug``, ``alpha``, ``layers`` and ``rationale`` steer the
    P(YES) image judge (``rationale``: each query's prompt carries the model's own reasoning
    path, CIR-CoT, generated once per query); a kind that judges otherwise refuses RAug-Rep
    vectors and a rationale, and ignores the rest. ``device`` places a torch model;
    ``providers``, ``threads``, ``trt_cache`` and ``trt_fp16`` (onnxruntime's execution
    providers, best first, intra-op threads, TensorRT's engine cache and fp16 engines) open an
    export; ``precision`` (``fp32``
    or ``int8``) chooses a change verifier export's verify graph. Unset options keep the
    folder's saved settings, else the class's defaults; ``options`` go to the class as they
    are."""
    from cir_module.rerank.onnx_reranker import OnnxReranker, is_onnx_reranker, onnx_kind

    given = {"alpha": alpha, "layers": layers, "batch_size": batch_size}
    given = {k: v for k, v in given.items() if v is not None}
    if is_onnx_reranker(path) and onnx_kind(path) == "changes":
        from cir_module.rerank.onnx_verifier import OnnxChangeVerifier

        if raug is not None or rationale:
            raise ValueError(
                f"{path} is a change verifier's export: it takes no RAug-Rep injection (serve "
                "its checkpoint folder on torch to inject) and writes no rationale"
            )
        kept = {"batch_size": batch_size} if batch_size else {}
        return OnnxChangeVerifier(
            path,
            providers=providers,
            threads=threads,
            trt_cache=trt_cache,
            trt_fp16=trt_fp16,
            precision=precision,
            **kept,
            **options,
        )
    if precision not in (None, "fp32"):
        raise ValueError(
            f"precision {precision!r} is served by a change verifier's ONNX export; {path} runs "
            "in fp32 (set CIR_RERANKER_RUNTIME to auto or onnx for a verifier's checkpoint)"
        )
    if is_onnx_reranker(path):
        if rationale:
            raise ValueError(
                f"{path} is an ONNX export, which scores but does not generate: a reranker "
                "that writes its own rationale needs the checkpoint folder (torch)"
            )
        reranker = OnnxReranker(
            path,
            raug=raug,
            providers=providers,
            threads=threads,
            trt_cache=trt_cache,
            trt_fp16=trt_fp16,
            **given,
        )
        if image_side and image_side != reranker.image_side:
            raise ValueError(
                f"{path} was exported for {reranker.image_side}-pixel images, not {image_side}; "
                "export again with --image-side or leave the setting unset"
            )
        return reranker
    kind = reranker_kind(recorded_kind(path))
    if kind.steered:
        options |= {"raug": raug, "rationale": rationale, **given}
    elif raug is not None or rationale:
        raise ValueError(
            f"{path} is served as {kind.title} and takes no RAug-Rep injection or rationale "
            "prompt (those steer the P(YES) judgement of the image judge's prompt)"
        )
    elif "batch_size" in given:
        options["batch_size"] = given["batch_size"]
    if image_side:
        options["image_side"] = image_side
    return kind.cls.from_pretrained(path, device=device, **options)
