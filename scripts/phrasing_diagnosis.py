"""Where a first stage loses R@1 on wordings it never saw: one measurement per suspect.

Takes a checkpoint and two folders holding the same test triplets, worded with the training
phrasings and with the held-out ones (``cir data shapes ... --n-train 0 --n-val 0
--phrasing-for-test heldout``), and prints one JSON report:

* ``lengths``: tokens per text under the checkpoint's tokenizer, and the share cut at its
  ``text_max_length`` (truncation);
* ``tower`` / ``projected`` / ``composed``: how alike the two wordings of one triplet are in the
  text tower's own states (mean over tokens, what the pretrained model knows), in the trained
  text embedding, and in the composed query: the mean paired cosine, and how often a held-out
  text's nearest training-worded text (of all test triplets) is its own paraphrase;
* ``value_words``: per kind of value (size, texture, relation, grid cell...), how many held-out
  words the text tower alone (mean over tokens) puts nearest the training word of the same
  value, and the nearest training word of each: what the frozen tower brings to wordings it
  was never trained on;
* ``recall``: R@1 with each wording, and with held-out texts at a longer ``text_max_length``;
  ``per_kind``: R@1 per edit kind with each wording.

Usage: python scripts/phrasing_diagnosis.py CHECKPOINT DATA DATA_HELDOUT [--limit N]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np
import torch

from cir_module.data.benchmark import load_edit_ops, tier_of
from cir_module.eval.inprocess import EvalSplit, embed_split, evaluate_in_process, rank_split
from cir_module.models import load_model


def paired(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean cosine of row i of ``a`` with row i of ``b``, and the share of rows of ``b`` whose
    nearest row of ``a`` is their own."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    sims = b @ a.T
    return {
        "paired_cosine": round(float(np.mean(np.diag(sims))), 4),
        "other_cosine": round(float((sims.sum() - np.trace(sims)) / (len(a) * (len(a) - 1))), 4),
        "own_paraphrase_top1": round(float(np.mean(sims.argmax(1) == np.arange(len(a)))), 4),
    }


def value_words(model, words: dict) -> dict[str, dict]:
    """For each kind of value the tier words in both sets, the held-out words whose nearest
    training word (of any value of that kind) under the tower is one of their own value's."""
    out = {}
    for kind, held in words["heldout"].items():
        train = [(v, w) for v, ws in words["train"][kind].items() for w in ws]
        heldout = [(v, w) for v, ws in held.items() for w in ws]
        if len(words["train"][kind]) < 2 or {w for _, w in train} == {w for _, w in heldout}:
            continue  # one value only, or the same words in both sets (colours, shapes)
        a = text_views(model, [w for _, w in train])[0]
        b = text_views(model, [w for _, w in heldout])[0]
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        b /= np.linalg.norm(b, axis=1, keepdims=True)
        nearest = (b @ a.T).argmax(1)
        out[kind] = {
            "right": int(sum(train[j][0] == v for (v, _), j in zip(heldout, nearest, strict=True))),
            "of": len(heldout),
            "nearest": {w: train[j][1] for (_, w), j in zip(heldout, nearest, strict=True)},
        }
    return out


@torch.inference_mode()
def text_views(model, texts: list[str], batch: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """The tower's mean token state and the trained (projected) text embedding of each text."""
    tower, projected = [], []
    for i in range(0, len(texts), batch):
        inputs = model.tokenize(texts[i : i + batch])
        embeds, tokens, mask = model.encode_text_states(**inputs)
        m = mask.unsqueeze(-1).to(tokens.dtype)
        tower.append(((tokens * m).sum(1) / m.sum(1)).numpy())
        projected.append(embeds.numpy())
    return np.concatenate(tower), np.concatenate(projected)


def r1_per_kind(split: EvalSplit, rankings: list[list[str]]) -> dict[str, float]:
    """R@1 (percent) per edit kind of a benchmark split's test queries."""
    ops = load_edit_ops(split.root, "test")
    hits: dict[str, list[bool]] = defaultdict(list)
    for t, ranking in zip(split.triplets, rankings, strict=True):
        hits[ops[t.pairid]].append(bool(ranking) and ranking[0] == t.target)
    return {k: round(100 * float(np.mean(v)), 1) for k, v in sorted(hits.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data")
    parser.add_argument("heldout")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--long-max-length", type=int, default=128)
    args = parser.parse_args()
    model = load_model(args.checkpoint).eval()
    seen = EvalSplit.load(args.data, "test", limit=args.limit)
    held = EvalSplit.load(args.heldout, "test", limit=args.limit)
    assert [t.pairid for t in seen.triplets] == [t.pairid for t in held.triplets]
    texts = {
        "train": [t.caption for t in seen.triplets],
        "heldout": [t.caption for t in held.triplets],
    }

    report: dict = {"checkpoint": args.checkpoint, "text_max_length": model.text_max_length}
    lengths = {}
    for name, ts in texts.items():
        n = np.array([len(model.tokenizer(t)["input_ids"]) for t in ts])
        lengths[name] = {
            "mean": round(float(n.mean()), 1),
            "p90": int(np.percentile(n, 90)),
            "max": int(n.max()),
            "truncated": round(float(np.mean(n > model.text_max_length)), 4),
        }
    report["lengths"] = lengths

    (tower_a, proj_a), (tower_b, proj_b) = (
        text_views(model, texts["train"]),
        text_views(model, texts["heldout"]),
    )
    report["tower"] = paired(tower_a, tower_b)
    report["value_words"] = value_words(model, tier_of(args.data).phrasing_words)
    report["projected"] = paired(proj_a, proj_b)

    splits = {"train": seen, "heldout": held}
    embedded = {name: embed_split(model, split) for name, split in splits.items()}
    runs = {name: rank_split(splits[name], *vecs) for name, vecs in embedded.items()}
    composed = paired(embedded["train"][1], embedded["heldout"][1])
    top1 = [
        a[0] == b[0] for a, b in zip(runs["train"].rankings, runs["heldout"].rankings, strict=True)
    ]
    composed["same_top1"] = round(float(np.mean(top1)), 4)
    report["composed"] = composed
    model.text_max_length = args.long_max_length
    long = evaluate_in_process(model, held)
    report["recall"] = {
        "train": runs["train"].metrics["R@1"],
        "heldout": runs["heldout"].metrics["R@1"],
        f"heldout_max_length_{args.long_max_length}": long.metrics["R@1"],
    }
    report["per_kind"] = {
        name: r1_per_kind(split, runs[name].rankings) for name, split in splits.items()
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
