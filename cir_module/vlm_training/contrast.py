"""Contrast negatives for the verify stage: the target's description made wrong in one place.

The first stage's near misses and an image set's members teach the verifier that a candidate
must make the requested change; they rarely differ from the target in one word only, and a
verifier trained on them alone learns the kind of change (a removal, a new size) more than its
particulars: it says YES to "the square became medium" when the modification asks to make the
cross one size bigger. A contrast negative is the target's description with one of the facts
the modification touched made wrong by one word, its change made to another object, a fact it
removed kept, or one more fact removed; the differ then writes its change list as it would
for an image.

Nothing here knows a grammar: a word is replaced by another word seen at the same position
of a fact of the same length somewhere in the training descriptions (:class:`SlotWords`), so
colours replace colours and row numbers row numbers wherever the captions are regular.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable

from cir_module.vlm.changes import description_facts

__all__ = ["SlotWords", "contrast_description"]


class SlotWords:
    """The words seen at each position of a fact, per fact length, across descriptions."""

    def __init__(self, descriptions: Iterable[str]) -> None:
        slots: dict[tuple[int, int], set[str]] = defaultdict(set)
        for description in descriptions:
            for fact in description_facts(description):
                words = fact.split()
                for i, word in enumerate(words):
                    slots[len(words), i].add(word)
        self.slots = {key: sorted(words) for key, words in slots.items()}

    def alternatives(self, words: list[str], i: int) -> list[str]:
        """Words other than ``words[i]`` seen at position ``i`` of a fact as long."""
        return [w for w in self.slots.get((len(words), i), ()) if w != words[i]]


# How often each way is drawn (among those a target allows): in a hand-read sample of the
# shipped verifier's failures (docs/results.md), most chose a candidate that made the change
# to another object, then a wrong value or place, and a few one extra removal.
_WAYS = {"transfer": 0.4, "reword": 0.35, "keep": 0.1, "drop": 0.15}


def _multiset_key(facts: list[str]) -> tuple[str, ...]:
    return tuple(sorted(facts))


def _transfers(gone: list[str], came: list[str], kept: list[str]) -> list[tuple[str, ...]]:
    """The target's in-place changes (a fact that left and one that came, as long, differing
    in some words) made to another object: ``(left, came, other kept fact, that fact with
    the same words changed)`` for every kept fact as long that the change would alter."""
    out = []
    for was in gone:
        a = was.split()
        for became in came:
            b = became.split()
            if len(a) != len(b):
                continue
            where = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
            if len(where) * 2 > len(a):  # not one object changed, another one come
                continue
            for other in kept:
                words = other.split()
                if len(words) != len(b) or all(words[i] == b[i] for i in where):
                    continue
                for i in where:
                    words[i] = b[i]
                out.append((was, became, other, " ".join(words)))
    return out


def contrast_description(
    reference: str, target: str, slots: SlotWords, rng: random.Random, tries: int = 8
) -> str | None:
    """A description one step from ``target`` that the modification from ``reference`` does
    not give, one of: a fact the target has and the reference lacks (a change's result) with
    one word replaced (:class:`SlotWords`); a change in place made to another object instead
    (the words it changed, changed in another fact as long); a fact the target lost kept; one
    more of the kept facts removed. None when no try gives a description other than the
    target's and the reference's."""
    old, new = description_facts(reference), description_facts(target)
    common = Counter(old) & Counter(new)
    came = list((Counter(new) - common).elements())
    gone = list((Counter(old) - common).elements())
    kept = list(common.elements())
    moved = _transfers(gone, came, kept)
    there = {"transfer": moved, "reword": came, "keep": gone, "drop": kept}
    ways = [w for w in _WAYS if there[w]]
    if not ways:
        return None
    avoid = {_multiset_key(old), _multiset_key(new)}
    for _ in range(tries):
        facts = list(new)
        way = rng.choices(ways, weights=[_WAYS[w] for w in ways])[0]
        if way == "transfer":
            was, became, other, changed = rng.choice(moved)
            facts[facts.index(became)] = was
            facts[facts.index(other)] = changed
        elif way == "reword":
            at = facts.index(rng.choice(came))
            words = facts[at].split()
            i = rng.randrange(len(words))
            others = slots.alternatives(words, i)
            if not others:
                continue
            words[i] = rng.choice(others)
            facts[at] = " ".join(words)
        elif way == "keep":
            facts.append(rng.choice(gone))
        else:
            facts.remove(rng.choice(kept))
        if facts and _multiset_key(facts) not in avoid:
            return "; ".join(facts)
    return None
