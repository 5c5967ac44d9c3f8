"""PyTorch models that honour every per-layer width of a ModelSpec.

`build_model(spec)` looks the family up in the registry (`autotaper.families`) and imports
its module only then, so `import autotaper` stays free of torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autotaper.models.rules import block_list

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from autotaper.spec import ModelSpec


def build_model(spec: "ModelSpec", *, seed: int | None = 0) -> "torch.nn.Module":
    """Build the family's module for `spec`; with a seed, initialise it per parameter name
    (see `autotaper.models.init`) so that tapers trained with one seed start alike."""
    from autotaper.families import get_family

    model = get_family(spec.family).build(spec)
    if seed is not None:
        from autotaper.models.init import init_weights

        init_weights(model, seed=seed, spec=spec)
    return model


__all__ = ["block_list", "build_model"]
