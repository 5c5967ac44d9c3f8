"""The HTML report: every section for a micro study, loaded in a real headless Chromium."""

import re
import shutil
import subprocess
import sys

import pytest

from autotaper.report import build_report
from autotaper.search import parse_space, run_search
from tests.helpers import micro_space, write_corpus

SECTIONS = ("verdict", "leaderboard", "widths", "history", "importances", "curves")  # what a report shows


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    corpus = write_corpus(root / "corpus")
    space = parse_space(micro_space(str(corpus), name="rep", proxy={"eval_every": 5},
                                    search={"n_trials": 5, "sampler": "random", "seed": 0,
                                            "confirm": {"top_k": 1, "seeds": 2}, "suggest_from_probe": True}))
    storage = f"sqlite:///{root}/rep.db"
    run_search(space, storage=storage, quiet=True)
    return storage


def test_report_holds_every_section_with_figures(study):
    storage = study
    page = build_report(storage, "rep")
    for sid in (*SECTIONS, "probe"):  # the probe: search.suggest_from_probe stored it in the study
        match = re.search(rf'<section id="{sid}">(.*?)</section>', page, re.S)
        assert match, sid
        assert "<svg" in match.group(1) or sid == "verdict", sid  # a figure, not a "not available" line
    assert "confirmed" in page and "MDE" in page
    assert "<script" not in page and "http://" not in page.split("</style>")[1].split("<svg")[0]


def test_report_cli_writes_the_page_and_results_points_to_it(study, tmp_path):
    storage = study
    out = tmp_path / "r.html"
    proc = subprocess.run([sys.executable, "-m", "autotaper", "report", "--storage", storage, "--study", "rep",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"report: {out}" and out.stat().st_size > 10_000
    bad = subprocess.run([sys.executable, "-m", "autotaper", "report", "--storage", storage, "--study", "nope"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "no study 'nope'" in bad.stderr and len(bad.stderr.splitlines()) == 1


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium package (.ci/run installs it)")
def test_report_loads_in_headless_chromium_without_console_errors(study, tmp_path):
    storage = study
    page = tmp_path / "report.html"
    page.write_text(build_report(storage, "rep"))
    shot = tmp_path / "report.png"
    proc = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", f"--screenshot={shot}", "--window-size=1000,2400", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    assert proc.returncode == 0 and not console, console or proc.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert all(f'id="{sid}"' in dom for sid in SECTIONS)  # the browser parsed every section


def test_the_probe_suggestion_is_confirmed_beside_the_search_winners(study):
    """search.suggest_from_probe: the uniform proxy is probed once, stored in the study, and its
    list taper is measured on the confirmation's fresh seeds, counted in Holm's correction."""
    import optuna

    from autotaper.search.storage import open_storage

    st = optuna.load_study(study_name="rep", storage=open_storage(study))
    probe = st.user_attrs["probe"]
    assert probe["suggestion"].startswith("ffn:list:") and len(probe["layers"]) == 4
    conf = st.user_attrs["confirmation"]
    names = [c["taper"] for c in conf["candidates"]]
    assert probe["suggestion"] in names or probe["suggestion"] in conf.get("skipped", {})
    assert conf["m"] == len(conf["candidates"])
