"""How a prompt with images becomes model inputs, for every VLM role (reranker, captioner,
query enhancer): templates whose ``{image}`` marks expand to an image's placeholder tokens,
framed as a chat turn by the checkpoint's own chat template, images resized to one side and
cut into the processor's patches, and Qwen2-VL's multimodal (M-RoPE) positions for such a
prompt.

The prompts below are written in the project's own chat form (:data:`USER_TURN`: ChatML, one
user turn, no system turn), the form the models trained here read; their tokenizers carry no
chat template. A checkpoint whose tokenizer has one (a real Qwen2-VL: a default system turn
first) reads the same request framed by its template instead (:func:`in_chat_template`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "COMPARE_PROMPT",
    "DESCRIBE_PROMPT",
    "DESCRIBE_REQUEST",
    "IMAGE",
    "REWRITE_PROMPT",
    "REWRITE_REQUEST",
    "USER_TURN",
    "VERIFY_PROMPT",
    "VERIFY_REQUEST",
    "PromptCodec",
    "answer_tokens",
    "in_chat_template",
    "mrope_positions",
    "user_turn",
]

IMAGE = "{image}"
# The project's chat form: what comes before and after a user's request. Every prompt below
# is a request framed by it.
USER_TURN = ("<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n")
_IMAGE_CUT = "\x00image\x00"  # where an image goes while a filled-in prompt is framed
# The captioning request of the models trained here (``cir vlm train --stage caption``): one
# image, answered by a dense factual description of it. DESCRIBE_PROMPT is that request in
# the chat template, exactly what ``TransformersChat`` sends for it with one image.
DESCRIBE_REQUEST = "Describe the image."
DESCRIBE_PROMPT = (
    f"<|im_start|>user\n{IMAGE}\n{DESCRIBE_REQUEST}<|im_end|>\n<|im_start|>assistant\n"
)
# Text only: a scene's description and a modification, answered by the description of the
# scene so modified (``--stage rewrite``): the reasoning step of describe-and-verify
# reranking, whose description a candidate must then match (``DescribingReranker``).
REWRITE_REQUEST = "Reference: {description}\nModification: {text}\nDescribe the target image."
REWRITE_PROMPT = f"<|im_start|>user\n{REWRITE_REQUEST}<|im_end|>\n<|im_start|>assistant\n"
# Text only: a scene's description, a modification and what changed from that scene to a
# candidate (``cir_module.vlm.changes``), answered YES or NO (``--stage verify``): the
# judgement of change-verifying reranking (``ChangeVerifyingReranker``), made on the model's
# own captions of the reference and of each candidate.
VERIFY_REQUEST = (
    "Reference: {description}\nModification: {text}\nChanges: {changes}\n"
    "Do the changes do what the modification asks?"
)
VERIFY_PROMPT = f"<|im_start|>user\n{VERIFY_REQUEST}<|im_end|>\n<|im_start|>assistant\n"
# Two images, answered by what changed from the first to the second (``--stage compare``).
COMPARE_PROMPT = (
    "<|im_start|>user\nReference image: {image}\nCandidate image: {image}\n"
    "What changed from the reference to the candidate?<|im_end|>\n<|im_start|>assistant\n"
)


@functools.lru_cache(maxsize=32)
def user_turn(tokenizer) -> tuple[str, str]:
    """What ``tokenizer``'s chat template writes before and after one user request, the
    assistant's turn opened (Qwen2-VL's: a default system turn, then the user turn); the
    project's :data:`USER_TURN` for a tokenizer without a chat template."""
    if not getattr(tokenizer, "chat_template", None):
        return USER_TURN
    mark = "\x00request\x00"
    framed = tokenizer.apply_chat_template(
        [{"role": "user", "content": mark}], tokenize=False, add_generation_prompt=True
    )
    head, tail = framed.split(mark)
    return head, tail


def in_chat_template(tokenizer, prompt: str) -> str:
    """``prompt`` (written in the project's chat form, or a part of one: a prompt split where
    its candidate begins) framed by ``tokenizer``'s chat template instead."""
    head, tail = user_turn(tokenizer)
    if prompt.startswith(USER_TURN[0]):
        prompt = head + prompt[len(USER_TURN[0]) :]
    if prompt.endswith(USER_TURN[1]):
        prompt = prompt[: -len(USER_TURN[1])] + tail
    return prompt


