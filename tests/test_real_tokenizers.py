"""The checkpoints the README names, with their real tokenizers and processors and random
weights at small widths (``tests/real_tokenizers.py`` says where each tokenizer comes from):
every path of the project gives what the model class's own forward gives on the inputs the
checkpoint's own processor makes.

- CLIP (49,408-token BPE): the first stage's text and image embeddings.
- Qwen2-VL (151,657 tokens, its chat template with a system turn, its image processor): the
  prompts, the P(YES) image judge, the change verifier and the captioner.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

from cir_module.models import create_model
from cir_module.rerank.load import load_reranker
from cir_module.rerank.prompt import RerankPrompt
from cir_module.rerank.scorer import LVLMReranker
from cir_module.vlm.chat import ChatRequest, TransformersChat
from cir_module.vlm.folder import VLM_SETTINGS
from cir_module.vlm.prompt import (
    DESCRIBE_PROMPT,
    IMAGE,
    USER_TURN,
    VERIFY_REQUEST,
    answer_tokens,
    in_chat_template,
)
from cir_module.vlm.tiny import build_tiny_vlm, train_tokenizer
from tests.conftest import scene_images
from tests.real_tokenizers import build_clip, clip_tokenizer_folder, qwen2_vl_tokenizer_folder

SIDE = 112  # 8 x 8 patches of 14 px: 16 tokens after Qwen2-VL's 2 x 2 merge
TEXTS = ["make the large circle red", "remove the small blue square at the top left"]


# -- the tokenizers are the checkpoints' ----------------------------------------------------
def test_the_tokenizers_encode_as_the_checkpoints_do():
    """Ids published with the checkpoints: CLIP's "a photo of a cat" (OpenAI's CLIP
    notebook), Qwen2's "Hello world" and its special tokens (Qwen2-VL's tokenizer.json)."""
    clip = AutoTokenizer.from_pretrained(clip_tokenizer_folder())
    assert len(clip) == 49408
    assert clip("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
    qwen = AutoTokenizer.from_pretrained(qwen2_vl_tokenizer_folder())
    assert len(qwen) == 151657
    assert qwen("Hello world")["input_ids"] == [9707, 1879]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|image_pad|>", "<|video_pad|>"]
    assert qwen.convert_tokens_to_ids(specials) == [151643, 151644, 151645, 151655, 151656]


# -- CLIP: the first stage --------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    """CLIP's tokenizer and image processor (224 px shortest side, centre crop) with a random
    CLIP at small widths and CLIP's real vocabulary and text length."""
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    return build_clip(
        tmp_path_factory.mktemp("clip-real-tokenizer"),
        projection_dim=32,
        text=small,
        vision=dict(patch_size=32, **small),
    )


def test_the_first_stage_embeds_as_clip_does(clip_folder):
    """A CLIP checkpoint through ``create_model``: its text embeddings are CLIPModel's
    (tokenized by CLIP's tokenizer, padded, pooled at the end token), its image embeddings
    with one scale are CLIPModel's on CLIP's image processor's pixels."""
    model = create_model("clip-vit-b32-pyramid3", pretrained=clip_folder, num_scales=1).eval()
    clip = CLIPModel.from_pretrained(clip_folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(clip_folder)
    images = [im.resize((300, 200)) for im in scene_images(2)]  # not square: resize, crop
    pixels = CLIPImageProcessor.from_pretrained(clip_folder)(images, return_tensors="pt")
    with torch.no_grad():
        text = F.normalize(
            clip.get_text_features(**tokenizer(TEXTS, padding=True, return_tensors="pt")), dim=-1
        )
        image = F.normalize(clip.get_image_features(**pixels), dim=-1)
    np.testing.assert_allclose(model.embed_texts(TEXTS), text.numpy(), atol=1e-5)
    np.testing.assert_allclose(model.embed_images(images), image.numpy(), atol=1e-5)


# -- Qwen2-VL: the second stage ---------------------------------------------------------------
@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory) -> Path:
    """Qwen2-VL's tokenizer, chat template and image processor with a random Qwen2-VL at
    small widths (the full 151,657-token vocabulary)."""
    tokenizer = AutoTokenizer.from_pretrained(qwen2_vl_tokenizer_folder())
    return build_tiny_vlm(tmp_path_factory.mktemp("qwen2-vl-real-tokenizer"), tokenizer=tokenizer)


