"""Noise of the proxy recipe: the SD of paired deltas (taper minus uniform) per recipe.

For each recipe (learning rate, schedule) it trains uniform and the paper's cosine 1.5 -> 0.5
on the same seeds with the trainer's own pieces, and scores every run four ways at once:
raw or EMA weights, the default small validation set or a larger one. Printed per recipe:
the per-seed SD of uniform, the SD of the paired deltas, their mean, and the ratio of each
delta SD to today's (the first recipe, raw weights, small validation set), measured in this run.
Recipes that train the same steps x batch cost the same wall time (training time printed
per run); the last two spend half of it, to weigh steps against seeds.

    python benchmarks/proxy_noise.py --preset proxy-xs --steps 120 --seeds 4
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from autotaper.budget import solve
from autotaper.data import load_data
from autotaper.data.tokens import sample_batch, val_windows
from autotaper.models import build_model
from autotaper.spec import ModelSpec
from autotaper.train import TrainConfig
from autotaper.train.evaluation import evaluate

RECIPES = {  # name: TrainConfig overrides; the first is the reference (today's quickstart)
    "lr3e-3 cosine": {"lr": 3e-3, "schedule": "cosine"},
    "lr1.5e-3 cosine": {"lr": 1.5e-3, "schedule": "cosine"},
    "lr1e-3 cosine": {"lr": 1e-3, "schedule": "cosine"},
    "lr1.5e-3 wsd": {"lr": 1.5e-3, "schedule": "wsd"},
    # half the compute per run, two ways: fewer steps, or smaller batches
    "lr1.5e-3 cosine 60 steps": {"lr": 1.5e-3, "schedule": "cosine", "steps": 60},
    "lr1.5e-3 cosine batch 8": {"lr": 1.5e-3, "schedule": "cosine", "batch_size": 8},
}


def run(spec, data, config: TrainConfig, small, large, ema_decay: float) -> dict:
    torch.manual_seed(config.seed)
    model = build_model(spec, seed=config.seed)
    ema = copy.deepcopy(model)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=config.lr, betas=(config.beta1, config.beta2))
    T, B = spec.context_length, config.batch_size
    t0 = time.perf_counter()
    for step in range(config.steps):
        batch = torch.from_numpy(sample_batch(data.train, seed=config.seed, step=step, batch_size=B, context_length=T))
        for g in opt.param_groups:
            g["lr"] = config.lr_at(step)
        loss = F.cross_entropy(model(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - ema_decay)
    train_s = time.perf_counter() - t0
    out = {"train_s": train_s}
    for wname, m in (("raw", model), ("ema", ema)):
        for vname, windows in (("small", small), ("large", large)):
            t1 = time.perf_counter()
            out[f"{wname}/{vname}"] = evaluate(m, windows, token_bytes=data.token_bytes, batch_size=B)["val_bpb"]
            out[f"eval_s/{vname}"] = time.perf_counter() - t1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="proxy-xs")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--ema", type=float, default=0.95, help="EMA decay per step")
    ap.add_argument("--large-windows", type=int, default=1024)
    ap.add_argument("--recipes", default=",".join(RECIPES))
    args = ap.parse_args()
    data = load_data()
    base = ModelSpec.from_name(args.preset, vocab_size=data.vocab_size)
    taper = solve(base, "ffn:cosine:1.5:0.5")
    T = base.context_length
    small = val_windows(data.val, n=8 * args.batch_size, context_length=T)  # the trainer's default
    large = val_windows(data.val, n=args.large_windows, context_length=T)
    print(f"{args.preset}, {args.steps} steps x {args.batch_size} x {T}, {args.seeds} paired seeds, fp32; "
          f"val small {len(small) * T:,} tokens, large {len(large) * T:,} tokens; EMA decay {args.ema}")
    ref_sd: float | None = None  # today's recipe: the first one, raw weights, small validation set
    for name in args.recipes.split(","):
        results = {"uniform": [], "taper": []}
        for seed in range(args.seeds):
            config = TrainConfig(**{"steps": args.steps, "batch_size": args.batch_size, "seed": seed, **RECIPES[name]})
            for label, spec in (("uniform", base), ("taper", taper)):
                results[label].append(run(spec, data, config, small, large, args.ema))
        secs = statistics.mean(r["train_s"] for r in results["uniform"] + results["taper"])
        ev = {v: statistics.mean(r[f"eval_s/{v}"] for r in results["uniform"]) for v in ("small", "large")}
        print(f"\n{name}: {secs:.1f} s training per run; eval small {ev['small']:.2f} s, large {ev['large']:.2f} s")
        for key in ("raw/small", "raw/large", "ema/small", "ema/large"):
            u = [r[key] for r in results["uniform"]]
            d = [t[key] - r[key] for t, r in zip(results["taper"], results["uniform"])]
            sd = statistics.stdev(d)
            ref_sd = ref_sd or sd
            print(f"  {key:<10} uniform {statistics.mean(u):.4f} (sd {statistics.stdev(u):.4f})  "
                  f"delta {statistics.mean(d):+.4f} sd {sd:.4f}  sd / today's {sd / ref_sd:.2f}  "
                  f"deltas {' '.join(f'{x:+.3f}' for x in d)}", flush=True)


if __name__ == "__main__":
    main()
