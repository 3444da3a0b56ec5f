"""The product's stages of the VLM's training, each a loss over a freshly drawn batch, and
the table of every stage's loss (:data:`STAGE_LOSSES`, which :func:`register_stage` extends).

* **vision**: the vision tower learns to see every object. Random scenes of the benchmark's
  tier are drawn and rendered on the fly; the image is resized so that the tower's merged
  tokens fall one per grid cell, and a linear read-out (:class:`CellReader`) classifies each
  token's cell: empty or shape, colour, size (and texture in the hard tier), and which cell it
  is. Only the tower and the read-out learn.
* **caption**: image -> a dense factual description (the scene graph in words, RAR's caption
  recipe), the usual alignment stage of a VLM; next-token loss on the description.
* **verify**: a description, a modification and what changed -> YES / NO
  (:class:`VerifyStage`), the change verifier's answer.

After the vision stage the read-out stays on as an auxiliary loss (``reader_weight``), so
what the tower learned to see is not forgotten while the language model learns to speak.

The research stages (compare, judge, rewrite: research/stages.py) register themselves here
with :func:`register_stage`; they share :class:`StageLoss` and its helpers
(:meth:`StageLoss.judged`, :func:`forward_with_vision`, :func:`draw_group`, :func:`right_pad`,
:func:`accuracy`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.nn.functional as F

from cir_module.data.benchmark import Tier, load_scene_graphs
from cir_module.eval.inprocess import EvalSplit
from cir_module.rerank.base import VisionLanguageScorer
from cir_module.rerank.verify import verify_row
from cir_module.training.scene_loss import SceneLabels, SceneVocabulary
from cir_module.vlm.changes import description_changes
from cir_module.vlm.prompt import DESCRIBE_PROMPT
from cir_module.vlm_training.config import STARTS_FROM, StageConfig, declare_stage
from cir_module.vlm_training.mining import load_neighbours
from cir_module.vlm_training.reader import CellReader

__all__ = [
    "IGNORE",
    "STAGE_LOSSES",
    "SceneStream",
    "StageLoss",
    "accuracy",
    "draw_group",
    "forward_with_vision",
    "register_stage",
    "right_pad",
]

IGNORE = -100


def forward_with_vision(
    vlm: VisionLanguageScorer, input_ids: torch.Tensor, mask: torch.Tensor, images: list
) -> tuple[torch.Tensor, torch.Tensor]:
    """The language model's last hidden states for a right-padded batch whose image slots
    take ``images`` in order, and the vision tower's tokens per image ``[images, tokens,
    hidden]`` (what the read-out classifies). The tower runs once for both; a text-only
    batch (no images) has no tower tokens (None)."""
    model = vlm.model
    embeds = model.model.get_input_embeddings()(input_ids)
    visual, grid = None, None
    if images:
        pixels, grid = vlm._pixels(images)
        visual = model.model.visual(pixels, grid_thw=grid)
        slots = (input_ids == vlm.codec.image_token_id).unsqueeze(-1).expand_as(embeds)
        embeds = embeds.masked_scatter(slots, visual.to(embeds.dtype))
        visual = visual.view(len(images), -1, visual.shape[-1])
    positions = vlm.adapter.rope_index(model, input_ids, grid)
    hidden = model.model.language_model(
        inputs_embeds=embeds, attention_mask=mask, position_ids=positions
    ).last_hidden_state
    return hidden, visual


def right_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    keep = labels != IGNORE
    return (logits.argmax(-1)[keep] == labels[keep]).float().mean().item() if keep.any() else 0.0


def draw_group(
    rng: random.Random,
    split: EvalSplit,
    group: int,
    easy_negatives: float,
    neighbours: dict[int, list[str]] | None = None,
    neighbour_negatives: float = 0.0,
) -> tuple[Any, list[str]]:
    """A training query and ``group`` candidates for it, the target first. Each negative is,
    with probability ``easy_negatives``, another query's target (easy); with probability
    ``neighbour_negatives``, one of the query's ``neighbours`` (the first stage's near misses,
    :mod:`cir_module.vlm_training.mining`); else a member of the query's image set one
    requested change away from the target, or the unchanged reference (hard). Easy ones fill
    in when the others run out."""
    t = rng.choice(split.triplets)
    hard = [m for m in t.subset if m not in (t.target, t.reference)] + [t.reference]
    near = list((neighbours or {}).get(t.pairid, ()))  # mined without the target
    rng.shuffle(hard)
    rng.shuffle(near)
    candidates = [t.target]
    while len(candidates) < group:
        draw = rng.random()
        pool = near if easy_negatives <= draw < easy_negatives + neighbour_negatives else hard
        if draw < easy_negatives or not pool:
            negative = rng.choice(split.triplets).target
        else:
            negative = pool.pop()
        if negative not in candidates:
            candidates.append(negative)
    return t, candidates


@dataclass
class SceneStream:
    """Random scenes of a tier, rendered on the fly (a fresh batch every step: the vision
    and caption stages never see an image twice). Its random state is checkpointed."""

    tier: Tier
    rng: random.Random

    def draw(self, n: int) -> tuple[list[Any], list[Any]]:
        scenes = [self.tier.random_scene(self.rng, 1, self.tier.max_objects) for _ in range(n)]
        return scenes, [self.tier.render(scene, self.rng) for scene in scenes]


@dataclass
class StageLoss:
    """One stage: which parameters learn (and at which rate), and the loss of a new batch."""

    cfg: StageConfig
    vlm: VisionLanguageScorer
    reader: CellReader
    tier: Tier
    rng: random.Random
    metrics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.vocabulary = SceneVocabulary.of(self.tier)
        self.stream = SceneStream(self.tier, self.rng)
        self.tokenizer = self.vlm.tokenizer
        self.end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")

    def parameter_groups(self) -> list[dict]:
        """The tower at ``vision_lr_scale`` of the rate, the rest (language model, read-out)
        at the full rate."""
        visual = list(self.vlm.model.model.visual.parameters())
        ids = {id(p) for p in visual}
        rest = [p for p in self.vlm.model.parameters() if id(p) not in ids]
        return [
            {"params": visual, "lr_scale": self.cfg.vision_lr_scale},
            {"params": rest + list(self.reader.parameters()), "lr_scale": 1.0},
        ]

    def read(self, tokens: torch.Tensor, scenes: list[Any]) -> torch.Tensor:
        """The read-out's loss on the tower's tokens of images whose scenes are ``scenes``:
        what lies under each token, and where it is."""
        labels = torch.stack([SceneLabels.encode(s, self.vocabulary) for s in scenes])
        what, where, logits = self.reader.losses(tokens, labels)
        sizes = self.vocabulary.class_sizes
        for (name, _), part, i in zip(
            self.vocabulary.attributes, logits.split(sizes, -1), range(len(sizes)), strict=True
        ):
            self.metrics[f"read_{name}"] = accuracy(part, labels[..., i])
        self.metrics["read_where"] = self.reader.where_accuracy(tokens)
        return what + where

    def words_loss(
        self,
        prompts: list[list[int]],
        answers: list[str],
        images: list,
        weights: list[list[float]] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Next-token loss on ``answers``, each written after its own prompt (whose image
        slots take ``images`` in order; none for text only), and the tower's tokens.
        ``weights``: per answer token (and its end), a weight in a weighted mean."""
        answer_ids = [[*self.tokenizer.encode(a), self.end] for a in answers]
        rows = [[*p, *a] for p, a in zip(prompts, answer_ids, strict=True)]
        input_ids, mask = right_pad(rows, self.tokenizer.pad_token_id)
        hidden, tokens = forward_with_vision(self.vlm, input_ids, mask, images)
        targets = input_ids[:, 1:].clone()
        for i, prompt in enumerate(prompts):
            targets[i, : len(prompt) - 1] = IGNORE  # the answer only
        targets[mask[:, 1:] == 0] = IGNORE
        logits = self.vlm.adapter.lm_head(self.vlm.model)(hidden[:, :-1])
        self.metrics["token_acc"] = accuracy(logits, targets)
        if weights is None:
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
            return loss, tokens
        weight = torch.zeros(targets.shape)
        for i, (prompt, w) in enumerate(zip(prompts, weights, strict=True)):
            if len(w) != len(answer_ids[i]):
                raise ValueError(f"{len(w)} weights for an answer of {len(answer_ids[i])} tokens")
            weight[i, len(prompt) - 1 : len(prompt) - 1 + len(w)] = torch.tensor(w)
        token_loss = F.cross_entropy(
            logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="none"
        )
        heavy = weight > 1
        if heavy.any():
            self.metrics["edit_acc"] = accuracy(logits[heavy], targets[heavy])
        return (token_loss * weight.flatten()).sum() / weight.sum(), tokens

    def answer_loss(
        self, template: str, answers: list[str], images: list, scenes: list
    ) -> torch.Tensor:
        """Next-token loss on ``answers`` written after the same ``template`` (its images
        ``images``, in order, whose scenes are ``scenes``), plus the read-out's loss."""
        prompt = self.vlm.codec.encode(template)
        words, tokens = self.words_loss([prompt] * len(answers), answers, images)
        self.metrics["words_loss"] = words.item()
        return words + self.cfg.reader_weight * self.read(tokens, scenes)

    def judged(self, logits: torch.Tensor, labels: list[int]) -> torch.Tensor:
        """The judge's two losses on (YES, NO) logits of rows in groups of ``group``, each
        group's target first (label 0: YES, 1: NO): cross-entropy on the answer, and a
        listwise one over each group's YES margins; logs answer and group accuracy."""
        labels_t = torch.tensor(labels)
        answer = F.cross_entropy(logits, labels_t)
        margin = (logits[:, 0] - logits[:, 1]).view(-1, self.cfg.group)
        first = torch.zeros(len(margin), dtype=torch.long)  # the target leads each group
        self.metrics |= {
            "answer_loss": answer.item(),
            "group_acc": (margin.argmax(-1) == 0).float().mean().item(),
            "answer_acc": (logits.argmax(-1) == labels_t).float().mean().item(),
        }
        return answer + F.cross_entropy(margin, first)

    def rehearse(self) -> torch.Tensor | float:
        """Captioning of ``rehearsal`` x ``batch_size`` fresh scenes (its loss, with the
        read-out's), so that a text-only stage keeps the model describing images; 0 when off."""
        rehearsed = round(self.cfg.rehearsal * self.cfg.batch_size)
        if not rehearsed:
            return 0.0
        scenes, images = self.stream.draw(rehearsed)
        captions = [self.tier.describe(scene) for scene in scenes]
        loss = self.answer_loss(DESCRIBE_PROMPT, captions, images, scenes)
        self.metrics["caption_loss"] = self.metrics.pop("words_loss")
        return loss

    def loss(self) -> torch.Tensor:
        raise NotImplementedError


