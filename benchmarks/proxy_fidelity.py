"""Proxy fidelity: does a small scale rank tapers the way a larger one does?

A fixed set of six ffn tapers (uniform; shrinking: the paper's cosine 1.5 -> 0.5 and a mild
linear 1.25 -> 0.75; growing: their reverses; middle-heavy: a step 0.75 | 1.5 | 0.75), each
solved to the uniform baseline's parameter count, trained on the same paired seeds at two or
more scales sized by the ladder's rules (`autotaper.ladder.rungs`: tokens per parameter,
clamped; LR scaled as 1/width). Printed: each scale's paired deltas with 95% intervals, then
Spearman and Kendall between scales with paired-seed bootstrap intervals and the sign
agreement of effects (`autotaper.ladder.fidelity`), and with three scales or more the
held-out check (`autotaper.ladder.trend`): the best strength and effect fitted on all scales
but the largest, predicted for the largest, against what it measured.

CPU (two scales within 40 minutes on 2 cores, fp32):
    python benchmarks/proxy_fidelity.py --scales w64=proxy-xs:d_model=64:ffn_width=256,proxy-xs \
        --tokens-per-param 0.1 --batch-size 8 --lr 1.5e-3 --seeds 5
GPU (three scales, many runs per GPU at once):
    python benchmarks/proxy_fidelity.py --scales proxy-xs,proxy-s,proxy-m --tokens-per-param 0.5 \
        --batch-size 32 --lr 3e-3 --seeds 6 --jobs 12 --device cuda
Every per-seed result is written to --out (JSON); `--from FILE` re-prints the analysis.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

TAPERS = {  # label: taper text; the labels are the probe names in the output
    "uniform": "uniform",
    "shrink cosine 1.5>0.5": "ffn:cosine:1.5:0.5",
    "shrink linear 1.25>0.75": "ffn:linear:1.25:0.75",
    "grow cosine 0.5>1.5": "ffn:cosine:0.5:1.5",
    "grow linear 0.75>1.25": "ffn:linear:0.75:1.25",
    "middle step .75|1.5|.75": "ffn:step:0.75:0.75:mid=1.5",
}


def parse_scales(text: str):
    from autotaper.ladder.rungs import RungDef

    rungs = []
    for item in text.split(","):
        name, eq, rest = item.partition("=")
        if not eq:
            name, rest = item, item
        preset, *fields = rest.split(":")
        shape = {k: int(v) for k, v in (f.split("=") for f in fields)}
        rungs.append(RungDef(name=name, preset=preset, shape=shape))
    return rungs


def one_run(job: dict) -> dict:
    """One taper on one seed at one scale. Runs of a seed see the same batches and, where the
    shapes agree, the same initial weights (the trainer seeds both), so uniform's run on the
    seed pairs with each taper's; the data fingerprints are checked when they meet."""
    import torch

    from autotaper.budget import solve
    from autotaper.data import load_data
    from autotaper.spec import ModelSpec
    from autotaper.train import TrainConfig, train

    torch.set_num_threads(job["threads"])
    base = ModelSpec.from_dict(job["base"])
    spec = base if job["taper"] == "uniform" else solve(base, job["taper"], constraint="params")
    config = TrainConfig(steps=job["steps"], batch_size=job["batch_size"], lr=job["lr"], seed=job["seed"],
                         eval_every=job["steps"], device=job["device"], precision=job["precision"])
    r = train(spec, load_data(None), config, quiet=True)
    if r.status != "complete":
        raise RuntimeError(f"{job['scale']} {job['taper']} seed {job['seed']}: {r.status} {r.reason}")
    return {**{k: job[k] for k in ("scale", "seed", "label")}, "value": r.val_bpb,
            "fingerprint": r.data_fingerprint, "wall_s": r.train_time_s}


