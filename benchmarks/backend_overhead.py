"""The same micro search through both backends: Ray's per-trial overhead against Optuna's.

    python benchmarks/backend_overhead.py [--trials 6] [--steps 40]

Per-trial overhead is trial wall time outside train() (solving, data opening, storage
writes, result transport), measured from the study's own records (`wall_time_s`,
`train_wall_s`) in one run and printed as a ratio Ray / Optuna; the whole searches' wall
times are compared too (Ray adds actor start-up and scheduling between trials).
With CUDA present it also runs trials that share one GPU (`--gpus-per-trial 0.25`) and
prints their throughput against one trial alone on the GPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import optuna

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from autotaper.search import (  # noqa: E402
    parse_space,
    run_ray_search,  # noqa: E402
    run_search,
)
from autotaper.search.storage import open_storage  # noqa: E402


def micro(steps: int, trials: int, preset: str = "tiny") -> dict:
    return {"name": "micro", "proxy": {"preset": preset, "steps": steps, "batch_size": 8, "seeds": 2,
                                       "precision": "fp32"},
            "search": {"sampler": "random", "pruner": "none", "n_trials": trials,
                       "confirm": False},  # per-trial overhead: confirmation runs on the driver alike
            "taper": {"ffn": {"curve": ["linear", "cosine"], "strength": {"low": -0.5, "high": 0.75}}}}


def overheads(url: str) -> tuple[list[float], float]:
    study = optuna.load_study(study_name="micro", storage=open_storage(url))
    out, speeds = [], []
    for t in study.trials:
        a = t.user_attrs
        if a.get("status") == "complete" and a.get("train_wall_s"):
            out.append(a["wall_time_s"] - a["train_wall_s"])
            speeds.append(a.get("tokens_per_s") or 0.0)
    return out, statistics.mean(speeds) if speeds else 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    import ray
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        space = parse_space(micro(args.steps, args.trials))
        t0 = time.perf_counter()
        run_search(space, storage=f"sqlite:///{tmp}/optuna.db", quiet=True)
        optuna_wall = time.perf_counter() - t0
        ray.init(include_dashboard=False, log_to_driver=False)
        t0 = time.perf_counter()
        run_ray_search(space, storage=f"sqlite:///{tmp}/ray.db", tune_storage=f"{tmp}/tune", quiet=True)
        ray_wall = time.perf_counter() - t0
        o, _ = overheads(f"sqlite:///{tmp}/optuna.db")
        r, _ = overheads(f"sqlite:///{tmp}/ray.db")
        print(f"micro search: tiny proxy, {args.steps} steps x 2 seeds, {args.trials} trials")
        print(f"optuna: per-trial overhead median {statistics.median(o):.3f} s, search wall {optuna_wall:.1f} s")
        print(f"ray   : per-trial overhead median {statistics.median(r):.3f} s, search wall {ray_wall:.1f} s")
        print(f"ray / optuna per-trial overhead = {statistics.median(r) / statistics.median(o):.2f}  (inside trials)")
        print(f"ray / optuna search wall        = {ray_wall / optuna_wall:.2f}  (actor start-up, scheduling, "
              f"Tune bookkeeping; 2 trials at once under Ray, 1 under Optuna)")
        if torch.cuda.is_available():
            gpu = parse_space({**micro(args.steps, 5, preset="proxy-s"),
                               "proxy": {**micro(args.steps, 5)["proxy"], "preset": "proxy-s", "precision": "auto"}})
            run_ray_search(gpu, storage=f"sqlite:///{tmp}/gpu1.db", tune_storage=f"{tmp}/tune", study_name="micro",
                           gpus_per_trial=1.0, quiet=True)
            run_ray_search(gpu, storage=f"sqlite:///{tmp}/gpu4.db", tune_storage=f"{tmp}/tune", study_name="micro",
                           gpus_per_trial=0.25, quiet=True)
            _, one = overheads(f"sqlite:///{tmp}/gpu1.db")
            _, shared = overheads(f"sqlite:///{tmp}/gpu4.db")
            print(f"GPU: one trial per GPU {one:,.0f} tokens/s per trial; four sharing {shared:,.0f} tokens/s per "
                  f"trial ({4 * shared / one:.2f}x the GPU's throughput with sharing)")
        ray.shutdown()


if __name__ == "__main__":
    main()
