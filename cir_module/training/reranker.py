"""A small reranker of the Qwen2-VL architecture, trained from scratch on the synthetic
benchmark to answer YES / NO, and the template reasoning paths its RAug-Rep come from.

Each example is (reference, modification, candidate): the target (YES), or a negative (NO):
another query's target, or a hard one (a member of the query's image set one edit away from
the target, or the unchanged reference). The loss is cross-entropy over the two answer tokens
at the end of the prompt, exactly the quantity the scorer reads, plus a language-modelling
loss on a description of both images written after the answer (teacher-forced). A model
trained from scratch on the YES / NO bit alone sat at chance for hundreds of steps: one bit
per example is too little signal to teach the vision tower what is where. The descriptions
are dense supervision of exactly that, the usual captioning stage of a VLM recipe. They come
after the answer, so the answer position never sees them (causal attention) and scoring is
unchanged.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from cir_module.data.benchmark import load_scene_graphs, tier_of
from cir_module.data.reasoning import describe_pair, reasoning_path
from cir_module.eval.inprocess import EvalSplit
from cir_module.rerank.scorer import RERANKER_SETTINGS, LVLMReranker
from cir_module.rerank.tiny import build_tiny_reranker
from cir_module.training.schedule import warmup_cosine

__all__ = ["RerankTrainConfig", "reasoning_pairs", "reasoning_records", "train_reranker"]

log = logging.getLogger(__name__)


@dataclass
class RerankTrainConfig:
    data: str
    out: str
    steps: int = 1500
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 50
    seed: int = 0
    hidden: int = 128
    layers: int = 4
    vision_depth: int = 2
    image_side: int = 84  # 6 x 6 patches of 14, merged to 3 x 3: one token per grid cell
    easy_negatives: float = 0.5  # share of negatives drawn from other queries' targets
    describe_weight: float = 0.5  # weight of the description loss (0: the answer alone)
    # Candidates per query, scored together: the target and group - 1 negatives, with a
    # listwise loss (softmax over the group of logit YES - logit NO) beside the YES / NO one.
    # 1: independent (reference, text, candidate) examples, half of them positive.
    group: int = 4
    max_minutes: float | None = None


def reasoning_records(
    root: str | Path, split: str = "train", limit: int = 256, seed: int = 0
) -> list[dict[str, str]]:
    """Reasoning paths from the benchmark's scene graphs (what the reference shows, what the
    text changes, what the target must show), each with its question (the text-only form of
    RAug-Rep extraction), and its reference image and modification (the prompt form)."""
    root = Path(root)
    scenes = load_scene_graphs(root, split)
    describe = tier_of(root).describe
    data = EvalSplit.load(root, split)
    rng = random.Random(seed)
    records = []
    for t in rng.sample(data.triplets, min(limit, len(data.triplets))):
        records.append(
            {
                "question": f"Modification: {t.caption}. Is the candidate the reference changed "
                "as asked?",
                "reasoning": reasoning_path(describe, scenes, t),
                "text": t.caption,
                "reference": str(data.image_path(t.reference)),
            }
        )
    return records


def reasoning_pairs(
    root: str | Path, split: str = "train", limit: int = 256, seed: int = 0
) -> list[tuple[str, str]]:
    """(question, reasoning) pairs of :func:`reasoning_records`."""
    return [(r["question"], r["reasoning"]) for r in reasoning_records(root, split, limit, seed)]


def _examples(split: EvalSplit, rng: random.Random, n: int, easy: float):
    """``n`` (reference, caption, candidate, is_target) tuples, half positives. A negative is
    another query's target with probability ``easy``; otherwise a hard one: a member of the
    query's image set one edit away from the target, or the unchanged reference."""
    out = []
    for _ in range(n):
        t = rng.choice(split.triplets)
        if rng.random() < 0.5:
            out.append((t.reference, t.caption, t.target, True))
            continue
        others = [m for m in t.subset if m not in (t.target, t.reference)]
        if rng.random() < easy:
            negative = rng.choice(split.triplets).target
        elif others and rng.random() < 0.75:
            negative = rng.choice(others)
        else:
            negative = t.reference
        out.append((t.reference, t.caption, negative, negative == t.target))
    return out


