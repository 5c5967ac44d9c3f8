"""The ladder: rung rules, proxy fidelity, the trend and its prediction, the hand-off."""

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from autotaper.ladder.fidelity import fidelity, rank_correlations
from autotaper.ladder.rungs import LadderConfig, Rules, RungDef, parse_ladder, resolve
from autotaper.ladder.trend import best_per_rung, fit_trend, held_out
from autotaper.search.space import Proxy
from autotaper.spec import ModelSpec
from tests.helpers import micro_space, write_corpus

ROOT = Path(__file__).resolve().parents[1]


# -- rank statistics -------------------------------------------------------------------
def test_rank_correlations_match_hand_computed_values():
    # ranks a: 2 1 3 4, b: 2 1 4 3 -> sum d^2 = 2, rho = 1 - 6*2 / (4*15) = 0.8;
    # 6 pairs, one discordant (the last two) -> tau = (5 - 1) / 6
    rho, tau = rank_correlations([0, -1, 2, 3], [0, -2, 3, 1])
    assert rho == pytest.approx(0.8)
    assert tau == pytest.approx(4 / 6)
    # reversed order: -1 both
    assert rank_correlations([1, 2, 3], [3, 2, 1]) == (pytest.approx(-1.0), pytest.approx(-1.0))
    # a constant side has no ranking
    assert rank_correlations([1, 1, 1], [1, 2, 3]) == (None, None)


def test_fidelity_counts_signs_and_bootstraps_seeds():
    # three tapers on 4 seeds at two scales; uniform is added at 0
    a = {"s": [-0.10, -0.11, -0.09, -0.10], "g": [0.20, 0.21, 0.19, 0.20], "m": [0.01, -0.02, 0.03, -0.01]}
    b = {"s": [-0.05, -0.06, -0.04, -0.05], "g": [0.10, 0.12, 0.08, 0.10], "m": [-0.02, 0.01, -0.01, 0.0]}
    f = fidelity("A", a, "B", b, n_boot=500)
    # means A: u 0, s -0.10, g 0.20, m 0.0025 -> ranks 2 1 4 3; B: u 0, s -0.05, g 0.10, m -0.005 -> 3 1 4 2
    assert f.spearman == pytest.approx(1 - 6 * (1 + 0 + 0 + 1) / (4 * 15))
    assert f.tapers == ["uniform", "s", "g", "m"]
    assert (f.sign_agree, f.sign_total) == (2, 3)  # s and g agree, m flips
    assert (f.agree_beyond_noise, f.disagree_beyond_noise) == (2, 0)  # m's intervals include 0
    lo, hi = f.spearman_ci95
    assert -1 <= lo <= f.spearman <= hi <= 1 and lo < hi  # m's noise moves the ranking
    assert not f.includes_zero and "no evidence" not in f.text


def test_fidelity_says_so_when_its_interval_includes_zero():
    rng = np.random.default_rng(1)
    a = {t: list(rng.normal(0, 0.05, 4)) for t in "abcde"}
    b = {t: list(rng.normal(0, 0.05, 4)) for t in "abcde"}
    f = fidelity("A", a, "B", b, n_boot=500)
    assert f.includes_zero
    assert "no evidence that the smaller scale ranks tapers like the larger" in f.text


# -- the trend -------------------------------------------------------------------------
def _points(params, layers=None, tpp=None):
    return [{"name": f"r{i}", "params": p, "n_layers": (layers or [6] * len(params))[i],
             "tokens_per_param": (tpp or [1.0] * len(params))[i]} for i, p in enumerate(params)]


