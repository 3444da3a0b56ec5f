from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cir_module.models import create_model, list_models, load_model, pyramid_grids
from tests.conftest import scene_images


@pytest.mark.parametrize("family", ["tiny-clip", "tiny-siglip"])
def test_single_scale_reproduces_plain_image_features(family):
    torch.manual_seed(0)
    model = create_model(family, num_scales=1, scale_embedding=False)
    pixels = model.pixels(scene_images(3))
    with torch.no_grad():
        ours = model.image_encoder(pixels)
        plain = model.backbone.get_image_features(pixel_values=pixels)
    torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", ["tiny-clip", "tiny-siglip"])
def test_pyramid_adds_coarser_tokens(family):
    model = create_model(family, num_scales=3)
    encoder = model.image_encoder
    assert encoder.grids == [8, 4, 2]
    tokens = encoder.tokens(model.pixels(scene_images(2)))
    assert tokens.shape == (2, encoder.num_tokens(), 32)
    assert encoder.num_tokens() == 64 + 16 + 4 + (1 if family == "tiny-clip" else 0)
    single = create_model(family, num_scales=1, scale_embedding=False)
    single.load_state_dict(model.state_dict(), strict=False)
    pixels = model.pixels(scene_images(2))
    with torch.no_grad():
        assert not torch.allclose(model.encode_image(pixels), single.encode_image(pixels))


@pytest.mark.parametrize("family", ["tiny-clip", "tiny-siglip"])
def test_scale_tokens_slice_each_scale_out_of_the_sequence(family):
    encoder = create_model(family, num_scales=3).image_encoder
    # Each position holds its own index: CLIP's class token comes first, SigLIP has none.
    sequence = torch.arange(encoder.num_tokens()).reshape(1, -1, 1).expand(2, -1, 3)
    first = 1 if family == "tiny-clip" else 0
    expected = [(first, first + 64), (first + 64, first + 80), (first + 80, first + 84)]
    for scale, (start, stop) in enumerate(expected):
        part = encoder.scale_tokens(sequence, scale)
        assert part.shape == (2, stop - start, 3)
        assert part[0, :, 0].tolist() == list(range(start, stop))


