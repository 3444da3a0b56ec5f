"""The main job on the embedded default: a local Weaviate and our service, a sample gallery
of generated shape scenes, and composed queries from the v4 Python client, ranked and printed.

On the hard tier (the default) the service serves the hard tier's first stage and, by default,
the shipped change verifier as its second stage; the gallery is captioned by the verifier's own
captioner (``cir enrich``'s job) and ``rerank`` reads the stored captions. Each query then
prints where its target stood in the first stage alone and after ``rerank``, and the top
result's rationale: the reference's caption and the changes the verifier judged. The base tier
(``cir demo --tier base``) serves the base tier's first stage alone."""

from __future__ import annotations

import base64
import contextlib
import logging
import random
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from weaviate import WeaviateClient
from weaviate.collections import Collection

from cir_module.checkpoints import HARD_TIER_MODEL, shipped_checkpoint, shipped_reranker_for
from cir_module.data.benchmark import TIERS
from cir_module.data.shapes import Scene
from cir_module.images import encode_image_base64
from integration.folder_ingest import (
    TEXT_PROPERTIES,
    content_uuid,
    ensure_folder_collection,
    ingest_folder,
)
from integration.ingest import ingest_objects, object_uuid
from integration.schema import create_image_collection
from integration.search import composed_search
from integration.stack import connect, local_stack
from integration.ui_app import DEFAULT_UI_PORT, UIConfig, serve_ui
from integration.ui_page import Example

__all__ = [
    "SampleQuery",
    "caption_gallery",
    "demo_models",
    "demo_queries",
    "run_demo",
    "run_demo_ui",
    "sample_gallery",
    "write_sample_folder",
]

log = logging.getLogger(__name__)

# How many results the demo reranks (the first stage's top K, Weaviate's limit).
RERANKED = 10

# File names stay well inside the usual 255-byte limit.
MAX_NAME_BYTES = 120

# The collection of ``cir demo --ui`` (its Weaviate is a fresh, temporary one).
DEMO_COLLECTION = "CIRDemo"


@dataclass(frozen=True)
class SampleQuery:
    reference: Scene
    text: str
    target: Scene


def sample_gallery(
    size: int, num_queries: int, seed: int, tier: str = "base"
) -> tuple[list[Scene], list[SampleQuery]]:
    """Queries drawn like the ``tier``'s benchmark (each with its target and hard negatives,
    scenes one edit away from the target) plus random scenes up to ``size``."""
    kind = TIERS[tier]
    scenes: list[Scene] = []
    queries: list[SampleQuery] = []
    for index in range(num_queries):
        triplet = kind.make_triplet(seed, "demo", index)
        queries.append(SampleQuery(triplet.reference, triplet.caption.text, triplet.target))
        scenes += [s for s in triplet.scenes if s not in scenes]
    rng = random.Random(seed)
    while len(scenes) < size:
        scene = kind.random_scene(rng)
        if scene not in scenes:
            scenes.append(scene)
    rng.shuffle(scenes)
    return scenes, queries


def demo_models(checkpoint: str | Path | None, tier: str) -> tuple[str | Path, Path | None]:
    """What the demo serves on ``tier``: the first stage (``checkpoint``, or the tier's shipped
    one) and, on the hard tier, the shipped verifier behind it (the service's default second
    stage there; a checkpoint with none is shown without a second stage). The shipped hard
    first stage without its verifier stops the demo with the command that makes it."""
    if tier != "hard":
        return checkpoint or shipped_checkpoint(), None
    if checkpoint is not None:
        verifier = shipped_reranker_for(checkpoint)
        return checkpoint, Path(verifier) if verifier else None
    checkpoint = shipped_checkpoint(HARD_TIER_MODEL)
    verifier = shipped_reranker_for(checkpoint)
    if verifier is None:
        raise SystemExit(
            f"the hard-tier demo needs the shipped verifier behind {checkpoint}: make it with "
            "`cir vlm train --recipe shapes-hard-verifier ... --ship "
            "cir_module/checkpoints/shapes-hard-verifier` (docs/reranking.md)"
        )
    return checkpoint, Path(verifier)