def answer_tokens(tokenizer, yes: str, no: str) -> tuple[int, int]:
    """The tokens a judge's P(YES) is read from: each answer word's first token (the word
    the model would begin to write). A word may be several tokens (a real tokenizer's
    "YES" need not be one); the judge is trained and served on the same first tokens, so
    they only have to differ."""
    firsts = []
    for word in (yes, no):
        ids = tokenizer.encode(word, add_special_tokens=False)
        if not ids:
            raise ValueError(f"the answer word {word!r} encodes to no tokens")
        firsts.append(ids[0])
    if firsts[0] == firsts[1]:
        raise ValueError(
            f"the answers {yes!r} and {no!r} begin with the same token ({firsts[0]}): "
            "P(YES) cannot tell them apart; choose answer words that differ in their first token"
        )
    return firsts[0], firsts[1]


@dataclass
class PromptCodec:
    """Turns templates into token ids and images into the processor's patches.

    Every image is resized to ``side`` x ``side``, so every candidate's suffix has the same
    length and candidates batch without padding: how the models trained here saw their
    (square) scenes. With ``keep_aspect`` an image keeps its aspect at a budget of ``side`` x
    ``side`` pixels (the processor's own resize, Qwen2-VL's way of reading a photograph): its
    number of placeholder tokens then depends on its shape (:meth:`tokens_per_image`)."""

    tokenizer: Any
    image_processor: Any
    image_start: str
    image_pad: str
    image_end: str
    image_tokens: int  # placeholder tokens per square image
    side: int
    keep_aspect: bool = False

    @property
    def image_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.image_pad)

    def encode(
        self, template: str, image_tokens: Sequence[int] | None = None, **fields: str
    ) -> list[int]:
        """Token ids of a template (framed by the tokenizer's chat template), each ``{image}``
        expanded to its placeholder tokens: ``image_tokens[i]`` for the i-th image when given
        (images kept at their aspect), else :attr:`image_tokens` each."""
        tokens = self.tokenizer.convert_tokens_to_ids

        def image_ids(i: int) -> list[int]:
            count = image_tokens[i - 1] if image_tokens is not None else self.image_tokens
            pads = [tokens(self.image_pad)] * count
            return [tokens(self.image_start), *pads, tokens(self.image_end)]

        # Filled in before it is framed: a chat template's own text may hold braces.
        texts = [text.format(**fields) for text in template.split(IMAGE)]
        texts = in_chat_template(self.tokenizer, _IMAGE_CUT.join(texts)).split(_IMAGE_CUT)
        ids: list[int] = []
        for i, text in enumerate(texts):
            if i:
                ids += image_ids(i)
            if text:
                ids += self.tokenizer.encode(text, add_special_tokens=False)
        return ids

    def pixels(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """The processor's patch rows for all images (images x patches rows) and each
        image's (t, h, w) patch grid."""
        side = self.side
        if self.keep_aspect:
            rgb = [im.convert("RGB") for im in images]
            out = self.image_processor(
                images=rgb, do_resize=True, max_pixels=side * side, return_tensors="np"
            )
        else:
            resized = [im.convert("RGB").resize((side, side), Image.BICUBIC) for im in images]
            out = self.image_processor(images=resized, do_resize=False, return_tensors="np")
        return out["pixel_values"], out["image_grid_thw"]

    def tokens_per_image(self, grid: np.ndarray) -> list[int]:
        """Placeholder tokens of each image, from its (t, h, w) patch grid (:meth:`pixels`)."""
        merge = self.image_processor.merge_size
        return [int(np.prod(g)) // (merge * merge) for g in grid]


def mrope_positions(
    ids: Sequence[int],
    image_token_id: int,
    merged_grid: tuple[int, int] | Sequence[tuple[int, int]],
):
    """Qwen2-VL's multimodal (time, height, width) positions (3 x len(ids)) for a prompt
    with images: text tokens count on from the largest position so far; an image's tokens
    sit at (start, start + row, start + col). ``merged_grid`` is every image's (rows,
    columns) of merged tokens, or one grid per image in order (a pyramid's scales differ)."""
    grids = [merged_grid] if isinstance(merged_grid[0], int) else list(merged_grid)
    out = np.zeros((3, len(ids)), dtype=np.int64)
    i, next_position, image = 0, 0, 0
    while i < len(ids):
        if ids[i] != image_token_id:
            out[:, i] = next_position
            next_position += 1
            i += 1
            continue
        rows, cols = grids[min(image, len(grids) - 1)]
        grid_row, grid_col = np.divmod(np.arange(rows * cols), cols)
        out[0, i : i + rows * cols] = next_position
        out[1, i : i + rows * cols] = next_position + grid_row
        out[2, i : i + rows * cols] = next_position + grid_col
        next_position += max(rows, cols)
        i += rows * cols
        image += 1
    return out
