"""Small Qwen2-VL-type models built offline: a tokenizer trained here, random weights.

For tests (a few thousand parameters) and for the models this project trains itself on the
synthetic benchmark (the reranker: ``cir_module.rerank.tiny``). The folder it writes loads
through the same ``from_pretrained`` path as a real Qwen2-VL checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

__all__ = ["SPECIAL_TOKENS", "build_tiny_vlm", "train_tokenizer"]

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 512, words: Sequence[str] = ()):
    """A byte-level BPE tokenizer (Qwen's kind) trained on ``corpus``, with Qwen's special
    tokens and each of ``words`` (e.g. a judge's answers YES / NO) as a single token."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    tok.add_tokens([AddedToken(w, normalized=False) for w in words])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )


def build_tiny_vlm(
    folder: str | Path,
    corpus: Sequence[str] = (),
    *,
    words: Sequence[str] = (),
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    vision_depth: int = 1,
    vision_width: int = 32,
    vision_heads: int = 2,
    vocab_size: int = 512,
    seed: int = 0,
    tokenizer=None,
) -> Path:
    """Write a randomly initialised Qwen2-VL to ``folder``, with a tokenizer trained on
    ``corpus`` (the prompts it will read) that keeps each of ``words`` one token, or with
    ``tokenizer`` (a real checkpoint's, to test at small widths what its vocabulary, special
    tokens and chat template do)."""
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
    )

    if tokenizer is None:
        tokenizer = train_tokenizer(list(corpus) * 4, vocab_size, words)
    ids = tokenizer.convert_tokens_to_ids
    head_dim = hidden // heads
    # M-RoPE splits the rotary half of each head into (time, height, width) sections.
    spatial = max(1, head_dim // 8)
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=1,
            max_position_embeddings=2048,
            rope_scaling={
                "type": "mrope",
                "mrope_section": [head_dim // 2 - 2 * spatial, spatial, spatial],
            },
            tie_word_embeddings=False,
        ),
        vision_config=dict(
            depth=vision_depth,
            embed_dim=vision_width,
            hidden_size=hidden,
            num_heads=vision_heads,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=1024 * 28 * 28).save_pretrained(folder)
    return folder