def qwen2_vl_processor(tokenizer, image_processor):
    """transformers' Qwen2VLProcessor without its video processor (whose import needs
    torchvision, which the project's torch does not ship): images and text only."""
    from transformers import Qwen2VLProcessor

    processor = Qwen2VLProcessor.__new__(Qwen2VLProcessor)
    processor.tokenizer, processor.image_processor = tokenizer, image_processor
    processor.video_processor, processor.chat_template = None, tokenizer.chat_template
    processor.image_token, processor.video_token = "<|image_pad|>", "<|video_pad|>"
    processor.image_token_id, processor.video_token_id = tokenizer.convert_tokens_to_ids(
        ["<|image_pad|>", "<|video_pad|>"]
    )
    return processor


def as_messages(prompt: str, **fields: str) -> list[dict]:
    """A prompt in the project's chat form as the chat messages a Qwen2-VL user sends: text
    and image entries in order."""
    assert prompt.startswith(USER_TURN[0]) and prompt.endswith(USER_TURN[1])
    request = prompt[len(USER_TURN[0]) : -len(USER_TURN[1])]
    content: list[dict] = []
    for i, text in enumerate(request.split(IMAGE)):
        if i:
            content.append({"type": "image"})
        if text:
            content.append({"type": "text", "text": text.format(**fields)})
    return [{"role": "user", "content": content}]


def model_inputs(
    judge, prompt: str, images: list[Image.Image], square: bool = True, **fields: str
) -> dict:
    """What Qwen2-VL's own chat template and processor make of ``prompt`` and ``images``:
    the images squashed to SIDE x SIDE, or (``square`` False) resized by the processor
    itself at their aspect within SIDE x SIDE pixels."""
    processor = qwen2_vl_processor(judge.tokenizer, judge.image_processor)
    text = judge.tokenizer.apply_chat_template(
        as_messages(prompt, **fields), tokenize=False, add_generation_prompt=True
    )
    if not square:
        return dict(
            processor(text=[text], images=images, max_pixels=SIDE * SIDE, return_tensors="pt")
        )
    square_images = [im.convert("RGB").resize((SIDE, SIDE), Image.BICUBIC) for im in images]
    return dict(processor(text=[text], images=square_images or None, return_tensors="pt"))


def test_prompts_are_framed_by_the_checkpoints_chat_template(qwen_folder):
    """A tokenizer with a chat template frames the project's prompts with it (Qwen2-VL's
    default system turn first); the ids are the processor's, image placeholders expanded."""
    judge = LVLMReranker.from_pretrained(qwen_folder, image_side=SIDE)
    framed = in_chat_template(judge.tokenizer, DESCRIBE_PROMPT)
    assert framed.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert framed.endswith(USER_TURN[1])
    expected = model_inputs(judge, DESCRIBE_PROMPT, scene_images(1))["input_ids"][0].tolist()
    assert judge.codec.encode(DESCRIBE_PROMPT) == expected
    assert expected.count(judge.codec.image_token_id) == judge.codec.image_tokens == 16


def test_the_judges_p_yes_is_the_models_own(qwen_folder):
    """The image judge's P(YES) (the query's prefix cached, candidates batched on it) equals
    the softmax over YES / NO of Qwen2VLForConditionalGeneration's last logits on the whole
    prompt as the processor makes it."""
    judge = LVLMReranker.from_pretrained(qwen_folder, image_side=SIDE, batch_size=2)
    reference, *candidates = scene_images(4, seed=3)
    scores = judge.score(reference, TEXTS[0], candidates)
    prompt = RerankPrompt()
    expected = []
    for candidate in candidates:
        inputs = model_inputs(
            judge, prompt.prefix + prompt.suffix, [reference, candidate], text=TEXTS[0]
        )
        with torch.no_grad():
            logits = judge.model(**inputs).logits[0, -1, [judge.yes_id, judge.no_id]]
        expected.append(torch.softmax(logits, -1)[0].item())
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert (judge.yes_id, judge.no_id) == (14004, 8996)  # "YES", "NO": one token each in Qwen2


