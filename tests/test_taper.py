
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from autotaper.curves import Curve, depth_grid, register_curve
from autotaper.taper import DimTaper, Taper, discretise, format_number

ratio = st.floats(min_value=0.05, max_value=4.0, allow_nan=False).map(lambda v: round(v, 4))


@st.composite
def dim_tapers(draw, dim=None):
    dim = dim or draw(st.sampled_from(["ffn", "heads", "embed"]))
    curve = draw(st.sampled_from(["linear", "cosine", "sigmoid", "power", "step", "list"]))
    opts = []
    if curve == "sigmoid" and draw(st.booleans()):
        opts.append(("k", draw(st.floats(0.5, 30).map(lambda v: round(v, 2)))))
    if curve == "power":
        opts.append(("p", draw(st.floats(0.25, 4).map(lambda v: round(v, 3)))))
    if curve == "step" and draw(st.booleans()):
        opts.append(("mid", draw(ratio)))
    if draw(st.booleans()):
        opts.append(("m", draw(st.sampled_from([8, 16, 32, 64]))))
    if curve == "list":
        return DimTaper(dim, "list", values=tuple(draw(st.lists(ratio, min_size=1, max_size=8))),
                        options=tuple(opts))
    return DimTaper(dim, curve, draw(ratio), draw(ratio), options=tuple(opts))


@st.composite
def tapers(draw):
    dims = draw(st.lists(st.sampled_from(["ffn", "heads", "embed"]), unique=True, max_size=3))
    return Taper(tuple(draw(dim_tapers(d)) for d in dims))


@given(tapers())
@example(Taper((DimTaper("heads", "sigmoid", 1.0, 1.0, options=(("k", 30.0),)),)))  # once printed k=3e+01
def test_text_form_round_trips(taper):
    assert Taper.parse(str(taper)) == taper
    assert str(Taper.parse(str(taper))) == str(taper)


@pytest.mark.parametrize("value, text", [(10.0, "10"), (20.0, "20"), (30.0, "30"), (100.0, "100"), (1e16, "1e16"),
                                         (1e-5, "1e-05"), (0.1, "0.1"), (1.5, "1.5"), (-0.5, "-0.5"),
                                         (123456789.0, "123456789")])
def test_numbers_print_shortest_and_never_with_a_plus(value, text):
    assert format_number(value) == text  # '%.1g' once gave '3e+01'; '+' joins dimensions in the text form
    assert float(text) == value


def test_text_form_examples():
    t = Taper.parse("ffn:cosine:1.5:0.5+heads:linear:1.25:0.75")
    assert str(t) == "ffn:cosine:1.5:0.5+heads:linear:1.25:0.75"
    assert Taper.parse("uniform").is_uniform and str(Taper()) == "uniform"
    # default-valued options are dropped so equal tapers print equal
    assert str(Taper.parse("ffn:sigmoid:1.5:0.5:k=10")) == "ffn:sigmoid:1.5:0.5"
    # dims are put in canonical order
    assert str(Taper.parse("heads:linear:1.2:0.8+ffn:cosine:1.5:0.5")) == "ffn:cosine:1.5:0.5+heads:linear:1.2:0.8"
    assert str(Taper.parse("ffn:list:1.5,1,0.5:m=32")) == "ffn:list:1.5,1,0.5:m=32"


@pytest.mark.parametrize("text, field", [
    ("ffn:cosine:-1.5:0.5", "ffn.start"),
    ("ffn:cosine:1.5:0", "ffn.end"),
    ("ffn:wiggle:1.5:0.5", "unknown curve 'wiggle'"),
    ("mlp:cosine:1.5:0.5", "unknown dim 'mlp'"),
    ("ffn:cosine:1.5", "needs START and END"),
    ("ffn:cosine:1.5:abc", "ffn.end must be a number"),
    ("ffn:cosine:1.5:0.5:k=3", "unknown option 'k'"),
    ("ffn:cosine:1.5:0.5:m=0", "ffn.m"),
    ("ffn:cosine:1.5:0.5:m=2.5", "ffn.m"),
    ("ffn:sigmoid:1.5:0.5:k=-1", "option k"),
    ("ffn:cosine:1.5:0.5+ffn:linear:1.2:0.8", "more than once"),
    ("ffn:cosine:1.5:0.5:k", "KEY=VALUE"),
    ("ffn:list:", "malformed"),
    ("ffn:list:1,0,1", "list ratios must be > 0"),
    ("ffn:step:1.5:0.5:early=0.8:late=0.5", "early + late"),
    ("", None),
])
def test_bad_taper_text_names_the_field(text, field):
    if field is None:
        assert Taper.parse(text).is_uniform
        return
    with pytest.raises(ValueError, match=field.replace("+", r"\+").replace("(", r"\(")):
        Taper.parse(text)


