import os

# Ray 2.60 turns token auth on for new local clusters; tests start their own on loopback.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from hypothesis import HealthCheck, settings

# CI replays the same examples every run (derandomize), so a run's verdict depends on the
# code alone; `HYPOTHESIS_PROFILE=thorough` explores fresh random examples, many more of them.
settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=3000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_registries():
    """Curves and families a test registers are gone after it: no test sees another's."""
    from autotaper import curves, families

    saved = dict(curves._CURVES), dict(families._FAMILIES)
    yield
    curves._CURVES.clear()
    curves._CURVES.update(saved[0])
    families._FAMILIES.clear()
    families._FAMILIES.update(saved[1])
