"""Search efficiency, measured in one run on a small proxy.

    python benchmarks/search_efficiency.py [--preset tiny] [--steps 100] [--seeds 3] [--max-trials 16]

1. Runs the paper's full grid (15 tapers + the uniform reference) and takes its best point
   and that point's 95% interval.
2. Runs the default search (TPE + median pruning over the ffn curve and strength, the
   quickstart space) trial by trial until a complete trial's paired delta falls within (or
   below) the best grid point's interval.
Prints the proxy compute (training steps summed over trials and seeds, baselines included
on both sides) of (2) over (1), goal <= 0.4, and the framework overhead: trial wall time
outside train() as a share of trial wall time, goal < 5%.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import optuna

from autotaper.search import leaderboard, load_space, run_search

ROOT = Path(__file__).resolve().parents[1]


def steps_used(storage: str, name: str) -> tuple[int, float, float]:
    from autotaper.search.storage import open_storage

    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    steps = sum(study.user_attrs[k]["steps"] for k in study.user_attrs if k.startswith("baseline/"))
    wall = train = 0.0
    for t in study.trials:
        steps += t.user_attrs.get("steps_trained", 0)
        if t.user_attrs.get("status") in ("complete", "pruned") and "wall_time_s" in t.user_attrs:
            wall += t.user_attrs["wall_time_s"]
            train += t.user_attrs.get("train_wall_s", 0.0)
    return steps, wall, train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--max-trials", type=int, default=16)
    args = ap.parse_args()
    proxy = {"preset": args.preset, "steps": args.steps, "seeds": args.seeds}
    with tempfile.TemporaryDirectory() as tmp:
        grid = load_space(ROOT / "search_spaces" / "paper_grid.yaml", overrides=proxy)
        g_url = f"sqlite:///{tmp}/grid.db"
        run_search(grid, storage=g_url, study_name="grid", quiet=True)
        board = leaderboard(g_url, "grid")
        done = [r for r in board["trials"] if r["status"] == "complete"]
        best = min(done, key=lambda r: r["delta_bpb"])
        target = best["ci95"][1]
        g_steps, _, _ = steps_used(g_url, "grid")

        q = load_space(ROOT / "search_spaces" / "quickstart.yaml", overrides=proxy)
        s_url = f"sqlite:///{tmp}/search.db"
        found = None
        for n in range(3, args.max_trials + 1):  # the reference and the paper's default come first
            run_search(q, storage=s_url, study_name="search", n_trials=n, quiet=True)
            rows = [r for r in leaderboard(s_url, "search")["trials"] if r["status"] == "complete"]
            hit = [r for r in rows if r["delta_bpb"] <= target]
            if hit:
                found = min(hit, key=lambda r: r["delta_bpb"])
                break
        s_steps, wall, train = steps_used(s_url, "search")
    print(f"proxy {args.preset}, {args.steps} steps x {args.seeds} seeds")
    print(f"grid: best {best['taper']} {best['delta_bpb']:+.4f} bpb, 95% CI [{best['ci95'][0]:+.4f}, "
          f"{best['ci95'][1]:+.4f}], {g_steps} training steps")
    if found:
        print(f"search: {found['taper']} {found['delta_bpb']:+.4f} bpb within the interval after "
              f"{s_steps} training steps")
    else:
        print(f"search: nothing within the interval in {args.max_trials} trials ({s_steps} training steps)")
    print(f"compute search / grid = {s_steps / g_steps:.3f}  (goal <= 0.4)")
    print(f"framework overhead    = {(wall - train) / wall:.3%} of trial wall time  (goal < 5%)")


if __name__ == "__main__":
    main()
