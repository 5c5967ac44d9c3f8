"""The proxy trainer: one loop for a laptop CPU, a GPU, torchrun DDP and Ray Train workers.

Fair by construction: batches depend on (seed, step) alone (`data.sample_batch`), each
weight's initial value on (seed, parameter name) alone (`models.init`), so two tapers
trained with one seed see the same tokens in the same order and start from the same
weights wherever their shapes agree. `data_fingerprint` hashes the batches consumed to
prove it. Under DDP every rank takes its slice of the same global batch, so the loss
curve matches one process at the same global batch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F

from autotaper.cost import count
from autotaper.data.tokens import TokenData, sample_batch, val_windows
from autotaper.errors import InputError
from autotaper.memory import check_fits
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


class Callback:
    """Hooks into a run. Returning True from a hook stops the run (status "stopped"),
    which is how a search prunes a hopeless trial."""

    def on_step(self, step: int, metrics: dict) -> bool | None:
        return None

    def on_eval(self, step: int, metrics: dict) -> bool | None:
        return None

    def on_end(self, result: "TrainResult") -> None:
        """After the run, whatever its status (on rank 0 and every other rank)."""


class TensorBoard(Callback):
    """Training metrics to TensorBoard (`autotaper train --tensorboard DIR`): loss, learning
    rate, gradient norm and tokens/s at log steps; validation loss, perplexity and bits per
    byte at evaluations. Needs the `tensorboard` package."""

    def __init__(self, log_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise InputError("--tensorboard needs the tensorboard package (pip install tensorboard)") from None
        self.writer = SummaryWriter(str(log_dir))

    def on_step(self, step, metrics):
        for key, value in metrics.items():
            self.writer.add_scalar(f"train/{key}", value, step)

    def on_eval(self, step, metrics):
        for key, value in metrics.items():
            if key != "step" and value is not None:
                self.writer.add_scalar(f"val/{key}", value, step)

    def on_end(self, result):
        self.writer.add_text("run", f"{result.status}: {result.steps} steps, val_bpb {result.val_bpb}")
        self.writer.close()


class _FunctionCallback(Callback):
    def __init__(self, fn: Callable[[int, dict], bool | None]):
        self.fn = fn

    def on_eval(self, step, metrics):
        return self.fn(step, metrics)


@dataclass
class TrainResult:
    status: str  # complete, diverged, stopped
    reason: str | None
    steps: int
    val_loss: float | None
    val_ppl: float | None
    val_bpb: float | None
    train_loss: float | None
    tokens: int
    tokens_per_s: float
    train_time_s: float
    data_fingerprint: str
    precision: str
    device: str
    world_size: int
    params: int
    flops_per_token: float
    achieved_flops_per_s: float
    compile_s: float | None = None  # the session's first step, compilation included (None: eager)
    parametrization: str = "sp"  # the spec's (autotaper.parametrization)
    resumed_from: int | None = None
    run_dir: str | None = None
    corpus: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None  # JSON has no NaN
        return out


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"device {name!r} is not a torch device") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"device {name!r}: this machine has no CUDA device (torch {torch.__version__}"
                             f"{', built without CUDA' if torch.version.cuda is None else ''}); use --device cpu")
        if device.index is not None and device.index >= count:
            raise InputError(f"device {name!r}: this machine has {count} CUDA device(s)")
    elif device.type not in ("cpu", "mps"):
        raise InputError(f"device {name!r}: autotaper trains on cpu or cuda")
    return device


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision != "auto":
        return precision
    if device.type == "cuda":  # cuda only
        return "bf16"
    # Measured on a 2-core avx512_bf16 CPU: bf16 autocast trains proxy-s 2.0x and proxy-m
    # 2.3x faster than fp32 (benchmarks/train_throughput.py); without native bf16 it is slower.
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


def _distributed() -> tuple[int, int, int]:
    """(world_size, rank, local_rank); starts the process group under torchrun if needed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        return dist.get_world_size(), dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0))
    return 1, 0, 0


