"""Verdicts you can trust: noise floor, racing, confirmation on fresh seeds, Holm.

Statistics are checked against independent computations (scipy's t-test, a Monte Carlo
of the t-test's power, Holm by hand). Racing and the whole search pipeline are checked
with a scripted evaluator: the real stores, pairing, racing, confirmation and verdicts,
with training replaced by values of a known effect plus known noise.
"""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import yaml
from scipy import stats as sps

from autotaper import stats
from autotaper.paired import PairedEvaluator, spec_key
from autotaper.search import objective as objective_module
from autotaper.search import parse_space, racing, run_search
from autotaper.search.calibrate import calibrate
from autotaper.search.confirm import confirm
from autotaper.search.results import leaderboard, search_verdict
from autotaper.search.space import CONFIRM_SEED_BASE
from tests.helpers import assert_raced, micro_space, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return str(write_corpus(tmp_path_factory.mktemp("trust") / "corpus"))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOTAPER_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


# -- statistics ---------------------------------------------------------------------------
def test_paired_p_value_matches_scipys_one_sample_t_test():
    d = [-0.03, 0.01, -0.02, -0.015, 0.004]
    assert stats.paired_stats(d).p == pytest.approx(sps.ttest_1samp(d, 0.0).pvalue, rel=1e-9)
    assert stats.paired_stats([0.0, 0.0]).p == 1.0 and stats.paired_stats([0.1, 0.1]).p == 0.0


def test_mde_has_the_stated_power_in_a_monte_carlo_of_the_t_test():
    rng = np.random.default_rng(0)
    for sd, n in ((0.05, 4), (1.0, 10)):
        effect = stats.mde(sd, n)
        d = rng.normal(effect, sd, size=(40_000, n))
        p = sps.ttest_1samp(d, 0.0, axis=1).pvalue
        assert abs((p < 0.05).mean() - 0.80) < 0.01, (sd, n, (p < 0.05).mean())
    assert stats.mde(1.0, 10) == pytest.approx(0.99, abs=0.01)  # Cohen's table: d = 0.99 at n = 10
    assert stats.mde(None, 5) is None and stats.mde(0.1, 1) is None


def test_seeds_for_a_target_mde_is_the_fewest_that_reach_it():
    sd = 0.04
    for n in (3, 7, 20):
        target = stats.mde(sd, n)
        assert stats.seeds_for_mde(sd, target * 1.0001) == n
        assert stats.mde(sd, n - 1) > target
    with pytest.raises(ValueError, match="target MDE"):
        stats.seeds_for_mde(sd, 0.0)


def test_holm_on_known_p_values():
    adjusted, rejected = stats.holm([0.01, 0.04, 0.03, 0.005])
    # by hand: sorted 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> max(0.06, 0.04) = 0.06
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert rejected == [True, False, False, True]
    assert stats.holm([0.5, 0.9]) == ([1.0, 1.0], [False, False])  # 0.5*2 = 1, then max(1, 0.9)


# -- a scripted evaluator: known effects, known noise ---------------------------------------
class Scripted(PairedEvaluator):
    """Training replaced by: 3.0 + seed noise (shared by every spec on a seed) + the spec's true
    effect + run noise (per spec and seed, SD `noise`). Effects by taper text prefix."""

    effects: dict = {}
    noise = 0.02

    def _train(self, spec, seed, overrides, callbacks=()):
        key = int(spec_key(spec, overrides), 16) % 2**32
        rng = np.random.default_rng([seed, key])
        effect = next((e for prefix, e in self.effects.items() if spec.taper.startswith(prefix)), 0.0)
        shared = np.random.default_rng([seed]).normal(0, 0.1)
        value = 3.0 + shared + effect + (rng.normal(0, self.noise) if spec.taper != "uniform" else 0.0)
        self.trained += 1
        return {"value": float(value), "curve": {}, "tokens_per_s": 1.0, "train_time_s": 0.0, "train_wall_s": 0.01,
                "fingerprint": f"seed{seed}", "steps": 1, "status": "complete", "reason": None}


@pytest.fixture
def scripted(monkeypatch):
    def make(space, data, store, *, quiet=True, train=None, population=None):  # make_evaluator's signature
        return Scripted(objective_module.baseline_spec(space, data), data,
                        lambda seed, o: objective_module.train_config(space, seed, o), store=store)

    monkeypatch.setattr(objective_module, "make_evaluator", make)
    Scripted.effects, Scripted.noise = {}, 0.02
    return Scripted


