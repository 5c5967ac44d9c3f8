"""A custom search space in Python: the MLP and attention-head tapers searched together.

A YAML space tapers each dimension with its own knobs; here one function decides the whole
candidate, so the two dimensions can share a strength (capacity moved the same way in both)
or be searched apart. Every candidate is solved to the uniform baseline's parameter count,
raced on paired seeds against uniform, and the best is confirmed on fresh seeds.

    python examples/custom_space.py                        # proxy-xs, about 10 min on 2 CPU cores
    python examples/custom_space.py --preset tiny --steps 20 --trials 4   # a minute
"""

from __future__ import annotations

import argparse

import autotaper
from autotaper.search import FunctionSpace, Proxy, Settings, run_search


def candidate(trial) -> str:
    """One candidate as taper text: `dim:curve:start:end`, dimensions joined by `+`."""
    curve = trial.suggest_categorical("curve", ["linear", "cosine"])
    ffn = trial.suggest_float("ffn_strength", -0.5, 0.75)  # > 0 shrinks with depth, < 0 grows
    tied = trial.suggest_categorical("heads_follow_ffn", [True, False])
    heads = ffn if tied else trial.suggest_float("heads_strength", -0.5, 0.5)
    return f"ffn:{curve}:{1 + ffn:.3f}:{1 - ffn:.3f}+heads:{curve}:{1 + heads:.3f}:{1 - heads:.3f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="proxy-xs")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--budget", type=float, default=600, help="seconds for the whole search")
    parser.add_argument("--study", default="custom-space")
    args = parser.parse_args(argv)

    space = FunctionSpace(candidate, name=args.study,
                          proxy=Proxy(preset=args.preset, steps=args.steps, batch_size=8, lr=1.5e-3,
                                      seeds=2, seeds_max=3),
                          settings=Settings(n_trials=args.trials, budget_s=args.budget))
    autotaper.set_verbosity("warning")  # the progress lines off; the result below says it all
    result = run_search(space)
    print(result.best.text if result.best else result.leaderboard["verdict"]["text"])
    print(result.to_dataframe()[["trial", "status", "delta_bpb", "ci95", "seeds", "taper"]].to_string(index=False))


if __name__ == "__main__":
    main()
