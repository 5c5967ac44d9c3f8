"""A taper search as a Ray cluster job, through the Python API.

Submit it from this checkout's root, to any cluster whose dashboard you reach (port 8265 by
default); `autotaper search --backend ray --submit http://HEAD:8265 ...` does the same in one
command, with the space's data and pinned dependencies shipped too (README: On a Ray cluster):

    ray job submit --address http://HEAD:8265 --working-dir . \\
        --runtime-env-json '{"py_modules": ["autotaper"]}' \\
        -- python examples/ray_cluster_job.py --space search_spaces/ffn.yaml \\
           --storage postgresql://user@db-host/optuna --study ffn-proxy-s

- `--working-dir .` ships this folder (spaces, data files; what .gitignore names stays behind);
  the job runs in a copy of it on the head node, so paths in the space are relative to it.
- `py_modules` ships this checkout's `autotaper` package to every node, whether or not a node
  installed it; nothing named autotaper is looked up on a package index.
- Trials spread over every node (`--cpus-per-trial`, `--gpus-per-trial`; fractions share a
  GPU), after a check that every node runs the driver's autotaper, torch, Optuna, Ray and
  Python. Results land in the study storage: a database every node and you can reach
  (PostgreSQL; its password from PGPASSWORD or ~/.pgpass, not the command line), or an SQLite
  file on the head node's disk; read them with `autotaper results --storage URL --study NAME`.
  The job's log ends with the leaderboard.
"""

from __future__ import annotations

import argparse
import json

from autotaper.search import leaderboard, load_space, run_ray_search
from autotaper.search.results import to_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", required=True)
    ap.add_argument("--storage", required=True, help="study storage every node's driver can reach")
    ap.add_argument("--study")
    ap.add_argument("--n-trials", type=int)
    ap.add_argument("--cpus-per-trial", type=float, default=1.0)
    ap.add_argument("--gpus-per-trial", type=float, default=0.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    space = load_space(args.space)
    summary = run_ray_search(space, storage=args.storage, study_name=args.study, n_trials=args.n_trials,
                             address="auto", cpus_per_trial=args.cpus_per_trial,
                             gpus_per_trial=args.gpus_per_trial, quiet=True)
    board = leaderboard(summary.storage, summary.study_name)
    print(json.dumps(board) if args.json else to_table(board))


if __name__ == "__main__":
    main()
