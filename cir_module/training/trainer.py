"""``cir train``: InfoNCE training of the pyramid image encoder and the composed-query head.

The reference and the target go through the same pyramid encoder; the composed query
(reference + modification text) must find its target among the batch's other targets and
the triplets' hard negatives. The output folder holds a checkpoint the service loads
unchanged (``<out>/checkpoint``) and the trainer state for ``--resume``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from cir_module.models import CIRModel, create_model, load_model
from cir_module.training.batchnorm import recompute_on_images
from cir_module.training.data import Batch, ImageStore, TripletData
from cir_module.training.losses import LogitScale, info_nce
from cir_module.training.scene import CellTokenHead, SceneHead, SceneLabels

__all__ = ["TrainConfig", "train"]

log = logging.getLogger(__name__)


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
    # text; ``enhance`` rewrites the modification texts as the service would.
    captions: str | None = None
    caption_weight: float = 0.5
    enhance: str = "none"  # none | keywords
    # Weight of the auxiliary scene loss (training/scene.py); needs the data's scene graphs.
    scene_loss: float = 0.0
    # Weight of the same loss read from the candidates' finest-scale tokens, cell by cell.
    token_scene_loss: float = 0.0
    # Recompute BatchNorm statistics over this many training images once training ends
    # (training/batchnorm.py); 0 keeps the moving averages.
    precise_bn: int = 0
    save_every: int = 500
    resume: bool = False
    device: str = "cuda" if torch.cuda.is_available() else "cpu"


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
    """The backbone's text-side modules (``text_model``/``text_projection``, or ``text``)."""
    return [m for name, m in model.backbone.named_children() if name.startswith("text")]


def _apply_freezing(model: CIRModel, cfg: TrainConfig) -> list[nn.Parameter]:
    """Set ``requires_grad`` by the freeze policy; return the trainable parameters."""
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
        raise ValueError(f"enhance must be none or keywords, not {name!r}")
    return KeywordDistiller().distil


def _text_frozen(model: CIRModel) -> bool:
    return not any(p.requires_grad for m in _text_towers(model) for p in m.parameters())


class _TextCache:
    """Text states per caption, computed once when the text tower is frozen."""

    def __init__(self, model: CIRModel, captions: list[str], batch_size: int = 256) -> None:
        self.index = {c: i for i, c in enumerate(captions)}
        embeds, tokens, masks = [], [], []
        length = 0
        with torch.no_grad():
            for i in range(0, len(captions), batch_size):
                ids = model.tokenize(captions[i : i + batch_size])
                e, t, m = model.encode_text_states(**ids)
                embeds.append(e)
                tokens.append(t.half())
                masks.append(m)
                length = max(length, t.shape[1])
        pad = lambda x: nn.functional.pad(x, (0, 0, 0, length - x.shape[1]))  # noqa: E731
        self.embeds = torch.cat(embeds)
        self.tokens = torch.cat([pad(t) for t in tokens])
        self.masks = torch.cat([nn.functional.pad(m, (0, length - m.shape[1])) for m in masks])

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, ...]:
        rows = torch.tensor([self.index[c] for c in captions])
        mask = self.masks[rows]
        width = int(mask.sum(1).max())  # trim the padding this batch does not need
        return self.embeds[rows], self.tokens[rows, :width].float(), mask[:, :width]


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1 + math.cos(math.pi * progress))


