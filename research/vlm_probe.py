"""What a stage's model can do, on scenes it never saw (``python -m research.cli vlm-probe``).

* cells read: the read-out's per-attribute accuracy over every cell of fresh rendered scenes,
  the share of images read entirely right, and how often a token's cell index is read right;
* captions written (every stage after vision): greedy descriptions of fresh scenes, compared
  with the scene graph object by object;
* changes written (compare and judge stages): greedy change lists for reference / image-set
  member pairs of a benchmark split, compared with the scene graphs';
* target descriptions written (rewrite stage): from the reference's true description, and
  from the reference image through the model's own caption; and the rewrite as a choice
  (which true description it finds likeliest, teacher-forced);
* the verifier as a choice (verify stage): P(YES) on the true descriptions' change lists;
* judgements (judge, rewrite and verify stages): on a benchmark split, how often the
  reranker's score (P(YES), describe-and-verify's, or change verification's) ranks the
  target first among the target, its hard negatives and the unchanged reference;
* rationales (rewrite stage, ``rationales`` queries): how often the written rationale's
  conclusion agrees with the scene graphs (:func:`rationale_agreement`).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from cir_module.data.benchmark import describe_changes, load_edit_ops, load_scene_graphs
from cir_module.eval.inprocess import EvalSplit
from cir_module.eval.rerank_sweep import query_prefixes
from cir_module.training.scene_loss import SceneLabels, SceneVocabulary
from cir_module.vlm.prompt import COMPARE_PROMPT, DESCRIBE_PROMPT, REWRITE_PROMPT
from cir_module.vlm_training.stages import SceneStream
from cir_module.vlm_training.train import load_stage, read_stage

# A rewrite stage's folder is served as describe-and-verify: importing it registers the kind.
from research import describe as _describe  # noqa: F401

__all__ = ["probe_stage", "rationale_agreement"]


@torch.inference_mode()
def _cells(vlm, reader, tier, stream: SceneStream, n: int) -> dict[str, float]:
    vocabulary = SceneVocabulary.of(tier)
    scenes, images = stream.draw(n)
    pixels, grid = vlm._pixels(images)
    tokens = vlm.model.model.visual(pixels, grid_thw=grid)
    tokens = tokens.view(n, -1, tokens.shape[-1])
    logits = reader.what.logits(tokens)
    labels = torch.stack([SceneLabels.encode(s, vocabulary) for s in scenes])
    out, whole = {}, torch.ones(n, dtype=torch.bool)
    for i, ((name, _), part) in enumerate(
        zip(vocabulary.attributes, logits.split(vocabulary.class_sizes, -1), strict=True)
    ):
        keep = labels[..., i] != -100
        right = part.argmax(-1) == labels[..., i]
        out[f"cells_{name}"] = right[keep].float().mean().item()
        whole &= (right | ~keep).all(-1)
    out["images_read_right"] = whole.float().mean().item()
    out["cells_where"] = reader.where_accuracy(tokens)
    return out


@torch.inference_mode()
def _captions(vlm, tier, stream: SceneStream, n: int, max_new_tokens: int = 200) -> dict:
    scenes, images = stream.draw(n)
    texts = vlm.generate(DESCRIBE_PROMPT, images, max_new_tokens)
    exact, objects, found = 0, 0, 0
    for scene, text in zip(scenes, texts, strict=True):
        truth = tier.describe(scene)
        exact += text.strip() == truth
        said = {part.strip() for part in text.split(";")}
        parts = [part.strip() for part in truth.split(";")]
        objects += len(parts)
        found += sum(part in said for part in parts)
    return {
        "captions_exact": exact / n,
        "caption_objects_right": found / max(objects, 1),
        "caption_example": texts[0],
        "caption_truth": tier.describe(scenes[0]),
    }


@torch.inference_mode()
def _changes(vlm, tier, data: str, split: str, n: int, max_new_tokens: int = 120) -> dict:
    """Greedy change lists for (reference, member of its image set) pairs of a split,
    compared with the scene graphs' exactly."""
    evaluation = EvalSplit.load(data, split, limit=n)
    scenes = load_scene_graphs(data, split)
    exact = 0
    for i, t in enumerate(evaluation.triplets):
        candidate = [t.target, *t.subset][i % (1 + len(t.subset))]
        images = [evaluation.open(t.reference), evaluation.open(candidate)]
        said = vlm.generate(COMPARE_PROMPT, images, max_new_tokens)[0].strip()
        exact += said == describe_changes(tier.describe, scenes[t.reference], scenes[candidate])
    return {f"changes_exact_{split}": exact / max(len(evaluation.triplets), 1)}