def _optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device,
               spec: ModelSpec | None = None, *, stacked: dict[str, torch.Tensor] | None = None) -> torch.optim.AdamW:
    """AdamW with one group per distinct (LR, epsilon, weight decay) multiplier of the spec's
    parametrization and per-layer LR (`autotaper.parametrization.rules`); each group's
    `lr_scale` multiplies the schedule's LR at every step. Matrices decay, vectors do not.
    `stacked`: a population's weights by name (`autotaper.train.population`), grouped as the
    member `model`'s are."""
    from autotaper.models.rules import rules

    spec = spec if spec is not None else getattr(model, "spec", None)
    found = rules(model, spec) if spec is not None else {}
    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        r = found.get(name)
        lr_scale, eps_scale, wd_scale = (r.lr, r.eps, r.weight_decay) if r else (1.0, 1.0, 1.0)
        wd = config.weight_decay * wd_scale if p.ndim >= 2 else 0.0
        key = (lr_scale, eps_scale, wd)
        group = groups.setdefault(key, {"params": [], "lr_scale": lr_scale, "eps": config.eps * eps_scale,
                                        "weight_decay": wd, "lr": config.lr * lr_scale})
        group["params"].append(stacked[name] if stacked is not None else p)
    extra = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(list(groups.values()), lr=config.lr, betas=(config.beta1, config.beta2),
                             eps=config.eps, **extra)


def _callbacks(callbacks: Iterable[Callback | Callable]) -> list[Callback]:
    return [c if isinstance(c, Callback) else _FunctionCallback(c) for c in callbacks]


class _Log:
    """metrics.jsonl on rank 0; on resume, rows past the checkpoint are dropped."""

    def __init__(self, run_dir: Path | None, resume_step: int, enabled: bool):
        self.path = run_dir / "metrics.jsonl" if (run_dir and enabled) else None
        if self.path and self.path.exists():
            keep = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            atomic_write_text(self.path, "".join(line + "\n" for line in keep))
        elif self.path and resume_step == 0:
            self.path.write_text("")

    def write(self, row: dict) -> None:
        if self.path:
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")


