"""The ``lvlm`` family (CIR-LVLM with PMTFR's pyramid in the vision input), on a tiny
Qwen2-VL built from a config and loaded through ``from_pretrained``: each component against
what it must equal, training through the project's trainer, and serving through a real
Weaviate."""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from cir_module.data.benchmark import generate_benchmark
from cir_module.models import create_model, get_model_config, load_model
from cir_module.models.lvlm import LVLMRetriever, SoftPromptPool, patchify, pool_states
from cir_module.training import TrainConfig, train
from cir_module.vlm.tiny import build_tiny_vlm
from tests.conftest import scene_images

SIDE = 56  # two pyramid copies: 56 and 28 pixels (4 and 1 merged tokens)


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory) -> Path:
    corpus = ["make the circle red", "remove the small square", "Find the image in one word"]
    return build_tiny_vlm(tmp_path_factory.mktemp("tiny-vlm"), corpus, vocab_size=400)


def _model(vlm: Path, **lvlm) -> LVLMRetriever:
    config = get_model_config("lvlm")
    config = dataclasses.replace(
        config,
        pyramid=dataclasses.replace(config.pyramid, num_scales=lvlm.pop("num_scales", 2)),
        lvlm=dataclasses.replace(config.lvlm, image_side=SIDE, **lvlm),
    )
    return create_model(config, pretrained=vlm)


def test_patchify_equals_the_image_processor(tiny_vlm):
    model = _model(tiny_vlm)
    image = scene_images(1, seed=2)[0].resize((SIDE, SIDE))
    expected = model.image_processor(images=[image], do_resize=False, return_tensors="pt")
    rows = patchify(model.pixels([image]), model.patch, model.temporal, model.merge)
    assert rows.shape == expected["pixel_values"].shape
    torch.testing.assert_close(rows, expected["pixel_values"], rtol=0, atol=1e-5)


def test_the_pyramid_is_in_the_vision_input_as_the_model_itself_reads_images(tiny_vlm):
    """Without a prompt pool, a composed query is a plain prompt: the same hidden states come
    out of Qwen2-VL's own forward (its image-token scatter, its get_rope_index over one
    vision block per pyramid copy), pooled the same way."""
    model = _model(tiny_vlm, pool_size=0)
    assert model.grids == [2, 1] and model.num_image_tokens() == (4 + 2) + (1 + 2)
    images = scene_images(2, seed=4)
    pixels = model.pixels(images)
    tokens = model.tokenize(["make the circle red", "remove it"])
    ours = model.encode_composed(pixels, **tokens)

    copies = [pixels, model._down1 @ pixels @ model._down1.T]
    rows = torch.cat(
        [patchify(c, model.patch, model.temporal, model.merge).view(2, -1, 1176) for c in copies],
        dim=1,
    ).flatten(0, 1)  # image 0's copies, then image 1's: the order the vision blocks come in
    grid = torch.tensor([[1, 4, 4], [1, 2, 2]] * 2)
    ids = torch.cat([torch.tensor([model._prefix_ids("composed")] * 2), tokens["input_ids"]], 1)
    mask = torch.cat([torch.ones(2, ids.shape[1] - tokens["input_ids"].shape[1]).long(),
                      tokens["attention_mask"]], 1)  # fmt: skip
    with torch.no_grad():
        positions, _ = model.backbone.model.get_rope_index(ids, grid, None, mask)
        hidden = model.backbone.model(
            input_ids=ids, attention_mask=mask, pixel_values=rows, image_grid_thw=grid,
            position_ids=positions,
        ).last_hidden_state  # fmt: skip
    theirs = torch.nn.functional.normalize(pool_states(hidden, mask, "weighted_mean"), dim=-1)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    # Each row's own positions equal the model's for that row alone (padding changes none).
    expected = model._positions_composed.numpy()
    np.testing.assert_array_equal(positions[:, 0, : expected.shape[1]].numpy(), expected)


def test_the_pool_picks_the_prompts_whose_keys_match_and_pulls_only_those_keys():
    pool = SoftPromptPool(size=4, top_k=2, length=3, hidden=4, std=1.0)
    with torch.no_grad():
        pool.keys.copy_(torch.eye(4) * 2)
    feature = torch.tensor([[0.1, 3.0, 0.0, 2.0], [5.0, 0.0, 0.2, 0.0]], requires_grad=True)
    indices, _ = pool.select(feature)
    assert indices.tolist() == [[1, 3], [0, 2]]
    prompts, pull = pool(feature)
    assert prompts.shape == (2, 2 * 3, 4) and pool.tokens == 6
    torch.testing.assert_close(prompts[0, :3], pool.prompts[1])
    torch.testing.assert_close(prompts[1, 3:], pool.prompts[2])
    unit = torch.nn.functional.normalize(feature.detach(), dim=-1)
    expected = 1 - unit[[0, 0, 1, 1], [1, 3, 0, 2]]
    assert pull.item() == pytest.approx(expected.mean().item(), rel=1e-6)
    pull.backward()
    moved = pool.keys.grad.abs().sum(-1) > 0
    assert moved.tolist() == [True, True, True, True]  # each key chosen by some input
    assert feature.grad is None  # the selection does not train the input's features
    pull_one, _ = pool(feature[:1])[1], None
    pool.keys.grad = None
    pull_one.backward()
    assert (pool.keys.grad.abs().sum(-1) > 0).tolist() == [False, True, False, True]


