"""The four stages of the VLM's training, each a loss over a freshly drawn batch.

* **vision**: the vision tower learns to see every object. Random scenes of the benchmark's
  tier are drawn and rendered on the fly; the image is resized so that the tower's merged
  tokens fall one per grid cell, and a linear read-out (:class:`CellReader`) classifies each
  token's cell: empty or shape, colour, size (and texture in the hard tier), and which cell it
  is. Only the tower and the read-out learn.
* **caption**: image -> a dense factual description (the scene graph in words, RAR's caption
  recipe), the usual alignment stage of a VLM; next-token loss on the description.
* **compare**: reference + candidate -> what changed, cell by cell (an object added, removed,
  or become another), over the training split's image sets: the step between seeing one image
  and judging a pair, with dense supervision of exactly the comparison the judge must make.
* **judge**: reference image + modification (+ for a share of the batches, the reasoning
  path: what the reference shows, what the text asks, what the target must show) + candidate
  -> YES / NO, the reranker's exact prompt and answer position. Where the prompt carries the
  reasoning path, the model also learns to write it (``rationale_weight``): the rationale
  ``LVLMReranker.write_rationale`` writes once per query (CIR-CoT). Each query brings its target
  and ``group - 1`` negatives (hard ones: members of its image set one requested change away
  from the target, or the unchanged reference; easy ones: other queries' targets); the loss
  is cross-entropy on YES / NO plus a listwise one over the group. After the answer the
  model writes what changed from the reference to the candidate (``changes_weight``): the
  position that predicts the answer sits right before the one that must start that list, so
  the comparison the compare stage taught is kept where the answer is read.

After the vision stage the read-out stays on as an auxiliary loss (``reader_weight``), so
what the tower learned to see is not forgotten while the language model learns to speak.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from cir_module.data.benchmark import Tier, describe_changes, load_scene_graphs
from cir_module.data.reasoning import reasoning_path
from cir_module.eval.inprocess import EvalSplit
from cir_module.rerank.base import VisionLanguageScorer
from cir_module.rerank.verify import verify_row
from cir_module.training.scene_loss import SceneLabels, SceneVocabulary
from cir_module.vlm.changes import description_changes
from cir_module.vlm.prompt import COMPARE_PROMPT, DESCRIBE_PROMPT, REWRITE_PROMPT
from cir_module.vlm_training.config import StageConfig
from cir_module.vlm_training.mining import load_neighbours
from cir_module.vlm_training.reader import CellReader

__all__ = ["STAGE_LOSSES", "SceneStream", "StageLoss", "draw_group", "forward_with_vision"]

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


def _right_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
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
            self.metrics[f"read_{name}"] = _accuracy(part, labels[..., i])
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
        input_ids, mask = _right_pad(rows, self.tokenizer.pad_token_id)
        hidden, tokens = forward_with_vision(self.vlm, input_ids, mask, images)
        targets = input_ids[:, 1:].clone()
        for i, prompt in enumerate(prompts):
            targets[i, : len(prompt) - 1] = IGNORE  # the answer only
        targets[mask[:, 1:] == 0] = IGNORE
        logits = self.vlm.adapter.lm_head(self.vlm.model)(hidden[:, :-1])
        self.metrics["token_acc"] = _accuracy(logits, targets)
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
            self.metrics["edit_acc"] = _accuracy(logits[heavy], targets[heavy])
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


class CaptionStage(StageLoss):
    def loss(self) -> torch.Tensor:
        scenes, images = self.stream.draw(self.cfg.batch_size)
        answers = [self.tier.describe(s) for s in scenes]
        loss = self.answer_loss(DESCRIBE_PROMPT, answers, images, scenes)
        self.metrics["caption_loss"] = self.metrics.pop("words_loss")
        return loss


class CompareStage(StageLoss):
    """Reference and candidate -> what changed, cell by cell. The pairs are the training
    split's image sets: the reference against its target, a hard negative or itself, so the
    changes are the benchmark's edits and their near misses."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.split = EvalSplit.load(self.cfg.data, "train")
        self.scenes = load_scene_graphs(self.cfg.data, "train")

    def loss(self) -> torch.Tensor:
        answers, images, scenes = [], [], []
        for _ in range(self.cfg.batch_size):
            t = self.rng.choice(self.split.triplets)
            candidate = self.rng.choice([t.target, *t.subset])
            before, after = self.scenes[t.reference], self.scenes[candidate]
            answers.append(describe_changes(self.tier.describe, before, after))
            images += [self.split.open(t.reference), self.split.open(candidate)]
            scenes += [before, after]
        loss = self.answer_loss(COMPARE_PROMPT, answers, images, scenes)
        self.metrics["compare_loss"] = self.metrics.pop("words_loss")
        return loss


