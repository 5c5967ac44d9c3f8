import atexit
import os
import shutil
import tempfile

# Ray 2.60 turns token auth on for new local clusters; tests start their own on loopback.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Tokenised corpora go to a cache of this test session's own, never the user's
# ~/.cache/autotaper: no run sees what an earlier run (or another checkout) left there.
# Tests that build corpora set a cache of their own on top.
_CACHE = tempfile.mkdtemp(prefix="autotaper-test-cache-")
os.environ["AUTOTAPER_CACHE"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `-n 2`: two workers share the two cores, so each trains on one thread (and so do the
    # CLI, search and Ray processes it starts) instead of four threads fighting over two.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import signal  # noqa: E402

# A runner started in the background by a non-interactive shell (`cmd &`, nohup) ignores
# SIGINT, and so does every process it starts: Python then never installs its KeyboardInterrupt
# handler, and a test that interrupts a CLI with Ctrl-C waits on a child that cannot hear it.
# Tests start their processes from Python's own default instead.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

from hypothesis import HealthCheck, settings  # noqa: E402

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


# Each module that starts Ray is one xdist group: its tests run one after another in one
# worker (a module-scoped Ray instance or cluster is torn down before another module's starts
# there), while the other worker runs the other group or the rest.
RAY_MODULES = {"test_backends": "ray-local", "test_ray_cluster": "ray-cluster"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(items):
    """Under pytest-xdist with `--dist loadgroup` (the README's command), the Ray modules run
    as two groups, and first: they are the longest chains, so they start while the many short
    tests fill the gaps (every worker collects the same order, as xdist requires)."""
    for item in items:
        group = RAY_MODULES.get(item.module.__name__.rsplit(".", 1)[-1])
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: item.module.__name__.rsplit(".", 1)[-1] not in RAY_MODULES)
