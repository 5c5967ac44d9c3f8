"""A population: K runs trained in lockstep in one process, batched per layer.

Members are (spec, seed) pairs: seeds of one spec, candidates of one family and depth that
differ in their MLP widths or attention heads, or both (candidates x seeds, the paired design).
Each has its own initial weights (`build_model(spec, seed=...)`, as a single run), its own
batches (`sample_batch(..., seed=...)`), its own gradient clipping, divergence check and
evaluation.

Members of different widths are padded to each layer's widest member. The padded units' weights
start at zero, so they add nothing to the forward pass (a padded MLP unit's down column is zero;
a padded head's query, key and value rows are zero, so it attends uniformly to zero values, and
its output columns are zero), receive exactly zero gradient, and Adam leaves them at zero; the
gradients are also masked, so this holds whatever the family. A padded query head must fall in
a padded KV head's group, so members agree on query heads per KV head; and each population
checks once, on a probe sequence, that every member's padded forward pass equals its own
model's, so a family whose layout is not a prefix (GPT's fused QKV projection, for heads) is
refused and trains apart.

The weights are stacked along a leading population dimension and the forward pass runs once
for all members (`torch.func.vmap` over `functional_call`), so every matmul is one batched
matmul of K members instead of K small ones. One AdamW holds the stacked weights: its update is
elementwise, so each member's slice moves exactly as that member's own optimizer would move it
(the same parameter groups, learning-rate schedule, epsilon and weight decay of the spec's
parametrization).

What differs from K single runs is float rounding only: a batched matmul may sum in another
order than a single one. `tests/test_population.py` states the tolerance and checks it. A member
that diverges stops: its result is recorded at the step it went bad, its loss no longer enters
the backward pass, and the other members train on unchanged.

Not built yet: members that differ in residual width (padding the stream is not exact: the
norms would average over padded channels) and width-aware parametrizations whose per-layer
multipliers differ between members (one optimizer group per layer cannot hold them); those
train one at a time.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from autotaper.cost import count
from autotaper.data import TokenData, sample_batch
from autotaper.data.tokens import val_windows
from autotaper.errors import InputError
from autotaper.models import build_model
from autotaper.spec import ModelSpec
from autotaper.train.checkpoint import (
    atomic_write_text,
    latest_checkpoint,
    load_checkpoint,
    read_state,
    save_checkpoint,
)
from autotaper.train.config import TrainConfig
from autotaper.train.evaluation import autocast_context, evaluate
from autotaper.train.trainer import (
    TrainResult,
    _corpus_summary,
    _differs,
    _finished_result,
    _Log,
    _optimizer,
    _write_run_files,
    resolve_device,
    resolve_precision,
)

# The TrainConfig fields members may differ in; every other field is the population's.
PER_MEMBER = ("seed",)
MAX_MEMBERS = 256


# The ModelSpec fields members may differ in (with the taper text that made them): MLP widths
# and attention heads, padded to each layer's widest member.
PER_MEMBER_SPEC = ("taper", "layer_ffn", "layer_heads", "layer_kv_heads")


def check_population(configs: Sequence[TrainConfig], specs: Sequence[ModelSpec] | None = None) -> None:
    """Refuse a population its members cannot share: none, too many, a member repeated (the
    same spec and seed), configs that differ in anything but their seed, or specs that differ
    in anything but their MLP widths."""
    if not configs:
        raise InputError("population: needs at least one member")
    if len(configs) > MAX_MEMBERS:
        raise InputError(f"population: {len(configs)} members, over the {MAX_MEMBERS} one process trains")
    specs = list(specs) if specs is not None else None
    if specs is not None and len(specs) != len(configs):
        raise InputError(f"population: {len(specs)} specs for {len(configs)} configs (one each, or one spec)")
    keys = [(s.to_json() if specs is not None else None, c.seed) for s, c in zip(specs or [None] * len(configs),
                                                                                 configs)]
    if len(set(keys)) != len(keys):
        raise InputError(f"population: a member repeats a spec and seed (seeds {[c.seed for c in configs]})")
    if specs is not None:
        shared = {k: v for k, v in specs[0].to_dict().items() if k not in PER_MEMBER_SPEC}
        for i, spec in enumerate(specs[1:], 1):
            other = {k: v for k, v in spec.to_dict().items() if k not in PER_MEMBER_SPEC}
            for key in shared:
                if other.get(key) != shared[key]:
                    raise InputError(f"population: member {i} spec {key} {other.get(key)!r} differs from member "
                                     f"0's {shared[key]!r} (members' specs may differ only in their MLP widths "
                                     f"and heads)")
            for layer, (h, kv, h0, kv0) in enumerate(zip(spec.layer_heads, spec.layer_kv_heads,
                                                         specs[0].layer_heads, specs[0].layer_kv_heads)):
                if h * kv0 != h0 * kv:  # a padded query head must fall in a padded KV head's group
                    raise InputError(f"population: member {i} layer {layer} has {h} heads per {kv} KV heads, member "
                                     f"0 {h0} per {kv0} (members' query heads per KV head must agree)")
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


AUTO_MAX = 16  # members `auto` puts in one population on a GPU, at most


def auto_size(spec: ModelSpec, batch_size: int, *, precision: str = "auto", device: str = "auto") -> int:
    """The population size `population: auto` trains: on CUDA, as many members as fit 90% of
    the GPU's memory by the training-memory estimate (each member's weights, gradients, AdamW
    state and activations; one CUDA context for all), at most AUTO_MAX; on a CPU 1, since one
    proxy-xs run already keeps 2 cores busy (benchmarks/RESULTS.md, Populations)."""
    from autotaper.memory import CUDA_CONTEXT_BYTES, available_bytes, training_bytes

    dev = resolve_device(device)
    if dev.type != "cuda":
        return 1
    per_member = training_bytes(spec, batch_size, "fp32" if precision == "fp32" else "bf16") - CUDA_CONTEXT_BYTES  # cuda only
    room = 0.9 * available_bytes(str(dev)) - CUDA_CONTEXT_BYTES  # cuda only
    return max(1, min(AUTO_MAX, int(room // per_member)))  # cuda only


def _check_fits(template: ModelSpec, K: int, batch_size: int, precision: str, device) -> None:
    """Refuse a population whose K padded members' training memory (one CUDA context) exceeds
    the device's, by the estimate single runs are checked with (`memory.check_fits`)."""
    from autotaper.memory import CUDA_CONTEXT_BYTES, available_bytes, training_bytes

    per_member = training_bytes(template, batch_size, "bf16" if precision == "bf16" else "fp32") - CUDA_CONTEXT_BYTES
    need = K * per_member + (CUDA_CONTEXT_BYTES if device.type == "cuda" else 0)
    have = available_bytes(str(device))
    if have is not None and need > have:
        raise InputError(f"population: {K} members of {template.n_layers} x {template.d_model} at batch {batch_size} "
                         f"need about {need / 2**30:,.1f} GiB; {device} has {have / 2**30:,.1f} GiB (fewer members)")