def run_demo(
    checkpoint: str | Path | None = None,
    gallery_size: int = 100,
    num_queries: int = 5,
    seed: int = 0,
    top_k: int = 5,
    tier: str = "hard",
) -> list[list[str]]:
    """Run the demo; returns, per query, the scenes of the top results in rank order. On the
    hard tier (the default) the checkpoint defaults to the hard tier's first stage, and the
    second stage is the shipped verifier (the service's default behind it), reading captions
    its own captioner stores."""
    checkpoint, verifier = demo_models(checkpoint, tier)
    with local_stack(checkpoint) as stack, connect(stack.weaviate) as client:
        print(
            f"Weaviate {client.get_meta()['version']} at {stack.weaviate.url}, "
            f"service at {stack.service.url} serving {checkpoint}"
            + (f" and the verifier {verifier}" if verifier else "")
        )
        return demo_queries(client, gallery_size, num_queries, seed, top_k, tier, verifier)


def demo_queries(
    client: WeaviateClient,
    gallery_size: int = 100,
    num_queries: int = 5,
    seed: int = 0,
    top_k: int = 5,
    tier: str = "base",
    verifier: str | Path | None = None,
) -> list[list[str]]:
    """The demo's gallery and composed queries against the Weaviate ``client`` is connected to
    (local, or a compose stack), in a collection of its own that is deleted at the end; returns,
    per query, the scenes of the top results in rank order. With ``verifier`` (the folder the
    service serves as its second stage) the gallery is captioned by its captioner, ``rerank``
    reads the captions, and each query shows the target's rank before and after ``rerank`` and
    the top result's rationale."""
    describe = TIERS[tier].describe
    scenes, queries = sample_gallery(gallery_size, num_queries, seed, tier)
    images = {s: encode_image_base64(im) for s, im in render_gallery(scenes, seed, tier).items()}
    name = f"CIRDemo_{uuid.uuid4().hex[:8]}"
    rankings: list[list[str]] = []
    moved = []
    try:
        properties = ("title", "caption") if verifier else ("title",)
        collection = create_image_collection(client, name, text_properties=properties)
        report = ingest_objects(
            collection,
            ((describe(s), {"image": images[s], "title": describe(s)}) for s in scenes),
        )
        if report.failed:
            raise RuntimeError(f"{len(report.failed)} objects failed: {report.failed[:3]}")
        print(f"ingested {report.inserted} images into {name}")
        if verifier:
            caption_gallery(collection, verifier)
        print()
        for n, q in enumerate(queries, 1):
            # The reference is no answer to "this, but changed" (CIRR's protocol excludes it).
            result = composed_search(
                collection,
                base64.b64decode(images[q.reference]),
                q.text,
                limit=max(top_k, RERANKED),
                rerank=True,
                exclude=str(object_uuid(describe(q.reference))),
                text_properties=("title",),
                caption_property="caption" if verifier else None,
            )
            target = describe(q.target)
            print(f"query {n}: reference  {describe(q.reference)}")
            print(f'         modification "{q.text}"')
            print(f"         target     {target}")
            ranks = {hit.title: hit for hit in result.hits}
            if verifier:
                hit = ranks.get(target)
                before = (
                    f"#{hit.first_rank}" if hit and hit.first_rank else f"not in the top {RERANKED}"
                )
                after = f"#{hit.rank}" if hit else f"not in the top {RERANKED}"
                moved.append((hit.first_rank if hit else None, hit.rank if hit else None))
                print(f"         the target: first stage {before}, after rerank {after}")
            print("    results (reference excluded):")
            for hit in result.hits[:top_k]:
                mark = "  <- target" if hit.title == target else ""
                first = f"  (first stage #{hit.first_rank})" if verifier else ""
                print(f"    {hit.rank}. {hit.scores()}{first}  {hit.title}{mark}")
            top = result.hits[0] if result.hits else None
            if verifier and top is not None:
                print(f'    why #1: the reference reads "{result.reference_caption}"')
                print(f'            the changes to #1: "{top.changes}"')
            rankings.append([hit.title or "" for hit in result.hits[:top_k]])
            print()
        hits = sum(r[:1] == [describe(q.target)] for r, q in zip(rankings, queries, strict=True))
        print(
            f"target ranked first for {hits} of {len(queries)} queries "
            f"(gallery of {len(scenes)} images incl. the hard negatives of each query)"
        )
        if verifier:
            first = sum(before == 1 for before, _ in moved)
            up = sum(a is not None and (b is None or a < b) for b, a in moved)
            down = sum(b is not None and (a is None or a > b) for b, a in moved)
            print(
                f"first stage alone: target first for {first} of {len(queries)}; "
                f"rerank moved the target up for {up} and down for {down}"
            )
    finally:
        client.collections.delete(name)
    return rankings


