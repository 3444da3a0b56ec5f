"""Wording of the hard tier's edits: two disjoint phrasing sets, ``"train"`` and ``"heldout"``.

The held-out set has its own templates, verbs, grid words ("the third lane of the first
level" for "row 1, column 3"), relation words ("west of", "under"), superlatives, nouns and
size and texture synonyms, to measure generalisation to unseen wordings. Which objects a text
names and how (``Ref``) is part of the edit; only the words are drawn here, from the
``random.Random`` passed in, so both sets word the same edits.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from cir_module.data.hard.scenes import (
    COLORS,
    DESCRIPTOR_ATTRIBUTES,
    GRID_SIDE,
    NUM_CELLS,
    SHAPES,
    Clause,
    HardEdit,
    HardObject,
    Ref,
)

__all__ = [
    "PHRASINGS",
    "TEMPLATES",
    "WORDS",
    "HardCaption",
    "phrase_hard_edit",
    "template_words",
    "vocabulary",
]

PHRASINGS = ("train", "heldout")

# Placeholders: {ref} / {anchor} a reference text without its article; {color} {shape} {size}
# {texture} a value; {obj} a full object ("small striped red circle"); {cell} a cell, {line} a
# row or column (both bring their own article where they need one); {relation} {sup} {attr}
# {n} {objs} {pred} {only} {desc} relation, superlative, attribute noun, number, plural
# objects, predicate and plural of an exclusion, noun phrase; {0} {1} {2} the clauses.
TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {
        "color": (
            "make the {ref} {color}",
            "paint the {ref} {color}",
            "change the colour of the {ref} to {color}",
        ),
        "shape": (
            "turn the {ref} into a {shape}",
            "replace the {ref} with a {shape}",
            "make the {ref} a {shape}",
        ),
        "size": (
            "make the {ref} {size}",
            "resize the {ref} to {size}",
            "change the size of the {ref} to {size}",
        ),
        "texture": (
            "make the {ref} {texture}",
            "change the {ref} to {texture}",
            "the {ref} should be {texture}",
        ),
        "remove": ("remove the {ref}", "delete the {ref}", "take away the {ref}"),
        "add": ("add a {obj} at {cell}", "put a {obj} at {cell}", "place a {obj} at {cell}"),
        "move": (
            "move the {ref} to {cell}",
            "relocate the {ref} to {cell}",
            "send the {ref} over to {cell}",
        ),
        "move_next_to": (
            "put the {ref} directly {relation} the {anchor}",
            "move the {ref} so it is directly {relation} the {anchor}",
            "place the {ref} directly {relation} the {anchor}",
        ),
        "swap": (
            "swap the {ref} and the {anchor}",
            "swap the positions of the {ref} and the {anchor}",
            "have the {ref} and the {anchor} trade positions",
        ),
        "count": (
            "add {n} more {objs}",
            "put {n} more {objs} in the picture",
            "there should be {n} more {objs}",
        ),
        "count_in_line": (
            "add {n} more {objs} in {line}",
            "put {n} more {objs} into {line}",
            "fill the empty cells of {line} with {objs}",
        ),
        "exclude": (
            "remove every object that is not {pred}",
            "delete everything that is not {pred}",
            "keep only the {only} and remove the rest",
        ),
        "bigger": (
            "make the {ref} one size bigger",
            "increase the size of the {ref} by one step",
            "the {ref} should be one size bigger",
        ),
        "smaller": (
            "make the {ref} one size smaller",
            "decrease the size of the {ref} by one step",
            "the {ref} should be one size smaller",
        ),
        "same_as": (
            "make the {ref} the same {attr} as the {anchor}",
            "give the {ref} the {attr} of the {anchor}",
            "change the {attr} of the {ref} to match the {anchor}",
        ),
        "ref_cell": ("object at {cell}", "one at {cell}", "object placed at {cell}"),
        "ref_cell_shape": (
            "{shape} at {cell}",
            "{shape} placed at {cell}",
            "{shape} standing at {cell}",
        ),
        "ref_only": ("only {desc}", "only {desc} in the picture", "only {desc} there is"),
        "ref_superlative": ("{sup} {desc}", "{sup} {desc} in the picture", "{sup} {desc} of all"),
        "ref_relation": (
            "{desc} {relation} the {anchor}",
            "{desc} that is {relation} the {anchor}",
            "{desc} located {relation} the {anchor}",
        ),
        "join2": ("{0} and {1}", "{0}, then {1}", "{0}; also {1}"),
        "join3": ("{0}, {1} and {2}", "{0}, {1}, then {2}", "{0}; {1}; also {2}"),
    },
    "heldout": {
        "color": (
            "recolour the {ref} {color}",
            "dye the {ref} {color}",
            "I want the {ref} in {color}",
        ),
        "shape": (
            "transform the {ref} into a {shape}",
            "convert the {ref} to a {shape}",
            "use a {shape} instead of the {ref}",
        ),
        "size": (
            "let the {ref} be {size}",
            "the {ref} needs to be {size}",
            "rescale the {ref} to {size}",
        ),
        "texture": (
            "render the {ref} {texture}",
            "let the {ref} look {texture}",
            "the {ref} needs to look {texture}",
        ),
        "remove": ("get rid of the {ref}", "eliminate the {ref}", "discard the {ref}"),
        "add": (
            "include a {obj} in {cell}",
            "introduce a {obj} in {cell}",
            "stick a {obj} in {cell}",
        ),
        "move": (
            "shift the {ref} into {cell}",
            "transfer the {ref} to {cell}",
            "carry the {ref} across to {cell}",
        ),
        "move_next_to": (
            "set the {ref} just {relation} the {anchor}",
            "bring the {ref} immediately {relation} the {anchor}",
            "shift the {ref} so that it sits just {relation} the {anchor}",
        ),
        "swap": (
            "exchange the places of the {ref} and the {anchor}",
            "let the {ref} and the {anchor} switch spots",
            "interchange the {ref} and the {anchor}",
        ),
        "count": (
            "include {n} extra {objs}",
            "I want {n} additional {objs}",
            "insert {n} further {objs}",
        ),
        "count_in_line": (
            "include {n} extra {objs} in {line}",
            "I want {n} additional {objs} along {line}",
            "populate the vacant spots of {line} using {objs}",
        ),
        "exclude": (
            "get rid of each thing that isn't {pred}",
            "leave just the {only}",
            "discard anything but the {only}",
        ),
        "bigger": (
            "enlarge the {ref} by a notch",
            "scale up the {ref} a notch",
            "grow the {ref} a notch",
        ),
        "smaller": (
            "shrink the {ref} by a notch",
            "scale down the {ref} a notch",
            "reduce the {ref} a notch",
        ),
        "same_as": (
            "copy the {attr} of the {anchor} onto the {ref}",
            "let the {ref} copy the {attr} of the {anchor}",
            "the {ref} takes on the {attr} of the {anchor}",
        ),
        "ref_cell": ("thing in {cell}", "item in {cell}", "item sitting in {cell}"),
        "ref_cell_shape": (
            "{shape} in {cell}",
            "{shape} sitting in {cell}",
            "{shape} found in {cell}",
        ),
        "ref_only": ("sole {desc}", "lone {desc}", "sole {desc} on the canvas"),
        "ref_superlative": (
            "{sup} {desc} present",
            "{sup} {desc} to be seen",
            "{sup} {desc} on the canvas",
        ),
        "ref_relation": (
            "{desc} lying {relation} the {anchor}",
            "{desc} sitting {relation} the {anchor}",
            "{desc} positioned {relation} the {anchor}",
        ),
        "join2": ("{0} plus {1}", "first {0}, after that {1}", "{0}; on top of that {1}"),
        "join3": (
            "{0}, {1} plus {2}",
            "first {0}, next {1}, finally {2}",
            "{0}; {1}; additionally {2}",
        ),
    },
}

_ORDINALS = ("first", "second", "third", "fourth")


def _grid_words(phrasing: str) -> dict[str, dict[str, tuple[str, ...]]]:
    if phrasing == "train":
        cells = {
            str(i): (f"row {i // GRID_SIDE + 1}, column {i % GRID_SIDE + 1}",)
            for i in range(NUM_CELLS)
        }
        rows = {str(r): (f"row {r + 1}",) for r in range(GRID_SIDE)}
        columns = {str(c): (f"column {c + 1}",) for c in range(GRID_SIDE)}
    else:
        cells = {
            str(i): (
                f"the {_ORDINALS[i % GRID_SIDE]} lane of the {_ORDINALS[i // GRID_SIDE]} level",
            )
            for i in range(NUM_CELLS)
        }
        rows = {str(r): (f"the {_ORDINALS[r]} level",) for r in range(GRID_SIDE)}
        columns = {str(c): (f"the {_ORDINALS[c]} lane",) for c in range(GRID_SIDE)}
    return {"cell": cells, "row": rows, "column": columns}


_PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles",
            "diamond": "diamonds", "cross": "crosses"}  # fmt: skip

# Words for values, per phrasing set. A tuple offers synonyms (one is drawn each time). Colour
# and shape words are shared ("grey" apart): they are the content the retriever must read.
WORDS: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
    "train": {
        "color": {c: (c,) for c in COLORS},
        "shape": {s: (s,) for s in SHAPES},
        "shapes": {s: (p,) for s, p in _PLURALS.items()},
        "size": {"small": ("small",), "medium": ("medium",), "large": ("large",)},
        "texture": {"solid": ("solid",), "hollow": ("hollow",), "striped": ("striped",)},
        # Noun of a phrase that leaves the shape out ("the red one") and its plural.
        "noun": {"": ("one", "object")},
        "nouns": {"": ("ones",)},
        "relation": {
            "left_of": ("left of",),
            "right_of": ("right of",),
            "above": ("above",),
            "below": ("below",),
        },
        "superlative": {
            "largest": ("largest",),
            "smallest": ("smallest",),
            "leftmost": ("leftmost",),
            "rightmost": ("rightmost",),
            "topmost": ("topmost",),
            "bottommost": ("bottommost",),
        },
        "attribute": {
            "color": ("colour", "color"),
            "shape": ("shape",),
            "size": ("size",),
            "texture": ("texture",),
        },
        "count": {"2": ("two",), "3": ("three",)},
        **_grid_words("train"),
    },
    "heldout": {
        "color": {c: ("grey",) if c == "gray" else (c,) for c in COLORS},
        "shape": {s: (s,) for s in SHAPES},
        "shapes": {s: (p,) for s, p in _PLURALS.items()},
        "size": {"small": ("tiny",), "medium": ("mid-sized",), "large": ("big", "huge")},
        "texture": {"solid": ("filled",), "hollow": ("outlined",), "striped": ("stripy",)},
        "noun": {"": ("thing", "item")},
        "nouns": {"": ("things", "items")},
        "relation": {
            "left_of": ("west of",),
            "right_of": ("east of",),
            "above": ("over",),
            "below": ("under", "beneath"),
        },
        "superlative": {
            "largest": ("biggest",),
            "smallest": ("tiniest",),
            "leftmost": ("westernmost",),
            "rightmost": ("easternmost",),
            "topmost": ("northernmost",),
            "bottommost": ("southernmost",),
        },
        "attribute": {
            "color": ("shade",),
            "shape": ("form",),
            "size": ("dimensions",),
            "texture": ("fill",),
        },
        "count": {"2": ("a pair of",), "3": ("a trio of",)},
        **_grid_words("heldout"),
    },
}


@dataclass(frozen=True)
class HardCaption:
    """A modification text with how it was made.

    ``template`` is the sentence with placeholders for values and references (the clause
    templates inside the join template); ``parts`` every template drawn (clauses, references,
    join); ``reference`` the references of each clause, JSON-ready.
    """

    text: str
    template: str
    parts: tuple[str, ...]
    reference: tuple[dict[str, Any], ...]


class _Phraser:
    """Draws words and templates of one phrasing set, remembering the templates used."""

    def __init__(self, rng: random.Random, phrasing: str) -> None:
        self.rng = rng
        self.phrasing = phrasing
        self.parts: list[str] = []

    def word(self, kind: str, value: str | int = "") -> str:
        return self.rng.choice(WORDS[self.phrasing][kind][str(value)])

    def template(self, key: str) -> str:
        template = self.rng.choice(TEMPLATES[self.phrasing][key])
        self.parts.append(template)
        return template

    def desc(self, attrs: tuple[tuple[str, str], ...]) -> str:
        """A noun phrase for ``attrs``: "small red circle", "striped one", "object"."""
        values = dict(attrs)
        words = [self.word(a, values[a]) for a in DESCRIPTOR_ATTRIBUTES[:-1] if a in values]
        words.append(
            self.word("shape", values["shape"]) if "shape" in values else self.word("noun")
        )
        return " ".join(words)

    def obj(self, obj: HardObject) -> str:
        return self.desc(tuple((a, getattr(obj, a)) for a in DESCRIPTOR_ATTRIBUTES))

    def ref(self, ref: Ref) -> str:
        if ref.kind == "attributes":
            return self.desc(ref.attrs)
        if ref.kind == "cell":
            shape = dict(ref.attrs).get("shape")
            template = self.template("ref_cell_shape" if shape else "ref_cell")
            cell = self.word("cell", ref.cell)
            return template.format(cell=cell, shape=self.word("shape", shape) if shape else "")
        if ref.kind == "only":
            return self.template("ref_only").format(desc=self.desc(ref.attrs))
        if ref.kind == "superlative":
            sup = self.word("superlative", ref.relation)
            return self.template("ref_superlative").format(sup=sup, desc=self.desc(ref.attrs))
        if ref.kind == "relation":
            template = self.template("ref_relation")
            return template.format(
                desc=self.desc(ref.attrs),
                relation=self.word("relation", ref.relation),
                anchor=self.ref(ref.anchor),
            )
        raise ValueError(f"unknown reference kind {ref.kind!r}")

    def clause(self, clause: Clause) -> tuple[str, str]:
        """The clause's text and template."""
        values: dict[str, str] = {}
        if clause.subject is not None:
            values["ref"] = self.ref(clause.subject)
        if clause.anchor is not None:
            values["anchor"] = self.ref(clause.anchor)
        action, key = clause.action, clause.action
        if action == "set":
            key = clause.attribute
            values[key] = self.word(key, clause.value)
        elif action == "add":
            new = clause.steps[0].new
            values |= {"obj": self.obj(new), "cell": self.word("cell", new.cell)}
        elif action == "move":
            values["cell"] = self.word("cell", clause.value)
        elif action == "move_next_to":
            values["relation"] = self.word("relation", clause.value)
        elif action == "count":
            proto = clause.steps[0].new
            values |= {
                "n": self.word("count", clause.value),
                "objs": f"{self.word('color', proto.color)} {self.word('shapes', proto.shape)}",
            }
            if clause.line is not None:
                key = "count_in_line"
                values["line"] = self.word(clause.line[0], clause.line[1])
        elif action == "exclude":
            values |= self._exclusion(clause.attribute, clause.value)
        elif action == "relative":
            key = clause.value  # "bigger" or "smaller"
        elif action == "same_as":
            values["attr"] = self.word("attribute", clause.attribute)
        template = self.template(key)
        return template.format(**values), template

    def _exclusion(self, attribute: str, value: str) -> dict[str, str]:
        """``pred`` ("red", "a circle") and ``only`` ("red ones", "circles") of the kept."""
        if attribute == "shape":
            shape = self.word("shape", value)
            return {"pred": f"a {shape}", "only": self.word("shapes", value)}
        word = self.word(attribute, value)
        return {"pred": word, "only": f"{word} {self.word('nouns')}"}


