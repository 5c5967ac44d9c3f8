"""Training configuration: one typed, validated, JSON-serialisable dataclass."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from autotaper.errors import InputError

SCHEDULES = ("cosine", "wsd", "constant")


def eval_interval(steps: int, eval_every: int | None) -> int:
    """Steps between evaluations: `eval_every`, or four evaluations spread over the run."""
    return eval_every or max(1, steps // 4)
PRECISIONS = ("auto", "bf16", "fp32")
# torch.compile modes a run may ask for (TrainConfig.compile: True is "default"; per block,
# autotaper.train.compile): reduce-overhead and max-autotune capture CUDA graphs
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300
    batch_size: int = 16  # sequences per optimizer step (global: split over ranks and micro-batches)
    grad_accum: int = 1
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # final LR as a fraction of the peak
    warmup_frac: float = 0.05
    schedule: str = "cosine"  # cosine, or wsd (warmup-stable-decay), or constant
    decay_frac: float = 0.2  # wsd: share of steps spent decaying
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8  # Adam epsilon (a width-aware parametrization scales it per matrix)
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int | None = None  # None: four evaluations spread over the run
    eval_batches: int = 8  # validation windows = eval_batches * batch_size, fixed per corpus
    log_every: int = 10
    checkpoint_every: int = 0  # 0: only at the end (when there is an out_dir)
    precision: str = "auto"  # auto: bf16 autocast on CUDA and on CPUs with native bf16 matmuls
    compile: bool | str = False  # True or one of COMPILE_MODES: torch.compile per block
    device: str = "auto"
    diverge_loss: float | None = None  # None: twice the loss of a uniform guess, 2 ln(vocab)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "eval_batches", "log_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"{name} must be a positive integer, got {v!r}")
        for name in ("checkpoint_every", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InputError(f"{name} must be an integer >= 0, got {v!r}")
        if self.eval_every is not None and (not isinstance(self.eval_every, int) or self.eval_every < 1):
            raise InputError(f"eval_every must be a positive integer, got {self.eval_every!r}")
        if self.batch_size % self.grad_accum:
            raise InputError(f"batch_size ({self.batch_size}) must be a multiple of grad_accum ({self.grad_accum})")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"lr must be > 0, got {self.lr!r}")
        for name in ("min_lr_ratio", "warmup_frac", "decay_frac"):
            if not 0 <= getattr(self, name) <= 1:
                raise InputError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        for name in ("weight_decay", "grad_clip"):
            if not getattr(self, name) >= 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise InputError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.schedule not in SCHEDULES:
            raise InputError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not (isinstance(self.eps, (int, float)) and not isinstance(self.eps, bool)
                and math.isfinite(self.eps) and self.eps > 0):
            raise InputError(f"eps must be a number > 0, got {self.eps!r}")
        if not isinstance(self.compile, bool) and self.compile not in COMPILE_MODES:
            raise InputError(f"compile must be true, false or one of {', '.join(COMPILE_MODES)}, "
                             f"got {self.compile!r}")
        if self.diverge_loss is not None and not self.diverge_loss > 0:
            raise InputError(f"diverge_loss must be > 0, got {self.diverge_loss!r}")

    @property
    def eval_interval(self) -> int:
        return eval_interval(self.steps, self.eval_every)

    def lr_at(self, step: int) -> float:
        """Learning rate for optimizer step `step` (0-based)."""
        warmup = round(self.warmup_frac * self.steps)
        floor = self.lr * self.min_lr_ratio
        if step < warmup:
            return self.lr * (step + 1) / warmup
        if self.schedule == "constant":
            return self.lr
        if self.schedule == "wsd":
            decay_start = self.steps - round(self.decay_frac * self.steps)
            if step < decay_start:
                return self.lr
            progress = (step - decay_start) / max(1, self.steps - decay_start)
            return self.lr - (self.lr - floor) * min(1.0, progress)
        progress = (step - warmup) / max(1, self.steps - warmup)
        return floor + (self.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(f"unknown training config field(s): {', '.join(unknown)}")
        return cls(**data)
