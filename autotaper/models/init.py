"""Seeded initialisation, one random stream per parameter.

Each tensor is drawn from its own generator seeded by hash(seed, parameter name), so two
models that differ in one layer's width start with identical weights everywhere else, and
the draw does not depend on construction order. Small-model taper comparisons are within
seed noise; a shared init stream that shifted with every width would swamp them.

Scheme (GPT-2 / nanoGPT): linear weights and embeddings N(0, 0.02); projections that write
into the residual stream N(0, 0.02 / sqrt(2 * n_layers)); biases 0; norm weights 1.
"""

from __future__ import annotations

import hashlib
import math

import torch

RESIDUAL_OUT = ("o_proj", "down_proj", "attn.c_proj", "mlp.c_proj")


def param_seed(seed: int, name: str) -> int:
    digest = hashlib.blake2b(f"{seed}/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@torch.no_grad()
def init_weights(model: torch.nn.Module, *, seed: int, n_layers: int, std: float = 0.02) -> None:
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            p.zero_()
        elif p.ndim == 1:  # norm weights
            p.fill_(1.0)
        else:
            s = std / math.sqrt(2 * n_layers) if any(k in name for k in RESIDUAL_OUT) else std
            g = torch.Generator(device="cpu").manual_seed(param_seed(seed, name))
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32) * s)
