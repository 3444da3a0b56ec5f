"""The main job on the embedded default: a local Weaviate and our service, a sample gallery
of generated shape scenes, and composed queries from the v4 Python client, ranked and printed."""

from __future__ import annotations

import contextlib
import logging
import random
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from weaviate import WeaviateClient
from weaviate.classes.query import Filter, MetadataQuery, Rerank

from cir_module.checkpoints import shipped_checkpoint
from cir_module.data.benchmark import make_triplet
from cir_module.data.shapes import Scene, describe, random_scene, render
from cir_module.images import encode_image_base64
from cir_module.query import compose_query
from integration.folder_ingest import content_uuid, ensure_folder_collection, ingest_folder
from integration.ingest import ingest_objects
from integration.schema import create_image_collection
from integration.stack import connect, local_stack
from integration.ui_app import DEFAULT_UI_PORT, UIConfig, serve_ui
from integration.ui_page import Example

__all__ = [
    "SampleQuery",
    "demo_queries",
    "run_demo",
    "run_demo_ui",
    "sample_gallery",
    "write_sample_folder",
]

log = logging.getLogger(__name__)

# The collection of ``cir demo --ui`` (its Weaviate is a fresh, temporary one).
DEMO_COLLECTION = "CIRDemo"


@dataclass(frozen=True)
class SampleQuery:
    reference: Scene
    text: str
    target: Scene


def sample_gallery(size: int, num_queries: int, seed: int) -> tuple[list[Scene], list[SampleQuery]]:
    """Queries drawn like the benchmark's (each with its target and four hard negatives, scenes
    one edit away from the target) plus random scenes up to ``size``."""
    scenes: list[Scene] = []
    queries: list[SampleQuery] = []
    for index in range(num_queries):
        triplet = make_triplet(seed, "demo", index)
        queries.append(SampleQuery(triplet.reference, triplet.caption.text, triplet.target))
        scenes += [s for s in triplet.scenes if s not in scenes]
    rng = random.Random(seed)
    while len(scenes) < size:
        scene = random_scene(rng)
        if scene not in scenes:
            scenes.append(scene)
    rng.shuffle(scenes)
    return scenes, queries


def run_demo(
    checkpoint: str | Path | None = None,
    gallery_size: int = 100,
    num_queries: int = 5,
    seed: int = 0,
    top_k: int = 5,
) -> list[list[str]]:
    """Run the demo; returns, per query, the scenes of the top results in rank order."""
    checkpoint = checkpoint or shipped_checkpoint()
    with local_stack(checkpoint) as stack, connect(stack.weaviate) as client:
        print(
            f"Weaviate {client.get_meta()['version']} at {stack.weaviate.url}, "
            f"service at {stack.service.url} serving {checkpoint}"
        )
        return demo_queries(client, gallery_size, num_queries, seed, top_k)


