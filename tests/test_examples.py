"""examples/: the scripts a researcher starts from run as shipped, on tiny settings.

(examples/plot_ladder.py runs on the ladder test's own ladder.json, in tests/test_scale.py;
examples/ray_cluster_job.py on a real two-node cluster, in tests/test_ray_cluster.py.)"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=400)


@pytest.mark.slow
def test_the_custom_space_example_searches_two_dimensions_tied_or_apart(tmp_path):
    proc = _run("custom_space.py", "--preset", "tiny", "--steps", "4", "--trials", "3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines()[2:]]
    tapers = [r[-1] for r in rows if r[1] == "complete"]
    assert tapers and all(t.startswith("ffn:") and "+heads:" in t for t in tapers)  # both dims, every candidate
    assert "fresh seeds" in proc.stdout.splitlines()[0]  # the confirmed verdict
    assert "search:" not in proc.stderr  # set_verbosity("warning") quiets the bar too


@pytest.mark.slow
def test_the_custom_family_example_counts_exactly_and_searches_its_family(tmp_path):
    import optuna

    proc = _run("custom_family.py", "--preset", "tiny", "--steps", "4", "--trials", "3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = proc.stdout.splitlines()[0]
    uniform, tapered, built = (int(w.replace(",", "")) for w in
                               (first.split(": ")[1].split()[0], first.split(", ")[1].split()[0],
                                first.split("), ")[1].split()[0]))
    assert uniform == tapered == built
    study = optuna.load_study(study_name="parallel-family",
                              storage=f"sqlite:///{tmp_path}/runs/search/parallel-family/study.db")
    assert study.user_attrs["autotaper/space"]["proxy"]["family"] == "parallel"
    assert sum(1 for t in study.trials if t.user_attrs.get("status") == "complete") >= 1
