"""CUDA graphs for small proxies: tokens/s eager, compiled per block, and compiled with CUDA
graphs (torch.compile mode "reduce-overhead"), as ratios measured in this one run.

    python benchmarks/cuda_graphs.py [--presets proxy-xs,proxy-s] [--steps 30] [--batch-size 16]

A small proxy's step on a GPU is mostly kernel launches: a graph replays each block's kernels
in one launch. Each mode first trains a short warm-up run (its compilation, timed apart), then
`--repeats` runs in rotating order; the median tokens/s of the trainer (`TrainResult`, which
leaves the first, compiling step out) is printed with its ratio to eager. On a CPU
"reduce-overhead" compiles as "default" does (there are no CUDA graphs), so only the plumbing
is checked there.
"""

from __future__ import annotations

import argparse
import statistics
import warnings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="proxy-xs,proxy-s")
    ap.add_argument("--taper", default="ffn:cosine:1.5:0.5")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    warnings.simplefilter("ignore")

    import torch

    import autotaper as at
    from autotaper.data import load_data
    from autotaper.train import TrainConfig, train
    from autotaper.train.trainer import resolve_device

    data = load_data()
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"device {name}, torch {torch.__version__}; {args.steps} steps x batch {args.batch_size}, "
          f"{args.repeats} repeats, taper {args.taper}")
    modes = {"eager": False, "compiled": True, "cuda graphs": "reduce-overhead"}
    for preset in args.presets.split(","):
        spec = at.solve(at.ModelSpec.from_name(preset), args.taper)

        def run(mode, steps=args.steps):
            config = TrainConfig(steps=steps, batch_size=args.batch_size, eval_every=steps, eval_batches=1,
                                 device=args.device, compile=mode, log_every=max(10, steps // 2))
            return train(spec, data, config, quiet=True)

        cold = {label: run(mode, 3).compile_s for label, mode in modes.items()}  # compiles each mode's shapes
        rates: dict[str, list[float]] = {label: [] for label in modes}
        order = list(modes)
        for i in range(args.repeats):
            for label in order[i % 3:] + order[: i % 3]:
                rates[label].append(run(modes[label]).tokens_per_s)
        eager = statistics.median(rates["eager"])
        for label in modes:
            rate = statistics.median(rates[label])
            compile_s = f", compile {cold[label]:.1f} s" if cold[label] is not None else ""
            print(f"{preset:<9} {label:<12} {rate:>12,.0f} tokens/s  / eager = {rate / eager:.2f}{compile_s}",
                  flush=True)


if __name__ == "__main__":
    main()
