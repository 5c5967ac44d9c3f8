"""Pieces shared by the families: residual updates on a slice of the stream, attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def add_to_stream(x: torch.Tensor, y: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """x (B, T, D) + scale * y (B, T, d) on the first d channels; d == D is the ordinary residual.
    `scale` is the parametrization's residual-branch multiplier (1 but under completep)."""
    if scale != 1.0:
        y = y * scale
    d, D = y.shape[-1], x.shape[-1]
    return x + y if d == D else x + F.pad(y, (0, D - d))


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q (B, h, T, hd), k and v (B, kv, T, hd) with h a multiple of kv -> (B, T, h * hd)."""
    B, h, T, hd = q.shape
    if _batched(q):  # inside a population's vmap: SDPA has no batching rule on CPU (a loop per member)
        y = _math_attention(q, k, v)
    else:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=k.shape[1] != h)
    return y.transpose(1, 2).reshape(B, T, h * hd)


def _batched(t: torch.Tensor) -> bool:
    """Whether `t` is a functorch batched tensor (a population's member dimension, vmapped)."""
    try:
        return torch._C._functorch.is_batchedtensor(t)
    except AttributeError:  # pragma: no cover (a torch without functorch's C API)
        return False


def _math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal softmax attention with plain matmuls (what SDPA computes), which vmap batches."""
    h, kv, T = q.shape[1], k.shape[1], q.shape[2]
    if kv != h:
        k, v = k.repeat_interleave(h // kv, dim=1), v.repeat_interleave(h // kv, dim=1)
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    return scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v
