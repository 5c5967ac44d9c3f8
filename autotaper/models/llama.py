"""Transformer++ (Llama) and its gated-attention variant, with per-layer widths.

Layer l reads the first d_l = spec.layer_d_model[l] channels of the residual stream, has
spec.layer_heads[l] query heads and spec.layer_kv_heads[l] KV heads of spec.head_dim, and an
MLP of spec.layer_ffn[l] hidden units.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from autotaper.errors import InputError
from autotaper.models._layers import add_to_stream, causal_attention
from autotaper.parametrization import logit_scale, residual_scale
from autotaper.spec import ModelSpec


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rope_tables(head_dim: int, context_length: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(context_length, dtype=torch.float32), inv_freq)  # (T, hd/2)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x (B, n, T, hd); rotate the two halves (the Hugging Face Llama convention)
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self, d: int, n_heads: int, n_kv_heads: int, head_dim: int, gated: bool):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.q_proj = nn.Linear(d, n_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(d, n_kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(d, n_kv_heads * head_dim, bias=False)
        # gated attention: a sigmoid gate per head channel on the attention output
        self.g_proj = nn.Linear(d, n_heads * head_dim, bias=False) if gated else None
        self.o_proj = nn.Linear(n_heads * head_dim, d, bias=False)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, h, T, hd)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, kv, T, hd)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = causal_attention(q, k, v)  # (B, T, h * hd)
        if self.g_proj is not None:
            y = y * torch.sigmoid(self.g_proj(x))
        return self.o_proj(y)


class SwiGLU(nn.Module):
    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(d, hidden, bias=False)
        self.up_proj = nn.Linear(d, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, spec: ModelSpec, layer_idx: int, gated: bool):
        super().__init__()
        self.layer_idx = layer_idx
        self.residual_scale = residual_scale(spec)  # 1 but under completep
        self.d = d = spec.layer_d_model[layer_idx]
        self.input_norm = RMSNorm(d, spec.norm_eps)
        self.attn = Attention(d, spec.layer_heads[layer_idx], spec.layer_kv_heads[layer_idx],
                              spec.head_dim, gated)
        self.mlp_norm = RMSNorm(d, spec.norm_eps)
        self.mlp = SwiGLU(d, spec.layer_ffn[layer_idx])

    def forward(self, x, cos, sin):
        x = add_to_stream(x, self.attn(self.input_norm(x[..., : self.d]), cos, sin), self.residual_scale)
        return add_to_stream(x, self.mlp(self.mlp_norm(x[..., : self.d])), self.residual_scale)


class Llama(nn.Module):
    gated = False
    block_class = Block  # a subclass may train another block on the same stream ends (examples/custom_family.py)

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.logit_scale = logit_scale(spec)  # muP's output multiplier (1 under sp)
        D = spec.d_stream
        self.embed = nn.Embedding(spec.vocab_size, D)
        self.layers = nn.ModuleList(self.block_class(spec, i, self.gated) for i in range(spec.n_layers))
        self.norm = RMSNorm(D, spec.norm_eps)
        self.lm_head = nn.Linear(D, spec.vocab_size, bias=False)
        if spec.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        cos, sin = rope_tables(spec.head_dim, spec.context_length, spec.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        if T > self.spec.context_length:
            raise InputError(f"sequence length {T} exceeds context_length {self.spec.context_length}")
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        x = self.embed(idx)  # (B, T, D)
        for block in self.layers:
            x = block(x, cos, sin)
        logits = self.lm_head(self.norm(x))  # (B, T, vocab)
        return logits * self.logit_scale if self.logit_scale != 1.0 else logits


class GatedLlama(Llama):
    gated = True
