"""What ordinary catalogues hold, through the real service and a real Weaviate: palette PNGs,
GIFs, 1-bit and 16-bit images at sizes the decoder reduces, and one corrupt image among good
ones in a rerank. None of it may fail an import or a whole query."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image
from weaviate.classes.query import Rerank

from cir_module import compose_query
from cir_module.cli import main
from cir_module.service.encoder import EMPTY_DOCUMENT_SCORE
from integration.ingest import ingest_objects
from integration.schema import create_image_collection
from tests.conftest import png_b64, scene_images

pytestmark = pytest.mark.integration

# 1200 px: above the side (4 x the tiny model's 64 px) from which the decoder reduces.
SIDE = 1200


def _photo(seed: int) -> Image.Image:
    """A scene scaled up to SIDE x SIDE: smooth enough that palettes and bit depths keep it."""
    return scene_images(1, seed=seed)[0].resize((SIDE, SIDE), Image.Resampling.BICUBIC)


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _catalogue() -> dict[str, tuple[bytes, Image.Image]]:
    """Each ordinary kind of file, and the picture it holds as Pillow reads it in RGB (what
    the same file sent as an RGB PNG must embed alike)."""
    photo = _photo(51)
    grey16 = Image.fromarray(np.asarray(photo.convert("L"), dtype=np.uint16) * 257)
    files = {
        "png8.png": _encoded(photo.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "anim.gif": _encoded(_photo(52).convert("P"), "GIF"),
        "bilevel.png": _encoded(photo.convert("1"), "PNG"),
        "grey16.png": _encoded(grey16, "PNG"),
    }
    return {name: (raw, _as_rgb(raw)) for name, raw in files.items()}


def _as_rgb(raw: bytes) -> Image.Image:
    with Image.open(io.BytesIO(raw)) as img:
        if img.mode == "I;16":
            return img.point(lambda v: v * (1 / 256)).convert("L").convert("RGB")
        return img.convert("RGBA" if img.mode == "P" else "RGB").convert("RGB")


CATALOGUE = _catalogue()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_every_ordinary_image_mode_embeds_as_its_rgb_picture(service):
    """Stored images, a composed query's reference and rerank documents: before, each of
    these answered 400 "image has wrong mode" at this size."""
    for name, (raw, rgb) in CATALOGUE.items():
        r = httpx.post(
            f"{service.url}/vectorize",
            json={"images": [b64(raw), png_b64(rgb)], "texts": [compose_query(b64(raw), "red")]},
            timeout=120,
        )
        assert r.status_code == 200, (name, r.text[:300])
        ours, as_rgb = r.json()["imageVectors"]
        np.testing.assert_allclose(ours, as_rgb, atol=1e-4, err_msg=name)
        reranked = httpx.post(
            f"{service.url}/rerank",
            json={"query": compose_query(b64(raw), "red"), "documents": [b64(raw)]},
            timeout=120,
        )
        assert reranked.status_code == 200, (name, reranked.text[:300])
        assert reranked.json()["scores"][0]["score"] > EMPTY_DOCUMENT_SCORE


def test_cir_ingest_stores_palette_gif_bilevel_and_16_bit_files(
    capsys, tmp_path, client, weaviate_server, collection_name
):
    for name, (raw, _) in CATALOGUE.items():
        (tmp_path / name).write_bytes(raw)
    address = ["--weaviate", weaviate_server.url, "--grpc-port", str(weaviate_server.grpc_port)]
    argv = ["ingest", str(tmp_path), "--collection", collection_name, *address]
    try:
        main(argv)
    except SystemExit as stop:
        assert stop.code in (0, None), capsys.readouterr().out
    out = capsys.readouterr().out
    assert f"{len(CATALOGUE)} added, 0 already stored, 0 skipped, 0 failed" in out, out
    assert len(client.collections.get(collection_name)) == len(CATALOGUE)


def _corrupt_documents(good: list[str]) -> dict[int, str]:
    """Two ways an image document is unreadable: a PNG cut short (its header reads, its pixels
    do not) and a PNG signature followed by noise (not even the header reads)."""
    cut = b64(base64.b64decode(good[0])[:120])
    noise = b64(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    return {2: cut, 5: noise}


def test_a_corrupt_document_ranks_last_and_the_others_are_ranked(service):
    good = [png_b64(im) for im in scene_images(8, seed=53)]
    bad = _corrupt_documents(good)
    documents = [bad.get(i, doc) for i, doc in enumerate(good)]
    query = compose_query(good[0], "make it blue")
    before = httpx.get(f"{service.url}/meta").json()["admission"]["rerank"]["documents"]
    r = httpx.post(f"{service.url}/rerank", json={"query": query, "documents": documents})
    assert r.status_code == 200, r.text[:300]
    scores = [s["score"] for s in r.json()["scores"]]
    kept = [i for i in range(len(good)) if i not in bad]
    alone = httpx.post(
        f"{service.url}/rerank", json={"query": query, "documents": [good[i] for i in kept]}
    ).json()["scores"]
    np.testing.assert_allclose([scores[i] for i in kept], [s["score"] for s in alone], atol=1e-6)
    assert [scores[i] for i in bad] == [EMPTY_DOCUMENT_SCORE] * len(bad)
    after = httpx.get(f"{service.url}/meta").json()["admission"]["rerank"]["documents"]
    assert after["unreadable"] - before["unreadable"] == len(bad)
    assert after["image"] - before["image"] == 2 * len(kept)


def test_a_corrupt_thumbnail_does_not_fail_the_query_in_weaviate(client, collection_name):
    """Weaviate sends a property's values to /rerank in chunks; one corrupt value used to
    fail the chunk with a 400 and Weaviate the whole query."""
    images = [png_b64(im) for im in scene_images(8, seed=55)]
    bad = _corrupt_documents(images)
    collection = create_image_collection(
        client, collection_name, text_properties=("key", "thumbnail")
    )
    objects = [
        (f"o{i}", {"image": image, "key": str(i), "thumbnail": bad.get(i, image)})
        for i, image in enumerate(images)
    ]
    assert ingest_objects(collection, objects).failed == []
    query = compose_query(images[0], "make it blue")
    result = collection.query.near_text(
        query=query, limit=8, rerank=Rerank(prop="thumbnail", query=query),
        return_properties=["key"],
    )  # fmt: skip
    keys = [int(o.properties["key"]) for o in result.objects]
    scores = [o.metadata.rerank_score for o in result.objects]
    assert len(keys) == 8
    assert sorted(keys[-len(bad) :]) == sorted(bad)
    assert scores[-len(bad) :] == [EMPTY_DOCUMENT_SCORE] * len(bad)
    assert all(s > EMPTY_DOCUMENT_SCORE for s in scores[: -len(bad)])
