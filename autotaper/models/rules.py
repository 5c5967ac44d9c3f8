"""Each parameter of a built model, classified for its parametrization (`autotaper.parametrization`):
its role (input, hidden, output, vector) and its multipliers of the base recipe's init std,
learning rate, Adam epsilon and weight decay."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autotaper.errors import InputError
from autotaper.parametrization import Rule, depth_multiplier, width_multiplier

if TYPE_CHECKING:
    import torch

    from autotaper.spec import ModelSpec


def block_list(model: "torch.nn.Module") -> "torch.nn.ModuleList":
    """The model's repeated blocks (its largest ModuleList), for compiling and probing them."""
    import torch

    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        raise InputError(f"{type(model).__name__} has no ModuleList of blocks")
    return max(lists, key=len)


def _base_model(spec: "ModelSpec"):
    """The base-shape uniform model on the meta device: shapes only."""
    import torch

    from autotaper.families import get_family

    with torch.device("meta"):
        return get_family(spec.family).build(spec.uniform())


def rules(model: "torch.nn.Module", spec: "ModelSpec") -> dict[str, Rule]:
    """Every named parameter's rule (see the module docstring)."""
    import torch

    blocks = block_list(model)
    layer_of: dict[int, int] = {}
    for i, block in enumerate(blocks):
        for p in block.parameters():
            layer_of[id(p)] = i
    embedding_params = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    in_blocks = {id(p) for p in blocks.parameters()}
    width_aware = spec.parametrization != "sp"
    base_shapes = {}
    if width_aware:
        base_model = _base_model(spec)
        base_shapes = {name: tuple(p.shape) for name, p in base_model.named_parameters()}
    m_n = width_multiplier(spec)
    m_l = depth_multiplier(spec)
    alpha = spec.depth_alpha
    depth_lr = m_l ** (alpha - 1.0)
    depth_eps = m_l ** -alpha
    out: dict[str, Rule] = {}
    for name, p in model.named_parameters():
        layer = layer_of.get(id(p))
        layer_lr = spec.layer_lr[layer] if layer is not None else 1.0
        if id(p) in embedding_params:
            out[name] = Rule("input", lr=layer_lr)
        elif p.ndim < 2:
            if id(p) in in_blocks:
                out[name] = Rule("vector", lr=depth_lr * layer_lr, eps=depth_eps)
            else:
                out[name] = Rule("vector")
        elif id(p) not in in_blocks:  # the output head
            fan_in = p.shape[1]
            m = fan_in / (spec.base_d_model or spec.d_model) if width_aware else 1.0
            out[name] = Rule("output", eps=1.0 / m)
        else:
            fan_in = int(p.shape[1])
            if width_aware:
                if name not in base_shapes:
                    raise InputError(f"parametrization {spec.parametrization}: parameter {name!r} has no "
                                     f"counterpart in the base-shape model of family {spec.family!r}")
                base_fan_in = base_shapes[name][1] / m_n
                m = fan_in / base_fan_in
            else:
                m = 1.0
            out[name] = Rule("hidden", init_std=m ** -0.5, lr=depth_lr * layer_lr / m, eps=depth_eps / m,
                             weight_decay=m / depth_lr)
    return out
