"""What a checkpoint's image tower knows about each object: probes trained on frozen features
read every grid cell's shape, colour and size back, once from the pooled image embedding
(the trainer's SceneHead) and once from the finest scale's tokens (its CellTokenHead).

Accuracies are on held-out images (the test split); shape is scored on occupied cells only,
so chance is 1/5 there.

Usage: python -m research.scene_probe CHECKPOINT DATA [--images 4096] [--steps 300]
"""

from __future__ import annotations

import argparse
import random

import torch

from cir_module.models import load_model
from cir_module.training.data import ImageStore, TripletData
from cir_module.training.scene_loss import CLASS_SIZES, CellTokenHead, SceneHead, SceneLabels


def features(model, store: ImageStore, names: list[str], batch: int = 128):
    """Unit embeddings ``[n, dim]`` and finest-scale tokens ``[n, grid * grid, hidden]``."""
    embeds, tokens = [], []
    with torch.no_grad():
        for i in range(0, len(names), batch):
            pixels = torch.from_numpy(store.pixels(names[i : i + batch]))
            embed, hidden = model.encode_image_states(pixels)
            embeds.append(embed)
            tokens.append(model.image_encoder.scale_tokens(hidden, 0))
    return torch.cat(embeds), torch.cat(tokens)


def fit(head: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor, steps: int) -> None:
    optimizer = torch.optim.AdamW(head.parameters(), lr=3e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        rows = torch.randint(len(inputs), (512,), generator=generator)
        loss = head.loss(inputs[rows], labels[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def accuracies(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    shape, color, size = logits.split(CLASS_SIZES, dim=-1)
    occupied = labels[..., 0] > 0
    return {
        "occupied": ((shape.argmax(-1) > 0) == occupied).float().mean().item(),
        "shape": (shape.argmax(-1) == labels[..., 0])[occupied].float().mean().item(),
        "colour": (color.argmax(-1) == labels[..., 1])[occupied].float().mean().item(),
        "size": (size.argmax(-1) == labels[..., 2])[occupied].float().mean().item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data")
    parser.add_argument("--images", type=int, default=4096, help="training images for probes")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_model(args.checkpoint).eval()
    sets = {}
    for split, count in (("train", args.images), ("test", args.images // 2)):
        data = TripletData(args.data, split)
        names = random.Random(split).sample(sorted(data.paths), min(count, len(data.paths)))
        labels = SceneLabels.load(args.data, split)(names)
        store = ImageStore(data.root, data.paths, model.preprocess)
        sets[split] = (*features(model, store, names), labels)
    (train_emb, train_tok, train_lab), (test_emb, test_tok, test_lab) = sets["train"], sets["test"]
    pooled = SceneHead(train_emb.shape[1])
    fit(pooled, train_emb, train_lab, args.steps)
    tokens = CellTokenHead(train_tok.shape[2])
    fit(tokens, train_tok, train_lab, args.steps)
    with torch.no_grad():
        rows = {
            "pooled embedding": pooled.mlp(test_emb).reshape(len(test_emb), 9, -1),
            "finest-scale tokens": tokens.logits(test_tok),
        }
        print(f"probes on {len(train_emb)} train images, scored on {len(test_emb)} test images")
        for label, logits in rows.items():
            acc = accuracies(logits, test_lab)
            print(f"{label:>20}: " + "  ".join(f"{k} {100 * v:.1f}" for k, v in acc.items()))


if __name__ == "__main__":
    main()
