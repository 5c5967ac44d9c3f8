"""A real two-node Ray cluster on this machine: a head (ray.cluster_utils.Cluster, with the
dashboard for the jobs API) running this Python, and a second node started by `ray start`
from a Python environment that has autotaper's dependencies and not autotaper itself, as on a
cluster whose nodes never installed it. Every search here ships the driver's package."""

import importlib.metadata
import json
import os
import shutil
import signal
import site
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from autotaper.search import leaderboard
from autotaper.search.storage import open_storage
from tests.helpers import ray_unmeasured, write_corpus

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _node_environ() -> dict:
    # nothing of this checkout may leak in through the environment
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "COVERAGE_PROCESS_CONFIG")}


def bare_python(folder: Path, wheels=(), without=()) -> Path:
    """A virtual environment without autotaper whose site-packages lists this interpreter's
    site-packages on a path line of a .pth file. A path line only adds the folder; the .pth
    files inside it are not run, so the finder of autotaper's editable install never is.
    `wheels` are installed into the environment itself, ahead of the shared ones; the
    distributions named in `without` are left out (the shared folders are then seen through
    a folder of links to every entry but theirs)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    own = next(folder.glob("lib/python3*/site-packages"))
    shared = [Path(p) for p in site.getsitepackages()]
    if without:
        view = folder / "shared"
        view.mkdir()
        left_out = {w.lower().replace("-", "_") for w in without}
        for entry in (e for p in shared if p.is_dir() for e in p.iterdir()):
            # pandas, pandas.libs, pandas-2.3.3.dist-info: one distribution; pandas_foo another
            name = entry.name.split("-", 1)[0].split(".", 1)[0].lower()
            if name not in left_out and not (view / entry.name).exists():
                (view / entry.name).symlink_to(entry)
        shared = [view]
    (own / "dependencies.pth").write_text("".join(f"{p}\n" for p in shared))
    python = folder / "bin" / "python"
    for wheel in wheels:
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(own),
                        str(wheel)], check=True, timeout=300, env=_node_environ())
    probe = subprocess.run([str(python), "-c", "import ray, torch, optuna; import autotaper"], cwd=folder,
                           capture_output=True, text=True, timeout=120, env=_node_environ())
    assert "No module named 'autotaper'" in probe.stderr, f"the bare environment is not bare: {probe.stderr[-500:]}"
    return python


class Node:
    """`ray start --block` from `python`, joined to the cluster at `address`, in a process
    group of its own: stop() ends it and every process it started. Its own temp dir, as on
    another machine: nodes on one machine otherwise share the session folder, where Ray builds
    each runtime env's virtualenv (a second node's build finds the first's and fails)."""

    def __init__(self, python: Path, address: str, folder: Path):
        import tempfile

        self.log = open(folder / "node.log", "w")
        self.temp = tempfile.mkdtemp(prefix="ray-node-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
        self.proc = subprocess.Popen([str(python), "-m", "ray.scripts.scripts", "start", "--address", address,
                                      "--num-cpus", "1", "--block", "--disable-usage-stats", "--temp-dir", self.temp,
                                      "--dashboard-agent-listen-port", "0"],
                                     cwd=folder, env=_node_environ(), stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.id = None

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=30)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        self.log.close()
        shutil.rmtree(self.temp, ignore_errors=True)


def alive_nodes(dashboard: str) -> list:
    from ray.util.state import list_nodes

    return [n for n in list_nodes(address=dashboard) if n.state == "ALIVE"]


def join(node: Node, dashboard: str, before: set, timeout: float = 120) -> str:
    """Wait until `node` is alive in the cluster; returns its node id."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if node.proc.poll() is not None:
            raise AssertionError(f"the node ended ({node.proc.returncode}): {Path(node.log.name).read_text()[-2000:]}")
        new = {n.node_id for n in alive_nodes(dashboard)} - before
        if new:
            node.id = new.pop()
            return node.id
        time.sleep(1)
    raise AssertionError("the node did not join")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    pytest.importorskip("ray.dashboard")
    from ray.cluster_utils import Cluster
    from ray.job_submission import JobSubmissionClient

    folder = tmp_path_factory.mktemp("bare")
    python = bare_python(folder / "env")
    # Nodes take this machine's own address (Ray's job agent does not come up on 127.0.0.1);
    # the dashboard that `ray job submit` talks to listens on loopback only. Its port is the one
    # Ray bound (from 8265 on, past taken ones), read back, never one picked here beforehand.
    # Every node's dashboard agent binds a port of its own choosing: on Ray's fixed default
    # (52365) the head's agent loses the port to any other Ray instance on this machine (the
    # Ray tests running beside these), keeps running without its HTTP server, and jobs are
    # refused ("No available agent to submit job").
    # The head's processes and workers run without coverage (the drivers the tests start are
    # measured; the trial code its workers run is measured in test_backends.py).
    with ray_unmeasured():
        c = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_agent_listen_port": 0})
    c.dashboard = f"http://{c.head_node.webui_url}"
    deadline = time.time() + 120  # the job agent comes up a few seconds after the head
    while True:
        try:
            JobSubmissionClient(c.dashboard).list_jobs()
            break
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(1)
    c.head_id = alive_nodes(c.dashboard)[0].node_id
    bare = Node(python, c.address, folder)
    try:
        c.bare_id = join(bare, c.dashboard, {c.head_id})
        c.bare_python = python
        yield c
    finally:
        bare.stop()
        c.shutdown()


def space_file(folder: Path, corpus: str, search=None, **proxy) -> Path:
    data = {"name": "cluster", "proxy": {"preset": "tiny", "steps": 30, "batch_size": 8, "seeds": 2,
                                         "precision": "fp32", "data": corpus, "eval_every": 10, **proxy},
            "search": {"sampler": "tpe", "pruner": "none", "n_trials": 5, "confirm": False, **(search or {})},
            "taper": {"ffn": {"curve": ["linear", "cosine"], "strength": {"low": -0.5, "high": 0.75}}}}
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def load(url, name="cluster"):
    return optuna.load_study(study_name=name, storage=open_storage(url))


# A fresh worker per trial (search.reuse_actors false): with reuse on, Tune hands a trial whose
# worker is still starting on the node without autotaper (unzip the package, import torch and
# Ray Tune) to a head worker that freed up first, so whether that node trains anything rested on
# trials outlasting its start-up (CI once ran all 6 on the head). Without reuse, one CPU a node
# and two trials at once, the second trial's worker can only be placed on that node.
JOB_PROXY = {"steps": 60}
JOB_SEARCH = {"n_trials": 6, "reuse_actors": False}


def _on_both_nodes(cluster, url, name="cluster", n_min=2):
    study = load(url, name)
    done = [t for t in study.trials if t.user_attrs.get("status") == "complete"]
    assert len(done) >= n_min
    nodes = {t.user_attrs.get("node") for t in done}
    assert nodes == {cluster.head_id, cluster.bare_id}, f"trials ran on {nodes}"


def test_ray_job_submit_as_the_readme_shows_finishes_with_a_node_without_autotaper(cluster, tmp_path):
    """The manual route: `ray job submit` with this checkout's package as py_modules. Before
    any trial the search's version check imports autotaper on every node (a node without it
    would be named: autotaper missing), and the two baseline seeds train at once, one per
    node (one CPU each); which node takes which trial is left to the --submit test."""
    job = tmp_path / "job"
    corpus = write_corpus(job / "corpus")
    space_file(job, "corpus", {"n_trials": 2})
    url = f"sqlite:///{tmp_path}/study.db"
    env = json.dumps({"py_modules": [str(ROOT / "autotaper")]})
    proc = subprocess.run(["ray", "job", "submit", "--address", cluster.dashboard, "--working-dir", str(job),
                           "--runtime-env-json", env, "--", "python", "-m", "autotaper", "search", "--backend", "ray",
                           "--address", "auto", "--space", "space.yaml", "--storage", url, "--json", "--quiet"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert corpus.exists() and '"verdict"' in proc.stdout
    assert sum(t.user_attrs.get("status") == "complete" for t in load(url).trials) >= 1


def test_submit_ships_autotaper_pins_what_nodes_lack_and_ends_with_the_leaderboard(cluster, tmp_path):
    """`autotaper search --submit`: the job's runtime env carries this package (py_modules), the
    space and its data (working_dir), and pinned dependencies that name no autotaper package
    for pip to look up; the node without autotaper trains trials; --follow ends with the board."""
    from ray.job_submission import JobSubmissionClient

    corpus = write_corpus(tmp_path / "corpus")
    space = space_file(tmp_path, str(corpus), JOB_SEARCH, **JOB_PROXY)
    url = f"sqlite:///{tmp_path}/study.db"
    secret = "pg-Secret-91"  # libpq's password variable travels to the job; SQLite ignores it
    proc = subprocess.run([sys.executable, "-m", "autotaper", "search", "--backend", "ray", "--submit",
                           cluster.dashboard, "--space", str(space), "--storage", url, "--study", "submitted",
                           "--follow", "--quiet"], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "PGPASSWORD": secret})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert secret not in proc.stdout + proc.stderr and "note: the storage password travels" in proc.stderr
    job = proc.stderr.split("submitted job ", 1)[1].split()[0]
    assert "verdict:" in proc.stdout and "reference" in proc.stdout  # the job's log ends with the leaderboard
    env = JobSubmissionClient(cluster.dashboard).get_job_info(job).runtime_env
    pins = env["pip"]["packages"] if isinstance(env["pip"], dict) else env["pip"]
    assert not [p for p in pins if p.split("=")[0].lower() == "autotaper"] and "optuna==" + optuna.__version__ in pins
    assert "pandas==" + importlib.metadata.version("pandas") in pins  # Ray Tune's own dependencies, too
    assert all("==" in p for p in pins) and env["py_modules"] and env["env_vars"]["AUTOTAPER_STORAGE"] == url
    assert env["env_vars"]["PGPASSWORD"] == secret  # where the note says it is
    assert url not in JobSubmissionClient(cluster.dashboard).get_job_info(job).entrypoint
    _on_both_nodes(cluster, url, "submitted")


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


def test_a_killed_trial_is_retried_and_an_interrupted_search_resumes(cluster, tmp_path):
    """One search, two failures. A trial worker SIGKILLed mid-trial (seen reporting its first
    steps, so the kill lands while it trains) runs again in a new worker and the trial ends;
    the driver interrupted after that (SIGINT) is restored by the same command, which keeps
    every finished trial's value and runs the rest. ASHA (pruner: median) stops what it may."""
    corpus = write_corpus(tmp_path / "corpus")
    space = space_file(tmp_path, str(corpus), {"pruner": "median", "n_trials": 6}, steps=100, eval_every=10)
    url = f"sqlite:///{tmp_path}/study.db"
    proc = _driver(space, url, cluster.address)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)

    def training_early(study):  # at most 4 of its 20 reports in: 80% of the trial still to train
        for t in study.trials:
            if t.state == optuna.trial.TrialState.RUNNING and isinstance(t.user_attrs.get("pid"), int) \
                    and 1 <= len(t.intermediate_values) <= 4:
                return t.number, t.user_attrs["pid"]
        return None

    number, pid = _wait(url, training_early, proc=proc)
    os.kill(pid, signal.SIGKILL)

    def retried_and_two_done(study):
        t = study.trials[number]
        done = [u for u in study.trials if u.user_attrs.get("status") == "complete"]
        return t.state in finished and len(done) >= 2

    _wait(url, retried_and_two_done, proc=proc)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=300)
    study = load(url)
    t = study.trials[number]
    assert t.user_attrs["pid"] != pid  # it ran again in a new worker
    assert t.state == optuna.trial.TrialState.COMPLETE or t.user_attrs.get("status") == "pruned"
    before = {u.number: u.value for u in study.trials if u.state == optuna.trial.TrialState.COMPLETE}
    assert Path(study.user_attrs["ray/experiment"]).exists()

    proc = _driver(space, url, cluster.address)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]
    study = load(url)
    for n, value in before.items():
        assert study.trials[n].value == value
    assert sum(u.state in finished for u in study.trials) >= 6
    assert not [u for u in study.trials if u.state == optuna.trial.TrialState.RUNNING]
    assert leaderboard(url, "cluster")["trials"][0]["status"] == "reference"


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