def test_pooling_weights_grow_with_position_and_skip_padding():
    hidden = torch.tensor([[[1.0], [2.0], [4.0], [100.0]]])
    mask = torch.tensor([[1, 1, 1, 0]])
    assert pool_states(hidden, mask, "mean").item() == pytest.approx(7 / 3)
    assert pool_states(hidden, mask, "weighted_mean").item() == pytest.approx((1 + 4 + 12) / 6)
    assert pool_states(hidden, mask, "last").item() == 4.0
    with pytest.raises(ValueError, match="unknown pooling"):
        pool_states(hidden, mask, "max")


@pytest.mark.parametrize("pooling", ["weighted_mean", "last"])
def test_an_embedding_does_not_depend_on_its_batch_and_survives_a_checkpoint(
    tiny_vlm, tmp_path, pooling
):
    model = _model(tiny_vlm, pooling=pooling)
    images = scene_images(3, seed=1)
    texts = ["make the circle red", "remove the small square and add a large red circle", "x"]
    batch = model.embed_composed(images, texts)
    alone = np.concatenate(
        [model.embed_composed([i], [t]) for i, t in zip(images, texts, strict=True)]
    )
    np.testing.assert_allclose(batch, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    reloaded = load_model(model.save_pretrained(tmp_path / "checkpoint"))
    assert isinstance(reloaded, LVLMRetriever) and reloaded.describe() == model.describe()
    np.testing.assert_allclose(reloaded.embed_composed(images, texts), batch, atol=1e-6)
    np.testing.assert_allclose(reloaded.embed_images(images), model.embed_images(images), atol=1e-6)
    np.testing.assert_allclose(reloaded.embed_texts(texts), model.embed_texts(texts), atol=1e-6)


def test_the_task_prompt_and_pool_are_in_the_sequence(tiny_vlm):
    with_task, without = _model(tiny_vlm), _model(tiny_vlm, task_prompt=False, pool_size=0)
    head, bare = with_task.heads["composed"], without.heads["composed"]
    assert len(head) > len(bare) and len(with_task.cues["composed"]) > len(without.cues["composed"])
    assert with_task._positions_composed.shape[1] == len(head) + 8 + without.num_image_tokens()
    image = scene_images(1)
    text = ["make it red"]
    assert not np.allclose(
        with_task.embed_composed(image, text), without.embed_composed(image, text)
    )


def test_a_pyramid_side_the_patches_do_not_divide_is_refused(tiny_vlm):
    with pytest.raises(ValueError, match="multiples of 28"):
        _model(tiny_vlm, num_scales=3)  # 56, 28, 14
    with pytest.raises(ValueError, match="lvlm family loads"):
        create_model("lvlm")


def _pool_training(tiny_vlm, tmp_path, n_train: int, **overrides) -> TrainConfig:
    """A training run of an lvlm model with a pool of 4 prompts on a small benchmark."""
    data = tmp_path / "shapes"
    generate_benchmark(data, seed=5, n_train=n_train, n_val=4, n_test=4, image_size=64)
    config = get_model_config("lvlm").to_dict()
    config["lvlm"] |= {"image_side": SIDE, "pool_size": 4}
    config["pyramid"]["num_scales"] = 2
    (tmp_path / "lvlm.json").write_text(json.dumps(config))
    return TrainConfig(
        data=str(data), out=str(tmp_path / "run"), model=str(tmp_path / "lvlm.json"),
        pretrained=str(tiny_vlm), batch_size=8, lr=3e-3, warmup_steps=1, save_every=1000,
        device="cpu", **overrides,
    )  # fmt: skip


def test_training_lowers_the_loss_and_trains_the_pool(tiny_vlm, tmp_path):
    before = _model(tiny_vlm, pool_size=4)
    cfg = _pool_training(tiny_vlm, tmp_path, 32, epochs=6, reference_negatives=True)
    checkpoint = train(cfg)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run/train_log.jsonl").open()]
    assert len(losses) == 6 * 4 and np.mean(losses[-4:]) < np.mean(losses[:4])
    trained = load_model(checkpoint)
    assert isinstance(trained, LVLMRetriever)
    assert not torch.allclose(trained.pool.keys, before.pool.keys)  # the pull loss moved them
    assert not torch.allclose(trained.pool.prompts, before.pool.prompts)
    with pytest.raises(ValueError, match="--freeze none, vision or backbone"):
        train(dataclasses.replace(cfg, out=str(tmp_path / "text"), freeze="text"))


def test_a_frozen_backbone_trains_only_the_prompt_pool(tiny_vlm, tmp_path):
    """``--freeze backbone``: the whole VLM keeps its weights (what lets a 2B or 7B backbone
    train on one GPU), the prompt pool learns."""
    before = _model(tiny_vlm, pool_size=4)
    cfg = _pool_training(tiny_vlm, tmp_path, 16, epochs=2, freeze="backbone")
    trained = load_model(train(cfg))
    for (name, old), new in zip(
        before.backbone.state_dict().items(), trained.backbone.state_dict().values(), strict=True
    ):
        assert torch.equal(old, new), name
    assert not torch.allclose(trained.pool.prompts, before.pool.prompts)


@pytest.mark.integration
def test_served_through_weaviate_as_the_model_computes(tiny_vlm, tmp_path):
    """The lvlm checkpoint behind ``cir serve``, a real Weaviate vectorizing with it: stored
    vectors are the model's image embeddings and a composed nearText ranks by the model's
    composed embedding."""
    from weaviate.classes.query import MetadataQuery

    from cir_module import compose_query
    from integration.ingest import ingest_objects
    from integration.schema import create_image_collection
    from integration.service_process import ServiceProcess
    from integration.stack import connect
    from integration.weaviate_server import WeaviateServer
    from tests.conftest import png_b64

    model = _model(tiny_vlm)
    checkpoint = model.save_pretrained(tmp_path / "lvlm")
    images = scene_images(8, seed=6)
    gallery = [png_b64(image) for image in images]
    # The service decodes what Weaviate sends: compare with the model on the same PNGs.
    expected_images = model.embed_images(images)
    expected_query = model.embed_composed(images[:1], ["make the circle red"])[0]
    with (
        ServiceProcess(checkpoint) as service,
        WeaviateServer(service.url) as server,
        connect(server) as client,
    ):
        name = f"CIRTest_lvlm_{uuid.uuid4().hex[:10]}"
        try:
            collection = create_image_collection(client, name, text_properties=("key",))
            report = ingest_objects(
                collection,
                ((f"img-{i}", {"image": b, "key": str(i)}) for i, b in enumerate(gallery)),
            )
            assert report.failed == [] and report.inserted == len(gallery)
            stored = collection.query.fetch_objects(
                limit=20, include_vector=True, return_properties=["key"]
            )
            for o in stored.objects:
                np.testing.assert_allclose(
                    o.vector["default"], expected_images[int(o.properties["key"])], atol=1e-5
                )
            result = collection.query.near_text(
                query=compose_query(gallery[0], "make the circle red"),
                limit=8,
                return_properties=["key"],
                return_metadata=MetadataQuery(distance=True),
            )
        finally:
            client.collections.delete(name)
    cosine = expected_images @ expected_query
    keys = [int(o.properties["key"]) for o in result.objects]
    assert keys == list(np.argsort(-cosine))
    distances = [o.metadata.distance for o in result.objects]
    np.testing.assert_allclose(distances, 1 - cosine[keys], atol=1e-5)


@pytest.mark.integration
def test_exported_to_onnx_and_served_by_onnxruntime_as_torch_computes(tiny_vlm, tmp_path):
    """``cir export`` of an lvlm checkpoint: three whole graphs (image, text, composed) that
    pass the export's own parity checks, served by ``cir serve`` on onnxruntime with the
    torch model's vectors."""
    import httpx

    from cir_module import compose_query
    from cir_module.models.onnx_model import MANIFEST_NAME
    from integration.service_process import ServiceProcess
    from onnx_export.export import export_checkpoint
    from onnx_export.validate import FP32_ATOL
    from tests.conftest import png_b64

    model = _model(tiny_vlm)
    checkpoint = model.save_pretrained(tmp_path / "lvlm")
    manifest = export_checkpoint(checkpoint, tmp_path / "onnx", variants=("fp32", "int8"))
    assert set(manifest["graphs"]) == {"image", "text", "composed"}
    assert manifest["model"]["family"] == "lvlm"
    assert max(manifest["parity"]["graphs"]["composed"].values()) <= FP32_ATOL
    assert min(manifest["parity"]["int8"].values()) >= 0.999
    assert json.loads((tmp_path / "onnx" / MANIFEST_NAME).read_text())["text"]["padding"] == (
        "right"
    )
    images = scene_images(3, seed=8)
    b64 = [png_b64(image) for image in images]
    texts = ["make the circle red", "remove the square", "a small blue square"]
    query = compose_query(b64[0], texts[0])
    env = {"CIR_ONNX_EXPORT": str(tmp_path / "onnx"), "CIR_ONNX_VARIANT": "fp32"}
    with ServiceProcess(checkpoint, env=env) as service:
        meta = httpx.get(f"{service.url}/meta").json()
        assert meta["backend"] == "onnxruntime" and meta["model"]["family"] == "lvlm"
        body = {"texts": [texts[2], query], "images": b64}
        answer = httpx.post(f"{service.url}/vectorize", json=body, timeout=60).json()
    np.testing.assert_allclose(answer["imageVectors"], model.embed_images(images), atol=FP32_ATOL)
    np.testing.assert_allclose(
        answer["textVectors"][0], model.embed_texts(texts[2:])[0], atol=FP32_ATOL
    )
    np.testing.assert_allclose(
        answer["textVectors"][1], model.embed_composed(images[:1], texts[:1])[0], atol=FP32_ATOL
    )
