"""Parametrizations: how each matrix's init, Adam LR, Adam epsilon and weight decay follow its
width, and how residual branches follow depth.

Why it matters for tapers: under one global LR a layer whose FFN is twice as wide starts with a
down-projection output ~sqrt(2)x larger and, because Adam moves every weight by ~lr, its output
moves ~2x faster. A taper under standard parametrization changes capacity *and* per-layer
learning rate at once. A width-aware parametrization keeps each matrix's update size
independent of its fan-in, so what is left of a taper's effect is where the capacity sits.

Names (a spec's `parametrization` field):

- ``sp``: standard. Every weight N(0, 0.02), residual output projections N(0, 0.02 / sqrt(2 L)),
  one global LR, epsilon and weight decay. What autotaper did before, and the paper's recipe.
- ``mup``: per matrix, from its own fan-in `n` against the same matrix's fan-in `n0` in the base
  shape, with m = n / n0:

  =====================  ===============  ===========  ==========  ===============
  parameter              init std         Adam LR      Adam eps    weight decay
  =====================  ===============  ===========  ==========  ===============
  hidden matrix          std / sqrt(m)    lr / m       eps / m     wd * m
  embeddings (input)     std              lr           eps         wd
  output head            std              lr           eps / m     wd
  norm gains, biases     1 / 0            lr           eps         0
  =====================  ===============  ===========  ==========  ===============

  and the logits multiplied by 1 / m_out (m_out the head's fan-in over the base width): the
  output multiplier of muP (Yang et al. 2022, Tensor Programs V, Table 3, Adam column).
  Weight decay times m keeps the decay per step, lr x wd (PyTorch's AdamW couples them),
  what it is at the base shape ("independent" weight decay). Epsilon / m follows the gradient,
  which shrinks as 1 / m, so epsilon keeps its size relative to it.
- ``completep``: ``mup`` plus the depth rules of CompleteP (Dey et al. 2025, arXiv 2505.01618,
  Table 1) with m_L = L / L0 and exponent alpha in [0.5, 1] (1: CompleteP, 0.5: depth-muP):
  every residual branch is multiplied by m_L^-alpha; hidden matrices and in-block vectors train
  at LR x m_L^(alpha - 1) with eps x m_L^-alpha; residual projections start at
  0.02 / sqrt(2 L0), the base depth's init, instead of the model's own depth's.

The base shape is the uniform model a taper is solved against (`ModelSpec.uniform()`), at the
width `base_d_model` and depth `base_n_layers` when a spec names them (a ladder's rungs name the
rung whose LR was tuned) and at its own otherwise. At the base shape every multiplier is exactly
1 and skipped, so every parametrization trains bit for bit as ``sp`` does: a uniform baseline
is one run whatever the parametrization.

Per-layer LR (`ModelSpec.layer_lr`, the taper dimension ``lr``) multiplies the LR of every
parameter of layer l on top of these rules.

Parameter roles are read from the built module, so a registered family gets them too: a
parameter of an `nn.Embedding` is an input; a matrix of a linear outside the repeated blocks is
the output head; any other matrix is hidden; vectors are gains and biases. A hidden matrix's
base fan-in is the same-named parameter's fan-in in the base-shape model, built on the meta
device (no memory, no compute).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autotaper.errors import InputError

if TYPE_CHECKING:  # pragma: no cover

    from autotaper.spec import ModelSpec

PARAMETRIZATIONS = ("sp", "mup", "completep")
ALPHA_RANGE = (0.5, 1.0)
# projections that write into the residual stream (their init shrinks with depth under sp)
RESIDUAL_OUT = ("o_proj", "down_proj", "attn.c_proj", "mlp.c_proj")


def parse_names(text: str) -> list[str]:
    """'sp,mup' -> ['sp', 'mup'], each checked; for `--param`."""
    names = [t.strip() for t in str(text).split(",")]
    if not names or not all(names):
        raise InputError(f"--param: expected names separated by commas, got {text!r}")
    for name in names:
        if name not in PARAMETRIZATIONS:
            raise InputError(f"parametrization: unknown name {name!r} (known: {', '.join(PARAMETRIZATIONS)})")
    if len(set(names)) != len(names):
        raise InputError(f"--param: a parametrization is named twice in {text!r}")
    return names


def problems(name: Any, alpha: Any, *, where: str = "") -> list[str]:
    """What is wrong with a parametrization name and depth exponent, one line each."""
    out = []
    if not isinstance(name, str) or name not in PARAMETRIZATIONS:
        out.append(f"{where}parametrization: unknown name {name!r} (known: {', '.join(PARAMETRIZATIONS)})")
    if (isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha)
            or not ALPHA_RANGE[0] <= alpha <= ALPHA_RANGE[1]):
        out.append(f"{where}depth_alpha: must be in [{ALPHA_RANGE[0]:g}, {ALPHA_RANGE[1]:g}], got {alpha!r}")
    return out


def describe(spec: "ModelSpec") -> str:
    """'sp', 'mup (base width 128)', 'completep (alpha 1, base 128 x 6 layers)'."""
    name = spec.parametrization
    if name == "sp":
        return "sp"
    base = f"base width {spec.base_d_model or spec.d_model}"
    if name == "completep":
        return f"completep (alpha {spec.depth_alpha:g}, {base}, base depth {spec.base_n_layers or spec.n_layers})"
    return f"mup ({base})"


def width_multiplier(spec: "ModelSpec") -> float:
    """m_N: the uniform model's width over the base width."""
    return spec.d_model / (spec.base_d_model or spec.d_model)


def depth_multiplier(spec: "ModelSpec") -> float:
    """m_L: the depth over the base depth (1 unless completep)."""
    if spec.parametrization != "completep":
        return 1.0
    return spec.n_layers / (spec.base_n_layers or spec.n_layers)


def residual_scale(spec: "ModelSpec") -> float:
    """What every residual branch is multiplied by: m_L^-alpha under completep, else 1."""
    return depth_multiplier(spec) ** -spec.depth_alpha


def logit_scale(spec: "ModelSpec") -> float:
    """muP's output multiplier, 1 / m_out, with m_out the head's fan-in (the stream) over the base width."""
    if spec.parametrization == "sp":
        return 1.0
    return (spec.base_d_model or spec.d_model) / spec.d_stream


def residual_init_depth(spec: "ModelSpec") -> int:
    """The depth L in the residual projections' init std 0.02 / sqrt(2 L)."""
    if spec.parametrization == "completep":
        return spec.base_n_layers or spec.n_layers
    return spec.n_layers


@dataclass(frozen=True)
class Rule:
    """One parameter's multipliers of the base recipe."""

    role: str  # input, hidden, output, vector
    init_std: float = 1.0
    lr: float = 1.0
    eps: float = 1.0
    weight_decay: float = 1.0


def is_residual_out(name: str) -> bool:
    return any(k in name for k in RESIDUAL_OUT)


__all__ = ["PARAMETRIZATIONS", "Rule", "describe", "logit_scale", "parse_names", "problems", "residual_scale",
           "width_multiplier", "depth_multiplier"]
