"""Issue 12: real data folders, one corpus per study, faults injected for real."""

import os
import shutil
import time
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


# -- journal liveness -------------------------------------------------------------------------
def _load(url):
    from autotaper.search.storage import open_storage

    return optuna.load_study(study_name="lease", storage=open_storage(url))


def test_a_journal_trial_whose_worker_vanished_is_failed_by_its_expired_lease(tmp_path):
    """A worker holds a lease while it trains; killed, its trial is failed by any other
    worker once the lease expires, even when its host is not this one (the pid check could
    not see it); a live worker's trial is never failed."""
    from autotaper.search.storage import LEASE_ATTR, fail_dead_trials

    corpus = str(write_corpus(tmp_path / "corpus"))
    space = micro_space(corpus, name="lease", proxy={"steps": 300, "eval_every": 100, "batch_size": 4},
                        search={"n_trials": 8, "sampler": "random", "seed": 0})
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    url = f"journal:{tmp_path / 'journal.log'}"
    env = {**os.environ, "AUTOTAPER_LEASE_S": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "autotaper", "search", "--space", str(path), "--storage", url,
                             "--quiet", "--no-confirm"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        running, seen = None, {}
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:  # the event: a lease renewed while training
            time.sleep(0.2)
            if not (tmp_path / "journal.log").exists():
                continue
            try:
                study = _load(url)
            except KeyError:
                continue
            for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
                lease = t.user_attrs.get(LEASE_ATTR)
                if lease:
                    first = seen.setdefault(t.number, (lease["beat"], time.time()))
                    if lease["beat"] > first[0] and time.time() - first[1] > 3.5:
                        running = t
            if running is not None:
                break
        assert running is not None, f"no trial renewed its lease; worker status {proc.poll()}"
        assert fail_dead_trials(_load(url)) == []  # alive and beating for longer than the lease: kept
    finally:
        proc.kill()
        proc.wait(timeout=60)
    study = _load(url)
    trial = study.trials[running.number]
    assert trial.state == optuna.trial.TrialState.RUNNING
    # as if the worker ran elsewhere: this host's pid check cannot judge it, only the lease can
    study._storage.set_trial_user_attr(trial._trial_id, "host", "another-host.example")
    assert fail_dead_trials(study) == []  # the lease has not expired yet
    deadline = time.time() + 30
    while time.time() < deadline and time.time() - trial.user_attrs[LEASE_ATTR]["beat"] <= 3:
        time.sleep(0.2)
        trial = _load(url).trials[running.number]
    assert fail_dead_trials(_load(url)) == [running.number]
    after = _load(url).trials[running.number]
    assert after.state == optuna.trial.TrialState.FAIL
    assert after.user_attrs["reason"].startswith("lease expired: no beat from ") and "(lease 3 s)" in after.user_attrs["reason"]