def train(cfg: TrainConfig) -> Path:
    """Run one training; returns the checkpoint folder."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_dir, state_path = out / "checkpoint", out / "trainer_state.pt"
    _seed_everything(cfg.seed)
    resuming = cfg.resume and state_path.is_file()
    if resuming:
        model = load_model(ckpt_dir)
    else:
        model = load_model(cfg.init_from) if cfg.init_from else _build_model(cfg)
    model.to(cfg.device)
    params = _apply_freezing(model, cfg)
    logit_scale = LogitScale(cfg.temperature).to(cfg.device)
    scene = None
    if cfg.scene_loss > 0 or cfg.token_scene_loss > 0:
        hidden = model.image_encoder.vision.embeddings.embed_dim
        scene = _SceneLoss(
            SceneLabels.load(cfg.data, cfg.split),
            SceneHead(model.dim).to(cfg.device),
            cfg.scene_loss,
            CellTokenHead(hidden).to(cfg.device),
            cfg.token_scene_loss,
        )
    aux = [*logit_scale.parameters(), *(scene.parameters() if scene else ())]
    optimizer = torch.optim.AdamW([*params, *aux], lr=cfg.lr, weight_decay=cfg.weight_decay)
    data = TripletData(cfg.data, cfg.split, cfg.dataset_name)
    if cfg.enhance != "none":
        data.rewrite_captions(_enhancer(cfg.enhance))
    corpus = None
    if cfg.captions:  # the captions of this split's images (the file may cover them all)
        corpus = {
            n: c for n, c in json.loads(Path(cfg.captions).read_text()).items() if n in data.paths
        }
    steps_per_epoch = len(data) // (cfg.batch_size * cfg.accumulate)
    total_steps = max(1, int(steps_per_epoch * cfg.epochs))
    step, epoch, elapsed = 0, 0, 0.0
    if resuming:
        state = torch.load(state_path, map_location=cfg.device, weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        logit_scale.load_state_dict(state["logit_scale"])
        if scene is not None:
            scene.head.load_state_dict(state["scene_head"])
            if state.get("token_head") is not None:
                scene.token_head.load_state_dict(state["token_head"])
        step, epoch, elapsed = state["step"], state["epoch"], state["elapsed"]
        log.info("resumed %s at step %d (epoch %d)", out, step, epoch)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")

    store = ImageStore(data.root, data.paths, model.preprocess)
    texts = data.captions() + (sorted(set(corpus.values())) if corpus else [])
    text_cache = _TextCache(model, texts) if _text_frozen(model) else None
    use_amp = cfg.device.startswith("cuda")
    log.info(
        "training %s (%d scales, fusion %s) on %d triplets: %d steps, %d trainable params",
        model.config.name,
        model.image_encoder.num_scales,
        model.config.fusion.kind,
        len(data),
        total_steps,
        sum(p.numel() for p in params),
    )

    def save() -> None:
        model.save_pretrained(ckpt_dir)
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "logit_scale": logit_scale.state_dict(),
                "scene_head": scene.head.state_dict() if scene else None,
                "token_head": scene.token_head.state_dict() if scene else None,
                "step": step,
                "epoch": epoch,
                "elapsed": elapsed,
            },
            state_path,
        )

    model.train()
    if text_cache is not None:  # no dropout in a tower that is not trained
        for module in _text_towers(model):
            module.eval()
    bar = tqdm(
        total=total_steps, initial=step, desc="train", disable=not log.isEnabledFor(logging.INFO)
    )
    started = time.monotonic() - elapsed
    stop = False
    running = None
    while step < total_steps and not stop:
        # Each epoch's order depends only on (seed, epoch): resuming replays it exactly.
        batches = data.batches(
            cfg.batch_size, cfg.hard_negatives, random.Random(f"{cfg.seed}-{epoch}")
        )
        skip = step * cfg.accumulate - epoch * steps_per_epoch * cfg.accumulate
        for micro, batch in enumerate(batches):
            if micro < skip:
                continue
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                loss = _batch_loss(
                    model,
                    batch,
                    store,
                    text_cache,
                    logit_scale,
                    cfg.device,
                    cfg.reference_negatives,
                    corpus,
                    cfg.caption_weight,
                    scene,
                )
            (loss / cfg.accumulate).backward()
            if (micro + 1) % cfg.accumulate:
                continue
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * _lr_factor(step, cfg.warmup_steps, total_steps)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
            with (out / "train_log.jsonl").open("a") as fh:
                fh.write(
                    json.dumps({"step": step, "loss": loss.item(), "scale": logit_scale().item()})
                    + "\n"
                )
            bar.update(1)
            bar.set_postfix(loss=f"{running:.3f}", scale=f"{logit_scale().item():.1f}")
            elapsed = time.monotonic() - started
            if step % cfg.save_every == 0:
                save()
            if step >= total_steps or (cfg.max_minutes and elapsed > 60 * cfg.max_minutes):
                stop = step < total_steps
                break
        else:
            epoch += 1
    bar.close()
    if cfg.precise_bn:
        layers, images = recompute_on_images(
            model,
            store,
            list(data.paths),
            cfg.precise_bn,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            device=cfg.device,
        )
        log.info("recomputed %d BatchNorm layers' statistics on %d images", layers, images)
    save()
    model.eval()
    log.info(
        "stopped at step %d/%d after %.1f min (loss %.3f)%s",
        step,
        total_steps,
        elapsed / 60,
        running or float("nan"),
        " on the time budget" if stop else "",
    )
    return ckpt_dir


@dataclass
class _SceneLoss:
    labels: SceneLabels
    head: SceneHead
    weight: float
    token_head: CellTokenHead
    token_weight: float

    def parameters(self) -> list[nn.Parameter]:
        return [*self.head.parameters(), *self.token_head.parameters()]

    def __call__(
        self,
        batch: Batch,
        queries: torch.Tensor,
        references: torch.Tensor,
        candidates: torch.Tensor,
        candidate_names: list[str],
        candidate_tokens: torch.Tensor,
    ) -> torch.Tensor:
        """Every image embedding against its own scene, each query against its target's;
        the candidates' token grids against their own scenes, cell by cell."""
        loss = torch.zeros((), device=queries.device)
        if self.weight:
            embeds = torch.cat([queries, references, candidates])
            labels = self.labels(batch.targets + batch.references + candidate_names)
            loss = loss + self.weight * self.head.loss(embeds, labels)
        if self.token_weight:
            labels = self.labels(candidate_names)
            loss = loss + self.token_weight * self.token_head.loss(candidate_tokens, labels)
        return loss


