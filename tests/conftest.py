"""Shared fixtures: a tiny random model saved to disk, the real service, the real Weaviate."""

from __future__ import annotations

import base64
import io
import logging
import os
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

# authlib (a weaviate-client dependency) warns about its own httpx integration on import.
warnings.filterwarnings("ignore", message="The httpx module is deprecated")

from weaviate.collections import Collection

from cir_module.data.shapes import random_images
from cir_module.models import CIRModel, create_model, load_model
from integration.ingest import IngestReport, ingest_until_stored
from integration.service_process import ServiceProcess
from integration.stack import connect
from integration.weaviate_server import WeaviateServer

log = logging.getLogger("tests")
logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
SERVED: dict[str, str] = {}


def png_b64(image: Image.Image, format: str = "PNG", **save_args: object) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **save_args)
    return base64.b64encode(buffer.getvalue()).decode()


def scene_images(n: int, seed: int = 0) -> list[Image.Image]:
    """``n`` distinct rendered shape scenes."""
    return random_images(n, seed)


def ingest_with_fault(
    target: Collection | Sequence[Collection],
    objects: list[tuple[str, dict]],
    *,
    watched: Collection,
    at: int,
    fault: Callable[[], object],
    **options: Any,
) -> tuple[IngestReport, list[IngestReport]]:
    """``ingest_until_stored(target, objects, **options)`` while another thread waits until
    ``watched`` holds ``at`` objects, then runs ``fault`` once. Returns the final report and
    every round's; fails the test if the import ended before the fault came."""
    fault_at: list[int] = []

    def inject() -> None:
        deadline = time.monotonic() + 300  # a bound on the wait, not a measurement
        while time.monotonic() < deadline and len(watched) < at:
            time.sleep(0.02)
        fault_at.append(len(watched))
        fault()

    chaos = threading.Thread(target=inject)
    chaos.start()
    try:
        final, rounds = ingest_until_stored(target, objects, **options)
    finally:
        chaos.join(timeout=300)
    assert fault_at and fault_at[0] < len(objects), f"the import ended before the fault {fault_at}"
    return final, rounds


def rerank_in_weaviate(
    checkpoint: Path,
    env: dict[str, str],
    gallery: Sequence[Image.Image],
    text: str,
    name: str,
    *,
    captions: Sequence[str] | None = None,
    prop: str = "image",
) -> tuple[list[int], list[float], dict]:
    """A real Weaviate whose inference container is the service (``env`` its reranker
    settings): ``gallery`` ingested (with ``captions`` in a ``caption`` property, as ``cir
    enrich`` writes them), then one composed query (``gallery[0]`` + ``text``, and with
    captions the reference's, ``captions[0]``) through ``nearText`` with ``rerank`` on
    ``prop``. Returns the results' gallery indices and rerank scores, best first, and the
    service's ``/meta`` reranker entry after the query."""
    import httpx
    from weaviate.classes.query import Rerank

    from cir_module import compose_query
    from integration.ingest import ingest_objects
    from integration.schema import create_image_collection

    docs = [png_b64(im) for im in gallery]
    with (
        ServiceProcess(checkpoint, env=env) as service,
        WeaviateServer(service.url) as server,
        connect(server) as client,
    ):
        try:
            properties = ("key", "caption") if captions else ("key",)
            collection = create_image_collection(client, name, text_properties=properties)
            rows = [{"image": b, "key": str(i)} for i, b in enumerate(docs)]
            for row, caption in zip(rows, captions or (), strict=False):
                if caption is not None:  # None: an object the enrichment job has not reached
                    row["caption"] = caption
            report = ingest_objects(collection, ((f"g{i}", r) for i, r in enumerate(rows)))
            assert report.failed == []
            query = compose_query(docs[0], text, caption=captions[0] if captions else None)
            result = collection.query.near_text(
                query=query,
                limit=len(docs),
                rerank=Rerank(prop=prop, query=query),
                return_properties=["key"],
            )
            meta = httpx.get(f"{service.url}/meta").json()["reranker"]
        finally:
            client.collections.delete(name)
    keys = [int(o.properties["key"]) for o in result.objects]
    return keys, [o.metadata.rerank_score for o in result.objects], meta


