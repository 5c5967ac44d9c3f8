"""The residual-stream probe: how much each layer changes the residual stream.

The paper's case for tapering is a measurement: later layers change the stream less. For
each layer l, over the tokens of validation windows, with x the stream entering the block,
m = x plus the attention update, and y the stream leaving it:

    cos        cos(x, y)              similarity of the stream before and after the block
    update     |y - x| / |x|          relative norm of the block's update
    attn_cos, attn_update             the same for the attention part, x -> m
    mlp_cos, mlp_update               the same for the MLP part, m -> y

each a mean over tokens. A block whose outputs are zero reports cos 1 and update 0. The
numbers come from hooks on the blocks of autotaper's own model, so they hold for any
checkpoint it trained, tapered or not (a family whose blocks lack `attn`/`mlp` children
gets the whole-block numbers only).

`suggest` turns a probe of a trained uniform model into a candidate taper whose per-layer
widths follow the measured contributions.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from autotaper.errors import InputError
from autotaper.models import block_list
from autotaper.models._layers import add_to_stream

EPS = 1e-12


@dataclass
class LayerProbe:
    layer: int
    d_model: int
    ffn: int
    heads: int
    cos: float
    update: float
    attn_cos: float | None
    attn_update: float | None
    mlp_cos: float | None
    mlp_update: float | None


def _stats(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Sums over tokens of cos(a, b) and |b - a| / |a| (float64)."""
    a, b = a.double(), b.double()
    cos = F.cosine_similarity(a, b, dim=-1, eps=EPS)
    rel = (b - a).norm(dim=-1) / a.norm(dim=-1).clamp_min(EPS)
    return float(cos.sum()), float(rel.sum())


@torch.no_grad()
def probe(model: torch.nn.Module, windows: np.ndarray, *, batch_size: int = 16,
          device: str | torch.device = "cpu") -> list[LayerProbe]:
    """Per-layer means over the next-token inputs of `windows` ((N, T + 1) token ids)."""
    device = torch.device(device)
    model = model.to(device).eval()
    spec = model.spec
    blocks = block_list(model)
    parts = all(hasattr(b, "attn") and hasattr(b, "mlp") for b in blocks)
    sums = np.zeros((len(blocks), 6))
    seen: dict[int, dict[str, torch.Tensor]] = {}
    hooks = []
    for i, block in enumerate(blocks):
        hooks.append(block.register_forward_pre_hook(lambda m, args, i=i: seen.setdefault(i, {}).update(x=args[0])))
        hooks.append(block.register_forward_hook(lambda m, args, out, i=i: seen[i].update(y=out)))
        if parts:
            hooks.append(block.attn.register_forward_hook(lambda m, args, out, i=i: seen[i].update(attn=out)))
    tokens = 0
    try:
        for start in range(0, len(windows), batch_size):
            idx = torch.from_numpy(np.asarray(windows[start: start + batch_size, :-1], dtype=np.int64)).to(device)
            seen.clear()
            model(idx)
            tokens += idx.numel()
            for i, s in seen.items():
                x, y = s["x"], s["y"]
                sums[i, 0:2] += _stats(x, y)
                if parts:
                    m = add_to_stream(x, s["attn"])
                    sums[i, 2:4] += _stats(x, m)
                    sums[i, 4:6] += _stats(m, y)
    finally:
        for h in hooks:
            h.remove()
    means = sums / max(tokens, 1)
    out = []
    for i in range(len(blocks)):
        c, u, ac, au, mc, mu = (float(v) for v in means[i])
        out.append(LayerProbe(i, spec.layer_d_model[i], spec.layer_ffn[i], spec.layer_heads[i], c, u,
                              ac if parts else None, au if parts else None, mc if parts else None,
                              mu if parts else None))
    return out


WINDOWS = 64  # validation windows a probe reads by default


def probe_spec(spec, data, config, *, windows: int = WINDOWS) -> dict:
    """Train `spec` with `config` (in a temporary run directory) and probe the result."""
    import tempfile

    from autotaper.data.tokens import val_windows
    from autotaper.train import train
    from autotaper.train.checkpoint import load_run

    with tempfile.TemporaryDirectory(prefix="autotaper-probe-") as tmp:
        r = train(spec, data, config, out_dir=tmp, quiet=True)
        if r.status != "complete":
            raise InputError(f"probe: the uniform model did not train ({r.status}: {r.reason})")
        _, model, step = load_run(tmp, command="probe")
    rows = probe(model, val_windows(data.val, n=windows, context_length=spec.context_length))
    return {"run_dir": f"{spec.taper} {spec.n_layers} x {spec.d_model}, seed {config.seed}", "taper": spec.taper,
            "step": step, "corpus": data.name, "windows": windows, "tokens": windows * spec.context_length,
            "layers": [asdict(x) for x in rows]}