def train(spec: ModelSpec, data: TokenData, config: TrainConfig | None = None, *,
          callbacks: Iterable[Callback | Callable] = (), out_dir: str | Path | None = None,
          quiet: bool = False) -> TrainResult:
    """Train `spec` on `data`; resume from `out_dir` when it holds a checkpoint of the same run."""
    config = config or TrainConfig()
    data.check(vocab_size=spec.vocab_size, context_length=spec.context_length)
    world, rank, local_rank = _distributed()
    if config.batch_size % (world * config.grad_accum):
        raise InputError(f"batch_size ({config.batch_size}) must be a multiple of world size x grad_accum "
                         f"({world} x {config.grad_accum})")
    device = resolve_device(config.device)
    if device.type == "cuda" and world > 1 and config.device == "auto":  # cuda only
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    precision = resolve_precision(config.precision, device)
    run_dir = Path(out_dir) if out_dir else None
    cbs = _callbacks(callbacks)
    cost = count(spec)
    T, B = spec.context_length, config.batch_size
    rows = B // world
    micro = rows // config.grad_accum

    start, fingerprint, history, resumed_from, train_time = 0, hashlib.sha256(b"autotaper").hexdigest(), [], None, 0.0
    identity = {"spec": spec.to_dict(), "config": config.to_dict(), "corpus": data.manifest.get("content_sha256")}
    ckpt = latest_checkpoint(run_dir) if run_dir else None
    if ckpt is not None:  # the run's identity is checked before a byte of its weights is read
        state = read_state(ckpt)
        if state.get("identity") != identity:
            raise InputError(f"out_dir {str(run_dir)!r} holds a checkpoint of a different run "
                             f"({_differs(state.get('identity'), identity)}); use a new --out or delete it")
        done = _finished_result(run_dir, state, config)
        if done is not None:
            return done
    check_fits(spec, B // world, precision=precision, device=str(device), what=f"model {spec.taper}")
    model = build_model(spec, seed=config.seed).to(device)
    optimizer = _optimizer(model, config, device, spec)
    if ckpt is not None:
        state = load_checkpoint(ckpt, model=model, optimizer=optimizer, device=device)
        start = resumed_from = state["step"]
        fingerprint, history, train_time = state["fingerprint"], state["history"], state["train_time_s"]
    if run_dir and rank == 0:
        _write_run_files(run_dir, spec, config, data)
    log = _Log(run_dir, start, rank == 0)

    train_model = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    graphs = False  # CUDA graphs: each step marks where the last one's graph outputs may be reused
    if config.compile:  # per block, in place: the DDP wrapper and checkpoints see the eager names
        from autotaper.train.compile import CUDA_GRAPH_MODES, compile_blocks, compile_mode

        compile_blocks(model, compile_mode(config.compile))
        graphs = device.type == "cuda" and config.compile in CUDA_GRAPH_MODES
    windows = val_windows(data.val, n=config.eval_batches * B, context_length=T)
    limit = config.diverge_loss or 2 * math.log(spec.vocab_size)

    def run_eval(step: int) -> dict:
        if graphs:  # cuda only
            torch.compiler.cudagraph_mark_step_begin()
        metrics = evaluate(model, windows, token_bytes=data.token_bytes, batch_size=B,
                           precision=precision, device=device)
        row = {"step": step, **metrics}
        history.append(row)
        log.write(row)
        return row

    def checkpoint(step: int) -> None:
        if run_dir is None:
            return
        if rank == 0:
            save_checkpoint(run_dir, step=step, model=model, optimizer=optimizer,
                            state={"identity": identity, "fingerprint": fingerprint, "history": history,
                                   "train_time_s": train_time})
        if world > 1:
            torch.distributed.barrier()

    from tqdm.auto import tqdm

    bar = tqdm(total=config.steps, initial=start, disable=quiet or rank != 0, unit="step",
               dynamic_ncols=True, desc=f"train {spec.taper}", leave=False)
    status, reason, loss_value, step, session_time, compile_s = "complete", None, None, start, 0.0, None
    # No host sync inside a step on CUDA: the loss, the gradient norm and the first step that
    # went non-finite or over `limit` stay on the device, and are read at check points (log,
    # eval and checkpoint steps, the last step), where the wall clock is also read, so that
    # tokens/s counts the GPU's time and not the time to queue its kernels. On CPU every step
    # is a check point (it costs nothing there), so a divergence stops before its update.
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    bad_loss = torch.zeros((), device=device)
    pinned = device.type == "cuda"

    def fetch(step: int):
        """Step `step`'s global batch on the host and this rank's rows on the device, copied from
        pinned memory without blocking, so it overlaps the step before."""
        batch = sample_batch(data.train, seed=config.seed, step=step, batch_size=B, context_length=T)
        local = torch.from_numpy(batch[rank * rows: (rank + 1) * rows])
        if pinned:
            local = local.pin_memory()
        return batch, local.to(device, non_blocking=True)

    def is_check(done: int) -> bool:
        return (device.type != "cuda" or done % config.log_every == 0 or done == config.steps
                or (config.compile and done == start + 1)  # compile_s: the first step alone
                or done % config.eval_interval == 0
                or bool(config.checkpoint_every and done % config.checkpoint_every == 0))

    model.train()
    upcoming = fetch(start) if start < config.steps else None
    t0 = time.perf_counter()
    for step in range(start, config.steps):
        batch, local = upcoming
        fingerprint = hashlib.sha256(bytes.fromhex(fingerprint) + batch.tobytes()).hexdigest()
        lr = config.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        loss_sum = torch.zeros((), device=device)
        if graphs:  # cuda only
            torch.compiler.cudagraph_mark_step_begin()
        for i in range(config.grad_accum):
            chunk = local[i * micro: (i + 1) * micro]
            sync = world == 1 or i == config.grad_accum - 1
            ctx = train_model.no_sync() if (not sync and hasattr(train_model, "no_sync")) else nullcontext()
            with ctx, autocast_context(device, precision):
                logits = train_model(chunk[:, :-1])
            loss = F.cross_entropy(logits.float().flatten(0, 1), chunk[:, 1:].flatten()) / config.grad_accum
            loss.backward()
            loss_sum += loss.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip or float("inf"))
        if world > 1:
            torch.distributed.all_reduce(loss_sum)
            loss_sum /= world
        bad = ~torch.isfinite(loss_sum) | ~torch.isfinite(grad_norm) | (loss_sum > limit)
        newly = bad & (first_bad < 0)
        first_bad = torch.where(newly, step, first_bad)
        bad_loss = torch.where(newly, loss_sum, bad_loss)
        done = step + 1
        check = is_check(done)
        if check and int(first_bad) >= 0:
            at, worst = int(first_bad), float(bad_loss)
            status = "diverged"
            reason = (f"loss {worst:.4g} at step {at}" if math.isfinite(worst) and worst > limit
                      else f"non-finite loss or gradient at step {at}")
            step, loss_value = at, worst
            optimizer.zero_grad(set_to_none=True)
            break
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if done < config.steps:
            upcoming = fetch(done)  # queued behind this step's kernels
        if check:
            loss_value = float(loss_sum)  # the sync: everything queued so far has run
            now = time.perf_counter()
            elapsed, t0 = now - t0, now
            if config.compile and compile_s is None:  # the first interval holds the compilation
                compile_s = elapsed
            else:
                train_time += elapsed
                session_time += elapsed
        if done % config.log_every == 0 or done == config.steps:
            timed = done - start - (1 if compile_s is not None else 0)
            tok_s = timed * B * T / session_time if session_time > 0 else 0.0
            log.write({"step": done, "loss": loss_value, "lr": lr, "grad_norm": float(grad_norm),
                       "tokens_per_s": tok_s})
            bar.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{tok_s:,.0f}")
            if any(c.on_step(done, {"loss": loss_value, "lr": lr, "grad_norm": float(grad_norm), "tokens_per_s": tok_s})
                   for c in cbs):
                status, reason = "stopped", f"stopped by a callback at step {done}"
        bar.update(1)
        if status == "complete" and done % config.eval_interval == 0 and done != config.steps:
            row = run_eval(done)
            if any(c.on_eval(done, row) for c in cbs):
                status, reason = "stopped", f"stopped by a callback at step {done}"
        if config.checkpoint_every and done % config.checkpoint_every == 0 and done != config.steps:
            checkpoint(done)
        if check:
            t0 = time.perf_counter()  # evals and checkpoints are not training time
        if status != "complete":
            break
    bar.close()
    steps_done = step + 1 if status != "diverged" else step
    if start >= config.steps:
        steps_done = config.steps
    if status == "diverged":
        final = {"val_loss": float("nan"), "val_ppl": float("nan"), "val_bpb": None}
    elif history and history[-1]["step"] == steps_done:
        final = history[-1]
    else:
        final = run_eval(steps_done)
        for c in cbs:
            c.on_eval(steps_done, final)
    if status != "diverged":
        checkpoint(steps_done)
    tokens = steps_done * B * T
    timed = steps_done - start - (1 if compile_s is not None else 0)
    tok_s = timed * B * T / session_time if session_time > 0 else 0.0
    result = TrainResult(
        status=status, reason=reason, steps=steps_done, val_loss=final["val_loss"], val_ppl=final["val_ppl"],
        val_bpb=final["val_bpb"], train_loss=loss_value, tokens=tokens, tokens_per_s=tok_s,
        train_time_s=train_time, data_fingerprint=fingerprint[:32], precision=precision, device=str(device),
        world_size=world, params=cost.params, flops_per_token=cost.flops_per_token,
        achieved_flops_per_s=tok_s * 3 * cost.flops_per_token, compile_s=compile_s, resumed_from=resumed_from,
        parametrization=spec.parametrization,
        run_dir=str(run_dir) if run_dir else None, corpus=_corpus_summary(data), history=history)
    if run_dir and rank == 0:
        atomic_write_text(run_dir / "summary.json", json.dumps(result.to_dict(), indent=1))
    for c in cbs:
        c.on_end(result)
    return result