def test_trend_recovers_a_known_slope_and_its_prediction_covers_the_truth():
    truth = lambda n: 0.3 - 0.1 * math.log10(n)  # noqa: E731
    params = [1e5, 3e5, 1e6, 3e6, 1e7]
    se = np.full(5, 0.01)
    target = {"log10_params": math.log10(4.4e8), "n_layers": 6.0, "log10_tokens_per_param": 0.0}
    rng = np.random.default_rng(0)
    covered = slope_covered = 0
    n = 300
    for _ in range(n):
        y = [truth(p) + rng.normal(0, 0.01) for p in params]
        fit = fit_trend(_points(params), y, se)
        assert fit.axes == ["log10_params"]
        _, lo, hi = fit.predict(target)
        covered += lo <= truth(4.4e8) <= hi
        s, slo, shi = fit.slopes()["log10_params"]
        slope_covered += slo <= -0.1 <= shi
    # 95% intervals: coverage near 0.95 over repeated synthetic ladders (binomial SD ~0.013)
    assert 0.90 <= covered / n <= 0.99
    assert 0.90 <= slope_covered / n <= 0.99
    fit = fit_trend(_points(params), [truth(p) for p in params], se)
    assert fit.detectable and fit.slopes()["log10_params"][0] == pytest.approx(-0.1)


def test_trend_separates_depth_from_params_when_rungs_vary_both():
    pts = _points([1e5, 4e5, 4e5, 1.6e6], layers=[6, 6, 24, 24])
    y = [0.05 * math.log10(p["params"]) + 0.01 * p["n_layers"] for p in pts]
    fit = fit_trend(pts, y, [0.001] * 4)
    assert fit.axes == ["log10_params", "n_layers"] and fit.dof == 1
    assert fit.slopes()["log10_params"][0] == pytest.approx(0.05)
    assert fit.slopes()["n_layers"][0] == pytest.approx(0.01)
    # two rungs cannot fit two axes: depth is reported as dropped, not silently ignored
    two = fit_trend(pts[:2] + [], [0.1, 0.2], [0.01, 0.01])
    assert two.axes == ["log10_params"] and two.dropped == [] and two.dof == 0
    mixed = fit_trend([pts[0], pts[3]], [0.1, 0.2], [0.01, 0.01])
    assert mixed.axes == ["log10_params"] and mixed.dropped == ["n_layers"]


def test_no_trend_is_said_plainly():
    rng = np.random.default_rng(3)
    params = [1e5, 1e6, 1e7]
    fit = fit_trend(_points(params), list(rng.normal(0, 0.01, 3)), [0.01] * 3)
    assert not fit.detectable
    m, lo, hi = fit.predict_constant()
    assert lo < m < hi


def test_best_per_rung_picks_the_lowest_mean_and_widens_for_few_seeds():
    deltas = {"shrink": [-0.10, -0.12, -0.08, -0.10], "grow": [0.05, 0.06, 0.04, 0.05]}
    knob = {"uniform": 0.0, "shrink": 0.5, "grow": -0.5}
    b = best_per_rung(deltas, knob, n_boot=300)
    assert b["best"] == "shrink" and b["knob"] == 0.5 and b["effect"] == pytest.approx(-0.10)
    # always the same best: the knob's SD is the resolution floor, times t(3)/z for 4 seeds
    assert b["knob_se"] == pytest.approx(0.025 * 3.182446 / 1.959964, rel=1e-4)
    flat = best_per_rung({"shrink": [0.01, -0.01, 0.02, -0.02]}, knob, n_boot=300)
    assert flat["best"] in ("uniform", "shrink")
    assert flat["knob_se"] > b["knob_se"]  # the best flips between resamples


def test_held_out_predicts_the_largest_rung_from_the_others():
    knob = {"uniform": 0.0, "a": 0.25, "b": 0.5, "c": 0.75}
    # the best strength moves up with scale: a at 1e5, b at 1e6, c at 1e7
    def rung(name, params, best):
        d = {t: [0.02, 0.03, 0.01, 0.02] for t in "abc"}
        d[best] = [-0.05, -0.06, -0.04, -0.05]
        return {"name": name, "params": params, "n_layers": 6, "tokens_per_param": 1.0, "deltas": d}

    out = held_out([rung("s", 1e5, "a"), rung("m", 1e6, "b"), rung("l", 1e7, "c")], knob)
    assert out["held_out"] == "l" and out["fitted_on"] == ["s", "m"]
    assert out["knob"]["predicted"] == pytest.approx(0.75) and out["knob"]["inside"]
    assert out["knob"]["error"] == pytest.approx(0.0, abs=1e-9)