def probe_run(run_dir: str | Path, data=None, *, tokenizer: str | None = None, windows: int = WINDOWS,
              batch_size: int = 16, device: str = "cpu", suggest_dim: str | None = None,
              strength: float = 1.0) -> dict:
    """`autotaper probe`: probe a run directory's latest checkpoint on `windows` validation
    windows of `data` (loaded data, or a path for `load_data`; None: the embedded corpus), in
    the run's own tokenizer unless `tokenizer` says otherwise. The result is also written to
    RUN_DIR/probe.json. `suggest_dim`: add the taper of that dimension whose ratios follow the
    measured update norms (`suggest`), solved to the run's uniform budget."""
    from autotaper._io import atomic_write_text
    from autotaper.data.tokens import val_windows
    from autotaper.train.checkpoint import load_run

    run = Path(run_dir)
    if not (run / "spec.json").is_file():
        raise InputError(f"probe: RUN_DIR {str(run)!r} has no spec.json (not an autotaper run directory)")
    if data is None or isinstance(data, str):
        from autotaper.data import load_data
        from autotaper.spec import ModelSpec

        summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
        tokenizer = tokenizer or (summary.get("corpus") or {}).get("tokenizer") or "bytes"
        vocab = ModelSpec.load(run / "spec.json").vocab_size if tokenizer == "bpe" else None
        data = load_data(data, tokenizer=tokenizer, vocab_size=vocab)
    spec, model, step = load_run(run_dir, command="probe")
    data.check(vocab_size=spec.vocab_size, context_length=spec.context_length)
    rows = probe(model, val_windows(data.val, n=windows, context_length=spec.context_length),
                 batch_size=batch_size, device=device)
    result = {"run_dir": str(run_dir), "taper": spec.taper, "step": step, "corpus": data.name,
              "windows": windows, "tokens": windows * spec.context_length, "layers": [asdict(r) for r in rows]}
    atomic_write_text(Path(run_dir) / "probe.json", json.dumps(result, indent=1))
    if suggest_dim is not None:
        from autotaper.budget import solve_report

        text = suggest(result, dim=suggest_dim, strength=strength)
        sol = solve_report(spec.uniform(), text)  # checked: it solves to the run's uniform budget
        result["suggestion"] = {"taper": text, "params": sol.cost.params, "baseline_params": sol.baseline_cost.params}
    return result


CLIP = (0.25, 2.0)  # suggested ratios stay within these multiples of the uniform width


def suggest(result: dict, *, dim: str = "ffn", strength: float = 1.0) -> str:
    """A probe-guided taper: per-layer ratios that follow how far each layer turns the stream,
    the angle arccos(cos) between the stream before and after it, over the mean angle, raised
    to `strength` (below 1 pulls towards uniform) and clipped to CLIP. The angle, not the
    update norm: the first layer's update is many times the small embedding it is added to
    (on a trained proxy-xs, 43x against 0.3-0.4x for the others), which would starve every
    later layer. The text is an explicit `list` taper, solved to a budget like any other."""
    angles = np.arccos(np.clip([r["cos"] for r in result["layers"]], -1.0, 1.0))
    if not np.all(np.isfinite(angles)) or angles.mean() <= 0:
        raise InputError("probe: no layer turns the stream; nothing to suggest a taper from")
    ratios = np.clip((angles / angles.mean()) ** strength, *CLIP)
    return f"{dim}:list:" + ",".join(f"{r:.3f}" for r in ratios)


def to_table(result: dict) -> str:
    lines = [f"probe of {result['run_dir']} ({result['taper']}, step {result['step']}) on {result['tokens']:,} "
             f"validation tokens of {result['corpus']}: means over tokens",
             f"{'layer':>5} {'d':>5} {'ffn':>5} {'heads':>5} {'cos':>7} {'update':>7} {'attn cos':>8} "
             f"{'attn upd':>8} {'mlp cos':>8} {'mlp upd':>8}"]
    for r in result["layers"]:
        def f(v):
            return f"{v:8.4f}" if v is not None else f"{'-':>8}"
        lines.append(f"{r['layer']:>5} {r['d_model']:>5} {r['ffn']:>5} {r['heads']:>5} {r['cos']:7.4f} "
                     f"{r['update']:7.4f} {f(r['attn_cos'])} {f(r['attn_update'])} {f(r['mlp_cos'])} "
                     f"{f(r['mlp_update'])}")
    return "\n".join(lines)
