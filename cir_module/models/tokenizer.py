"""A small word-level tokenizer built offline, for models trained from scratch and for tests.

Pretrained checkpoints bring their own tokenizer; this one exists because no hub can be
reached here and a randomly initialised text tower still needs token ids.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

__all__ = ["BASIC_VOCABULARY", "SPECIAL_TOKENS", "build_word_tokenizer"]

# Ids 0..3; the text config of a from-scratch model uses pad=0, bos=2, eos=3.
SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")

BASIC_VOCABULARY = [
    "a",
    "an",
    "the",
    "this",
    "that",
    "it",
    "its",
    "one",
    "ones",
    "is",
    "are",
    "be",
    "to",
    "of",
    "in",
    "on",
    "at",
    "and",
    "or",
    "but",
    "with",
    "without",
    "no",
    "not",
    "make",
    "change",
    "turn",
    "replace",
    "swap",
    "move",
    "put",
    "add",
    "remove",
    "delete",
    "drop",
    "take",
    "keep",
    "set",
    "into",
    "as",
    "from",
    "by",
    "instead",
    "so",
    "now",
    "all",
    "any",
    "only",
    "same",
    "other",
    "more",
    "less",
    "bigger",
    "smaller",
    "larger",
    "left",
    "right",
    "top",
    "bottom",
    "middle",
    "center",
    "centre",
    "upper",
    "lower",
    "corner",
    "side",
    "row",
    "column",
    "red",
    "blue",
    "green",
    "yellow",
    "purple",
    "cyan",
    "brown",
    "gray",
    "grey",
    "black",
    "white",
    "orange",
    "pink",
    "circle",
    "circles",
    "square",
    "squares",
    "triangle",
    "triangles",
    "diamond",
    "diamonds",
    "star",
    "stars",
    "cross",
    "crosses",
    "shape",
    "shapes",
    "object",
    "objects",
    "thing",
    "things",
    "small",
    "large",
    "big",
    "tiny",
    "huge",
    "paint",
    "resize",
    "relocate",
    "shift",
    "goes",
    "get",
    "rid",
    "away",
    "place",
    "insert",
    "draw",
    "should",
    "dress",
    "shirt",
    "top",
    "sleeve",
    "sleeves",
    "long",
    "short",
    "color",
    "colour",
    "pattern",
]


def build_word_tokenizer(
    words: Iterable[str] = BASIC_VOCABULARY, max_length: int = 77
) -> PreTrainedTokenizerFast:
    """Lower-cased, punctuation-split word tokenizer with ``<bos> ... <eos>`` framing."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for word in words:
        for piece in re.findall(r"\w+|[^\w\s]", word.lower()):
            vocab.setdefault(piece, len(vocab))
    for symbol in ".,;:!?'\"-()":
        vocab.setdefault(symbol, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        model_max_length=max_length,
    )