def generate_in_weaviate(
    checkpoint: Path,
    chat_model: Path,
    stored: dict[str, Image.Image],
    reference: Image.Image,
    text: str,
    prompt: str,
    *,
    max_tokens: int | None = None,
    then: Callable[[str], Any] | None = None,
) -> tuple[list, Any]:
    """A real Weaviate with ``generative-openai`` pointed at the service (its chat model
    ``chat_model``): ``stored`` ingested under their titles, then one composed query
    (``reference`` + ``text``) through ``generate.near_text`` with ``prompt`` per result and
    the reference as the query's image. Returns the result objects (with their ``title``) and
    what ``then(service_url)`` returns, called while the service is up."""
    from weaviate.classes.generate import GenerativeConfig, GenerativeParameters

    from cir_module import compose_query
    from integration.schema import create_image_collection

    modules = "multi2vec-clip,reranker-transformers,generative-openai"
    env = {"ENABLE_MODULES": modules, "OPENAI_APIKEY": "local"}  # any key: the service has none
    reference_b64 = png_b64(reference)
    with (
        ServiceProcess(checkpoint, env={"CIR_CHAT_MODEL": str(chat_model)}) as service,
        WeaviateServer(service.url, env=env) as server,
        connect(server) as client,
    ):
        name = f"CIRGenerate_{uuid.uuid4().hex[:8]}"
        try:
            collection = create_image_collection(client, name)
            for title, image in stored.items():
                collection.data.insert({"image": png_b64(image), "title": title})
            result = collection.generate.near_text(
                query=compose_query(reference_b64, text),
                limit=len(stored),
                single_prompt=GenerativeParameters.single_prompt(
                    prompt=prompt, images=[reference_b64], image_properties=["image"]
                ),
                # A model name Weaviate does not know: for a known one it first downloads
                # tiktoken's vocabulary to count tokens, which fails offline.
                generative_provider=GenerativeConfig.openai(
                    base_url=service.url, model="cir-rationale", max_tokens=max_tokens
                ),
                # Weaviate hands the module only the properties it returns, and a blob is
                # returned only when asked for: without "image" here no stored image is sent.
                return_properties=["title", "image"],
            )
            extra = then(service.url) if then else None
        finally:
            client.collections.delete(name)
    return list(result.objects), extra


def cross_fusion_conv_stem() -> CIRModel:
    """tiny-clip with the token-level (cross) fusion head and the conv stem: every graph
    input is used, and the stem's convolutions are exported too."""
    import dataclasses

    from cir_module.models import get_model_config

    config = get_model_config("tiny-clip")
    config = dataclasses.replace(
        config,
        name="tiny-clip-cross",
        fusion=dataclasses.replace(config.fusion, kind="cross", hidden_dim=32, layers=1, heads=4),
        pyramid=dataclasses.replace(config.pyramid, stem="conv"),
    )
    return create_model(config)


@pytest.fixture(scope="session", autouse=True)
def export_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The exports ``cir serve`` makes (``CIR_EXPORT_CACHE_DIR``) go to the session's own
    folder, for every service the tests start, never to the user's cache."""
    path = tmp_path_factory.mktemp("export-cache")
    before = os.environ.get("CIR_EXPORT_CACHE_DIR")
    os.environ["CIR_EXPORT_CACHE_DIR"] = str(path)
    try:
        yield path
    finally:
        if before is None:
            os.environ.pop("CIR_EXPORT_CACHE_DIR", None)
        else:
            os.environ["CIR_EXPORT_CACHE_DIR"] = before


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny-clip model (3 scales, random weights) written as a checkpoint folder."""
    path = tmp_path_factory.mktemp("tiny-clip")
    create_model("tiny-clip").save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def local_model(tiny_checkpoint: Path) -> CIRModel:
    """The same checkpoint loaded in-process, to compare the service's answers with."""
    return load_model(tiny_checkpoint)


@pytest.fixture(scope="session")
def service(tiny_checkpoint: Path) -> Iterator[ServiceProcess]:
    """The real service (``cir serve``) over HTTP on 127.0.0.1."""
    with ServiceProcess(tiny_checkpoint) as proc:
        yield proc


@pytest.fixture(scope="session")
def weaviate_server(service: ServiceProcess) -> Iterator[WeaviateServer]:
    """A real Weaviate (pinned release built with go install) using our service."""
    with WeaviateServer(service.url) as server:
        log.info("integration tests run against Weaviate %s", server.served_version)
        SERVED["weaviate"] = f"{server.served_version} ({server.url}, built from {server.binary})"
        yield server


@pytest.fixture
def client(weaviate_server: WeaviateServer):
    with connect(weaviate_server) as c:
        yield c


@pytest.fixture
def collection_name(client) -> Iterator[str]:
    """A unique collection name, deleted afterwards whatever happens."""
    name = f"CIRTest_{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        client.collections.delete(name)


def pytest_terminal_summary(terminalreporter) -> None:
    if "weaviate" in SERVED:
        terminalreporter.write_line(f"real Weaviate server used: {SERVED['weaviate']}")
