"""Issue 19's first probe of a judge (an experiment, not product code): can a small
cross-encoder over the frozen hard-tier tower's tokens (reference, candidate) and the frozen
MiniLM states of the modification lift R@1 over the first stage? It trains on the first
N_TRAIN triplets of hard-s0's train split for MINUTES minutes (listwise over the target, the
4 hard negatives and the reference), then reranks the first stage's top 10 on the val split.

    python -m research.judge_probe 6000 30     # writes runs/judge/ (caches, judge.pt)

Result on 2026-12-03 (docs/results.md): it did not learn in 30 minutes of a shared 2-core CPU.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from cir_module.eval.inprocess import EvalSplit, evaluate_in_process
from cir_module.models import load_model

torch.set_num_threads(2)
torch.manual_seed(0)
random.seed(0)
ROOT = Path(".cache/data/hard-s0")
OUT = Path("runs/judge")
OUT.mkdir(parents=True, exist_ok=True)
N_TRAIN = int(sys.argv[1]) if len(sys.argv) > 1 else 6000
MINUTES = float(sys.argv[2]) if len(sys.argv) > 2 else 30
K = 10
model = load_model("cir_module/checkpoints/shapes-hard-conv").eval()


@torch.no_grad()
def image_tokens(split: EvalSplit, names: list[str]) -> torch.Tensor:
    out = []
    for i in range(0, len(names), 256):
        px = model.pixels([split.open(n) for n in names[i : i + 256]])
        _, tok = model.encode_image_states(px)
        cls, fine = tok[:, :1], tok[:, 1:65]  # class token, then the 8x8 scale
        b, _, h = fine.shape
        fine = fine.reshape(b, 8, 8, h).permute(0, 3, 1, 2)
        pooled = F.avg_pool2d(fine, 2).flatten(2).transpose(1, 2)  # 4x4
        out.append(torch.cat([cls, pooled], 1).half())
    return torch.cat(out)


@torch.no_grad()
def text_states(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    toks, masks = [], []
    for i in range(0, len(texts), 512):
        ids = model.tokenize(texts[i : i + 512])
        _, tok, mask = model.encode_text_states(ids["input_ids"], ids["attention_mask"])
        pad = 40 - tok.shape[1]
        toks.append(F.pad(tok, (0, 0, 0, pad)).half())
        masks.append(F.pad(mask, (0, pad)).bool())
    return torch.cat(toks), torch.cat(masks)


def load(split_name: str, limit: int | None):
    split = EvalSplit.load(ROOT, split_name, limit=limit)
    path = ROOT / f"captions/cap.shapes.{split_name}.json"
    caps = json.loads(path.read_text())[: len(split.triplets)]
    names = sorted(
        {m for c in caps for m in c["img_set"]["members"]} | {c["reference"] for c in caps}
    )
    if split_name != "train":
        names = split.gallery
    t = time.time()
    cache = OUT / f"cache-{split_name}-{limit}.pt"
    if cache.exists():
        tokens, txt, mask = torch.load(cache)
    else:
        tokens = image_tokens(split, names)
        txt, mask = text_states([c["caption"] for c in caps])
        torch.save((tokens, txt, mask), cache)
    index = {n: i for i, n in enumerate(names)}
    print(
        f"{split_name}: {len(caps)} queries, {len(names)} images, {time.time() - t:.0f}s",
        flush=True,
    )
    return split, caps, tokens, index, txt, mask


class Judge(nn.Module):
    def __init__(self, d_img=128, d_txt=384, d=128, layers=3, heads=4, n_img=17):
        super().__init__()
        self.img_in = nn.Sequential(nn.LayerNorm(d_img), nn.Linear(d_img, d))
        self.txt_in = nn.Sequential(nn.LayerNorm(d_txt), nn.Linear(d_txt, d))
        self.seg = nn.Embedding(3, d)
        self.pos = nn.Parameter(torch.randn(n_img, d) * 0.02)
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, heads, 4 * d, 0.1, batch_first=True, norm_first=True)
        self.enc = nn.TransformerEncoder(layer, layers)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 1)

    def forward(self, ref, txt, tmask, cand):
        b = ref.shape[0]
        r = self.img_in(ref.float()) + self.pos + self.seg.weight[0]
        c = self.img_in(cand.float()) + self.pos + self.seg.weight[2]
        t = self.txt_in(txt.float()) + self.seg.weight[1]
        x = torch.cat([self.cls.expand(b, -1, -1), r, t, c], 1)
        keep = torch.cat(
            [
                torch.ones(b, 1 + r.shape[1], dtype=torch.bool),
                tmask,
                torch.ones(b, c.shape[1], dtype=torch.bool),
            ],
            1,
        )
        x = self.enc(x, src_key_padding_mask=~keep)
        return self.head(self.norm(x[:, 0])).squeeze(-1)


def main():
    _tr_split, tr_caps, tr_tok, tr_idx, tr_txt, tr_mask = load("train", N_TRAIN)
    va_split, _va_caps, va_tok, va_idx, va_txt, va_mask = load("val", None)
    # First stage on val, in-process.
    res = evaluate_in_process(model, va_split)
    print("first stage val", {k: round(v, 2) for k, v in res.metrics.items()}, flush=True)
    gallery = va_split.gallery
    scores = res.scores
    judge = Judge()
    opt = torch.optim.AdamW(judge.parameters(), lr=3e-4, weight_decay=0.05)
    L = int(tr_mask.sum(1).max())
    B, NEG_HARD, NEG_RAND = 16, 4, 0
    t0, step = time.time(), 0
    all_train = list(tr_idx.values())
    while time.time() - t0 < MINUTES * 60:
        batch = random.sample(range(len(tr_caps)), B)
        refs, cands, txt_i = [], [], []
        for q in batch:
            c = tr_caps[q]
            negs = [
                m for m in c["img_set"]["members"] if m not in (c["reference"], c["target_hard"])
            ]
            group = [tr_idx[c["target_hard"]]] + [
                tr_idx[m] for m in random.sample(negs, min(NEG_HARD, len(negs)))
            ]
            group += [tr_idx[c["reference"]]]  # the unchanged reference is a negative too
            while len(group) < 1 + NEG_HARD + 1 + NEG_RAND:
                group.append(random.choice(all_train))
            for g in group:
                refs.append(tr_idx[c["reference"]])
                cands.append(g)
                txt_i.append(q)
        n = len(refs) // B
        judge.train()
        logits = judge(tr_tok[refs], tr_txt[txt_i, :L], tr_mask[txt_i, :L], tr_tok[cands]).view(
            B, n
        )
        loss = F.cross_entropy(logits, torch.zeros(B, dtype=torch.long))
        lr = (
            3e-4
            * min(1, (step + 1) / 200)
            * (0.5 * (1 + math.cos(math.pi * min(1, (time.time() - t0) / (MINUTES * 60)))))
        )
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(judge.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 200 == 0:
            acc = (logits.argmax(1) == 0).float().mean().item()
            print(
                f"step {step} {time.time() - t0:.0f}s loss {loss.item():.3f} acc {acc:.2f}",
                flush=True,
            )
    torch.save(judge.state_dict(), OUT / "judge.pt")
    # Rerank val top-K.
    judge.eval()
    {t.reference for t in va_split.triplets}
    r1 = {lam: 0 for lam in (0.0, 0.02, 0.05, 0.1, 0.2, 1000.0)}
    with torch.no_grad():
        for qi, t in enumerate(va_split.triplets):
            s = scores[qi].copy()
            s[va_idx[t.reference]] = -9
            top = np.argsort(-s)[:K]
            ref = va_tok[[va_idx[t.reference]] * K]
            lg = judge(ref, va_txt[[qi] * K, :L], va_mask[[qi] * K, :L], va_tok[top]).numpy()
            for lam in r1:
                fused = s[top] + lam * lg if lam < 999 else lg
                r1[lam] += gallery[top[int(np.argmax(fused))]] == t.target
    n = len(va_split.triplets)
    print("rerank top", K, {lam: round(100 * v / n, 1) for lam, v in r1.items()}, flush=True)


main()
