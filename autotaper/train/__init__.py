"""Proxy training: config, trainer, evaluation, checkpoints. Names resolve on first use, so
`from autotaper.train.config import TrainConfig` (the CLI's flag defaults) never loads torch."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"TrainConfig": "autotaper.train.config", "evaluate": "autotaper.train.evaluation",
         "Callback": "autotaper.train.trainer", "TensorBoard": "autotaper.train.trainer",
         "TrainResult": "autotaper.train.trainer", "train": "autotaper.train.trainer"}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'autotaper.train' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
