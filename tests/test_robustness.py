"""Issue 12: real data folders, one corpus per study, faults injected for real."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from autotaper.data import load_data
from autotaper.search import parse_space, run_search
from autotaper.search.records import CORPUS_ATTR
from autotaper.search.study import check_corpus, open_study
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


HOLDER = """
import sys, time, optuna
from autotaper.search.storage import Lease, open_storage
study = optuna.load_study(study_name="lease", storage=open_storage(sys.argv[1]))
trial = study.ask()
with Lease(study._storage, trial._trial_id, lease_s=float(sys.argv[2])):
    print(trial.number, flush=True)
    time.sleep(600)
"""


def test_a_journal_trial_whose_worker_vanished_is_failed_by_its_expired_lease(tmp_path):
    """A worker process holds a trial's lease (as `TaperObjective` does while it trains);
    alive, its trial outlives the lease length; SIGKILLed, its trial is failed by another
    process once the lease expires, even when its host is not this one (the pid check
    cannot see it)."""
    from autotaper.search.storage import LEASE_ATTR, fail_dead_trials, open_storage

    url = f"journal:{tmp_path / 'journal.log'}"
    optuna.create_study(storage=open_storage(url), study_name="lease")
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, url, "2"], stdout=subprocess.PIPE, text=True)
    try:
        number = int(proc.stdout.readline())
        first = _load(url).trials[number].user_attrs[LEASE_ATTR]
        deadline = time.time() + 60
        while time.time() < deadline:  # the event: renewed, and older than one lease length since it began
            lease = _load(url).trials[number].user_attrs[LEASE_ATTR]
            if lease["beat"] > first["beat"] and time.time() - first["beat"] > 2.5:
                break
            time.sleep(0.1)
        assert lease["beat"] > first["beat"] and lease["pid"] == proc.pid and lease["lease_s"] == 2
        assert fail_dead_trials(_load(url)) == []  # alive and beating for longer than the lease: kept
        assert _load(url).trials[number].state == optuna.trial.TrialState.RUNNING
    finally:
        proc.kill()
        proc.wait(timeout=60)
    study = _load(url)
    trial = study.trials[number]
    # as if the worker ran elsewhere: this host's pid check cannot judge it, only the lease can
    study._storage.set_trial_user_attr(trial._trial_id, "host", "another-host.example")
    if time.time() - trial.user_attrs[LEASE_ATTR]["beat"] < 1.5:
        assert fail_dead_trials(study) == []  # not expired yet
    while time.time() - trial.user_attrs[LEASE_ATTR]["beat"] <= 2:
        time.sleep(0.1)
    assert fail_dead_trials(_load(url)) == [number]
    after = _load(url).trials[number]
    assert after.state == optuna.trial.TrialState.FAIL
    assert after.user_attrs["reason"].startswith(f"lease expired: no beat from {trial.user_attrs[LEASE_ATTR]['host']} "
                                                 f"pid {proc.pid} for ") and after.user_attrs["reason"].endswith("(lease 2 s)")


# -- checkpoints under faults -------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB file system (tmpfs): room for one checkpoint of the tiny preset (643 KB),
    not for the next one beside it. Where mounting is not allowed, the test skips, except
    under CI."""
    mount = tmp_path / "small"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True, timeout=60)
    if proc.returncode:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs: {proc.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=60)


