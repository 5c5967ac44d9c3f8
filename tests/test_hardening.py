"""Hardening (issue 25): every bad input is refused before anything is stored, every search
ends, nothing escapes its folder, no secret reaches the screen. One test per class of the
issue's campaign; each checks the exit status, that stderr holds only error lines and one of
them names the field, that no traceback is printed, that a stored study beside the command
keeps its bytes, that no file appears outside the working folder, and that the command ends
within a bound. A Hypothesis property drives the CLI with generated flags and spaces."""

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autotaper.cli import main
from tests.helpers import micro_space, write_corpus

SECRET = "Zx9SECRETpw"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return str(write_corpus(tmp_path_factory.mktemp("hardening") / "corpus"))


@pytest.fixture
def work(tmp_path, monkeypatch, corpus):
    """A working folder holding a stored study (kept.db) and the default-location study
    `kept`, a space file s.yaml of that study; `work.check()` asserts both studies keep their
    bytes and nothing appeared beside the working folder."""
    root = tmp_path / "work"
    root.mkdir()
    monkeypatch.chdir(root)
    monkeypatch.setenv("AUTOTAPER_CACHE", str(root / "cache"))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    from autotaper.search import parse_space
    from autotaper.search.records import SPACE_ATTR
    from autotaper.search.storage import open_storage

    identity = parse_space(micro_space(corpus, name="kept")).identity()
    for url in ("sqlite:///kept.db", "sqlite:///runs/search/kept/study.db"):
        study = optuna.create_study(storage=open_storage(url), study_name="kept")
        study.set_user_attr(SPACE_ATTR, identity)  # a study a search of s.yaml made
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    (root / "s.yaml").write_text(yaml.safe_dump(micro_space(corpus, name="kept")))

    def digest():
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file() and "cache" not in p.parts}

    before, siblings = digest(), sorted(os.listdir(tmp_path))

    def check(*, allow_new: bool = False):
        after = digest()
        assert {k: v for k, v in after.items() if k in before} == before, "a stored file changed"
        if not allow_new:
            assert sorted(after) == sorted(before), f"files appeared: {sorted(set(after) - set(before))}"
        assert sorted(os.listdir(tmp_path)) == siblings, "a file appeared outside the working folder"

    def space(**changes):
        (root / "s.yaml").write_text(yaml.safe_dump(micro_space(corpus, name="kept", **changes)))
        before["s.yaml"] = hashlib.sha256((root / "s.yaml").read_bytes()).hexdigest()
        return "s.yaml"

    return SimpleNamespace(path=root, parent=tmp_path, check=check, space=space, corpus=corpus)


def refused(args, capsys, needle, *, code=2, bound_s=60.0):
    """`autotaper ARGS` ends with `code` within `bound_s`, stderr holds error lines only (one per
    problem), one of them naming `needle`, and no traceback."""
    started = time.monotonic()
    got = main(args)
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if not line.startswith("note: ")]
    assert got == code, (args, err)
    assert err and all("error" in line.split(":", 2)[0] + line.split(":", 2)[1] for line in err), (args, err)
    assert any(needle in line for line in err), (args, needle, err)
    assert not any("Traceback" in line for line in err)
    assert elapsed < bound_s, f"took {elapsed:.1f} s"
    return err


