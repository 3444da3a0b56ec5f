"""``cir train``: InfoNCE training of the pyramid image encoder and the composed-query head.

The reference and the target go through the same pyramid encoder; the composed query
(reference + modification text) must find its target among the batch's other targets and
the triplets' hard negatives (:mod:`cir_module.training.batch_loss`), plus any auxiliary
losses the data set offers (:mod:`cir_module.training.auxiliary`). The output folder holds a
checkpoint the service loads unchanged (``<out>/checkpoint``), the trainer state for
``--resume`` (``trainer_state.pt``: optimizer, logit scale, auxiliary heads, progress),
``train_config.json`` and ``train_log.jsonl`` (loss and logit scale per step).

:func:`train` reads top-down: :func:`_start` builds (or, resuming, restores) the run,
:func:`_loop` trains it to the last step or the time budget, :func:`_finish` saves it.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from cir_module.models import CIRModel, LVLMRetriever, create_model, load_model
from cir_module.training.auxiliary import AuxiliaryLoss, build_auxiliary_loss
from cir_module.training.batch_loss import BatchLoss, TextCache
from cir_module.training.batchnorm import recompute_on_images
from cir_module.training.data import Batch, ImageStore, TripletData
from cir_module.training.losses import LogitScale
from cir_module.training.schedule import warmup_cosine

__all__ = ["TrainConfig", "train"]

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"  # in the run folder: what the service loads
STATE_FILE = "trainer_state.pt"  # in the run folder: what --resume needs besides the checkpoint


@dataclass
class TrainConfig:
    """Everything one training run depends on (saved next to its checkpoint)."""

    data: str
    out: str
    model: str = "shapes-minilm"
    pretrained: str | None = None
    init_from: str | None = None  # a cir checkpoint to fine-tune (its architecture is kept)
    num_scales: int | None = None
    fusion: str | None = None  # override the config's fusion kind (baselines)
    split: str = "train"
    dataset_name: str = "shapes"
    epochs: float = 1.0
    max_minutes: float | None = None
    batch_size: int = 64
    accumulate: int = 1
    hard_negatives: int = 1
    # Also use each reference as a negative: a composed query must move away from its
    # reference, which matters wherever the reference is not filtered out of the results.
    reference_negatives: bool = False
    lr: float = 3e-4
    # Initial temperature of the learnable logit scale (CLIP's 0.07). It moves slowly at
    # these learning rates, so a fine-tune that must separate near-duplicates can start
    # sharper.
    temperature: float = 0.07
    weight_decay: float = 0.05
    warmup_steps: int = 100
    freeze: str = "none"  # none | backbone | vision | text
    unfreeze_last: int = 0  # with freeze=backbone/vision: train the last N vision layers
    seed: int = 0
    # RAR training alignment: ``captions`` (JSON, image name -> caption, `cir rar captions`)
    # makes every candidate the enriched vector Weaviate stores, (1 - w) image + w caption
    # text; ``enhance`` rewrites the modification texts as the service would: by rules
    # (keywords), or as the VLM that reads each reference distilled them (vlm: ``queries``,
    # JSON from `python -m research.cli rar-distil`).
    captions: str | None = None
    caption_weight: float = 0.5
    enhance: str = "none"  # none | keywords | vlm
    queries: str | None = None
    # Auxiliary losses by name, each with its named weights (training/auxiliary.py), e.g.
    # {"scene": {"embedding": 0.5, "tokens": 2.0}} for `--scene-loss 0.5 --token-scene-loss 2`.
    auxiliary_losses: dict[str, dict[str, float]] = field(default_factory=dict)
    # Recompute BatchNorm statistics over this many training images once training ends
    # (training/batchnorm.py); 0 keeps the moving averages.
    precise_bn: int = 0
    save_every: int = 500
    resume: bool = False
    device: str = "cuda" if torch.cuda.is_available() else "cpu"


def train(cfg: TrainConfig) -> Path:
    """Run one training; returns the checkpoint folder."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    _seed_everything(cfg.seed)
    run = _start(cfg, out)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    store = ImageStore(run.data.root, run.data.paths, run.model.preprocess)
    on_budget = _loop(run, _make_batch_loss(run, store))
    _finish(run, store, on_budget)
    return run.checkpoint


