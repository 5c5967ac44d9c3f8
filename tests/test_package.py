"""The package's shape (issue 26): its error hierarchy, its import graph, its CLI's help, and
the API objects a Python user gets back."""

import numpy as np
import pytest

from autotaper import errors
from autotaper.cli import EXIT_BUG, main


def test_bad_input_is_an_input_error_and_still_a_value_error():
    from autotaper.taper import Taper

    with pytest.raises(errors.InputError) as info:
        Taper.parse("ffn:cosine:1.5")
    assert isinstance(info.value, ValueError) and isinstance(info.value, errors.AutotaperError)
    assert info.value.exit_code == 2


def test_faults_exit_1_and_keep_their_builtin_bases():
    assert errors.StorageError("x").exit_code == 1
    assert isinstance(errors.CheckpointError(28, "disk full"), OSError)
    assert errors.CheckpointError(28, "disk full").strerror == "disk full"
    assert isinstance(errors.SearchStopped("x"), RuntimeError)
    assert issubclass(errors.DataError, errors.InputError) and issubclass(errors.VersionSkew, errors.InputError)


def test_a_problems_error_survives_pickling():
    import pickle

    e = pickle.loads(pickle.dumps(errors.ProblemsError("space.yaml", ["a: 1", "b: 2"])))
    assert (e.where, e.problems) == ("space.yaml", ["a: 1", "b: 2"])


