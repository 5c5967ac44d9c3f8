"""Trainer throughput, measured as ratios within one run (the machine is shared and noisy).

    python benchmarks/train_throughput.py [--preset proxy-xs] [--batch-size 16] [--steps 30]
                                          [--repeats 3] [--compile]

Prints:
1. autotaper's trainer vs a minimal plain-PyTorch loop on the same model and batches
   (goal >= 0.97 on CUDA): what the trainer's bookkeeping costs. Neither side syncs with
   the device inside a step: the plain loop reads its loss once, at the end;
2. a tapered model vs uniform at equal FLOPs (goal >= 0.97; with --compile, compiled
   tapered vs compiled uniform, goal >= 0.95): whether per-layer widths cost speed;
3. achieved training FLOP/s (3 x the analytic forward count) vs the best matmul FLOP/s this
   machine reaches in the same dtype, and on a known GPU vs its nominal dense peak (MFU).
With --compile every model is compiled per block (`autotaper.train.compile`) and the compile
time (the first step) is printed apart from tokens/s, which leave that step out.
Runs rotate their order and the median of `--repeats` is taken for each side.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from autotaper import ModelSpec, build_model, count, solve
from autotaper.data import load_data, sample_batch
from autotaper.train import TrainConfig, train
from autotaper.train.compile import compile_blocks
from autotaper.train.evaluation import autocast_context
from autotaper.train.trainer import resolve_device, resolve_precision

NOMINAL_BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense, FLOP/s


def plain_loop(spec, data, config, device, precision) -> float:
    """The least a training loop can do: returns tokens per second over the steps after the
    first (which warms up, and compiles with --compile)."""
    model = build_model(spec, seed=config.seed).to(device)
    if config.compile:
        compile_blocks(model)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(config.beta1, config.beta2),
                            weight_decay=config.weight_decay, **({"fused": True} if device.type == "cuda" else {}))
    T = spec.context_length
    batches = [torch.from_numpy(sample_batch(data.train, seed=config.seed, step=s, batch_size=config.batch_size,
                                             context_length=T)) for s in range(config.steps)]
    if device.type == "cuda":
        batches = [b.pin_memory() for b in batches]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    total = torch.zeros((), device=device)
    for step, batch in enumerate(batches):
        if step == 1:  # the first step warms up allocators and kernels (and compiles) in both loops
            sync()
            t0 = time.perf_counter()
        batch = batch.to(device, non_blocking=True)
        with autocast_context(device, precision):
            logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        total += loss.detach()
    float(total)  # one read at the end: the only sync
    return (config.steps - 1) * config.batch_size * T / (time.perf_counter() - t0)


COMPILE_S: dict[str, list[float]] = {}


def trainer_tokens_per_s(spec, data, config, label: str) -> float:
    r = train(spec, data, config, quiet=True)
    if r.compile_s is not None:
        COMPILE_S.setdefault(label, []).append(r.compile_s)
    return r.tokens_per_s


def matmul_peak(device, precision, sizes=(512, 1024, 2048)) -> float:
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    best = 0.0
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(3):
            a @ b
        sync()
        reps = max(3, int(2e10 / (2 * n**3))) if device.type == "cpu" else 50
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync()
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="proxy-xs")
    ap.add_argument("--taper", default="ffn:cosine:1.5:0.5")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--compile", action="store_true", help="compile every model per block")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    data = load_data()
    base = ModelSpec.from_name(args.preset)
    tapered = solve(base, args.taper)
    assert count(tapered).flops_per_token == count(base).flops_per_token
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, eval_every=args.steps, eval_batches=1,
                         precision=args.precision, device=args.device, compile=args.compile,
                         log_every=max(10, args.steps // 4))
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    # a warm-up run so neither side pays for first-use costs
    # (with --compile, the warm-up also compiles both models' block shapes once for the process)
    cold = {}
    for label, spec in (("uniform", base), ("tapered", tapered)):
        cold[label] = train(spec, data, TrainConfig(steps=3, batch_size=args.batch_size, eval_batches=1,
                                                    precision=precision, device=args.device, compile=args.compile),
                            quiet=True).compile_s
    runs = {"plain": lambda: plain_loop(base, data, config, device, precision),
            "ours": lambda: trainer_tokens_per_s(base, data, config, "uniform"),
            "taper": lambda: trainer_tokens_per_s(tapered, data, config, "tapered")}
    results = {name: [] for name in runs}
    order = list(runs)
    for i in range(args.repeats):  # rotate the order so no side always runs first or last
        for name in order[i % 3:] + order[: i % 3]:
            results[name].append(runs[name]())
    p, o, t = (statistics.median(results[k]) for k in ("plain", "ours", "taper"))
    peak = matmul_peak(device, precision)
    achieved = o * 3 * count(base).flops_per_token
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    mode = "compiled per block" if args.compile else "eager"
    print(f"device {name}, precision {precision}, preset {args.preset}, batch {args.batch_size}, "
          f"{args.steps} steps x {args.repeats}, {mode}")
    print(f"plain loop      {p:>12,.0f} tokens/s")
    print(f"autotaper       {o:>12,.0f} tokens/s   trainer / plain  = {o / p:.3f}  (goal >= 0.97 on CUDA)")
    goal = "0.95, compiled" if args.compile else "0.97"
    print(f"tapered         {t:>12,.0f} tokens/s   tapered / uniform = {t / o:.3f}  (goal >= {goal})  [{args.taper}]")
    if args.compile:
        print(f"compile, cold (first step of the first run): uniform {cold['uniform']:.1f} s, "
              f"tapered {cold['tapered']:.1f} s (its block shapes new to the process)")
    for label, times in COMPILE_S.items():  # measured runs: block shapes already compiled by the warm-up
        print(f"first step ({label}, compiled shapes cached): median {statistics.median(times):.2f} s")
    print(f"matmul peak     {peak / 1e9:>12,.1f} GFLOP/s ({precision})")
    print(f"trainer         {achieved / 1e9:>12,.1f} GFLOP/s   achieved / peak  = {achieved / peak:.3f}")
    nominal = next((v for k, v in NOMINAL_BF16_PEAK.items() if k in name), None)
    if nominal and precision == "bf16":
        print(f"MFU             {achieved / nominal:.3f} of {name}'s nominal {nominal / 1e12:.0f} TFLOP/s bf16 "
              f"(tapered {t * 3 * count(tapered).flops_per_token / nominal:.3f})")


if __name__ == "__main__":
    main()