def test_a_full_disk_fails_the_checkpoint_clearly_and_the_previous_one_still_loads(small_disk, tmp_path, capsys):
    from autotaper.cli import main
    from autotaper.train.checkpoint import latest_checkpoint, load_run

    corpus = write_corpus(tmp_path / "corpus")
    run = small_disk / "run"
    code = main(["train", "--preset", "tiny", "--taper", "ffn:linear:1.5:0.5", "--steps", "10", "--batch-size", "4",
                 "--checkpoint-every", "5", "--data", str(corpus), "--precision", "fp32", "--quiet",
                 "--out", str(run)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("autotaper: error: checkpoint: cannot write step-000010") and \
        "No space left on device" in err[-1] and err[-1].endswith("step-000005 still stands")
    assert not any("Traceback" in line for line in err)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step-000005"]  # no partial folder
    assert latest_checkpoint(run).name == "step-000005"
    spec, model, step = load_run(run)
    assert step == 5 and spec.taper == "ffn:linear:1.5:0.5"


def test_sigkill_during_checkpoint_writes_leaves_latest_on_a_complete_checkpoint(tmp_path):
    """proxy-s writes a 102 MB checkpoint every step; the trainer is killed the moment the
    2nd, 3rd, then 4th checkpoint since its start is being written (its temporary folder
    appears), resuming in between: `latest` always names a checkpoint whose model and
    optimizer load, and each resumed run got further."""
    import signal

    import torch

    from autotaper.models import build_model
    from autotaper.spec import ModelSpec
    from autotaper.train import TrainConfig
    from autotaper.train.checkpoint import latest_checkpoint, load_checkpoint
    from autotaper.train.trainer import _optimizer

    corpus = write_corpus(tmp_path / "corpus")
    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    args = [sys.executable, "-m", "autotaper", "train", "--preset", "proxy-s", "--taper", "uniform", "--steps", "60",
            "--batch-size", "1", "--checkpoint-every", "1", "--data", str(corpus), "--precision", "fp32", "--quiet",
            "--out", str(run)]
    steps = []
    for kill in range(3):
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        before = latest_checkpoint(run)
        writes: set[str] = set()
        caught = None
        deadline = time.time() + 240
        while caught is None and time.time() < deadline and proc.poll() is None:
            if not ckpts.exists():
                continue
            for entry in os.scandir(ckpts):  # the event: the (kill + 2)-th checkpoint write since the start
                step = entry.name.split(".")[0]
                if entry.name.startswith("step-") and "." in entry.name and (before is None or step > before.name):
                    writes.add(step)
                    if len(writes) == kill + 2:
                        caught = entry.name
                        break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        assert caught is not None, f"no checkpoint write seen (kill {kill}); status {proc.returncode}"
        assert proc.returncode == -signal.SIGKILL
        latest = latest_checkpoint(run)
        assert latest is not None and (ckpts / "latest").read_text().strip() == latest.name
        spec = ModelSpec.load(run / "spec.json")
        model = build_model(spec, seed=None)
        optimizer = _optimizer(model, TrainConfig(), torch.device("cpu"))
        state = load_checkpoint(latest, model=model, optimizer=optimizer, device=torch.device("cpu"))
        steps.append(state["step"])
    assert steps == sorted(steps) and steps[-1] > steps[0]  # each run resumed and got further


# -- a database server that goes away -------------------------------------------------------------
@pytest.mark.slow
def test_a_search_waits_out_a_postgresql_outage_and_goes_on(tmp_path):
    """The server is stopped while a trial trains and started again once the search has said
    it lost it: the search says it is back, finishes, and keeps every trial completed before
    the outage as it was; nothing is trained twice."""
    import threading

    from autotaper.search.storage import open_storage
    from tests.servers import Postgres

    server = Postgres()
    try:
        corpus = str(write_corpus(tmp_path / "corpus"))
        space = micro_space(corpus, name="outage", proxy={"steps": 60, "eval_every": 20},
                            search={"n_trials": 5, "sampler": "random", "seed": 1})
        path = tmp_path / "space.yaml"
        path.write_text(yaml.safe_dump(space))
        proc = subprocess.Popen([sys.executable, "-m", "autotaper", "search", "--space", str(path), "--storage",
                                 server.url, "--quiet", "--no-confirm"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
        reader.start()
        before = None
        deadline = time.time() + 300
        storage = open_storage(server.url)  # one engine for the polling: one per poll leaked a connection each
        while before is None and time.time() < deadline and proc.poll() is None:  # event: a trial done, one running
            time.sleep(0.3)
            try:
                study = optuna.load_study(study_name="outage", storage=storage)
            except KeyError:
                continue
            states = [t.state for t in study.trials]
            if states.count(optuna.trial.TrialState.COMPLETE) >= 2 and optuna.trial.TrialState.RUNNING in states:
                before = {t.number: t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
        assert before is not None, "".join(lines)[-2000:]
        storage.engine.dispose()
        del study, storage
        server.pause()
        deadline = time.time() + 120
        while not any(line.startswith("storage: lost") for line in lines) and time.time() < deadline:
            time.sleep(0.2)  # event: the search noticed
        assert any(line.startswith("storage: lost") for line in lines), "".join(lines)[-2000:]
        assert proc.poll() is None  # waiting, not dead
        server.resume()
        assert proc.wait(timeout=600) == 0, "".join(lines)[-3000:]
        reader.join(timeout=30)
        assert any(line.startswith("storage: ") and " is back after " in line for line in lines), "".join(lines)
        study = optuna.load_study(study_name="outage", storage=open_storage(server.url))
        after = {t.number: t for t in study.trials}
        for number, value in before.items():
            assert after[number].state == optuna.trial.TrialState.COMPLETE and after[number].value == value
        finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE,
                                                            optuna.trial.TrialState.PRUNED)]
        assert len(finished) == 5
        trained = [t.user_attrs["spec_key"] for t in finished if t.user_attrs.get("steps_trained")]
        assert len(trained) == len(set(trained))
    finally:
        server.stop()


# -- damaged study files ---------------------------------------------------------------------------
def _damaged(tmp_path, kind):
    from autotaper.search.storage import open_storage

    if kind == "journal":
        path, url = tmp_path / "study" / "journal.log", f"journal:{tmp_path / 'study' / 'journal.log'}"
    else:
        path, url = tmp_path / "study" / "study.db", f"sqlite:///{tmp_path / 'study' / 'study.db'}"
    study = optuna.create_study(storage=open_storage(url), study_name="hurt")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    del study
    raw = bytearray(path.read_bytes())
    if kind == "journal":  # one line in the middle garbled, as a bad disk sector or a stray editor would
        lines = raw.split(b"\n")
        lines[3] = lines[3][:25] + b"\x01garbage"
        raw = bytearray(b"\n".join(lines))
    else:  # the header and first page overwritten
        raw[:200] = b"\xff" * 200
    path.write_bytes(bytes(raw))
    return path, url


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
@pytest.mark.parametrize("command", ["results", "search"])
def test_a_damaged_study_file_is_named_and_left_as_it_is(tmp_path, kind, command):
    path, url = _damaged(tmp_path, kind)
    before = path.read_bytes()
    listing = sorted(p.name for p in path.parent.iterdir())
    if command == "results":
        args = ["results", "--storage", url, "--study", "hurt"]
    else:
        space = tmp_path / "space.yaml"
        space.write_text(yaml.safe_dump(micro_space(str(write_corpus(tmp_path / "corpus")), name="hurt")))
        args = ["search", "--space", str(space), "--storage", url, "--quiet"]
    proc = cli(*args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert str(path) in lines[0] and ("damaged at line 4" in lines[0] if kind == "journal" else
                                       "file is not a database" in lines[0])
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == listing


def test_a_dangling_latest_pointer_falls_back_to_the_newest_complete_checkpoint(tmp_path):
    """`latest` naming a folder removed by hand: loading takes the newest complete checkpoint,
    never a temporary folder of an interrupted write."""
    from autotaper.train.checkpoint import latest_checkpoint

    root = tmp_path / "run" / "checkpoints"
    for name in ("step-000010", "step-000020"):
        (root / name).mkdir(parents=True)
        (root / name / "state.json").write_text("{}")
    (root / "step-000030.tmpx").mkdir()  # an interrupted write: no state.json, a dotted name
    (root / "step-000025").mkdir()  # a folder without state.json is not complete
    (root / "latest").write_text("step-000040")
    assert latest_checkpoint(tmp_path / "run").name == "step-000020"
    (root / "latest").write_text("step-000010")
    assert latest_checkpoint(tmp_path / "run").name == "step-000010"  # a pointer that holds wins


# -- storage URL forms ---------------------------------------------------------------------------------
@pytest.mark.parametrize("url, kind", [
    ("study.db", "RDBStorage"), ("sqlite:///sub/study.db", "RDBStorage"), ("journal:j/study.log", "JournalStorage"),
    ("plain.log", "JournalStorage"), ("x.jsonl", "JournalStorage"),
])
def test_storage_url_forms(tmp_path, url, kind):
    from autotaper.search.storage import open_storage

    storage = open_storage(url)
    assert type(storage).__name__ == kind
    optuna.create_study(storage=storage, study_name="s").optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    again = optuna.load_study(study_name="s", storage=open_storage(url))
    assert len(again.trials) == 1


@pytest.mark.parametrize("url, needle", [
    ("ftp://host/study", "unsupported URL"),
    ("postgresql://u:s3cret@127.0.0.1:1/db", "cannot open 'postgresql+psycopg2://u:***@127.0.0.1:1/db'"),
    ("postgres://u:s3cret@127.0.0.1:1/db", "u:***@127.0.0.1:1/db"),
])
def test_storage_url_errors_name_the_url_without_its_password(url, needle):
    from autotaper.search.storage import open_storage

    with pytest.raises(ValueError) as e:
        open_storage(url)
    assert needle in str(e.value) and "s3cret" not in str(e.value)


@pytest.mark.parametrize("url", [
    "postgresql://u:s3cret@db:5432/optuna", "postgresql+psycopg2://u:p%40ss%2Fs3cret@db/optuna?sslmode=require",
    "mysql+pymysql://u:s3cret@db/optuna", "weird://u:s3cret@[not a host", "postgresql://u@db/optuna",
    "sqlite:////tmp/study.db", "journal:/tmp/x@y.log",
])
def test_masked_and_stripped_urls_keep_everything_but_the_password(url):
    """mask_url puts *** where the password was, strip_password leaves it out so libpq reads
    PGPASSWORD; user, host, database and query survive both (read back by urllib, not
    SQLAlchemy), and a URL without a password comes back unchanged."""
    from urllib.parse import unquote, urlsplit

    from autotaper.search.storage import mask_url, strip_password

    masked, stripped = mask_url(url), strip_password(url)
    has_password = ":s3cret" in url or "%2Fs3cret" in url
    for shown in (masked, stripped):
        assert "s3cret" not in unquote(shown)
        if not has_password:
            assert shown == url
    if has_password and "[" not in url:
        want, got_masked, got_stripped = urlsplit(url), urlsplit(masked), urlsplit(stripped)
        for got in (got_masked, got_stripped):
            assert (got.scheme, got.username, got.hostname, got.path, got.query) == \
                   (want.scheme, want.username, want.hostname, want.path, want.query)
        assert got_masked.password == "***" and got_stripped.password is None
    if has_password and "[" in url:  # not parseable: masked by hand, the host text kept as given
        assert masked == "weird://u:***@[not a host" and stripped == "weird://u@[not a host"


def test_a_space_may_return_a_whole_spec_and_pretokenised_data_ranks_on_loss(tmp_path):
    """A FunctionSpace returning a ModelSpec trains exactly that spec; token files have no
    byte lengths, so the study's metric is validation loss, not bits per byte."""
    import numpy as np

    from autotaper.search import FunctionSpace, Proxy, Settings, leaderboard
    from autotaper.search.space import Confirm
    from autotaper.spec import ModelSpec

    tokens = (np.arange(40_000) * 7919 % 251).astype(np.uint16)
    tokens.tofile(tmp_path / "tokens.bin")
    wide_first = ModelSpec.from_name("tiny", vocab_size=251, layer_ffn=(96, 80, 48, 32), taper="hand-made")

    space = FunctionSpace(lambda trial: wide_first, name="specs",
                          proxy=Proxy(preset="tiny", steps=6, batch_size=4, seeds=2, precision="fp32",
                                      data=str(tmp_path / "tokens.bin"), eval_every=3),
                          settings=Settings(sampler="random", pruner="none", n_trials=2, confirm=Confirm(top_k=0)))
    summary = run_search(space, quiet=True)
    study = optuna.load_study(study_name="specs", storage=summary.storage)
    trained = [t for t in study.trials if t.user_attrs.get("status") == "complete" and t.user_attrs["taper"] != "uniform"]
    assert len(trained) == 1 and trained[0].user_attrs["layers"]["ffn"] == [96, 80, 48, 32]
    reference = next(t for t in study.trials if t.user_attrs.get("status") == "reference")
    assert reference.user_attrs["metric"] == "val_loss"
    assert study.user_attrs["baseline/seed0"]["value"] > 1  # a loss in nats per token, not bits per byte
    assert leaderboard(summary.storage, "specs")["trials"][0]["status"] == "reference"