def measure(args) -> dict:
    import multiprocessing as mp

    from autotaper.data import load_data
    from autotaper.ladder.rungs import LadderConfig, Rules, resolve
    from autotaper.search.space import Proxy
    from autotaper.spec import ModelSpec

    rungs_def = parse_scales(args.scales)
    data = load_data(None)  # builds the cache once, before the workers read it
    anchor = Proxy(preset=rungs_def[0].preset, shape=rungs_def[0].shape or None, steps=args.anchor_steps,
                   batch_size=args.batch_size, lr=args.lr)
    config = LadderConfig(rungs=tuple(rungs_def), rules=Rules(tokens_per_param=args.tokens_per_param,
                                                              min_steps=args.min_steps, max_steps=args.max_steps))
    rungs = resolve(config, anchor, ModelSpec.from_name("440m"), vocab_size=data.vocab_size)
    jobs = []
    for r in rungs:
        base = ModelSpec.from_name(r.proxy.preset, **(r.proxy.shape or {}), vocab_size=data.vocab_size)
        print(f"{r.name}: {r.params:,} params, {r.n_layers} layers x {r.d_model}, {r.proxy.steps} steps x "
              f"{r.proxy.batch_size} (tokens/param {r.tokens_per_param:.3g}{', ' + r.clamped if r.clamped else ''}), "
              f"lr {r.proxy.lr:g}", flush=True)
        jobs += [{"scale": r.name, "seed": s, "label": label, "taper": taper, "base": base.to_dict(),
                  "steps": r.proxy.steps, "batch_size": r.proxy.batch_size, "lr": r.proxy.lr, "device": args.device,
                  "precision": args.precision, "threads": max(1, (os.cpu_count() or 1) // args.jobs)}
                 for s in range(args.seeds) for label, taper in TAPERS.items()]
    t0 = time.perf_counter()
    record = {"scales": [r.to_dict() for r in rungs], "tapers": TAPERS, "results": [], "argv": sys.argv[1:],
              "device": args.device}

    pending: dict[tuple, dict] = {}

    def done(run):  # a seed's deltas once all its tapers are in; the file is rewritten after every seed
        runs = pending.setdefault((run["scale"], run["seed"]), {})
        runs[run["label"]] = run
        if len(runs) < len(TAPERS):
            return
        base = runs["uniform"]
        for r in runs.values():
            if r["fingerprint"] != base["fingerprint"]:
                raise RuntimeError(f"{run['scale']} seed {run['seed']}: {r['label']} saw other batches than uniform")
        record["results"].append({"scale": run["scale"], "seed": run["seed"], "wall_s": sum(r["wall_s"] for r in runs.values()),
                                  "runs": {k: {"delta": r["value"] - base["value"], "value": r["value"],
                                               "baseline": base["value"]} for k, r in runs.items() if k != "uniform"}})
        record["wall_s"] = time.perf_counter() - t0
        print(f"  {run['scale']} seed {run['seed']}: {record['results'][-1]['wall_s']:.0f} s of training", flush=True)
        save(record, args.out)

    if args.jobs == 1:
        for job in jobs:
            done(one_run(job))
    else:
        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            for fut in as_completed([pool.submit(one_run, job) for job in jobs]):
                done(fut.result())
    return record


def save(record: dict, path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(record, f)
    os.replace(path + ".tmp", path)


def analyse(record: dict) -> None:
    from autotaper.ladder.fidelity import fidelity
    from autotaper.ladder.trend import held_out
    from autotaper.stats import paired_stats

    scales = [s["name"] for s in record["scales"]]
    deltas = {s: {} for s in scales}
    for res in sorted(record["results"], key=lambda r: r["seed"]):
        for label, run in res["runs"].items():
            deltas[res["scale"]].setdefault(label, []).append(run["delta"])
    labels = [t for t in record["tapers"] if t != "uniform"]
    record = {**record, "scales": [s for s in record["scales"] if deltas[s["name"]]]}  # a run cut short
    scales = [s["name"] for s in record["scales"]]
    print(f"\npaired delta bpb vs uniform, 95% CI ({record['wall_s'] / 60:.1f} min of training, "
          f"device {record['device']})")
    print(f"{'taper':<26}" + "".join(f"{s:>24}" for s in scales))
    for t in labels:
        cells = []
        for s in scales:
            p = paired_stats(deltas[s][t])
            ci = f"[{p.ci95[0]:+.3f},{p.ci95[1]:+.3f}]" if p.ci95 else ""
            cells.append(f"{p.mean:+.4f} {ci}")
        print(f"{t:<26}" + "".join(f"{c:>24}" for c in cells))
    print("\nfidelity (6 tapers, uniform included):")
    pairs = list(zip(scales, scales[1:])) + ([(scales[0], scales[-1])] if len(scales) > 2 else [])
    for a, b in pairs:
        print("  " + fidelity(a, deltas[a], b, deltas[b]).text)
    if len(scales) >= 3:
        strengths = {label: _strength(text) for label, text in record["tapers"].items()}
        points = [{"name": s["name"], "params": s["params"], "n_layers": s["n_layers"],
                   "tokens_per_param": s["tokens_per_param"], "deltas": {"uniform": [0.0] * len(deltas[s["name"]][labels[0]]),
                                                                         **deltas[s["name"]]}}
                  for s in record["scales"]]
        print("\nheld-out scale: " + held_out(points, strengths)["text"])


def _strength(text: str) -> float | None:
    from autotaper.taper import Taper

    t = Taper.parse(text).get("ffn")
    if t.curve == "step":
        return None  # not on the shrink/grow axis
    return (t.start - t.end) / 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scales", default="w64=proxy-xs:d_model=64:ffn_width=256,proxy-xs",
                    help="NAME=PRESET[:FIELD=VALUE...] or PRESET, comma-separated, smallest first")
    ap.add_argument("--tokens-per-param", type=float, default=0.1)
    ap.add_argument("--min-steps", type=int, default=60)
    ap.add_argument("--max-steps", type=int, default=2000)
    ap.add_argument("--anchor-steps", type=int, default=120, help="unused when --tokens-per-param is given")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1.5e-3, help="LR at the first scale's width; 1/width beyond")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=1, help="processes at once (GPU: 8-12 share one device)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--out", default="runs/bench/proxy_fidelity.json")
    ap.add_argument("--from", dest="source", action="append",
                    help="re-analyse saved --out files (several: their scales side by side, in the order given)")
    args = ap.parse_args()
    if args.source:
        parts = [json.loads(open(p).read()) for p in args.source]
        measured = lambda p, s: any(r["scale"] == s["name"] for r in p["results"])  # noqa: E731
        record = {**parts[0], "scales": [s for p in parts for s in p["scales"] if measured(p, s)],
                  "results": [r for p in parts for r in p["results"]], "wall_s": sum(p["wall_s"] for p in parts)}
    else:
        record = measure(args)
        print(f"per-seed results written to {args.out}")
    analyse(record)


if __name__ == "__main__":
    main()
