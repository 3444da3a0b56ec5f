"""What changed between two scene descriptions, read fact by fact from their text.

A description (the caption stage's answer, or a scene graph in words) is a ``"; "``-separated
list of facts, one object each, ending in where it is (``"... at row 2, column 3"``). Two
descriptions are compared place by place, in reading order: an object added, removed, or
become another. Two wordings:

* ``"facts"``: whole facts (``"added X"``, ``"removed X"``, ``"X became Y"``), as
  ``cir_module.data.benchmark.describe_changes`` words the change between two scene graphs;
* ``"edits"``: one edit per object, as short as the facts allow: an object that left one
  place for another is one ``"X moved from P to Q"``, and an object that changed in place
  names only its new words (``"medium hollow gray triangle at row 4, column 1 became
  small"``). A verifier then matches "make the gray triangle smaller" against one short phrase
  instead of finding the differing word in two long ones, or pairing a removal with an addition.

Either way a model trained on true descriptions reads the same text at serving time, when the
descriptions are its own captions.
"""

from __future__ import annotations

import re

__all__ = ["MAX_CHANGES", "WORDINGS", "description_changes", "description_facts", "list_changes"]

# An unrelated scene differs from the reference everywhere; past this many changes the list
# ends in "and N more changes": a candidate that far from the reference is no answer anyway,
# and the rows stay short.
MAX_CHANGES = 10
WORDINGS = ("facts", "edits")

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


def _joined(changes: list[str], max_changes: int | None) -> str:
    if max_changes is not None and len(changes) > max_changes:
        changes = [*changes[:max_changes], f"and {len(changes) - max_changes} more changes"]
    return "; ".join(changes) or "nothing changed"


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
    return _joined(changes, max_changes)


def _objects_by_place(description: str) -> dict[str, str]:
    """``{place: object}`` of a description's facts (``"<object> at <place>"``), in their
    order; a fact without a place is kept whole, with an empty object."""
    out: dict[str, str] = {}
    for fact in description_facts(description):
        thing, at, place = fact.rpartition(" at ")
        out.setdefault(place if at else fact, thing if at else "")
    return out


def _became(old: str, new: str) -> str:
    """What an object in place became: the words that differ, word by word, when both have
    as many words (one attribute each); the whole new object otherwise."""
    a, b = old.split(), new.split()
    if len(a) != len(b):
        return new
    return " ".join(w for v, w in zip(a, b, strict=True) if v != w)


def _edits(before: str, after: str, max_changes: int) -> str:
    """The "edits" wording: in place, "X at P became <changed words>"; an object gone from P
    and the same object come to Q, "X moved from P to Q" (the first such Q in reading order);
    any other "removed X at P" or "added X at Q"; ordered by the (first) place."""
    old, new = _objects_by_place(before), _objects_by_place(after)
    seen = {place: i for i, place in enumerate(dict.fromkeys([*old, *new]))}

    def order(place: str) -> tuple:
        # Reading order where a place is "row R, column C"; appearance order otherwise.
        cell = _PLACE.search(" at " + place)
        return (0, int(cell[1]), int(cell[2])) if cell else (1, seen[place])

    def named(objects: dict[str, str], place: str) -> str:
        return f"{objects[place]} at {place}" if objects[place] else place

    gone = sorted((p for p in old if p not in new), key=order)
    come = sorted((p for p in new if p not in old), key=order)
    edits = []
    for place in sorted(old.keys() & new.keys(), key=order):
        if old[place] != new[place]:
            edits.append(
                (order(place), f"{named(old, place)} became " + _became(old[place], new[place]))
            )
    for place in gone:  # left one place for another, unchanged: a move
        to = next((q for q in come if old[place] and new[q] == old[place]), None)
        if to is None:
            edits.append((order(place), f"removed {named(old, place)}"))
        else:
            come.remove(to)
            edits.append((order(place), f"{old[place]} moved from {place} to {to}"))
    edits += [(order(q), f"added {named(new, q)}") for q in come]
    return _joined([text for _, text in sorted(edits, key=lambda e: e[0])], max_changes)


def description_changes(
    before: str, after: str, max_changes: int = MAX_CHANGES, wording: str = "facts"
) -> str:
    """What changed from the scene ``before`` describes to the one ``after`` describes, place
    by place in reading order, in one of the :data:`WORDINGS` (the module's docstring)."""
    if wording == "edits":
        return _edits(before, after, max_changes)
    if wording != "facts":
        raise ValueError(f"unknown change wording {wording!r} (known: {', '.join(WORDINGS)})")
    return list_changes(_by_place(before), _by_place(after), max_changes)
