"""Contrast negatives: the target's description made wrong in one place, never the target's
or the reference's own, in each of the ways the module names."""

from __future__ import annotations

import random
from collections import Counter

from cir_module.vlm.changes import description_changes, description_facts
from cir_module.vlm_training.contrast import SlotWords, contrast_description

REFERENCE = (
    "small hollow green cross at row 2, column 1; large solid red circle at row 1, column 3; "
    "medium striped blue square at row 4, column 4"
)
# The modification made the cross medium.
TARGET = (
    "medium hollow green cross at row 2, column 1; large solid red circle at row 1, column 3; "
    "medium striped blue square at row 4, column 4"
)
CORPUS = [
    REFERENCE,
    TARGET,
    "large striped yellow triangle at row 3, column 2; small solid gray diamond at row 1, column 1",
]


def _facts(description: str) -> Counter:
    return Counter(description_facts(description))


def test_slot_words_are_the_words_seen_at_a_position_of_a_fact_as_long():
    slots = SlotWords(CORPUS)
    words = ["small", "hollow", "green", "cross", "at", "row", "2,", "column", "1"]
    assert slots.alternatives(words, 0) == ["large", "medium"]
    assert slots.alternatives(words, 4) == []  # "at" is the only word ever seen there
    assert "triangle" in slots.alternatives(words, 3)
    assert slots.alternatives(["a", "short", "fact"], 0) == []  # no fact of three words


def test_every_contrast_is_one_step_from_the_target_and_neither_given_description():
    slots, rng = SlotWords(CORPUS), random.Random(0)
    seen = set()
    for _ in range(200):
        near = contrast_description(REFERENCE, TARGET, slots, rng)
        assert near is not None
        assert _facts(near) not in (_facts(TARGET), _facts(REFERENCE))
        # One step: the two fact lists differ in at most two facts each way.
        left, came = _facts(TARGET) - _facts(near), _facts(near) - _facts(TARGET)
        assert sum(left.values()) <= 2 and sum(came.values()) <= 2
        seen.add(description_changes(REFERENCE, near))
    changes = "\n".join(seen)
    # The change made to another object (the circle or the square became medium instead) ...
    assert "large solid red circle at row 1, column 3 became medium" in changes
    # ... a wrong value (the cross became large) ...
    assert "small hollow green cross at row 2, column 1 became large" in changes
    # ... and one removal too many.
    assert "removed large solid red circle at row 1, column 3" in changes


def test_a_removal_is_joined_by_another_and_never_undone_into_the_reference():
    # The diamond removed; keeping it would give back the reference, which is no contrast.
    reference = REFERENCE + "; small solid gray diamond at row 1, column 1"
    rng, slots = random.Random(1), SlotWords(CORPUS)
    lists = set()
    for _ in range(50):
        near = contrast_description(reference, REFERENCE, slots, rng)
        lists.add(description_changes(reference, near))
    assert "nothing changed" not in lists
    assert any(c.count("removed") == 2 for c in lists)  # one more object removed
    # With a single object left, neither way gives a contrast.
    alone = "large solid red circle at row 1, column 3"
    one_gone = alone + "; small solid gray diamond at row 1, column 1"
    assert contrast_description(one_gone, alone, slots, rng) is None


def test_nothing_to_contrast_when_the_target_is_empty_and_the_reference_too():
    assert contrast_description("", "", SlotWords(CORPUS), random.Random(0)) is None