def test_curves_follow_the_paper_formulas():
    L = 12
    x = depth_grid(L)
    s, e = 1.5, 0.5
    np.testing.assert_allclose(DimTaper("ffn", "linear", s, e).ratios(L), s - (s - e) * x)
    np.testing.assert_allclose(DimTaper("ffn", "cosine", s, e).ratios(L),
                               e + (s - e) / 2 * (1 + np.cos(np.pi * x)))
    np.testing.assert_allclose(DimTaper("ffn", "sigmoid", s, e).ratios(L),
                               e + (s - e) / (1 + np.exp(10 * (x - 0.5))))
    np.testing.assert_allclose(DimTaper("ffn", "power", s, e, options=(("p", 2.0),)).ratios(L),
                               s - (s - e) * x**2)
    # the three symmetric curves keep the mean when start + end = 2
    for curve in ("linear", "cosine", "sigmoid"):
        assert DimTaper("ffn", curve, s, e).ratios(L).mean() == pytest.approx(1.0)


def test_step_groups_are_the_three_group_experiment():
    r = DimTaper("ffn", "step", 0.75, 0.75, options=(("mid", 1.5),)).ratios(12)
    assert list(r) == [0.75] * 4 + [1.5] * 4 + [0.75] * 4
    r = DimTaper("ffn", "step", 1.5, 0.5).ratios(6)
    assert list(r) == [1.5, 1.5, 1.0, 1.0, 0.5, 0.5]


def test_growing_and_shrinking_tapers_have_their_direction():
    assert DimTaper("ffn", "linear", 1.5, 0.5).direction(8) == -1
    assert DimTaper("ffn", "linear", 0.5, 1.5).direction(8) == 1  # OpenELM-style
    assert DimTaper("ffn", "step", 1, 1, options=(("mid", 2.0),)).direction(9) == 0


def test_list_length_must_match_layers():
    with pytest.raises(ValueError, match="n_layers=4"):
        Taper.parse("ffn:list:1.5,1,0.5").get("ffn").ratios(4)


def test_registered_curves_are_usable_by_name():
    register_curve("sqrt_test", lambda x: 1 - np.sqrt(x), monotone=True, overwrite=True)
    t = Taper.parse("ffn:sqrt_test:1.4:0.6")
    np.testing.assert_allclose(t.get("ffn").ratios(5), 0.6 + 0.8 * (1 - np.sqrt(depth_grid(5))))

    class Bump(Curve):
        defaults = {"h": 0.5}

        def ratios(self, x, start, end, h=0.5):
            return start + h * np.sin(np.pi * x)

    register_curve("bump_test", Bump(), overwrite=True)
    assert str(Taper.parse("ffn:bump_test:1:1:h=0.25")) == "ffn:bump_test:1:1:h=0.25"
    with pytest.raises(ValueError, match="already registered"):
        register_curve("cosine", lambda x: x)


@given(st.lists(st.floats(0.01, 50), min_size=1, max_size=40), st.integers(0, 200),
       st.sampled_from([-1, 0, 1]))
def test_discretise_keeps_sum_minimum_and_order(values, extra, direction):
    target = np.array(values)
    if direction:
        target = np.sort(target)[::-1] if direction < 0 else np.sort(target)
    total = len(target) + extra
    units = discretise(target, total_units=total, direction=direction)
    assert units.sum() == total
    assert units.min() >= 1
    if direction < 0:
        assert np.all(np.diff(units) <= 0)
    if direction > 0:
        assert np.all(np.diff(units) >= 0)
    # rounding error per layer stays under one unit of the (min-clamped) target
    scaled = target * total / target.sum()
    free = scaled >= 1
    if free.all():
        assert np.all(np.abs(units - scaled) < 1 + 1e-9)


def test_discretise_rejects_too_few_units():
    with pytest.raises(ValueError, match="at least one multiple"):
        discretise(np.ones(5), total_units=4)


def test_a_registered_curve_does_not_outlive_its_test():
    """The conftest fixture restores the registries: the curves the tests above registered are gone."""
    from autotaper.curves import curve_names

    assert "sqrt_test" not in curve_names() and "bump_test" not in curve_names()


def test_valley_is_wide_at_both_ends_narrow_in_the_middle_and_solves_exactly():
    from autotaper.budget import solve
    from autotaper.cost import count
    from autotaper.spec import ModelSpec

    t = Taper.parse("ffn:valley:1.5:0.5").get("ffn")
    r = t.ratios(7)
    assert r[0] == pytest.approx(1.5) and r[-1] == pytest.approx(1.5) and r[3] == pytest.approx(0.5)
    assert np.allclose(r, r[::-1]) and t.direction(7) == 0  # symmetric, not monotone
    base = ModelSpec.from_name("proxy-xs")
    spec = solve(base, "ffn:valley:1.5:0.5")
    assert count(spec).params == count(base).params
    f = spec.layer_ffn
    assert f[0] == f[-1] > f[2] and min(f) in (f[2], f[3])