S = TypeVar("S", bound=type[StageLoss])

# Each stage's loss class, by the stage's name, filled by :func:`register_stage`: the product's
# below, others by the module that defines them (research/stages.py).
STAGE_LOSSES: dict[str, type[StageLoss]] = {}


def register_stage(
    name: str, *, starts_from: tuple[str, ...] | None = None, feeds: tuple[str, ...] = ()
) -> Callable[[S], S]:
    """Class decorator: train the stage ``name`` with the decorated :class:`StageLoss`. A stage
    the configuration does not know yet is declared with it
    (:func:`~cir_module.vlm_training.config.declare_stage`): ``starts_from``, the stages whose
    folder it may start from (the usual one first), and ``feeds``, the stages that may start
    from its folder. The product's stages are declared in the configuration, which needs no
    torch, so they are registered by name alone."""

    def register(cls: S) -> S:
        if starts_from is not None:
            declare_stage(name, starts_from=starts_from, feeds=feeds)
        elif name not in STARTS_FROM:
            raise ValueError(f"stage {name!r} is not declared: say what it starts_from")
        STAGE_LOSSES[name] = cls
        return cls

    return register


@register_stage("vision")
class VisionStage(StageLoss):
    def parameter_groups(self) -> list[dict]:
        visual = list(self.vlm.model.model.visual.parameters())
        return [{"params": visual + list(self.reader.parameters()), "lr_scale": 1.0}]

    def loss(self) -> torch.Tensor:
        scenes, images = self.stream.draw(self.cfg.batch_size)
        pixels, grid = self.vlm._pixels(images)
        visual = self.vlm.model.model.visual(pixels, grid_thw=grid)
        loss = self.read(visual.view(len(images), -1, visual.shape[-1]), scenes)
        self.metrics["read_loss"] = loss.item()
        return loss


