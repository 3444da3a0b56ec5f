"""What changed between two scene descriptions, read fact by fact from their text.

A description (the caption stage's answer, or a scene graph in words) is a ``"; "``-separated
list of facts, one object each, ending in where it is (``"... at row 2, column 3"``). Two
descriptions are compared place by place, in reading order: an object added, removed, or
become another. The result is worded as ``cir_module.data.benchmark.describe_changes`` words
the change between two scene graphs, so a model trained on true descriptions reads the same
text at serving time, when the descriptions are its own captions.
"""

from __future__ import annotations

import re

__all__ = ["MAX_CHANGES", "description_changes", "description_facts", "list_changes"]

# An unrelated scene differs from the reference everywhere; past this many changes the list
# ends in "and N more changes": a candidate that far from the reference is no answer anyway,
# and the rows stay short.
MAX_CHANGES = 10

_PLACE = re.compile(r" at row (\d+), column (\d+)$")


def description_facts(description: str) -> list[str]:
    """A description's facts: its ``;``-separated phrases (one object each), stripped."""
    return [part.strip().rstrip(".") for part in description.split(";") if part.strip()]


def _by_place(description: str) -> dict[tuple, str]:
    """Facts keyed by where they are ((row, column)); a fact without a place is its own key
    (sorted after every place)."""
    out: dict[tuple, str] = {}
    for fact in description_facts(description):
        place = _PLACE.search(fact)
        key = (0, int(place[1]), int(place[2])) if place else (1, 0, 0, fact)
        out.setdefault(key, fact)  # a place named twice: the first fact stands
    return out


def list_changes(old: dict, new: dict, max_changes: int | None = None) -> str:
    """The change list between two scenes given as ``{place: fact}`` (places sortable in
    reading order): ``"added X"``, ``"removed X"`` or ``"X became Y"`` per place whose fact
    differs, joined by ``"; "``; ``"nothing changed"`` when none does. Past ``max_changes``
    the list ends in ``"and N more changes"``."""
    changes = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if a is None:
            changes.append(f"added {b}")
        elif b is None:
            changes.append(f"removed {a}")
        else:
            changes.append(f"{a} became {b}")
    if max_changes is not None and len(changes) > max_changes:
        changes = [*changes[:max_changes], f"and {len(changes) - max_changes} more changes"]
    return "; ".join(changes) or "nothing changed"


def description_changes(before: str, after: str, max_changes: int = MAX_CHANGES) -> str:
    """What changed from the scene ``before`` describes to the one ``after`` describes, place
    by place in reading order (:func:`list_changes`)."""
    return list_changes(_by_place(before), _by_place(after), max_changes)