def cli(*args, timeout=120, **kwargs):
    """The CLI in a subprocess (for inputs that would hang this process if a check regressed)."""
    return subprocess.run([sys.executable, "-m", "autotaper", *args], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


# 1. State changes before validation -------------------------------------------------------
@pytest.mark.parametrize("flags, changes, needle", [
    (["--data", "/dev/null", "--storage", "sqlite:///kept.db", "--study", "kept"], {}, "data"),
    (["--data", "/dev/null"], {}, "data"),  # the default-location study `kept`
    (["--study", "fresh", "--sampler-seed", "-1"], {}, "--sampler-seed"),
    (["--study", "fresh"], {"search": {"seed": -1}}, "search.seed"),
    (["--study", "fresh"], {"proxy": {"lr": float("inf")}}, "proxy.lr"),
    (["--study", "fresh"], {"proxy": {"batch_size": 10**9}}, "proxy.batch_size"),
    (["--study", "fresh"], {"proxy": {"batch_size": 2**19}}, "GiB"),  # within bounds, not within memory
    (["--study", "fresh"], {"proxy": {"shape": {"n_layers": 10**6}}}, "n_layers"),
    (["--study", "fresh"], {"proxy": {"shape": {"d_model": 2**16, "n_heads": 4}}}, "GiB"),
    (["--storage", "sqlite:///kept.db", "--study", "kept"], {"proxy": {"steps": 3}}, "proxy.steps: stored 10, given 3"),
])
def test_nothing_is_stored_before_every_check_passed(flags, changes, needle, work, capsys):
    space = work.space(**changes)
    refused(["search", "--space", space, *flags, "--quiet"], capsys, needle)
    work.check()
    assert not Path("runs/search/fresh").exists()


def test_a_ladder_checks_every_rung_before_the_first_stores_anything(work, capsys):
    data = micro_space(work.corpus, name="lad", proxy={"steps": 12, "eval_every": 12}, search={"n_trials": 3})
    data["ladder"] = {"rungs": [{"name": "t4"}, {"name": "huge", "d_model": 2**16, "ffn_width": 2**18}],
                      "tokens_per_param": 0.05, "steps": {"min": 8, "max": 30}, "probe": {"top_k": 1, "seeds": 2}}
    Path("lad.yaml").write_text(yaml.safe_dump(data))
    refused(["ladder", "--space", "lad.yaml", "--target", "440m", "--storage", "sqlite:///kept.db"], capsys, "GiB")
    work.check(allow_new=True)
    assert not Path("runs/ladder").exists() and not Path("runs/search/lad-t4").exists()


# 2. Searches that never end ----------------------------------------------------------------
def _failing(trial):
    from autotaper.search import Candidate

    s = trial.suggest_float("s", 0.1, 0.5)
    return Candidate(taper=f"ffn:linear:{1 + s:.3f}:{1 - s:.3f}", train={"lr": None})  # float(None) raises


def test_failed_trials_count_and_a_run_of_failures_stops_the_search(work):
    from autotaper.errors import SearchStopped
    from autotaper.search import FunctionSpace, Proxy, Settings, run_search

    proxy = Proxy(preset="tiny", steps=4, batch_size=4, seeds=2, precision="fp32", data=work.corpus)
    ends = FunctionSpace(_failing, proxy=proxy, settings=Settings(sampler="random", pruner="none", n_trials=3),
                         name="fails")
    started = time.monotonic()
    out = run_search(ends, quiet=True, confirm=False)
    assert time.monotonic() - started < 120
    trials = optuna.load_study(study_name="fails", storage=out.storage).trials
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 2 and all("TypeError" in t.user_attrs["reason"] for t in failed)  # + the reference

    stops = FunctionSpace(_failing, proxy=proxy, settings=Settings(sampler="random", pruner="none", n_trials=1000,
                                                                   stop_after_failures=4), name="stops")
    with pytest.raises(SearchStopped, match=r"the last 4 trials .* failed .* TypeError"):
        run_search(stops, quiet=True, confirm=False)
    trials = optuna.load_study(study_name="stops", storage="sqlite:///runs/search/stops/study.db").trials
    assert sum(t.state == optuna.trial.TrialState.FAIL for t in trials) == 4


@pytest.mark.parametrize("changes, needle", [
    ({"taper": {"ffn": {"curve": "linear", "strength": {"low": 0.1, "high": 0.5, "step": 0}}}}, "ffn.strength.step"),
    ({"taper": {"ffn": {"curve": "linear", "start": float("nan"), "end": 0.5}}}, "ffn.start"),
    ({"train": {"lr": float("nan")}}, "train.lr"),
    ({"taper": {"ffn": {"curve": "linear", "strength": 0.3, "multiple": {"low": 0.2, "high": 0.9}}}}, "ffn.multiple"),
    ({"taper": {"ffn": {"curve": "sigmoid", "strength": 0.3, "k": 1e308}}}, "sigmoid option k"),
    ({"taper": {"ffn": {"curve": "power", "start": 1e9, "end": 0.5}}}, "ffn.start"),
])
def test_a_space_whose_every_trial_would_fail_is_refused(changes, needle, work, capsys):
    space = work.space(**changes)
    refused(["search", "--space", space, "--study", "fresh", "--n-trials", "2", "--quiet"], capsys, needle, bound_s=30)
    work.check()


# 3. Path traversal and terminal escapes ----------------------------------------------------
@pytest.mark.parametrize("flags, name, needle", [
    (["--study", "../../../x"], "kept", "--study"),
    (["--study", "/tmp/autotaper-absolute-study"], "kept", "--study"),
    ([], "../../x", "name"),
    (["--study", "a\x1b[31mred"], "kept", "--study"),
    (["--study", "a/b"], "kept", "--study"),
])
def test_a_study_name_is_never_a_path_or_an_escape(flags, name, needle, work, capsys):
    Path("n.yaml").write_text(yaml.safe_dump(micro_space(work.corpus, name=name)))
    err = refused(["search", "--space", "n.yaml", *flags, "--quiet"], capsys, needle)
    assert not any("\x1b" in line for line in err)  # shown escaped
    work.check(allow_new=True)
    assert not Path("/tmp/autotaper-absolute-study").exists()
    assert not (work.parent / "x").exists() and not (work.parent.parent / "x").exists()


def test_reading_commands_refuse_a_path_as_study_name(work, capsys):
    for command in (["results"], ["report"], ["confirm"]):
        refused([*command, "--study", "../../kept"], capsys, "--study")
    work.check()


# 4. Unbounded work and special files -------------------------------------------------------
def test_special_files_are_refused_without_reading_them(work):
    os.mkfifo("fifo.yaml")
    os.mkfifo("fifo.txt")
    Path("x.bin").mkdir()
    Path("x.npy").mkdir()
    cases = [(["search", "--space", "/dev/zero"], "device"), (["search", "--space", "fifo.yaml"], "FIFO"),
             (["search", "--space", "runs"], "directory"),
             (["train", "--preset", "tiny", "--steps", "1", "--data", "/dev/zero"], "device"),
             (["train", "--preset", "tiny", "--steps", "1", "--data", "fifo.txt"], "FIFO"),
             (["train", "--preset", "tiny", "--steps", "1", "--data", "x.bin"], "directory"),
             (["train", "--preset", "tiny", "--steps", "1", "--data", "x.npy"], "directory")]
    for args, needle in cases:
        started = time.monotonic()
        proc = cli(*args, timeout=60, env={**os.environ, "AUTOTAPER_CACHE": str(work.path / "cache")})
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], (args, proc.stderr[-500:])
        assert time.monotonic() - started < 60
    work.check(allow_new=True)


