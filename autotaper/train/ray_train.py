"""Full-size training on Ray Train: `TorchTrainer` runs the project's own `train()` on every
worker (no second training loop). Ray Train starts the process group (gloo on CPU, NCCL on
GPU); `train()` finds it initialised and takes its rank's slice of each global batch, so
the loss curve matches one process at the same global batch. Rank 0 writes the run
directory, checkpoints included, exactly where `autotaper train --out DIR` would; on a
multi-node cluster DIR must be on storage every node can reach.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autotaper.errors import InputError
from autotaper.spec import ModelSpec
from autotaper.train.config import TrainConfig


def _loop(cfg: dict) -> None:
    import ray.train
    import torch

    from autotaper.data import load_data
    from autotaper.train import train

    torch.set_num_threads(max(1, int(cfg["cpus_per_worker"])))
    config = TrainConfig.from_dict(cfg["config"])
    if cfg["use_gpu"]:  # cuda only
        import dataclasses

        from ray.train.torch import get_device

        config = dataclasses.replace(config, device=str(get_device()))
    data = load_data(cfg["data"], tokenizer=cfg["tokenizer"], vocab_size=cfg["vocab_size"])
    result = train(ModelSpec.from_dict(cfg["spec"]), data, config, out_dir=cfg["out_dir"], quiet=True)
    summary = {k: v for k, v in result.to_dict().items() if k not in ("history", "corpus")}
    ray.train.report({k: v for k, v in summary.items() if v is not None})


def train_on_ray(spec: ModelSpec, config: TrainConfig, *, out_dir: str | Path, data: str | None = None,
                 tokenizer: str = "bytes", vocab_size: int | None = None, num_workers: int = 2,
                 use_gpu: bool = False, cpus_per_worker: float = 1.0, address: str | None = None) -> dict[str, Any]:
    """Train `spec` with DDP on `num_workers` Ray Train workers; returns rank 0's summary."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if num_workers < 1:
        raise InputError(f"ray workers must be >= 1, got {num_workers}")
    out_dir = Path(out_dir).resolve()
    started_here = not ray.is_initialized()
    if started_here:
        from autotaper.cluster import connect

        connect(address)  # a cluster's nodes get this autotaper (py_modules), installed there or not
    try:
        trainer = TorchTrainer(
            _loop,
            train_loop_config={"spec": spec.to_dict(), "config": config.to_dict(), "out_dir": str(out_dir),
                               "data": data, "tokenizer": tokenizer, "vocab_size": vocab_size,
                               "use_gpu": use_gpu, "cpus_per_worker": cpus_per_worker},
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
            scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                         resources_per_worker={"CPU": cpus_per_worker}),
            run_config=RunConfig(name="ray-train", storage_path=str(out_dir / "ray")))
        return dict(trainer.fit().metrics or {})
    finally:
        if started_here:
            ray.shutdown()
