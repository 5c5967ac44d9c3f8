"""Trainer throughput, measured as ratios within one run (the machine is shared and noisy).

    python benchmarks/train_throughput.py [--preset proxy-xs] [--steps 30] [--repeats 3]

Prints:
1. autotaper's trainer vs a minimal plain-PyTorch loop on the same model and batches
   (goal >= 0.95): what the trainer's bookkeeping costs;
2. a tapered model vs uniform at equal FLOPs (goal >= 0.97): whether per-layer widths cost
   speed;
3. achieved training FLOP/s (3 x the analytic forward count) vs the best matmul FLOP/s this
   machine reaches in the same dtype: how far the trainer is from the hardware (MFU on CUDA).
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
from autotaper.train.evaluate import autocast_context
from autotaper.train.trainer import resolve_device, resolve_precision


def plain_loop(spec, data, config, device, precision) -> float:
    """The least a training loop can do: returns tokens per second."""
    model = build_model(spec, seed=config.seed).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(config.beta1, config.beta2),
                            weight_decay=config.weight_decay, **({"fused": True} if device.type == "cuda" else {}))
    T = spec.context_length
    batches = [torch.from_numpy(sample_batch(data.train, seed=config.seed, step=s, batch_size=config.batch_size,
                                             context_length=T)) for s in range(config.steps)]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    elapsed = 0.0
    for step, batch in enumerate(batches):
        t0 = time.perf_counter()
        batch = batch.to(device)
        with autocast_context(device, precision):
            logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        float(loss.detach())  # the trainer reads the loss every step too
        sync()
        if step:  # the first step warms up allocators and kernels in both loops
            elapsed += time.perf_counter() - t0
    return (config.steps - 1) * config.batch_size * T / elapsed


def trainer_tokens_per_s(spec, data, config) -> float:
    return train(spec, data, config, quiet=True).tokens_per_s


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
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    data = load_data()
    base = ModelSpec.from_name(args.preset)
    tapered = solve(base, args.taper)
    assert count(tapered).flops_per_token == count(base).flops_per_token
    config = TrainConfig(steps=args.steps, eval_every=args.steps, eval_batches=1, precision=args.precision,
                         device=args.device)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    # a warm-up run so neither side pays for first-use costs
    train(base, data, TrainConfig(steps=3, eval_batches=1, precision=precision, device=args.device), quiet=True)
    runs = {"plain": lambda: plain_loop(base, data, config, device, precision),
            "ours": lambda: trainer_tokens_per_s(base, data, config),
            "taper": lambda: trainer_tokens_per_s(tapered, data, config)}
    results = {name: [] for name in runs}
    order = list(runs)
    for i in range(args.repeats):  # rotate the order so no side always runs first or last
        for name in order[i % 3:] + order[: i % 3]:
            results[name].append(runs[name]())
    p, o, t = (statistics.median(results[k]) for k in ("plain", "ours", "taper"))
    peak = matmul_peak(device, precision)
    achieved = o * 3 * count(base).flops_per_token
    print(f"device {device}, precision {precision}, preset {args.preset}, {args.steps} steps x {args.repeats}")
    print(f"plain loop      {p:>12,.0f} tokens/s")
    print(f"autotaper       {o:>12,.0f} tokens/s   trainer / plain  = {o / p:.3f}  (goal >= 0.95)")
    print(f"tapered         {t:>12,.0f} tokens/s   tapered / uniform = {t / o:.3f}  (goal >= 0.97)  [{args.taper}]")
    print(f"matmul peak     {peak / 1e9:>12,.1f} GFLOP/s ({precision})")
    print(f"trainer         {achieved / 1e9:>12,.1f} GFLOP/s   achieved / peak  = {achieved / peak:.3f}")


if __name__ == "__main__":
    main()
