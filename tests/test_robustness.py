"""Issue 12: real data folders, one corpus per study, faults injected for real."""

import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from autotaper.data import load_data
from autotaper.search import parse_space, run_search
from autotaper.search.engine import CORPUS_ATTR, check_corpus, open_study
from tests.helpers import micro_space, write_corpus


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOTAPER_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def cli(*args, cwd=None, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "autotaper", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


# -- one corpus per study -----------------------------------------------------------------
def test_a_worker_with_other_data_is_refused_at_start_naming_both_corpora(tmp_path):
    ours = str(write_corpus(tmp_path / "ours"))
    theirs = str(write_corpus(tmp_path / "theirs", n_files=9))  # like another Python's smaller stdlib
    space = parse_space(micro_space(ours, name="shared"))
    study, url = open_study(space, storage=None, study_name=None)
    data = load_data(ours)
    check_corpus(study, data)  # the first worker records its corpus
    recorded = dict(study.user_attrs)
    assert recorded[CORPUS_ATTR]["content_sha256"] == data.manifest["content_sha256"]

    other = parse_space(micro_space(ours, name="shared"), overrides={"data": theirs})
    with pytest.raises(ValueError) as e:
        run_search(other, quiet=True)
    msg = str(e.value)
    assert "\n" not in msg and msg.count("sha256") == 2
    assert data.manifest["content_sha256"][:12] in msg and load_data(theirs).manifest["content_sha256"][:12] in msg
    assert "pass --data with that folder" in msg and str(data.root) in msg
    again = optuna.load_study(study_name="shared", storage=url)
    assert again.trials == [] and again.user_attrs == recorded  # refused before anything ran or was stored

    # the folder the message names, copied to "another machine", joins the study
    copy = Path(shutil.copytree(data.root, tmp_path / "elsewhere" / data.root.name))
    joined = load_data(str(copy))
    assert joined.fingerprint() == data.fingerprint() and joined.name == data.name
    check_corpus(again, joined)

    # on the command line: exit 2, one line
    space_file = tmp_path / "space.yaml"
    space_file.write_text(yaml.safe_dump(micro_space(ours, name="shared")))
    proc = cli("search", "--space", str(space_file), "--data", theirs, "--quiet")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "this worker's data is" in proc.stderr and "Traceback" not in proc.stderr
