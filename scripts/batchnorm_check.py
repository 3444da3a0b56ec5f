"""How much a checkpoint's BatchNorm statistics cost: seed-0-style CIRR metrics with the
stored running statistics, then with statistics recomputed over N training images
(``cir train --precise-bn`` does the same at the end of training). The recomputed model is
not saved unless ``--save`` names a folder.

Usage: python scripts/batchnorm_check.py CHECKPOINT DATA [--images 4096] [--save DIR]
"""

from __future__ import annotations

import argparse

import torch

from cir_module.eval.inprocess import EvalSplit, evaluate_in_process
from cir_module.models import load_model
from cir_module.training.batchnorm import recompute_on_images
from cir_module.training.data import ImageStore, TripletData


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data")
    parser.add_argument("--split", default="test")
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--save")
    args = parser.parse_args()
    model = load_model(args.checkpoint)
    split = EvalSplit.load(args.data, args.split)
    with torch.no_grad():
        before = evaluate_in_process(model, split).metrics
    train = TripletData(args.data, "train")
    store = ImageStore(train.root, train.paths, model.preprocess)
    count, _ = recompute_on_images(model, store, list(train.paths), args.images)
    with torch.no_grad():
        after = evaluate_in_process(model.eval(), split).metrics
    print(f"{count} BatchNorm layers; {args.split} split of {args.data}")
    for label, metrics in (("stored statistics", before), ("recomputed", after)):
        print(f"{label:>18}: " + "  ".join(f"{k} {100 * v:.2f}" for k, v in metrics.items()))
    if args.save:
        model.save_pretrained(args.save)


if __name__ == "__main__":
    main()