def test_sizes_beyond_the_machine_are_refused_before_allocation(work, capsys):
    tokens = np.arange(10_000, dtype=np.int64) % 50
    tokens[5] = 2**40
    np.save("huge_id.npy", tokens)
    refused(["train", "--preset", "tiny", "--steps", "1", "--data", "huge_id.npy"], capsys, "token id", bound_s=20)
    spec = {"family": "llama", "vocab_size": 256, "d_model": 32, "n_layers": 10**6, "n_heads": 4, "ffn_width": 64,
            "context_length": 32}
    Path("deep.json").write_text(json.dumps(spec))
    refused(["train", "--spec", "deep.json", "--steps", "1", "--data", work.corpus], capsys, "n_layers", bound_s=20)
    spec.update(n_layers=2, head_dim=2**20)
    Path("wide.json").write_text(json.dumps(spec))
    refused(["train", "--spec", "wide.json", "--steps", "1", "--data", work.corpus], capsys, "GiB", bound_s=20)
    refused(["train", "--preset", "tiny", "--steps", "1", "--batch-size", str(2**20), "--data", work.corpus], capsys,
            "GiB", bound_s=20)
    work.space(proxy={"vocab_size": 10**12, "tokenizer": "bpe"})
    refused(["search", "--space", "s.yaml", "--study", "fresh"], capsys, "proxy.vocab_size", bound_s=20)
    refused(["probe", "run", "--windows", str(10**9)], capsys, "--windows")
    work.check(allow_new=True)
    assert not Path("runs/train").exists()


