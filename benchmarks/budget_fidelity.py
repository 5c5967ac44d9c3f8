"""Does the screening budget rank tapers as a longer run does? One shape, a fixed taper set,
trained on paired seeds at the screening steps and at 4x and 16x as many, under one
parametrization; prints each taper's effect per budget and the rank agreement (Spearman and
Kendall with paired-seed bootstrap intervals, `autotaper.ladder.fidelity`) of the screening
budget with each longer one. A low or uncertain agreement is the case for confirming at a
longer budget (search.confirm.steps / tokens_per_param).

    python benchmarks/budget_fidelity.py                           # proxy-xs, 60 x 8 steps, 4 seeds
    python benchmarks/budget_fidelity.py --preset tiny --steps 20 --seeds 3 --factors 2   # a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import platform
import time

import torch

from autotaper.budget import solve
from autotaper.data import load_data
from autotaper.ladder.fidelity import fidelity
from autotaper.paired import PairedEvaluator
from autotaper.spec import ModelSpec
from autotaper.train import TrainConfig

TAPERS = ["ffn:cosine:1.5:0.5", "ffn:cosine:0.5:1.5", "ffn:linear:1.25:0.75", "ffn:valley:1.5:0.5",
          "heads:linear:0.5:1.5", "ffn:sigmoid:1.4:0.6"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="proxy-xs")
    ap.add_argument("--steps", type=int, default=60, help="the screening budget's steps")
    ap.add_argument("--factors", default="4,16", help="the longer budgets, as multiples of --steps")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--param", default="sp")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--tapers", default=",".join(TAPERS))
    args = ap.parse_args()
    data = load_data(None)
    base = dataclasses.replace(ModelSpec.from_name(args.preset), vocab_size=data.vocab_size,
                               parametrization=args.param)
    tapers = args.tapers.split(",")
    specs = {t: solve(base, t) for t in tapers}
    budgets = [args.steps] + [args.steps * int(f) for f in args.factors.split(",")]
    print(f"# {datetime.date.today()} {platform.node()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.preset} under {args.param}, batch {args.batch_size}, lr {args.lr:g}, {args.seeds} paired seeds; "
          f"corpus {data.name}")
    deltas: dict[int, dict[str, list[float]]] = {}
    t0 = time.perf_counter()
    for steps in budgets:
        ev = PairedEvaluator(base, data, lambda seed, o, s=steps: TrainConfig(
            steps=s, batch_size=args.batch_size, lr=args.lr, seed=seed, eval_every=s))
        comps = ev.compare(specs, range(args.seeds))
        deltas[steps] = {t: c.deltas for t, c in comps.items()}
        print(f"{steps} steps: " + ", ".join(f"{t} {c.stats.mean:+.4f}" for t, c in comps.items())
              + f"   ({time.perf_counter() - t0:.0f} s)", flush=True)
    print("\n| taper | " + " | ".join(f"{s} steps" for s in budgets) + " |")
    print("|---|" + "---|" * len(budgets))
    for t in tapers:
        cells = []
        for s in budgets:
            d = deltas[s][t]
            cells.append(f"{sum(d) / len(d):+.4f}")
        print(f"| {t} | " + " | ".join(cells) + " |")
    print()
    for longer in budgets[1:]:
        f = fidelity(f"{args.steps} steps", deltas[args.steps], f"{longer} steps", deltas[longer])
        print(f"- {f.text}")


if __name__ == "__main__":
    main()
