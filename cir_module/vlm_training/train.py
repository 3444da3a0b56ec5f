"""One stage of the VLM's training as a resumable run (``cir vlm train --stage ...``).

A stage's folder holds:

* ``model/``: the checkpoint, a Qwen2-VL folder that loads through the same
  ``from_pretrained`` path and family adapter as a real one (``LVLMReranker.from_pretrained``);
* ``reader.pt``: the vision stage's cell read-out, what and where (a training aid, not part of
  the model);
* ``state.pt``: step, optimizer, schedule and random states, written every
  ``checkpoint_every`` steps and when the time budget ends the run;
* ``stage.json``: the configuration and whether the stage is complete;
* ``train_log.jsonl``: one line of losses and accuracies per step.

Running the same command again resumes from ``state.pt``; a stopped session loses at most
``checkpoint_every`` steps. The vision stage builds the model (its tokenizer trained on the
benchmark's texts); every later stage starts from a copy of the folder of the stage it follows
(``STARTS_FROM``), which must be complete. The rewrite stage's folder is marked to be served
as a describe-and-verify reranker.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from cir_module.data.benchmark import Tier, describe_changes, load_scene_graphs, tier_of
from cir_module.data.reasoning import reasoning_path
from cir_module.eval.inprocess import EvalSplit
from cir_module.rerank.base import VisionLanguageScorer
from cir_module.rerank.load import load_reranker
from cir_module.rerank.prompt import RerankPrompt
from cir_module.rerank.scorer import RERANKER_SETTINGS
from cir_module.rerank.tiny import build_tiny_reranker
from cir_module.training.scene_loss import SceneVocabulary
from cir_module.training.schedule import warmup_cosine
from cir_module.vlm.family import saved_settings
from cir_module.vlm.prompt import COMPARE_PROMPT, DESCRIBE_PROMPT, REWRITE_PROMPT
from cir_module.vlm_training.config import STARTS_FROM, StageConfig
from cir_module.vlm_training.reader import CellReader
from cir_module.vlm_training.stages import STAGE_LOSSES

__all__ = [
    "MODEL",
    "READER",
    "StageResult",
    "image_side_for",
    "load_stage",
    "read_stage",
    "train_stage",
]

log = logging.getLogger(__name__)

MODEL, READER, STATE, STAGE_FILE, LOG = (
    "model",
    "reader.pt",
    "state.pt",
    "stage.json",
    "train_log.jsonl",
)
PATCH_MERGED = 28  # pixels under one merged token (14-pixel patches, merged 2 x 2)


@dataclass(frozen=True)
class StageResult:
    folder: Path  # the stage's model folder
    step: int  # optimizer steps done
    complete: bool


def image_side_for(tier: Tier) -> int:
    """The image side at which the tower's merged tokens fall one per grid cell."""
    return PATCH_MERGED * math.isqrt(tier.grid_cells)


def tokenizer_corpus(data: str, tier: Tier, seed: int) -> list[str]:
    """Every kind of text the stages feed the model: modification texts, scene
    descriptions, reasoning paths and the captioning prompt."""
    split = EvalSplit.load(data, "train")
    scenes = load_scene_graphs(data, "train")
    rng = random.Random(seed)
    corpus = [t.caption for t in split.triplets[:4000]]
    corpus += [tier.describe(tier.random_scene(rng, 1, tier.max_objects)) for _ in range(2000)]
    corpus += [
        RerankPrompt().with_reasoning(t.caption, reasoning_path(tier.describe, scenes, t))
        for t in split.triplets[:500]
    ]
    corpus += [
        describe_changes(tier.describe, scenes[t.reference], scenes[member])
        for t in split.triplets[:500]
        for member in t.subset
    ]
    prompts = (DESCRIBE_PROMPT, COMPARE_PROMPT, REWRITE_PROMPT)
    return corpus + [
        prompt.replace("{image}", " ").format(description=" ", text=" ") for prompt in prompts
    ]


