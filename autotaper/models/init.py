"""Seeded initialisation, one random stream per parameter.

Each tensor is drawn from its own generator seeded by hash(seed, parameter name), so two
models that differ in one layer's width start with identical weights everywhere else, and
the draw does not depend on construction order. Small-model taper comparisons are within
seed noise; a shared init stream that shifted with every width would swamp them.

Scheme (GPT-2 / nanoGPT): linear weights and embeddings N(0, 0.02); projections that write
into the residual stream N(0, 0.02 / sqrt(2 * n_layers)); biases 0; norm weights 1. A
width-aware parametrization multiplies each hidden matrix's std by its own factor
(`autotaper.parametrization.rules`); at the base shape every factor is 1 and the draw is
bit for bit the standard one.
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING

import torch

from autotaper.models.rules import rules
from autotaper.parametrization import is_residual_out, residual_init_depth

if TYPE_CHECKING:  # pragma: no cover
    from autotaper.spec import ModelSpec


def param_seed(seed: int, name: str) -> int:
    digest = hashlib.blake2b(f"{seed}/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def init_std(name: str, spec: "ModelSpec", multiplier: float = 1.0, *, std: float = 0.02) -> float:
    """The init std of weight matrix `name`: the standard one times the parametrization's factor."""
    s = std / math.sqrt(2 * residual_init_depth(spec)) if is_residual_out(name) else std
    return s * multiplier


@torch.no_grad()
def init_weights(model: torch.nn.Module, *, seed: int, spec: "ModelSpec", std: float = 0.02) -> None:
    factors = rules(model, spec)
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            p.zero_()
        elif p.ndim == 1:  # norm weights
            p.fill_(1.0)
        else:
            s = init_std(name, spec, factors[name].init_std, std=std)
            g = torch.Generator(device="cpu").manual_seed(param_seed(seed, name))
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32) * s)
