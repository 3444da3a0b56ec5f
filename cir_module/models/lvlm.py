"""The ``lvlm`` family: a vision-language model (Qwen2-VL) as the composed-query encoder,
after CIR-LVLM, with PMTFR's pyramid patcher in its vision input.

Every input is one pass of the language model; its hidden states are pooled into the
embedding (``config.lvlm``, :class:`~cir_module.models.config.LVLMSpec`)::

    composed query: [head] [soft prompts] [image at M scales] [modification] [cue]
    image:          [head] [soft prompts] [image at M scales] [cue]
    text:           [head] [soft prompts] [text] [cue]

* **task prompt**: the head says what the embedding is for and the cue asks for the answer
  in one word, so that the last positions summarise the input (off: a bare chat turn);
* **soft-prompt pool**: learnable prompts with learnable keys; an input's own features (the
  mean of its image tokens and word embeddings) pick the ``top_k`` prompts whose keys match
  best, inserted after the head (instance-specific prompts; L2P's pull loss trains the keys);
* **pyramid**: ``pyramid.num_scales`` copies of the image, each half the previous side, each
  its own image in the vision input (its own vision block and M-RoPE grid);
* **pooling**: weighted mean (weights grow with position: in a causal model later positions
  have read more), plain mean, or the last position.

Everything before the text has a fixed length, so its multimodal positions are computed once
and the text's continue from them; texts are right-padded, which a causal model never sees.
The checkpoint folder is the backbone's own (``from_pretrained``-loadable) plus
``cir_config.json`` and ``cir_heads.safetensors`` (the prompt pool).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from cir_module.models.config import CIRConfig
from cir_module.models.cued_text import cued_token_rows
from cir_module.models.preprocess import ImagePreprocessor
from cir_module.models.pyramid import downscale_matrix
from cir_module.vlm.layers import BatchedVision, decode
from cir_module.vlm.prompt import mrope_positions

__all__ = ["KINDS", "POOLINGS", "LVLMRetriever", "SoftPromptPool", "patchify", "pool_states"]

KINDS = ("composed", "image", "text")
POOLINGS = ("weighted_mean", "mean", "last")
# The task prompt per input kind: an instruction (in the head) and a one-word cue (after the
# input), E5-V's way of making a causal model summarise its input at the last positions.
TASKS = {
    "composed": (
        "Find the image that shows the reference image changed as the text asks.",
        "The target image in one word:",
    ),
    "image": ("Find images that show what this image shows.", "This image in one word:"),
    "text": ("Find the image this text describes.", "The image in one word:"),
}
DEFAULT_SIDE = 448
_CONFIG, _HEADS = "cir_config.json", "cir_heads.safetensors"


def patchify(pixels: torch.Tensor, patch: int, temporal: int, merge: int) -> torch.Tensor:
    """Normalised pixels ``[batch, 3, H, W]`` -> Qwen2-VL's patch rows ``[batch * H/patch *
    W/patch, 3 * temporal * patch * patch]``, in the order its image processor writes them
    (each image's rows together, in merge x merge windows; a still image repeated over time).
    A tensor op, so that the pyramid's copies are made and patchified inside one graph."""
    b, c, h, w = pixels.shape
    gh, gw = h // patch, w // patch
    x = pixels.unsqueeze(1).expand(b, temporal, c, h, w)
    x = x.reshape(b, temporal, c, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(b * gh * gw, c * temporal * patch * patch)


def pool_states(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """Hidden states ``[batch, length, dim]`` -> ``[batch, dim]`` over the positions of
    ``mask`` (ones, then right padding): ``last``, ``mean``, or ``weighted_mean`` (position
    i of n weighs i / (1 + ... + n))."""
    if how == "last":
        last = mask.long().sum(1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    weights = mask.to(hidden.dtype)
    if how == "weighted_mean":
        weights = weights * torch.arange(1, mask.shape[1] + 1, device=hidden.device)
    elif how != "mean":
        raise ValueError(f"unknown pooling {how!r}; known: {', '.join(POOLINGS)}")
    return (hidden * weights.unsqueeze(-1)).sum(1) / weights.sum(1, keepdim=True)


class SoftPromptPool(nn.Module):
    """``size`` prompts of ``length`` vectors with one key each. An input's feature picks
    the ``top_k`` prompts whose keys are most cosine-similar to it; the pull loss (1 - those
    similarities) moves the chosen keys toward the inputs that chose them. The feature is
    detached: the selection is a lookup, trained through the keys alone."""

    def __init__(self, size: int, top_k: int, length: int, hidden: int, std: float) -> None:
        super().__init__()
        if not 1 <= top_k <= size or length < 1:
            raise ValueError(f"a prompt pool needs 1 <= top_k <= size and length >= 1, got "
                             f"size {size}, top_k {top_k}, length {length}")  # fmt: skip
        self.top_k = top_k
        self.keys = nn.Parameter(torch.randn(size, hidden) * std)
        self.prompts = nn.Parameter(torch.randn(size, length, hidden) * std)

    @property
    def tokens(self) -> int:
        """Vectors one input gets: ``top_k`` prompts of ``length``."""
        return self.top_k * self.prompts.shape[1]

    def select(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[batch, hidden]`` features -> the chosen prompts' indices ``[batch, top_k]`` and
        their keys' cosine similarities."""
        similarity = F.normalize(feature.detach(), dim=-1) @ F.normalize(self.keys, dim=-1).T
        top = similarity.topk(self.top_k, dim=-1)
        return top.indices, top.values

    def forward(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The chosen prompts ``[batch, top_k * length, hidden]`` and the pull loss."""
        indices, similarity = self.select(feature)
        return self.prompts[indices].flatten(1, 2), (1 - similarity).mean()


class LVLMRetriever(nn.Module):
    """Composed image retrieval with a vision-language model as every encoder.

    The same interface as :class:`~cir_module.models.model.CIRModel` where the trainer, the
    service and the evaluation use it: ``encode_image`` / ``encode_text`` /
    ``encode_composed`` on tensors, ``embed_*`` on PIL images and strings, ``pixels``,
    ``tokenize``, ``save_pretrained`` / ``from_pretrained``, ``describe``.
    """

    def __init__(
        self, config: CIRConfig, backbone: nn.Module, tokenizer: Any, image_processor: Any
    ) -> None:
        super().__init__()
        spec = config.lvlm
        if spec.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {spec.pooling!r}; known: {', '.join(POOLINGS)}")
        self.config = config
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        vision = backbone.config.vision_config
        self.patch, self.merge = vision.patch_size, vision.spatial_merge_size
        self.temporal = vision.temporal_patch_size
        side = spec.image_side or DEFAULT_SIDE
        self.sides = [side // 2**k for k in range(config.pyramid.num_scales)]
        window = self.patch * self.merge
        if config.pyramid.num_scales < 1 or any(s < window or s % window for s in self.sides):
            raise ValueError(
                f"the pyramid's sides {self.sides} must all be multiples of {window} (patch "
                f"{self.patch} x merge {self.merge}): choose image_side / num_scales to fit"
            )
        self.preprocess = ImagePreprocessor(
            image_size=side,
            mean=tuple(float(v) for v in image_processor.image_mean),
            std=tuple(float(v) for v in image_processor.image_std),
            center_crop=False,
        )
        for k, s in enumerate(self.sides[1:], start=1):
            self.register_buffer(f"_down{k}", downscale_matrix(side, s), persistent=False)
        # One vision pass per copy, its images batched (the weights are the backbone's).
        self.towers = nn.ModuleList(
            BatchedVision(backbone.model.visual, g * self.merge) for g in self.grids
        )
        embed = backbone.get_input_embeddings()
        hidden = embed.embedding_dim
        self.pool = (
            SoftPromptPool(
                spec.pool_size, spec.top_k, spec.prompt_length, hidden, embed.weight.std().item()
            )
            if spec.pool_size
            else None
        )
        self._pulls: list[torch.Tensor] = []
        ids = tokenizer.convert_tokens_to_ids
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.image_pad, self.vision_start, self.vision_end = (
            ids("<|image_pad|>"), ids("<|vision_start|>"), ids("<|vision_end|>")
        )  # fmt: skip
        self.heads: dict[str, list[int]] = {}
        self.cues: dict[str, list[int]] = {}
        for kind in KINDS:
            head, cue = self._template(kind, spec.task_prompt)
            self.heads[kind] = tokenizer.encode(head, add_special_tokens=False)
            self.cues[kind] = tokenizer.encode(cue, add_special_tokens=False)
            positions = self._prefix_positions(kind)
            self.register_buffer(f"_positions_{kind}", positions, persistent=False)
        self.text_max_length = config.text_max_length
        self.eval()

    # -- the fixed parts of each input -------------------------------------------------------
    @staticmethod
    def _template(kind: str, task_prompt: bool) -> tuple[str, str]:
        instruction, cue = TASKS[kind]
        head = "<|im_start|>user\n" + (f"{instruction}\n" if task_prompt else "")
        tail = f"\n{cue}" if task_prompt else ""
        return head, f"{tail}<|im_end|>\n<|im_start|>assistant\n"

    @property
    def grids(self) -> list[int]:
        """Merged-token grid side of each pyramid copy."""
        return [s // self.patch // self.merge for s in self.sides]

    def num_image_tokens(self) -> int:
        """Tokens one image becomes in the language model (all copies, with their frames)."""
        return sum(g * g + 2 for g in self.grids)

    def _prefix_ids(self, kind: str) -> list[int]:
        """The ids of everything before the text (soft prompts and image tokens as
        placeholders): the head, the prompts, then for images each copy's vision block."""
        soft = [self.pad_id] * (self.pool.tokens if self.pool is not None else 0)
        image = []
        if kind != "text":
            for g in self.grids:
                image += [self.vision_start, *[self.image_pad] * (g * g), self.vision_end]
        return [*self.heads[kind], *soft, *image]

    def _prefix_positions(self, kind: str) -> torch.Tensor:
        grids = [(g, g) for g in self.grids]
        return torch.from_numpy(mrope_positions(self._prefix_ids(kind), self.image_pad, grids))

    # -- tensor encoders ---------------------------------------------------------------------
    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[batch, 3, side, side]`` pixels -> unit image embeddings ``[batch, dim]``."""
        return self._encode("image", pixel_values, None, None)

    def encode_image_states(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit image embeddings and the image's tokens at every scale (as the language
        model reads them)."""
        scales = self.image_tokens(pixel_values)  # the vision tower once, for both outputs
        return self._encode("image", pixel_values, None, None, scales), torch.cat(scales, 1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token ids (from :meth:`tokenize`) -> unit text embeddings ``[batch, dim]``."""
        return self._encode("text", None, input_ids, attention_mask)

    def encode_text_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What :meth:`compose` needs of a text: the language model reads the text's ids
        together with the image, so there is no separate text embedding (an empty one)."""
        empty = input_ids.new_zeros((input_ids.shape[0], 0), dtype=torch.float32)
        return empty, input_ids, attention_mask

    def compose(
        self,
        pixel_values: torch.Tensor,
        text_embeds: torch.Tensor,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, None]:
        """Reference pixels + a text's states -> the unit composed query, and None: the
        reference's own embedding is not a by-product here (the trainer encodes it when it
        needs it)."""
        return self._encode("composed", pixel_values, text_tokens, text_mask), None

    def encode_composed(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Reference image + modification text -> unit composed-query embeddings."""
        return self._encode("composed", pixel_values, input_ids, attention_mask)

    def image_tokens(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """The pyramid in the vision input: each copy patchified and run through the vision
        tower with its own grid -> its merged tokens ``[batch, grid * grid, hidden]``."""
        visual = self.backbone.model.visual
        out = []
        for k, tower in enumerate(self.towers):
            copy = pixel_values
            if k:
                down = getattr(self, f"_down{k}")
                copy = down @ pixel_values @ down.T
            out.append(tower(visual, patchify(copy, self.patch, self.temporal, self.merge)))
        return out

    def _encode(
        self,
        kind: str,
        pixel_values: torch.Tensor | None,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        scales: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """One pass of the language model over an input of ``kind``; ``scales``: the image's
        tokens when already computed (:meth:`image_tokens`)."""
        embed = self.backbone.get_input_embeddings()
        batch = (pixel_values if pixel_values is not None else input_ids).shape[0]
        device = embed.weight.device

        def words(ids: list[int]) -> torch.Tensor:
            return embed(torch.tensor(ids, device=device)).expand(batch, -1, -1)

        if input_ids is None:  # an image alone: the cue is its text
            input_ids = torch.tensor([self.cues[kind]], device=device).expand(batch, -1)
            attention_mask = torch.ones_like(input_ids)
        text = embed(input_ids)
        image: list[torch.Tensor] = []
        if pixel_values is not None:
            scales = scales if scales is not None else self.image_tokens(pixel_values)
            start, end = words([self.vision_start]), words([self.vision_end])
            image = [part for tokens in scales for part in (start, tokens, end)]
        parts = [words(self.heads[kind])]
        if self.pool is not None:
            prompts, pull = self.pool(self._feature(image[1::3], text, attention_mask))
            if self.training:
                self._pulls.append(pull)
            parts.append(prompts)
        sequence = torch.cat([*parts, *image, text], dim=1)
        prefix = getattr(self, f"_positions_{kind}")
        tail = prefix.max() + 1 + torch.arange(text.shape[1], device=device)
        positions = torch.cat([prefix, tail.expand(3, -1)], dim=1).unsqueeze(1)
        fixed = torch.ones(batch, prefix.shape[1], dtype=attention_mask.dtype, device=device)
        mask = torch.cat([fixed, attention_mask], dim=1)
        language = self.backbone.model.language_model
        hidden = decode(language, sequence, positions.expand(-1, batch, -1), mask)
        return F.normalize(pool_states(hidden, mask, self.config.lvlm.pooling), dim=-1)

    @staticmethod
    def _feature(image: list[torch.Tensor], text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """What picks an input's prompts: the mean of its image tokens and its words."""
        weights = mask.to(text.dtype).unsqueeze(-1)
        total, count = (text * weights).sum(1), weights.sum(1)
        for tokens in image:
            total, count = total + tokens.sum(1), count + tokens.shape[1]
        return total / count

    def regularization(self) -> torch.Tensor | float:
        """The prompt pool's pull loss over the passes since the last call, weighted
        (``lvlm.pull_weight``); the trainer adds it to InfoNCE."""
        pulls, self._pulls = self._pulls, []
        if not pulls:
            return 0.0
        return self.config.lvlm.pull_weight * torch.stack(pulls).mean()

    # -- inputs -------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Dimension of the embedding space: the language model's width."""
        return self.backbone.get_input_embeddings().embedding_dim

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Preprocess PIL images into the tensor ``encode_image`` takes."""
        return torch.from_numpy(self.preprocess(images)).to(self.device)

    def tokenize(self, texts: Sequence[str], kind: str = "composed") -> dict[str, torch.Tensor]:
        """Texts -> right-padded ids of each text (truncated to ``text_max_length``) followed
        by the cue of ``kind`` (a composed query's, or a text query's)."""
        ids, mask = cued_token_rows(
            self.tokenizer, texts, self.cues[kind], self.text_max_length, self.pad_id
        )
        device = self.device
        return {
            "input_ids": torch.from_numpy(ids).to(device),
            "attention_mask": torch.from_numpy(mask).to(device),
        }

    # -- numpy front end for serving ----------------------------------------------------------
    @torch.inference_mode()
    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """PIL images -> float32 unit vectors ``[n, dim]``."""
        return self.encode_image(self.pixels(images)).float().cpu().numpy()

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Strings -> float32 unit vectors ``[n, dim]``."""
        return self.encode_text(**self.tokenize(texts, kind="text")).float().cpu().numpy()

    @torch.inference_mode()
    def embed_composed(self, images: Sequence[Image.Image], texts: Sequence[str]) -> np.ndarray:
        """Pairs (reference image, modification text) -> float32 unit vectors ``[n, dim]``."""
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        vectors = self.encode_composed(self.pixels(images), **self.tokenize(texts))
        return vectors.float().cpu().numpy()

    def describe(self) -> dict[str, Any]:
        """What ``/meta`` reports about the model."""
        spec = self.config.lvlm
        return {
            "name": self.config.name,
            "family": "lvlm",
            "backbone": self.config.backbone.pretrained or "from the checkpoint folder",
            "dimension": self.dim,
            "image_size": self.sides[0],
            "patch_size": self.patch,
            "fusion": "lvlm",
            "scales": len(self.sides),
            "scale_grids": self.grids,
            "visual_tokens": self.num_image_tokens(),
            "task_prompt": spec.task_prompt,
            "prompt_pool": (
                {"size": spec.pool_size, "top_k": spec.top_k, "length": spec.prompt_length}
                if self.pool is not None
                else None
            ),
            "pooling": spec.pooling,
            "text_max_length": self.text_max_length,
        }

    # -- construction and checkpoints ---------------------------------------------------------
    @classmethod
    def from_config(cls, config: CIRConfig, folder: str | Path | None = None) -> LVLMRetriever:
        """The model ``config`` describes, on the VLM checkpoint ``folder`` (default: the
        config's ``backbone.pretrained``, a hub id or a folder such as ``cir vlm train``'s)."""
        from transformers import AutoConfig, AutoTokenizer

        from cir_module.vlm.family import adapter_for, saved_settings

        source = str(folder or config.backbone.pretrained or "")
        if not source:
            raise ValueError(
                "the lvlm family loads a Qwen2-VL checkpoint: give backbone.pretrained "
                "(a hub id or a folder, e.g. `cir vlm train`'s model) or --pretrained"
            )
        model_type = AutoConfig.from_pretrained(source).model_type
        if model_type != "qwen2_vl":  # the written-out vision tower is Qwen2-VL's
            raise ValueError(
                f"the lvlm family reads Qwen2-VL checkpoints; {source} is {model_type!r} "
                "(Qwen2.5-VL's windowed vision attention is not written out in vlm/layers.py)"
            )
        adapter = adapter_for(model_type)
        side = config.lvlm.image_side or saved_settings(source).get("image_side", DEFAULT_SIDE)
        config = dataclasses.replace(config, lvlm=dataclasses.replace(config.lvlm))
        config.lvlm.image_side = int(side)
        return cls(
            config,
            adapter.load_model(source),
            AutoTokenizer.from_pretrained(source),
            adapter.load_image_processor(source),
        )

    def save_pretrained(self, path: str | Path) -> Path:
        """The backbone's own checkpoint files, ``cir_config.json`` and the prompt pool."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        self.image_processor.save_pretrained(path)
        self.config.save(path / _CONFIG)
        pool = self.pool.state_dict() if self.pool is not None else {}
        save_file({k: v.detach().contiguous().cpu() for k, v in pool.items()}, path / _HEADS)
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path) -> LVLMRetriever:
        """Load a folder written by :meth:`save_pretrained`."""
        folder = Path(path)
        model = cls.from_config(CIRConfig.from_json(folder / _CONFIG), folder)
        if model.pool is not None:
            model.pool.load_state_dict(load_file(folder / _HEADS))
        return model.eval()