# -- rungs -----------------------------------------------------------------------------
def test_rung_rules_set_steps_and_lr_as_documented():
    proxy = Proxy(preset="tiny", steps=100, batch_size=8, lr=2e-3)
    config = LadderConfig(rungs=(RungDef("a"), RungDef("w", shape={"d_model": 64}),
                                 RungDef("deep", shape={"n_layers": "target"}, tokens_per_param="target")),
                          rules=Rules(tokens_per_param=1.0, min_steps=10, max_steps=600),
                          target_tokens_per_param=50.0)
    target = ModelSpec.from_name("440m")
    a, w, deep = resolve(config, proxy, target, vocab_size=256)
    from autotaper.cost import count

    tiny = count(ModelSpec.from_name("tiny")).params
    assert a.proxy.steps == round(tiny / (8 * 32)) and a.proxy.lr == 2e-3  # the anchor width keeps its LR
    assert w.d_model == 64 and w.proxy.lr == pytest.approx(1e-3)  # 1/width
    assert w.proxy.steps == round(w.params / (8 * 32))
    assert deep.n_layers == 24 and deep.depth_proxy
    assert deep.proxy.steps == 600 and deep.clamped == "max_steps"  # 50 tokens/param is capped
    assert deep.tokens_per_param == pytest.approx(600 * 8 * 32 / deep.params)


def test_under_completep_every_rung_keeps_the_lr_and_takes_the_anchor_as_its_base():
    proxy = Proxy(preset="tiny", steps=100, batch_size=8, lr=2e-3, parametrization="completep", depth_alpha=0.5)
    config = LadderConfig(rungs=(RungDef("a"), RungDef("w", shape={"d_model": 64, "ffn_width": 128}),
                                 RungDef("deep", shape={"n_layers": 8})),
                          rules=Rules(tokens_per_param=1.0, min_steps=10, max_steps=600))
    rungs = resolve(config, proxy, ModelSpec.from_name("440m"), vocab_size=256)
    for r in rungs:
        assert r.proxy.lr == 2e-3 and "completep" in r.lr_note  # the LR transfers: no 1/width
        assert (r.proxy.base_d_model, r.proxy.base_n_layers) == (32, 4)
        assert r.to_dict()["parametrization"] == "completep"
    from autotaper.models import build_model
    from autotaper.search.objective import baseline_spec

    class _Data:
        vocab_size = 256

    space = type("S", (), {"proxy": rungs[2].proxy})()
    deep = build_model(baseline_spec(space, _Data()), seed=0)
    assert deep.layers[0].residual_scale == pytest.approx(2 ** -0.5)  # 8 layers against the anchor's 4
    wide = build_model(baseline_spec(type("S", (), {"proxy": rungs[1].proxy})(), _Data()), seed=0)
    assert wide.logit_scale == pytest.approx(0.5)  # 64 wide against the anchor's 32
    # rule fixed keeps the old meaning: no base shape
    fixed = resolve(dataclasses.replace(config, rules=Rules(tokens_per_param=1.0, min_steps=10, lr_rule="fixed")),
                    proxy, ModelSpec.from_name("440m"), vocab_size=256)
    assert all(r.proxy.base_d_model is None for r in fixed)


def test_ladder_section_errors_name_the_field_and_value():
    with pytest.raises(ValueError) as e:
        parse_ladder({"rungs": [{"name": "a"}, {"name": "a", "d_model": "wide"}], "probe": {"seeds": 1},
                      "lr": {"rule": "magic"}})
    msg = str(e.value)
    assert "ladder.rungs[1].d_model: must be a positive integer" in msg and "'wide'" in msg
    assert "name 'a' used twice" in msg
    assert "ladder.probe.seeds" in msg and "got 1" in msg
    assert "ladder.lr.rule: must be one of parametrization, width, fixed, got 'magic'" in msg


