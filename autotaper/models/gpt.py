"""GPT-2: pre-LayerNorm, biased linears, GELU MLP, learned positions, with per-layer widths."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from autotaper.errors import InputError
from autotaper.models._layers import add_to_stream, causal_attention
from autotaper.parametrization import logit_scale, residual_scale
from autotaper.spec import ModelSpec


class Attention(nn.Module):
    def __init__(self, d: int, n_heads: int, n_kv_heads: int, head_dim: int):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.c_attn = nn.Linear(d, (n_heads + 2 * n_kv_heads) * head_dim)
        self.c_proj = nn.Linear(n_heads * head_dim, d)

    def forward(self, x):
        B, T, _ = x.shape
        hd = self.head_dim
        q, k, v = self.c_attn(x).split([self.n_heads * hd, self.n_kv_heads * hd, self.n_kv_heads * hd], -1)
        q = q.view(B, T, self.n_heads, hd).transpose(1, 2)  # (B, h, T, hd)
        k = k.view(B, T, self.n_kv_heads, hd).transpose(1, 2)  # (B, kv, T, hd)
        v = v.view(B, T, self.n_kv_heads, hd).transpose(1, 2)
        return self.c_proj(causal_attention(q, k, v))


class MLP(nn.Module):
    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.c_fc = nn.Linear(d, hidden)
        self.c_proj = nn.Linear(hidden, d)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, spec: ModelSpec, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.residual_scale = residual_scale(spec)  # 1 but under completep
        self.d = d = spec.layer_d_model[layer_idx]
        self.ln_1 = nn.LayerNorm(d, eps=spec.norm_eps)
        self.attn = Attention(d, spec.layer_heads[layer_idx], spec.layer_kv_heads[layer_idx], spec.head_dim)
        self.ln_2 = nn.LayerNorm(d, eps=spec.norm_eps)
        self.mlp = MLP(d, spec.layer_ffn[layer_idx])

    def forward(self, x):
        x = add_to_stream(x, self.attn(self.ln_1(x[..., : self.d])), self.residual_scale)
        return add_to_stream(x, self.mlp(self.ln_2(x[..., : self.d])), self.residual_scale)


class GPT(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.logit_scale = logit_scale(spec)  # muP's output multiplier (1 under sp)
        D = spec.d_stream
        self.wte = nn.Embedding(spec.vocab_size, D)
        self.wpe = nn.Embedding(spec.context_length, D)
        self.h = nn.ModuleList(Block(spec, i) for i in range(spec.n_layers))
        self.ln_f = nn.LayerNorm(D, eps=spec.norm_eps)
        self.lm_head = nn.Linear(D, spec.vocab_size, bias=False)
        if spec.tie_embeddings:
            self.lm_head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        if T > self.spec.context_length:
            raise InputError(f"sequence length {T} exceeds context_length {self.spec.context_length}")
        pos = torch.arange(T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)  # (B, T, D)
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))  # (B, T, vocab)
        return logits * self.logit_scale if self.logit_scale != 1.0 else logits