def _written(vlm, evaluation: EvalSplit) -> tuple[list, list]:
    """A split's reference images, and each query's prefix (for describe-and-verify, the
    reasoning it writes), asked for in chunks."""
    references = [evaluation.open(t.reference) for t in evaluation.triplets]
    texts = [t.caption for t in evaluation.triplets]
    return references, query_prefixes(vlm, references, texts)


@torch.inference_mode()
def _rewrites(vlm, tier, data: str, split: str, n: int) -> dict[str, float]:
    """Target descriptions written for a split's queries: from the reference's true
    description (the rewrite alone) and from the reference image (caption, then rewrite:
    what the describe-and-verify reranker writes), compared with the target's exactly."""
    evaluation = EvalSplit.load(data, split, limit=n)
    scenes = load_scene_graphs(data, split)
    queries = evaluation.triplets
    _, states = _written(vlm, evaluation)
    from_truth = from_image = 0
    for t, state in zip(queries, states, strict=True):
        truth = tier.describe(scenes[t.target])
        written = vlm.generate(
            REWRITE_PROMPT, [], 256, description=tier.describe(scenes[t.reference]), text=t.caption
        )[0].strip()
        from_truth += written == truth
        from_image += state.target == truth
    count = max(len(queries), 1)
    return {
        f"rewrites_exact_{split}": from_truth / count,
        f"described_exact_{split}": from_image / count,
    }


@torch.inference_mode()
def _rewrite_choices(vlm, tier, data: str, split: str, n: int) -> dict[str, float]:
    """The rewrite alone, as a choice: given the reference's true description and the
    modification, how often the target's true description is the likeliest (summed token
    log-probabilities, teacher-forced) among the target's, its hard negatives' and the
    unchanged reference's. Neither captions nor greedy decoding are involved: this is what
    the rewrite step knows."""
    evaluation = EvalSplit.load(data, split, limit=n)
    scenes = load_scene_graphs(data, split)
    end = vlm.tokenizer.convert_tokens_to_ids("<|im_end|>")
    head = vlm.adapter.lm_head(vlm.model)
    top1 = 0
    for t in evaluation.triplets:
        names = [t.target] + [m for m in t.subset if m not in (t.target, t.reference)]
        prompt = vlm.codec.encode(
            REWRITE_PROMPT, description=tier.describe(scenes[t.reference]), text=t.caption
        )
        scores = []
        for name in [*names, t.reference]:
            answer = [*vlm.tokenizer.encode(tier.describe(scenes[name])), end]
            hidden = vlm.model.model(input_ids=torch.tensor([prompt + answer])).last_hidden_state
            logits = head(hidden[0, len(prompt) - 1 : -1]).float()
            scores.append(torch.log_softmax(logits, -1)[torch.arange(len(answer)), answer].sum())
        top1 += int(torch.stack(scores).argmax() == 0)
    return {f"rewrite_choice_top1_{split}": top1 / max(len(evaluation.triplets), 1)}


@torch.inference_mode()
def _verify_choices(vlm, tier, data: str, split: str, n: int) -> dict[str, float]:
    """The verifier alone, as a choice: with the scene graphs' true descriptions in place of
    captions, how often P(YES) ranks the target first among the target, its hard negatives
    and the unchanged reference, over all queries and by the kind of edit asked. This is
    what the verify step knows, captions aside."""
    evaluation = EvalSplit.load(data, split, limit=n)
    scenes = load_scene_graphs(data, split)
    ops = load_edit_ops(data, split)
    by_op: dict[str, list[int]] = {}
    for t in evaluation.triplets:
        names = [t.target] + [m for m in t.subset if m not in (t.target, t.reference)]
        reference = tier.describe(scenes[t.reference])
        changes = [
            vlm.changes_between(reference, tier.describe(scenes[name]))
            for name in [*names, t.reference]
        ]
        scores = vlm.verify(reference, t.caption, changes)
        by_op.setdefault(ops[t.pairid], []).append(int(np.argmax(scores) == 0))
    every = [hit for hits in by_op.values() for hit in hits]
    out = {f"verify_choice_top1_{split}": sum(every) / max(len(every), 1)}
    return out | {f"verify_choice_top1_{split}_{op}": sum(v) / len(v) for op, v in by_op.items()}


