"""Proxy runs per hour, trained as a population of K against one run at a time.

    python benchmarks/population_throughput.py [--presets tiny,proxy-xs] [--k 1,2,4,8,16]
        [--steps 20] [--batch-size 8]

For each preset it trains K seeds of the paper's cosine taper two ways, in this one process
and on this machine's threads: one `train` after another (the baseline), and one
`train_population` of K members. It prints runs per hour of each and their ratio (measured in
this run, so a shared machine's speed cancels), and the largest difference in final
validation loss between a member and its single run. Rows "seeds" are K seeds of one taper
(no padding); rows "tapers" are K candidates (cosine strengths spread over -0.5..0.75) on one
seed, padded to each layer's widest MLP, with the share of weights that is padding. A last
line per preset gives the matmul ceiling: one batched matmul of K members against K separate
ones at the preset's MLP shape, the most batching can gain where matmuls dominate.
"""

from __future__ import annotations

import argparse
import time
import warnings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="tiny,proxy-xs")
    ap.add_argument("--k", default="1,2,4,8,16")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--taper", default="ffn:cosine:1.5:0.5")
    args = ap.parse_args()
    warnings.simplefilter("ignore")

    import torch

    import autotaper as at
    from autotaper.data import load_data
    from autotaper.train import TrainConfig, train
    from autotaper.train.population import padding_waste, train_population

    data = load_data()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device "
          f"{'cuda' if torch.cuda.is_available() else 'cpu'}; {args.steps} steps x batch {args.batch_size}")
    print(f"{'preset':<9} {'members':<7} {'K':>3} {'single runs/h':>14} {'population runs/h':>18} {'ratio':>6} "
          f"{'max |dloss|':>12} {'padding':>8}")
    for preset in args.presets.split(","):
        spec = at.solve(at.ModelSpec.from_name(preset), args.taper)
        warm = [TrainConfig(steps=2, batch_size=args.batch_size, seed=99, eval_every=2)]
        train(spec, data, warm[0], quiet=True), train_population(spec, data, warm)  # first-call costs apart
        for kind in ("seeds", "tapers"):
            for k in (int(x) for x in args.k.split(",")):
                if kind == "seeds":
                    specs = [spec] * k
                    seeds = range(k)
                else:
                    strengths = [-0.5 + 1.25 * i / max(k - 1, 1) for i in range(k)]
                    specs = [at.solve(spec.uniform(), f"ffn:cosine:{1 + x:.3f}:{1 - x:.3f}") for x in strengths]
                    seeds = [0] * k
                configs = [TrainConfig(steps=args.steps, batch_size=args.batch_size, seed=s, eval_every=args.steps)
                           for s in seeds]
                t0 = time.perf_counter()
                single = [train(sp, data, c, quiet=True) for sp, c in zip(specs, configs)]
                t1 = time.perf_counter()
                pop = train_population(specs, data, configs)
                t2 = time.perf_counter()
                diff = max(abs(a.val_loss - b.val_loss) for a, b in zip(pop, single))
                s_rate, p_rate = k * 3600 / (t1 - t0), k * 3600 / (t2 - t1)
                print(f"{preset:<9} {kind:<7} {k:>3} {s_rate:>14.0f} {p_rate:>18.0f} {p_rate / s_rate:>6.2f} "
                      f"{diff:>12.2e} {padding_waste(specs):>8.1%}", flush=True)

        print(f"{preset} " + matmul_ceiling(spec, args.batch_size, [int(x) for x in args.k.split(",")]), flush=True)


def matmul_ceiling(spec, batch_size: int, ks: list[int]) -> str:
    """The most batching can give where matmuls dominate: one batched matmul of K members' MLP
    up-projections (tokens x d_model x ffn) against K separate ones, as a ratio of speeds. On a
    CPU whose single matmul already fills the cores this is about 1, and a population can gain
    only what it saves elsewhere."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    n, d, f = batch_size * spec.context_length, spec.d_model, max(spec.layer_ffn)
    parts = []
    for k in ks:
        x, w = torch.randn(k, n, d, device=device), torch.randn(k, d, f, device=device)

        def one_by_one():
            for i in range(k):
                x[i] @ w[i]

        def batched():
            torch.bmm(x, w)

        times = {}
        for fn in (one_by_one, batched):
            fn()
            reps = max(3, 200 // k)
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            if device == "cuda":
                torch.cuda.synchronize()
            times[fn.__name__] = time.perf_counter() - t0
        parts.append(f"K={k} {times['one_by_one'] / times['batched']:.2f}x")
    return f"matmul ceiling ({n} x {d} x {f}, one bmm over K mm): " + ", ".join(parts)


if __name__ == "__main__":
    main()
