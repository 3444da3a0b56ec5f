"""RAR enrichment against the real Weaviate and the real service: a run killed mid-way and
restarted enriches every object exactly once; corrupt images are reported, not fatal."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid as uuidlib

import numpy as np
import pytest
from weaviate.util import generate_uuid5

from cir_module.data.benchmark import generate_benchmark
from cir_module.data.captions import SceneGraphCaptioner
from cir_module.enrich import CaptionItem
from integration.enrich import enrich_collection
from integration.ingest import ingest_objects
from integration.schema import create_image_collection
from tests.conftest import png_b64

pytestmark = pytest.mark.integration

CORRUPT = ("broken-1", "broken-2")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes-enrich")
    generate_benchmark(root, seed=4, n_train=0, n_val=0, n_test=20, image_size=64)
    return root


@pytest.fixture
def stored(client, bench, local_model):
    """A collection with a caption property: the benchmark's test images plus two objects
    whose image blobs are corrupt (stored with explicit vectors, as an import of damaged
    files with precomputed vectors would leave them)."""
    from cir_module.eval.inprocess import EvalSplit

    split = EvalSplit.load(bench, "test")
    name = f"CIREnrich_{uuidlib.uuid4().hex[:8]}"
    collection = create_image_collection(
        client, name, text_properties=("name",), caption_property="caption"
    )
    try:
        report = ingest_objects(
            collection,
            ((n, {"image": png_b64(split.open(n)), "name": n}) for n in split.gallery),
        )
        assert report.failed == []
        vector = local_model.embed_images([split.open(split.gallery[0])])[0].tolist()
        for key in CORRUPT:
            collection.data.insert(
                {"image": "iVBORw0KGgoAAAAN" + "A" * 40, "name": key},
                uuid=generate_uuid5(key),
                vector=vector,
            )
        yield collection, split
    finally:
        client.collections.delete(name)


def test_scene_graph_captions_are_factual_and_noise_is_controlled(bench):
    from PIL import Image

    clean = SceneGraphCaptioner.from_benchmark(bench)
    noisy = SceneGraphCaptioner.from_benchmark(bench, drop=0.5, wrong=0.5, seed=1)
    names = sorted(clean.scenes)[:30]
    items = [CaptionItem(n, Image.new("RGB", (4, 4)), {"name": n}) for n in names]
    exact = clean.caption(items)
    assert all(len(c.split()) <= 100 for c in exact)
    assert exact[0].startswith(f"{len(clean.scenes[names[0]])} shape")
    changed = noisy.caption(items)
    assert changed == noisy.caption(items)  # deterministic
    assert sum(a != b for a, b in zip(exact, changed, strict=True)) >= 20
    assert noisy.id != clean.id and "drop=0.5" in noisy.id


def test_dry_run_and_limit_write_nothing_or_little(stored, bench):
    collection, split = stored
    captioner = SceneGraphCaptioner.from_benchmark(bench)
    dry = enrich_collection(collection, captioner, dry_run=True, batch_size=8)
    assert dry.enriched == len(split.gallery) and len(dry.failed) == 2
    assert all(
        "caption" not in (o.properties or {}) or not o.properties.get("caption")
        for o in collection.iterator(return_properties=["caption"])
    )
    some = enrich_collection(collection, captioner, limit=5, batch_size=2)
    assert some.enriched == 5
    captioned = [
        o
        for o in collection.iterator(return_properties=["captioner"])
        if o.properties.get("captioner") == captioner.id
    ]
    assert len(captioned) == 5


def test_killed_run_resumes_and_enriches_every_object_exactly_once(
    stored, bench, weaviate_server, tmp_path, local_model
):
    collection, split = stored
    state, journal = tmp_path / "state.json", tmp_path / "journal.jsonl"
    command = [
        sys.executable, "-m", "cir_module.cli", "enrich",
        "--collection", collection.name, "--data", str(bench),
        "--port", str(weaviate_server.http_port), "--grpc-port", str(weaviate_server.grpc_port),
        "--state", str(state), "--journal", str(journal), "--batch-size", "2",
    ]  # fmt: skip
    first = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.time() + 120
    while time.time() < deadline and first.poll() is None:
        if journal.exists() and len(journal.read_text().splitlines()) >= 4:
            first.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL, "the first run finished before it was killed"
    written_first = len(journal.read_text().splitlines())
    assert written_first < len(split.gallery)

    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    report = json.loads(second.stdout[second.stdout.index("{") :])
    assert second.returncode == 1  # the corrupt images are failures, reported
    assert sorted(u for u, _ in report["failed"]) == sorted(str(generate_uuid5(k)) for k in CORRUPT)
    assert all("could not be decoded" in m or "not a recognised" in m for _, m in report["failed"])

    lines = [json.loads(line)["uuid"] for line in journal.read_text().splitlines()]
    # Exactly once: nothing written twice, and the resumed run wrote only what was left. The
    # kill may fall between a batch's write and its journal line (at most one batch of 2):
    # those objects carry the caption already and the resumed run skips them.
    assert len(lines) == len(set(lines))
    assert len(split.gallery) - 2 <= len(lines) <= len(split.gallery)
    assert report["enriched"] == len(lines) - written_first
    assert report["skipped"] <= 2  # the resumed run starts at the saved cursor
    captioner = SceneGraphCaptioner.from_benchmark(bench)
    objects = list(
        collection.iterator(return_properties=["name", "caption", "captioner"], include_vector=True)
    )
    assert len(objects) == len(split.gallery) + len(CORRUPT)  # none lost, none duplicated
    for obj in objects:
        name = obj.properties["name"]
        if name in CORRUPT:
            assert not obj.properties.get("caption")
            continue
        item = CaptionItem(str(obj.uuid), None, {"name": name})
        assert obj.properties["caption"] == captioner.caption([item])[0]
        assert obj.properties["captioner"] == captioner.id
        # Re-vectorised with the enriched recipe: no longer the image vector alone.
        image_vec = local_model.embed_images([split.open(name)])[0]
        assert not np.allclose(obj.vector["default"], image_vec, atol=1e-3)

    third = subprocess.run(command, capture_output=True, text=True, timeout=300)
    again = json.loads(third.stdout[third.stdout.index("{") :])
    assert again["enriched"] == 0 and again["skipped"] == len(split.gallery)
    assert len(again["failed"]) == 2  # failures are retried by every complete run
    assert len(journal.read_text().splitlines()) == len(lines)


def test_weaviate_restarted_during_enrichment_nothing_lost(service, bench, tmp_path):
    from cir_module.eval.inprocess import EvalSplit
    from integration.stack import connect
    from integration.weaviate_server import WeaviateServer

    split = EvalSplit.load(bench, "test")
    data = tmp_path / "weaviate-data"
    data.mkdir()
    state, journal = tmp_path / "state.json", tmp_path / "journal.jsonl"
    name = f"CIREnrichRestart_{uuidlib.uuid4().hex[:8]}"

    def command(server: WeaviateServer) -> list[str]:
        return [
            sys.executable, "-m", "cir_module.cli", "enrich", "--collection", name,
            "--data", str(bench), "--port", str(server.http_port),
            "--grpc-port", str(server.grpc_port), "--state", str(state),
            "--journal", str(journal), "--batch-size", "1",
        ]  # fmt: skip

    first = WeaviateServer(service.url, data_dir=data).start()
    try:
        with connect(first) as client:
            collection = create_image_collection(
                client, name, text_properties=("name",), caption_property="caption"
            )
            report = ingest_objects(
                collection,
                ((n, {"image": png_b64(split.open(n)), "name": n}) for n in split.gallery),
            )
            assert report.failed == []
        output = (tmp_path / "job.log").open("w")
        job = subprocess.Popen(command(first), stdout=output, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline and job.poll() is None:
            if journal.exists() and len(journal.read_text().splitlines()) >= 3:
                break
            time.sleep(0.01)
        first.stop()  # Weaviate restarts while the job runs
        try:  # the job retries while Weaviate is away; an operator would stop it and re-run
            job.wait(timeout=20)
        except subprocess.TimeoutExpired:
            job.terminate()
            job.wait(timeout=60)
        output.close()
        done_before = len(journal.read_text().splitlines())
        assert done_before < len(split.gallery), "enrichment ended before the restart"
    finally:
        first.stop()

    second = WeaviateServer(service.url, data_dir=data).start()
    try:
        resumed = subprocess.run(command(second), capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        lines = [json.loads(line)["uuid"] for line in journal.read_text().splitlines()]
        assert len(lines) == len(set(lines)) == len(split.gallery)
        captioner = SceneGraphCaptioner.from_benchmark(bench)
        with connect(second) as client:
            objects = list(
                client.collections.get(name).iterator(return_properties=["name", "captioner"])
            )
            client.collections.delete(name)
        assert len(objects) == len(split.gallery)
        assert all(o.properties["captioner"] == captioner.id for o in objects)
    finally:
        second.stop()
        shutil.rmtree(data, ignore_errors=True)


def test_enrichment_on_local_ray_captions_each_object_once(stored, bench, tmp_path):
    """The same job with captioning in Ray Data actors (a local Ray instance): every good
    image captioned once, the corrupt ones reported, and a second run skips everything."""
    import functools

    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    from integration.enrich_ray import enrich_collection_ray

    collection, split = stored
    factory = functools.partial(SceneGraphCaptioner.from_benchmark, bench, drop=0.2, seed=3)
    captioner = factory()
    journal = tmp_path / "journal.jsonl"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        report = enrich_collection_ray(
            collection, factory, journal=journal, batch_size=4, concurrency=2
        )
        again = enrich_collection_ray(collection, factory, batch_size=4, concurrency=2)
    finally:
        ray.shutdown()
    assert report.enriched == len(split.gallery) and report.seen == len(split.gallery) + 2
    assert sorted(u for u, _ in report.failed) == sorted(str(generate_uuid5(k)) for k in CORRUPT)
    written = [json.loads(line)["uuid"] for line in journal.read_text().splitlines()]
    assert len(written) == len(set(written)) == len(split.gallery)
    assert again.enriched == 0 and again.skipped == len(split.gallery)
    stored_captions = {
        o.properties["name"]: o.properties["caption"]
        for o in collection.iterator(return_properties=["name", "caption", "captioner"])
        if o.properties.get("captioner") == captioner.id
    }
    names = sorted(stored_captions)
    expected = captioner.caption([CaptionItem(n, None, {"name": n}) for n in names])
    assert [stored_captions[n] for n in names] == expected


def test_caption_faithfulness_counts_right_wrong_missing_and_invented():
    from cir_module.data.benchmark import TIERS
    from cir_module.data.hard import HardObject
    from cir_module.eval.faithfulness import caption_faithfulness

    tier = TIERS["hard"]
    red = HardObject(5, "circle", "red", "small", "solid")
    square = HardObject(0, "square", "green", "large", "hollow")
    scenes = {"a": (square, red), "b": (red,)}
    captions = {
        "a": tier.describe((square, red)),  # all right
        # red said blue; an object invented in an empty cell
        "b": "small solid blue circle at row 2, column 2; small solid red cross at row 4, column 4",
        "unknown": "no scene graph: not counted",
    }
    report = caption_faithfulness(captions, scenes, tier)
    assert report["images"] == 2 and report["objects"] == 3
    assert report["captions_exact"] == 0.5 and report["invented_per_image"] == 0.5
    assert report["objects_found"] == 1.0
    assert report["attributes"]["color"] == {"right": 2 / 3, "wrong": 1 / 3, "missing": 0.0}
    assert report["attributes"]["shape"] == {"right": 1.0, "wrong": 0.0, "missing": 0.0}
    # An object left out, and one whose phrase omits its texture.
    captions = {"a": "large green square at row 1, column 1"}
    report = caption_faithfulness(captions, scenes, tier)
    assert report["objects_found"] == 0.5
    assert report["attributes"]["texture"] == {"right": 0.0, "wrong": 0.0, "missing": 1.0}
    assert report["attributes"]["size"] == {"right": 0.5, "wrong": 0.0, "missing": 0.5}