def _groups(split: EvalSplit, rng: random.Random, n: int, size: int, easy: float):
    """``n`` // ``size`` queries, each with its target first and ``size`` - 1 negatives (one
    other query's target with probability ``easy`` each, otherwise a hard one)."""
    out = []
    for _ in range(n // size):
        t = rng.choice(split.triplets)
        hard = [m for m in t.subset if m not in (t.target, t.reference)] + [t.reference]
        rng.shuffle(hard)
        out.append((t.reference, t.caption, t.target, True))
        for _ in range(size - 1):
            if rng.random() < easy or not hard:
                negative = rng.choice(split.triplets).target
            else:
                negative = hard.pop()
            out.append((t.reference, t.caption, negative, negative == t.target))
    return out


def train_reranker(cfg: RerankTrainConfig) -> Path:
    """Train and save the reranker to ``cfg.out``/model; returns that folder."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    split = EvalSplit.load(cfg.data, "train")
    scenes = load_scene_graphs(cfg.data, "train")
    corpus = [t.caption for t in split.triplets[:4000]]
    describe = tier_of(cfg.data).describe
    corpus += [
        describe_pair(describe, scenes, t.reference, t.target) for t in split.triplets[:2000]
    ]
    corpus += [q + " " + r for q, r in reasoning_pairs(cfg.data, limit=500, seed=cfg.seed + 1)]
    folder = build_tiny_reranker(
        out / "model",
        corpus,
        hidden=cfg.hidden,
        layers=cfg.layers,
        heads=4,
        vision_depth=cfg.vision_depth,
        vision_width=64,
        vocab_size=1024,
        seed=cfg.seed,
    )
    reranker = LVLMReranker.from_pretrained(folder, image_side=cfg.image_side)
    model, tok = reranker.model.train(), reranker.tokenizer
    pad = tok.pad_token_id
    template = reranker.prompt.prefix + reranker.prompt.suffix
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: warmup_cosine(s, cfg.warmup_steps, cfg.steps, cosine_from_start=True),
    )
    answers = torch.tensor([reranker.yes_id, reranker.no_id])
    end = tok.convert_tokens_to_ids("<|im_end|>")
    start, log_file = time.time(), (out / "train_log.jsonl").open("w", buffering=1)
    quiet = not log.isEnabledFor(logging.INFO)
    bar = tqdm(range(cfg.steps), desc="rerank train", disable=quiet)
    for step in bar:
        if cfg.group > 1:
            batch = _groups(split, rng, cfg.batch_size, cfg.group, cfg.easy_negatives)
        else:
            batch = _examples(split, rng, cfg.batch_size, cfg.easy_negatives)
        prompts = [reranker._encode(template, text=caption) for _, caption, _, _ in batch]
        labels = torch.tensor([0 if positive else 1 for *_, positive in batch])
        rows = [
            [*p, int(answers[label]), *tok.encode(describe_pair(describe, scenes, ref, cand)), end]
            for p, label, (ref, _, cand, _) in zip(prompts, labels.tolist(), batch, strict=True)
        ]
        width = max(map(len, rows))
        # Right padding; the answer is read at each prompt's last position.
        input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        images = [split.open(name) for ref, _, cand, _ in batch for name in (ref, cand)]
        pixels, grid = reranker._pixels(images)
        hidden = model.model(
            input_ids=input_ids, attention_mask=mask, pixel_values=pixels, image_grid_thw=grid
        ).last_hidden_state
        at_answer = torch.tensor([len(p) - 1 for p in prompts])
        logits = model.lm_head(hidden[torch.arange(len(rows)), at_answer])[:, answers]
        answer_loss = torch.nn.functional.cross_entropy(logits, labels)
        loss = answer_loss
        if cfg.group > 1:
            margin = (logits[:, 0] - logits[:, 1]).view(-1, cfg.group)
            first = torch.zeros(len(margin), dtype=torch.long)  # the target leads each group
            listwise = torch.nn.functional.cross_entropy(margin, first)
            loss = loss + listwise
        if cfg.describe_weight:
            # Next-token loss on the description only (after the answer token).
            targets = input_ids[:, 1:].clone()
            position = torch.arange(width - 1)[None]
            targets[(position <= at_answer[:, None]) | (mask[:, 1:] == 0)] = -100
            lm_logits = model.lm_head(hidden[:, :-1])
            words_loss = torch.nn.functional.cross_entropy(
                lm_logits.flatten(0, 1), targets.flatten(), ignore_index=-100
            )
            loss = loss + cfg.describe_weight * words_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if cfg.group > 1:  # how often the target scores highest in its group
            accuracy = (margin.argmax(-1) == 0).float().mean().item()
        else:
            accuracy = (logits.argmax(-1) == labels).float().mean().item()
        bar.set_postfix(answer=f"{answer_loss.item():.3f}", acc=f"{accuracy:.2f}")
        record = {"step": step, "loss": loss.item(), "answer_loss": answer_loss.item()}
        log_file.write(json.dumps({**record, "acc": accuracy}) + "\n")
        if cfg.max_minutes and time.time() - start > 60 * cfg.max_minutes:
            log.info("time budget reached at step %d", step + 1)
            break
    log_file.close()
    model.eval().save_pretrained(folder)
    (folder / RERANKER_SETTINGS).write_text(json.dumps({"image_side": cfg.image_side}))
    log.info("reranker trained in %.1f min -> %s", (time.time() - start) / 60, folder)
    return folder
