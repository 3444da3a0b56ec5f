"""The research stages of the VLM's training (``python -m research.cli vlm-train --stage
compare|judge|rewrite``), registered with the package's stages
(:func:`cir_module.vlm_training.stages.register_stage`) when this module is imported. They
share the product's loop, folder layout and :class:`~cir_module.vlm_training.stages.StageLoss`;
their results were negative or superseded (docs/results.md, "The staged VLM and the image
judge"). A chain vision -> caption -> compare -> judge (the P(YES) reranker), and a branch
caption -> rewrite (the text step of describe-and-verify reranking).

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
* **rewrite**: a reference scene's description and a modification -> the target scene's
  description (text only), served as describe-and-verify (:mod:`research.describe`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from cir_module.data.benchmark import describe_changes, load_scene_graphs
from cir_module.data.reasoning import reasoning_path
from cir_module.eval.inprocess import EvalSplit
from cir_module.vlm.prompt import COMPARE_PROMPT, REWRITE_PROMPT
from cir_module.vlm_training.stages import (
    StageLoss,
    accuracy,
    draw_group,
    forward_with_vision,
    register_stage,
    right_pad,
)

__all__ = ["CompareStage", "JudgeStage", "RewriteStage"]


@register_stage("compare", starts_from=("caption",))
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


# The judge may also start straight from caption: the compare stage forgets captions, and a
# judge shown the reasoning path verifies a description.
@register_stage("judge", starts_from=("compare", "caption"))
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
        input_ids, mask = right_pad(rows, tok.pad_token_id)
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
                self.metrics["rationale_acc"] = accuracy(lm[in_rationale], targets[in_rationale])
        loss = loss + cfg.reader_weight * self.read(tokens, scenes)
        if cfg.match_weight:
            loss = loss + cfg.match_weight * self.match(input_ids, hidden, differs)
        return loss


def _phrase_starts(text: str) -> list[tuple[int, int]]:
    """The character span of each ``"; "``-separated phrase of a description."""
    spans, start = [], 0
    for phrase in text.split("; "):
        spans.append((start, start + len(phrase)))
        start += len(phrase) + 2
    return spans


# The rewrite stage branches off caption (the model keeps captioning), and a verify stage may
# start from its folder.
@register_stage("rewrite", starts_from=("caption",), feeds=("verify",))
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
