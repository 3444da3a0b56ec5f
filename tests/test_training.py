"""The trainer on a tiny generated benchmark: loss, determinism, resume, service-ready output."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from cir_module.data.benchmark import generate_benchmark
from cir_module.eval.inprocess import EvalSplit, evaluate_in_process
from cir_module.models import load_model
from cir_module.training import TrainConfig, train
from cir_module.training.losses import LogitScale, info_nce


@pytest.fixture(scope="module")
def tiny_benchmark(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    generate_benchmark(root, seed=5, n_train=48, n_val=8, n_test=8, image_size=64)
    return root


def _config(tmp_path, data, name, **kw) -> TrainConfig:
    base = dict(
        data=str(data),
        out=str(tmp_path / name),
        model="tiny-clip",
        batch_size=8,
        warmup_steps=1,
        save_every=1000,
        device="cpu",
        lr=1e-3,
    )
    return TrainConfig(**{**base, **kw})


def _weights(checkpoint) -> dict[str, torch.Tensor]:
    return load_model(checkpoint).state_dict()


def test_info_nce_hand_computed():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    # Query 0 sees logits [s, 0, s] with positive 0: loss = log(2 + 1/e^s) ... with s = 1:
    loss = info_nce(q, c, torch.tensor(1.0))
    expected = (-np.log(np.e / (2 * np.e + 1)) - np.log(np.e / (np.e + 2))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # Masking candidate 2 as the same image as query 0's target removes it from the softmax.
    mask = torch.tensor([[False, False, True], [False, False, False]])
    masked = info_nce(q, c, torch.tensor(1.0), false_negatives=mask)
    expected = (-np.log(np.e / (np.e + 1)) - np.log(np.e / (np.e + 2))) / 2
    assert masked.item() == pytest.approx(expected, rel=1e-5)
    assert LogitScale(0.07)().item() == pytest.approx(1 / 0.07, rel=1e-5)


def test_training_is_deterministic_and_resumes_exactly(tmp_path, tiny_benchmark):
    straight = train(_config(tmp_path, tiny_benchmark, "straight", epochs=2))
    again = train(_config(tmp_path, tiny_benchmark, "again", epochs=2))
    # An interrupted run (time budget of zero minutes: stops after one step) then resumed.
    train(_config(tmp_path, tiny_benchmark, "resumed", epochs=2, max_minutes=1e-9))
    resumed = train(_config(tmp_path, tiny_benchmark, "resumed", epochs=2, resume=True))
    a, b, c = _weights(straight), _weights(again), _weights(resumed)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
        torch.testing.assert_close(a[key], c[key], rtol=1e-6, atol=1e-6)
    init = load_model(straight)  # the checkpoint is what the service loads
    assert init.image_encoder.num_scales == 3


def test_training_lowers_the_loss_and_moves_the_heads(tmp_path, tiny_benchmark):
    cfg = _config(tmp_path, tiny_benchmark, "learn", epochs=8, hard_negatives=1)
    checkpoint = train(cfg)
    log_lines = (tmp_path / "learn" / "train_log.jsonl").read_text().splitlines()
    losses = [json.loads(line)["loss"] for line in log_lines]
    assert len(losses) == 8 * (48 // 8)
    assert np.mean(losses[-6:]) < np.mean(losses[:6])  # it learns the 48 training triplets
    model = load_model(checkpoint)
    assert model.image_encoder.scale_embedding.abs().sum() > 0  # zero at init
    assert model.fusion.mlp[-1].weight.abs().sum() > 0  # zero at init
    split = EvalSplit.load(tiny_benchmark, "train", limit=16)
    trained = evaluate_in_process(model, split).metrics
    assert trained["R@50"] >= trained["R@10"] >= trained["R@1"]


def test_freeze_policies(tmp_path, tiny_benchmark):
    from cir_module.training.trainer import _apply_freezing, _build_model

    cfg = _config(tmp_path, tiny_benchmark, "frozen", freeze="backbone", unfreeze_last=1)
    model = _build_model(cfg)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    params = _apply_freezing(model, cfg)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert len(params) == len(trainable)
    assert any("encoder.layers.1." in n for n in trainable)
    assert not any("encoder.layers.0." in n for n in trainable)
    assert not any(n.startswith("backbone.text_model") for n in trainable)
    assert any(n.startswith("fusion.") for n in trainable)
    with pytest.raises(ValueError, match="freeze policy"):
        _apply_freezing(model, _config(tmp_path, tiny_benchmark, "x", freeze="everything"))


def test_reference_negatives_add_candidates(tmp_path, tiny_benchmark):
    cfg = _config(tmp_path, tiny_benchmark, "refneg", epochs=1, reference_negatives=True)
    train(cfg)
    log_lines = (tmp_path / "refneg" / "train_log.jsonl").read_text().splitlines()
    losses = [json.loads(line)["loss"] for line in log_lines]
    # 8 queries against 8 targets + 8 hard negatives + 8 references: loss starts near ln(24).
    assert len(losses) == 48 // 8
    assert abs(losses[0] - np.log(24)) < 1.0


def test_rar_alignment_trains_on_enriched_candidates_and_enhanced_queries(tmp_path, tiny_benchmark):
    """With captions the candidates are (1 - w) image + w caption text, as Weaviate stores
    an enriched object; with enhance the modification texts are the distilled keywords."""
    from cir_module.enrich import KeywordDistiller
    from cir_module.training.batch_loss import BatchLoss
    from cir_module.training.data import ImageStore, TripletData

    data = TripletData(tiny_benchmark, "train")
    names = sorted(data.paths)
    captions = {n: f"caption number {i} of a shape scene" for i, n in enumerate(names)}
    (tmp_path / "captions.json").write_text(json.dumps(captions))
    base = _config(tmp_path, tiny_benchmark, "plain", epochs=1)
    model = load_model(train(base))
    batch = next(data.batches(8, 0, random.Random(0)))
    store = ImageStore(data.root, data.paths, model.preprocess)
    scale = LogitScale()
    with torch.no_grad():
        plain = BatchLoss(model, store, None, scale, "cpu")(batch)
        captioned = BatchLoss(model, store, None, scale, "cpu", corpus=captions, caption_weight=1.0)
        only_text = captioned(batch)
        queries = model.encode_composed(
            torch.from_numpy(store.pixels(batch.references)), **model.tokenize(batch.captions)
        )
        texts = model.encode_text(**model.tokenize([captions[n] for n in batch.targets]))
        expected = info_nce(queries, texts, scale())
    torch.testing.assert_close(only_text, expected, atol=1e-5, rtol=1e-5)
    assert not torch.isclose(plain, only_text)

    aligned = _config(
        tmp_path, tiny_benchmark, "aligned", epochs=1, captions=str(tmp_path / "captions.json"),
        enhance="keywords", init_from=str(tmp_path / "plain" / "checkpoint"),
    )  # fmt: skip
    train(aligned)
    saved = json.loads((tmp_path / "aligned" / "train_config.json").read_text())
    assert saved["enhance"] == "keywords" and saved["captions"].endswith("captions.json")
    enhanced = TripletData(tiny_benchmark, "train")
    enhanced.rewrite_captions(KeywordDistiller().distil)
    assert [t.caption for t in enhanced.triplets] == [
        KeywordDistiller().distil(t.caption) for t in data.triplets
    ]
    assert any(
        a.caption != b.caption for a, b in zip(enhanced.triplets, data.triplets, strict=True)
    )


def test_scene_labels_and_head_hand_computed():
    from cir_module.data.shapes import ShapeObject
    from cir_module.training.scene_loss import IGNORE, SceneHead, SceneLabels

    scene = (ShapeObject(0, "square", "red", "large"), ShapeObject(4, "cross", "gray", "small"))
    rows = SceneLabels.encode(scene)
    assert rows.shape == (9, 3)
    # square is shape 1 -> class 2 (0 = empty); red colour 1; large size 1.
    assert rows[0].tolist() == [2, 1, 1]
    assert rows[4].tolist() == [5, 0, 0]
    assert rows[1].tolist() == [0, IGNORE, IGNORE]
    head = SceneHead(dim=4)
    torch.nn.init.zeros_(head.mlp[-1].weight)
    torch.nn.init.zeros_(head.mlp[-1].bias)
    # Uniform logits: the empty cells cost ln 6, the two objects ln 6 + ln 8 + ln 2 each.
    loss = head.loss(torch.randn(1, 4), rows[None])
    assert loss.item() == pytest.approx(np.log(6) + np.log(8) + np.log(2), rel=1e-5)


def test_cell_token_head_pools_the_grid_onto_the_cells():
    from cir_module.training.scene_loss import CLASS_SIZES, IGNORE, CellTokenHead, SceneLabels

    width = sum(CLASS_SIZES)
    head = CellTokenHead(width)
    head.classify = torch.nn.Identity()  # look at the pooled cells themselves
    # A 6x6 grid: each cell covers a 2x2 block of tokens, all equal to the cell's index.
    rows, cols = torch.meshgrid(torch.arange(6), torch.arange(6), indexing="ij")
    cell = (rows // 2 * 3 + cols // 2).float()
    tokens = cell.reshape(1, 36, 1).expand(1, 36, width)
    assert head.logits(tokens)[0, :, 0].tolist() == [float(c) for c in range(9)]
    # An 8x8 grid: adaptive pooling gives the centre cell rows and columns 2..5 (overlapping).
    grid = torch.arange(64.0).reshape(8, 8)
    tokens = grid.reshape(1, 64, 1).expand(1, 64, width)
    assert head.logits(tokens)[0, 4, 0].item() == pytest.approx(grid[2:6, 2:6].mean().item())
    assert head.logits(tokens)[0, 0, 0].item() == pytest.approx(grid[0:3, 0:3].mean().item())
    with pytest.raises(ValueError, match="square grid"):
        head.logits(torch.zeros(1, 10, width))
    # With a zero classifier every cell costs what SceneHead's uniform logits cost.
    head = CellTokenHead(4)
    torch.nn.init.zeros_(head.classify[-1].weight)
    torch.nn.init.zeros_(head.classify[-1].bias)
    from cir_module.data.shapes import ShapeObject

    labels = SceneLabels.encode((ShapeObject(2, "circle", "blue", "small"),))[None]
    assert labels[0, 0].tolist() == [0, IGNORE, IGNORE]
    loss = head.loss(torch.randn(1, 16, 4), labels)
    assert loss.item() == pytest.approx(np.log(6) + np.log(8) + np.log(2), rel=1e-5)


@pytest.mark.parametrize(
    ("weights", "head"),
    [
        ({"auxiliary_losses": {"scene": {"embedding": 1.0}}}, "scene_head"),
        ({"auxiliary_losses": {"scene": {"tokens": 1.0}}}, "token_head"),
    ],
    ids=["embedding", "tokens"],
)
def test_scene_loss_is_added_trained_and_resumed(tmp_path, tiny_benchmark, weights, head):
    plain = train(_config(tmp_path, tiny_benchmark, "plain", epochs=1))
    scene = train(_config(tmp_path, tiny_benchmark, "scene", epochs=2, **weights))

    def first_loss(name: str) -> float:
        return json.loads((tmp_path / name / "train_log.jsonl").read_text().splitlines()[0])["loss"]

    # Same initial model and batch: the difference is the scene loss of a fresh head, which
    # is close to uniform over 6 shapes-or-empty, 8 colours and 2 sizes.
    extra = first_loss("scene") - first_loss("plain")
    assert abs(extra - (np.log(6) + np.log(8) + np.log(2))) < 0.5
    state = torch.load(tmp_path / "scene" / "trainer_state.pt", weights_only=False)
    assert state[head] is not None
    # The head is a training aid: the checkpoint holds the same parameters as without it.
    assert set(_weights(scene)) == set(_weights(plain))
    train(_config(tmp_path, tiny_benchmark, "resumed", epochs=2, max_minutes=1e-9, **weights))
    resumed = train(_config(tmp_path, tiny_benchmark, "resumed", epochs=2, resume=True, **weights))
    a, b = _weights(scene), _weights(resumed)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-6)


def test_initial_temperature_sets_the_logit_scale(tmp_path, tiny_benchmark):
    train(_config(tmp_path, tiny_benchmark, "sharp", epochs=1, temperature=0.02))
    first = json.loads((tmp_path / "sharp" / "train_log.jsonl").read_text().splitlines()[0])
    # One AdamW step of lr 1e-3 moves the log-scale by about 1e-3.
    assert first["scale"] == pytest.approx(1 / 0.02, rel=0.01)


def test_precise_batchnorm_averages_batch_statistics():
    from cir_module.models import create_model
    from cir_module.training.batchnorm import recompute_batchnorm_statistics
    from tests.conftest import scene_images

    model = create_model("tiny-clip", num_scales=2, stem="conv").eval()
    weights = {k: v.clone() for k, v in model.named_parameters()}
    batches = [model.pixels(scene_images(3, seed=s)) for s in (1, 2)]
    stem = model.image_encoder.stem
    assert recompute_batchnorm_statistics(model, batches) == 2 * len(stem.convs)  # per scale
    with torch.no_grad():
        features = [stem.convs[0](b) for b in batches]
    means = torch.stack([f.mean(dim=(0, 2, 3)) for f in features])
    variances = torch.stack([f.var(dim=(0, 2, 3)) for f in features])  # unbiased, as BN keeps
    norm = stem.norms[0][0]
    torch.testing.assert_close(norm.running_mean, means.mean(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(norm.running_var, variances.mean(0), rtol=1e-4, atol=1e-5)
    assert norm.momentum == 0.1 and not norm.training
    for name, value in model.named_parameters():
        torch.testing.assert_close(value, weights[name], rtol=0, atol=0)


def test_precise_batchnorm_after_training_changes_only_the_statistics(tmp_path, tiny_benchmark):
    from cir_module.models.config import config_dir as models_dir

    config = json.loads((models_dir() / "tiny-clip.json").read_text())
    config["pyramid"]["stem"] = "conv"
    (tmp_path / "tiny-conv.json").write_text(json.dumps(config))
    conv = dict(epochs=1, model=str(tmp_path / "tiny-conv.json"))
    ema = train(_config(tmp_path, tiny_benchmark, "ema", **conv))
    precise = train(_config(tmp_path, tiny_benchmark, "precise", precise_bn=40, **conv))
    a, b = _weights(ema), _weights(precise)
    statistics = [k for k in a if k.endswith(("running_mean", "running_var"))]
    assert statistics
    for key in a:
        if key in statistics:
            assert not torch.allclose(a[key], b[key])
        elif not key.endswith("num_batches_tracked"):
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_warmup_cosine_both_recipes():
    from cir_module.training.schedule import warmup_cosine

    # The trainer's: ramp over 4 steps, then a half cosine over the 8 steps after it.
    assert [warmup_cosine(s, 4, 12) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert warmup_cosine(4, 4, 12) == 1.0
    assert warmup_cosine(8, 4, 12) == pytest.approx(0.5)
    assert warmup_cosine(12, 4, 12) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(20, 4, 12) == pytest.approx(0.0, abs=1e-12)  # clamped past the end
    # The reranker's: the cosine spans all steps from 0, the ramp multiplies its start.
    assert warmup_cosine(0, 4, 12, cosine_from_start=True) == pytest.approx(0.25)
    assert warmup_cosine(3, 4, 12, cosine_from_start=True) == pytest.approx(
        0.5 * (1 + np.cos(np.pi * 3 / 12))
    )
    assert warmup_cosine(6, 4, 12, cosine_from_start=True) == pytest.approx(0.5)


def test_auxiliary_losses_are_found_by_name(tiny_benchmark):
    from cir_module.models import create_model
    from cir_module.training.auxiliary import KNOWN_LOSSES, build_auxiliary_loss

    model = create_model("tiny-clip")
    loss = build_auxiliary_loss("scene", {"embedding": 0.5}, model, str(tiny_benchmark), "train")
    assert KNOWN_LOSSES["scene"] == type(loss).__module__  # registered by the module it names
    assert list(loss.heads) == ["scene_head", "token_head"]  # trainer_state.pt's keys
    with pytest.raises(ValueError, match=r"unknown auxiliary loss 'scenes'; known: .*scene"):
        build_auxiliary_loss("scenes", {}, model, str(tiny_benchmark), "train")
    with pytest.raises(ValueError, match="scene loss weights"):
        build_auxiliary_loss("scene", {"token": 1.0}, model, str(tiny_benchmark), "train")


def test_training_does_not_import_the_benchmark():
    """training/ finds the benchmark's losses by name: importing it loads no data set."""
    import subprocess
    import sys

    code = (
        "import sys, cir_module.training, cir_module.training.trainer; "
        "print(sorted(m for m in sys.modules if m.startswith('cir_module.data')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