@torch.inference_mode()
def rationale_agreement(vlm, data: str, split: str, n: int) -> dict[str, float]:
    """How often a describe-and-verify model's rationale concludes right, by the scene
    graphs: "satisfied" for the target, "not satisfied" for its hard negatives and for the
    unchanged reference, over a split's first ``n`` queries."""
    evaluation = EvalSplit.load(data, split, limit=n)
    agree: dict[str, list[bool]] = {"target": [], "hard_negative": [], "reference": []}
    queries = evaluation.triplets
    references, written = _written(vlm, evaluation)
    for t, reference, reasoning in zip(queries, references, written, strict=True):
        negatives = [m for m in t.subset if m not in (t.target, t.reference)]
        names = [t.target, *negatives, t.reference]
        kinds = ["target"] + ["hard_negative"] * len(negatives) + ["reference"]
        rationales = vlm.explain_all(
            reference, t.caption, [evaluation.open(m) for m in names], written=reasoning
        )
        for kind, rationale in zip(kinds, rationales, strict=True):
            agree[kind].append(rationale.satisfied == (kind == "target"))
    every = [a for values in agree.values() for a in values]
    out = {f"rationale_agreement_{split}": sum(every) / max(len(every), 1)}
    out |= {f"rationale_agreement_{k}": sum(v) / max(len(v), 1) for k, v in agree.items()}
    return out | {"rationale_queries": len(evaluation.triplets), "rationale_pairs": len(every)}


@torch.inference_mode()
def _judgements(vlm, data: str, split: str, limit: int) -> dict[str, float]:
    evaluation = EvalSplit.load(data, split, limit=limit)
    queries = evaluation.triplets
    _, states = _written(vlm, evaluation)
    top1 = 0
    for t, state in zip(queries, states, strict=True):
        candidates = [t.target] + [m for m in t.subset if m not in (t.target, t.reference)]
        candidates.append(t.reference)
        scores = vlm.score_prefixed(state, [evaluation.open(c) for c in candidates])
        top1 += int(scores.argmax() == 0)
    return {f"judge_top1_{split}": top1 / max(len(queries), 1), "judge_queries": len(queries)}


def probe_stage(
    folder: str | Path,
    *,
    images: int = 256,
    captions: int = 32,
    judge_split: str = "val",
    judge_queries: int = 200,
    rationales: int = 0,
    seed: int = 12345,
) -> dict:
    """The probes that apply to a stage folder's model, on scenes drawn with ``seed``."""
    vlm, reader, tier = load_stage(folder, served=True)
    stage = read_stage(folder)
    stream = SceneStream(tier, random.Random(seed))
    out: dict = {"stage": stage["stage"], "step": stage.get("step", 0)}
    out |= _cells(vlm, reader, tier, stream, images)
    if stage["stage"] != "vision" and captions:
        out |= _captions(vlm, tier, stream, captions)
    if stage["stage"] in ("compare", "judge") and judge_queries:
        out |= _changes(vlm, tier, stage["config"]["data"], judge_split, min(judge_queries, 64))
    if stage["stage"] == "rewrite" and judge_queries:
        out |= _rewrites(vlm, tier, stage["config"]["data"], judge_split, min(judge_queries, 64))
        out |= _rewrite_choices(vlm, tier, stage["config"]["data"], judge_split, judge_queries)
    if stage["stage"] == "verify" and judge_queries:
        out |= _verify_choices(vlm, tier, stage["config"]["data"], judge_split, judge_queries)
    if stage["stage"] in ("judge", "rewrite", "verify") and judge_queries:
        out |= _judgements(vlm, stage["config"]["data"], judge_split, judge_queries)
    if stage["stage"] == "rewrite" and rationales:
        out |= rationale_agreement(vlm, stage["config"]["data"], judge_split, rationales)
    return out