class JudgeStage(StageLoss):
    def __post_init__(self) -> None:
        super().__post_init__()
        self.split = EvalSplit.load(self.cfg.data, "train")
        self.scenes = load_scene_graphs(self.cfg.data, "train")
        prompt = self.vlm.prompt
        self.template = prompt.prefix + prompt.suffix
        self.answers = torch.tensor([self.vlm.yes_id, self.vlm.no_id])

    def _group(self, reasoned: bool) -> tuple[Any, str | None, list[str]]:
        """A query, its reasoning path (when ``reasoned``, else None) and its candidates,
        the target first."""
        t, candidates = draw_group(self.rng, self.split, self.cfg.group, self.cfg.easy_negatives)
        reasoning = reasoning_path(self.tier.describe, self.scenes, t) if reasoned else None
        return t, reasoning, candidates

    def _prompt(self, caption: str, reasoning: str | None) -> tuple[list[int], tuple[int, int]]:
        """The prompt's ids and the span of its reasoning tokens (empty without one): the
        rationale the model learns to write, as ``LVLMReranker.rationale`` generates it
        (from the head ending in the reasoning mark)."""
        prompt = self.vlm.prompt
        if reasoning is None:
            ids = self.vlm.codec.encode(self.template, text=caption)
            return ids, (0, 0)
        ids = self.vlm.codec.encode(self.template, text=prompt.with_reasoning(caption, reasoning))
        head = self.vlm.codec.encode(prompt.head, text=caption + prompt.reasoning_mark)
        body = self.tokenizer.encode(" " + reasoning)
        if ids[: len(head) + len(body)] != head + body:  # tokenised across the seam: no loss
            return ids, (0, 0)
        return ids, (len(head), len(head) + len(body))

    def _differs(self, target: Any, candidate: Any) -> list[bool]:
        """Per cell, whether the candidate shows something else there than the target."""
        want, have = ({o.cell: o for o in scene} for scene in (target, candidate))
        return [want.get(c) != have.get(c) for c in range(self.tier.grid_cells)]

    def match(self, input_ids: torch.Tensor, hidden: torch.Tensor, differs: list) -> torch.Tensor:
        """The read-out's loss on the language model's states at each candidate image's
        tokens (the row's last image; one token per cell): does the cell differ from what the
        target must show. Differing cells are rare (one or two of a row's cells), so they
        weigh as much as all the others together."""
        cells = self.tier.grid_cells
        slots = input_ids == self.vlm.codec.image_token_id
        at = torch.stack([row.nonzero().flatten()[-cells:] for row in slots])
        states = hidden[torch.arange(len(at))[:, None], at]  # rows x cells x hidden
        logits = self.reader.match(states).squeeze(-1)
        labels = torch.tensor(differs, dtype=logits.dtype)
        weight = (labels.numel() - labels.sum()).clamp(min=1) / labels.sum().clamp(min=1)
        loss = F.binary_cross_entropy_with_logits(logits, labels, pos_weight=weight)
        # Balanced accuracy (chance 0.5): the share of differing cells found and the share of
        # matching cells passed, averaged, so that "all differ" scores no better than chance.
        said, truth = logits > 0, labels.bool()
        found = said[truth].float().mean() if truth.any() else torch.tensor(1.0)
        passed = (~said[~truth]).float().mean() if (~truth).any() else torch.tensor(1.0)
        self.metrics["match_acc"] = ((found + passed) / 2).item()
        return loss

    def loss(self) -> torch.Tensor:
        cfg, tok = self.cfg, self.tokenizer
        rows, prompt_ends, labels, images, scenes, spans = [], [], [], [], [], []
        differs: list[list[bool]] = []  # per row and cell: the candidate is not the target there
        # A whole batch carries reasoning paths or none: rows with one are four times as
        # long, and a batch is padded to its longest row.
        reasoned = self.rng.random() < cfg.reasoning_share
        for _ in range(cfg.batch_size // cfg.group):
            t, reasoning, candidates = self._group(reasoned)
            prompt, span = self._prompt(t.caption, reasoning)
            reference = self.split.open(t.reference)  # once per query, shared by its rows
            for i, candidate in enumerate(candidates):
                label = 0 if candidate == t.target else 1  # index into (YES, NO)
                row = [*prompt, int(self.answers[label])]
                if cfg.changes_weight:
                    before, after = self.scenes[t.reference], self.scenes[candidate]
                    words = describe_changes(self.tier.describe, before, after)
                    row += [*tok.encode(" Changes: " + words), self.end]
                rows.append(row)
                prompt_ends.append(len(prompt) - 1)
                labels.append(label)
                spans.append(span if i == 0 else (0, 0))  # the rationale once per query
                images += [reference, self.split.open(candidate)]
                scenes += [self.scenes[t.reference], self.scenes[candidate]]
                if cfg.match_weight:
                    differs.append(self._differs(self.scenes[t.target], self.scenes[candidate]))
        input_ids, mask = _right_pad(rows, tok.pad_token_id)
        hidden, tokens = forward_with_vision(self.vlm, input_ids, mask, images)
        head = self.vlm.adapter.lm_head(self.vlm.model)
        at = torch.tensor(prompt_ends)
        logits = head(hidden[torch.arange(len(rows)), at])[:, self.answers]
        loss = self.judged(logits, labels)
        # Teacher-forced words: the rationale inside the prompt, the changes after the answer.
        position = torch.arange(input_ids.shape[1] - 1)[None]
        targets = input_ids[:, 1:].clone()
        start = torch.tensor([a for a, _ in spans])[:, None]
        end = torch.tensor([b for _, b in spans])[:, None]
        in_rationale = (position >= start - 1) & (position < end - 1)
        after_answer = (position > at[:, None]) & (mask[:, 1:] == 1)
        words = (in_rationale * cfg.rationale_weight + after_answer * cfg.changes_weight).float()
        if words.any():
            lm = head(hidden[:, :-1])
            token_loss = F.cross_entropy(lm.flatten(0, 1), targets.flatten(), reduction="none")
            loss = loss + (token_loss * words.flatten()).sum() / (words > 0).sum()
            if in_rationale.any():
                self.metrics["rationale_acc"] = _accuracy(lm[in_rationale], targets[in_rationale])
        loss = loss + cfg.reader_weight * self.read(tokens, scenes)
        if cfg.match_weight:
            loss = loss + cfg.match_weight * self.match(input_ids, hidden, differs)
        return loss


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
        cfg, describe, wording = self.cfg, self.tier.describe, self.cfg.change_wording
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
                description_changes(reference, describe(self.scenes[c]), wording=wording)
                for c in candidates
            ]
            asked = set(lists[0].split("; "))  # draw_group puts the target first
            for candidate, changes in zip(candidates, lists, strict=True):
                ids, marks = self.row(reference, t.caption, changes, asked)
                points += [(len(rows), at, ok) for at, ok in marks]
                rows.append(ids)
                labels.append(0 if candidate == t.target else 1)  # index into (YES, NO)
        input_ids, mask = _right_pad(rows, self.tokenizer.pad_token_id)
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


