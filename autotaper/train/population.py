"""A population: K runs of one spec trained in lockstep in one process, batched per layer.

The K members differ only in their seed: each has its own initial weights (`build_model(spec,
seed=...)`, as a single run), its own batches (`sample_batch(..., seed=...)`), its own
gradient clipping, divergence check and evaluation. Their weights are stacked along a leading
population dimension (`torch.func.stack_module_state`) and the forward pass runs once for all of
them (`torch.func.vmap` over `functional_call`), so every matmul is one batched matmul of K
members instead of K small ones. One AdamW holds the stacked weights: its update is elementwise,
so each member's slice moves exactly as that member's own optimizer would move it (the same
parameter groups, learning-rate schedule, epsilon and weight decay of the spec's
parametrization).

What differs from K single runs is float rounding only: a batched matmul may sum in another
order than a single one. `tests/test_population.py` states the tolerance and checks it. A member
that diverges stops: its result is recorded at the step it went bad, its loss no longer enters
the backward pass, and the other members train on unchanged.

Equal shapes only, so far: members of different widths (padding to the widest, masked) are not
built yet, nor is a search or ladder scheduling populations.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from autotaper.cost import count
from autotaper.data import TokenData, sample_batch
from autotaper.data.tokens import val_windows
from autotaper.errors import InputError
from autotaper.models import build_model
from autotaper.spec import ModelSpec
from autotaper.train.config import TrainConfig
from autotaper.train.evaluation import autocast_context, evaluate
from autotaper.train.trainer import TrainResult, _corpus_summary, _optimizer, resolve_device, resolve_precision

# The TrainConfig fields members may differ in; every other field is the population's.
PER_MEMBER = ("seed",)
MAX_MEMBERS = 256


def check_population(configs: Sequence[TrainConfig]) -> None:
    """Refuse a population its members cannot share: none, too many, a repeated seed, or
    members that differ in anything but their seed."""
    if not configs:
        raise InputError("population: needs at least one member")
    if len(configs) > MAX_MEMBERS:
        raise InputError(f"population: {len(configs)} members, over the {MAX_MEMBERS} one process trains")
    seeds = [c.seed for c in configs]
    if len(set(seeds)) != len(seeds):
        raise InputError(f"population: seeds must differ, got {seeds}")
    first = {k: v for k, v in configs[0].to_dict().items() if k not in PER_MEMBER}
    for i, c in enumerate(configs[1:], 1):
        other = {k: v for k, v in c.to_dict().items() if k not in PER_MEMBER}
        for key in first:
            if other[key] != first[key]:
                raise InputError(f"population: member {i} {key} {other[key]!r} differs from member 0's "
                                 f"{first[key]!r} (members may differ only in {', '.join(PER_MEMBER)})")
    if configs[0].grad_accum != 1:
        raise InputError(f"population: grad_accum {configs[0].grad_accum} is not supported (use 1)")
    if configs[0].compile:
        raise InputError("population: compile is not supported yet")


def _clip_per_member(grads: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Each member's gradient clipped by its own global norm, as `clip_grad_norm_` clips a single
    run's; returns the K norms."""
    sq = sum(g.detach().float().pow(2).flatten(1).sum(1) for g in grads)
    norms = sq.sqrt()
    if math.isfinite(max_norm):
        coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.to(g.dtype).view(-1, *([1] * (g.ndim - 1))))
    return norms


