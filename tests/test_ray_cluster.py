"""A real two-node Ray cluster on this machine (ray.cluster_utils.Cluster: a head with the
dashboard for the jobs API, and a second node joining it)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from autotaper.search import leaderboard
from autotaper.search.storage import open_storage
from tests.helpers import write_corpus

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray.dashboard")
    from ray.cluster_utils import Cluster

    # Nodes take this machine's own address (Ray's job agent does not come up on 127.0.0.1);
    # the dashboard that `ray job submit` talks to listens on loopback only. Its port is the one
    # Ray bound (it moves on from a taken one), read back, never one picked here beforehand.
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": 8265})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    c.dashboard = f"http://{c.head_node.webui_url}"
    from ray.job_submission import JobSubmissionClient

    deadline = time.time() + 120  # the job agent comes up a few seconds after the head
    while True:
        try:
            JobSubmissionClient(c.dashboard).list_jobs()
            break
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(1)
    yield c
    c.shutdown()


def space_file(folder: Path, corpus: str, **proxy) -> Path:
    data = {"name": "cluster", "proxy": {"preset": "tiny", "steps": 30, "batch_size": 8, "seeds": 2,
                                         "precision": "fp32", "data": corpus, "eval_every": 10, **proxy},
            "search": {"sampler": "tpe", "pruner": "none", "n_trials": 5},
            "taper": {"ffn": {"curve": ["linear", "cosine"], "strength": {"low": -0.5, "high": 0.75}}}}
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def load(url, name="cluster"):
    return optuna.load_study(study_name=name, storage=open_storage(url))


def test_job_submit_runs_trials_on_both_nodes(cluster, tmp_path):
    job = tmp_path / "job"
    (job / "examples").mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "ray_cluster_job.py", job / "examples")
    corpus = write_corpus(job / "corpus")
    space_file(job, str(corpus))
    url = f"sqlite:///{tmp_path}/study.db"
    proc = subprocess.run(["ray", "job", "submit", "--address", cluster.dashboard, "--working-dir", str(job), "--",
                           "python", "examples/ray_cluster_job.py", "--space", "space.yaml", "--storage", url,
                           "--json"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = load(url)
    done = [t for t in study.trials if t.user_attrs.get("status") == "complete"]
    assert len(done) >= 4
    nodes = {t.user_attrs.get("node") for t in done}
    assert len(nodes) == 2, f"trials ran on {nodes}"
    assert "verdict" in proc.stdout


def _driver(space: Path, url: str, address: str, env=None):
    return subprocess.Popen([sys.executable, "-m", "autotaper", "search", "--backend", "ray", "--address", address,
                             "--space", str(space), "--storage", url, "--quiet",
                             "--tune-storage", str(space.parent / "tune")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _wait(url, predicate, timeout=300, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the driver ended (status {proc.returncode}) before the condition: "
                                 f"{proc.stderr.read().decode()[-2000:]}")
        try:
            study = load(url)
        except (KeyError, ValueError):  # the study is not created yet, or its tables are being made
            time.sleep(0.3)
            continue
        found = predicate(study)
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("condition not reached")


def test_a_killed_trial_worker_is_retried_and_the_search_finishes(cluster, tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    space = space_file(tmp_path, str(corpus), steps=150, eval_every=10, seeds=2)
    data = yaml.safe_load(space.read_text())
    data["search"].update(pruner="median", n_trials=3)
    space.write_text(yaml.safe_dump(data))
    url = f"sqlite:///{tmp_path}/study.db"
    proc = _driver(space, url, cluster.address)

    def running_pid(study):
        for t in study.trials:
            if t.state == optuna.trial.TrialState.RUNNING and isinstance(t.user_attrs.get("pid"), int):
                return t.number, t.user_attrs["pid"]
        return None

    number, pid = _wait(url, running_pid, proc=proc)
    os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]
    t = load(url).trials[number]
    assert t.state == optuna.trial.TrialState.COMPLETE or t.user_attrs.get("status") == "pruned"
    assert t.user_attrs["pid"] != pid  # it ran again in a new worker


def test_an_interrupted_ray_search_resumes(cluster, tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    space = space_file(tmp_path, str(corpus), steps=30)
    url = f"sqlite:///{tmp_path}/study.db"
    proc = _driver(space, url, cluster.address)

    def two_done(study):
        done = [t for t in study.trials if t.user_attrs.get("status") == "complete"]
        return done if len(done) >= 2 else None

    _wait(url, two_done, proc=proc)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=300)
    before = {t.number: t.value for t in load(url).trials if t.state == optuna.trial.TrialState.COMPLETE}
    experiment = load(url).user_attrs["ray/experiment"]
    assert Path(experiment).exists()
    proc = _driver(space, url, cluster.address)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]
    study = load(url)
    for number, value in before.items():
        assert study.trials[number].value == value
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) >= 5
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    rows = leaderboard(url, "cluster")["trials"]
    assert rows[0]["status"] == "reference"


def test_ray_train_ddp_matches_one_process(cluster, tmp_path):
    """TorchTrainer, gloo, one worker per node, global batch 8, against one plain process at
    batch 8: the same batches, so the curves differ only by fp32 reduction order (see
    test_train.test_ddp_two_processes_match_one for the 1e-4 tolerance)."""
    corpus = str(write_corpus(tmp_path / "corpus"))
    env = {**os.environ, "AUTOTAPER_CACHE": str(tmp_path / "cache")}
    common = [sys.executable, "-m", "autotaper", "train", "--preset", "tiny", "--steps", "12", "--batch-size", "8",
              "--precision", "fp32", "--data", corpus, "--log-every", "1", "--quiet", "--json"]
    one = subprocess.run([*common, "--out", str(tmp_path / "one")], env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([*common, "--out", str(tmp_path / "two"), "--ray-workers", "2", "--address",
                          cluster.address], env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert (tmp_path / "two" / "checkpoints" / "latest").exists()  # where `autotaper train` puts them
    read = lambda d: [r["loss"] for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())  # noqa: E731
                      if "loss" in r]
    assert read(tmp_path / "two") == pytest.approx(read(tmp_path / "one"), rel=1e-4)
