"""Model families: their parameter structure (numpy only) and a lazy pointer to the module.

A family says, for arrays of per-layer widths, how many weights a layer holds and how many
of them take part in matrix multiplies, and what the stream ends (embedding, positions,
final norm, head) hold. Counting and budget solving use only this; `build_model` imports
the torch module named by `module` when a model is actually built, so planning never
imports torch.

Per layer l the widths are: d = residual width, h = query heads, kv = KV heads,
hd = head_dim, f = MLP hidden width.
"""

from __future__ import annotations

import abc
import importlib
from typing import TYPE_CHECKING, Any

import numpy as np

from autotaper.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from autotaper.spec import ModelSpec


class Family(abc.ABC):
    """Parameter structure of one architecture; subclass and `register_family` to add one."""

    name: str = ""
    module: str = ""  # "package.module:Class", a torch.nn.Module taking (spec)
    learned_positions: bool = False
    rotary: bool = False  # rotary position embeddings need an even head_dim

    @abc.abstractmethod
    def layer_params(self, d, h, kv, hd, f) -> np.ndarray:
        """All weights of each layer (norms and biases included)."""

    @abc.abstractmethod
    def layer_matmul_params(self, d, h, kv, hd, f) -> np.ndarray:
        """Weights of each layer that multiply an activation once per token (2 FLOPs each)."""

    def stream_params(self, spec: "ModelSpec") -> dict[str, int]:
        """Weights outside the layers, by role, for a stream of width spec.d_stream."""
        ds, v = spec.d_stream, spec.vocab_size
        return {
            "embedding": v * ds,
            "positions": spec.context_length * ds if self.learned_positions else 0,
            "final_norm": self.norm_params(ds),
            "head": 0 if spec.tie_embeddings else v * ds,
        }

    def norm_params(self, d):
        return d

    def build(self, spec: "ModelSpec") -> Any:
        module_name, _, attr = self.module.partition(":")
        return getattr(importlib.import_module(module_name), attr)(spec)


def _attn(d, h, kv, hd):
    # q: d -> h*hd, k and v: d -> kv*hd each, o: h*hd -> d
    return d * (h + 2 * kv) * hd + h * hd * d


class GPT(Family):
    """GPT-2: pre-LayerNorm (weight and bias), biased linears, GELU MLP, learned positions."""

    name = "gpt"
    module = "autotaper.models.gpt:GPT"
    learned_positions = True

    def norm_params(self, d):
        return 2 * d

    def layer_params(self, d, h, kv, hd, f):
        biases = (h + 2 * kv) * hd + d + f + d
        return 2 * self.norm_params(d) + _attn(d, h, kv, hd) + 2 * d * f + biases

    def layer_matmul_params(self, d, h, kv, hd, f):
        return _attn(d, h, kv, hd) + 2 * d * f


class Llama(Family):
    """Transformer++ (Llama): RMSNorm, SwiGLU MLP, RoPE, grouped-query attention, no biases."""

    name = "llama"
    module = "autotaper.models.llama:Llama"
    rotary = True

    def layer_params(self, d, h, kv, hd, f):
        return 2 * self.norm_params(d) + self.layer_matmul_params(d, h, kv, hd, f)

    def layer_matmul_params(self, d, h, kv, hd, f):
        return _attn(d, h, kv, hd) + 3 * d * f


class Gated(Llama):
    """Llama with a sigmoid gate on each head's attention output (gated attention): the gate
    is one more d -> h*hd projection."""

    name = "gated"
    module = "autotaper.models.llama:GatedLlama"

    def layer_matmul_params(self, d, h, kv, hd, f):
        return super().layer_matmul_params(d, h, kv, hd, f) + d * h * hd


_FAMILIES: dict[str, Family] = {f.name: f for f in (GPT(), Llama(), Gated())}


def register_family(family: Family, *, overwrite: bool = False) -> Family:
    """Make `family` available by name to specs, presets, `solve` and `build_model`."""
    if not isinstance(family, Family):
        raise InputError(f"family must be a Family instance, got {type(family).__name__}")
    if not family.name:
        raise InputError("family.name must be a non-empty string")
    if family.name in _FAMILIES and not overwrite:
        raise InputError(f"family {family.name!r} is already registered (pass overwrite=True)")
    _FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    try:
        return _FAMILIES[name]
    except KeyError:
        raise InputError(f"unknown family {name!r}; known: {', '.join(sorted(_FAMILIES))}") from None


def family_names() -> list[str]:
    return sorted(_FAMILIES)