def phrase_hard_edit(
    scene: tuple[HardObject, ...], edit: HardEdit, rng: random.Random, phrasing: str = "train"
) -> HardCaption:
    """Word ``edit`` of ``scene`` with random templates and synonyms of the ``phrasing`` set.

    ``scene`` is the reference scene; the references were chosen with the edit, so it is only
    checked: each names exactly its object there.
    """
    if phrasing not in TEMPLATES:
        raise ValueError(f"phrasing must be one of {PHRASINGS}, not {phrasing!r}")
    phraser = _Phraser(rng, phrasing)
    texts, templates = zip(*(phraser.clause(c) for c in edit.clauses), strict=True)
    if len(texts) == 1:
        text, template = texts[0], templates[0]
    else:
        join = phraser.template(f"join{len(texts)}")
        text, template = join.format(*texts), join.format(*templates)
    reference = tuple({"refs": [r.to_dict() for r in c.refs()]} for c in edit.clauses)
    return HardCaption(text, template, tuple(phraser.parts), reference)


def _words(text: str) -> set[str]:
    """Lower-cased words and numbers of ``text``, placeholders left out."""
    return set(re.findall(r"[a-z0-9]+", re.sub(r"\{\w+\}", " ", text.lower())))


def template_words(phrasing: str) -> set[str]:
    """The words of every template of a phrasing set."""
    return set().union(
        *(_words(t) for templates in TEMPLATES[phrasing].values() for t in templates)
    )


def vocabulary() -> list[str]:
    """Every word either phrasing set can write (for a word-level tokenizer), sorted."""
    values = (
        synonym
        for sets in WORDS.values()
        for kinds in sets.values()
        for synonyms in kinds.values()
        for synonym in synonyms
    )
    words = template_words("train") | template_words("heldout")
    return sorted(words.union(*map(_words, values)))
