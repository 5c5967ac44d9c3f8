"""Exact parameter and FLOP counts, summed layer by layer from the spec's per-layer lists.

Convention (documented once, used everywhere):
- `params` counts every weight of the built module (norms, biases, embeddings; a tied head
  counts once). `params_non_embedding` leaves out the token embedding, learned positions
  and an untied head: the transformer body.
- `flops_per_token` is the forward pass per token, averaged over a full context of
  `context_length` tokens: 2 FLOPs per matmul weight (multiply + add), the head included,
  plus attention scores and the weighted sum, 4 * heads * head_dim FLOPs per attended key.
  With a causal mask a token at position t attends t + 1 keys, so the average over a full
  context is (T + 1) / 2 keys. Norms, activations, softmax, rotary and residual adds are
  not counted: they are O(width) per token, not O(width^2), and matmul FLOPs are what MFU
  is measured against (Kaplan et al. 2020 and PaLM count the same way).
- `flops_per_token_dense` counts attention over all T keys, as a kernel that does not skip
  masked blocks performs it and as torch's FlopCounterMode reports it.
- Training FLOPs per token are 3x the forward pass (backward = 2x forward).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autotaper.families import get_family
from autotaper.spec import ModelSpec


@dataclass(frozen=True)
class Cost:
    params: int
    params_non_embedding: int
    flops_per_token: float
    flops_per_token_dense: float
    layer_params: tuple[int, ...]
    layer_flops_per_token: tuple[float, ...]

    @property
    def train_flops_per_token(self) -> float:
        return 3.0 * self.flops_per_token

    def to_dict(self) -> dict:
        return {"params": self.params, "params_non_embedding": self.params_non_embedding,
                "flops_per_token": self.flops_per_token,
                "flops_per_token_dense": self.flops_per_token_dense,
                "train_flops_per_token": self.train_flops_per_token}


def _widths(spec: ModelSpec):
    d = np.array(spec.layer_d_model, dtype=np.int64)
    h = np.array(spec.layer_heads, dtype=np.int64)
    kv = np.array(spec.layer_kv_heads, dtype=np.int64)
    f = np.array(spec.layer_ffn, dtype=np.int64)
    return d, h, kv, spec.head_dim, f


def layer_flops(family, d, h, kv, head_dim, f, context_length: int) -> np.ndarray:
    """Forward FLOPs per token of each layer (arrays of widths, integer or not, as the solver
    uses them): 2 per matmul weight, plus attention's 4 h hd per key over a causal context's
    (T + 1) / 2 keys on average."""
    matmul = np.asarray(family.layer_matmul_params(d, h, kv, head_dim, f), dtype=np.float64)
    return 2.0 * matmul + 4.0 * h * head_dim * (context_length + 1) / 2.0


def head_flops(vocab_size: int, d_stream: float) -> float:
    """Forward FLOPs per token of the output head."""
    return 2.0 * vocab_size * d_stream


def count(spec: ModelSpec) -> Cost:
    """Parameters and forward FLOPs per token of `spec` (see the module docstring)."""
    family = get_family(spec.family)
    d, h, kv, hd, f = _widths(spec)
    layer_params = np.asarray(family.layer_params(d, h, kv, hd, f), dtype=np.int64)
    stream = family.stream_params(spec)
    params = int(layer_params.sum()) + int(sum(stream.values()))
    non_embedding = params - stream["embedding"] - stream["positions"] - stream["head"]
    T = spec.context_length
    per_layer = layer_flops(family, d, h, kv, hd, f, T)
    head = head_flops(spec.vocab_size, spec.d_stream)
    flops = float(per_layer.sum() + head)
    matmul = np.asarray(family.layer_matmul_params(d, h, kv, hd, f), dtype=np.float64)
    dense = float((2.0 * matmul + 4.0 * h * hd * T).sum() + head)  # every key: a kernel that skips none
    return Cost(params=params, params_non_embedding=int(non_embedding), flops_per_token=flops,
                flops_per_token_dense=dense, layer_params=tuple(int(p) for p in layer_params),
                layer_flops_per_token=tuple(float(x) for x in per_layer))
