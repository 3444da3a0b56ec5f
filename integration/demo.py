"""The main job on the embedded default: a local Weaviate and our service, a sample gallery
of generated shape scenes, and composed queries from the v4 Python client, ranked and printed."""

from __future__ import annotations

import logging
import random
import uuid
from dataclasses import dataclass
from pathlib import Path

from weaviate.classes.query import MetadataQuery, Rerank

from cir_module.data.shapes import Scene, describe, modify, random_scene, render
from cir_module.images import encode_image_base64
from cir_module.query import compose_query
from integration.ingest import ingest_objects
from integration.schema import create_image_collection
from integration.stack import connect, local_stack
from integration.weaviate_server import cache_dir

__all__ = ["SampleQuery", "default_checkpoint", "run_demo", "sample_gallery"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleQuery:
    reference: Scene
    text: str
    target: Scene


def sample_gallery(size: int, num_queries: int, seed: int) -> tuple[list[Scene], list[SampleQuery]]:
    """Distinct scenes and queries whose reference and target are both in the gallery."""
    rng = random.Random(seed)
    scenes: list[Scene] = []
    queries: list[SampleQuery] = []
    while len(queries) < num_queries:
        reference = random_scene(rng)
        target, text = modify(reference, rng)
        if reference not in scenes and target not in scenes and target != reference:
            scenes += [reference, target]
            queries.append(SampleQuery(reference, text, target))
    while len(scenes) < size:
        scene = random_scene(rng)
        if scene not in scenes:
            scenes.append(scene)
    rng.shuffle(scenes)
    return scenes, queries


def default_checkpoint() -> Path:
    """A model built from the ``tiny-clip`` config (random weights), kept in the cache."""
    from cir_module.models import create_model

    path = cache_dir() / "models" / "tiny-clip-demo"
    if not (path / "cir_config.json").is_file():
        create_model("tiny-clip").save_pretrained(path)
    return path


def run_demo(
    checkpoint: str | Path | None = None,
    gallery_size: int = 60,
    num_queries: int = 3,
    seed: int = 0,
    top_k: int = 5,
) -> list[list[str]]:
    """Run the demo; returns, per query, the scenes of the top results in rank order."""
    if checkpoint is None:
        checkpoint = default_checkpoint()
        log.warning(
            "no --checkpoint: serving %s, a tiny-clip model with random weights; the pipeline "
            "is real but rankings only reflect untrained features",
            checkpoint,
        )
    scenes, queries = sample_gallery(gallery_size, num_queries, seed)
    image_rng = random.Random(seed + 1)
    images = {s: encode_image_base64(render(s, image_rng)) for s in scenes}
    name = f"CIRDemo_{uuid.uuid4().hex[:8]}"
    rankings: list[list[str]] = []
    with local_stack(checkpoint) as stack, connect(stack.weaviate) as client:
        print(
            f"Weaviate {client.get_meta()['version']} at {stack.weaviate.url}, "
            f"service at {stack.service.url} serving {checkpoint}"
        )
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
                result = collection.query.near_text(
                    query=composed,
                    limit=top_k,
                    rerank=Rerank(prop="image", query=composed),
                    return_properties=["scene"],
                    return_metadata=MetadataQuery(distance=True),
                )
                print(f"query {n}: reference  {describe(q.reference)}")
                print(f'         modification "{q.text}"')
                print(f"         target     {describe(q.target)}")
                ranked = []
                for rank, obj in enumerate(result.objects, 1):
                    scene = obj.properties["scene"]
                    mark = (
                        "  <- target"
                        if scene == describe(q.target)
                        else "  <- reference"
                        if scene == describe(q.reference)
                        else ""
                    )
                    print(
                        f"    {rank}. distance {obj.metadata.distance:.4f}  rerank "
                        f"{obj.metadata.rerank_score:.4f}  {scene}{mark}"
                    )
                    ranked.append(scene)
                rankings.append(ranked)
                print()
        finally:
            client.collections.delete(name)
    return rankings
