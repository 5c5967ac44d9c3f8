"""A corpus of malformed input (issue 12): taper texts, YAML spaces, spec files, data paths and
CLI numbers. Each case is refused with one line on stderr that names the field, exit status
2, and nothing already stored changes: a study beside it keeps its bytes, no run folder
appears. Hypothesis drives the taper and space grammars with generated input."""

import hashlib
import json
from pathlib import Path

import optuna
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from autotaper.cli import main
from autotaper.search import parse_space
from autotaper.taper import Taper
from tests.helpers import micro_space, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return str(write_corpus(tmp_path_factory.mktemp("malformed") / "corpus"))


@pytest.fixture
def stored(tmp_path, monkeypatch):
    """A study with three trials in a journal, in the cwd, and a digest of every file there."""
    from autotaper.search.storage import open_storage

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTOTAPER_CACHE", str(tmp_path / "cache"))
    url = f"journal:{tmp_path / 'kept' / 'journal.log'}"
    optuna.create_study(storage=open_storage(url), study_name="kept").optimize(
        lambda t: t.suggest_float("x", 0, 1), n_trials=3)

    def digest():
        return {str(p.relative_to(tmp_path)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(tmp_path.rglob("*")) if p.is_file() and "cache" not in p.parts}

    digest.url = url
    return digest


def refused(args, capsys, needle):
    """Exit 2, and stderr holds only error lines (one per problem: usually one), one of them
    naming the field."""
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (args, err)
    assert err and all(line.startswith(("autotaper: error: ", "error: ")) for line in err), (args, err)
    assert any(needle in line for line in err), (args, err)


TAPERS = [
    ("ffn:cosine:-1.5:0.5", "ffn.start"), ("ffn:cosine:1.5:0", "ffn.end"), ("ffn:cosine:1.5:inf", "ffn.end"),
    ("ffn:cosine:nan:0.5", "ffn.start"), ("ffn:wiggle:1.5:0.5", "unknown curve 'wiggle'"),
    ("mlp:cosine:1.5:0.5", "unknown dim 'mlp'"), ("ffn:cosine:1.5", "START and END"),
    ("ffn:cosine:1.5:abc", "ffn.end must be a number"), ("ffn:cosine:1.5:0.5:m=0", "ffn.m"),
    ("ffn:cosine:1.5:0.5:m=1e99", "taper ffn"), ("ffn:sigmoid:1.5:0.5:k=-1", "option k"),
    ("ffn:cosine:1.5:0.5+ffn:linear:1.2:0.8", "more than once"), ("ffn:list:", "malformed"),
    ("ffn:list:1,0,1", "list ratios must be > 0"), ("ffn:list:1,1", "the list has 2 ratios"),
    ("heads:linear:1.5:0.5:m=3", "heads.m"), ("ffn:cosine:1.5:0.5:m=256", "minimum of one multiple"),
    (":::", "taper"), ("ffn:cosine:1.5:0.5:", "taper"),
]


@pytest.mark.parametrize("text, needle", TAPERS)
def test_malformed_taper_text(text, needle, capsys, stored):
    before = stored()
    refused(["plan", "--preset", "tiny", "--taper", text, "--out", "spec.json"], capsys, needle)
    assert stored() == before


def _space(corpus, **changes):
    return micro_space(corpus, name="kept", **changes)


SPACES = [
    ({"proxy": {"steps": 0}}, "proxy.steps"), ({"proxy": {"steps": "ten"}}, "proxy.steps"),
    ({"proxy": {"preset": "huge"}}, "proxy.preset"), ({"proxy": {"lr": -1}}, "proxy.lr"),
    ({"proxy": {"colour": "red"}}, "proxy.colour"), ({"proxy": {"seeds": {"min": 3, "max": 1}}}, "proxy.seeds"),
    ({"proxy": {"tolerance": -0.1}}, "proxy.tolerance"), ({"proxy": {"strict_data": "yes"}}, "proxy.strict_data"),
    ({"proxy": {"data": "/nowhere/at/all"}}, "proxy.data"), ({"search": {"sampler": "annealing"}}, "search.sampler"),
    ({"search": {"pruner": "sometimes"}}, "search.pruner"), ({"search": {"n_trials": 0}}, "search.n_trials"),
    ({"search": {"budget": "10 fortnights"}}, "search.budget"),
    ({"search": {"reuse_actors": "sometimes"}}, "search.reuse_actors: must be true or false"),
    ({"taper": {"ffn": {"curve": "zigzag"}}}, "zigzag"),
    ({"taper": {"ffn": {"curve": "linear", "strength": {"low": 0.8, "high": 0.2}}}}, "ffn.strength: inverted range"),
    ({"taper": {"depth": {"curve": "linear"}}}, "depth"),
    ({"extras": 1}, "extras"),
]


@pytest.mark.parametrize("changes, needle", SPACES)
def test_malformed_space_file(changes, needle, corpus, capsys, stored):
    before = stored()
    data = _space(corpus)
    for section, value in changes.items():
        data[section] = {**data.get(section, {}), **value} if isinstance(value, dict) and section != "taper" else value
    Path("bad.yaml").write_text(yaml.safe_dump(data))
    refused(["search", "--space", "bad.yaml", "--storage", stored.url, "--study", "kept", "--quiet"], capsys, needle)
    Path("bad.yaml").unlink()
    assert stored() == before


@pytest.mark.parametrize("text, needle", [
    ("proxy: [1, 2", "bad.yaml"), ("- just\n- a list", "mapping"), ("", "mapping"), ("proxy: {steps: !!python/none}", "bad.yaml"),
])
def test_unreadable_space_yaml(text, needle, capsys, stored):
    before = stored()
    Path("bad.yaml").write_text(text)
    refused(["search", "--space", "bad.yaml", "--storage", stored.url, "--quiet"], capsys, needle)
    Path("bad.yaml").unlink()
    assert stored() == before


SPEC = {"family": "llama", "vocab_size": 256, "d_model": 32, "n_layers": 2, "n_heads": 4, "ffn_width": 64,
        "context_length": 32}


@pytest.mark.parametrize("change, needle", [
    ({"n_layers": 0}, "n_layers"), ({"d_model": -32}, "d_model"), ({"n_heads": 3}, "n_heads"),
    ({"layer_ffn": [64, 64, 64]}, "layer_ffn"), ({"layer_ffn": [64, 0]}, "layer_ffn"), ({"family": "rnn"}, "rnn"),
    ({"vocab_size": "many"}, "vocab_size"), ({"widths": [1]}, "widths"),
])
def test_malformed_spec_file(change, needle, capsys, stored, corpus):
    before = stored()
    Path("bad.json").write_text(json.dumps({**SPEC, **change}))
    refused(["train", "--spec", "bad.json", "--steps", "1", "--data", corpus, "--out", "run"], capsys, needle)
    assert not Path("run").exists()
    Path("bad.json").unlink()
    assert stored() == before


@pytest.mark.parametrize("make, needle", [
    (lambda d: str(d / "missing.txt"), "does not exist"),
    (lambda d: (d / "empty").mkdir() or str(d / "empty"), "holds no text files"),
    (lambda d: (d / "blob.txt").write_bytes(b"\x00\x01" * 500) and str(d / "blob.txt"), "binary content"),
    (lambda d: str(d / "*.nothing"), "matches no files"),
    (lambda d: (d / "odd.bin").write_bytes(b"\x01\x02\x03") and str(d / "odd.bin"), "odd byte length"),
    (lambda d: (d / "neg.npy").write_bytes(b"") or __import__("numpy").save(d / "neg.npy", __import__("numpy").array([-1, 2]))
     or str(d / "neg.npy"), "negative token ids"),
    (lambda d: (d / "one.txt").write_text("hello " * 50) and str(d / "one.txt"), "at least two documents"),
])
def test_malformed_data_path(make, needle, capsys, stored, tmp_path):
    source = make(tmp_path)
    before = stored()
    refused(["train", "--preset", "tiny", "--steps", "1", "--data", source, "--out", "run"], capsys, needle)
    assert not Path("run").exists() and stored() == before


@pytest.mark.parametrize("args, needle", [
    (["train", "--preset", "tiny", "--steps", "0"], "steps"),
    (["train", "--preset", "tiny", "--steps", "ten"], "--steps"),
    (["train", "--preset", "tiny", "--batch-size", "0"], "--batch-size"),
    (["train", "--preset", "tiny", "--lr", "-1"], "lr"),
    (["train", "--preset", "tiny", "--lr", "nan"], "lr"),
    (["train", "--preset", "tiny", "--grad-accum", "0"], "--grad-accum"),
    (["plan", "--preset", "tiny", "--taper", "uniform", "--tolerance", "nan"], "tolerance"),
    (["plan", "--preset", "tiny", "--taper", "uniform", "--tolerance", "-1"], "tolerance"),
    (["search", "--space", "s.yaml", "--n-trials", "0"], "--n-trials"),
    (["search", "--space", "s.yaml", "--timeout", "-5"], "--timeout"),
    (["search", "--space", "s.yaml", "--workers", "0"], "--workers"),
    (["search", "--space", "s.yaml", "--workers", "lots"], "--workers"),
    (["search", "--space", "s.yaml", "--seeds", "3:1"], "--seeds"),
    (["search", "--space", "s.yaml", "--budget", "10x"], "--budget"),
    (["search", "--space", "s.yaml", "--steps", "-3"], "--steps"),
    (["search", "--space", "s.yaml", "--backend", "ray", "--cpus-per-trial", "0"], "--cpus-per-trial"),
    (["search", "--space", "s.yaml", "--submit", "http://127.0.0.1:1"], "--backend ray"),
    (["search", "--space", "s.yaml", "--backend", "ray", "--submit", "http://127.0.0.1:1"], "--storage"),
    (["search", "--space", "s.yaml", "--backend", "ray", "--submit", "http://127.0.0.1:1", "--storage",
      "sqlite:///study.db"], "absolute path"),
    (["search", "--space", "s.yaml", "--backend", "ray", "--submit", "http://127.0.0.1:1", "--storage",
      "sqlite:////tmp/x/study.db"], "--submit"),
])
def test_malformed_cli_numbers(args, needle, capsys, stored, corpus):
    Path("s.yaml").write_text(yaml.safe_dump(_space(corpus)))
    before = stored()
    if args[0] == "train":
        args = [*args, "--data", corpus, "--out", "run"]
    refused(args, capsys, needle)
    assert not Path("run").exists() and stored() == before


# -- the grammars under generated input ------------------------------------------------------------
TOKENS = st.sampled_from(["ffn", "heads", "embed", "mlp", "cosine", "linear", "sigmoid", "list", "step", "power",
                          "uniform", "1.5", "0.5", "0", "-1", "nan", "inf", "1e400", "k=3", "m=16", "m=0", "p=2",
                          "early=0.5", "1,2", ",", "=", "", " ", "+", "é", "\x00"])


@given(st.lists(TOKENS, max_size=8).map(":".join) | st.text(max_size=40))
def test_the_taper_grammar_parses_or_refuses_with_a_value_error(text):
    try:
        taper = Taper.parse(text)
    except ValueError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert Taper.parse(str(taper)) == taper  # what it accepts, it prints back in a form it accepts


KEYS = {"proxy": ["preset", "steps", "seeds", "lr", "tolerance", "constraint", "tokenizer", "precision", "data",
                  "batch_size", "eval_every", "strict_data", "colour"],
        "search": ["sampler", "pruner", "n_trials", "seed", "objectives", "budget", "confirm", "unknown"],
        "ffn": ["curve", "start", "end", "strength", "asymmetry", "k", "multiple", "colour"]}
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 2000), st.floats(allow_nan=True),
                   st.sampled_from(["tpe", "grid", "cosine", "linear", "sigmoid", "tiny", "huge", "bpb", "1h", "x",
                                    "params", "bytes", "fp32"]),
                   st.lists(st.sampled_from(["cosine", "linear", 0.5, 16]), max_size=3),
                   st.fixed_dictionaries({}, optional={"low": st.floats(-2, 2), "high": st.floats(-2, 2),
                                                       "min": st.integers(-1, 4), "max": st.integers(-1, 4)}))


@given(st.fixed_dictionaries({}, optional={
    "proxy": st.dictionaries(st.sampled_from(KEYS["proxy"]), VALUES, max_size=4),
    "search": st.dictionaries(st.sampled_from(KEYS["search"]), VALUES, max_size=4),
    "taper": st.fixed_dictionaries({}, optional={"ffn": st.dictionaries(st.sampled_from(KEYS["ffn"]), VALUES,
                                                                        max_size=4)}),
}))
def test_the_space_grammar_parses_or_refuses_with_a_value_error(data):
    try:
        space = parse_space(data, name="generated")
    except ValueError as e:
        assert str(e)
        return
    assert space.proxy.problems() == [] and space.settings.problems() == []