def test_a_node_running_another_optuna_is_named_before_any_trial(cluster, tmp_path):
    """A third node whose environment holds Optuna 4.5.0 (a real wheel, from the package index)
    and lacks pandas (so its Ray cannot import ray.tune, as a node with a plain `ray` install)
    joins: the search stops in one line naming that node, both versions and the failed import,
    trains nothing, and the cluster goes on without it."""
    wheels = tmp_path / "wheels"
    got = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                          "-d", str(wheels), "optuna==4.5.0"], capture_output=True, text=True, timeout=300)
    if got.returncode:
        message = f"cannot download optuna 4.5.0: {got.stderr[-300:]}"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    python = bare_python(tmp_path / "env", wheels=list(wheels.glob("*.whl")), without=("pandas",))
    node = Node(python, cluster.address, tmp_path)
    try:
        third = join(node, cluster.dashboard, {cluster.head_id, cluster.bare_id})
        corpus = write_corpus(tmp_path / "corpus")
        space = space_file(tmp_path, str(corpus))
        url = f"sqlite:///{tmp_path}/study.db"
        proc = _driver(space, url, cluster.address)
        out, err = proc.communicate(timeout=600)
        err = err.decode()
        assert proc.returncode == 2, err[-3000:]
        line = err.strip().splitlines()[-1]
        assert line.startswith("autotaper: error: version skew: node ") and "optuna 4.5.0 (driver " in line
        assert "cannot import ray.tune (" in line and "pandas" in line, line
        assert line.count("runs ") == 1, line  # only the third node differs
        study = load(url)
        assert not [k for k in study.user_attrs if k.startswith("baseline/")] and not study.trials
        assert third not in {cluster.head_id, cluster.bare_id}
    finally:
        node.stop()
