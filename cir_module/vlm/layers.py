"""Qwen2-VL's vision tower and decoder layers written out from the model's own modules in
plain tensor ops, so that one code path runs in torch and traces to ONNX.

* :class:`BatchedVision`: images of one size as a batch dimension. Transformers' tower takes
  every image's patches as one sequence and splits attention per image in a Python loop
  (``cu_seqlens``), which a trace unrolls for one batch size.
* :func:`attend`: one decoder layer's self-attention (M-RoPE, grouped key / value heads,
  an additive bias for causality and padding, an optional cache to continue). Transformers
  builds its masks with ``vmap`` and its cache as Python objects, which a trace cannot follow.
* :func:`decode`: the whole decoder over given input embeddings.

Tests compare each with the model's own forward.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BatchedVision", "attend", "causal_bias", "decode"]


class BatchedVision(nn.Module):
    """The vision tower (``visual``, passed to each call) on a batch of images with
    ``patches`` x ``patches`` patches each: their patch rows (``[batch * patches**2,
    patch_dim]``, as the image processor writes them) -> merged tokens ``[batch, patches**2 /
    merge**2, hidden]``. Only this grid's rotary table is held here, computed once."""

    def __init__(self, visual: nn.Module, patches: int) -> None:
        super().__init__()
        grid = torch.tensor([[1, patches, patches]])
        with torch.no_grad():
            rotary = visual.rot_pos_emb(grid)
        table = torch.cat([rotary, rotary], dim=-1).float()
        self.register_buffer("cos", table.cos(), persistent=False)
        self.register_buffer("sin", table.sin(), persistent=False)
        self.tokens = patches * patches

    def forward(self, visual: nn.Module, rows: torch.Tensor) -> torch.Tensor:
        from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb_vision

        x = visual.patch_embed(rows)
        x = x.view(-1, self.tokens, x.shape[-1])
        batch, n, width = x.shape
        for block in visual.blocks:
            attn = block.attn
            qkv = attn.qkv(block.norm1(x)).reshape(batch, n, 3, attn.num_heads, -1)
            q, k, v = qkv.permute(2, 0, 1, 3, 4).unbind(0)
            q, k = apply_rotary_pos_emb_vision(q, k, self.cos, self.sin)
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))
            probs = torch.softmax((q @ k.transpose(2, 3)) * attn.scaling, dim=-1)
            out = (probs @ v).transpose(1, 2).reshape(batch, n, width)
            x = x + attn.proj(out)
            x = x + block.mlp(block.norm2(x))
        # merge x merge consecutive rows -> one token (the merger's own steps, kept 3-D so
        # that its linear layers export as MatMul, which dynamic int8 quantises, not Gemm).
        merger = visual.merger
        return merger.mlp(merger.ln_q(x).reshape(batch, -1, merger.hidden_size))


def attend(
    layer: nn.Module,
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    bias: torch.Tensor,
    past_k: torch.Tensor | None = None,
    past_v: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decoder ``layer``'s self-attention over ``x`` (already normed) -> its output and the
    keys and values including the cache it continued (``past_k`` / ``past_v``, optional)."""
    from transformers.models.qwen2_vl.modeling_qwen2_vl import (
        apply_multimodal_rotary_pos_emb,
        repeat_kv,
    )

    attn = layer.self_attn
    config = attn.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = config.hidden_size // heads
    b, s, _ = x.shape
    q = attn.q_proj(x).view(b, s, heads, head_dim).transpose(1, 2)
    k = attn.k_proj(x).view(b, s, kv_heads, head_dim).transpose(1, 2)
    v = attn.v_proj(x).view(b, s, kv_heads, head_dim).transpose(1, 2)
    q, k = apply_multimodal_rotary_pos_emb(q, k, cos, sin, config.rope_scaling["mrope_section"])
    if past_k is not None:
        k = torch.cat([past_k, k], dim=2)
        v = torch.cat([past_v, v], dim=2)
    groups = heads // kv_heads
    scores = q @ repeat_kv(k, groups).transpose(2, 3) * attn.scaling + bias
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    out = (probs @ repeat_kv(v, groups)).transpose(1, 2).reshape(b, s, -1)
    return attn.o_proj(out), k, v


def causal_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[batch, 1, length, length]`` additive bias: a position sees itself and what comes
    before it, never a padded position (``mask`` 0). A padded row still sees its own first
    position, so no softmax row is empty."""
    length = mask.shape[1]
    index = torch.arange(length, device=mask.device)
    allowed = (index.unsqueeze(0) <= index.unsqueeze(1)).unsqueeze(0) & mask.bool().unsqueeze(1)
    allowed = allowed | (index == 0).view(1, 1, -1)
    return torch.where(allowed, 0.0, torch.finfo(dtype).min).to(dtype).unsqueeze(1)


def decode(
    text_model: nn.Module, embeds: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The decoder (``model.model.language_model``) over ``embeds`` ``[batch, length,
    hidden]`` at M-RoPE ``positions`` ``[3, batch, length]``, right padding in ``mask`` ->
    the final-normed hidden states."""
    cos, sin = text_model.rotary_emb(embeds, positions)
    bias = causal_bias(mask, embeds.dtype)
    hidden = embeds
    for layer in text_model.layers:
        attended, _, _ = attend(layer, layer.input_layernorm(hidden), cos, sin, bias)
        hidden = hidden + attended
        hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
    return text_model.norm(hidden)