def demo_queries(
    client: WeaviateClient,
    gallery_size: int = 100,
    num_queries: int = 5,
    seed: int = 0,
    top_k: int = 5,
) -> list[list[str]]:
    """The demo's gallery and composed queries against the Weaviate ``client`` is connected to
    (local, or a compose stack), in a collection of its own that is deleted at the end; returns,
    per query, the scenes of the top results in rank order."""
    scenes, queries = sample_gallery(gallery_size, num_queries, seed)
    images = {s: encode_image_base64(im) for s, im in render_gallery(scenes, seed).items()}
    name = f"CIRDemo_{uuid.uuid4().hex[:8]}"
    rankings: list[list[str]] = []
    try:
        collection = create_image_collection(client, name, text_properties=("scene",))
        report = ingest_objects(
            collection,
            ((describe(s), {"image": images[s], "scene": describe(s)}) for s in scenes),
        )
        if report.failed:
            raise RuntimeError(f"{len(report.failed)} objects failed: {report.failed[:3]}")
        print(f"ingested {report.inserted} images into {name}\n")
        for n, q in enumerate(queries, 1):
            composed = compose_query(images[q.reference], q.text)
            # The reference is no answer to "this, but changed" (CIRR's protocol excludes it).
            result = collection.query.near_text(
                query=composed,
                limit=top_k,
                filters=Filter.by_property("scene").not_equal(describe(q.reference)),
                rerank=Rerank(prop="image", query=composed),
                return_properties=["scene"],
                return_metadata=MetadataQuery(distance=True),
            )
            print(f"query {n}: reference  {describe(q.reference)}")
            print(f'         modification "{q.text}"')
            print(f"         target     {describe(q.target)}")
            print("    results (reference excluded):")
            ranked = []
            for rank, obj in enumerate(result.objects, 1):
                scene = obj.properties["scene"]
                mark = "  <- target" if scene == describe(q.target) else ""
                print(
                    f"    {rank}. distance {obj.metadata.distance:.4f}  rerank "
                    f"{obj.metadata.rerank_score:.4f}  {scene}{mark}"
                )
                ranked.append(scene)
            rankings.append(ranked)
            print()
        hits = sum(r[:1] == [describe(q.target)] for r, q in zip(rankings, queries, strict=True))
        print(
            f"target ranked first for {hits} of {len(queries)} queries "
            f"(gallery of {len(scenes)} images incl. 4 hard negatives per query)"
        )
    finally:
        client.collections.delete(name)
    return rankings


def render_gallery(scenes: list[Scene], seed: int) -> dict[Scene, Image.Image]:
    """The gallery's pictures, rendered in order with one generator seeded from ``seed``: the
    printed demo and the page (``cir demo --ui``) show the same images for the same seed."""
    image_rng = random.Random(seed + 1)
    return {scene: render(scene, image_rng) for scene in scenes}


def write_sample_folder(folder: Path, scenes: list[Scene], seed: int) -> dict[Scene, Path]:
    """The gallery as PNG files in ``folder``, each named for its scene (so that ``cir
    ingest`` titles it with its description); the paths by scene."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for scene, image in render_gallery(scenes, seed).items():
        path = folder / f"{describe(scene).replace(';', ',')}.png"
        image.save(path, format="PNG")
        paths[scene] = path
    return paths


def run_demo_ui(
    checkpoint: str | Path | None = None,
    gallery_size: int = 100,
    num_queries: int = 5,
    seed: int = 0,
    gallery_dir: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = DEFAULT_UI_PORT,
) -> None:
    """``cir demo --ui``: the sample gallery written as PNG files, put into a local Weaviate
    with ``cir ingest``'s code, and the search page served on it (the demo's queries as
    examples, each with its target marked) until Ctrl-C."""
    checkpoint = checkpoint or shipped_checkpoint()
    scenes, queries = sample_gallery(gallery_size, num_queries, seed)
    with contextlib.ExitStack() as stack_of:
        if gallery_dir is None:
            gallery_dir = stack_of.enter_context(tempfile.TemporaryDirectory(prefix="cir-demo-"))
        paths = write_sample_folder(Path(gallery_dir), scenes, seed)
        stack = stack_of.enter_context(local_stack(checkpoint))
        print(f"Weaviate at {stack.weaviate.url}, service at {stack.service.url} ({checkpoint})")
        with connect(stack.weaviate) as client:
            collection = ensure_folder_collection(client, DEMO_COLLECTION)
            report = ingest_folder(collection, Path(gallery_dir))
            if report.failed:
                raise RuntimeError(f"{len(report.failed)} objects failed: {report.failed[:3]}")
        print(f"{len(paths)} sample images in {gallery_dir}, ingested into {DEMO_COLLECTION}")

        def uuid_of(scene: Scene) -> str:
            return content_uuid(paths[scene].read_bytes())

        examples = [
            Example(uuid_of(q.reference), q.text, uuid_of(q.target), describe(q.reference))
            for q in queries
        ]
        config = UIConfig(DEMO_COLLECTION, examples=examples)
        serve_ui(lambda: connect(stack.weaviate), config, host=host, port=port)