def read_stage(folder: str | Path) -> dict:
    """A stage folder's ``stage.json`` (empty when there is none)."""
    path = Path(folder) / STAGE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def prepare_folder(cfg: StageConfig, tier: Tier, out: Path) -> None:
    """The model folder this stage trains: built (vision) or copied from the previous stage."""
    folder = out / MODEL
    if folder.exists():
        shutil.rmtree(folder)
    if cfg.stage == "vision":
        build_tiny_reranker(
            folder,
            tokenizer_corpus(cfg.data, tier, cfg.seed),
            hidden=cfg.hidden,
            layers=cfg.layers,
            heads=cfg.heads,
            vision_depth=cfg.vision_depth,
            vision_width=cfg.vision_width,
            vision_heads=max(1, cfg.vision_width // 64),
            vocab_size=cfg.vocab_size,
            seed=cfg.seed,
        )
        (folder / RERANKER_SETTINGS).write_text(json.dumps({"image_side": image_side_for(tier)}))
        return
    init = Path(cfg.init)
    allowed = STARTS_FROM[cfg.stage]
    stage = read_stage(init)
    if stage.get("stage") not in allowed or not stage.get("complete"):
        raise ValueError(
            f"{init} is not a complete {' or '.join(allowed)} stage (stage.json: "
            f"{stage or 'missing'}); run or resume `cir vlm train --stage {allowed[0]}` first"
        )
    shutil.copytree(init / MODEL, folder)
    shutil.copy2(init / READER, out / READER)
    _mark_served(cfg, folder)


def _mark_served(cfg: StageConfig, folder: Path) -> None:
    """Say in the model folder's ``cir_reranker.json`` how a rewrite or verify stage is served:
    as a describe-and-verify (research/describe.py) or change-verifying (rerank/verify.py)
    reranker, the latter with its differ and, when it was trained with the per-change
    read-out, that read-out in its score. Written at every checkpoint: a resumed run may turn
    the read-out on."""
    served = {"rewrite": "describe", "verify": "changes"}.get(cfg.stage)
    if not served:
        return
    settings = {**saved_settings(folder), "verify": served}
    if cfg.stage == "verify":
        settings["differ"] = cfg.differ
        settings.pop("change_wording", None)  # a folder started from one before differs
        settings["asked_readout"] = cfg.asked_weight > 0
    (folder / RERANKER_SETTINGS).write_text(json.dumps(settings))


def load_stage(
    folder: str | Path, *, served: bool = False
) -> tuple[VisionLanguageScorer, CellReader, Tier]:
    """A stage folder's model, its cell read-out and the tier it was trained on. The model
    is what training needs (the network and its prompt codec) unless ``served``: then it is
    the reranker the folder records (:func:`~cir_module.rerank.load.load_reranker`)."""
    folder = Path(folder)
    tier = tier_of(read_stage(folder)["config"]["data"])
    if served:
        vlm = load_reranker(folder / MODEL)
    else:
        side = saved_settings(folder / MODEL).get("image_side")
        vlm = VisionLanguageScorer.from_pretrained(
            folder / MODEL, saved=False, **({"image_side": side} if side else {})
        )
    reader = CellReader(vlm.model.config.text_config.hidden_size, SceneVocabulary.of(tier))
    if (folder / READER).is_file():
        reader.load_state_dict(torch.load(folder / READER, weights_only=True))
    return vlm, reader, tier


def _save(out: Path, vlm, reader, optimizer, schedule, rng, step: int, cfg, done: bool) -> None:
    state = {
        "step": step,
        "model": vlm.model.state_dict(),
        "reader": reader.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "rng": rng.getstate(),
        "torch_rng": torch.get_rng_state(),
    }
    tmp = out / (STATE + ".tmp")
    torch.save(state, tmp)
    tmp.replace(out / STATE)  # atomic: a run killed while saving keeps the last good state
    vlm.model.save_pretrained(out / MODEL)
    _mark_served(cfg, out / MODEL)
    torch.save(reader.state_dict(), out / READER)
    record = {"stage": cfg.stage, "config": asdict(cfg), "step": step, "complete": done}
    (out / STAGE_FILE).write_text(json.dumps(record, indent=2))


def _truncate_log(path: Path, step: int) -> None:
    """Drop the log lines of steps after the checkpoint a run resumes from: they are run
    again, and the log keeps one line per step."""
    if path.is_file():
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(x for x in lines if json.loads(x)["step"] <= step))


def train_stage(cfg: StageConfig) -> StageResult:
    """Run (or resume) one stage until ``cfg.steps`` or ``cfg.max_minutes``."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    tier = tier_of(cfg.data)
    previous = read_stage(out)
    resuming = (out / STATE).is_file()
    if resuming and previous.get("stage") != cfg.stage:
        raise ValueError(f"{out} holds the {previous.get('stage')} stage, not {cfg.stage}")
    if not resuming:
        prepare_folder(cfg, tier, out)
        (out / STAGE_FILE).write_text(json.dumps({"stage": cfg.stage, "config": asdict(cfg)}))
    vlm, reader, _ = load_stage(out)
    if vlm.codec.image_tokens != tier.grid_cells:
        raise ValueError(
            f"the model sees {vlm.codec.image_tokens} tokens per image, the tier has "
            f"{tier.grid_cells} cells (image side {vlm.image_side}, expected "
            f"{image_side_for(tier)})"
        )
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    vlm.model.train()
    stage = STAGE_LOSSES[cfg.stage](cfg, vlm, reader, tier, rng)
    groups = stage.parameter_groups()
    optimizer = torch.optim.AdamW(
        [{"params": g["params"], "lr": cfg.lr * g["lr_scale"]} for g in groups],
        weight_decay=0.01,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, cfg.warmup_steps, cfg.steps)
    )
    step = 0
    if resuming:
        state = torch.load(out / STATE, weights_only=False)
        vlm.model.load_state_dict(state["model"])
        reader.load_state_dict(state["reader"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        step = state["step"]
        _truncate_log(out / LOG, step)
        log.info("resuming the %s stage at step %d of %d", cfg.stage, step, cfg.steps)
    start = time.time()
    trainable = [p for g in groups for p in g["params"]]
    quiet = not log.isEnabledFor(logging.INFO)
    with (out / LOG).open("a", buffering=1) as log_file:
        bar = tqdm(total=cfg.steps, initial=step, desc=f"vlm {cfg.stage}", disable=quiet)
        while step < cfg.steps:
            stage.metrics.clear()  # a metric a batch does not compute is not logged stale
            loss = stage.loss()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            record = {"step": step, "loss": round(loss.item(), 5)}
            record |= {k: round(v, 4) for k, v in stage.metrics.items()}
            log_file.write(json.dumps(record) + "\n")
            bar.update(1)
            bar.set_postfix({k: v for k, v in record.items() if k.endswith("acc")})
            out_of_time = cfg.max_minutes and time.time() - start > 60 * cfg.max_minutes
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or out_of_time:
                _save(out, vlm, reader, optimizer, schedule, rng, step, cfg, step == cfg.steps)
            if out_of_time:
                log.info("time budget reached at step %d; the same command resumes", step)
                break
        bar.close()
    if step >= cfg.steps and not read_stage(out).get("complete"):
        # Resumed with --steps at or below the step reached: the stage ends where it stands.
        _save(out, vlm, reader, optimizer, schedule, rng, step, cfg, True)
    vlm.model.eval()
    return StageResult(out / MODEL, step, step >= cfg.steps)