def _space(corpus, name="trust", **changes):
    data = micro_space(corpus, name=name, **changes)
    data["search"].setdefault("pruner", "none")
    return parse_space(data)


def test_racing_adds_seeds_only_to_candidates_that_overlap_the_incumbent(corpus, scripted):
    import optuna

    scripted.effects = {"ffn:linear": +0.2, "ffn:cosine:1.7": -0.5}  # clearly worse; clearly better
    space = _space(corpus, proxy={"seeds": {"min": 2, "max": 6}},
                   search={"sampler": "random", "n_trials": 14, "confirm": False})
    summary = run_search(space, quiet=True)
    study = optuna.load_study(study_name=summary.study_name, storage=summary.storage)
    assert assert_raced(study, 2, 6) > 0  # some candidate did overlap and got more seeds
    for t in study.trials:
        a = t.user_attrs
        if a.get("status") != "complete":
            continue
        if a["taper"].startswith("ffn:linear"):  # worse beyond doubt: stopped at seeds.min
            assert len(a["seed_values"]) == 2 and a["race"] == "worse"


def test_racing_decisions_on_scripted_differences():
    assert racing.decide([0.01, 0.02], 2, n_min=2, n_max=5) == racing.WORSE
    assert racing.decide([-0.5, -0.5001], 2, n_min=2, n_max=5) == racing.BETTER
    assert racing.decide([-0.05, 0.01], 2, n_min=2, n_max=5) == racing.CONTINUE
    assert racing.decide([-0.05, 0.01, -0.02], 3, n_min=2, n_max=3) == racing.MAX_SEEDS
    assert racing.decide([-0.05], 1, n_min=2, n_max=5) == racing.CONTINUE


