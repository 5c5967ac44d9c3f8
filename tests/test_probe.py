"""The residual-stream probe: in range, exact on known cases, and the CLI around it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autotaper.budget import solve
from autotaper.data import load_data
from autotaper.data.tokens import val_windows
from autotaper.models import build_model
from autotaper.probe import probe
from autotaper.spec import ModelSpec
from autotaper.train import TrainConfig, train
from autotaper.train.checkpoint import load_run
from tests.helpers import write_corpus


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    return load_data(str(write_corpus(root / "corpus")), cache_dir=root / "cache")


@pytest.mark.parametrize("family, taper", [("llama", "ffn:cosine:1.5:0.5"), ("gpt", "heads:linear:1.5:0.5"),
                                           ("gated", "uniform")])
def test_probe_values_are_in_range_for_trained_models(data, tmp_path, family, taper):
    spec = solve(ModelSpec.from_name("tiny", family=family, **({"n_kv_heads": 4} if family == "gpt" else {})), taper)
    r = train(spec, data, TrainConfig(steps=5, batch_size=4, precision="fp32"), out_dir=tmp_path, quiet=True)
    assert r.status == "complete"
    _, model, step = load_run(tmp_path)
    assert step == 5
    rows = probe(model, val_windows(data.val, n=8, context_length=spec.context_length), batch_size=4)
    assert [r.layer for r in rows] == list(range(spec.n_layers))
    assert [r.ffn for r in rows] == list(spec.layer_ffn)
    for r in rows:
        for c in (r.cos, r.attn_cos, r.mlp_cos):
            assert -1.0 <= c <= 1.0 + 1e-9
        for u in (r.update, r.attn_update, r.mlp_update):
            assert u > 0 and np.isfinite(u)


def test_zeroed_blocks_leave_the_stream_unchanged(data):
    """A block whose output projections are zero adds nothing: similarity 1, update 0, in both
    parts; the other blocks still move the stream."""
    spec = ModelSpec.from_name("tiny", family="gpt", n_kv_heads=4)
    model = build_model(spec, seed=0)
    with torch.no_grad():
        for name in ("attn.c_proj", "mlp.c_proj"):
            proj = model.h[1].get_submodule(name)
            proj.weight.zero_()
            proj.bias.zero_()
    rows = probe(model, val_windows(data.val, n=4, context_length=spec.context_length))
    z = rows[1]
    assert z.cos == pytest.approx(1.0, abs=1e-9) and z.update == pytest.approx(0.0, abs=1e-12)
    assert z.attn_cos == pytest.approx(1.0, abs=1e-9) and z.attn_update == 0.0
    assert z.mlp_cos == pytest.approx(1.0, abs=1e-9) and z.mlp_update == 0.0
    assert rows[0].update > 1e-4 and rows[2].update > 1e-4


def test_probe_agrees_with_a_forward_pass_written_out(data):
    """Layer 0 of a tapered llama, recomputed by hand from the embedding: the probe's numbers
    are the token means of cos(x, y) and |y - x| / |x|."""
    spec = solve(ModelSpec.from_name("tiny"), "ffn:cosine:1.5:0.5")
    model = build_model(spec, seed=3).eval()
    windows = val_windows(data.val, n=2, context_length=spec.context_length)
    rows = probe(model, windows)
    idx = torch.from_numpy(windows[:, :-1].astype(np.int64))
    T = idx.shape[1]
    with torch.no_grad():
        x = model.embed(idx)
        y = model.layers[0](x, model.rope_cos[:T], model.rope_sin[:T])
    x, y = x.double(), y.double()
    assert rows[0].cos == pytest.approx(F.cosine_similarity(x, y, dim=-1).mean().item(), rel=1e-9)
    assert rows[0].update == pytest.approx(((y - x).norm(dim=-1) / x.norm(dim=-1)).mean().item(), rel=1e-9)


def test_probe_cli_writes_json_next_to_the_run_and_refuses_bad_input(data, tmp_path):
    corpus = data.manifest["corpus"]
    run = tmp_path / "run"
    train(ModelSpec.from_name("tiny"), data, TrainConfig(steps=2, batch_size=2, precision="fp32"), out_dir=run,
          quiet=True)
    proc = subprocess.run([sys.executable, "-m", "autotaper", "probe", str(run), "--data", corpus, "--windows", "4",
                           "--json"], capture_output=True, text=True,
                          env={**os.environ, "AUTOTAPER_CACHE": str(tmp_path / "cache")}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert len(out["layers"]) == 4 and out["tokens"] == 4 * 32
    assert json.loads((run / "probe.json").read_text()) == out
    assert (run / "probe.svg").read_text().startswith("<svg")
    bad = subprocess.run([sys.executable, "-m", "autotaper", "probe", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "has no spec.json" in bad.stderr and len(bad.stderr.splitlines()) == 1


def test_suggestion_follows_the_measured_updates_and_solves_to_the_budget():
    from autotaper.budget import solve_report
    from autotaper.cost import count
    from autotaper.probe import suggest

    cos = (0.33, 0.90, 0.95, 0.96, 0.98, 0.99)  # proxy-xs has 6 layers
    result = {"layers": [{"cos": c} for c in cos]}
    text = suggest(result)
    ratios = [float(r) for r in text.split(":")[2].split(",")]
    angles = np.arccos(cos)
    assert ratios == sorted(ratios, reverse=True) and ratios[0] == 2.0  # clipped
    assert ratios[1] / ratios[2] == pytest.approx(angles[1] / angles[2], rel=1e-2)
    half = [float(r) for r in suggest(result, strength=0.5).split(":")[2].split(",")]
    assert all(abs(h - 1) <= abs(r - 1) for h, r in zip(half, ratios))  # pulled towards uniform
    base = ModelSpec.from_name("proxy-xs")
    sol = solve_report(base, text)
    assert count(sol.spec).params == pytest.approx(count(base).params, rel=1e-3)
    assert sol.spec.layer_ffn[0] > sol.spec.layer_ffn[-1]