def _phrase_starts(text: str) -> list[tuple[int, int]]:
    """The character span of each ``"; "``-separated phrase of a description."""
    spans, start = [], 0
    for phrase in text.split("; "):
        spans.append((start, start + len(phrase)))
        start += len(phrase) + 2
    return spans


class RewriteStage(StageLoss):
    """A reference scene's description and a modification -> the target scene's description
    (text only; both descriptions from the training split's scene graphs). Each batch also
    captions ``rehearsal`` x ``batch_size`` fresh scenes, so the model still describes the
    images whose descriptions it will rewrite."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.split = EvalSplit.load(self.cfg.data, "train")
        self.scenes = load_scene_graphs(self.cfg.data, "train")

    def edit_weights(self, reference: str, target: str) -> list[float]:
        """A weight per token of ``target`` and its end: ``edit_weight`` on what copying the
        reference would get wrong (the tokens of phrases the reference lacks, the first token
        of every phrase: which object comes next, and the end), 1 elsewhere. Without it the
        model learns to copy the reference, right on most tokens, and never edits."""
        heavy = self.cfg.edit_weight
        old = set(reference.split("; "))
        encoded = self.tokenizer(target, return_offsets_mapping=True, add_special_tokens=False)
        spans = _phrase_starts(target)
        weights = []
        for begin, end in encoded["offset_mapping"]:
            if target[begin:end].startswith(" "):  # a word's token carries its space
                begin += 1
            phrase = next((s for s in spans if s[0] <= begin < s[1] + 2), spans[-1])
            new = target[phrase[0] : phrase[1]] not in old
            weights.append(heavy if new or begin == phrase[0] else 1.0)
        return [*weights, heavy]  # the end of the answer: when to stop

    def loss(self) -> torch.Tensor:
        describe, codec = self.tier.describe, self.vlm.codec
        prompts, answers, weights = [], [], []
        for _ in range(self.cfg.batch_size):
            t = self.rng.choice(self.split.triplets)
            reference = describe(self.scenes[t.reference])
            prompts.append(codec.encode(REWRITE_PROMPT, description=reference, text=t.caption))
            answers.append(describe(self.scenes[t.target]))
            weights.append(self.edit_weights(reference, answers[-1]))
        loss, _ = self.words_loss(prompts, answers, [], weights)
        self.metrics["rewrite_loss"] = loss.item()  # weighted: the edits count more
        self.metrics["rewrite_acc"] = self.metrics.pop("token_acc")
        return loss + self.rehearse()


STAGE_LOSSES: dict[str, type[StageLoss]] = {
    "vision": VisionStage,
    "caption": CaptionStage,
    "compare": CompareStage,
    "judge": JudgeStage,
    "rewrite": RewriteStage,
    "verify": VerifyStage,
}