def padding_waste(specs: Sequence[ModelSpec]) -> float:
    """The share of a population's weights that is padding: 1 - the members' parameters over
    K times the padded template's (0 for members of one shape)."""
    from autotaper.cost import count

    specs = list(specs)
    template = _template(specs)
    return 1.0 - sum(count(s).params for s in specs) / (len(specs) * count(template).params)


def group_by_width(specs: Sequence[ModelSpec], size: int) -> list[list[int]]:
    """Indices of `specs` in populations of at most `size`, greedily: sorted by total MLP width
    and cut in order, so members of a population have similar widths and pad little."""
    if size < 1:
        raise InputError(f"population size must be >= 1, got {size!r}")
    order = sorted(range(len(specs)), key=lambda i: (sum(specs[i].layer_heads), specs[i].layer_heads,
                                                     sum(specs[i].layer_ffn), specs[i].layer_ffn))
    return [order[i:i + size] for i in range(0, len(order), size)]


def _template(specs: Sequence[ModelSpec]) -> ModelSpec:
    """The spec every member fits in: each layer's widest MLP and most heads."""
    import dataclasses

    def widest(field):
        return tuple(max(widths) for widths in zip(*(getattr(s, field) for s in specs)))

    return dataclasses.replace(specs[0], taper="population", layer_ffn=widest("layer_ffn"),
                               layer_heads=widest("layer_heads"), layer_kv_heads=widest("layer_kv_heads"))


