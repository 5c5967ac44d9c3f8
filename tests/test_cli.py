import json
import subprocess
import sys

import pytest

from autotaper.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "autotaper", *args], capture_output=True, text=True)


def test_plan_json_has_baseline_and_tapered(capsys):
    assert main(["plan", "--preset", "440m", "--taper", "ffn:cosine:1.5:0.5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    base, tap = out["baseline"], out["tapered"]
    assert base["params"] == tap["params"] == 439_927_808
    assert base["flops_per_token"] == tap["flops_per_token"]
    assert len(tap["layers"]) == 24 and set(tap["layers"][0]) == {"ffn", "heads", "kv_heads", "d_model"}
    assert tap["layers"][0]["ffn"] == 5568 and tap["layers"][-1]["ffn"] == 1856
    assert out["delta"] == {"params": 0, "flops_per_token": 0.0}


def test_plan_table_shows_deltas(capsys):
    assert main(["plan", "--preset", "tiny", "--family", "gpt", "--taper", "heads:linear:1.5:0.5"]) == 0
    out = capsys.readouterr().out
    assert "heads ratios realised" in out and "params" in out and "+0" in out


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
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
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