def test_the_verifiers_p_yes_is_the_models_own(qwen_folder, tmp_path):
    """The change verifier (text only: the shared half cached, change lists batched on it)
    equals the model's own forward on the chat template's ids of the whole request."""
    (qwen_folder / VLM_SETTINGS).write_text(
        json.dumps({"image_side": SIDE, "verify": "changes", "differ": "fact-diff"})
    )
    try:
        verifier = load_reranker(qwen_folder)
    finally:
        (qwen_folder / VLM_SETTINGS).unlink()
    description = "large red circle at row 1, column 2; small blue square at row 3, column 1"
    changes = [
        "the large red circle became blue",
        "removed the small blue square",
        "nothing changed",
    ]
    scores = verifier.verify(description, TEXTS[0], changes)
    expected = []
    for change in changes:
        request = VERIFY_REQUEST.format(description=description, text=TEXTS[0], changes=change)
        ids = verifier.tokenizer.apply_chat_template(
            [{"role": "user", "content": request}], add_generation_prompt=True
        )
        with torch.no_grad():
            logits = verifier.model(input_ids=torch.tensor([ids])).logits[0, -1]
        expected.append(torch.softmax(logits[[verifier.yes_id, verifier.no_id]], -1)[0].item())
    np.testing.assert_allclose(scores, expected, atol=1e-5)


@pytest.mark.parametrize("keep_aspect", [True, False])
def test_the_captioner_writes_what_generate_writes(qwen_folder, keep_aspect):
    """Greedy captions (the enrichment job's captioner) of a photograph that is not square
    are what ``generate`` writes from the processor's inputs: the image kept at its aspect
    within the pixel budget by the processor's own resize (a checkpoint that records no side
    of its own: Qwen2-VL's way), or squashed to the square the models trained here read."""
    chat = TransformersChat(
        qwen_folder, image_side=SIDE, max_new_tokens=6, device="cpu", keep_aspect=keep_aspect
    )
    judge = LVLMReranker.from_pretrained(qwen_folder, image_side=SIDE)
    images = [scene_images(1, seed=5)[0].resize((300, 160)), scene_images(1, seed=6)[0]]
    replies = chat.complete([ChatRequest("Describe the image.", (im,)) for im in images])
    for image, reply in zip(images, replies, strict=True):
        inputs = model_inputs(judge, DESCRIBE_PROMPT, [image], square=not keep_aspect)
        out = judge.model.generate(**inputs, max_new_tokens=6, do_sample=False)
        width = inputs["input_ids"].shape[1]
        assert reply == judge.tokenizer.decode(out[0, width:], skip_special_tokens=True).strip()
    if keep_aspect:  # the wide photograph is read in more columns than rows
        _, grid = chat.codec.pixels(images[:1])
        assert grid[0][2] > grid[0][1]
    assert TransformersChat(qwen_folder, image_side=SIDE, device="cpu").codec.keep_aspect


# -- answers of several tokens ----------------------------------------------------------------
def test_answer_words_of_several_tokens_are_read_at_their_first_token():
    """P(YES) is read at each answer's first token; answers that begin alike are refused."""
    qwen = AutoTokenizer.from_pretrained(qwen2_vl_tokenizer_folder())
    yes, no = "Yes, it does", "No, it does not"
    assert len(qwen.encode(yes)) > 1 and len(qwen.encode(no)) > 1
    assert answer_tokens(qwen, yes, no) == (qwen.encode(yes)[0], qwen.encode(no)[0])
    with pytest.raises(ValueError, match="begin with the same token"):
        answer_tokens(qwen, "YES", "YES!")
    small = train_tokenizer(["is it the one?"] * 4, 300)  # "YES" is bytes to it
    assert len(small.encode("YES")) > 1
    assert answer_tokens(small, "YES", "NO")[0] == small.encode("YES")[0]