def caption_gallery(collection: Collection, verifier: str | Path) -> None:
    """Store a caption of every image in ``collection`` (its ``caption`` property), written by
    the verifier's own captioner with ``cir enrich``'s job: what ``rerank`` then reads."""
    from cir_module.enrich import trained_vlm_captioner
    from integration.enrich import enrich_collection

    enriched = enrich_collection(collection, trained_vlm_captioner(verifier), batch_size=32)
    if enriched.failed:
        raise RuntimeError(f"captioning failed: {enriched.as_dict()}")
    print(f"captioned {enriched.enriched} images with the verifier's own captioner")


def render_gallery(scenes: list[Scene], seed: int, tier: str = "base") -> dict[Scene, Image.Image]:
    """The gallery's pictures, rendered in order with one generator seeded from ``seed``: the
    printed demo and the page (``cir demo --ui``) show the same images for the same seed."""
    image_rng = random.Random(seed + 1)
    render = TIERS[tier].render
    return {scene: render(scene, image_rng) for scene in scenes}


def write_sample_folder(
    folder: Path, scenes: list[Scene], seed: int, tier: str = "base"
) -> dict[Scene, Path]:
    """The gallery as PNG files in ``folder``, each named for its scene (so that ``cir
    ingest`` titles it with its description; a description longer than a file name may be,
    as the hard tier's are, is cut at a word and numbered); the paths by scene."""
    folder.mkdir(parents=True, exist_ok=True)
    describe = TIERS[tier].describe
    paths = {}
    for n, (scene, image) in enumerate(render_gallery(scenes, seed, tier).items(), 1):
        name = describe(scene).replace(";", ",")
        if len(name.encode()) > MAX_NAME_BYTES:
            name = f"{name[:MAX_NAME_BYTES].rsplit(' ', 1)[0].rstrip(',')} ... #{n}"
        path = folder / f"{name}.png"
        image.save(path, format="PNG")
        paths[scene] = path
    return paths


def run_demo_ui(
    checkpoint: str | Path | None = None,
    gallery_size: int = 100,
    num_queries: int = 5,
    seed: int = 0,
    tier: str = "hard",
    gallery_dir: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = DEFAULT_UI_PORT,
) -> None:
    """``cir demo --ui``: the sample gallery written as PNG files, put into a local Weaviate
    with ``cir ingest``'s code, and the search page served on it (the demo's queries as
    examples, each with its target marked) until Ctrl-C. On the hard tier the gallery is
    captioned as in :func:`run_demo` and the page reranks on the stored captions, showing each
    result's first-stage rank and its rationale."""
    checkpoint, verifier = demo_models(checkpoint, tier)
    scenes, queries = sample_gallery(gallery_size, num_queries, seed, tier)
    with contextlib.ExitStack() as stack_of:
        if gallery_dir is None:
            gallery_dir = stack_of.enter_context(tempfile.TemporaryDirectory(prefix="cir-demo-"))
        paths = write_sample_folder(Path(gallery_dir), scenes, seed, tier)
        stack = stack_of.enter_context(local_stack(checkpoint))
        print(f"Weaviate at {stack.weaviate.url}, service at {stack.service.url} ({checkpoint})")
        with connect(stack.weaviate) as client:
            if verifier:
                # The caption is a plain stored text here (not mixed into the vector): the
                # first stage stays the image embedding the hard tier's model was trained on.
                create_image_collection(
                    client, DEMO_COLLECTION, text_properties=(*TEXT_PROPERTIES, "caption")
                )
            collection = ensure_folder_collection(client, DEMO_COLLECTION)
            report = ingest_folder(collection, Path(gallery_dir))
            if report.failed:
                raise RuntimeError(f"{len(report.failed)} objects failed: {report.failed[:3]}")
            if verifier:
                caption_gallery(collection, verifier)
        print(f"{len(paths)} sample images in {gallery_dir}, ingested into {DEMO_COLLECTION}")

        def uuid_of(scene: Scene) -> str:
            return content_uuid(paths[scene].read_bytes())

        describe = TIERS[tier].describe
        examples = [
            Example(uuid_of(q.reference), q.text, uuid_of(q.target), describe(q.reference))
            for q in queries
        ]
        config = UIConfig(
            DEMO_COLLECTION, examples=examples, caption_property="caption" if verifier else None
        )
        serve_ui(lambda: connect(stack.weaviate), config, host=host, port=port)
