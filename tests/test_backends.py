"""One contract for both backends: the same micro space, preset and kind of result rows,
resume, failed and infeasible trials (a conformance suite in the manner of Optuna's
`optuna/testing/pytest_samplers.py`). The Ray backend runs on a local Ray instance started
once for this module."""

from pathlib import Path

import optuna
import pytest

from autotaper.search import leaderboard, parse_space, run_search
from tests.helpers import assert_raced, assert_t_interval, micro_space, ray_unmeasured, write_corpus

BACKENDS = ["optuna", "ray"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return str(write_corpus(tmp_path_factory.mktemp("backends") / "corpus"))


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    # workers import spaces defined in tests.helpers, as a user's workers import theirs
    root = str(Path(__file__).resolve().parents[1])
    with ray_unmeasured() as measure:  # the trial and baseline workers are measured, Ray's own processes not
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": root, **measure}})
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def _cwd(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOTAPER_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture(params=BACKENDS)
def search(request):
    """search(space, **kw) through one backend; returns the study's storage URL."""
    if request.param == "ray":
        request.getfixturevalue("ray_instance")
        from autotaper.search import run_ray_search

        def run(space, **kw):
            return run_ray_search(space, quiet=True, cpus_per_trial=1, tune_storage="tune", **kw).storage
    else:
        def run(space, **kw):
            return run_search(space, quiet=True, **kw).storage
    run.backend = request.param
    return run


def micro(corpus, **changes):
    return parse_space(micro_space(corpus, **changes))


def test_both_backends_give_the_same_rows_and_the_same_numbers(corpus, ray_instance, tmp_path):
    """The micro search on each backend: the reference first, complete rows with their t
    intervals and backend, a verdict; the paper's default trial trained identically by both
    (paired, seeded); and the two leaderboards' rows of one shape, field for field."""
    from autotaper.search import run_ray_search

    space = micro(corpus)
    urls = {"optuna": run_search(space, quiet=True, storage=f"sqlite:///{tmp_path}/a.db").storage,
            "ray": run_ray_search(space, quiet=True, storage=f"sqlite:///{tmp_path}/b.db", cpus_per_trial=1,
                                  tune_storage=str(tmp_path)).storage}
    boards = {backend: leaderboard(url, "micro") for backend, url in urls.items()}
    for backend, board in boards.items():
        rows = board["trials"]
        assert rows[0]["status"] == "reference" and board["verdict"]["text"]
        complete = [r for r in rows if r["status"] == "complete"]
        assert len(complete) >= 2 and any(r["taper"] == "ffn:cosine:1.5:0.5" for r in complete)
        study = optuna.load_study(study_name="micro", storage=urls[backend])
        for r in complete:
            assert r["seeds"] == 2 and r["params_delta"] == 0 and r["backend"] == backend
            assert_t_interval(r["ci95"], study.trials[r["trial"]].user_attrs["seed_deltas"])
    pick = {b: next(r for r in board["trials"] if r["taper"] == "ffn:cosine:1.5:0.5") for b, board in boards.items()}
    assert pick["optuna"]["delta_bpb"] == pytest.approx(pick["ray"]["delta_bpb"], abs=1e-6)
    shapes = {frozenset(r) for board in boards.values() for r in board["trials"]}
    assert len(shapes) == 1, shapes


def test_resume_keeps_finished_trials(search, corpus):
    space = micro(corpus)
    url = search(space, n_trials=2)
    first = {t.number: t.value for t in optuna.load_study(study_name="micro", storage=url).trials
             if t.state == optuna.trial.TrialState.COMPLETE}
    url = search(space, n_trials=4)
    study = optuna.load_study(study_name="micro", storage=url)
    for number, value in first.items():
        assert study.trials[number].value == value
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) == 4


def test_failed_and_infeasible_trials(search, corpus):
    space = micro(corpus, search={"sampler": "random", "n_trials": 7},
                  taper={"ffn": {"curve": "cosine", "strength": 0.5, "multiple": [16, 256]}},
                  train={"lr": [3e-3, 500.0]})
    url = search(space)
    rows = leaderboard(url, "micro")["trials"]
    statuses = {r["status"] for r in rows}
    assert {"infeasible", "failed"} <= statuses, statuses
    failed = [r for r in rows if r["status"] == "failed"]
    assert all("diverged" in (r["reason"] or "") for r in failed)
    study = optuna.load_study(study_name="micro", storage=url)
    for t in study.trials:
        if t.user_attrs.get("status") == "infeasible":
            assert t.constraints["budget"] > 0


def test_racing_and_confirmation_have_the_same_semantics(search, corpus):
    """Seeds past seeds.min only while the comparison is open; their baselines trained lazily
    and stored in the study (a Ray trial reports them back); confirmation on fresh seeds."""
    space = micro(corpus, proxy={"seeds": {"min": 2, "max": 4}},
                  search={"sampler": "random", "n_trials": 6, "confirm": {"top_k": 1, "seeds": 2}})
    url = search(space)
    study = optuna.load_study(study_name="micro", storage=url)
    assert_raced(study, 2, 4)
    most = max(len(t.user_attrs.get("seed_values") or []) for t in study.trials)
    assert {f"baseline/seed{s}" for s in range(max(3, most))} <= set(study.user_attrs)
    for t in study.trials:  # every seed a trial ran is stored, whoever trained it
        for s in range(len(t.user_attrs.get("seed_values") or [])):
            if t.user_attrs.get("status") == "complete" and t.user_attrs["taper"] != "uniform" \
                    and t.user_attrs.get("seed_deltas", [0])[s] != 0:
                assert f"run/{t.user_attrs['spec_key']}/seed{s}" in study.user_attrs
    conf = leaderboard(url, "micro")["confirmation"]
    assert conf["seeds"] == [1000, 1001] and conf["candidates"]


def test_a_trial_whose_training_raises_fails_with_its_message_and_the_search_goes_on(search, corpus):
    """An exception nobody planned for, raised inside training on the worker (a learning rate
    of None reaches `float()`): that trial is FAIL with the exception's one line, the others
    complete, on both backends."""
    from autotaper.search import Proxy, Settings
    from autotaper.search.space import Confirm
    from tests.helpers import Grid, raising_candidate

    proxy = Proxy(preset="tiny", steps=10, batch_size=8, seeds=2, precision="fp32", data=corpus, eval_every=5)
    space = Grid(raising_candidate, strengths=[0.2, 0.3, 0.4], proxy=proxy, name="raises",
                          settings=Settings(sampler="grid", pruner="none", n_trials=4, seed=0, confirm=Confirm(top_k=0)))
    url = search(space)
    study = optuna.load_study(study_name="raises", storage=url)
    by_strength = {t.params.get("strength"): t for t in study.trials if "strength" in t.params}
    bad = by_strength[0.3]
    assert bad.state == optuna.trial.TrialState.FAIL and bad.user_attrs["status"] == "failed"
    assert bad.user_attrs["reason"] == ("TypeError: float() argument must be a string or a real number, "
                                        "not 'NoneType'")
    assert all(by_strength[s].state == optuna.trial.TrialState.COMPLETE for s in (0.2, 0.4))


def test_a_baseline_that_does_not_train_stops_the_search_in_one_line(search, corpus):
    """lr 50 makes the uniform baseline diverge: every delta would be measured against nothing,
    so the search stops before any candidate trains, with one line naming the seed and why (on
    Ray, the task's own error, not Ray's wrapping of a remote traceback), and the study keeps
    no baseline to pair later trials with."""
    with pytest.raises(ValueError) as caught:
        search(micro(corpus, proxy={"lr": 50.0, "steps": 30}))
    message = str(caught.value)
    assert message.startswith("the uniform baseline did not train (seed ") and ": diverged, " in message
    assert len(message.splitlines()) == 1, message
    study = optuna.load_study(study_name="micro", storage="sqlite:///runs/search/micro/study.db")
    assert not [k for k in study.user_attrs if k.startswith("baseline/")]
    assert not [t for t in study.trials if t.user_attrs.get("steps_trained")]


def test_ray_trials_train_on_the_drivers_tokens_not_their_own_disk(ray_instance, tmp_path, monkeypatch):
    """The corpus and its cache vanish once the driver has loaded them: every trial still
    trains, on the token arrays the driver sent through the object store."""
    import os

    from autotaper.search import Proxy, Settings, run_ray_search
    from autotaper.search.space import Confirm
    from tests.helpers import Grid, vanishing_candidate

    corpus = str(write_corpus(tmp_path / "doomed"))
    monkeypatch.setenv("AUTOTAPER_VANISH", os.pathsep.join([corpus, str(tmp_path / "cache")]))
    proxy = Proxy(preset="tiny", steps=10, batch_size=8, seeds=2, precision="fp32", data=corpus, eval_every=5)
    space = Grid(vanishing_candidate, strengths=[0.2, 0.4], proxy=proxy, name="vanish",  # 3 = uniform + 2
                 settings=Settings(sampler="grid", pruner="none", n_trials=3, seed=0, confirm=Confirm(top_k=0)))
    url = run_ray_search(space, quiet=True, cpus_per_trial=1, tune_storage="tune").storage
    assert not os.path.exists(corpus)
    study = optuna.load_study(study_name="vanish", storage=url)
    tried = [t for t in study.trials if "strength" in t.params]
    assert len(tried) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in tried), \
        [(t.state, t.user_attrs.get("reason")) for t in tried]


