"""Proxy training: config, trainer, populations (K seeds in one process), evaluation, checkpoints. Names resolve on first use, so
`from autotaper.train.config import TrainConfig` (the CLI's flag defaults) never loads torch."""

from __future__ import annotations

from autotaper._lazy import lazy_names

_LAZY = {"TrainConfig": "autotaper.train.config", "evaluate": "autotaper.train.evaluation",
         "Callback": "autotaper.train.trainer", "TensorBoard": "autotaper.train.trainer",
         "TrainResult": "autotaper.train.trainer", "train": "autotaper.train.trainer",
         "train_population": "autotaper.train.population"}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
