"""How much memory a training needs, estimated before anything is allocated, and whether the
device has it: a model, batch or vocabulary too large for the machine is refused with the
estimate, in one line, instead of a 30-second build that ends out of memory.
"""

from __future__ import annotations

import os

from autotaper.errors import InputError

CUDA_CONTEXT_BYTES = 600 * 2**20  # the context itself, outside torch's allocator, per process
WORKSPACE_BYTES = 64 * 2**20  # cuBLAS workspace and allocator blocks, inside torch's allocator


def training_bytes(spec, batch_size: int, precision: str = "bf16") -> int:
    """Peak memory of one training process on a GPU, estimated: fp32 weights, gradients and
    the two AdamW moments (16 bytes a parameter), activations kept for backward (64 bytes per
    token, layer and stream channel under bf16 autocast, 104 in fp32), the logits (16-bit,
    their fp32 copy and its gradient), a fixed 64 MiB (cuBLAS workspace, allocator blocks)
    and the CUDA context. The activation bytes are measured, not Korthikanti et al.'s 34 for
    a fused large model: on an H100 (torch 2.11; proxy-xs, proxy-s and proxy-m at batch 16
    and 64, bf16 and fp32) a real training's peak was 0.71 to 1.00 of this estimate; with
    34 and 68 it was 1.23 to 2.28 times it (more workers than fit)."""
    from autotaper.cost import count

    tokens = batch_size * spec.context_length
    act = 64 if precision == "bf16" else 104
    # per layer, the widest stream a token has: the residual width, attention's q/k/v width
    # (heads x head_dim) or a quarter of the MLP's (for usual shapes all equal d_model or less)
    widths = [max(d, (h + 2 * kv) * spec.head_dim / 3, f / 4) for d, h, kv, f in
              zip(spec.layer_d_model, spec.layer_heads, spec.layer_kv_heads, spec.layer_ffn)]
    activations = tokens * sum(widths) * act
    logits = tokens * spec.vocab_size * 10
    return int(16 * count(spec).params + activations + logits + WORKSPACE_BYTES + CUDA_CONTEXT_BYTES)


def available_bytes(device: str = "cpu") -> int | None:
    """Memory a training on `device` may use: the GPU's total memory on CUDA, else the host's
    physical memory (MemTotal; a training larger than the machine cannot run, whatever else is
    running). None when it cannot be read."""
    if device.startswith("cuda"):  # cuda only
        import torch

        index = int(device.split(":", 1)[1]) if ":" in device else 0
        return torch.cuda.get_device_properties(index).total_memory
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(spec, batch_size: int, *, precision: str = "fp32", device: str = "cpu", what: str = "model") -> int:
    """`training_bytes` of `spec` at `batch_size`, or ValueError naming the estimate and the
    device's memory when it cannot fit. Returns the estimate."""
    need = training_bytes(spec, batch_size, "bf16" if precision == "bf16" else "fp32")
    if not device.startswith("cuda"):
        need -= CUDA_CONTEXT_BYTES
    have = available_bytes(device)
    if have is not None and need > have:
        from autotaper.cost import count

        raise InputError(f"{what}: training it needs about {need / 2**30:,.1f} GiB ({count(spec).params:,} params, "
                         f"batch {batch_size} x {spec.context_length} tokens, vocab {spec.vocab_size:,}); "
                         f"{device} has {have / 2**30:,.1f} GiB")
    return need
