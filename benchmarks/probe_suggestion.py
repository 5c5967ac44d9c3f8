"""Does the probe-guided taper beat the paper's default? Paired seeds, the quickstart's proxy.

    python benchmarks/probe_suggestion.py [--space search_spaces/quickstart.yaml] [--seeds 8]
        [--probe-steps 300] [--strength 1.0]

1. trains the space's uniform proxy once (--probe-steps, seed 0, kept in a temporary run
   directory), probes it (`autotaper.probe`) and turns the probe into a taper (`suggest`);
2. trains uniform, the paper's cosine 1.5 -> 0.5 and the suggestion, all solved to the same
   parameter budget, on --seeds fresh seeds (from 2000, none used by the probe run) with the
   space's proxy recipe, every taper on the same batches and initial weights per seed;
3. prints each taper against uniform and the suggestion against the paper's default: mean
   paired difference in bits per byte with its 95% t-interval (negative: the first is better).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="search_spaces/quickstart.yaml")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--probe-steps", type=int, default=300)
    ap.add_argument("--strength", type=float, default=1.0)
    args = ap.parse_args()

    from autotaper.budget import solve
    from autotaper.data import load_data
    from autotaper.data.tokens import val_windows
    from autotaper.paired import PairedEvaluator
    from autotaper.probe import probe, suggest
    from autotaper.search import load_space
    from autotaper.search.objective import baseline_spec, train_config
    from autotaper.search.space import PAPER_DEFAULT
    from autotaper.stats import paired_stats
    from autotaper.train import train
    from autotaper.train.checkpoint import load_run

    t0 = time.perf_counter()
    space = load_space(args.space)
    p = space.proxy
    data = load_data(p.data, tokenizer=p.tokenizer, vocab_size=p.vocab_size)
    base = baseline_spec(space, data)
    with tempfile.TemporaryDirectory() as tmp:
        config = dataclasses.replace(train_config(space, 0), steps=args.probe_steps)
        train(base, data, config, out_dir=tmp, quiet=True)
        _, model, _ = load_run(tmp)
        layers = probe(model, val_windows(data.val, n=64, context_length=base.context_length))
    result = {"layers": [vars(r) for r in layers]}
    text = suggest(result, strength=args.strength)
    print(f"probe of uniform {p.preset} after {args.probe_steps} steps: cos "
          + " ".join(f"{r.cos:.3f}" for r in layers) + f"\nsuggestion: {text}")
    specs = {"paper": solve(base, PAPER_DEFAULT, constraint=p.constraint, tolerance=p.tolerance),
             "suggestion": solve(base, text, constraint=p.constraint, tolerance=p.tolerance)}
    ev = PairedEvaluator(base, data, lambda seed, o: train_config(space, seed, o))
    seeds = range(2000, 2000 + args.seeds)
    runs = ev.compare(specs, seeds)
    unit = "bpb"
    for name, comp in runs.items():
        s = paired_stats([r.delta for r in comp.runs])
        print(f"{name:<10} vs uniform: {s.mean:+.4f} {unit}, 95% CI [{s.ci95[0]:+.4f}, {s.ci95[1]:+.4f}] "
              f"over {len(comp.runs)} paired seeds  ({comp.spec.taper})")
    diff = paired_stats([a.value - b.value for a, b in zip(runs["suggestion"].runs, runs["paper"].runs)])
    verdict = ("beats" if diff.ci95[1] < 0 else "is worse than" if diff.ci95[0] > 0 else
               "is not distinguishable from")
    print(f"suggestion - paper: {diff.mean:+.4f} {unit}, 95% CI [{diff.ci95[0]:+.4f}, {diff.ci95[1]:+.4f}] over "
          f"{len(seeds)} paired seeds: the probe-guided taper {verdict} the paper's default "
          f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