def _write_run_files(run_dir: Path, spec: ModelSpec, config: TrainConfig, data: TokenData) -> None:
    """A run folder's spec, config and tokenizer, as `train` writes them."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "spec.json", spec.to_json(indent=1))
    atomic_write_text(run_dir / "config.json", json.dumps(config.to_dict(), indent=1))
    tokenizer = data.root / "tokenizer.json" if data.root else None
    if tokenizer is not None and tokenizer.is_file():  # for `autotaper export`
        atomic_write_text(run_dir / "tokenizer.json", tokenizer.read_text())


def _differs(stored: Any, identity: dict) -> str:
    """Which parts of a run's identity differ, with both values where they are short."""
    if not isinstance(stored, dict):
        return "the checkpoint records no identity"
    parts = []
    for part in ("spec", "config", "corpus"):
        a, b = stored.get(part), identity.get(part)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            shown = [f"{k} {a.get(k)!r} there, {b.get(k)!r} here" for k in keys
                     if len(repr(a.get(k))) + len(repr(b.get(k))) < 80]
            parts.append(f"{part}: " + ("; ".join(shown[:3]) if shown else ", ".join(keys[:6])))
        else:
            parts.append(f"{part} differs")
    return "; ".join(parts)


def _finished_result(run_dir: Path, state: dict, config: TrainConfig) -> TrainResult | None:
    """The stored result of a run whose checkpoint already holds all its steps (None if it
    does not): training it again trains nothing and says so."""
    summary = run_dir / "summary.json"
    if state.get("step", 0) < config.steps or not summary.is_file():
        return None
    stored = json.loads(summary.read_text())
    known = {f.name for f in fields(TrainResult)}
    result = TrainResult(**{k: v for k, v in stored.items() if k in known})
    result.resumed_from = state["step"]
    return result


def _corpus_summary(data: TokenData) -> dict:
    keys = ("corpus", "content_sha256", "python", "train_tokens", "val_tokens")
    out = {k: data.manifest.get(k) for k in keys}
    out["tokenizer"] = data.manifest.get("tokenizer", {}).get("name")
    return out