def test_yaml_and_json_bombs_are_refused_quickly(work, capsys):
    anchors = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    anchors += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    Path("bomb.yaml").write_text("description:\n" + "\n".join("  " + a for a in anchors)
                                 + "\nsearch: {n_trials: *a9}\n")
    err = refused(["search", "--space", "bomb.yaml"], capsys, "aliases", bound_s=10)
    assert max(len(line) for line in err) < 300  # the message does not repeat the bomb
    Path("deep.yaml").write_text("name: x\ndescription: " + "[" * 50_000 + "]" * 50_000 + "\n")
    refused(["search", "--space", "deep.yaml"], capsys, "nested", bound_s=10)
    Path("deep.json").write_text("[" * 50_000 + "]" * 50_000)
    refused(["train", "--spec", "deep.json"], capsys, "nested", bound_s=10)
    Path("twice.yaml").write_text(Path("s.yaml").read_text() + "search: {n_trials: 3}\n")
    refused(["search", "--space", "twice.yaml"], capsys, "duplicate key 'search'")
    work.check(allow_new=True)


# 5. Secrets ------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", [
    f"postgresql://alice@127.0.0.1:1/db?password={SECRET}",
    f"postgresql://alice@127.0.0.1:1/db?sslmode=disable&sslpassword={SECRET}",
    f"postgresql://alice:p@ss@{SECRET}@127.0.0.1:1/db",
    f"postgresql://alice:{SECRET}@127.0.0.1:1/db?connect_timeout=1",
    f"postgresql://alice@127.0.0.1:1/db?PassWord={SECRET}&application_name=x",
])
def test_a_secret_in_any_part_of_a_url_never_reaches_the_screen(url, work, capfd, monkeypatch):
    monkeypatch.setenv("AUTOTAPER_STORAGE_RETRY_S", "0")
    from autotaper.search.storage import mask_url, strip_password

    assert SECRET not in mask_url(url) and SECRET not in strip_password(url)
    code = main(["results", "--storage", url, "--study", "kept"])
    out = capfd.readouterr()
    assert code in (1, 2) and SECRET not in out.err and SECRET not in out.out
    monkeypatch.setenv("AUTOTAPER_STORAGE", url)
    code = main(["search", "--space", "s.yaml", "--quiet"])
    out = capfd.readouterr()
    assert code in (1, 2) and SECRET not in out.err and SECRET not in out.out
    work.check()


@given(password=st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=6, max_size=20)
       .filter(lambda p: not any(c in p for c in "?#/&") and p.strip() == p and ":" not in p[:1]),
       query=st.booleans())
@settings(max_examples=60, deadline=None)
def test_mask_url_hides_any_password(password, query):
    from autotaper.search.storage import mask_url, strip_password

    url = (f"postgresql://bob@db.example:5432/study?password={password}" if query else
           f"postgresql://bob:{password}@db.example:5432/study")
    for shown in (mask_url(url), strip_password(url)):
        assert password not in shown and "db.example:5432/study" in shown


# 6. Fields accepted that should be refused -----------------------------------------------------
@pytest.mark.parametrize("changes, needle", [
    ({"search": {"seed": "abc"}}, "search.seed"), ({"search": {"seed": 1.5}}, "search.seed"),
    ({"proxy": {"vocab_size": -5}}, "proxy.vocab_size"), ({"proxy": {"eval_every": True}}, "proxy.eval_every"),
    ({"proxy": {"tolerance": float("inf")}}, "proxy.tolerance"),
    ({"search": {"cpus_per_trial": float("inf")}}, "search.cpus_per_trial"),
    ({"search": {"stop_after_failures": -1}}, "search.stop_after_failures"),
    ({"taper": {"ffn": {"curve": "linear", "strength": {"low": 0.1, "high": 0.5, "log": "false"}}}}, "ffn.strength.log"),
    ({"taper": {"ffn": {"curve": "linear", "strength": [0.5, float("nan")]}}}, "ffn.strength"),
    ({"taper": {"ffn": {"curve": [1, 2], "strength": 0.3}}}, "ffn.curve"),
    ({"proxy": {"data": ""}}, "proxy.data"), ({"proxy": {"data": "/dev/zero"}}, "proxy.data"),
])
def test_fields_of_the_wrong_kind_or_range_are_refused(changes, needle, work, capsys):
    space = work.space(**changes)
    refused(["search", "--space", space, "--study", "fresh", "--quiet"], capsys, needle)
    work.check()


