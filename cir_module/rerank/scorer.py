"""The LVLM reranker: P(YES) that a candidate is the reference changed as the text asks.

The prompt (:mod:`cir_module.rerank.prompt`): the reference image and the modification
text (the prefix, the same for every candidate of a query), then the candidate image and a
YES / NO question (the suffix). The score is P(YES) from the next-token logits over the YES
and NO tokens, with reasoning-augmented representations injected at the first token when
configured.

The paper's way runs the whole prompt once per candidate. Here the prefix runs once per
query, injection applied (the first token is in it), and its key / value cache is reused by
every candidate, batched: :meth:`LVLMReranker.score` (and :meth:`score_naive`, the paper's
way, kept for tests and the benchmark).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cir_module.rerank.injection import choose_layers, injected
from cir_module.rerank.prompt import RerankPrompt
from cir_module.rerank.raug import load_raug
from cir_module.vlm.family import VLM_SETTINGS, FamilyAdapter, adapter_for, saved_settings
from cir_module.vlm.prompt import PromptCodec

__all__ = ["RERANKER_SETTINGS", "LVLMReranker", "PrefixState"]

log = logging.getLogger(__name__)

RERANKER_SETTINGS = VLM_SETTINGS


@dataclass(frozen=True)
class PrefixState:
    """A query's prefix run: its key / value cache, the full prompt's ids and positions, and
    the prefix length."""

    cache: object
    ids: torch.Tensor
    positions: torch.Tensor
    length: int


class LVLMReranker:
    """Scores candidates for a composed query with a vision-language model."""

    # A reranker that judges by its own written reasoning (a subclass) says so here, and
    # refuses what steers the image judge's prompt: RAug-Rep injection, a rationale prompt.
    unsteered: str | None = None

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        image_processor,
        adapter: FamilyAdapter,
        *,
        raug: torch.Tensor | None = None,
        alpha: float = 0.6,
        layers: str | Sequence[int] = "all",
        image_side: int = 224,
        prompt: RerankPrompt | None = None,
        batch_size: int = 16,
        rationale: bool = False,
        rationale_tokens: int = 256,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.adapter = adapter
        self.layers = adapter.decoder_layers(model)
        self.raug = raug
        self.alpha = float(alpha)
        self.injection_layers = choose_layers(len(self.layers), layers)
        self.image_side = image_side
        self.prompt = prompt or RerankPrompt()
        self.batch_size = batch_size
        self.rationale = rationale  # each query's prompt carries the model's own reasoning
        self.rationale_tokens = rationale_tokens
        self._line_ends: list[int] | None = None
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
        self.yes_id, self.no_id = (
            self.codec.single_token(w) for w in (self.prompt.yes, self.prompt.no)
        )
        if self.unsteered and (raug is not None or rationale):
            raise ValueError(
                f"{self.unsteered} and takes no RAug-Rep injection or rationale prompt (those "
                "steer the P(YES) judgement of the image judge's prompt)"
            )
        if raug is not None and raug.shape[0] != len(self.layers):
            raise ValueError(f"RAug-Rep has {raug.shape[0]} layers, the model {len(self.layers)}")

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, raug: str | Path | None = None, dtype: str = "auto", **kwargs
    ) -> LVLMReranker:
        """Load an image-text-to-text checkpoint (hub id or folder) and, optionally, the
        RAug-Rep vectors ``cir raug extract`` wrote for it. A folder's ``cir_reranker.json``
        (written by ``cir rerank train``) supplies defaults such as ``image_side``."""
        from transformers import AutoConfig, AutoTokenizer

        kwargs = {**saved_settings(path), **kwargs}
        # A folder may say it is served as describe-and-verify (``cir vlm train --stage
        # rewrite``): P(YES) is not what that model was trained to answer.
        verify = kwargs.pop("verify", "yes")
        if verify == "describe" and cls is LVLMReranker:
            from cir_module.rerank.describe import DescribingReranker

            return DescribingReranker.from_pretrained(path, raug=raug, dtype=dtype, **kwargs)
        if verify == "changes" and cls is LVLMReranker:  # ``cir vlm train --stage verify``
            from cir_module.rerank.verify import ChangeVerifyingReranker

            return ChangeVerifyingReranker.from_pretrained(path, raug=raug, dtype=dtype, **kwargs)

        adapter = adapter_for(AutoConfig.from_pretrained(path).model_type)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        torch_dtype = torch.float32 if device == "cpu" and dtype == "auto" else dtype
        model = adapter.load_model(str(path), dtype=torch_dtype).to(device)
        vectors = load_raug(raug)[0].to(device) if raug else None
        return cls(
            model,
            AutoTokenizer.from_pretrained(path),
            adapter.load_image_processor(str(path)),
            adapter,
            raug=vectors,
            **kwargs,
        )

    def describe(self) -> dict:
        """What ``/meta`` shows."""
        return {
            "family": self.adapter.name,
            "runtime": "torch",
            "layers": len(self.layers),
            "raug": self.raug is not None,
            "alpha": self.alpha,
            "injection_layers": self.injection_layers,
            "image_side": self.image_side,
            "rationale": self.rationale,
        }

    # -- prompt ------------------------------------------------------------------------------
    def _encode(self, template: str, **fields: str) -> list[int]:
        return self.codec.encode(template, **fields)

    def _pixels(self, images: Sequence[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        pixels, grid = self.codec.pixels(images)
        return torch.from_numpy(pixels).to(self.device, self.model.dtype), torch.from_numpy(
            grid
        ).to(self.device)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def _p_yes(self, last_hidden: torch.Tensor) -> np.ndarray:
        logits = self.adapter.lm_head(self.model)(last_hidden)[:, [self.yes_id, self.no_id]]
        return torch.softmax(logits.float(), dim=-1)[:, 0].cpu().numpy()

    def _steering(self):
        if self.raug is None or not self.injection_layers:
            return contextlib.nullcontext()
        return injected(self.layers, self.raug, self.alpha, self.injection_layers)

    # -- rationale (CIR-CoT) -----------------------------------------------------------------
    def query_text(self, reference: Image.Image, text: str) -> str:
        """The prompt's text field for a query: the modification, followed by the model's own
        reasoning path when the reranker writes one (``rationale``)."""
        if not self.rationale:
            return text
        return self.prompt.with_reasoning(text, self.write_rationale(reference, text))

    def _newline_ids(self) -> list[int]:
        """Token ids whose text holds a line break: a rationale ends at the first one."""
        if self._line_ends is None:
            decode = self.tokenizer.decode
            self._line_ends = [i for i in range(len(self.tokenizer)) if "\n" in decode([i])]
        return self._line_ends

    @torch.inference_mode()
    def write_rationale(self, reference: Image.Image, text: str) -> str:
        """The model's reasoning path for a query (what the reference shows, what the text
        asks, what the target must show), generated greedily from the prompt's head up to
        the end of its line; the injection is not applied while it is written."""
        text += self.prompt.reasoning_mark
        stop = self._newline_ids()
        written = self.generate(
            self.prompt.head, [reference], self.rationale_tokens, stop, text=text
        )
        return written[0].split("\n")[0].strip()

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
    def score(
        self, reference: Image.Image, text: str, candidates: Sequence[Image.Image]
    ) -> np.ndarray:
        """P(YES) per candidate: the shared prefix once, its cache reused by batches of
        candidates."""
        if not candidates:
            return np.zeros(0, dtype=np.float32)
        return self.score_prefixed(self.prefix(reference, text), candidates)

    @torch.inference_mode()
    def prefix(self, reference: Image.Image, text: str) -> PrefixState:
        """The query's half of the prompt run once (injection applied: the first token is in
        it); every candidate of the query, in any request, continues from it."""
        prefix = self._encode(self.prompt.prefix, text=self.query_text(reference, text))
        suffix = self._encode(self.prompt.suffix)
        ref_pixels, ref_grid = self._pixels([reference])
        # Multimodal (3-D) positions depend on the whole prompt: compute them for one full
        # prompt; every candidate has the same image size, hence the same positions.
        full = torch.tensor([prefix + suffix], device=self.device)
        positions = self.adapter.rope_index(self.model, full, torch.cat([ref_grid, ref_grid]))
        p = len(prefix)
        with self._steering():
            out = self.model.model(
                input_ids=full[:, :p],
                pixel_values=ref_pixels,
                image_grid_thw=ref_grid,
                position_ids=positions[:, :, :p],
                cache_position=torch.arange(p, device=self.device),
                use_cache=True,
            )
        return PrefixState(out.past_key_values, full, positions, p)

    def prefixes(self, references: Sequence[Image.Image], texts: Sequence[str]) -> list:
        """:meth:`prefix` of many queries (one after another here; a reranker that writes per
        query batches them)."""
        return [self.prefix(r, t) for r, t in zip(references, texts, strict=True)]

    @torch.inference_mode()
    def score_prefixed(self, state: PrefixState, candidates: Sequence[Image.Image]) -> np.ndarray:
        """P(YES) per candidate, continuing from a query's :meth:`prefix`."""
        if not candidates:
            return np.zeros(0, dtype=np.float32)
        p, s = state.length, state.ids.shape[1] - state.length
        scores = []
        for start in range(0, len(candidates), self.batch_size):
            batch = candidates[start : start + self.batch_size]
            n = len(batch)
            pixels, grid = self._pixels(batch)
            cache = copy.deepcopy(state.cache)  # never changed: shared by concurrent requests
            cache.batch_repeat_interleave(n)
            out = self.model.model(
                input_ids=state.ids[:, p:].expand(n, s),
                pixel_values=pixels,
                image_grid_thw=grid,
                position_ids=state.positions[:, :, p:].expand(3, n, s),
                past_key_values=cache,
                cache_position=torch.arange(p, p + s, device=self.device),
                use_cache=True,
            )
            scores.append(self._p_yes(out.last_hidden_state[:, -1]))
        return np.concatenate(scores)

    @torch.inference_mode()
    def score_naive(
        self, reference: Image.Image, text: str, candidates: Sequence[Image.Image]
    ) -> np.ndarray:
        """P(YES) per candidate, one full forward each (the paper's way)."""
        query = self.query_text(reference, text)
        ids = self._encode(self.prompt.prefix + self.prompt.suffix, text=query)
        full = torch.tensor([ids], device=self.device)
        scores = []
        for candidate in candidates:
            pixels, grid = self._pixels([reference, candidate])
            with self._steering():
                out = self.model.model(input_ids=full, pixel_values=pixels, image_grid_thw=grid)
            scores.append(self._p_yes(out.last_hidden_state[:, -1]))
        return np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)
