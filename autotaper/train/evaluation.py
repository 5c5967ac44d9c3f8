"""Validation: (model, windows) -> loss, perplexity and bits per byte.

Bits per byte is the headline metric: the summed next-token loss in bits divided by the
bytes of text the predicted tokens stand for, so a byte model and a BPE model are scored on
the same scale (nanochat's loss_eval). Pre-tokenised data has no byte lengths: bpb is None.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F


def autocast_context(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def evaluate(model: torch.nn.Module, windows: np.ndarray, *, token_bytes: np.ndarray | None = None,
             batch_size: int = 16, precision: str = "fp32", device: str | torch.device = "cpu") -> dict:
    """Mean loss over the (N, T + 1) windows' next-token predictions, with ppl and bpb."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    total_nats, total_tokens, total_bytes = torch.zeros((), dtype=torch.float64, device=device), 0, 0
    for i in range(0, len(windows), batch_size):
        chunk = torch.from_numpy(windows[i: i + batch_size]).to(device)
        x, y = chunk[:, :-1], chunk[:, 1:]
        with autocast_context(device, precision):
            logits = model(x)
        nats = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum")
        total_nats += nats.double()  # summed on the device: one sync per evaluation, not per batch
        total_tokens += y.numel()
        if token_bytes is not None:
            total_bytes += int(token_bytes[windows[i: i + batch_size, 1:]].sum())  # from the host copy
    model.train(was_training)
    total_nats = float(total_nats)
    loss = total_nats / total_tokens
    bpb = total_nats / (math.log(2) * total_bytes) if total_bytes else None
    return {"val_loss": loss, "val_ppl": math.exp(min(loss, 700.0)), "val_bpb": bpb}