@pytest.mark.parametrize("args, needle", [
    (["search", "--space", "s.yaml", "--timeout", "nan"], "--timeout"),
    (["search", "--space", "s.yaml", "--budget", "inf"], "--budget"),
    (["calibrate", "--space", "s.yaml", "--target-mde", "nan"], "--target-mde"),
    (["train", "--preset", "tiny", "--seed", str(10**29)], "--seed"),
    (["train", "--preset", "tiny", "--tokenizer", "bpe", "--vocab-size", "-5"], "--vocab-size"),
    (["train", "--preset", "tiny", "--lr", "inf"], "--lr"),
    (["plan", "--preset", "tiny", "--taper", "ffn:power:1.5:0.5:p=1e308"], "taper ffn"),
    (["plan", "--preset", "tiny", "--taper", "ffn:sigmoid:1.5:0.5:k=1e308"], "taper ffn"),
    (["plan", "--preset", "tiny", "--taper", "uniform", "--tolerance", "inf"], "--tolerance"),
    (["train", "--preset", "tiny", "--data", ""], "--data"),
    (["search", "--space", "s.yaml", "--data", " "], "--data"),
    (["report", "--ladder", "/dev/zero"], "device"),
    (["plan", "--preset", "tiny", "--taper", "x" * 5000], "taper 'xxxx"),
])
def test_flags_out_of_range_are_refused(args, needle, work, capsys):
    err = refused(args, capsys, needle)
    assert all(len(line) < 400 for line in err)  # a long input is not echoed whole
    work.check()


def test_a_spec_whose_taper_disagrees_with_its_lists_is_refused(work, capsys):
    assert main(["plan", "--preset", "tiny", "--taper", "ffn:cosine:1.5:0.5", "--out", "spec.json"]) == 0
    spec = json.loads(Path("spec.json").read_text())
    Path("edited.json").write_text(json.dumps({**spec, "taper": "ffn:linear:1.2:0.8"}))
    capsys.readouterr()
    refused(["train", "--spec", "edited.json", "--steps", "1", "--data", work.corpus], capsys, "layer_ffn")
    assert not Path("runs/train").exists()


# 7. OS errors ------------------------------------------------------------------------------------
def test_os_errors_are_one_line_with_the_path(work, capsys):
    Path("adir").mkdir()
    Path("afile").write_text("x")
    refused(["plan", "--preset", "tiny", "--taper", "uniform", "--out", "adir"], capsys, "adir", code=1)
    refused(["plan", "--preset", "tiny", "--taper", "uniform", "--out", "afile/spec.json"], capsys, "afile", code=1)
    assert [p.name for p in Path("adir").iterdir()] == []  # no temporary file left behind
    refused(["results", "--storage", "journal:adir", "--study", "kept"], capsys, "directory")
    refused(["results", "--storage", "afile/x.db", "--study", "kept"], capsys, "afile")
    refused(["search", "--space", "adir"], capsys, "directory")
    Path("p").mkdir()
    Path("p/probe.json").write_text("{}")
    refused(["report", "--study", "kept", "--probe", "p", "--out", "r.html"], capsys, "per-layer rows")
    import torch

    if not torch.cuda.is_available():
        refused(["train", "--preset", "tiny", "--steps", "1", "--data", work.corpus, "--device", "cuda"], capsys,
                "no CUDA")
    work.check(allow_new=True)
    assert not Path("r.html").exists() and not Path("runs/train").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_out_is_one_line(work, capsys):
    Path("ro").mkdir(mode=0o500)
    refused(["plan", "--preset", "tiny", "--taper", "uniform", "--out", "ro/spec.json"], capsys, "ro", code=1)


# 8. A run folder reused ----------------------------------------------------------------------------
def test_a_run_folder_checks_its_identity_first_and_a_finished_run_says_complete(work, capsys):
    run = ["--steps", "2", "--batch-size", "4", "--data", work.corpus, "--precision", "fp32", "--quiet", "--out", "run"]
    assert main(["train", "--preset", "tiny", *run]) == 0
    capsys.readouterr()
    files = {p: p.stat().st_mtime_ns for p in Path("run").rglob("*") if p.is_file()}
    err = refused(["train", "--preset", "tiny", "--taper", "ffn:cosine:1.5:0.5", *run], capsys, "different run")
    assert "layer_ffn" in err[0] and "size mismatch" not in err[0]
    assert main(["train", "--preset", "tiny", *run]) == 0
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("note: ")]
    assert len(err) == 1 and err[0].startswith("complete: run already holds all 2 steps") and "tokens/s" not in err[0]
    assert {p: p.stat().st_mtime_ns for p in Path("run").rglob("*") if p.is_file()} == files