def _check_layout(template, params, buffers, members, tspec: ModelSpec) -> None:
    """Refuse padding a family does not lay out as a prefix: each member's own forward pass on
    one probe sequence must equal the padded template's (e.g. a fused QKV projection puts a
    member's K rows where the template's Q rows are, so padding its heads is not exact)."""
    from torch.func import functional_call, vmap

    T = tspec.context_length
    probe = (torch.arange(T, device=next(iter(params.values())).device) * 7919 % tspec.vocab_size).view(1, T)
    with torch.no_grad():
        padded = vmap(lambda p, b: functional_call(template, (p, b), (probe,)))(
            {n: p.detach() for n, p in params.items()}, buffers)
        for k, m in enumerate(members):
            own = m(probe)
            gap = float((padded[k] - own).abs().max())
            if not gap <= 1e-4 * (1 + float(own.abs().max())):
                raise InputError(f"population: family {tspec.family!r} does not pad member {k}'s widths exactly "
                                 f"(its logits differ by {gap:.3g} from its own model's): train these apart")


def train_population(spec: ModelSpec | Sequence[ModelSpec], data: TokenData,
                     configs: Sequence[TrainConfig], *, out_dirs: Sequence[str | Path | None] | None = None,
                     inspect: dict | None = None) -> list[TrainResult]:
    """Train one run per member, all at once: `spec` is one spec for every member or one per
    member (differing only in MLP widths and heads), and `configs` one per member (differing
    only in seed). One `TrainResult` per member, in order, as `train` returns for a single run
    (no callbacks).

    `out_dirs`, one per member (None: keep nothing): each member's run folder, written as
    `train(out_dir=...)` writes it (spec, config, metrics, checkpoints every
    `config.checkpoint_every` steps and at the end, summary), so `load_run`, `export` and a single
    `train` read it as their own. A folder holding a checkpoint of the same run resumes it, from
    a single run's checkpoint too; a finished one returns its stored result untrained. Members
    resuming must stand at the same step (they train in lockstep). `inspect`, a dict, receives the
    stacked weights ("params") and the padding masks ("masks", 1 where a member's own weights
    are) as they end."""
    configs = list(configs)
    specs = [spec] * len(configs) if isinstance(spec, ModelSpec) else list(spec)
    check_population(configs, specs)
    dirs = [Path(d) if d else None for d in (out_dirs if out_dirs is not None else [None] * len(configs))]
    if len(dirs) != len(configs):
        raise InputError(f"population: {len(dirs)} out_dirs for {len(configs)} members (one each, None for none)")
    if len({d.resolve() for d in dirs if d}) != sum(d is not None for d in dirs):
        raise InputError("population: two members share an out_dir (one run folder each)")
    data.check(vocab_size=specs[0].vocab_size, context_length=specs[0].context_length)
    finished: dict[int, TrainResult] = {}
    resume: dict[int, tuple[Path, dict]] = {}  # member -> its checkpoint and state
    for k, d in enumerate(dirs):
        ckpt = latest_checkpoint(d) if d else None
        if ckpt is None:
            continue
        state = read_state(ckpt)  # the run's identity is checked before a byte of its weights is read
        if state.get("identity") != _identity(specs[k], configs[k], data):
            raise InputError(f"population: out_dir {str(d)!r} holds a checkpoint of a different run "
                             f"({_differs(state.get('identity'), _identity(specs[k], configs[k], data))})")
        done = _finished_result(d, state, configs[k])
        if done is not None:
            finished[k] = done
        else:
            resume[k] = (ckpt, state)
    todo = [k for k in range(len(configs)) if k not in finished]
    if todo:
        starts = sorted({resume[k][1]["step"] if k in resume else 0 for k in todo})
        if len(starts) > 1:
            raise InputError(f"population: members' checkpoints stand at steps {starts}; members train in lockstep, "
                             f"so resume these apart")
        trained = _train([specs[k] for k in todo], data, [configs[k] for k in todo], [dirs[k] for k in todo],
                         [resume.get(k) for k in todo], inspect)
        finished.update(zip(todo, trained))
    return [finished[k] for k in range(len(configs))]


