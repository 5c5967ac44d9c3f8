"""Search efficiency, measured in one run on a small proxy.

    python benchmarks/search_efficiency.py [--preset proxy-xs] [--steps 120] [--seeds 3]
                                           [--search-seeds 3] [--max-trials 16]

1. Runs the paper's full grid (15 tapers + the uniform reference) and takes its best point
   and that point's 95% interval.
2. Runs the default search (TPE + median pruning over the ffn curve and strength, the
   quickstart space) trial by trial until a complete trial's paired delta falls within (or
   below) the best grid point's interval; once per sampler seed, because how soon TPE
   gets there is itself random.
Prints the proxy compute (training steps of every run trained: baselines, calibration and
trial seeds, each once, on both sides; confirmation is left out of both) of (2) over (1) for each sampler seed and their median, goal <= 0.4, and the
framework overhead: trial wall time outside train() as a share of trial wall time, goal < 5%.

The default proxy is the quickstart's (proxy-xs): on `tiny` the ffn widths are so few
multiples of 16 that most grid points solve to the same spec, the study reuses their
results, and the grid looks cheaper than it is.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import optuna
import yaml

from autotaper.search import leaderboard, load_space, parse_space, run_search

ROOT = Path(__file__).resolve().parents[1]


def steps_used(storage: str, name: str) -> tuple[int, float, float]:
    from autotaper.search.storage import open_storage

    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    # every run trained once: the stored ones (baselines, calibration, trial seeds; a reused
    # run is stored once) and those stopped by the pruner, which are never stored
    steps = sum(v["steps"] for k, v in study.user_attrs.items() if k.startswith(("baseline/", "run/")))
    wall = train = 0.0
    for t in study.trials:
        steps += t.user_attrs.get("steps_unstored", 0)
        if t.user_attrs.get("status") in ("complete", "pruned") and "wall_time_s" in t.user_attrs:
            wall += t.user_attrs["wall_time_s"]
            train += t.user_attrs.get("train_wall_s", 0.0)
    return steps, wall, train


def search_until_found(space, url: str, target: float, max_trials: int):
    """Run the study one trial at a time until a complete trial is at or below `target`."""
    for n in range(3, max_trials + 1):  # the reference and the paper's default come first
        run_search(space, storage=url, study_name="search", n_trials=n, quiet=True, confirm=False)
        rows = [r for r in leaderboard(url, "search")["trials"] if r["status"] == "complete"]
        hit = [r for r in rows if r["delta_bpb"] <= target]
        if hit:
            return min(hit, key=lambda r: r["delta_bpb"])
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="proxy-xs")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--search-seeds", type=int, default=3, help="sampler seeds to run the search with")
    ap.add_argument("--max-trials", type=int, default=16)
    args = ap.parse_args()
    proxy = {"preset": args.preset, "steps": args.steps, "seeds": args.seeds}
    ratios, wall, train = [], 0.0, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        grid = load_space(ROOT / "search_spaces" / "paper_grid.yaml", overrides=proxy)
        g_url = f"sqlite:///{tmp}/grid.db"
        run_search(grid, storage=g_url, study_name="grid", quiet=True, confirm=False)
        board = leaderboard(g_url, "grid")
        done = [r for r in board["trials"] if r["status"] == "complete"]
        best = min(done, key=lambda r: r["delta_bpb"])
        target = best["ci95"][1]
        g_steps, _, _ = steps_used(g_url, "grid")
        print(f"proxy {args.preset}, {args.steps} steps x {args.seeds} seeds")
        print(f"grid: best {best['taper']} {best['delta_bpb']:+.4f} bpb, 95% CI [{best['ci95'][0]:+.4f}, "
              f"{best['ci95'][1]:+.4f}], {g_steps} training steps, {len(done)} complete points")

        raw = yaml.safe_load((ROOT / "search_spaces" / "quickstart.yaml").read_text())
        for seed in range(args.search_seeds):
            raw["search"]["seed"] = seed
            space = parse_space(raw, name="quickstart", overrides=proxy)
            s_url = f"sqlite:///{tmp}/search{seed}.db"
            found = search_until_found(space, s_url, target, args.max_trials)
            s_steps, w, t = steps_used(s_url, "search")
            wall, train = wall + w, train + t
            ratio = s_steps / g_steps if found else float("inf")
            ratios.append(ratio)
            what = (f"{found['taper']} {found['delta_bpb']:+.4f} bpb" if found
                    else f"nothing within the interval in {args.max_trials} trials")
            print(f"search (sampler seed {seed}): {what}, {s_steps} training steps, search / grid = {ratio:.3f}")
    print(f"compute search / grid = {statistics.median(ratios):.3f} median of {len(ratios)} sampler seeds "
          f"(range {min(ratios):.3f} to {max(ratios):.3f})  (goal <= 0.4)")
    print(f"framework overhead    = {(wall - train) / wall:.3%} of trial wall time  (goal < 5%)")


if __name__ == "__main__":
    main()