def test_conv_stem_gives_the_patch_grid_and_survives_a_round_trip(tmp_path):
    model = create_model("tiny-clip", num_scales=3, stem="conv")
    encoder = model.image_encoder
    pixels = model.pixels(scene_images(2))
    assert encoder.tokens(pixels).shape == (2, 64 + 16 + 4 + 1, 32)
    assert model.describe()["stem"] == "conv"
    # The stem's first layer is what patchifies now, so it must learn.
    model.train()
    model.encode_image(pixels).sum().backward()
    assert encoder.stem.convs[0].weight.grad.abs().sum() > 0
    with torch.no_grad():
        for param in encoder.stem.parameters():
            param.normal_(std=0.2)
    model.eval().save_pretrained(tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt")
    assert loaded.config.pyramid.stem == "conv"
    images = scene_images(3)
    np.testing.assert_allclose(loaded.embed_images(images), model.embed_images(images), atol=1e-5)


def test_conv_stem_embeds_each_image_independently_of_its_batch():
    model = create_model("tiny-clip", num_scales=2, stem="conv").eval()
    images = scene_images(4)
    together = model.embed_images(images)
    alone = np.concatenate([model.embed_images([image]) for image in images])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_conv_stem_normalises_each_scale_with_its_own_statistics():
    model = create_model("tiny-clip", num_scales=2, stem="conv").train()
    encoder = model.image_encoder
    for scale_norms in encoder.stem.norms:
        scale_norms[0].reset_running_stats()
        scale_norms[0].momentum = None  # a plain average: after one batch, its mean
    pixels = model.pixels(scene_images(3))
    with torch.no_grad():
        model.encode_image(pixels)
        half = encoder.downscale_1 @ pixels @ encoder.downscale_1.T
        first_conv = encoder.stem.convs[0]
        expected = [first_conv(x).mean(dim=(0, 2, 3)) for x in (pixels, half)]
    for scale, mean in enumerate(expected):
        running = encoder.stem.norms[scale][0].running_mean
        torch.testing.assert_close(running, mean, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(expected[0], expected[1], atol=1e-3)


def test_conv_stem_loads_a_checkpoint_with_shared_norms():
    from torch import nn

    from cir_module.models.pyramid import ConvStem

    # The layout stems were saved in before their norms were per scale.
    old = nn.Sequential(
        nn.Conv2d(3, 16, 4, stride=4, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 1),
    )  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in [*old.parameters(), *old.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
    stem = ConvStem(patch_size=16, hidden=32, num_scales=3)
    stem.load_state_dict({f"layers.{k}": v for k, v in old.state_dict().items()})
    old.eval()
    stem.eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for scale in range(3):
            torch.testing.assert_close(stem(pixels, scale), old(pixels))


def test_conv_stem_errors():
    from cir_module.models.pyramid import ConvStem

    with pytest.raises(ValueError, match="power-of-two patch size"):
        ConvStem(patch_size=12, hidden=32)
    with pytest.raises(ValueError, match="unknown stem"):
        create_model("tiny-clip", stem="resnet")


def test_pyramid_grids():
    assert pyramid_grids(7, 3) == [7, 4, 2]
    assert pyramid_grids(14, 5) == [14, 7, 4, 2, 1]
    assert pyramid_grids(4, 4) == [4, 2, 1, 1]
    with pytest.raises(ValueError):
        pyramid_grids(7, 0)


def test_scale_embedding_is_trained_through_the_encoder():
    model = create_model("tiny-clip", num_scales=2).train()
    loss = model.encode_image(model.pixels(scene_images(2))).sum()
    loss.backward()
    grad = model.image_encoder.scale_embedding.grad
    assert grad is not None and grad.abs().sum() > 0
    assert model.image_encoder.vision.embeddings.patch_embedding.weight.grad is not None


def test_fusion_starts_as_normalised_sum():
    model = create_model("tiny-clip")
    images = scene_images(2)
    texts = ["make the circle red", "remove the square at top-left"]
    composed = model.embed_composed(images, texts)
    expected = model.embed_images(images) + model.embed_texts(texts)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(composed, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(composed, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("family", ["tiny-clip", "tiny-siglip"])
def test_checkpoint_round_trip(family, tmp_path):
    model = create_model(family)
    with torch.no_grad():  # make the heads non-trivial so that loading them is tested
        model.image_encoder.scale_embedding.normal_()
        model.fusion.mlp[-1].weight.normal_()
    model.save_pretrained(tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt")
    assert loaded.config == model.config
    images, texts = scene_images(3), ["make it blue", "add a small red circle", ""]
    np.testing.assert_allclose(loaded.embed_images(images), model.embed_images(images), atol=1e-6)
    np.testing.assert_allclose(loaded.embed_texts(texts), model.embed_texts(texts), atol=1e-6)
    np.testing.assert_allclose(
        loaded.embed_composed(images, texts), model.embed_composed(images, texts), atol=1e-6
    )


def test_plain_backbone_checkpoint_loads_with_from_pretrained(tmp_path):
    model = create_model("tiny-clip", num_scales=1, scale_embedding=False)
    model.backbone.save_pretrained(tmp_path)
    model.tokenizer.save_pretrained(tmp_path)
    model.image_processor.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)  # no cir_config.json: a plain CLIP checkpoint
    assert loaded.image_encoder.num_scales == 1
    pixels = model.pixels(scene_images(2))
    with torch.no_grad():
        plain = F.normalize(model.backbone.get_image_features(pixel_values=pixels), dim=-1)
        torch.testing.assert_close(loaded.encode_image(pixels), plain, rtol=1e-5, atol=1e-6)


def test_registry_and_errors():
    assert {"tiny-clip", "tiny-siglip", "clip-vit-b32-pyramid3"} <= set(list_models())
    with pytest.raises(ValueError, match="unknown model"):
        create_model("no-such-model")


def test_long_text_is_truncated_not_rejected():
    model = create_model("tiny-clip")
    vec = model.embed_texts(["red " * 500])
    assert vec.shape == (1, model.dim) and np.isfinite(vec).all()


def _python(code: str, block_torch: bool = False) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (with ``import torch`` failing if ``block_torch``)."""
    prelude = "import sys; sys.modules['torch'] = None\n" if block_torch else ""
    return subprocess.run(
        [sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=120
    )


def test_the_public_face_loads_no_torch_until_a_model_is_asked_for():
    done = _python(
        "import sys, cir_module\n"
        "from cir_module.models.onnx_model import OnnxCIRModel\n"
        "from cir_module.service import create_app\n"
        "query = cir_module.compose_query(b'\\x89PNG', 'red')\n"
        "assert cir_module.list_models() and 'CIRModel' in dir(cir_module)\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
        "cir_module.create_model\n"
        "print('torch' in sys.modules)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[]", "True"]


def test_a_model_name_without_torch_names_the_extra():
    done = _python("from cir_module import create_model", block_torch=True)
    assert "cir_module.create_model needs torch: pip install 'weaviate-cir[torch]'" in done.stderr
    done = _python("import cir_module.models as m; m.CIRModel", block_torch=True)
    assert "pip install 'weaviate-cir[torch]'" in done.stderr
