"""What every vision-language reranker shares: the model and its prompt codec, loading from a
folder, batched greedy generation, and P(YES) read from the next-token logits.

The kinds (:mod:`cir_module.rerank.registry`) build on it: the P(YES) image judge
(:mod:`~cir_module.rerank.scorer`), the change verifier (:mod:`~cir_module.rerank.verify`).
This module names none of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cir_module.rerank.prefixed import PrefixedScoring
from cir_module.rerank.prompt import RerankPrompt
from cir_module.vlm.family import FamilyAdapter, adapter_for, saved_settings
from cir_module.vlm.folder import KIND_KEY
from cir_module.vlm.prompt import PromptCodec, answer_tokens

__all__ = ["VisionLanguageScorer"]


class VisionLanguageScorer(PrefixedScoring):
    """A vision-language model that scores candidates; subclasses say how (``prefix`` /
    ``score_prefixed``)."""

    kind: str  # set by :func:`~cir_module.rerank.registry.register_reranker`

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        image_processor,
        adapter: FamilyAdapter,
        *,
        image_side: int = 224,
        prompt: RerankPrompt | None = None,
        batch_size: int = 16,
        served_with: dict | None = None,
    ) -> None:
        self.model = model.eval()
        # How a recipe's folder is served (``cir_module.vlm.folder.SERVED_WITH``): the
        # service's defaults for lambda and K, shown in /meta.
        self.served_with = dict(served_with or {})
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.adapter = adapter
        self.layers = adapter.decoder_layers(model)
        self.image_side = image_side
        self.prompt = prompt or RerankPrompt()
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        self.codec = PromptCodec(
            tokenizer,
            image_processor,
            adapter.image_start,
            adapter.image_pad,
            adapter.image_end,
            adapter.image_tokens(model, image_side),
            image_side,
        )
        self.yes_id, self.no_id = answer_tokens(tokenizer, self.prompt.yes, self.prompt.no)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        dtype: str = "auto",
        saved: bool = True,
        device: str | None = None,
        **kwargs,
    ):
        """Load an image-text-to-text checkpoint (hub id or folder) as this class onto
        ``device`` (the service's ``CIR_DEVICE``; None: CUDA when there is one). A folder's
        ``cir_reranker.json`` supplies defaults such as ``image_side`` unless ``saved`` is
        False (its kind is the registry's business:
        :func:`~cir_module.rerank.load.load_reranker`)."""
        from transformers import AutoConfig, AutoTokenizer

        kwargs = {**(saved_settings(path) if saved else {}), **kwargs}
        kwargs.pop(KIND_KEY, None)
        adapter = adapter_for(AutoConfig.from_pretrained(path).model_type)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = torch.float32 if device == "cpu" and dtype == "auto" else dtype
        model = adapter.load_model(str(path), dtype=torch_dtype).to(device)
        return cls(
            model,
            AutoTokenizer.from_pretrained(path),
            adapter.load_image_processor(str(path)),
            adapter,
            **kwargs,
        )

    def describe(self) -> dict:
        """What ``/meta`` shows."""
        return {
            "family": self.adapter.name,
            "runtime": "torch",
            "layers": len(self.layers),
            "image_side": self.image_side,
            **({"served_with": self.served_with} if self.served_with else {}),
        }

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    # -- prompt ------------------------------------------------------------------------------
    def _encode(self, template: str, **fields: str) -> list[int]:
        return self.codec.encode(template, **fields)

    def _pixels(self, images: Sequence[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        pixels, grid = self.codec.pixels(images)
        return torch.from_numpy(pixels).to(self.device, self.model.dtype), torch.from_numpy(
            grid
        ).to(self.device)

    def _p_yes(self, last_hidden: torch.Tensor) -> np.ndarray:
        logits = self.adapter.lm_head(self.model)(last_hidden)[:, [self.yes_id, self.no_id]]
        return torch.softmax(logits.float(), dim=-1)[:, 0].cpu().numpy()

    @torch.inference_mode()
    def generate(
        self,
        template: str,
        images: Sequence[Image.Image],
        max_new_tokens: int,
        stop: Sequence[int] = (),
        **fields: str,
    ) -> list[str]:
        """Greedy answers to ``template`` (its ``{image}`` marks filled in order, its other
        fields from ``fields``), one per row: ``images`` holds every row's images, row after
        row. Each answer ends at ``<|im_end|>`` or at a token of ``stop``."""
        prompt = self._encode(template, **fields)
        per_row = template.count("{image}")
        rows = len(images) // per_row if per_row else 1
        pixels, grid = self._pixels(images) if images else (None, None)
        end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        out = self.model.generate(
            input_ids=torch.tensor([prompt] * rows, device=self.device),
            attention_mask=torch.ones(rows, len(prompt), dtype=torch.long, device=self.device),
            pixel_values=pixels,
            image_grid_thw=grid,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=[end, *stop],
            pad_token_id=self.tokenizer.pad_token_id,
        )
        return self.tokenizer.batch_decode(out[:, len(prompt) :], skip_special_tokens=True)

    # -- scoring -----------------------------------------------------------------------------
    def prefix(self, reference: Image.Image, text: str):
        """The query's shared state, computed once for all its candidates."""
        raise NotImplementedError

    def score_prefixed(self, state, candidates: Sequence[Image.Image]) -> np.ndarray:
        """One score per candidate, continuing from a query's :meth:`prefix`."""
        raise NotImplementedError

    def score_naive(
        self, reference: Image.Image, text: str, candidates: Sequence[Image.Image]
    ) -> np.ndarray:
        """The same scores by the plainest path (a kind whose prefix is not a cache: the same
        path)."""
        return self.score(reference, text, candidates)
