"""Every CLI command runs here at least once (issue 13): presets, --version, compare, a
diverging train (exit 1), Ctrl-C (exit 130), and the search's overrides."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import autotaper
from autotaper.cli import main
from tests.helpers import assert_t_interval, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return str(write_corpus(tmp_path_factory.mktemp("commands") / "corpus"))


@pytest.fixture(autouse=True)
def _cwd(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOTAPER_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def test_presets_lists_every_preset_with_the_built_models_parameter_count(capsys):
    from autotaper.models import build_model
    from autotaper.spec import PRESETS, ModelSpec

    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(PRESETS)
    for line in lines:
        name = line.split()[0]
        printed = int(line.rsplit("params=", 1)[1].replace(",", ""))
        if name in ("tiny", "proxy-xs", "proxy-s"):  # small enough to build here
            assert printed == sum(p.numel() for p in build_model(ModelSpec.from_name(name)).parameters())


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"autotaper {autotaper.__version__}"


def test_compare_reports_paired_deltas_and_their_interval(corpus, capsys):
    assert main(["compare", "--preset", "tiny", "--taper", "ffn:linear:1.5:0.5", "--seeds", "3", "--steps", "8",
                 "--batch-size", "4", "--data", corpus, "--precision", "fp32", "--quiet", "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out.strip().splitlines()[-1])
    seeds = [line for line in captured.err.splitlines() if line.startswith("seed ")]
    assert len(seeds) == 3 and out["taper"] == "ffn:linear:1.5:0.5"
    deltas = [float(line.split("delta ")[1]) for line in seeds]
    assert out["paired"]["mean"] == pytest.approx(sum(deltas) / 3, abs=2e-4)  # the printed deltas are rounded to 1e-4
    assert_t_interval(out["paired"]["ci95"], out["deltas"])
    assert "vs uniform:" in captured.err


def test_a_diverging_train_exits_1_with_its_reason(corpus, capsys):
    code = main(["train", "--preset", "tiny", "--steps", "30", "--lr", "50", "--batch-size", "4", "--data", corpus,
                 "--precision", "fp32", "--quiet", "--out", "run"])
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("note: ")]
    assert code == 1 and err[0].startswith("diverged (") and "step" in err[0] and "val_bpb n/a" in err[1]
    assert not any("export it" in line for line in err)


def test_ctrl_c_ends_a_train_with_130_and_one_line(corpus, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "autotaper", "train", "--preset", "tiny", "--steps", "100000",
                             "--batch-size", "4", "--data", corpus, "--precision", "fp32", "--quiet", "--log-every", "1",
                             "--out", str(tmp_path / "run")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "run" / "metrics.jsonl").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)  # the event: training has logged a step
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # never left training for the rest of the suite
            proc.kill()
            proc.wait(timeout=60)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "autotaper: interrupted", err
    assert "Traceback" not in err


def test_search_overrides_reach_the_study(corpus, tmp_path):
    import optuna
    import yaml

    from autotaper.search.records import SPACE_ATTR
    from tests.helpers import micro_space

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(micro_space(corpus, name="over")))
    assert main(["search", "--space", "s.yaml", "--preset", "tiny", "--family", "gpt", "--steps", "6",
                 "--seeds", "2", "--n-trials", "2", "--sampler-seed", "7", "--no-confirm", "--quiet"]) == 0
    # its own study, named by the overrides: the space's own study ("over") stays the space's
    assert not Path("runs/search/over").exists()
    study = optuna.load_study(study_name="over-gpt-6steps", storage="sqlite:///runs/search/over-gpt-6steps/study.db")
    proxy = study.user_attrs[SPACE_ATTR]["proxy"]
    assert (proxy["family"], proxy["steps"], proxy["seeds"]) == ("gpt", 6, 2)
    assert all(t.user_attrs.get("steps_trained", 0) in (0, 6, 12) for t in study.trials)
