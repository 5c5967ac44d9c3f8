"""A model family of your own, registered and searched: a parallel-block transformer.

In a parallel block (GPT-J, PaLM) attention and the MLP read the same normalised input and
both add to the residual stream: x + attn(norm(x)) + mlp(norm(x)), one norm per layer
instead of two. autotaper needs two things from a family:

- its parameter structure (`Family`): how many weights a layer of given widths holds, and how
  many of them multiply an activation once per token. Counting, FLOPs and the budget solver
  use only this, so a taper is solved to the baseline's count without building anything;
- a `torch.nn.Module` taking the spec, honouring each layer's widths (`spec.layer_ffn`,
  `spec.layer_heads`, ...) and keeping its blocks in one `nn.ModuleList`.

The script checks the count against the built module's parameters, then searches the MLP
taper of this family on paired seeds:

    python examples/custom_family.py                       # proxy-xs shape, about 10 min on 2 cores
    python examples/custom_family.py --preset tiny --steps 20 --trials 3  # a minute

A family registered in a script exists in that process only: search with `workers=1` (the
default), or register it in a module every worker imports.
"""

from __future__ import annotations

import argparse

import torch.nn as nn

import autotaper as at
from autotaper.families import Llama as LlamaFamily
from autotaper.models._layers import add_to_stream
from autotaper.models.llama import Attention, Llama, RMSNorm, SwiGLU
from autotaper.parametrization import residual_scale
from autotaper.search import FunctionSpace, Proxy, Settings, run_search


class ParallelFamily(LlamaFamily):
    """Llama's weights (RMSNorm, SwiGLU, RoPE, no biases) with one norm per layer."""

    name = "parallel"

    def layer_params(self, d, h, kv, hd, f):
        return self.norm_params(d) + self.layer_matmul_params(d, h, kv, hd, f)

    def build(self, spec):
        return ParallelLM(spec)  # a class of this script: no "module:Class" path to import


class ParallelBlock(nn.Module):
    def __init__(self, spec, i: int, gated: bool = False):
        super().__init__()
        self.d = d = spec.layer_d_model[i]  # the first d channels of the residual stream
        self.residual_scale = residual_scale(spec)
        self.norm = RMSNorm(d, spec.norm_eps)
        self.attn = Attention(d, spec.layer_heads[i], spec.layer_kv_heads[i], spec.head_dim, gated)
        self.mlp = SwiGLU(d, spec.layer_ffn[i])

    def forward(self, x, cos, sin):
        h = self.norm(x[..., : self.d])
        return add_to_stream(x, self.attn(h, cos, sin) + self.mlp(h), self.residual_scale)


class ParallelLM(Llama):
    """autotaper's Llama (embedding, rotary tables, final norm, head) with parallel blocks."""

    block_class = ParallelBlock


def candidate(trial) -> str:
    strength = trial.suggest_float("strength", -0.5, 0.75)
    curve = trial.suggest_categorical("curve", ["linear", "cosine"])
    return f"ffn:{curve}:{1 + strength:.3f}:{1 - strength:.3f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="proxy-xs", help="the shape, taken from a preset")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--budget", type=float, default=600, help="seconds for the whole search")
    parser.add_argument("--study", default="parallel-family")
    args = parser.parse_args(argv)

    at.register_family(ParallelFamily(), overwrite=True)
    base = at.ModelSpec.from_name(args.preset, family="parallel")
    spec = at.solve(base, "ffn:cosine:1.5:0.5")
    built = sum(p.numel() for p in at.build_model(spec).parameters())
    print(f"parallel {args.preset}: {at.count(base).params:,} parameters uniform, {at.count(spec).params:,} "
          f"tapered (widths {list(spec.layer_ffn)}), {built:,} in the built module")
    assert built == at.count(spec).params

    space = FunctionSpace(candidate, name=args.study,
                          proxy=Proxy(preset=args.preset, family="parallel", steps=args.steps, batch_size=8,
                                      lr=1.5e-3, seeds=2, seeds_max=3),
                          settings=Settings(n_trials=args.trials, budget_s=args.budget))
    at.set_verbosity("warning")
    result = run_search(space)
    print(result.best.text if result.best else result.leaderboard["verdict"]["text"])


if __name__ == "__main__":
    main()
