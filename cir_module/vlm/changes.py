"""What changed between two descriptions, read fact by fact from their text: the change list
the change verifier judges.

A description (a captioner's answer, or a scene graph in words) is a ``"; "``-separated list
of facts, one object each. A **differ** turns two descriptions into a change list; a model
folder records which one its verifier was trained with (``cir_reranker.json``, ``"differ"``),
and the service uses that one. The differs (:data:`DIFFERS`, extended by
:func:`register_differ`):

* ``"fact-diff"`` (the default, :func:`fact_diff`): general, it knows no grammar. Facts found
  in both descriptions are unchanged; a fact that left and one that came which differ in one
  stretch of words, the rest equal (a colour, a size, a place), are one change, worded as the
  old fact and the new words (``"a red dress with long sleeves became blue"``); every other
  fact is ``"removed X"`` or ``"added X"``. Works on any caption: a natural one, or the
  synthetic benchmark's.
* ``"grid-edits"``: the synthetic benchmark's grammar, where a fact ends in its place on a grid
  (``"... at row 2, column 3"``): in place, only the words that changed; an object that left
  one place for another, one ``"X moved from P to Q"``; anything else removed or added.
* ``"grid-facts"``: the same places, whole facts (``"X became Y"``), as
  ``cir_module.data.benchmark.describe_changes`` words the change between two scene graphs.

Folders written before differs were named recorded a ``change_wording``: ``"edits"`` or
``"facts"``, the two grid differs (:func:`recorded_differ`).

Either way a model trained on true descriptions reads the same text at serving time, when the
descriptions are captions (its own, or those the enrichment job stored).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping

__all__ = [
    "DEFAULT_DIFFER",
    "DIFFERS",
    "MAX_CHANGES",
    "description_changes",
    "description_facts",
    "fact_diff",
    "list_changes",
    "recorded_differ",
    "register_differ",
]

# An unrelated scene differs from the reference everywhere; past this many changes the list
# ends in "and N more changes": a candidate that far from the reference is no answer anyway,
# and the rows stay short.
MAX_CHANGES = 10
DEFAULT_DIFFER = "fact-diff"

Differ = Callable[[str, str, int | None], str]
DIFFERS: dict[str, Differ] = {}

# What a folder's ``change_wording`` (before differs had names) means.
_LEGACY_WORDINGS = {"edits": "grid-edits", "facts": "grid-facts"}


def register_differ(name: str) -> Callable[[Differ], Differ]:
    """Function decorator: ``differ(before, after, max_changes)`` becomes the differ ``name``."""

    def register(differ: Differ) -> Differ:
        DIFFERS[name] = differ
        return differ

    return register


def recorded_differ(settings: Mapping) -> str:
    """The differ a model folder's settings record: ``"differ"``, or the legacy
    ``"change_wording"`` (a folder that says neither was trained on whole grid facts)."""
    if "differ" in settings:
        return settings["differ"]
    return _LEGACY_WORDINGS[settings.get("change_wording", "facts")]


def description_changes(
    before: str, after: str, max_changes: int | None = MAX_CHANGES, differ: str = DEFAULT_DIFFER
) -> str:
    """What changed from the scene ``before`` describes to the one ``after`` describes, as
    the differ ``differ`` lists it (the module's docstring); ``"nothing changed"`` when
    nothing did. Past ``max_changes`` the list ends in ``"and N more changes"``."""
    if differ not in DIFFERS:
        raise ValueError(f"unknown differ {differ!r} (known: {', '.join(DIFFERS)})")
    return DIFFERS[differ](before, after, max_changes)


def description_facts(description: str) -> list[str]:
    """A description's facts: its ``;``-separated phrases (one object each), stripped."""
    return [part.strip().rstrip(".") for part in description.split(";") if part.strip()]


def _joined(changes: list[str], max_changes: int | None) -> str:
    if max_changes is not None and len(changes) > max_changes:
        changes = [*changes[:max_changes], f"and {len(changes) - max_changes} more changes"]
    return "; ".join(changes) or "nothing changed"


# Two facts are one changed fact when the words they share around one differing stretch (a
# common start and a common end) are at least this share of the longer one's words: a
# recoloured dress shares all but one word, a different object at the same place shares only
# the place, and is a removal and an addition.
_SHARED = 0.5


def _one_stretch(old: list[str], new: list[str]) -> tuple[int, str] | None:
    """How many words ``old`` and ``new`` share around their one differing stretch, and what
    the change is (``"became <new words>"``, or ``"lost <old words>"`` when words were only
    taken away), when they share at least :data:`_SHARED` of the longer; None otherwise."""
    limit = min(len(old), len(new))
    start = 0
    while start < limit and old[start] == new[start]:
        start += 1
    end = 0
    while end < limit - start and old[-1 - end] == new[-1 - end]:
        end += 1
    shared = start + end
    if shared < _SHARED * max(len(old), len(new)) or shared == max(len(old), len(new)):
        return None
    added, lost = new[start : len(new) - end], old[start : len(old) - end]
    return shared, f"became {' '.join(added)}" if added else f"lost {' '.join(lost)}"


@register_differ("fact-diff")
def fact_diff(before: str, after: str, max_changes: int | None = MAX_CHANGES) -> str:
    """The general differ: facts in both descriptions (as many times as both have them) are
    unchanged; the others are paired, most shared words first, into ``"X became <the new
    words>"`` when they differ in one stretch (:func:`_one_stretch`; ``"X lost <words>"`` when
    words were only taken away); what is left is ``"removed X"`` or ``"added X"``. Listed in
    the order of ``before``'s facts, then the added ones in ``after``'s order."""
    old, new = description_facts(before), description_facts(after)
    common = Counter(old) & Counter(new)
    left, came = [], []
    for facts, out in ((old, left), (new, came)):
        kept = Counter(common)
        for i, fact in enumerate(facts):
            if kept[fact]:
                kept[fact] -= 1
            else:
                out.append((i, fact))
    pairs = []
    for i, (_, a) in enumerate(left):
        for j, (_, b) in enumerate(came):
            stretch = _one_stretch(a.split(), b.split())
            if stretch:
                pairs.append((-stretch[0], i, j, stretch[1]))
    became: dict[int, str] = {}
    taken: set[int] = set()
    for _, i, j, change in sorted(pairs):
        if i not in became and j not in taken:
            became[i] = f"{left[i][1]} {change}"
            taken.add(j)
    changes = [became.get(i, f"removed {fact}") for i, (_, fact) in enumerate(left)]
    changes += [f"added {fact}" for j, (_, fact) in enumerate(came) if j not in taken]
    return _joined(changes, max_changes)


# The synthetic benchmark's grammar: a fact ends in its place on a grid.
_PLACE = re.compile(r" at row (\d+), column (\d+)$")


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


@register_differ("grid-edits")
def _grid_edits(before: str, after: str, max_changes: int | None = MAX_CHANGES) -> str:
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


@register_differ("grid-facts")
def _grid_facts(before: str, after: str, max_changes: int | None = MAX_CHANGES) -> str:
    """Whole facts, paired by their place on the grid: :func:`list_changes` of the two
    descriptions' ``{place: fact}``."""
    return list_changes(_by_place(before), _by_place(after), max_changes)
