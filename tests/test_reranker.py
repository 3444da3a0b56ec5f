"""The LVLM reranker on a tiny random Qwen2-VL built offline: RAug-Rep extraction, injection,
KV-cache reuse, fusion, the ONNX export's parity, and /rerank through a real Weaviate (torch
and onnxruntime)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cir_module.rerank import (
    LVLMReranker,
    OnnxReranker,
    choose_layers,
    extract_raug,
    fuse_scores,
    injected,
    load_raug,
    load_reranker,
    read_cot,
    save_raug,
)
from cir_module.rerank.injection import capture_last_token
from cir_module.rerank.onnx_reranker import RERANKER_MANIFEST
from cir_module.rerank.tiny import build_tiny_reranker
from cir_module.vlm.prompt import mrope_positions
from onnx_export.reranker import RERANK_ATOL, export_reranker
from tests.conftest import rerank_in_weaviate, scene_images

SIDE = 56  # 4 x 4 patches of 14, merged 2 x 2: 4 tokens per image
PAIRS = [
    (
        "The reference shows a red circle. Make it blue. Does the candidate match?",
        "The reference has a red circle; the text changes its colour to blue; the target must "
        "show a blue circle in the same place and nothing else changed.",
    ),
    (
        "The reference shows two squares. Remove the left square. Does the candidate match?",
        "The reference has two squares; the text removes the left one; the target must show "
        "one square on the right.",
    ),
    (
        "The reference shows a small star. Make it large. Does the candidate match?",
        "The reference has a small star; the text enlarges it; the target must show a large star.",
    ),
]


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory) -> Path:
    corpus = [q + " " + r for q, r in PAIRS]
    return build_tiny_reranker(tmp_path_factory.mktemp("tiny-qwen2-vl"), corpus, seed=0)


@pytest.fixture(scope="module")
def reranker(tiny_vlm) -> LVLMReranker:
    return LVLMReranker.from_pretrained(tiny_vlm, image_side=SIDE, batch_size=5)


@pytest.fixture(scope="module")
def raug(reranker) -> torch.Tensor:
    return extract_raug(reranker.model.model, reranker.tokenizer, reranker.layers, PAIRS)


IMAGES = scene_images(12, seed=5)


def full_prompt_logits(reranker: LVLMReranker) -> torch.Tensor:
    ids = reranker._encode(reranker.prompt.prefix + reranker.prompt.suffix, text="make it red")
    pixels, grid = reranker._pixels(IMAGES[:2])
    with torch.inference_mode():
        return reranker.model(
            input_ids=torch.tensor([ids]), pixel_values=pixels, image_grid_thw=grid
        ).logits


def test_choose_layers():
    assert choose_layers(6, "all") == [0, 1, 2, 3, 4, 5]
    assert (choose_layers(6, "first"), choose_layers(6, "middle"), choose_layers(6, "last")) == (
        [0],
        [3],
        [4],  # the next to last: the last layer's output at the first token is never read
    )
    assert choose_layers(1, "last") == [0]
    assert choose_layers(6, [4, 1, 4]) == [1, 4]
    with pytest.raises(ValueError, match=r"within 0\.\.5"):
        choose_layers(6, [6])
    with pytest.raises(ValueError, match="one of"):
        choose_layers(6, "most")


def test_injection_moves_first_token_and_keeps_its_norm():
    torch.manual_seed(0)
    layers = nn.ModuleList([nn.Linear(8, 8) for _ in range(3)])
    vectors = torch.randn(3, 8)
    x = torch.randn(2, 5, 8)
    plain = layers[1](x)
    with injected(layers, vectors, alpha=0.6, which=[1]):
        steered = layers[1](x)
        untouched = layers[0](x)
    torch.testing.assert_close(steered[:, 0].norm(dim=-1), plain[:, 0].norm(dim=-1))
    assert torch.equal(steered[:, 1:], plain[:, 1:]) and torch.equal(untouched, layers[0](x))
    expected = plain[:, 0] + 0.6 * vectors[1]
    expected = (
        expected * plain[:, 0].norm(dim=-1, keepdim=True) / expected.norm(dim=-1, keepdim=True)
    )
    torch.testing.assert_close(steered[:, 0], expected)
    assert all(not layer._forward_hooks for layer in layers)


def test_alpha_zero_is_bit_identical_and_hooks_leave(reranker, raug):
    before = full_prompt_logits(reranker)
    with injected(reranker.layers, raug, alpha=0.0, which=range(len(reranker.layers))):
        at_zero = full_prompt_logits(reranker)
    with injected(reranker.layers, raug * 50, alpha=1.0, which=[0]):
        steered = full_prompt_logits(reranker)
    # Steering the very last layer moves nothing the answer reads (why "last" is the next to
    # last layer): only position 0's own logits change.
    with injected(reranker.layers, raug * 50, alpha=1.0, which=[len(reranker.layers) - 1]):
        very_last = full_prompt_logits(reranker)
    after = full_prompt_logits(reranker)
    assert torch.equal(at_zero, before) and torch.equal(after, before)
    assert not torch.allclose(steered, before)
    torch.testing.assert_close(very_last[:, 1:], before[:, 1:])
    assert not torch.allclose(very_last[:, 0], before[:, 0])
    assert all(not layer._forward_hooks for layer in reranker.layers)


def test_extracted_vectors_are_mean_differences_at_the_last_token(reranker, raug):
    assert raug.shape == (len(reranker.layers), reranker.model.config.text_config.hidden_size)
    # Recompute by hand for the first pair only, and check against a one-pair extraction.
    question, reasoning = PAIRS[0]
    tok = reranker.tokenizer
    q = tok.encode(f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")
    states = []
    for ids in (q, q + tok.encode(reasoning)):
        with capture_last_token(reranker.layers) as captured, torch.inference_mode():
            reranker.model.model(input_ids=torch.tensor([ids]))
        states.append(torch.stack([c[0] for c in captured]))
    one = extract_raug(reranker.model.model, tok, reranker.layers, PAIRS[:1])
    torch.testing.assert_close(one, states[1] - states[0])
    pca = extract_raug(reranker.model.model, tok, reranker.layers, PAIRS, method="pca")
    # The component is signed along the mean and no longer than it (a projection).
    assert ((pca * raug).sum(-1) > 0).all()
    assert (pca.norm(dim=-1) <= raug.norm(dim=-1) + 1e-6).all()
    with pytest.raises(ValueError, match="method"):
        extract_raug(reranker.model.model, tok, reranker.layers, PAIRS, method="median")


def _states_at(reranker: LVLMReranker, text: str, position: int) -> torch.Tensor:
    """Every decoder layer's output at ``position`` of the whole prompt (reference, text,
    candidate) run as one forward, the way :meth:`LVLMReranker.score_naive` reads it."""
    ids = reranker._encode(reranker.prompt.prefix + reranker.prompt.suffix, text=text)
    pixels, grid = reranker._pixels(IMAGES[:2])
    seen = []

    def keep(_module, _inputs, output) -> None:
        seen.append(output[0] if isinstance(output, tuple) else output)

    hooks = [layer.register_forward_hook(keep) for layer in reranker.layers]
    try:
        with torch.inference_mode():
            reranker.model.model(
                input_ids=torch.tensor([ids]), pixel_values=pixels, image_grid_thw=grid
            )
    finally:
        for hook in hooks:
            hook.remove()
    return torch.stack([h[0, position] for h in seen]).float()


def test_prompt_form_reads_the_query_prefix_end_unsteered(reranker, raug):
    from cir_module.rerank.raug import extract_raug_in_prompt

    text, reasoning = "make the circle red", PAIRS[0][1]
    reasoned = reranker.prompt.with_reasoning(text, reasoning)
    # The state the candidate image continues from: the last token of each query prefix.
    ends = [len(reranker._encode(reranker.prompt.prefix, text=t)) - 1 for t in (text, reasoned)]
    expected = _states_at(reranker, reasoned, ends[1]) - _states_at(reranker, text, ends[0])
    got = extract_raug_in_prompt(reranker, [(IMAGES[0], text, reasoning)])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, raug, atol=1e-3)  # not the text-only form's vectors

    reranker.raug = raug * 50  # a loaded RAug-Rep does not steer what is read
    try:
        steered = extract_raug_in_prompt(reranker, [(IMAGES[0], text, reasoning)])
        assert reranker.raug is not None  # restored
    finally:
        reranker.raug = None
    torch.testing.assert_close(steered, got)
    with pytest.raises(ValueError, match="method"):
        extract_raug_in_prompt(reranker, [(IMAGES[0], text, reasoning)], method="median")


def test_raug_file_round_trip_and_cot_errors(raug, tmp_path):
    path = save_raug(raug, tmp_path / "raug.safetensors", method="mean", pairs=3)
    vectors, meta = load_raug(path)
    assert torch.equal(vectors, raug) and meta == {"method": "mean", "pairs": 3}
    cot = tmp_path / "cot.jsonl"
    cot.write_text(json.dumps({"question": "q", "reasoning": "r"}) + "\n\n{not json}\n")
    with pytest.raises(ValueError, match=r"cot\.jsonl:3"):
        read_cot(cot)
    cot.write_text(json.dumps({"question": "q", "reasoning": "r"}) + "\n")
    assert read_cot(cot) == [("q", "r")]
    with pytest.raises(ValueError, match=r"cot\.jsonl:1: expected \{reference, text, reasoning\}"):
        read_cot(cot, keys=("reference", "text", "reasoning"))


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_kv_reuse_scores_equal_the_naive_forward(reranker, raug, alpha):
    reranker.raug, reranker.alpha = raug * 20, alpha
    try:
        fast = reranker.score(IMAGES[0], "make the circle red", IMAGES[1:])  # 11: 3 batches
        slow = reranker.score_naive(IMAGES[0], "make the circle red", IMAGES[1:])
    finally:
        reranker.raug, reranker.alpha = None, 0.6
    assert fast.shape == (11,) and ((fast > 0) & (fast < 1)).all()
    np.testing.assert_allclose(fast, slow, atol=1e-6)
    assert np.ptp(fast) > 0  # the candidates really are told apart


def test_injection_changes_scores(reranker, raug):
    plain = reranker.score(IMAGES[0], "remove the square", IMAGES[1:4])
    reranker.raug = raug * 50
    try:
        steered = reranker.score(IMAGES[0], "remove the square", IMAGES[1:4])
    finally:
        reranker.raug = None
    assert not np.allclose(plain, steered)


def test_fuse_scores():
    fused = fuse_scores(np.array([0.5, 0.25]), np.array([1.0, 0.0]), lam=0.5)
    np.testing.assert_allclose(fused, [1.0, 0.25])
    np.testing.assert_allclose(fuse_scores([0.1], [0.5]), [0.13])  # the paper's lambda 0.06
    with pytest.raises(ValueError, match="reranker scores"):
        fuse_scores([0.1, 0.2], [0.5])


def test_multimodal_positions_equal_the_models(reranker):
    ids = reranker._encode(reranker.prompt.prefix + reranker.prompt.suffix, text="make it red")
    _, grid = reranker._pixels(IMAGES[:2])
    expected = reranker.adapter.rope_index(reranker.model, torch.tensor([ids]), grid)[:, 0]
    merged = SIDE // 14 // 2
    got = mrope_positions(ids, reranker.codec.image_token_id, (merged, merged))
    np.testing.assert_array_equal(got, expected.numpy())


@pytest.fixture(scope="module")
def onnx_reranker_folder(tiny_vlm, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reranker-onnx")
    export_reranker(tiny_vlm, out, image_side=SIDE)
    return out


def test_onnx_export_scores_equal_torch_with_and_without_injection(
    onnx_reranker_folder, reranker, raug
):
    manifest = json.loads((onnx_reranker_folder / RERANKER_MANIFEST).read_text())
    parity = manifest["parity"]
    worst = max(v for k, v in parity.items() if k != "injection_effect")
    assert worst <= RERANK_ATOL
    # The check saw the injection act: it moved P(YES) far more than the export's error.
    assert parity["injection_effect"] > max(1e-5, 100 * worst)
    names = {i["name"] for i in manifest["graphs"]["decoder"]["inputs"]}
    assert {"raug", "alpha", "inject", "past_keys"} <= names
    # The extracted vectors (not the export's random ones), a layer list, a ragged batch.
    ours = load_reranker(onnx_reranker_folder, alpha=1.0, layers=[0, 1], batch_size=4)
    assert isinstance(ours, OnnxReranker) and ours.describe()["runtime"] == "onnxruntime"
    ours.raug = (raug * 20).numpy()
    saved = reranker.raug, reranker.alpha, reranker.injection_layers
    try:
        reranker.raug, reranker.alpha, reranker.injection_layers = raug * 20, 1.0, [0, 1]
        expected = reranker.score(IMAGES[0], "make it red", IMAGES[1:7])
    finally:
        reranker.raug, reranker.alpha, reranker.injection_layers = saved
    np.testing.assert_allclose(
        ours.score(IMAGES[0], "make it red", IMAGES[1:7]), expected, atol=1e-5
    )
    ours.alpha = 0.0
    plain = reranker.score(IMAGES[0], "make it red", IMAGES[1:7])
    np.testing.assert_allclose(ours.score(IMAGES[0], "make it red", IMAGES[1:7]), plain, atol=1e-5)
    assert ours.score(IMAGES[0], "make it red", []).shape == (0,)
    with pytest.raises(ValueError, match="exported for 56-pixel images"):
        load_reranker(onnx_reranker_folder, image_side=84)


@pytest.mark.integration
@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_rerank_through_weaviate_fuses_cosine_and_p_yes(
    tiny_checkpoint, local_model, tiny_vlm, onnx_reranker_folder, reranker, raug, tmp_path,
    runtime,
):  # fmt: skip
    raug_file = save_raug(raug * 20, tmp_path / "raug.safetensors", method="mean")
    env = {
        "CIR_RERANKER_MODEL": str(tiny_vlm if runtime == "torch" else onnx_reranker_folder),
        "CIR_RERANKER_RAUG": str(raug_file),
        "CIR_RERANKER_IMAGE_SIDE": str(SIDE),
        "CIR_RERANKER_LAMBDA": "0.5",
        "CIR_RERANKER_BATCH_SIZE": "8",
    }
    gallery = scene_images(40, seed=11)  # more than one 32-document chunk
    name = "CIRRerank_" + tmp_path.name.replace("-", "_")[-12:]
    keys, scores, meta = rerank_in_weaviate(
        tiny_checkpoint, env, gallery, "remove the square at top-left", name
    )
    assert meta["raug"] and meta["alpha"] == 0.6 and meta["lambda"] == 0.5
    assert meta["runtime"] == runtime
    scores = np.array(scores)
    assert len(keys) == 40 and (np.diff(scores) <= 0).all()
    # What the service must have computed, in-process: cosine + 0.5 * P(YES) with injection.
    query_vec = local_model.embed_composed([gallery[0]], ["remove the square at top-left"])[0]
    cosine = local_model.embed_images([gallery[k] for k in keys]) @ query_vec
    reranker.raug = raug * 20
    try:
        p_yes = reranker.score(
            gallery[0], "remove the square at top-left", [gallery[k] for k in keys]
        )
    finally:
        reranker.raug = None
    np.testing.assert_allclose(scores, cosine + 0.5 * p_yes, atol=1e-4)
    assert not np.allclose(scores, cosine, atol=1e-3)  # the reranker did contribute


def test_reranker_training_and_sweep_on_a_tiny_benchmark(tmp_path, local_model):
    from cir_module.data.benchmark import generate_benchmark
    from cir_module.eval.inprocess import EvalSplit
    from cir_module.eval.rerank_sweep import (
        InjectionSetting,
        first_stage,
        oracle_texts,
        p_yes,
        random_like,
        rerank_sweep,
    )
    from cir_module.training.reranker import (
        RerankTrainConfig,
        reasoning_pairs,
        reasoning_records,
        train_reranker,
    )

    root = tmp_path / "bench"
    generate_benchmark(root, seed=2, n_train=16, n_val=0, n_test=4, image_size=64)
    pairs = reasoning_pairs(root, limit=5)
    assert len(pairs) == 5 and all("The target must show" in r for _, r in pairs)
    records = reasoning_records(root, limit=5)  # the same draw, with what the prompt form needs
    assert [(r["question"], r["reasoning"]) for r in records] == pairs
    assert all(Path(r["reference"]).is_file() and r["text"] in r["question"] for r in records)
    cfg = RerankTrainConfig(
        data=str(root), out=str(tmp_path / "run"), steps=3, batch_size=4, hidden=32, layers=2,
        vision_depth=1,
    )  # fmt: skip
    folder = train_reranker(cfg)
    log = (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
    assert len(log) == 3 and all(0 <= json.loads(line)["acc"] <= 1 for line in log)
    trained = LVLMReranker.from_pretrained(folder)
    assert trained.image_side == 84  # from cir_reranker.json
    trained.raug = extract_raug(trained.model.model, trained.tokenizer, trained.layers, pairs)

    split = EvalSplit.load(root, "test")
    stage = first_stage(local_model, split, k=5)
    assert all(t.reference not in top for t, top in zip(split.triplets, stage.top, strict=True))
    assert (np.diff(stage.cosine, axis=1) <= 0).all()
    rows = rerank_sweep(
        trained,
        split,
        stage,
        [InjectionSetting(0.0), InjectionSetting(0.6, "last")],
        lambdas=[0.0, 1.0],
    )
    assert rows[0]["setting"] == "first stage only" and len(rows) == 1 + 2 * 2
    # lambda = 0 keeps the first-stage order whatever the injection.
    assert rows[1]["R@1"] == rows[3]["R@1"] == rows[0]["R@1"]
    assert trained.alpha == 0.6 and trained.injection_layers == [0, 1]  # restored
    # Rows after the no-injection run are read against it, query by query.
    assert "dR@1" not in rows[1] and "dR@1" not in rows[2]
    assert rows[3]["dR@1"] == 0.0 and rows[3]["dR@1 CI"] == [0.0, 0.0]  # lambda 0: same order
    assert rows[3]["mean |dP|"] == rows[4]["mean |dP|"] > 0  # the injection moved P(YES)
    for row in rows:
        low, high = row["R@1 CI"]
        assert low <= row["R@1"] <= high

    # The controls: the reasoning path written in the prompt, a random vector of RAug's norms.
    noise = random_like(trained.raug)
    torch.testing.assert_close(noise.norm(dim=-1), trained.raug.norm(dim=-1))
    assert (torch.nn.functional.cosine_similarity(noise, trained.raug, dim=-1).abs() < 0.99).all()
    texts = oracle_texts(trained, split)
    assert all("\nReasoning: The reference shows" in text for text in texts)
    raug = trained.raug
    controlled = rerank_sweep(
        trained,
        split,
        stage,
        [InjectionSetting(0.0), InjectionSetting(0.6, "last")],
        lambdas=[0.0, 1.0],
        controls=True,
    )
    names = [row["setting"] for row in controlled]
    assert names == [
        "first stage only",
        *["alpha=0, layers=all"] * 2,
        *["alpha=0.6, layers=last"] * 2,
        *["control: reasoning path in the prompt"] * 2,
        *["control: random vector, alpha=0.6, layers=last"] * 2,
    ]
    # Each injected row's change of P(YES) is correlated with the written path's change.
    correlated = [row["setting"] for row in controlled if "r(dP, dP written)" in row]
    assert correlated == [names[3]] * 2 + [names[7]] * 2
    assert all(-1 <= row.get("r(dP, dP written)", 0) <= 1 for row in controlled)
    assert trained.raug is raug  # restored
    oracle = p_yes(trained, split, stage, texts)
    assert not np.allclose(oracle, p_yes(trained, split, stage), atol=1e-6)
