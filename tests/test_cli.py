import json
import subprocess
import sys

import pytest

from autotaper.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "autotaper", *args], capture_output=True, text=True, timeout=300)


def test_plan_json_has_baseline_and_tapered(capsys):
    assert main(["plan", "--preset", "440m", "--taper", "ffn:cosine:1.5:0.5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    base, tap = out["baseline"], out["tapered"]
    assert base["params"] == tap["params"] == 439_927_808
    assert base["flops_per_token"] == tap["flops_per_token"]
    assert len(tap["layers"]) == 24 and set(tap["layers"][0]) == {"ffn", "heads", "kv_heads", "d_model", "lr"}
    assert tap["layers"][0]["ffn"] == 5568 and tap["layers"][-1]["ffn"] == 1856
    assert out["delta"] == {"params": 0, "flops_per_token": 0.0}


def test_plan_table_shows_deltas(capsys):
    assert main(["plan", "--preset", "tiny", "--family", "gpt", "--taper", "heads:linear:1.5:0.5"]) == 0
    out = capsys.readouterr().out
    assert "heads ratios realised" in out
    rows = {line[:22].strip(): line[22:].split() for line in out.splitlines()
            if line.startswith(("params  ", "FLOPs/token"))}
    for name in ("params", "FLOPs/token (fwd)"):  # uniform, tapered, delta: exact for a heads taper
        uniform, tapered, delta = (int(v.replace(",", "")) for v in rows[name])
        assert uniform == tapered and delta == 0, rows


@pytest.mark.parametrize("args, needle", [
    (["plan", "--preset", "nope", "--taper", "uniform"], "unknown preset 'nope'"),
    (["plan", "--preset", "tiny", "--taper", "ffn:cosine:0:0.5"], "ffn.start"),
    (["plan", "--preset", "tiny", "--taper", "ffn:cosine:1.5:0.5:m=256"], "minimum of one multiple"),
    (["plan", "--preset", "tiny", "--family", "rwkv", "--taper", "uniform"], "unknown family 'rwkv'"),
    (["plan", "--preset", "tiny", "--taper", "uniform", "--constraint", "mem"], "--constraint"),
    (["plan", "--preset", "tiny"], "--taper"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_exits_2_with_one_line(args, needle):
    proc = run_cli(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_import_and_help_stay_light():
    code = ("import sys, autotaper, autotaper.cli; autotaper.cli.build_parser(); "
            "import autotaper.budget, autotaper.cost; "
            "heavy = [m for m in ('torch', 'ray', 'optuna', 'matplotlib', 'transformers') if m in sys.modules]; "
            "print(heavy)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert proc.stdout.strip() == "[]"
    assert run_cli("--help").returncode == 0


def test_public_api_survives_submodule_imports():
    """A submodule named like an API function would replace it on the package once imported."""
    import importlib
    import inspect

    import autotaper

    for sub in ("taper", "curves", "spec", "families", "cost", "budget", "models", "stats", "search", "cli"):
        importlib.import_module(f"autotaper.{sub}")
    for name in ("Taper", "ModelSpec", "solve", "count", "build_model", "solve_report", "register_curve"):
        assert not inspect.ismodule(getattr(autotaper, name)), name
    assert callable(autotaper.solve)


def test_plan_out_writes_a_spec_file_with_the_baselines_budget(tmp_path, capsys):
    from autotaper.cost import count
    from autotaper.spec import ModelSpec

    path = tmp_path / "handoff" / "440m-cosine.json"
    assert main(["plan", "--preset", "440m", "--taper", "ffn:cosine:1.5:0.5", "--out", str(path)]) == 0
    spec = ModelSpec.load(path)
    assert spec.taper == "ffn:cosine:1.5:0.5" and spec.layer_ffn[0] == 5568 and spec.layer_ffn[-1] == 1856
    assert count(spec).params == count(ModelSpec.from_name("440m")).params == 439_927_808
    assert count(spec).flops_per_token == count(ModelSpec.from_name("440m")).flops_per_token
    assert "autotaper train --spec" in capsys.readouterr().err


def test_train_spec_trains_what_plan_wrote_as_the_preset_path_does(tmp_path):
    from tests.helpers import write_corpus

    corpus = write_corpus(tmp_path / "corpus")
    env_args = ["--steps", "3", "--batch-size", "4", "--data", str(corpus), "--precision", "fp32", "--quiet", "--json"]
    spec = tmp_path / "tiny.json"
    assert run_cli("plan", "--preset", "tiny", "--taper", "ffn:linear:1.4:0.6", "--out", str(spec)).returncode == 0
    by_spec = run_cli("train", "--spec", str(spec), "--out", str(tmp_path / "a"), *env_args)
    by_preset = run_cli("train", "--preset", "tiny", "--taper", "ffn:linear:1.4:0.6", "--out", str(tmp_path / "b"),
                        *env_args)
    assert by_spec.returncode == 0 and by_preset.returncode == 0, by_spec.stderr + by_preset.stderr
    a, b = (json.loads(r.stdout.splitlines()[-1]) for r in (by_spec, by_preset))
    assert a["val_bpb"] == b["val_bpb"] and a["data_fingerprint"] == b["data_fingerprint"] and a["params"] == b["params"]


@pytest.mark.parametrize("content, field", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"family": "llama", "vocab_size": 256, "d_model": 32, "n_layers": 4, "n_heads": 4, "ffn_width": 64}',
     "context_length"),
    ('{"family": "llama", "vocab_size": 256, "d_model": 32, "n_layers": 0, "n_heads": 4, "ffn_width": 64, '
     '"context_length": 32}', "n_layers"),
    ('{"family": "llama", "vocab_size": 256, "d_model": 32, "n_layers": 2, "n_heads": 4, "ffn_width": 64, '
     '"context_length": 32, "layer_ffn": [64, 64, 64]}', "layer_ffn"),
    ('{"family": "llama", "vocab_size": 256, "d_model": 32, "n_layers": 2, "n_heads": 4, "ffn_width": 64, '
     '"context_length": 32, "widths": [1]}', "widths"),
    ('{"family": "transformerxl", "vocab_size": 256, "d_model": 32, "n_layers": 2, "n_heads": 4, "ffn_width": 64, '
     '"context_length": 32}', "transformerxl"),
])
def test_train_spec_refuses_a_malformed_spec_file_naming_the_field(tmp_path, content, field):
    path = tmp_path / "bad.json"
    path.write_text(content)
    out = subprocess.run([sys.executable, "-m", "autotaper", "train", "--spec", "bad.json", "--steps", "1"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 2 and field in out.stderr and "bad.json" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()


def test_train_needs_a_preset_or_a_spec_not_both(tmp_path):
    neither = run_cli("train", "--steps", "1")
    assert neither.returncode == 2 and "--preset" in neither.stderr
    both = run_cli("train", "--spec", "x.json", "--preset", "tiny", "--steps", "1")
    assert both.returncode == 2 and "--spec gives the whole model" in both.stderr


@pytest.mark.parametrize("args", [["presets"], ["plan", "--preset", "440m", "--taper", "ffn:cosine:1.5:0.5"]])
def test_a_reader_that_goes_away_ends_the_command_quietly(args):
    """`autotaper presets | head -1`: the pipe's read end is closed before anything is written,
    so the very first write fails with EPIPE, every time."""
    proc = subprocess.Popen([sys.executable, "-m", "autotaper", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert err == "", err  # no traceback, no "Exception ignored" at the interpreter's exit