@register_stage("caption")
class CaptionStage(StageLoss):
    def loss(self) -> torch.Tensor:
        scenes, images = self.stream.draw(self.cfg.batch_size)
        answers = [self.tier.describe(s) for s in scenes]
        loss = self.answer_loss(DESCRIBE_PROMPT, answers, images, scenes)
        self.metrics["caption_loss"] = self.metrics.pop("words_loss")
        return loss


@register_stage("verify")
class VerifyStage(StageLoss):
    """Text only: the reference scene's description, the modification and what changed from
    the reference to a candidate (``description_changes`` of the two descriptions) -> YES /
    NO, the answer of :class:`~cir_module.rerank.verify.ChangeVerifyingReranker`. Groups as
    the judge's (the target, hard and easy negatives), the same two losses: cross-entropy on
    YES / NO and a listwise one over the group. With ``asked_weight`` the model also answers,
    at the last token of each change in the list, whether the modification asks for that
    change (it is among the target's changes): a near miss differs from the target in one
    change of several, and this says which. The descriptions are the training split's scene
    graphs in words; at serving time they are the model's own captions, so each batch also
    rehearses captioning (``rehearsal``), as the rewrite stage does."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.split = EvalSplit.load(self.cfg.data, "train")
        self.scenes = load_scene_graphs(self.cfg.data, "train")
        self.answers = torch.tensor([self.vlm.yes_id, self.vlm.no_id])
        self.neighbours = load_neighbours(self.cfg.neighbours) if self.cfg.neighbours else None

    def row(self, reference: str, text: str, changes: str, asked: set[str]) -> tuple:
        """A prompt's ids, and for each of its changes (not "nothing changed" or the "and N
        more" tail) the position of the change's last token and whether it is asked for."""
        ids, ends = verify_row(self.tokenizer, reference, text, changes)
        return ids, [(at, change in asked) for at, change in ends]

    def loss(self) -> torch.Tensor:
        cfg, describe, differ = self.cfg, self.tier.describe, self.cfg.differ
        rows, labels, points = [], [], []
        for _ in range(cfg.batch_size // cfg.group):
            t, candidates = draw_group(
                self.rng,
                self.split,
                cfg.group,
                cfg.easy_negatives,
                self.neighbours,
                cfg.neighbour_negatives,
            )
            reference = describe(self.scenes[t.reference])
            lists = [
                description_changes(reference, describe(self.scenes[c]), differ=differ)
                for c in candidates
            ]
            asked = set(lists[0].split("; "))  # draw_group puts the target first
            for candidate, changes in zip(candidates, lists, strict=True):
                ids, marks = self.row(reference, t.caption, changes, asked)
                points += [(len(rows), at, ok) for at, ok in marks]
                rows.append(ids)
                labels.append(0 if candidate == t.target else 1)  # index into (YES, NO)
        input_ids, mask = right_pad(rows, self.tokenizer.pad_token_id)
        hidden, _ = forward_with_vision(self.vlm, input_ids, mask, [])
        at = torch.tensor([len(r) - 1 for r in rows])
        head = self.vlm.adapter.lm_head(self.vlm.model)
        logits = head(hidden[torch.arange(len(rows)), at])[:, self.answers]
        loss = self.judged(logits, labels)
        if cfg.asked_weight and points:
            loss = loss + cfg.asked_weight * self.asked(hidden, head, points)
        return loss + self.rehearse()

    def asked(self, hidden: torch.Tensor, head, points: list[tuple[int, int, bool]]):
        """The per-change read-out's loss: YES / NO at each change's last token. Changes
        nobody asked for are rare (one in a near miss's list), so the two classes weigh
        alike; ``asked_acc`` is the balanced accuracy."""
        row, at, ok = (torch.tensor(v) for v in zip(*points, strict=True))
        logits = head(hidden[row, at])[:, self.answers]
        labels = (~ok).long()  # index into (YES, NO)
        counts = torch.bincount(labels, minlength=2).clamp(min=1).float()
        loss = F.cross_entropy(logits, labels, weight=counts.sum() / (2 * counts))
        said = logits.argmax(-1)
        per_class = [(said[labels == c] == c).float().mean() for c in (0, 1) if (labels == c).any()]
        self.metrics["asked_acc"] = torch.stack(per_class).mean().item()
        return loss
