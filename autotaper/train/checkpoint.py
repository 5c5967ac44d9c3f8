"""Checkpoints: safetensors for tensors, JSON for everything else, never pickle.

Layout under a run directory:
    checkpoints/step-000200/{model.safetensors, optimizer.safetensors, state.json}
    checkpoints/latest          -> text "step-000200", replaced atomically
Each step directory is written under a temporary name and renamed into place before
`latest` moves to it, so a kill at any moment leaves the previous checkpoint intact; a
write that fails (a full disk) removes its partial folder and raises `CheckpointError`
naming the checkpoint that still stands. A `latest` that names no complete checkpoint (a
folder removed by hand) falls back to the newest complete one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from autotaper._io import atomic_write_text, fix_tree, make_temp_dir
from autotaper.errors import CheckpointError, InputError

__all__ = ["atomic_write_text", "save_checkpoint", "latest_checkpoint", "load_checkpoint", "load_run",
           "read_state"]


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def save_checkpoint(run_dir: Path, *, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict, keep: int = 1) -> Path:
    root = Path(run_dir) / "checkpoints"
    name = f"step-{step:06d}"
    tmp = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = make_temp_dir(root, name + ".")
        save_model(model, str(tmp / "model.safetensors"))
        tensors, meta = _optimizer_tensors(optimizer)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        for file, text in (("optimizer.json", json.dumps(meta)), ("state.json", json.dumps({**state, "step": step}))):
            with open(tmp / file, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())  # a full disk shows here, not after the rename
        fix_tree(tmp)  # safetensors writes 0600: a shared run folder stays readable to the umask's readers
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        tmp = None
        atomic_write_text(root / "latest", name)
    except (OSError, SafetensorError) as e:  # safetensors reports a full disk as its own error
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        standing = latest_checkpoint(run_dir)
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e).split(": ")[-1]
        raise CheckpointError(getattr(e, "errno", None), f"checkpoint: cannot write {name} in {str(root)!r} ({why}); "
                              + (f"{standing.name} still stands" if standing else "no earlier checkpoint")) from e
    kept = sorted(p for p in root.glob("step-*") if p.is_dir() and "." not in p.name)
    for old in kept[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint `latest` names, or the newest complete one if it names none."""
    root = Path(run_dir) / "checkpoints"
    pointer = root / "latest"
    if pointer.exists():
        path = root / pointer.read_text().strip()
        if (path / "state.json").exists():
            return path
    complete = sorted(p for p in root.glob("step-*") if "." not in p.name and (p / "state.json").exists())
    return complete[-1] if complete else None


def load_checkpoint(path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    device: torch.device) -> dict:
    load_model(model, str(path / "model.safetensors"), device=str(device))
    if optimizer is not None:
        tensors = load_file(str(path / "optimizer.safetensors"), device=str(device))
        meta = json.loads((path / "optimizer.json").read_text())
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            pid, name = key.split(".", 1)
            state.setdefault(int(pid), {})[name] = value
        for key, value in meta["scalars"].items():
            pid, name = key.split(".", 1)
            state.setdefault(int(pid), {})[name] = value
        for pstate in state.values():  # AdamW keeps `step` as a CPU float tensor
            if "step" in pstate and torch.is_tensor(pstate["step"]):
                pstate["step"] = pstate["step"].cpu()
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return json.loads((path / "state.json").read_text())


def read_state(path: Path) -> dict:
    """A checkpoint's state.json (step, run identity, history), without its tensors."""
    return json.loads((Path(path) / "state.json").read_text())


def load_run(run_dir: str | Path, *, command: str = "load"):
    """(spec, model in eval mode with the latest checkpoint's weights, its step) of a run
    directory written by `train(out_dir=...)`; ValueError naming `command` and the folder."""
    from autotaper.models import build_model
    from autotaper.spec import ModelSpec

    run = Path(run_dir)
    if not (run / "spec.json").is_file():
        raise InputError(f"{command}: RUN_DIR {str(run)!r} has no spec.json (not an autotaper run directory)")
    spec = ModelSpec.load(run / "spec.json")
    ckpt = latest_checkpoint(run)
    if ckpt is None:
        raise InputError(f"{command}: RUN_DIR {str(run)!r} holds no checkpoint (train it with --out to keep one)")
    model = build_model(spec, seed=None)
    load_model(model, str(ckpt / "model.safetensors"))
    step = json.loads((ckpt / "state.json").read_text())["step"]
    return spec, model.eval(), step
