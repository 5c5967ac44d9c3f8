"""Proxy training: config, trainer, evaluation, checkpoints (imports torch)."""

from autotaper.train.config import TrainConfig
from autotaper.train.evaluate import evaluate
from autotaper.train.trainer import Callback, TensorBoard, TrainResult, train

__all__ = ["Callback", "TensorBoard", "TrainConfig", "TrainResult", "evaluate", "train"]