@dataclass
class _Run:
    """One training run: what it trains and how far it got (what ``trainer_state.pt`` keeps)."""

    cfg: TrainConfig
    out: Path
    model: CIRModel
    params: list[nn.Parameter]  # the model's trainable parameters
    logit_scale: LogitScale
    auxiliary: list[AuxiliaryLoss]
    optimizer: torch.optim.Optimizer
    data: TripletData
    corpus: dict[str, str] | None  # image name -> caption (RAR training alignment)
    steps_per_epoch: int
    total_steps: int
    step: int = 0
    epoch: int = 0
    elapsed: float = 0.0  # seconds of training, over all sessions of a resumed run
    running: float | None = None  # smoothed loss, for the progress bar and the last log line

    @property
    def checkpoint(self) -> Path:
        return self.out / CHECKPOINT_DIR

    @property
    def state_path(self) -> Path:
        return self.out / STATE_FILE

    def save(self) -> None:
        """The checkpoint, and the trainer state beside it."""
        self.model.save_pretrained(self.checkpoint)
        heads = {
            name: head.state_dict() for loss in self.auxiliary for name, head in loss.heads.items()
        }
        state = {
            "optimizer": self.optimizer.state_dict(),
            "logit_scale": self.logit_scale.state_dict(),
            **heads,
            "step": self.step,
            "epoch": self.epoch,
            "elapsed": self.elapsed,
        }
        torch.save(state, self.state_path)

    def restore(self) -> None:
        """Optimizer, logit scale, auxiliary heads and progress from the trainer state."""
        state = torch.load(self.state_path, map_location=self.cfg.device, weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.logit_scale.load_state_dict(state["logit_scale"])
        for loss in self.auxiliary:
            for name, head in loss.heads.items():
                if state.get(name) is not None:  # a state written before this head existed
                    head.load_state_dict(state[name])
        self.step, self.epoch, self.elapsed = state["step"], state["epoch"], state["elapsed"]
        log.info("resumed %s at step %d (epoch %d)", self.out, self.step, self.epoch)


def _start(cfg: TrainConfig, out: Path) -> _Run:
    """The run: the model (new, fine-tuned from ``init_from``, or on ``--resume`` the run's
    own checkpoint and trainer state), its optimizer (model, logit scale and auxiliary
    heads), the triplets and the step count."""
    resuming = cfg.resume and (out / STATE_FILE).is_file()
    if resuming:
        model = load_model(out / CHECKPOINT_DIR)
    else:
        model = load_model(cfg.init_from) if cfg.init_from else _build_model(cfg)
    model.to(cfg.device)
    if isinstance(model, LVLMRetriever) and (cfg.precise_bn or any(
        w > 0 for weights in cfg.auxiliary_losses.values() for w in weights.values()
    )):  # fmt: skip
        raise ValueError("the lvlm family takes no auxiliary losses and has no BatchNorm")
    params = _apply_freezing(model, cfg)
    logit_scale = LogitScale(cfg.temperature).to(cfg.device)
    auxiliary = _auxiliary_losses(cfg, model)
    heads = [p for loss in auxiliary for head in loss.heads.values() for p in head.parameters()]
    optimizer = torch.optim.AdamW(
        [*params, *logit_scale.parameters(), *heads], lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    data = TripletData(cfg.data, cfg.split, cfg.dataset_name)
    if (cfg.enhance == "vlm") != bool(cfg.queries):
        raise ValueError("enhance=vlm takes the distilled modifications (queries), and only it")
    if cfg.enhance == "vlm":
        data.rewrite_queries(json.loads(Path(cfg.queries).read_text()))
    elif cfg.enhance != "none":
        data.rewrite_captions(_enhancer(cfg.enhance))
    corpus = None
    if cfg.captions:  # the captions of this split's images (the file may cover them all)
        corpus = {
            n: c for n, c in json.loads(Path(cfg.captions).read_text()).items() if n in data.paths
        }
    steps_per_epoch = len(data) // (cfg.batch_size * cfg.accumulate)
    run = _Run(
        cfg, out, model, params, logit_scale, auxiliary, optimizer, data, corpus,
        steps_per_epoch=steps_per_epoch, total_steps=max(1, int(steps_per_epoch * cfg.epochs)),
    )  # fmt: skip
    if resuming:
        run.restore()
    return run


def _auxiliary_losses(cfg: TrainConfig, model: CIRModel) -> list[AuxiliaryLoss]:
    """The configured auxiliary losses that have a positive weight, heads on the device."""
    losses = []
    for name, weights in cfg.auxiliary_losses.items():
        if any(w > 0 for w in weights.values()):
            loss = build_auxiliary_loss(name, weights, model, cfg.data, cfg.split)
            for head in loss.heads.values():
                head.to(cfg.device)
            losses.append(loss)
    return losses


def _make_batch_loss(run: _Run, store: ImageStore) -> BatchLoss:
    """The run's loss of one batch; with a frozen text tower, every text it will need is
    encoded once here."""
    texts = run.data.captions() + (sorted(set(run.corpus.values())) if run.corpus else [])
    text_cache = TextCache(run.model, texts) if _text_frozen(run.model) else None
    return BatchLoss(
        run.model, store, text_cache, run.logit_scale, run.cfg.device,
        reference_negatives=run.cfg.reference_negatives, corpus=run.corpus,
        caption_weight=run.cfg.caption_weight, auxiliary=run.auxiliary,
    )  # fmt: skip


def _loop(run: _Run, batch_loss: BatchLoss) -> bool:
    """Train to the last step, or until the time budget is spent (then returns True): one
    optimizer step per ``accumulate`` batches, the trainer state saved every ``save_every``."""
    cfg = run.cfg
    about = run.model.describe()
    log.info(
        "training %s (%d scales, fusion %s) on %d triplets: %d steps, %d trainable params",
        about["name"],
        about["scales"],
        about["fusion"],
        len(run.data),
        run.total_steps,
        sum(p.numel() for p in run.params),
    )
    run.model.train()
    if batch_loss.text_cache is not None:  # no dropout in a tower that is not trained
        for module in _text_towers(run.model):
            module.eval()
    use_amp = cfg.device.startswith("cuda")
    quiet = not log.isEnabledFor(logging.INFO)
    bar = tqdm(total=run.total_steps, initial=run.step, desc="train", disable=quiet)
    started = time.monotonic() - run.elapsed
    on_budget = False
    while run.step < run.total_steps and not on_budget:
        for micro, batch in _epoch_batches(run):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                loss = batch_loss(batch)
            (loss / cfg.accumulate).backward()
            if (micro + 1) % cfg.accumulate:
                continue
            _optimizer_step(run, loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{run.running:.3f}", scale=f"{run.logit_scale().item():.1f}")
            run.elapsed = time.monotonic() - started
            if run.step % cfg.save_every == 0:
                run.save()
            if run.step >= run.total_steps or (
                cfg.max_minutes and run.elapsed > 60 * cfg.max_minutes
            ):
                on_budget = run.step < run.total_steps
                break
        else:
            run.epoch += 1
    bar.close()
    return on_budget


def _epoch_batches(run: _Run) -> Iterator[tuple[int, Batch]]:
    """The current epoch's micro-batches, numbered from the epoch's start, without those the
    run has already trained on. Each epoch's order depends only on (seed, epoch): resuming
    replays it exactly."""
    cfg = run.cfg
    rng = random.Random(f"{cfg.seed}-{run.epoch}")
    done = (run.step - run.epoch * run.steps_per_epoch) * cfg.accumulate
    for micro, batch in enumerate(run.data.batches(cfg.batch_size, cfg.hard_negatives, rng)):
        if micro >= done:
            yield micro, batch


def _optimizer_step(run: _Run, loss: float) -> None:
    """Step the learning-rate schedule and the optimizer (model gradients clipped to norm
    1), then log the step's loss and logit scale to ``train_log.jsonl``."""
    cfg = run.cfg
    for group in run.optimizer.param_groups:
        group["lr"] = cfg.lr * warmup_cosine(run.step, cfg.warmup_steps, run.total_steps)
    torch.nn.utils.clip_grad_norm_(run.params, 1.0)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.step += 1
    run.running = loss if run.running is None else 0.95 * run.running + 0.05 * loss
    record = {"step": run.step, "loss": loss, "scale": run.logit_scale().item()}
    with (run.out / "train_log.jsonl").open("a") as fh:
        fh.write(json.dumps(record) + "\n")


def _finish(run: _Run, store: ImageStore, on_budget: bool) -> None:
    """Precise BatchNorm statistics if asked for, then the checkpoint and trainer state."""
    cfg = run.cfg
    if cfg.precise_bn:
        layers, images = recompute_on_images(
            run.model,
            store,
            list(run.data.paths),
            cfg.precise_bn,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            device=cfg.device,
        )
        log.info("recomputed %d BatchNorm layers' statistics on %d images", layers, images)
    run.save()
    run.model.eval()
    log.info(
        "stopped at step %d/%d after %.1f min (loss %.3f)%s",
        run.step,
        run.total_steps,
        run.elapsed / 60,
        run.running or float("nan"),
        " on the time budget" if on_budget else "",
    )


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _build_model(cfg: TrainConfig) -> CIRModel:
    from cir_module.models import get_model_config

    config = get_model_config(cfg.model)
    if cfg.fusion is not None:
        config.fusion.kind = cfg.fusion
    return create_model(config, pretrained=cfg.pretrained, num_scales=cfg.num_scales)


def _text_towers(model: CIRModel) -> list[nn.Module]:
    """The backbone's text-side modules (``text_model``/``text_projection``, or ``text``);
    none for the lvlm family, whose language model reads images and texts alike."""
    if isinstance(model, LVLMRetriever):
        return []
    return [m for name, m in model.backbone.named_children() if name.startswith("text")]


def _apply_freezing(model: CIRModel, cfg: TrainConfig) -> list[nn.Parameter]:
    """Set ``requires_grad`` by the freeze policy; return the trainable parameters."""
    if isinstance(model, LVLMRetriever):
        # CIR-LVLM keeps its vision encoder frozen (vision); backbone freezes the language
        # model too, so that only the prompt pool trains: a 2B or 7B backbone then holds no
        # gradients or optimiser state, and fits one GPU.
        if cfg.freeze not in ("none", "vision", "backbone") or cfg.unfreeze_last:
            raise ValueError(
                "the lvlm family takes --freeze none, vision or backbone (no unfreeze-last)"
            )
        model.backbone.requires_grad_(cfg.freeze != "backbone")
        model.backbone.model.visual.requires_grad_(cfg.freeze == "none")
        trainable = [p for p in model.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError("--freeze backbone with pool_size 0 leaves nothing to train")
        return trainable
    vision = model.image_encoder.vision
    if cfg.freeze in ("backbone", "vision"):
        vision.requires_grad_(False)
        layers = vision.encoder.layers
        for layer in layers[len(layers) - cfg.unfreeze_last :] if cfg.unfreeze_last else []:
            layer.requires_grad_(True)
    if cfg.freeze in ("backbone", "text"):
        for module in _text_towers(model):
            module.requires_grad_(False)
    elif cfg.freeze not in ("none", "vision"):
        raise ValueError(f"unknown freeze policy {cfg.freeze!r}: none, backbone, vision, text")
    return [p for p in model.parameters() if p.requires_grad]


def _enhancer(name: str):
    from cir_module.enrich.enhance import KeywordDistiller

    if name != "keywords":
        raise ValueError(f"enhance must be none, keywords or vlm, not {name!r}")
    return KeywordDistiller().distil


def _text_frozen(model: CIRModel) -> bool:
    towers = _text_towers(model)
    return bool(towers) and not any(p.requires_grad for m in towers for p in m.parameters())