def test_bad_input_at_the_cli_is_one_line_exit_2(capsys):
    assert main(["plan", "--preset", "tiny", "--taper", "ffn:cosine:1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("autotaper: error:") and "Traceback" not in err[0]


def test_a_value_error_inside_a_dependency_is_a_bug_not_bad_input(monkeypatch, capsys):
    """numpy's own ValueError (a negative dimension) raised where autotaper's code called it is
    autotaper's bug: the CLI shows the traceback and asks for a report, and never exits 2."""
    import autotaper.budget

    def broken(*args, **kwargs):
        return np.zeros(-1)

    monkeypatch.setattr(autotaper.budget, "solve_report", broken)
    code = main(["plan", "--preset", "tiny", "--taper", "ffn:cosine:1.5:0.5"])
    err = capsys.readouterr().err
    assert code == EXIT_BUG != 2
    assert "Traceback (most recent call last)" in err and "negative dimensions" in err
    assert "this is a bug in autotaper" in err.strip().splitlines()[-1]


def test_our_fault_exits_1_without_a_traceback(monkeypatch, capsys):
    import autotaper.budget

    def down(*args, **kwargs):
        raise errors.StorageError("storage: sqlite:///x.db unreachable for 600 s")

    monkeypatch.setattr(autotaper.budget, "solve_report", down)
    assert main(["plan", "--preset", "tiny", "--taper", "ffn:cosine:1.5:0.5"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["autotaper: error: storage: sqlite:///x.db unreachable for 600 s"]


# The import graph: every import the package makes (those inside functions included, those
# under `if TYPE_CHECKING:` not, as they never run), computed from the source.
LAYERS = [  # lowest first; a module may import its own layer and the layers below it
    ["autotaper.errors", "autotaper._io", "autotaper._lazy", "autotaper.stats", "autotaper.log", "autotaper.urls"],
    ["autotaper.curves"],
    ["autotaper.taper"],
    ["autotaper.families", "autotaper.parametrization", "autotaper.spec"],
    ["autotaper.cost", "autotaper.budget", "autotaper.memory"],
    ["autotaper.models", "autotaper.hf"],
    ["autotaper.data", "autotaper.train", "autotaper.probe", "autotaper.cluster"],
    ["autotaper.paired"],
    ["autotaper.search"],
    ["autotaper.ladder"],
    ["autotaper.report", "autotaper.export"],
    ["autotaper.cli", "autotaper.__main__"],
]


def _import_graph():
    import ast
    from pathlib import Path

    import autotaper

    root = Path(autotaper.__file__).parent

    def name_of(path):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    modules = {name_of(p): p for p in root.rglob("*.py")}
    edges = {}
    for mod, path in modules.items():
        tree = ast.parse(path.read_text())
        hidden = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                  for stmt in node.body for n in ast.walk(stmt)}
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        found = set()
        for node in ast.walk(tree):
            if id(node) in hidden:
                continue
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    found.add(sub if sub in modules else target)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        edges[mod] = {t for t in found if t in modules and t != mod}
    return modules, edges


def _layer(mod):
    hits = [i for i, layer in enumerate(LAYERS) for p in layer if mod == p or mod.startswith(p + ".")]
    return max(hits) if hits else None


def test_every_module_has_a_layer():
    modules, _ = _import_graph()
    assert [m for m in modules if m != "autotaper" and _layer(m) is None] == []


def test_no_module_imports_up_the_chain():
    """taper -> spec -> budget -> models -> data/train -> paired -> search -> ladder -> report -> cli:
    nothing imports a later layer (the package root's lazy names and a package re-exporting its
    own modules aside)."""
    _, edges = _import_graph()
    upward = [f"{m} -> {t}" for m, ts in edges.items() for t in ts
              if m != "autotaper" and t != "autotaper" and not t.startswith(m + ".") and _layer(t) > _layer(m)]
    assert upward == []


def test_the_import_graph_has_no_cycle():
    import graphlib

    _, edges = _import_graph()
    graph = {m: {t for t in ts if t != "autotaper"} for m, ts in edges.items() if m != "autotaper"}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as e:
        pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")


def test_the_graph_sees_imports_inside_functions():
    """The check above would pass vacuously if function-level imports were missed: the CLI imports
    the search only inside its commands."""
    _, edges = _import_graph()
    assert "autotaper.search.results" in edges["autotaper.cli"] or any(
        t.startswith("autotaper.search") for t in edges["autotaper.cli"])
    assert "autotaper.models.rules" in edges["autotaper.train.trainer"]


def test_no_search_module_is_over_400_lines():
    from pathlib import Path

    import autotaper.search

    root = Path(autotaper.search.__file__).parent
    long = {str(p.relative_to(root)): n for p in root.rglob("*.py") if (n := len(p.read_text().splitlines())) > 450}
    assert long == {}


# --help: every command, every flag with help text.
def _commands():
    import argparse

    from autotaper.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, sub.choices


def test_every_flag_of_every_command_has_help():
    import argparse

    parser, commands = _commands()
    missing = [f"{name} {'/'.join(a.option_strings) or a.dest}" for name, p in [("autotaper", parser), *commands.items()]
               for a in p._actions
               if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and not (a.help or "").strip()]
    assert missing == []
    # and its default, where it has one
    silent = [f"{name} {a.option_strings[0]}" for name, p in commands.items() for a in p._actions
              if a.option_strings and a.default not in (None, False, argparse.SUPPRESS)
              and not isinstance(a, argparse._HelpAction)
              and "default" not in p._get_formatter()._get_help_string(a) % {"default": a.default}]
    assert silent == []


def test_help_builds_for_every_command(capsys):
    from autotaper.cli import main

    _, commands = _commands()
    assert len(commands) >= 13
    for name in commands:
        with pytest.raises(SystemExit) as done:
            main([name, "--help"])
        assert done.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: autotaper " + name), name


# The API's objects round-trip through JSON.
def test_api_objects_round_trip_through_json():
    import json

    from autotaper.ladder import LadderResult
    from autotaper.search import Best, Calibration, CalibrationResult, Confirmation, SearchResult
    from autotaper.search.records import TrialRecord

    cal = Calibration(metric="val_bpb", seeds=[0, 1, 2], uniform=[1.0, 1.1, 0.9], reference_taper="ffn:cosine:1.5:0.5",
                      reference=[0.95, 1.02, 0.91], repeat=None, deterministic=True, device="cpu", run_wall_s=2.5)
    conf = Confirmation(text="t", winner=None, beats_uniform=False, seeds=[1000, 1001],
                        candidates=[{"taper": "ffn:linear:1.2:0.8", "trial": 3, "mean": -0.01, "ci95": [-0.02, 0.0]}],
                        mde=0.02, m=1, decomposition={"taper": "x"}, extra={"future_field": 1})
    objects = [
        cal,
        CalibrationResult(cal, "s", "sqlite:///x.db"),
        conf,
        Best(taper="ffn:linear:1.2:0.8", delta=-0.01, ci95=[-0.02, 0.0], seeds=2, confirmed=True,
             beats_uniform=False, text="t", trial=3, spec={"preset": "tiny"}),
        SearchResult(study_name="s", storage="sqlite:///x.db", trials=7, elapsed_s=12.5, calibration=cal.to_dict(),
                     plan="plan", confirmation=conf.to_dict()),
        LadderResult({"ladder": "l", "rungs": [], "recommendation": {"taper": "uniform"}}, "runs/l/ladder.json",
                     "runs/l/ladder.html"),
        TrialRecord(status="complete", taper="uniform", delta=0.0, se=None, ci95=None, seed_deltas=[0.0], extra={"x": 1}),
    ]
    for obj in objects:
        text = json.dumps(obj.to_dict() if hasattr(obj, "to_dict") else obj.to_attrs())
        back = type(obj).from_dict(json.loads(text)) if hasattr(obj, "to_dict") else type(obj).from_attrs(json.loads(text))
        assert back == obj, type(obj).__name__


def test_a_trial_record_keeps_the_stored_format():
    """se and ci95 are stored beside delta even when None (one seed), as `Outcome` always did;
    fields never set are not stored; unknown keys survive a read and write."""
    from autotaper.search.records import TrialRecord

    attrs = {"status": "complete", "delta": 0.1, "se": None, "ci95": None, "seed_deltas": [0.1], "from_the_future": 3}
    assert TrialRecord.from_attrs(attrs).to_attrs() == attrs
    assert TrialRecord(status="failed", reason="x").to_attrs() == {"status": "failed", "reason": "x"}


def test_an_unknown_sampler_or_pruner_is_refused_with_the_list():
    from autotaper.search import samplers

    space = type("S", (), {"settings": type("T", (), {"sampler": "tpee", "pruner": "medain", "seed": 0,
                                                       "multi_objective": False})(), "name": "s"})()
    with pytest.raises(errors.InputError, match=r"search.sampler: unknown 'tpee' \(one of tpe, gp"):
        samplers.make_sampler(space)
    with pytest.raises(errors.InputError, match=r"search.pruner: unknown 'medain' \(one of median, hyperband"):
        samplers.make_pruner(space)


def test_studies_lists_and_deletes_the_studies_of_a_storage(tmp_path, monkeypatch, capsys):
    import json

    import optuna

    from autotaper.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs/search/a").mkdir(parents=True)
    url = "sqlite:///runs/search/a/study.db"
    for name in ("a", "b"):
        study = optuna.create_study(study_name=name, storage=url)
        study.add_trial(optuna.trial.create_trial(value=1.0))
    assert main(["studies", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted((s["study"], s["trials"], s["counted"]) for s in listed) == [("a", 1, 1), ("b", 1, 1)]
    assert main(["studies", "--storage", url, "--delete", "b"]) == 0
    assert main(["studies", "--storage", url, "--delete", "b"]) == 2  # gone: refused, one line
    capsys.readouterr()
    assert main(["studies", "--storage", url, "--json"]) == 0
    assert [s["study"] for s in json.loads(capsys.readouterr().out)] == ["a"]


# Recipes in files: train, compare and probe take --space FILE (its proxy section).
@pytest.fixture
def recipe(tmp_path, monkeypatch):
    import yaml

    from tests.helpers import micro_space, write_corpus

    corpus = str(write_corpus(tmp_path / "corpus"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTOTAPER_CACHE", str(tmp_path / "cache"))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(micro_space(corpus, proxy={"lr": 2e-3, "steps": 3, "batch_size": 4})))
    return corpus


def test_train_with_a_space_trains_its_proxy_recipe_as_the_same_flags_would(recipe, capsys):
    import json

    from autotaper.cli import main

    assert main(["train", "--space", "s.yaml", "--taper", "ffn:cosine:1.5:0.5", "--out", "a", "--json"]) == 0
    by_space = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["train", "--preset", "tiny", "--taper", "ffn:cosine:1.5:0.5", "--steps", "3", "--batch-size", "4",
                 "--lr", "2e-3", "--precision", "fp32", "--eval-every", "5", "--data", recipe, "--out", "b",
                 "--json"]) == 0
    by_flags = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    config = json.loads(open("a/config.json").read())
    assert (config["lr"], config["batch_size"], config["steps"], config["precision"]) == (2e-3, 4, 3, "fp32")
    assert by_space["val_loss"] == by_flags["val_loss"] and by_space["val_loss"] is not None
    # a flag given wins over the space's recipe
    assert main(["train", "--space", "s.yaml", "--lr", "1e-3", "--out", "c"]) == 0
    assert json.loads(open("c/config.json").read())["lr"] == 1e-3


def test_compare_and_probe_take_a_space(recipe, capsys):
    import json

    from autotaper.cli import main

    assert main(["compare", "--space", "s.yaml", "--taper", "ffn:cosine:1.5:0.5", "--steps", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["parametrization"] == "sp" and len(out["deltas"]) == 2  # the space's 2 seeds
    assert main(["train", "--space", "s.yaml", "--out", "run"]) == 0
    capsys.readouterr()
    assert main(["probe", "run", "--space", "s.yaml", "--windows", "2", "--json"]) == 0
    probed = json.loads(capsys.readouterr().out)
    assert probed["windows"] == 2 and probed["corpus"] == json.loads(open("run/summary.json").read())["corpus"]["corpus"] != "stdlib"


def test_compare_needs_a_preset_or_a_space(capsys):
    from autotaper.cli import main

    assert main(["compare", "--taper", "ffn:cosine:1.5:0.5"]) == 2
    assert "give --preset or --space" in capsys.readouterr().err


def test_a_submitted_search_takes_over_every_search_flag_given_but_the_local_ones():
    from autotaper.cli import build_parser
    from autotaper.cli.search import NOT_FORWARDED, _forwarded

    given = ["--n-trials", "7", "--timeout", "30", "--study", "s", "--preset", "tiny", "--family", "gpt", "--steps", "5",
             "--seeds", "2:4", "--param", "mup", "--depth-alpha", "0.5", "--budget", "10m", "--no-confirm",
             "--sampler-seed", "3", "--cpus-per-trial", "2", "--gpus-per-trial", "0.5", "--max-concurrent", "4",
             "--tune-storage", "t", "--strict-data", "--quiet", "--json"]
    local = ["--space", "x.yaml", "--backend", "ray", "--submit", "http://h:8265", "--storage", "sqlite:///a.db",
             "--workers", "2", "--data", "d", "--address", "auto", "--follow", "--no-install"]
    args = build_parser().parse_args(["search", *local, *given])
    job = build_parser().parse_args(["search", "--space", "x.yaml", *_forwarded(args)])  # the job's own parse
    dests = {a.dest for a in args.parser._actions if a.option_strings} - NOT_FORWARDED
    assert {d: getattr(job, d) for d in dests} == {d: getattr(args, d) for d in dests}
    assert all(getattr(job, a.dest) == a.default for a in args.parser._actions  # nothing local went along
               if a.dest in NOT_FORWARDED - {"space", "help"})
    assert sorted(_forwarded(args)) == sorted(g.replace("10m", "600") for g in given)


def test_flag_defaults_are_the_librarys():
    """Where a default cannot be read without loading torch (`--help` stays light), the flag's
    copy equals the library's."""
    import inspect

    from autotaper import probe
    from autotaper.search.confirm import confirm
    from autotaper.train.config import TrainConfig

    _, commands = _commands()

    def default(command, flag):
        return next(a.default for a in commands[command]._actions if flag in a.option_strings)

    assert default("probe", "--windows") == probe.WINDOWS == inspect.signature(probe.probe_run).parameters["windows"].default
    assert default("confirm", "--top-k") == inspect.signature(confirm).parameters["top_k"].default
    assert default("confirm", "--fresh-seeds") == inspect.signature(confirm).parameters["seeds"].default
    # train's flags leave their defaults to TrainConfig (None: not given), and say them in --help
    for name in ("steps", "batch_size", "lr", "schedule", "precision"):
        flag = "--" + name.replace("_", "-")
        assert default("train", flag) is None
        action = next(a for a in commands["train"]._actions if flag in a.option_strings)
        assert f"default: {getattr(TrainConfig, name)}" in action.help


def test_trial_attributes_are_spelled_in_records_only():
    """A trial's or a study's attribute is read and written by a name from `search/records.py`
    (TrialRecord's fields, the *_ATTR constants), never by a string typed elsewhere."""
    import re
    from pathlib import Path

    import autotaper

    literal = re.compile(r"""(user_attrs\.get\(|user_attrs\[|set_user_attr\(|set_trial_user_attr\([^,]+,\s*)["']""")
    root = Path(autotaper.__file__).parent
    found = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py") if p.name != "records.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if literal.search(line)]
    assert found == []


def test_compare_refuses_too_few_seeds_before_it_trains():
    """No data is given: the refusal must come before anything is built or trained."""
    from autotaper.paired import compare
    from autotaper.spec import ModelSpec
    from autotaper.train.config import TrainConfig

    for seeds in (0, 1, True, 2.5):
        with pytest.raises(errors.InputError, match="seeds: a paired interval needs at least 2 seeds"):
            compare(ModelSpec.from_name("tiny"), "ffn:cosine:1.5:0.5", None, TrainConfig(), seeds=seeds)