# -- end to end ------------------------------------------------------------------------
@pytest.fixture
def ladder_space(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    data = micro_space(str(corpus), name="lad", proxy={"steps": 12, "eval_every": 12},
                       search={"n_trials": 3})
    data["ladder"] = {"rungs": [{"name": "t4"}, {"name": "t6", "d_model": 48, "ffn_width": 96, "n_layers": 6}],
                      "tokens_per_param": 0.05, "steps": {"min": 8, "max": 30}, "probe": {"top_k": 1, "seeds": 2}}
    path = tmp_path / "lad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _ladder(path, cwd, *extra):
    return subprocess.run([sys.executable, "-m", "autotaper", "ladder", "--space", str(path), "--target", "440m",
                           "--storage", f"sqlite:///{cwd}/ladder.db", "--out", str(cwd / "out"), *extra],
                          cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_ladder_on_two_tiny_shapes_writes_the_report_and_a_spec_at_the_exact_budget(ladder_space, tmp_path):
    from autotaper.cost import count

    r = _ladder(ladder_space, tmp_path, "--json", "--param", "completep")
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert [x["name"] for x in report["rungs"]] == ["t4", "t6"]
    for rung in report["rungs"]:  # the transferring rule: one LR against the anchor's shape, said per rung
        assert rung["parametrization"] == "completep" and rung["lr"] == report["rungs"][0]["lr"]
        assert rung["base_d_model"] == 32 and rung["base_n_layers"] == 4
        assert rung["study"].startswith("lad-completep-")
    probe = report["probe_set"]
    # the paper's cosine, its reverse, a valley and heads growing with depth: the rivals
    assert probe[:5] == ["uniform", "ffn:cosine:1.5:0.5", "ffn:cosine:0.5:1.5", "ffn:valley:1.5:0.5",
                         "heads:linear:0.5:1.5"]
    for rung in report["rungs"]:
        assert rung["seeds"] == [1000, 1001] and rung["mde"] > 0
        assert "fresh seeds" in rung["verdict"]
        for label in probe[1:]:  # the shared probe set was measured at every rung, on the same seeds
            assert len(rung["deltas"][label]) == 2
            p = rung["probe"][label]
            assert p["mean"] == pytest.approx(sum(rung["deltas"][label]) / 2)
    fid = report["fidelity"]
    assert len(fid) == 1 and fid[0]["a"] == "t4" and fid[0]["b"] == "t6"
    assert fid[0]["spearman"] is None or -1 <= fid[0]["spearman"] <= 1
    trend = report["trend"]
    assert {"ffn.strength", "ffn.asymmetry", "effect", "ffn.curve"} <= set(trend)
    lo_hi = trend["effect"]["at_target"]["trend"]
    assert lo_hi[1] <= lo_hi[0] <= lo_hi[2]
    rec = report["recommendation"]
    spec = ModelSpec.load(rec["spec_path"])
    assert spec.n_layers == 24 and spec.taper == rec["taper"]
    assert count(spec).params == count(ModelSpec.from_name("440m")).params == rec["params"]
    assert rec["command"].startswith(f"autotaper train --spec {rec['spec_path']}")
    assert (spec.parametrization, spec.base_d_model, spec.base_n_layers) == ("completep", 32, 4)
    assert "--param completep --depth-alpha 1 --base-d-model 32 --base-n-layers 4" in rec["uniform_command"]
    assert json.loads((tmp_path / "out" / "ladder.json").read_text())["recommendation"] == rec
    plot = subprocess.run([sys.executable, str(ROOT / "examples" / "plot_ladder.py"), str(tmp_path / "out" / "ladder.json"),
                           "--out", str(tmp_path / "ladder.png")], capture_output=True, text=True, timeout=120)
    assert plot.returncode == 0, plot.stderr[-2000:]  # examples/plot_ladder.py reads the JSON and draws it
    assert (tmp_path / "ladder.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"recommendation at 440m: {rec['taper']}" in plot.stdout
    page = (tmp_path / "out" / "ladder.html").read_text()  # the ladder's HTML report, path on stderr
    assert f"report: {tmp_path / 'out' / 'ladder.html'}" in r.stderr
    for sid in ("recommendation", "effects", "fidelity", "trend"):
        section = page.split(f'<section id="{sid}">')[1].split("</section>")[0]
        assert sid in ("recommendation", "fidelity") or "<svg" in section, sid
    assert all(label in page for label in probe[1:]) and "<script" not in page

    # rerunning resumes every rung from its study: nothing retrained, the same verdicts
    again = _ladder(ladder_space, tmp_path, "--json", "--param", "completep")
    assert again.returncode == 0, again.stderr[-2000:]
    report2 = json.loads(again.stdout.strip().splitlines()[-1])
    assert [r["deltas"] for r in report2["rungs"]] == [r["deltas"] for r in report["rungs"]]
    assert report2["recommendation"]["taper"] == rec["taper"]
    assert "(stored)" in again.stderr and "seed 1000: uniform" not in again.stderr


@pytest.mark.slow
def test_a_ladder_trains_its_runs_in_populations_with_the_same_numbers(ladder_space, tmp_path):
    """`ladder --population 8`: every rung's racing baselines, candidates' first seeds and probe
    set x fresh seeds train as populations (members share one training time), stored under the
    keys one-at-a-time training uses, with the same per-seed deltas within the fp32 tolerance."""
    import optuna

    from autotaper.search.storage import open_storage
    from tests.test_population import FP32_TOLERANCE

    data = yaml.safe_load(ladder_space.read_text())
    data["search"].update(sampler="random", seed=0)  # the same candidates whatever the values
    ladder_space.write_text(yaml.safe_dump(data))
    out = {}
    for population in ("1", "8"):
        cwd = tmp_path / f"p{population}"
        cwd.mkdir()
        r = _ladder(ladder_space, cwd, "--json", "--population", population)
        assert r.returncode == 0, r.stderr[-2000:]
        runs = {}
        for rung in ("t4", "t6"):
            study = optuna.load_study(study_name=f"lad-{rung}", storage=open_storage(f"sqlite:///{cwd}/ladder.db"))
            runs[rung] = {k: v["train_time_s"] for k, v in study.user_attrs.items()
                          if k.startswith(("run/", "baseline/"))}
        out[population] = (json.loads(r.stdout.strip().splitlines()[-1]), runs)
    (one, runs_one), (eight, runs_eight) = out["1"], out["8"]
    assert one["probe_set"] == eight["probe_set"]
    for a, b in zip(one["rungs"], eight["rungs"]):
        assert a["deltas"].keys() == b["deltas"].keys()
        for label in a["deltas"]:
            assert a["deltas"][label] == pytest.approx(b["deltas"][label], abs=FP32_TOLERANCE), (a["name"], label)
    for rung in ("t4", "t6"):
        assert runs_one[rung].keys() == runs_eight[rung].keys()  # the same runs under the same keys
        times = list(runs_eight[rung].values())
        assert len(set(runs_one[rung].values())) == len(runs_one[rung])  # one at a time: a time each
        assert len(set(times)) <= len(times) // 2, rung  # populations: members share theirs


def test_ladder_refuses_bad_input_with_one_line(tmp_path, ladder_space):
    data = yaml.safe_load(ladder_space.read_text())
    data["ladder"]["rungs"][1]["d_model"] = -3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    r = _ladder(bad, tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "ladder.rungs[1].d_model" in r.stderr and "-3" in r.stderr
    r = subprocess.run([sys.executable, "-m", "autotaper", "ladder", "--space", str(ladder_space), "--scales",
                        "tiny,nope", "--target", "440m"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "unknown preset 'nope'" in r.stderr
    r = subprocess.run([sys.executable, "-m", "autotaper", "ladder", "--space", str(ladder_space), "--target",
                        "no-such.json"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "no-such.json" in r.stderr and "Traceback" not in r.stderr


def test_scales_replace_the_rungs_and_keep_the_ladder_rules(ladder_space):
    from autotaper.ladder.run import load_ladder

    space, config = load_ladder(ladder_space, scales=["tiny", "proxy-xs"])
    assert [r.name for r in config.rungs] == ["tiny", "proxy-xs"] and config.rungs[1].preset == "proxy-xs"
    assert config.rules.tokens_per_param == 0.05 and config.seeds == 2  # from the ladder section
    with pytest.raises(ValueError, match="at least 2 scales"):
        load_ladder(ladder_space, scales=["tiny"])