def test_a_ray_trial_trains_its_seeds_as_a_population(corpus, ray_instance, tmp_path):
    """`search.population: 2` on the Ray backend: each trial trains its two seeds as one population
    in its worker (the two runs share one training time), stored under the keys the Optuna
    backend uses one run at a time, with the same paired deltas within the fp32 tolerance."""
    from autotaper.search import run_ray_search
    from tests.test_population import FP32_TOLERANCE

    one = run_search(micro(corpus), quiet=True, storage=f"sqlite:///{tmp_path}/one.db").storage
    two = run_ray_search(micro(corpus, search={"population": 2}), quiet=True, storage=f"sqlite:///{tmp_path}/two.db",
                         cpus_per_trial=1, tune_storage=str(tmp_path)).storage
    attrs = {name: optuna.load_study(study_name="micro", storage=url).user_attrs
             for name, url in (("one", one), ("two", two))}
    runs = {name: {k: v for k, v in a.items() if k.startswith("run/")} for name, a in attrs.items()}
    shared = set(runs["one"]) & set(runs["two"])
    assert len(shared) >= 2  # the paper's cosine on both seeds at least (the micro search's reference)
    pairs = {}
    for key, entry in runs["two"].items():
        pairs.setdefault(key.rsplit("/seed", 1)[0], []).append(entry["train_time_s"])
    assert all(len(set(times)) == 1 for times in pairs.values() if len(times) == 2), pairs  # trained together
    assert any(len(times) == 2 for times in pairs.values())
    for key in shared:
        seed = key.rsplit("seed", 1)[1]
        delta_one = runs["one"][key]["value"] - attrs["one"][f"baseline/seed{seed}"]["value"]
        delta_two = runs["two"][key]["value"] - attrs["two"][f"baseline/seed{seed}"]["value"]
        assert delta_one == pytest.approx(delta_two, abs=FP32_TOLERANCE), key
