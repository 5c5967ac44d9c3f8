"""Proxy trials per hour on one device for N parallel search workers, and duplicate candidates.

    python benchmarks/gpu_search_throughput.py [--workers 1,2,4,8,16] [--preset proxy-xs]
        [--steps 200] [--batch-size 16] [--trials-per-worker 3] [--out results.json]

For each N, one fresh study of the same space runs `autotaper search --workers N` (the
library's `run_search`) with N x --trials-per-worker trials. Throughput is counted from the
study's own timestamps: trials that trained (complete or pruned, status not duplicate) per
hour between the first trial's start and the last one's end, so calibration and the
baselines (trained once per study, before the workers start) are left out alike for every N.
Duplicates are trained specs that appear in more than one trial: the goal is 0. The ratio
printed is trials/hour at N over trials/hour at N = 1, measured in this run (goal >= 6x at
the best N on one H100). On a CPU the workers share its cores: run it with --workers 1,2.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path


def space_for(args, name: str):
    from autotaper.search.space import parse_space

    return parse_space({
        "name": name,
        "proxy": {"preset": args.preset, "steps": args.steps, "batch_size": args.batch_size, "seeds": 2,
                  "eval_every": args.steps},
        "search": {"sampler": "tpe", "pruner": "none", "n_trials": 1, "confirm": False},
        "taper": {"ffn": {"curve": ["linear", "cosine", "sigmoid"], "strength": {"low": -0.5, "high": 0.75}},
                  "heads": {"curve": "linear", "strength": {"low": -0.5, "high": 0.5}}},
    })


def measure(args, n: int, root: Path) -> dict:
    import optuna

    from autotaper.search import run_search
    from autotaper.search.storage import open_storage

    name = f"throughput-w{n}"
    url = f"journal:{root / name / 'journal.log'}"
    space = space_for(args, name)
    n_trials = n * args.trials_per_worker
    run_search(space, storage=url, workers=n, n_trials=n_trials, confirm=False, quiet=True)
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    trained = [t for t in study.trials if t.user_attrs.get("status") in ("complete", "pruned")
               and t.user_attrs.get("steps_trained") and t.datetime_start and t.datetime_complete]
    start = min(t.datetime_start for t in trained)
    end = max(t.datetime_complete for t in trained)
    hours = (end - start).total_seconds() / 3600
    keys = Counter(t.user_attrs["spec_key"] for t in trained)
    return {"workers": n, "trials": len(trained), "hours": hours, "trials_per_hour": len(trained) / hours,
            "duplicates": sum(c - 1 for c in keys.values() if c > 1),
            "yielded": sum(1 for t in study.trials if t.user_attrs.get("status") == "duplicate")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", default="1,2,4,8,16")
    ap.add_argument("--preset", default="proxy-xs")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--trials-per-worker", type=int, default=3)
    ap.add_argument("--out", help="also write the rows as JSON")
    args = ap.parse_args()
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("AUTOTAPER_CACHE", str(Path(tmp) / "cache"))
        for n in (int(x) for x in args.workers.split(",")):
            t0 = time.perf_counter()
            row = measure(args, n, Path(tmp))
            row["wall_s"] = time.perf_counter() - t0
            rows.append(row)
            base = rows[0]["trials_per_hour"]
            print(f"N={n:>2}: {row['trials']:>3} trials in {row['hours'] * 60:5.1f} min = "
                  f"{row['trials_per_hour']:8.1f} trials/h   x{row['trials_per_hour'] / base:5.2f} of N={rows[0]['workers']}"
                  f"   duplicates trained {row['duplicates']}   proposals yielded {row['yielded']}", flush=True)
    best = max(rows, key=lambda r: r["trials_per_hour"])
    print(f"device {device}, {args.preset} batch {args.batch_size}, {args.steps} steps x 2 seeds: best N = "
          f"{best['workers']} at x{best['trials_per_hour'] / rows[0]['trials_per_hour']:.2f} of N = "
          f"{rows[0]['workers']} (goal >= 6x on one GPU), duplicates trained {sum(r['duplicates'] for r in rows)} "
          f"(goal 0)")
    if args.out:
        Path(args.out).write_text(json.dumps({"device": device, "args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
