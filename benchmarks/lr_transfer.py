"""Does the learning rate transfer across width and depth? Uniform's LR swept at every shape.

For each parametrization (sp: one global LR; completep: per-matrix multipliers against the base
shape, the smallest width and depth, with residual branches x (L / L0)^-alpha) it trains the
uniform model at 3 depths x 2 widths on a grid of LRs a factor 2 apart, on paired seeds, and
prints the best LR per shape and how many factor-2 steps the best LR moves across shapes. Under
a parametrization that transfers, the best LR stays put (the goal: at most one step under
completep). It also prints, at the base shape's best LR, each shape's per-seed SD over its
shallowest shape's: deep rungs trained at a wrong LR are noisy.

    python benchmarks/lr_transfer.py                       # 6/12/24 layers x 64/128 wide, 5 LRs, 2 seeds
    python benchmarks/lr_transfer.py --depths 2,4 --widths 32 --lrs 1e-3,4e-3 --steps 20   # a smoke run
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import statistics
import time

import torch

from autotaper.data import load_data
from autotaper.spec import ModelSpec
from autotaper.train import TrainConfig, train


def shape(width: int, depth: int, param: str, base: tuple[int, int], alpha: float, vocab: int) -> ModelSpec:
    return ModelSpec(family="llama", vocab_size=vocab, d_model=width, n_layers=depth, n_heads=max(1, width // 32),
                     ffn_width=4 * width, context_length=64, parametrization=param, depth_alpha=alpha,
                     base_d_model=base[0] if param != "sp" else None, base_n_layers=base[1] if param != "sp" else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", default="6,12,24")
    ap.add_argument("--widths", default="64,128")
    ap.add_argument("--lrs", default="7.5e-4,1.5e-3,3e-3,6e-3,1.2e-2")
    ap.add_argument("--param", default="sp,completep")
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    depths = [int(x) for x in args.depths.split(",")]
    widths = [int(x) for x in args.widths.split(",")]
    lrs = [float(x) for x in args.lrs.split(",")]
    base = (min(widths), min(depths))
    data = load_data(None)
    print(f"# {datetime.date.today()} {platform.node()}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads; corpus {data.name}; {args.steps} steps x {args.batch_size} x 64 tokens, {args.seeds} seeds; "
          f"base shape {base[0]} wide x {base[1]} layers; completep alpha {args.alpha:g}")
    results: dict[tuple, list[float]] = {}
    t0 = time.perf_counter()
    for param in args.param.split(","):
        for depth in depths:
            for width in widths:
                for lr in lrs:
                    vals = []
                    for seed in range(args.seeds):
                        at_base = (width, depth) == base
                        if at_base and param != "sp" and ("sp", depth, width, lr) in results:
                            vals = results[("sp", depth, width, lr)]  # identical runs at the base shape
                            break
                        spec = shape(width, depth, param, base, args.alpha, data.vocab_size)
                        r = train(spec, data, TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=lr,
                                                          seed=seed, eval_every=args.steps), quiet=True)
                        vals.append(r.val_bpb if r.status == "complete" and r.val_bpb is not None else math.inf)
                    results[(param, depth, width, lr)] = vals
                    print(f"  {param:<10} {depth:>3} x {width:<4} lr {lr:<8.3g} bpb "
                          + " ".join(f"{v:.4f}" for v in vals) + f"   ({time.perf_counter() - t0:.0f} s)", flush=True)
    print("\n| parametrization | shape | best LR | bpb at best | per-seed SD at the base's best LR |")
    print("|---|---|---|---|---|")
    for param in args.param.split(","):
        best_lrs = {}
        base_best = min(lrs, key=lambda lr: statistics.fmean(results[(param, base[1], base[0], lr)]))
        sds = {}
        for depth in depths:
            for width in widths:
                means = {lr: statistics.fmean(results[(param, depth, width, lr)]) for lr in lrs}
                best = min(means, key=means.get)
                best_lrs[(depth, width)] = best
                vals = results[(param, depth, width, base_best)]
                sds[(depth, width)] = statistics.stdev(vals) if len(vals) > 1 and all(map(math.isfinite, vals)) \
                    else math.nan
                print(f"| {param} | {depth} x {width} | {best:.3g} | {means[best]:.4f} | {sds[(depth, width)]:.4f} |")
        steps = [math.log2(v) for v in best_lrs.values()]
        moved = max(steps) - min(steps)
        print(f"| {param} | all | moves {moved:.0f} factor-2 step(s) across shapes | | "
              + ", ".join(f"{d} deep/{depths[0]} deep at {w}: {sds[(d, w)] / sds[(depths[0], w)]:.2f}x"
                          for w in widths for d in depths[1:] if sds[(depths[0], w)] > 0) + " |")


if __name__ == "__main__":
    main()
