import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from autotaper.search import FunctionSpace, Proxy, Settings, leaderboard, load_space, parse_space, run_search
from autotaper.search.storage import open_storage
from autotaper.stats import paired_stats
from tests.helpers import assert_t_interval, micro_space, write_corpus

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return str(write_corpus(tmp_path_factory.mktemp("search") / "corpus"))


def tiny_space(corpus, **changes):
    return micro_space(corpus, name="tiny", **changes)


def write_space(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOTAPER_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def test_end_to_end_search_and_leaderboard(corpus, tmp_path):
    space = parse_space(tiny_space(corpus))
    summary = run_search(space, quiet=True)
    assert summary.storage == "sqlite:///runs/search/tiny/study.db"
    board = leaderboard(summary.storage, "tiny")
    rows = {r["trial"]: r for r in board["trials"]}
    assert rows[0]["status"] == "reference" and rows[0]["taper"] == "uniform" and rows[0]["delta_bpb"] == 0.0
    assert rows[1]["taper"] == "ffn:cosine:1.5:0.5"  # the paper's default, enqueued first
    done = [r for r in board["trials"] if r["status"] == "complete"]
    assert len(done) >= 2
    study = optuna.load_study(study_name="tiny", storage=summary.storage)
    for r in done:
        assert r["seeds"] == 2 and r["params_delta"] == 0
        assert_t_interval(r["ci95"], study.trials[r["trial"]].user_attrs["seed_deltas"])
    assert board["verdict"]["text"]
    # the result carries the answer: the search stage's best (tiny_space confirms nothing), its spec, its rows
    best = summary.best
    row = rows[board["verdict"]["best"]]
    assert (best.taper, best.delta, best.ci95, best.seeds) == (row["taper"], row["delta_bpb"], row["ci95"], row["seeds"])
    assert best.text == board["verdict"]["text"] and best.model_spec().taper == best.taper
    assert summary.study.study_name == "tiny" and len(summary.to_dataframe()) == len(board["trials"])
    # the study's baselines are cached per seed, and trials paired with them
    assert {"baseline/seed0", "baseline/seed1"} <= set(study.user_attrs)
    t1 = study.trials[1]
    base = [study.user_attrs[f"baseline/seed{i}"]["value"] for i in range(2)]
    assert t1.user_attrs["seed_deltas"] == pytest.approx([v - b for v, b in zip(t1.user_attrs["seed_values"], base)])
    assert t1.value == pytest.approx(sum(t1.user_attrs["seed_deltas"]) / 2)


def test_results_cli_json_csv_and_table(corpus, tmp_path):
    run_search(parse_space(tiny_space(corpus)), quiet=True)
    base = [sys.executable, "-m", "autotaper", "results", "--study", "tiny"]
    out = json.loads(subprocess.run([*base, "--json"], capture_output=True, text=True, check=True, timeout=300).stdout)
    assert set(out["trials"][0]) >= {"taper", "widths", "params_delta", "flops_delta", "delta_bpb", "ci95",
                                     "seeds", "status"}
    csv_text = subprocess.run([*base, "--csv"], capture_output=True, text=True, check=True, timeout=300).stdout
    # one row per spec: trials whose knobs round to one spec are listed under the row's same_as
    study = optuna.load_study(study_name="tiny", storage="sqlite:///runs/search/tiny/study.db")
    specs = {t.user_attrs["spec_key"] for t in study.trials if "spec_key" in t.user_attrs}
    assert csv_text.splitlines()[0].startswith("trial,taper,widths") and len(csv_text.splitlines()) == 2 + len(specs)
    shown = {r["trial"] for r in out["trials"]} | {n for r in out["trials"] for n in r["same_as"]}
    assert shown == {t.number for t in study.trials}
    table = subprocess.run(base, capture_output=True, text=True, check=True, timeout=300).stdout
    assert "verdict:" in table and "reference" in table
    missing = subprocess.run([*base[:-1], "nope"], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "no study" in missing.stderr and len(missing.stderr.splitlines()) == 1


def test_failed_and_infeasible_trials_are_recorded(corpus):
    data = tiny_space(corpus, search={"sampler": "random", "n_trials": 3},
                      taper={"ffn": {"curve": "cosine", "strength": 0.5, "multiple": [16, 256]}},
                      train={"lr": [3e-3, 500.0]})
    space = parse_space(data)
    run_search(space, n_trials=8, quiet=True)
    study = optuna.load_study(study_name="tiny", storage="sqlite:///runs/search/tiny/study.db")
    rows = leaderboard("sqlite:///runs/search/tiny/study.db", "tiny")["trials"]
    statuses = {r["status"] for r in rows}
    assert "infeasible" in statuses and "failed" in statuses
    for t in study.trials:
        if t.user_attrs.get("status") == "infeasible":
            assert t.constraints["budget"] > 0 and "minimum of one multiple" in t.user_attrs["reason"]
        if t.state == optuna.trial.TrialState.FAIL:
            assert "diverged" in t.user_attrs["reason"]
        if t.user_attrs.get("status") == "complete":
            assert t.constraints["budget"] <= 0


def test_a_trial_leaves_no_tensor_or_module_to_the_cycle_collector(corpus):
    """Why a search runs no full gc.collect() after each trial (~0.25 s each with torch
    loaded): whatever a trial ends as (complete, infeasible, diverged, raised inside training),
    its models, optimizers and tensors are freed by reference counting, never left in a
    reference cycle for the collector to find. DEBUG_SAVEALL keeps everything any collection
    finds; a cycle made here around a tensor shows that it would be seen."""
    import gc

    from autotaper.search.space import Confirm
    from tests.helpers import Grid, raising_candidate

    def cyclic_garbage(run) -> list:
        gc.collect()
        gc.garbage.clear()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            run()
            gc.collect()
            return [type(o).__name__ for o in gc.garbage if isinstance(o, (torch.Tensor, torch.nn.Module))]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()

    def control():
        cycle = {"tensor": torch.zeros(3)}
        cycle["self"] = cycle

    assert cyclic_garbage(control) == ["Tensor"]
    mixed = parse_space(tiny_space(corpus, search={"sampler": "random", "n_trials": 6, "pruner": "median"},
                                   taper={"ffn": {"curve": "cosine", "strength": 0.5, "multiple": [16, 256]}},
                                   train={"lr": [3e-3, 500.0]}))
    proxy = Proxy(preset="tiny", steps=10, batch_size=8, seeds=2, precision="fp32", data=corpus, eval_every=5)
    raising = Grid(raising_candidate, strengths=[0.2, 0.3, 0.4], proxy=proxy, name="raises",
                   settings=Settings(sampler="grid", pruner="none", n_trials=4, seed=0, confirm=Confirm(top_k=0)))
    assert cyclic_garbage(lambda: run_search(mixed, quiet=True)) == []
    assert cyclic_garbage(lambda: run_search(raising, quiet=True)) == []
    statuses = {t.user_attrs.get("status") for name in ("tiny", "raises")
                for t in optuna.load_study(study_name=name, storage=f"sqlite:///runs/search/{name}/study.db").trials}
    assert {"complete", "infeasible", "failed"} <= statuses, statuses


def test_resume_keeps_completed_trials_and_fails_the_killed_one(corpus, tmp_path):
    data = tiny_space(corpus, proxy={"steps": 60, "eval_every": 20}, search={"n_trials": 6})
    path = write_space(tmp_path / "space.yaml", data)
    cmd = [sys.executable, "-m", "autotaper", "search", "--space", str(path), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    storage = "sqlite:///runs/search/tiny/study.db"
    deadline, reached = time.time() + 240, False
    while not reached and time.time() < deadline and proc.poll() is None:  # the event: 2 done, 1 running
        time.sleep(0.2)
        if not Path("runs/search/tiny/study.db").exists():
            continue
        try:  # open_storage retries the race with the search creating its tables
            study = optuna.load_study(study_name="tiny", storage=open_storage(storage))
        except KeyError:  # tables exist, the study not yet
            continue
        states = [t.state for t in study.trials]
        reached = states.count(optuna.trial.TrialState.COMPLETE) >= 2 and optuna.trial.TrialState.RUNNING in states
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert reached and proc.returncode == -signal.SIGKILL, f"killed too late: status {proc.returncode}"
    before = {t.number: t.value for t in optuna.load_study(study_name="tiny", storage=storage).trials
              if t.state == optuna.trial.TrialState.COMPLETE}
    assert len(before) >= 2, "the search did not get far enough to be killed mid-trial"
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    study = optuna.load_study(study_name="tiny", storage=storage)
    after = {t.number: t for t in study.trials}
    for number, value in before.items():  # kept, not redone
        assert after[number].value == value
    killed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert killed and "died" in killed[0].user_attrs["reason"]
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) == 6


def _open_after_barrier(url, barrier):
    barrier.wait(timeout=300)
    try:
        open_storage(url)
        return "ok"
    except ValueError as e:
        return str(e)


def test_processes_opening_one_fresh_sqlite_storage_at_once_all_succeed(tmp_path):
    """Workers, or `results` polled during a search, race to create Optuna's tables."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(4) as pool:
        for attempt in range(3):
            url = f"sqlite:///{tmp_path / f'race{attempt}.db'}"
            barrier = manager.Barrier(4)
            outcomes = pool.starmap(_open_after_barrier, [(url, barrier)] * 4)
            assert outcomes == ["ok"] * 4


def _check_shared_study(storage: str, study_name: str, n_trials: int):
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    trials = study.trials
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    finished = [t for t in trials if t.state.is_finished()]
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) >= n_trials
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    pids = {t.user_attrs.get("pid") for t in finished if t.user_attrs.get("status") != "reference"}
    return pids


def test_two_worker_processes_share_one_journal_study(corpus, tmp_path):
    # a fixed sampler seed: with one seed for both workers, both would propose the same taper
    data = tiny_space(corpus, proxy={"steps": 20}, search={"n_trials": 6, "seed": 0, "sampler": "random"})
    path = write_space(tmp_path / "space.yaml", data)
    proc = subprocess.run([sys.executable, "-m", "autotaper", "search", "--space", str(path), "--workers", "2",
                           "--quiet", "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    board = json.loads(proc.stdout)
    assert board["storage"] == "journal:runs/search/tiny/journal.log"
    pids = _check_shared_study(board["storage"], "tiny", 6)
    assert len(pids) == 2, f"trials ran in {pids}, expected both workers"
    # the two workers never trained one candidate twice (own sampler seeds, constant liar, and
    # a proposal of a spec the other worker is training yields), and the board shows each once
    study = optuna.load_study(study_name="tiny", storage=open_storage(board["storage"]))
    trained = [t.user_attrs["spec_key"] for t in study.trials
               if t.user_attrs.get("status") in ("complete", "pruned") and t.user_attrs.get("steps_trained")]
    assert len(trained) == len(set(trained)) and len(trained) >= 2, trained
    keys = [r["spec_key"] for r in board["trials"] if r["spec_key"]]
    assert len(keys) == len(set(keys))
    # a journal has no heartbeat: every trained trial held a lease from its own worker
    for t in study.trials:
        if t.user_attrs.get("steps_trained"):
            assert t.user_attrs["lease"]["pid"] == t.user_attrs["pid"] and t.user_attrs["lease"]["lease_s"] == 60


@pytest.mark.slow
def test_two_workers_share_a_postgresql_study(corpus, tmp_path):
    from tests.servers import start_postgres

    url, stop = start_postgres()
    try:
        data = tiny_space(corpus, proxy={"steps": 20}, search={"n_trials": 7})
        path = write_space(tmp_path / "space.yaml", data)
        cmd = [sys.executable, "-m", "autotaper", "search", "--space", str(path), "--storage", url,
               "--study", "pg", "--quiet"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        # two independent workers, as on two machines: separate processes, one database
        procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env) for _ in range(2)]
        for p in procs:
            _, err = p.communicate(timeout=600)
            assert p.returncode == 0, err.decode()[-3000:]
        pids = _check_shared_study(url, "pg", 7)
        assert len(pids) == 2
        study = optuna.load_study(study_name="pg", storage=open_storage(url))
        assert {"baseline/seed0", "baseline/seed1"} <= set(study.user_attrs)
        rows = leaderboard(url, "pg")["trials"]
        assert [r["status"] for r in rows].count("reference") == 1
        assert {r["status"] for r in rows} <= {"reference", "complete", "pruned", "infeasible"}
    finally:
        stop()


def test_python_api_custom_space(corpus):
    def space_fn(trial):
        strength = trial.suggest_float("s", 0.0, 0.6)
        return f"ffn:linear:{1 + strength:.3f}:{1 - strength:.3f}"

    proxy = Proxy(preset="tiny", steps=10, batch_size=8, seeds=2, precision="fp32", data=corpus)
    space = FunctionSpace(space_fn, proxy=proxy, settings=Settings(sampler="random", pruner="none", n_trials=3),
                          name="custom")
    summary = run_search(space, quiet=True, confirm=False)  # confirmation: tests/test_trust.py
    rows = leaderboard(summary.storage, "custom")["trials"]
    assert sum(r["status"] == "complete" for r in rows) == 2
    assert all(r["taper"].startswith("ffn:linear") for r in rows if r["status"] == "complete")


def test_space_validation_lists_every_problem(tmp_path):
    bad = {"proxy": {"preset": "huge", "steps": 0, "colour": "red"},
           "search": {"sampler": "annealing", "pruner": "median"},
           "taper": {"ffn": {"curve": ["cosine", "zigzag"], "strength": {"low": 0.8, "high": 0.2}},
                     "heads": {"curve": "linear", "strength": {"low": 0.5, "high": 1.5}},
                     "depth": {"curve": "linear"}},
           "extras": 1}
    with pytest.raises(ValueError) as e:
        parse_space(bad)
    text = str(e.value)
    for needle in ("proxy.preset", "proxy.steps", "proxy.colour", "search.sampler", "zigzag", "inverted range",
                   "taper.heads: strength 1.5", "taper.depth", "extras"):
        assert needle in text, needle
    path = write_space(tmp_path / "bad.yaml", bad)
    proc = subprocess.run([sys.executable, "-m", "autotaper", "search", "--space", str(path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()  # one line per problem, each naming its field
    assert len(lines) == 9 and all(line.startswith("autotaper: error: space bad: ") for line in lines), lines
    assert not Path("runs").exists()  # nothing trained, nothing stored


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "search_spaces").glob("*.yaml")))
def test_shipped_spaces_are_valid(name):
    space = load_space(ROOT / "search_spaces" / name)
    assert space.reference_params() is not None or space.settings.sampler == "grid"


def test_paper_grid_is_the_papers_fifteen_points():
    space = load_space(ROOT / "search_spaces" / "paper_grid.yaml")
    grid = space.grid()
    assert len(grid["ffn.curve"]) * len(grid["ffn.strength"]) == 15
    assert space.settings.n_trials == 16  # the grid plus the uniform reference


def test_paired_statistics_against_hand_computed_values():
    d = [0.010, -0.020, 0.005]
    s = paired_stats(d)
    mean = -0.005 / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
    assert s.mean == pytest.approx(mean) and s.sd == pytest.approx(sd)
    assert s.se == pytest.approx(sd / math.sqrt(3))
    half = 4.302652729911275 * sd / math.sqrt(3)  # t(0.975, 2 dof), from tables
    assert s.ci95 == pytest.approx((mean - half, mean + half))
    assert not s.significant
    assert paired_stats([-0.01, -0.012, -0.011, -0.0105]).significant
    one = paired_stats([0.3])
    assert one.ci95 is None and one.se is None


def test_verdict_picks_a_taper_whose_interval_excludes_zero():
    from autotaper.search.results import search_verdict

    row = lambda n, d, ci: {"trial": n, "taper": f"t{n}", "delta_bpb": d, "ci95": ci, "seeds": 3,  # noqa: E731
                            "status": "complete", "early_stopped": False}
    rows = [row(1, -0.11, [-0.25, 0.02]), row(2, -0.085, [-0.156, -0.015]), row(3, 0.01, [-0.02, 0.04])]
    v = search_verdict(rows)
    assert v["beats_uniform"] and v["best"] == 2 and "t1" in v["text"]
    v = search_verdict([rows[0], rows[2]])
    assert not v["beats_uniform"] and v["best"] == 1 and "no taper beats uniform" in v["text"]
    assert search_verdict([])["best"] is None
    # on pre-tokenised data the deltas are in loss, and the verdict says so
    assert "-0.0850 loss" in search_verdict(rows, unit="loss")["text"] and "bpb" not in search_verdict(rows, unit="loss")["text"]


def test_a_proposal_yields_to_a_running_trial_of_the_same_spec():
    """Rounding maps different knobs to one spec: the later proposal yields while the earlier
    trial runs, and not once it has finished (its stored runs are reused instead)."""
    from autotaper.search.objective import running_twin

    study = optuna.create_study()
    first, second, other = study.ask(), study.ask(), study.ask()
    for t, key in ((first, "k1"), (second, "k1"), (other, "k2")):
        t.set_user_attr("spec_key", key)
    assert running_twin(second, "k1") == first.number
    assert running_twin(first, "k1") is None  # the earlier one never yields to the later
    assert running_twin(other, "k2") is None
    study.tell(first, 0.0)
    assert running_twin(second, "k1") is None


def test_workers_auto_sizes_the_pool_from_the_device_and_says_so(corpus, capsys):
    """On a CPU: one worker per two cores (each with two threads). On a GPU: as many as its
    free memory holds at the estimated peak each, at most one per host core and 16. The
    choice is printed."""
    space = parse_space(tiny_space(corpus, search={"n_trials": 2}))
    run_search(space, workers="auto", quiet=False, confirm=False)
    err = capsys.readouterr().err
    cores = os.cpu_count() or 1
    if not torch.cuda.is_available():
        assert f"workers: {max(1, cores // 2)} on cpu ({cores} cores" in err
        return
    from autotaper.search.workers import proxy_bytes

    line = next(x for x in err.splitlines() if x.startswith("workers: "))
    n = int(line.split()[1])
    assert f" on {torch.cuda.get_device_name()}, " in line
    assert f"{proxy_bytes(space) / 2**30:.2f} GiB each" in line
    assert 1 <= n <= min(16, cores) and n * proxy_bytes(space) <= torch.cuda.mem_get_info()[1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_memory_estimate_bounds_what_a_proxy_uses_on_cuda(corpus):
    """auto_workers divides the GPU by `training_bytes`: it must not underestimate a real
    training's peak (or workers run out of memory), nor overstate it threefold (or the GPU idles)."""
    from autotaper.data import load_data
    from autotaper.search.workers import CUDA_CONTEXT_BYTES, training_bytes
    from autotaper.spec import ModelSpec
    from autotaper.train import TrainConfig, train

    data = load_data(corpus)
    for preset, batch, precision in (("proxy-xs", 16, "bf16"), ("proxy-s", 64, "bf16"), ("proxy-s", 16, "fp32")):
        spec = ModelSpec.from_name(preset, vocab_size=data.vocab_size)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        train(spec, data, TrainConfig(steps=3, batch_size=batch, device="cuda", precision=precision), quiet=True)
        peak = torch.cuda.max_memory_allocated() - base
        estimate = training_bytes(spec, batch, precision) - CUDA_CONTEXT_BYTES
        assert peak <= estimate <= 3 * peak, (preset, batch, precision, peak, estimate)


@pytest.mark.parametrize("sampler, pruner, objectives", [
    ("gp", "median", ["bpb"]), ("cmaes", "hyperband", ["bpb"]), ("grid", "wilcoxon", ["bpb"]),
    ("nsga2", "none", ["bpb", "tokens_per_s"]),
])
def test_every_sampler_pruner_and_the_two_objective_search_run(corpus, sampler, pruner, objectives):
    """The samplers and pruners the spaces accept, and a [bpb, tokens_per_s] search, run a
    real (tiny) search each; a pruner's study receives the trials' reports."""
    from autotaper.search.samplers import make_pruner, make_sampler

    taper = {"ffn": {"curve": ["linear", "cosine"], "strength": [0.25, 0.5] if sampler == "grid" else
                     {"low": 0.1, "high": 0.6}}}
    space = parse_space(tiny_space(corpus, proxy={"steps": 8, "eval_every": 4},
                                   search={"sampler": sampler, "pruner": pruner, "n_trials": 4, "seed": 0,
                                           "objectives": objectives}, taper=taper))
    expected = {"gp": "GPSampler", "cmaes": "CmaEsSampler", "grid": "GridSampler", "nsga2": "NSGAIISampler"}
    assert type(make_sampler(space)).__name__ == expected[sampler]
    assert type(make_pruner(space)).__name__ == {"median": "MedianPruner", "hyperband": "HyperbandPruner",
                                                 "wilcoxon": "WilcoxonPruner", "none": "NopPruner"}[pruner]
    summary = run_search(space, quiet=True, confirm=False)
    study = optuna.load_study(study_name="tiny", storage=summary.storage)
    done = [t for t in study.trials if t.user_attrs.get("status") == "complete" and t.user_attrs["taper"] != "uniform"]
    assert len(done) >= 2, [(t.state, t.user_attrs.get("reason")) for t in study.trials]
    if len(objectives) == 2:
        assert all(len(t.values) == 2 and t.values[1] > 0 for t in done)  # bpb delta and tokens/s
        assert len(study.best_trials) >= 1
    else:
        assert all(t.intermediate_values for t in done)  # trial.report ran for the pruner
        if pruner == "wilcoxon":  # each seed's paired difference at step = seed index, all but the last's
            assert all(sorted(t.intermediate_values) == [0] for t in done)
            reference = next(t for t in study.trials if t.user_attrs.get("status") == "reference")
            assert reference.intermediate_values == {0: 0.0, 1: 0.0}  # or, uniform best, Wilcoxon could never prune
        else:  # the running paired mean at evaluations, against the global step
            assert all(max(t.intermediate_values) > 0 for t in done)
    rows = leaderboard(summary.storage, "tiny")["trials"]
    assert {r["status"] for r in rows} <= {"reference", "complete", "pruned", "infeasible"}
