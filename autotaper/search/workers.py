"""How many proxy trainings one machine runs at once (`--workers auto`, Ray's GPU share).

A proxy model leaves a large GPU almost idle: on one H100, 8 proxy-xs trainings at once ran
at 6.6x the throughput of one. The number that fits is set by memory (each process holds
its CUDA context, the model's weights, gradients and AdamW state, and its activations) and
by host cores (each process drives its GPU work from one Python thread). On a CPU the
trainings share the cores: one worker per two cores, each with two threads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from autotaper.memory import CUDA_CONTEXT_BYTES, training_bytes

__all__ = ["CUDA_CONTEXT_BYTES", "training_bytes", "proxy_bytes", "auto_workers", "gpu_share", "WorkerChoice"]

MAX_PER_GPU = 16  # the most measured (benchmarks/gpu_search_throughput.py)
MEMORY_SHARE = 0.9  # of the free GPU memory


@dataclass
class WorkerChoice:
    workers: int
    device: str
    per_worker_bytes: int | None = None
    limit: str = ""

    def text(self) -> str:
        mem = f", {self.per_worker_bytes / 2**30:.2f} GiB each" if self.per_worker_bytes else ""
        return f"{self.workers} on {self.device}{mem} ({self.limit})"


def proxy_bytes(space) -> int:
    """`training_bytes` of the space's proxy."""
    from autotaper.spec import ModelSpec

    p = space.proxy
    spec = ModelSpec.from_name(p.preset, **(p.shape or {}), **({"family": p.family} if p.family else {}),
                               **({"vocab_size": p.vocab_size} if p.vocab_size else {}))
    return training_bytes(spec, p.batch_size, "fp32" if p.precision == "fp32" else "bf16")


def auto_workers(space, *, device: str | None = None) -> WorkerChoice:
    """Parallel search workers for `space`'s proxy on this machine (see the module docstring)."""
    import torch

    cores = os.cpu_count() or 1
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda:  # cuda only
        return _gpu_workers(space, cores)
    n = max(1, cores // 2)
    return WorkerChoice(n, "cpu", None, f"{cores} cores, 2 threads per worker")


def _gpu_workers(space, cores: int) -> WorkerChoice:  # cuda only
    import torch

    need = proxy_bytes(space)
    free, total = torch.cuda.mem_get_info()
    by_memory = max(1, int(MEMORY_SHARE * free // need))
    n = min(by_memory, cores, MAX_PER_GPU)
    limit = {by_memory: f"{free / 2**30:.0f} GiB free", cores: f"{cores} host cores",
             MAX_PER_GPU: f"at most {MAX_PER_GPU} per GPU"}[n]
    return WorkerChoice(n, torch.cuda.get_device_name(), need, limit)


def gpu_share(space, gpu_memory_bytes: int) -> float:
    """Ray's `gpus_per_trial` for `space`'s proxy on GPUs of this much memory: 1 / how many fit."""
    need = proxy_bytes(space)
    n = max(1, min(MAX_PER_GPU, int(MEMORY_SHARE * gpu_memory_bytes // need)))
    return 1.0 / n