def _batch_loss(
    model: CIRModel,
    batch: Batch,
    store: ImageStore,
    text_cache: _TextCache | None,
    logit_scale: LogitScale,
    device: str,
    reference_negatives: bool = False,
    corpus: dict[str, str] | None = None,
    caption_weight: float = 0.5,
    scene: _SceneLoss | None = None,
) -> torch.Tensor:
    def pixels(names: list[str]) -> torch.Tensor:
        return torch.from_numpy(store.pixels(names)).to(device)

    if text_cache is not None:
        text_states = [t.to(device) for t in text_cache(batch.captions)]
    else:
        text_states = model.encode_text_states(**model.tokenize(batch.captions))
    queries, references = model.compose(pixels(batch.references), *text_states)
    names = batch.targets + batch.negatives
    candidates, tokens = model.encode_image_states(pixels(names))
    extra = 0.0
    if scene is not None:
        finest = model.image_encoder.scale_tokens(tokens, 0)
        extra = scene(batch, queries, references, candidates, names, finest)
    if corpus is not None:
        texts = [corpus[n] for n in names]
        if text_cache is not None:
            captions = text_cache(texts)[0]
        else:
            captions = model.encode_text(**model.tokenize(texts))
        mixed = (1 - caption_weight) * candidates + caption_weight * captions
        candidates = torch.nn.functional.normalize(mixed, dim=-1)
    if reference_negatives:
        names = names + batch.references
        candidates = torch.cat([candidates, references])
    # The same image under another index is not a negative of this query.
    same = torch.tensor([[n == t for n in names] for t in batch.targets], device=device)
    same[torch.arange(len(batch.targets)), torch.arange(len(batch.targets))] = False
    return info_nce(queries, candidates, logit_scale(), false_negatives=same) + extra