def train_population(spec: ModelSpec, data: TokenData, configs: Sequence[TrainConfig]) -> list[TrainResult]:
    """Train one run of `spec` per config (configs differ only in seed), all at once; one
    `TrainResult` per member, in order, as `train` returns for a single run (no checkpoints,
    no callbacks)."""
    from torch.func import functional_call, stack_module_state, vmap

    configs = list(configs)
    check_population(configs)
    config = configs[0]
    K = len(configs)
    data.check(vocab_size=spec.vocab_size, context_length=spec.context_length)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    T, B = spec.context_length, config.batch_size

    members = [build_model(spec, seed=c.seed).to(device) for c in configs]
    params, buffers = stack_module_state(members)
    template = copy.deepcopy(members[0]).to("meta")
    params = {name: torch.nn.Parameter(t) for name, t in params.items()}
    optimizer = _optimizer(members[0], config, device, spec, stacked=params)  # grouped as one member's

    def forward(p, b, x):
        return functional_call(template, (p, b), (x,))

    batched = vmap(forward, in_dims=(0, 0, 0))
    limit = config.diverge_loss or 2 * math.log(spec.vocab_size)
    windows = val_windows(data.val, n=config.eval_batches * B, context_length=T)
    alive = torch.ones(K, dtype=torch.bool)
    fingerprints = [hashlib.sha256(b"autotaper").hexdigest() for _ in configs]
    histories: list[list[dict]] = [[] for _ in configs]
    ended: list[dict | None] = [None] * K  # a diverged member's status, reason and step
    last_loss = [None] * K

    def run_eval(step: int) -> None:
        with torch.no_grad():
            for k in range(K):
                if not alive[k]:
                    continue
                for name, p in members[k].named_parameters():
                    p.copy_(params[name][k])
                row = {"step": step, **evaluate(members[k], windows, token_bytes=data.token_bytes, batch_size=B,
                                                precision=precision, device=device)}
                histories[k].append(row)

    train_time = 0.0
    for step in range(config.steps):
        batches = [sample_batch(data.train, seed=c.seed, step=step, batch_size=B, context_length=T) for c in configs]
        for k, batch in enumerate(batches):
            fingerprints[k] = hashlib.sha256(bytes.fromhex(fingerprints[k]) + batch.tobytes()).hexdigest()
        t0 = time.perf_counter()
        chunk = torch.from_numpy(np.stack(batches)).to(device)  # (K, B, T + 1)
        lr = config.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        with autocast_context(device, precision):
            logits = batched(params, buffers, chunk[:, :, :-1])  # (K, B, T, V)
        losses = F.cross_entropy(logits.float().flatten(1, 2).transpose(1, 2), chunk[:, :, 1:].flatten(1),
                                 reduction="none").mean(1)  # (K,)
        torch.where(alive, losses, torch.zeros_like(losses)).sum().backward()
        grads = [p.grad for p in params.values()]
        norms = _clip_per_member(grads, config.grad_clip or float("inf"))
        bad = (~torch.isfinite(losses.detach()) | ~torch.isfinite(norms) | (losses.detach() > limit)) & alive
        for k in torch.nonzero(bad).flatten().tolist():
            worst = float(losses[k].detach())
            reason = (f"loss {worst:.4g} at step {step}" if math.isfinite(worst) and worst > limit
                      else f"non-finite loss or gradient at step {step}")
            ended[k] = {"status": "diverged", "reason": reason, "step": step, "loss": worst}
            alive[k] = False
            for g in grads:  # the member's update stops here: no step from a bad gradient
                g[k] = 0
        if not bool(alive.any()):
            optimizer.zero_grad(set_to_none=True)
            break
        before = {name: p[~alive].detach().clone() for name, p in params.items()} if not bool(alive.all()) else None
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if before is not None:  # a stopped member keeps its weights (AdamW would still decay them)
            with torch.no_grad():
                for name, p in params.items():
                    p[~alive] = before[name]
        train_time += time.perf_counter() - t0
        done = step + 1
        for k in range(K):
            if alive[k]:
                last_loss[k] = float(losses[k].detach())
        if done % config.eval_interval == 0 or done == config.steps:
            run_eval(done)

    cost = count(spec)
    results = []
    for k, c in enumerate(configs):
        end = ended[k]
        steps = end["step"] if end else config.steps
        final = ({"val_loss": float("nan"), "val_ppl": float("nan"), "val_bpb": None} if end
                 else histories[k][-1])
        tokens = steps * B * T
        results.append(TrainResult(
            status=end["status"] if end else "complete", reason=end["reason"] if end else None, steps=steps,
            val_loss=final["val_loss"], val_ppl=final["val_ppl"], val_bpb=final["val_bpb"],
            train_loss=end["loss"] if end else last_loss[k], tokens=tokens,
            tokens_per_s=tokens / train_time if train_time > 0 else 0.0, train_time_s=train_time,
            data_fingerprint=fingerprints[k][:32], precision=precision, device=str(device), world_size=1,
            params=cost.params, flops_per_token=cost.flops_per_token,
            achieved_flops_per_s=(3 * cost.flops_per_token * tokens / train_time if train_time > 0 else 0.0),
            parametrization=spec.parametrization, corpus=_corpus_summary(data), history=histories[k]))
    return results


__all__ = ["PER_MEMBER", "check_population", "train_population"]
