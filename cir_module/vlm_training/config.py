"""What one stage of the VLM's training is told: ``cir vlm train`` builds a :class:`StageConfig`
from its flags (every field has one)."""

from __future__ import annotations

from dataclasses import dataclass

from cir_module.vlm.changes import DEFAULT_DIFFER, DIFFERS

__all__ = [
    "PRODUCT_STAGES",
    "STARTS_FROM",
    "StageConfig",
    "declare_stage",
    "registered_stages",
]

# Each stage, and the stages whose folder it may start from (the usual one first; none: it
# builds the model). The product's chain is vision -> caption -> verify (the change verifier);
# a verify stage may go on from a finished one (e.g. on negatives mined from the first stage).
# Other stages are declared by the module that trains them (:func:`declare_stage`, through
# :func:`cir_module.vlm_training.stages.register_stage`): the research stages compare, judge
# and rewrite (research/stages.py, ``python -m research.cli vlm-train``), whose results were
# negative or superseded (docs/results.md, "The staged VLM and the image judge").
STARTS_FROM: dict[str, tuple[str, ...]] = {
    "vision": (),
    "caption": ("vision",),
    "verify": ("caption", "verify"),
}
# What the product trains (``cir vlm train``): the tower, the captioner, the change verifier.
PRODUCT_STAGES = tuple(STARTS_FROM)


def declare_stage(name: str, *, starts_from: tuple[str, ...], feeds: tuple[str, ...] = ()) -> None:
    """Accept ``name`` as a stage (:class:`StageConfig`), started from the folder of one of
    the stages ``starts_from`` (the usual one first); each stage of ``feeds`` may then also
    start from ``name``'s folder (after the ones it had). Declaring a stage again replaces its
    starts."""
    for known in (*starts_from, *feeds):
        if known not in STARTS_FROM and known != name:
            raise ValueError(f"stage {name!r} names the undeclared stage {known!r}")
    if not starts_from:
        raise ValueError(f"stage {name!r} must start from a stage (only vision builds the model)")
    STARTS_FROM[name] = tuple(starts_from)
    for later in feeds:
        if name not in STARTS_FROM[later]:
            STARTS_FROM[later] = (*STARTS_FROM[later], name)


def registered_stages() -> tuple[str, ...]:
    """Every stage declared so far: the product's, then those other modules declared."""
    return tuple(STARTS_FROM)


@dataclass
class StageConfig:
    """One stage's run. ``data`` is a synthetic benchmark folder: its tier says what the
    scenes hold, its training triplets give the judge its examples and the tokenizer its
    texts. ``init`` is the previous stage's ``out`` (caption and judge)."""

    stage: str
    data: str
    out: str
    init: str | None = None
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 50
    seed: int = 0
    checkpoint_every: int = 100
    max_minutes: float | None = None
    # The model, built by the vision stage; the later stages keep the one they start from.
    hidden: int = 192
    layers: int = 6
    heads: int = 4
    vision_depth: int = 4
    vision_width: int = 128
    vocab_size: int = 1024
    # After the vision stage: its cell read-out stays on as an auxiliary loss with this
    # weight, and the vision tower learns at this fraction of the learning rate.
    reader_weight: float = 0.3
    vision_lr_scale: float = 0.3
    # The judge stage: candidates per query (the target first), the share of negatives
    # drawn from other queries' targets, the share of batches whose prompts carry the
    # reasoning path, the weight of learning to write that path (the rationale), the
    # weight of writing what changed from reference to candidate after the answer ...
    group: int = 6
    easy_negatives: float = 0.3
    reasoning_share: float = 0.3
    rationale_weight: float = 0.5
    changes_weight: float = 0.3
    # ... and the weight of the read-out, at the candidate image's tokens, of which cells
    # differ from what the target must show (0: off).
    match_weight: float = 0.0
    # The verify stage: the weight of the per-change read-out (at the end of each change of
    # the list, YES / NO: is it a change the modification asks for; 0: off).
    asked_weight: float = 0.0
    # ... and the differ that writes its change lists (``cir_module.vlm.changes``: the general
    # fact diff, or the synthetic grid's grammar).
    differ: str = DEFAULT_DIFFER
    # ... and negatives mined from the first stage (``cir vlm mine``): the JSON file, and the
    # share of each group's negatives drawn from the query's mined ones (0: none).
    neighbours: str | None = None
    neighbour_negatives: float = 0.0
    # The rewrite stage: captioning rows added to each batch, as a share of its rewrite rows
    # (rehearsal, so that the model still describes images after learning to rewrite).
    rehearsal: float = 0.25
    # ... and the weight of the tokens a copy of the reference would get wrong.
    edit_weight: float = 10.0

    def __post_init__(self) -> None:
        # Paths are kept as strings: the configuration is written to the stage's stage.json.
        self.data, self.out = str(self.data), str(self.out)
        self.init = str(self.init) if self.init else None
        if self.stage not in STARTS_FROM:
            raise ValueError(f"unknown stage {self.stage!r}; the stages are {registered_stages()}")
        if self.stage != "vision" and not self.init:
            previous = " or ".join(STARTS_FROM[self.stage])
            raise ValueError(f"the {self.stage} stage starts from the {previous} stage's folder")
        if self.steps < 1 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError("steps, batch size and checkpoint interval must be positive")
        if self.differ not in DIFFERS:
            raise ValueError(f"differ {self.differ!r} is none of {tuple(DIFFERS)}")
        if self.neighbour_negatives and not self.neighbours:
            raise ValueError("neighbour negatives need the mined file (cir vlm mine): --neighbours")
        if self.stage in ("judge", "verify") and (self.group < 2 or self.batch_size < self.group):
            raise ValueError("the judge needs a group of 2 or more, and a batch of one group")
