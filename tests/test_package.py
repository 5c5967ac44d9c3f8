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
