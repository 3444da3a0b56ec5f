"""The differs that write the change verifier's change lists (``cir_module.vlm.changes``): the
general fact diff (the default, no grammar) on natural captions and on the synthetic
benchmark's, and which differ a model folder records."""

from __future__ import annotations

import pytest

from cir_module.data.benchmark import generate_benchmark, load_scene_graphs, tier_of
from cir_module.eval.inprocess import EvalSplit
from cir_module.vlm.changes import (
    DEFAULT_DIFFER,
    DIFFERS,
    description_changes,
    description_facts,
    recorded_differ,
)


def test_the_fact_diff_reads_natural_captions():
    dress = "a red dress with long sleeves; a white background"
    assert description_changes(dress, dress.replace("red", "blue")) == (
        "a red dress with long sleeves became blue"
    )
    assert description_changes(dress, dress.replace(" with long sleeves", "")) == (
        "a red dress with long sleeves lost with long sleeves"
    )
    assert description_changes(dress, "a red dress with long sleeves") == (
        "removed a white background"
    )
    # A different object is a removal and an addition, not a change of one thing into another.
    assert description_changes("a dog on the grass", "a bicycle leaning on a wall") == (
        "removed a dog on the grass; added a bicycle leaning on a wall"
    )
    # Facts are a multiset: two cups, one gone.
    assert description_changes("a cup; a cup; a spoon", "a cup; a spoon") == "removed a cup"
    assert description_changes(dress, dress) == "nothing changed"
    assert DEFAULT_DIFFER == "fact-diff"


def test_the_fact_diff_pairs_the_closest_facts_first():
    before = "a small red car; a small red bus"
    after = "a small blue car; a large red bus"
    assert description_changes(before, after) == (
        "a small red car became blue; a small red bus became large"
    )


@pytest.fixture(scope="module")
def hard_data(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("hard")
    generate_benchmark(out, seed=0, tier="hard", n_train=60, n_val=4, n_test=4)
    return str(out)


def test_the_fact_diff_on_the_synthetic_grammar(hard_data):
    """Without knowing places, the fact diff says of every pair of the benchmark's scenes
    what left, what came and what changed: each removed (or changed) fact is one of the
    first description's that the second lacks, each added fact one the second has, and no
    list is longer than the grid's whole facts; a move (only the place changed) is one
    change, as the grid's edits say it."""
    tier = tier_of(hard_data)
    split = EvalSplit.load(hard_data, "train")
    scenes = load_scene_graphs(hard_data, "train")
    pairs = [(t.reference, c) for t in split.triplets for c in (t.target, *t.subset)]
    moves = 0
    for before, after in pairs:
        old, new = tier.describe(scenes[before]), tier.describe(scenes[after])
        gone = set(description_facts(old)) - set(description_facts(new))
        came = set(description_facts(new)) - set(description_facts(old))
        diff = description_changes(old, new, max_changes=None)
        grid = description_changes(old, new, max_changes=None, differ="grid-facts")
        if diff == "nothing changed":
            assert not gone and not came
            continue
        changes = diff.split("; ")
        assert len(changes) <= len(grid.split("; "))
        for change in changes:
            if change.startswith("added "):
                assert change.removeprefix("added ") in came
            elif change.startswith("removed "):
                assert change.removeprefix("removed ") in gone
            else:
                head, _, words = change.partition(" became ")
                assert head in gone and any(words in fact for fact in came), change
        edits = description_changes(old, new, max_changes=None, differ="grid-edits")
        if " moved from " in edits and edits.count("; ") == 0:
            moves += 1
            assert len(changes) == 1 and " became " in changes[0]
    assert moves > 0


def test_a_folder_records_its_differ():
    assert recorded_differ({"differ": "fact-diff"}) == "fact-diff"
    # Folders written before differs had names recorded a wording, or nothing.
    assert recorded_differ({"change_wording": "edits"}) == "grid-edits"
    assert recorded_differ({"change_wording": "facts"}) == "grid-facts"
    assert recorded_differ({}) == "grid-facts"
    assert set(DIFFERS) >= {"fact-diff", "grid-edits", "grid-facts"}
