"""The training-memory estimate against a real training's peak on this CUDA device.

    python benchmarks/memory_estimate.py [--presets proxy-xs,proxy-s,proxy-m,125m] [--batch-size 16]

For each preset (the paper's cosine taper) it trains a few steps on the GPU in bf16 and fp32,
reads `torch.cuda.max_memory_allocated` (plus the CUDA context, which the allocator does not
see), and prints it against `autotaper.memory.training_bytes`: the ratio measured / estimated
must stay at or below 1 (an estimate below the peak lets `--workers auto` start more workers
than fit). Needs CUDA; on a machine without it, says so and exits 0.
"""

from __future__ import annotations

import argparse
import warnings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="proxy-xs,proxy-s,proxy-m,125m")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    warnings.simplefilter("ignore")

    import torch

    if not torch.cuda.is_available():
        print("memory_estimate: no CUDA device here; nothing measured")
        return

    import autotaper as at
    from autotaper.data import load_data
    from autotaper.memory import CUDA_CONTEXT_BYTES, training_bytes
    from autotaper.train import TrainConfig, train

    data = load_data()
    print(f"{'preset':<9} {'precision':<9} {'estimate MiB':>12} {'peak MiB':>9} {'peak/estimate':>14}")
    worst = 0.0
    for preset in args.presets.split(","):
        spec = at.solve(at.ModelSpec.from_name(preset), "ffn:cosine:1.5:0.5")
        for precision in ("bf16", "fp32"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            train(spec, data, TrainConfig(steps=args.steps, batch_size=args.batch_size, precision=precision,
                                          device="cuda", eval_every=args.steps), quiet=True)
            peak = torch.cuda.max_memory_allocated() + CUDA_CONTEXT_BYTES
            estimate = training_bytes(spec, args.batch_size, precision)
            worst = max(worst, peak / estimate)
            print(f"{preset:<9} {precision:<9} {estimate / 2**20:>12.0f} {peak / 2**20:>9.0f} {peak / estimate:>14.2f}",
                  flush=True)
    print(f"worst peak/estimate {worst:.2f} (goal <= 1.00): {'met' if worst <= 1 else 'NOT met'}")


if __name__ == "__main__":
    main()