# 9. Files follow the umask -----------------------------------------------------------------------
@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_written_files_follow_the_umask(mask, work):
    old = os.umask(mask)
    try:
        assert main(["train", "--preset", "tiny", "--steps", "2", "--batch-size", "4", "--data", work.corpus,
                     "--precision", "fp32", "--quiet", "--out", "run"]) == 0
        assert main(["plan", "--preset", "tiny", "--taper", "ffn:cosine:1.5:0.5", "--out", "spec.json"]) == 0
        assert main(["probe", "run", "--data", work.corpus, "--windows", "2"]) == 0
    finally:
        os.umask(old)
    paths = [Path("spec.json"), *Path("run").rglob("*")]
    assert len(paths) > 8 and any(p.name == "model.safetensors" for p in paths)
    for p in paths:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o777 if p.is_dir() else 0o666) & ~mask, (p, oct(mode))


# 10. A study name taken by overrides -----------------------------------------------------------------
def test_overrides_name_their_own_study_and_a_refused_reopen_names_the_fields(work, capsys):
    from autotaper.cli import _load_space, build_parser

    args = build_parser().parse_args(["search", "--space", "s.yaml", "--preset", "tiny", "--steps", "20",
                                      "--seeds", "2:3"])
    assert _load_space(args).name == "kept-20steps-seeds2-3"  # the preset was the space's already
    args = build_parser().parse_args(["search", "--space", "s.yaml", "--steps", "20", "--study", "mine"])
    assert _load_space(args).name == "kept"  # an explicit --study is used as given
    work.space(proxy={"steps": 12, "lr": 0.002})
    err = refused(["search", "--space", "s.yaml", "--quiet"], capsys, "proxy.steps: stored 10, given 12")
    assert "proxy.lr: stored 0.003, given 0.002" in err[0]
    work.check()


# The property --------------------------------------------------------------------------------------------
ODD = st.one_of(st.just(float("nan")), st.just(float("inf")), st.just(-float("inf")),
                st.integers(min_value=2**40, max_value=2**70), st.integers(max_value=-1),
                st.text(max_size=12), st.booleans(), st.none(), st.lists(st.integers(), max_size=3),
                st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))
PROXY_FIELDS = ["preset", "family", "steps", "batch_size", "lr", "seeds", "constraint", "tolerance", "tokenizer",
                "vocab_size", "eval_every", "precision", "schedule", "compile", "strict_data", "parametrization",
                "depth_alpha", "base_d_model", "base_n_layers", "shape", "data"]
SEARCH_FIELDS = ["sampler", "pruner", "n_trials", "objectives", "seed", "cpus_per_trial", "gpus_per_trial",
                 "max_concurrent", "reuse_actors", "confirm", "budget", "stop_after_failures", "suggest_from_probe"]
FLAGS = st.sampled_from([["--n-trials"], ["--timeout"], ["--sampler-seed"], ["--steps"], ["--seeds"], ["--budget"],
                         ["--study"], ["--workers"], ["--preset"], ["--param"], ["--depth-alpha"], ["--storage"]])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(proxy=st.dictionaries(st.sampled_from(PROXY_FIELDS), ODD, max_size=2),
       search=st.dictionaries(st.sampled_from(SEARCH_FIELDS), ODD, max_size=2),
       flags=st.lists(st.tuples(FLAGS, st.one_of(ODD.map(str), st.text(max_size=8))), max_size=2))
def test_the_cli_refuses_odd_input_cleanly(proxy, search, flags, work, capfd):
    """Any mix of odd space fields and flags: exit 0, 1 or 2, never a traceback; on exit 2 the
    stored studies keep their bytes; nothing is written outside the working folder."""
    data = micro_space(work.corpus, name="odd", proxy=proxy, search={**search, "n_trials": 1}
                       if "n_trials" not in search else search)
    try:
        Path("odd.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
    except (yaml.YAMLError, ValueError):
        return
    argv = ["search", "--space", "odd.yaml", "--no-confirm", "--quiet", "--timeout", "20"]
    for flag, value in flags:
        argv += [*flag, value]
    code = main(argv)
    out = capfd.readouterr()
    assert code in (0, 1, 2), (argv, out.err[-2000:])
    assert "Traceback" not in out.err, (argv, out.err[-2000:])
    if code == 2:
        work.check(allow_new=True)
    else:
        siblings = sorted(os.listdir(work.parent))
        assert siblings == ["work"], siblings
