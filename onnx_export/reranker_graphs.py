"""The LVLM reranker as two ONNX-traceable modules: the vision tower and the decoder.

``VisionGraph``: one image's patches (fixed size, as the reranker always resizes to one side)
-> its placeholder-token features.

``DecoderGraph``: token ids, the image features for each row's placeholder tokens, M-RoPE
positions and the key / value cache so far -> P(YES)'s two logits at the last position and
the extended cache. The reasoning-augmented representations, alpha and the per-layer
injection switches are inputs, so one graph serves every injection setting. The injection is
the one :func:`cir_module.rerank.injection.injected` applies (layer output at position 0 moved
by alpha * p_L, norm kept), and only on a pass that starts at position 0: on a pass over the
cache (the candidates), alpha is multiplied by zero inside the graph.

The decoder is written out layer by layer from the model's own modules (norms, projections,
rotary embedding, MLP): HF's forward builds its cache objects and masks in Python, which a
trace cannot follow across cache lengths. Parity against the model's own forward is checked
on every export. ``TextDecoderGraph`` is the same decoder for the change verifier (captions
and text-only verdicts, no injection).
"""

from __future__ import annotations

import torch
from torch import nn

from cir_module.vlm.layers import attend

__all__ = ["DecoderGraph", "TextDecoderGraph", "VisionGraph"]


class VisionGraph(nn.Module):
    """Patches of one image (patches x patch_dim) -> features (tokens x hidden)."""

    def __init__(self, model: nn.Module, grid_side: int) -> None:
        super().__init__()
        self.visual = model.model.visual
        # SDPA with grouped heads has no ONNX conversion; eager attention is the same maths.
        self.visual.config._attn_implementation = "eager"
        self.register_buffer("grid", torch.tensor([[1, grid_side, grid_side]]), persistent=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.visual(pixel_values, grid_thw=self.grid)


class DecoderGraph(nn.Module):
    """One decoder pass over new tokens, continuing a cache (empty for the first pass)."""

    def __init__(self, model: nn.Module, image_token_id: int, answer_ids: tuple[int, int]):
        super().__init__()
        text = model.model.language_model
        config = text.config
        if getattr(config, "use_sliding_window", False):
            raise ValueError("sliding-window attention is not exported")
        self.embed = text.embed_tokens
        self.layers = text.layers
        self.norm = text.norm
        self.rotary = text.rotary_emb
        self.lm_head = model.lm_head
        self.image_token_id = image_token_id
        self.register_buffer("answer_ids", torch.tensor(answer_ids), persistent=False)

    def _embed(self, input_ids: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        # Row b's k-th placeholder token takes image_embeds[b, k]: a gather, not a scatter,
        # so that it traces into plain ONNX ops.
        hidden = self.embed(input_ids)
        is_image = input_ids == self.image_token_id
        index = (torch.cumsum(is_image.long(), dim=1) - 1).clamp(min=0)
        gathered = torch.gather(
            image_embeds, 1, index.unsqueeze(-1).expand(-1, -1, image_embeds.shape[-1])
        )
        return torch.where(is_image.unsqueeze(-1), gathered.to(hidden.dtype), hidden)

    def run(
        self,
        input_ids: torch.Tensor,  # batch x new
        image_embeds: torch.Tensor,  # batch x placeholders x hidden
        position_ids: torch.Tensor,  # 3 x batch x new
        past_keys: torch.Tensor,  # layers x batch x kv_heads x past x head_dim
        past_values: torch.Tensor,
        steer=None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The layers over the new tokens: the last layer's output (before the final norm)
        and the keys and values with the cache. ``steer(i, hidden, starts_at_zero)``, if
        given, may change layer ``i``'s output."""
        hidden = self._embed(input_ids, image_embeds)
        cos, sin = self.rotary(hidden, position_ids)
        new, past = input_ids.shape[1], past_keys.shape[3]
        # Causal over the new tokens, everything in the cache visible.
        column = torch.arange(past + new, device=hidden.device).unsqueeze(0)
        row = torch.arange(new, device=hidden.device).unsqueeze(1) + past
        bias = torch.where(column <= row, 0.0, torch.finfo(torch.float32).min).to(hidden.dtype)
        # The cache length as a graph value (a Python int would be frozen by the trace).
        past_length = torch.ones_like(past_keys[0, 0, 0, :, 0]).sum()
        starts_at_zero = (past_length == 0).to(hidden.dtype)
        keys, values = [], []
        for i, layer in enumerate(self.layers):
            residual = hidden
            attended, k, v = attend(
                layer, layer.input_layernorm(hidden), cos, sin, bias, past_keys[i], past_values[i]
            )
            hidden = residual + attended
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
            keys.append(k)
            values.append(v)
            if steer is not None:
                hidden = steer(i, hidden, starts_at_zero)
        return hidden, torch.stack(keys), torch.stack(values)

    def forward(
        self,
        input_ids: torch.Tensor,
        image_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        past_keys: torch.Tensor,
        past_values: torch.Tensor,
        raug: torch.Tensor,  # layers x hidden
        alpha: torch.Tensor,  # scalar
        inject: torch.Tensor,  # layers (1.0 where the layer is steered)
    ):
        def steer(i: int, hidden: torch.Tensor, starts_at_zero: torch.Tensor) -> torch.Tensor:
            weight = alpha * inject[i] * starts_at_zero
            first = hidden[:, 0]
            moved = first + weight * raug[i].to(first.dtype)
            moved = moved * (first.norm(dim=-1, keepdim=True) / moved.norm(dim=-1, keepdim=True))
            return torch.cat([moved.unsqueeze(1), hidden[:, 1:]], dim=1)

        hidden, keys, values = self.run(
            input_ids, image_embeds, position_ids, past_keys, past_values, steer
        )
        last = self.norm(hidden[:, -1])
        logits = self.lm_head(last).index_select(-1, self.answer_ids)
        return logits, keys, values


class TextDecoderGraph(DecoderGraph):
    """The change verifier's decoder: no injection; the next token's logits at the last
    position (greedy captioning) and the YES / NO logits at every new position (the verdict
    at a row's last token, and the per-change read-out at each change's last token)."""

    def forward(self, *inputs: torch.Tensor):
        # inputs: input_ids, image_embeds, position_ids, past_keys, past_values (``run``'s)
        hidden, keys, values = self.run(*inputs)
        normed = self.norm(hidden)
        next_logits = self.lm_head(normed[:, -1])
        # Only the two answers' rows of the head: every position, not the whole vocabulary.
        answers = self.lm_head.weight.index_select(0, self.answer_ids)
        answer_logits = torch.nn.functional.linear(normed, answers)
        return next_logits, answer_logits, keys, values
