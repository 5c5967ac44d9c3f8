"""Regional compilation: each transformer block compiled on its own, as torchtitan does.

A tapered model has up to one distinct block shape per layer. Compiling the whole model
traces every layer into one graph per model, and successive models in one search process
retrace from scratch; compiling `Block.forward` instead, with static shapes, makes every
distinct block shape one compiled graph (per grad mode: training, and evaluation under
no_grad) that every block of that shape reuses, in this model and in every later model
of the process. Dynamo keeps those graphs in one cache per code object, capped by
`recompile_limit` (8 by default: a 24-layer taper exceeded it and fell back to eager);
`compile_blocks` raises the cap to the number of distinct shapes this process has
compiled, so the cap never decides what is compiled. `nn.Module.compile` compiles in
place, so parameter names, checkpoints and the optimizer are those of the eager model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from autotaper.models import block_list

# The two modes that capture CUDA graphs replay each block's kernels in one launch, for small
# proxies on a GPU whose step time is kernel launches rather than math (on a CPU they compile as
# "default" does).
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def compile_mode(value: bool | str) -> str | None:
    """The torch.compile mode of a TrainConfig.compile value (None: eager)."""
    if value is True:
        return "default"
    return value or None


# Block shapes compiled in this process, over every model (dynamo's cache is per process).
_SEEN: set[tuple] = set()
GRAPHS_PER_SHAPE = 2  # training (grad enabled) and evaluation (no_grad) guard differently
SPARE = 8  # other frames that share a code object (dynamo's own default cap)


@dataclass
class CompileInfo:
    blocks: int
    shapes: int  # distinct block shapes in this model
    new_shapes: int  # of those, not compiled before in this process
    recompile_limit: int


def block_shape(block: torch.nn.Module) -> tuple:
    """What a compiled graph of this block specialises on: its class, parameter shapes and
    integer attributes (widths and head counts read in forward)."""
    ints = tuple(sorted((k, v) for m in block.modules() for k, v in vars(m).items()
                        if isinstance(v, int) and not isinstance(v, bool) and not k.startswith("_")
                        and k != "layer_idx"))
    return (type(block).__qualname__, tuple((n, tuple(p.shape)) for n, p in block.named_parameters()), ints)


def compile_blocks(model: torch.nn.Module, mode: str = "default") -> CompileInfo:
    """Compile each block of `model` in place (static shapes, torch.compile `mode`) and size
    dynamo's cache for every block shape compiled in this process."""
    blocks = block_list(model)
    shapes = {(mode, block_shape(b)) for b in blocks}
    new = len(shapes - _SEEN)
    _SEEN.update(shapes)
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    limit = max(getattr(config, name), GRAPHS_PER_SHAPE * len(_SEEN) + SPARE)
    setattr(config, name, limit)
    if hasattr(config, "accumulated_recompile_limit"):
        config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, 2 * limit)
    for block in blocks:
        block.compile(dynamic=False, mode=None if mode == "default" else mode)
    return CompileInfo(blocks=len(blocks), shapes=len(shapes), new_shapes=new, recompile_limit=limit)