def _identity(spec: ModelSpec, config: TrainConfig, data: TokenData) -> dict:
    """What a run's checkpoint records to be resumed only as itself (as `train` records it)."""
    return {"spec": spec.to_dict(), "config": config.to_dict(), "corpus": data.manifest.get("content_sha256")}


def _train(specs: list[ModelSpec], data: TokenData, configs: list[TrainConfig], dirs: list[Path | None],
           resume: list[tuple[Path, dict] | None], inspect: dict | None) -> list[TrainResult]:
    from torch.func import functional_call, vmap

    from autotaper.families import get_family
    from autotaper.models.rules import rules

    config = configs[0]
    K = len(configs)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    T, B = specs[0].context_length, config.batch_size

    _check_fits(_template(specs), K, B, precision, device)  # before a byte of any member is allocated
    members = [build_model(s, seed=c.seed).to(device) for s, c in zip(specs, configs)]
    multipliers = [{n: (r.lr, r.eps, r.weight_decay) for n, r in rules(m, s).items()} for m, s in zip(members, specs)]
    for i, found in enumerate(multipliers[1:], 1):
        if found != multipliers[0]:
            raise InputError(f"population: member {i}'s {specs[i].parametrization} multipliers differ from member "
                             f"0's (widths set them): train these apart")
    own_optimizers: list = [None] * K  # a resumed member's optimizer state, as its single run keeps it
    start, train_time = 0, 0.0
    fingerprints = [hashlib.sha256(b"autotaper").hexdigest() for _ in configs]
    histories: list[list[dict]] = [[] for _ in configs]
    for k, found in enumerate(resume):
        if found is not None:
            own_optimizers[k] = _optimizer(members[k], config, device, specs[k])
            state = load_checkpoint(found[0], model=members[k], optimizer=own_optimizers[k], device=device)
            start, fingerprints[k], histories[k] = state["step"], state["fingerprint"], state["history"]
            train_time = max(train_time, state["train_time_s"])
    tspec = _template(specs)
    with torch.device("meta"):
        template = get_family(tspec.family).build(tspec)
    shapes = {n: p.shape for n, p in template.named_parameters()}
    params, masks = {}, {}
    for name, shape in shapes.items():
        stack = torch.zeros((K, *shape), device=device)
        mask = torch.zeros((K, *shape), device=device)
        for k, m in enumerate(members):
            own = m.get_parameter(name)
            region = (k, *(slice(0, n) for n in own.shape))
            stack[region] = own.detach()
            mask[region] = 1
        params[name] = torch.nn.Parameter(stack)
        if not bool(mask.all()):
            masks[name] = mask
    buffers = {n: torch.stack([m.get_buffer(n) for m in members]) for n, _ in template.named_buffers()}
    if masks:
        _check_layout(template, params, buffers, members, tspec)
    optimizer = _optimizer(members[0], config, device, specs[0], stacked=params)  # grouped as one member's
    if any(o is not None for o in own_optimizers):
        _stack_optimizer_state(optimizer, params, members, own_optimizers)
    for d, s, c in zip(dirs, specs, configs):
        if d:
            _write_run_files(d, s, c, data)
    logs = [_Log(d, start, True) if d else None for d in dirs]

    def region(k: int, p: torch.Tensor) -> tuple:
        return (k, *(slice(0, n) for n in p.shape))

    def checkpoint(step: int) -> None:
        """Each member with a run folder: its weights and optimizer state cut out of the stacks
        and saved as its single run's checkpoint."""
        for k, d in enumerate(dirs):
            if d is None or not alive[k]:
                continue
            single = _optimizer(members[k], config, device, specs[k])
            with torch.no_grad():
                for name, p in members[k].named_parameters():
                    p.copy_(params[name][region(k, p)])
                    found = optimizer.state.get(params[name])
                    if found:
                        single.state[p] = {key: (v.clone() if key == "step" else v[region(k, p)].clone())
                                           for key, v in found.items()}
            save_checkpoint(d, step=step, model=members[k], optimizer=single,
                            state={"identity": _identity(specs[k], configs[k], data), "fingerprint": fingerprints[k],
                                   "history": histories[k], "train_time_s": train_time})

    def forward(p, b, x):
        return functional_call(template, (p, b), (x,))

    batched = vmap(forward, in_dims=(0, 0, 0))
    limit = config.diverge_loss or 2 * math.log(specs[0].vocab_size)
    windows = val_windows(data.val, n=config.eval_batches * B, context_length=T)
    alive = torch.ones(K, dtype=torch.bool)
    ended: list[dict | None] = [None] * K  # a diverged member's status, reason and step
    last_loss = [None] * K

    def run_eval(step: int) -> None:
        with torch.no_grad():
            for k in range(K):
                if not alive[k]:
                    continue
                for name, p in members[k].named_parameters():
                    p.copy_(params[name][(k, *(slice(0, n) for n in p.shape))])
                row = {"step": step, **evaluate(members[k], windows, token_bytes=data.token_bytes, batch_size=B,
                                                precision=precision, device=device)}
                histories[k].append(row)
                if logs[k]:
                    logs[k].write(row)

    session_time = 0.0  # this call's training time (train_time goes on from a checkpoint's)
    for step in range(start, config.steps):
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
        for name, mask in masks.items():  # padding gets no gradient, whatever the family
            params[name].grad.mul_(mask)
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
        session_time += time.perf_counter() - t0
        done = step + 1
        for k in range(K):
            if alive[k]:
                last_loss[k] = float(losses[k].detach())
        if done % config.eval_interval == 0 or done == config.steps:
            run_eval(done)
        if config.checkpoint_every and done % config.checkpoint_every == 0 and done != config.steps:
            checkpoint(done)
    checkpoint(config.steps)  # the finished members (a diverged one keeps no checkpoint, as a single run)

    if inspect is not None:
        inspect.update(params={n: p.detach() for n, p in params.items()}, masks=masks)
    results = []
    for k, c in enumerate(configs):
        cost = count(specs[k])
        end = ended[k]
        steps = end["step"] if end else config.steps
        final = ({"val_loss": float("nan"), "val_ppl": float("nan"), "val_bpb": None} if end
                 else histories[k][-1])
        tokens = steps * B * T
        tok_s = (steps - start) * B * T / session_time if session_time > 0 else 0.0
        result = TrainResult(
            status=end["status"] if end else "complete", reason=end["reason"] if end else None, steps=steps,
            val_loss=final["val_loss"], val_ppl=final["val_ppl"], val_bpb=final["val_bpb"],
            train_loss=end["loss"] if end else last_loss[k], tokens=tokens, tokens_per_s=tok_s,
            train_time_s=train_time, data_fingerprint=fingerprints[k][:32], precision=precision,
            device=str(device), world_size=1, params=cost.params, flops_per_token=cost.flops_per_token,
            achieved_flops_per_s=3 * cost.flops_per_token * tok_s, resumed_from=start if resume[k] else None,
            parametrization=specs[k].parametrization, run_dir=str(dirs[k]) if dirs[k] else None,
            corpus=_corpus_summary(data), history=histories[k])
        if dirs[k]:
            atomic_write_text(dirs[k] / "summary.json", json.dumps(result.to_dict(), indent=1))
        results.append(result)
    return results


def _stack_optimizer_state(optimizer, params: dict, members: list, own: list) -> None:
    """Resumed members' AdamW state (moments and step) placed in the stacked optimizer's, each
    in its member's slice; members that start afresh keep zero moments, as a new run's."""
    by_param = {id(p): name for name, p in params.items()}
    for group in optimizer.param_groups:
        for stacked in group["params"]:
            name = by_param[id(stacked)]
            state = {}
            for k, m in enumerate(members):
                if own[k] is None:
                    continue
                p = m.get_parameter(name)
                found = own[k].state.get(p)
                if not found:
                    continue
                for key, value in found.items():
                    if key == "step":
                        state["step"] = value.clone()
                    else:
                        state.setdefault(key, torch.zeros_like(stacked))[(k, *(slice(0, n) for n in p.shape))] = value
            if state:
                optimizer.state[stacked] = state


__all__ = ["AUTO_MAX", "PER_MEMBER", "PER_MEMBER_SPEC", "auto_size", "check_population", "group_by_width",
           "padding_waste", "train_population"]