def test_confirm_uses_only_fresh_seeds_never_the_search(corpus, scripted):
    import optuna

    space = _space(corpus, proxy={"seeds": {"min": 2, "max": 3}},
                   search={"sampler": "random", "n_trials": 6, "confirm": {"top_k": 2, "seeds": 4}})
    summary = run_search(space, quiet=True)
    conf = summary.confirmation
    assert conf["seeds"] == [CONFIRM_SEED_BASE + i for i in range(4)]
    study = optuna.load_study(study_name=summary.study_name, storage=summary.storage)
    search_seeds = set(range(max(3, space.proxy.max_seeds)))  # calibration and racing seeds
    for c in conf["candidates"]:
        key = next(t.user_attrs["spec_key"] for t in study.trials if t.user_attrs.get("taper") == c["taper"])
        fresh = [study.user_attrs[f"run/{key}/seed{s}"]["value"] - study.user_attrs[f"baseline/seed{s}"]["value"]
                 for s in conf["seeds"]]
        assert c["deltas"] == pytest.approx(fresh)  # the verdict's numbers are the fresh runs alone
        trial = next(t for t in study.trials if t.user_attrs.get("taper") == c["taper"])
        assert len(trial.user_attrs["seed_deltas"]) <= len(search_seeds)
        assert not set(conf["seeds"]) & search_seeds
    assert any(c["taper"] == "ffn:cosine:1.5:0.5" for c in conf["candidates"])  # the paper default always
    # confirming again through the CLI, on 2 of the seeds: the stored runs, the same numbers
    stored = len(study.user_attrs)
    # (--no-decompose: this process's scripted runs are not in the subprocess, which would train for real)
    out = subprocess.run([sys.executable, "-m", "autotaper", "confirm", "--study", summary.study_name, "--top-k", "2",
                          "--seeds", "2", "--json", "--no-decompose"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    again = json.loads(out.stdout.splitlines()[-1])
    assert again["seeds"] == conf["seeds"][:2]
    assert [c["deltas"] for c in again["candidates"]] == [c["deltas"][:2] for c in conf["candidates"]]
    study = optuna.load_study(study_name=summary.study_name, storage=summary.storage)
    assert len(study.user_attrs) == stored  # no run was added: nothing was trained again
    # the study grows after its confirmation: the leaderboard says the verdict is stale
    run_search(_space(corpus, proxy={"seeds": {"min": 2, "max": 3}},
                      search={"sampler": "random", "n_trials": 8, "confirm": False}), quiet=True)
    board = leaderboard(summary.storage, summary.study_name)
    assert board["verdict"]["stale"] and "autotaper confirm" in board["verdict"]["text"]


def test_a_search_whose_candidates_have_no_effect_never_ends_with_beats_uniform(corpus, scripted):
    """Five searches of pure noise: each search stage ranks an apparent winner below uniform
    (so there is something to be fooled by), the confirmed verdict never calls it."""
    scripted.noise = 0.05
    for seed in range(5):
        space = _space(corpus, name=f"null{seed}", proxy={"seeds": {"min": 2, "max": 4}},
                       search={"sampler": "random", "n_trials": 10, "seed": seed,
                               "confirm": {"top_k": 3, "seeds": 4}})
        summary = run_search(space, quiet=True)
        board = leaderboard(summary.storage, summary.study_name)
        assert board["verdict"]["confirmed"] and not board["verdict"]["beats_uniform"], board["verdict"]["text"]
        assert "no taper beats uniform" in board["verdict"]["text"]
        best = min(r["delta_bpb"] for r in board["trials"] if r["status"] == "complete")
        assert best < 0 and search_verdict(board["trials"])["taper"] != "uniform"


def test_a_real_effect_twice_the_mde_is_confirmed(corpus, scripted):
    scripted.effects = {"ffn:cosine:1.5:0.5": -0.15}
    scripted.noise = 0.03
    space = _space(corpus, proxy={"seeds": {"min": 2, "max": 4}},
                   search={"sampler": "random", "n_trials": 4, "confirm": {"top_k": 2, "seeds": 5}})
    summary = run_search(space, quiet=True)
    conf = summary.confirmation
    assert 1.5 * conf["mde"] < 0.15, conf["mde"]  # the effect is well above what 5 seeds can see
    assert conf["beats_uniform"] and conf["winner"] == "ffn:cosine:1.5:0.5", conf["text"]
    assert "selection bias" in conf["text"]


# -- calibration on the real trainer --------------------------------------------------------
def test_calibrate_on_tiny_gives_finite_sds_and_an_mde(corpus, tmp_path):
    space = _space(corpus, proxy={"seeds": 3})
    cal = calibrate(space, quiet=True, lrs=[1e-3]).calibration
    assert cal.seeds == [0, 1, 2] and cal.deterministic and cal.run_to_run_sd == 0.0
    for x in (cal.per_seed_sd, cal.delta_sd, cal.mde(3), cal.mde(10)):
        assert x is not None and math.isfinite(x) and x > 0
    assert cal.mde(10) < cal.mde(3)
    assert cal.delta_sd == pytest.approx(np.std(np.array(cal.reference) - np.array(cal.uniform), ddof=1))
    assert {row["lr"] for row in cal.lr_sweep} == {1e-3, space.proxy.lr}
    # the CLI reads the same calibration from the study, and answers the seeds a target needs
    path = tmp_path / "trust.yaml"
    path.write_text(yaml.safe_dump(micro_space(corpus, name="trust", proxy={"seeds": 3},
                                               search={"pruner": "none"})))
    out = subprocess.run([sys.executable, "-m", "autotaper", "calibrate", "--space", str(path), "--json",
                          "--target-mde", str(cal.mde(3) / 2)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["delta_sd"] == pytest.approx(cal.delta_sd) and got["seeds_for_target_mde"] > 3


# -- bad settings ---------------------------------------------------------------------------
@pytest.mark.parametrize("change, field", [
    ({"proxy": {"seeds": {"min": 3, "max": 2}}}, "proxy.seeds.max"),
    ({"proxy": {"seeds": {"max": 4}}}, "proxy.seeds"),
    ({"search": {"confirm": {"top_k": -1}}}, "search.confirm.top_k"),
    ({"search": {"confirm": {"seeds": 1}}}, "search.confirm.seeds"),
    ({"search": {"confirm": {"tops": 2}}}, "search.confirm"),
    ({"search": {"budget": "ten minutes"}}, "search.budget"),
    ({"proxy": {"compile": "yes"}}, "proxy.compile"),
])
def test_bad_seeds_confirm_and_budget_settings_are_refused_with_the_field_named(corpus, tmp_path, change, field):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(micro_space(corpus, name="bad", **change)))
    out = subprocess.run([sys.executable, "-m", "autotaper", "search", "--space", str(path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and field in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # refused before anything was stored


@pytest.mark.parametrize("args, field", [
    (["search", "--space", "x.yaml", "--seeds", "3:2"], "--seeds"),
    (["search", "--space", "x.yaml", "--budget", "soon"], "--budget"),
    (["search", "--space", "x.yaml", "--workers", "0"], "--workers"),
    (["search", "--space", "x.yaml", "--workers", "many"], "--workers"),
    (["search", "--space", "x.yaml", "--backend", "ray", "--gpus-per-trial", "-0.5"], "--gpus-per-trial"),
    (["confirm", "--study", "s", "--seeds", "0"], "--seeds"),
    (["confirm", "--study", "s", "--top-k", "-2"], "--top-k"),
])
def test_bad_seed_and_confirm_flags_exit_2_naming_the_flag(tmp_path, args, field):
    (tmp_path / "x.yaml").write_text(yaml.safe_dump(micro_space("nowhere", name="x")))
    out = subprocess.run([sys.executable, "-m", "autotaper", *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and field in out.stderr and "Traceback" not in out.stderr


def test_confirm_of_a_missing_study_is_one_line_exit_2():
    out = subprocess.run([sys.executable, "-m", "autotaper", "confirm", "--study", "nope"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    with pytest.raises(ValueError, match="no study storage"):
        confirm(study_name="nope")


def test_the_plan_fits_the_budget_from_the_measured_run_time(corpus):
    from autotaper.search.timeplan import make_plan

    space = _space(corpus, proxy={"seeds": {"min": 2, "max": 5}},
                   search={"n_trials": 50, "confirm": {"top_k": 2, "seeds": 4}})
    # 10 s per run, 600 s budget, 60 s spent: confirmation (2 + paper + uniform + the verdict's taper
    # under the other parametrization) x 4 = 20 runs = 200 s; 340 s left for trials of 2 + 3/3 = 3
    # seeds = 30 s each: 11 trials + 2 references
    plan = make_plan(space, run_s=10.0, n_trials=50, elapsed_s=60.0, budget_s=600.0)
    assert (plan.n_trials, plan.confirm_top_k, plan.confirm_seeds, plan.confirm_runs) == (13, 2, 4, 20)
    assert plan.estimate_s == pytest.approx(600.0, abs=30.0) and plan.trials_timeout_s == pytest.approx(340.0)
    assert "under the other parametrization" in plan.text()
    undecomposed = _space(corpus, proxy={"seeds": {"min": 2, "max": 5}},
                          search={"n_trials": 50, "confirm": {"top_k": 2, "seeds": 4, "decompose": False}})
    assert make_plan(undecomposed, run_s=10.0, n_trials=50, elapsed_s=60.0, budget_s=600.0).confirm_runs == 16
    # a slower machine: the trials give first, then the confirmation shrinks to fit
    slow = make_plan(space, run_s=40.0, n_trials=50, elapsed_s=60.0, budget_s=600.0)
    assert slow.n_trials == 2 and slow.confirm_runs * 40.0 <= 540.0 and slow.confirm_seeds >= 2
    # resuming a study with 20 finished trials: the budget adds to them
    assert make_plan(space, run_s=10.0, n_trials=50, elapsed_s=60.0, budget_s=600.0, done=20).n_trials == 31
    # no budget: the space's trials, and an honest estimate
    free = make_plan(space, run_s=10.0, n_trials=50, elapsed_s=0.0)
    assert free.n_trials == 50 and free.estimate_s == pytest.approx((48 * 3 + 20) * 10.0)


def test_the_confirmation_runs_the_seeds_its_plan_kept(corpus, tmp_path, monkeypatch):
    """A budget too small for the space's 6 confirmation seeds: the plan cuts them (here to 2),
    and the confirmation trains what the plan said, not the space's 6 (it once ran 6 while
    the plan printed fewer, and overran its budget)."""
    from autotaper.search import parse_space, run_search

    monkeypatch.chdir(tmp_path)
    space = parse_space(micro_space(corpus, name="cut", search={"n_trials": 3, "confirm": {"top_k": 1, "seeds": 6,
                                                                                          "decompose": False}}))
    out = run_search(space, budget_s=1.0, quiet=True)
    assert "on 2 fresh seeds" in out.plan
    assert out.confirmation is not None and out.confirmation["seeds"] == [1000, 1001]
