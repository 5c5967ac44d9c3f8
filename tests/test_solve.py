import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autotaper.budget import solve, solve_report
from autotaper.cost import count
from autotaper.spec import ModelSpec
from autotaper.taper import Taper
from tests.test_taper import dim_tapers


@pytest.mark.parametrize("preset", ["tiny", "proxy-s", "125m", "440m", "760m", "1.3b"])
@pytest.mark.parametrize("curve", ["linear", "cosine", "sigmoid"])
def test_symmetric_ffn_taper_matches_params_and_flops_exactly(preset, curve):
    base = ModelSpec.from_name(preset)
    spec = solve(base, f"ffn:{curve}:1.5:0.5")
    assert sum(spec.layer_ffn) == base.ffn_width * base.n_layers
    assert count(spec).params == count(base).params
    assert count(spec).flops_per_token == count(base).flops_per_token
    assert all(w % 16 == 0 for w in spec.layer_ffn)
    assert list(spec.layer_ffn) == sorted(spec.layer_ffn, reverse=True)


def test_paper_wedge_on_440m():
    sol = solve_report(ModelSpec.from_name("440m"), "ffn:cosine:1.5:0.5")
    assert sol.spec.layer_ffn[0] == 5568 and sol.spec.layer_ffn[-1] == 1856  # 1.5x and 0.5x of 3712
    assert sol.params_delta == 0 and sol.flops_delta == 0
    assert np.max(np.abs(np.array(sol.realised["ffn"]) - sol.nominal["ffn"])) < 16 / 3712


@pytest.mark.parametrize("taper", ["heads:linear:1.5:0.5", "heads:cosine:0.5:1.5",
                                   "ffn:cosine:1.5:0.5+heads:linear:1.25:0.75"])
@pytest.mark.parametrize("constraint", ["params", "flops", "both"])
def test_heads_tapers_are_exact_and_follow_gqa(taper, constraint):
    base = ModelSpec.from_name("440m", n_kv_heads=4)
    spec = solve(base, taper, constraint=constraint)
    assert count(spec).params == count(base).params
    assert count(spec).flops_per_token == count(base).flops_per_token
    assert all(h == 4 * kv for h, kv in zip(spec.layer_heads, spec.layer_kv_heads))


@pytest.mark.parametrize("taper", ["ffn:power:1.5:0.5:p=3", "ffn:linear:1.6:0.6", "ffn:list:2,1.5,1.2,1,1,1,0.8,0.5",
                                   "embed:cosine:1.5:0.5", "embed:linear:0.75:1.25",
                                   "ffn:cosine:1.5:0.5+heads:linear:1.25:0.75+embed:linear:1.2:0.8"])
def test_asymmetric_combined_and_embed_tapers_are_rescaled_not_rejected(taper):
    base = ModelSpec.from_name("proxy-s")
    sol = solve_report(base, taper, tolerance=1e-2)
    assert abs(sol.params_delta) <= 1e-2 * sol.baseline_cost.params
    assert sol.spec.taper == str(Taper.parse(taper))


def test_asymmetric_single_dim_is_exact_after_renormalising():
    base = ModelSpec.from_name("440m")
    spec = solve(base, "ffn:linear:1.6:0.6")  # mean 1.1: rescaled to mean 1
    assert count(spec).params == count(base).params


def test_flops_constraint_matches_flops_for_embed_taper():
    base = ModelSpec.from_name("440m")
    sol = solve_report(base, "embed:cosine:1.25:0.75", constraint="flops")
    assert abs(sol.flops_delta) <= 1e-3 * sol.baseline_cost.flops_per_token
    assert sol.spec.d_stream == max(sol.spec.layer_d_model) > base.d_model


def test_infeasible_budget_says_which_constraint_and_how_much():
    with pytest.raises(ValueError, match="minimum of one multiple"):
        solve(ModelSpec.from_name("tiny"), "ffn:cosine:1.5:0.5:m=256")
    # one embed dimension cannot match params and FLOPs at once: the error gives the gap
    with pytest.raises(ValueError, match=r"cannot meet the flops_per_token budget: .*%"):
        solve(ModelSpec.from_name("440m"), "embed:cosine:1.5:0.5", constraint="both")


def test_budget_comes_before_the_default_multiple():
    base = ModelSpec.from_name("proxy-s")
    # the default embed multiple (16 for d_model 256) misses the params budget by 0.19%
    with pytest.raises(ValueError, match=r"cannot meet the params budget: .*\+0\.1926%.* at rounding multiples 16;"):
        solve_report(base, "embed:linear:1.2:0.8:m=16")
    sol = solve_report(base, "embed:linear:1.2:0.8")
    assert sol.multiples == {"embed": 8} and sol.default_multiples == {"embed": 16} and sol.finer == {"embed": 8}
    assert abs(sol.params_delta) <= 1e-3 * sol.baseline_cost.params
    assert all(w % 8 == 0 for w in sol.spec.layer_d_model)
    assert any(w % 16 for w in sol.spec.layer_d_model)  # really used the finer multiple
    # a taper the default already meets keeps it
    ok = solve_report(base, "ffn:cosine:1.5:0.5")
    assert ok.multiples == {"ffn": 16} and ok.finer == {}
    # when no multiple down to the floor (8) meets it, the error lists every one tried
    with pytest.raises(ValueError, match=r"at rounding multiples 64/32/16/8;"):
        solve_report(ModelSpec.from_name("440m"), "embed:cosine:1.5:0.5", constraint="both")


def test_plan_reports_the_finer_multiple(capsys):
    from autotaper.cli import main

    assert main(["plan", "--preset", "proxy-s", "--taper", "embed:linear:1.2:0.8"]) == 0
    assert "rounding multiples: embed 8 (default 16 missed the budget)" in capsys.readouterr().out


def test_bad_arguments():
    base = ModelSpec.from_name("tiny")
    with pytest.raises(ValueError, match="constraint must be one of"):
        solve(base, "ffn:cosine:1.5:0.5", constraint="memory")
    with pytest.raises(ValueError, match="tolerance"):
        solve(base, "ffn:cosine:1.5:0.5", tolerance=-1)
    with pytest.raises(ValueError, match="heads.m must be a multiple of the GQA group"):
        solve(base, "heads:linear:1.5:0.5:m=1")


def test_uniform_taper_is_the_baseline():
    base = ModelSpec.from_name("proxy-s")
    assert solve(base, "uniform") == base


@given(dim_tapers(dim="ffn"), st.sampled_from(["proxy-s", "440m"]))
def test_random_ffn_tapers_hit_the_budget_and_keep_their_shape(dt, preset):
    base = ModelSpec.from_name(preset)
    taper = Taper((dt,))
    try:
        dt.ratios(base.n_layers)
    except ValueError:
        return  # a list of the wrong length: covered by its own test
    try:
        sol = solve_report(base, taper)
    except ValueError as e:
        assert "minimum of one multiple" in str(e)
        return
    m = sol.multiples["ffn"]
    assert m == dt.multiple if dt.multiple else m in (16, 8)
    widths = np.array(sol.spec.layer_ffn)
    assert np.all(widths % m == 0) and widths.min() >= m
    direction = dt.direction(base.n_layers)
    if direction:
        assert np.all(np.diff(widths) * direction >= 0)
    assert abs(sol.params_delta) <= 1e-3 * sol.baseline_cost.params
    # exact whenever the baseline total is a whole number of multiples
    if (base.ffn_width * base.n_layers) % m == 0:
        assert widths.sum() == base.ffn_width * base.n_layers
        assert sol.params_delta == 0
