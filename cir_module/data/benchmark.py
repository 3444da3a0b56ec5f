"""The synthetic "shapes" CIR benchmark, written in CIRR's annotation format.

Layout under ``out_dir`` (``<split>`` is ``train``, ``val`` or ``test``)::

    benchmark.json                              generator parameters
    captions/cap.shapes.<split>.json            CIRR triplets (pairid, reference, target_hard,
                                                target_soft, caption, img_set)
    image_splits/split.shapes.<split>.json      {name: "./images/<split>/<name>.png"}
    scene_graphs/scenes.shapes.<split>.json     {name: scene_to_dict(scene)}
    edits/edits.shapes.<split>.json             per pairid: operation, reference, template
    images/<split>/<name>.png

Each triplet is a reference scene, a text and the target scene one edit away, plus hard
negatives: scenes one edit away from the target (about half of them editing the object the text
talks about). A split's gallery is all of its images; identical scenes share one image.

Tiers (``tier``, one :class:`Tier` each in ``TIERS``): ``base`` is the benchmark above (3x3
grid, one edit per text); ``hard`` (:mod:`cir_module.data.hard`) draws 3-8 textured objects on a
4x4 grid and edits that need composition and reasoning, each hard negative undoing exactly one
requested change; its val and test galleries hold one hard negative per target (training
groups keep four; ``Tier.gallery_negatives``). The writer, the file layout and the determinism
rules are the same; a hard folder's ``benchmark.json`` names its tier, and readers
(:func:`load_scene_graphs`, :func:`tier_of`) follow it. A base folder is byte-identical to what
this generator wrote before tiers existed (its ``benchmark.json`` has no ``tier`` key).

Determinism: item ``i`` of a split is drawn from its own ``random.Random`` seeded by
(seed, split, i, attempt), and an image's pixels from (seed, split, scene), so nothing depends
on generation order or on ``workers``. Scenes and texts use separate generators, so the test
split holds the same triplets whichever ``phrasing_for_test`` is asked for. Splits are drawn
test, val, train, each rejecting items that touch an earlier split's scene: the splits share
no scene.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Any

from PIL import Image

from cir_module.data import hard, shapes
from cir_module.data.shapes import (
    PHRASINGS,
    Caption,
    Edit,
    Scene,
    apply_edit,
    phrase_edit,
    random_edit,
    random_scene,
)
from cir_module.vlm.changes import list_changes

__all__ = [
    "BENCHMARK_NAME",
    "SPLITS",
    "TIERS",
    "VERSION",
    "Tier",
    "Triplet",
    "generate_benchmark",
    "load_edit_ops",
    "load_scene_graphs",
    "make_triplet",
    "tier_of",
]

log = logging.getLogger(__name__)

BENCHMARK_NAME = "shapes"
VERSION = "shapes-1"
SPLITS = ("train", "val", "test")
# Held-out splits first: train, the largest, then avoids their scenes, not the other way.
_GENERATION_ORDER = ("test", "val", "train")
_MAX_ATTEMPTS = 1000
_OUTPUTS = ("benchmark.json", "captions", "image_splits", "scene_graphs", "edits", "images")


@dataclass(frozen=True)
class Triplet:
    """A reference, its edit and text, the target, hard negatives and the img_set order."""

    reference: Scene
    edit: Edit
    target: Scene
    caption: Caption
    negatives: tuple[Scene, ...]
    # Permutation of [reference, target, *negatives] giving img_set["members"].
    member_order: tuple[int, ...]

    @property
    def scenes(self) -> tuple[Scene, ...]:
        return (self.reference, self.target, *self.negatives)


def _hard_negatives(
    reference: Scene,
    target: Scene,
    edit: Edit,
    rng: random.Random,
    count: int,
    excluded: frozenset[Scene] | set[Scene],
) -> list[Scene] | None:
    """``count`` distinct scenes one edit from ``target``, or None if none can be found."""
    negatives: list[Scene] = []
    seen = {reference, target}
    for _ in range(50 * count):
        if len(negatives) == count:
            break
        # Editing the object the text is about gives the hardest negatives ("right place,
        # wrong colour"); editing any object keeps the rest of the scene in play too.
        focus = edit.new if edit.new is not None and rng.random() < 0.5 else None
        negative = apply_edit(target, random_edit(target, rng, obj=focus))
        if negative not in seen and negative not in excluded:
            seen.add(negative)
            negatives.append(negative)
    return negatives if len(negatives) == count else None


def make_triplet(
    seed: int,
    split: str,
    index: int,
    *,
    phrasing: str = "train",
    num_hard_negatives: int = 4,
    excluded: frozenset[Scene] | set[Scene] = frozenset(),
) -> Triplet:
    """Item ``index`` of ``split``: a function of its arguments only.

    Attempts whose reference, target or negatives fall in ``excluded`` (the scenes of the
    splits drawn before) are redrawn with the next attempt number.
    """
    for attempt in range(_MAX_ATTEMPTS):
        key = f"{BENCHMARK_NAME}:{seed}:{split}:{index}:{attempt}"
        rng = random.Random(f"{key}:scene")
        reference = random_scene(rng)
        edit = random_edit(reference, rng)
        target = apply_edit(reference, edit)
        if reference in excluded or target in excluded:
            continue
        negatives = _hard_negatives(reference, target, edit, rng, num_hard_negatives, excluded)
        if negatives is None:
            continue
        order = list(range(2 + num_hard_negatives))
        rng.shuffle(order)
        caption = phrase_edit(reference, edit, random.Random(f"{key}:text"), phrasing)
        return Triplet(reference, edit, target, caption, tuple(negatives), tuple(order))
    raise RuntimeError(f"no valid triplet for {split} item {index} in {_MAX_ATTEMPTS} attempts")


def _base_record(triplet: Triplet) -> dict[str, Any]:
    return {
        "op": triplet.edit.op,
        "reference": triplet.caption.reference,
        "template": triplet.caption.template,
    }


@dataclass(frozen=True)
class Tier:
    """What differs between the benchmark's tiers: how a triplet is drawn, how a scene is
    drawn, keyed and (de)serialised, what the edits/ file records of a triplet, and the per-cell
    attributes a scene head reads (the first is the one whose absence marks an empty cell)."""

    name: str
    version: str
    make_triplet: Callable[..., Any]
    render: Callable[..., Image.Image]
    # A random scene (rng, min_objects, max_objects) and a scene's words, for models that
    # learn to see (the VLM's vision and caption stages) from scenes drawn on the fly.
    random_scene: Callable[..., Any]
    describe: Callable[[Any], str]
    max_objects: int
    scene_key: Callable[[Any], str]
    scene_to_dict: Callable[[Any], list[dict[str, Any]]]
    scene_from_dict: Callable[[Any], Any]
    edit_record: Callable[[Any], dict[str, Any]]
    # The grid's cells as a description names them ("top-left", "row 1, column 2").
    cell_names: tuple[str, ...]
    attributes: tuple[tuple[str, tuple[str, ...]], ...]
    # Seeds each image's pixels; the base tier's is the benchmark's name, as before tiers.
    rng_prefix: str
    # The words of each phrasing set, per kind of value (``WORDS`` of the tier's phrasing):
    # what scripts/phrasing_diagnosis.py compares under the text tower.
    phrasing_words: dict[str, dict[str, dict[str, tuple[str, ...]]]]
    # Hard negatives per val/test triplet, when fewer than the training split's: what the
    # evaluation gallery holds beside each target. None: as many as in training.
    gallery_negatives: int | None = None

    @property
    def grid_cells(self) -> int:
        return len(self.cell_names)


TIERS: dict[str, Tier] = {
    "base": Tier(
        name="base",
        version=VERSION,
        make_triplet=make_triplet,
        render=shapes.render,
        random_scene=shapes.random_scene,
        describe=shapes.describe,
        max_objects=shapes.MAX_OBJECTS,
        scene_key=shapes.scene_key,
        scene_to_dict=shapes.scene_to_dict,
        scene_from_dict=shapes.scene_from_dict,
        edit_record=_base_record,
        cell_names=shapes.CELL_NAMES,
        attributes=(
            ("shape", shapes.SHAPES),
            ("color", tuple(shapes.COLORS)),
            ("size", shapes.SIZES),
        ),
        rng_prefix=BENCHMARK_NAME,
        phrasing_words=shapes.WORDS,
    ),
    "hard": Tier(
        name="hard",
        version="shapes-hard-1",
        make_triplet=hard.make_hard_triplet,
        render=hard.render,
        random_scene=hard.random_scene,
        describe=hard.describe,
        max_objects=hard.MAX_OBJECTS,
        scene_key=hard.scene_key,
        scene_to_dict=hard.scene_to_dict,
        scene_from_dict=hard.scene_from_dict,
        edit_record=lambda triplet: triplet.record,
        cell_names=hard.CELL_NAMES,
        attributes=(
            ("shape", shapes.SHAPES),
            ("color", tuple(shapes.COLORS)),
            ("size", hard.SIZES),
            ("texture", hard.TEXTURES),
        ),
        rng_prefix="hard",
        phrasing_words=hard.phrasing.WORDS,
        # With all four, the recipe's first stage sits near chance inside a query's image set
        # (R@1 25.5, Rsubset@1 32.8 of 20 by chance; docs/results.md). One hard negative in
        # the gallery leaves that pairwise choice, the room a reranker is measured on; training
        # keeps four, so the loss still sees every kind of wrong answer.
        gallery_negatives=1,
    ),
}


def describe_changes(describe: Callable[[Any], str], before: Any, after: Any) -> str:
    """What changed from scene ``before`` to scene ``after``, cell by cell in reading order:
    an object added, removed, or become another (``describe`` is the tier's, applied to one
    object at a time), or ``nothing changed``."""
    old = {obj.cell: describe((obj,)) for obj in before}
    new = {obj.cell: describe((obj,)) for obj in after}
    return list_changes(old, new)


def tier_of(out_dir: str | Path) -> Tier:
    """The tier of a benchmark folder, from its ``benchmark.json`` (no file, or no ``tier``
    key: the base tier)."""
    path = Path(out_dir) / "benchmark.json"
    name = (
        json.loads(path.read_text(encoding="utf-8")).get("tier", "base")
        if path.exists()
        else "base"
    )
    if name not in TIERS:
        raise ValueError(f"{path} names an unknown tier {name!r} (known: {', '.join(TIERS)})")
    return TIERS[name]


def _render_one(job: tuple[str, Any, int, str, int, str]) -> None:
    path, scene, seed, split, size, tier_name = job
    tier = TIERS[tier_name]
    key = f"{tier.rng_prefix}:{seed}:{split}:image:{tier.scene_key(scene)}"
    image = tier.render(scene, random.Random(key), size=size)
    # Fast settings: 100k small images; PNG stays lossless so pixels are exact.
    image.save(path, format="PNG", optimize=False, compress_level=1)


def _render_all(jobs: Sequence[tuple[str, Any, int, str, int, str]], workers: int) -> None:
    if workers <= 1 or len(jobs) < 256:
        for job in jobs:
            _render_one(job)
        return
    # fork where there is one: a spawned worker re-imports cir_module, torch included (~5 s).
    # The children only draw and write PNGs (numpy, PIL), nothing that a parent thread's lock
    # copied by fork could block.
    method = "fork" if "fork" in get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(workers, mp_context=get_context(method)) as pool:
        for _ in pool.map(_render_one, jobs, chunksize=max(16, len(jobs) // (8 * workers))):
            pass


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, separators=(",", ":")) + "\n", encoding="utf-8")


def _annotations(
    split: str, triplets: Iterable[Any], tier: Tier
) -> tuple[dict[Any, str], list[dict[str, Any]], list[dict[str, Any]]]:
    """Image names (one per unique scene, named as first met), captions and edit notes."""
    names: dict[Any, str] = {}
    captions: list[dict[str, Any]] = []
    edits: list[dict[str, Any]] = []
    for pairid, triplet in enumerate(triplets):
        members_scenes = [triplet.scenes[i] for i in triplet.member_order]
        # Named in img_set order, which is shuffled: the target's name is not always the
        # reference's plus one, a shortcut that a baseline could otherwise exploit.
        for scene in members_scenes:
            names.setdefault(scene, f"{BENCHMARK_NAME}-{split}-{len(names)}")
        members = [names[scene] for scene in members_scenes]
        reference, target = names[triplet.reference], names[triplet.target]
        captions.append(
            {
                "pairid": pairid,
                "reference": reference,
                "target_hard": target,
                "target_soft": {target: 1.0},
                "caption": triplet.caption.text,
                "img_set": {
                    "id": pairid,
                    "members": members,
                    "reference_rank": members.index(reference),
                    "target_rank": members.index(target),
                },
            }
        )
        edits.append({"pairid": pairid, **tier.edit_record(triplet)})
    return names, captions, edits


def _prepare(out_dir: Path, overwrite: bool) -> None:
    existing = [out_dir / name for name in _OUTPUTS if (out_dir / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out_dir} already holds a benchmark; pass overwrite=True")
    # Only what this generator writes is removed, so a wrong out_dir loses nothing else.
    for path in existing:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def generate_benchmark(
    out_dir: str | Path,
    *,
    seed: int = 0,
    n_train: int = 20000,
    n_val: int = 1000,
    n_test: int = 1000,
    image_size: int = 128,
    phrasing_for_test: str = "train",
    num_hard_negatives: int = 4,
    workers: int = 1,
    overwrite: bool = False,
    tier: str = "base",
) -> dict[str, Any]:
    """Write the benchmark under ``out_dir``; returns counts per split, images and seconds.

    Same arguments give byte-identical annotation files and identical images whatever
    ``workers`` is. ``phrasing_for_test="heldout"`` words the test texts with the held-out
    templates and synonyms (same scenes and edits as with ``"train"``). ``tier`` is a key of
    ``TIERS``. ``num_hard_negatives`` is per training triplet; val and test triplets get fewer
    where the tier's ``gallery_negatives`` says so (recorded in ``benchmark.json``).
    """
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {', '.join(TIERS)}, not {tier!r}")
    chosen = TIERS[tier]
    if phrasing_for_test not in PHRASINGS:
        raise ValueError(f"phrasing_for_test must be one of {PHRASINGS}")
    counts = {"train": n_train, "val": n_val, "test": n_test}
    if min(counts.values()) < 0 or num_hard_negatives < 0 or image_size < 16:
        raise ValueError("counts and num_hard_negatives must be >= 0, image_size >= 16")
    phrasings = {"train": "train", "val": "train", "test": phrasing_for_test}
    out = Path(out_dir)
    _prepare(out, overwrite)
    start = time.perf_counter()

    negatives = {split: num_hard_negatives for split in SPLITS}
    if chosen.gallery_negatives is not None:
        negatives["val"] = negatives["test"] = min(num_hard_negatives, chosen.gallery_negatives)
    taken: set[Any] = set()
    per_split: dict[str, dict[Any, str]] = {}
    summary: dict[str, Any] = {"out_dir": str(out), "splits": {}}
    for split in _GENERATION_ORDER:
        excluded = frozenset(taken)
        triplets = [
            chosen.make_triplet(
                seed,
                split,
                i,
                phrasing=phrasings[split],
                num_hard_negatives=negatives[split],
                excluded=excluded,
            )
            for i in range(counts[split])
        ]
        names, captions, edits = _annotations(split, triplets, chosen)
        taken.update(names)
        per_split[split] = names
        _write_json(out / "captions" / f"cap.{BENCHMARK_NAME}.{split}.json", captions)
        _write_json(out / "edits" / f"edits.{BENCHMARK_NAME}.{split}.json", edits)
        _write_json(
            out / "image_splits" / f"split.{BENCHMARK_NAME}.{split}.json",
            {name: f"./images/{split}/{name}.png" for name in names.values()},
        )
        _write_json(
            out / "scene_graphs" / f"scenes.{BENCHMARK_NAME}.{split}.json",
            {name: chosen.scene_to_dict(scene) for scene, name in names.items()},
        )
        summary["splits"][split] = {"triplets": len(triplets), "images": len(names)}
    annotated = time.perf_counter()

    jobs = []
    for split in SPLITS:
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        jobs += [
            (str(out / "images" / split / f"{name}.png"), scene, seed, split, image_size, tier)
            for scene, name in per_split[split].items()
        ]
    _render_all(jobs, workers)
    _write_json(
        out / "benchmark.json",
        {
            "name": BENCHMARK_NAME,
            "version": chosen.version,
            # Only a tier other than the base one is named, so base folders stay as they were.
            **({"tier": tier} if tier != "base" else {}),
            "seed": seed,
            "counts": counts,
            "phrasing": phrasings,
            "image_size": image_size,
            "num_hard_negatives": num_hard_negatives,
            # Only where val/test hold fewer than train, so base folders stay as they were.
            **(
                {"gallery_negatives": negatives["test"]}
                if negatives["test"] != num_hard_negatives
                else {}
            ),
            "num_images": {s: len(per_split[s]) for s in SPLITS},
        },
    )
    end = time.perf_counter()
    summary["splits"] = {s: summary["splits"][s] for s in SPLITS}
    summary |= {
        "images": len(jobs),
        "seconds": round(end - start, 3),
        "annotation_seconds": round(annotated - start, 3),
        "images_per_second": round(len(jobs) / max(end - annotated, 1e-9), 1),
    }
    log.info("shapes benchmark (%s tier) written to %s: %s", tier, out, summary)
    return summary


def load_edit_ops(out_dir: str | Path, split: str) -> dict[int, str]:
    """``{pairid: operation}`` of a split's queries (``edits/``: e.g. ``swap``,
    ``relational_move``), to break a figure down by the kind of edit asked."""
    path = Path(out_dir) / "edits" / f"edits.{BENCHMARK_NAME}.{split}.json"
    return {e["pairid"]: e["op"] for e in json.loads(path.read_text(encoding="utf-8"))}


def load_scene_graphs(out_dir: str | Path, split: str | None = None) -> dict[str, Any]:
    """``{image name: scene}`` for every image of ``split``, or of every split the folder
    holds when ``split`` is None (image names are unique across splits); scenes of the
    folder's tier."""
    scene_from_dict = tier_of(out_dir).scene_from_dict
    folder = Path(out_dir) / "scene_graphs"
    if split is None:
        paths = sorted(folder.glob(f"scenes.{BENCHMARK_NAME}.*.json"))
    else:
        paths = [folder / f"scenes.{BENCHMARK_NAME}.{split}.json"]
    scenes: dict[str, Scene] = {}
    for path in paths:
        data = json.loads(path.read_text(encoding="utf-8"))
        scenes |= {name: scene_from_dict(objects) for name, objects in data.items()}
    return scenes
