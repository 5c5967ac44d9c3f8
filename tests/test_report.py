"""The HTML report: every section for a micro study, loaded in a real headless Chromium."""

import html
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
    # 7 trials: the two references and 5 sampled, the fewest the importances are drawn from
    space = parse_space(micro_space(str(corpus), name="rep", proxy={"eval_every": 5},
                                    search={"n_trials": 7, "sampler": "random", "seed": 0,
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


def _recipe(page: str) -> dict[str, str]:
    table = re.search(r'<section id="recipe">.*?<table>(.*?)</table>', page, re.S).group(1)
    return {k: html.unescape(v) for k, v in re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", table)}


def test_the_report_header_states_the_recipe_of_the_study_it_renders(study):
    """Proxy, shape, parametrization, precision, seeds, corpus, device, versions and dates, each
    read back against what the study stored (not against constants)."""
    import optuna
    import torch

    from autotaper.search.storage import open_storage
    from autotaper.spec import ModelSpec

    st = optuna.load_study(study_name="rep", storage=open_storage(study))
    proxy, corpus = st.user_attrs["autotaper/space"]["proxy"], st.user_attrs["autotaper/corpus"]
    conf = st.user_attrs["confirmation"]
    head = _recipe(build_report(study, "rep"))
    assert list(head)[:2] == ["study", "proxy"]
    assert head["proxy"].startswith(f"{proxy['preset']}, {proxy['steps']} steps x batch {proxy['batch_size']}, "
                                    f"lr {proxy['lr']:g} ({proxy['schedule']})")
    shape = ModelSpec.from_name(proxy["preset"])
    assert f"{shape.n_layers} layers x d_model {shape.d_model}" in head["shape"] and f"MLP width {shape.ffn_width}" \
        in head["shape"]
    assert head["parametrization"].startswith(proxy["parametrization"])
    n_runs = sum(1 for k in st.user_attrs if k.startswith(("run/", "baseline/")))
    assert head["precision"] == f"{proxy['precision']} ({n_runs} runs)"
    assert head["seeds"].startswith(f"{proxy['seeds']} per candidate") and \
        ", ".join(map(str, conf["seeds"])) in head["seeds"]
    assert corpus["content_sha256"][:12] in head["corpus"] and f"{corpus['train_tokens']:,} train" in head["corpus"]
    assert head["device"].startswith(f"cpu ({n_runs} runs); the study was created on cpu: ")
    assert f"torch {torch.__version__}, Optuna {optuna.__version__}" in head["created by"]
    assert re.match(r"study created 20\d\d-\d\d-\d\dT", head["dates"])


def test_sections_with_too_little_data_say_so_instead_of_drawing(study):
    """Importances from fewer than 5 sampled trials, a history without sampled trials, and
    curves from runs evaluated once: each section says why it draws nothing. The references
    (uniform, the paper default) never count as sampled."""
    import optuna

    from autotaper.report import MIN_IMPORTANCE_TRIALS, curves_plot, optuna_plot, sampled_study
    from autotaper.search.results import rows_of
    from autotaper.search.storage import open_storage

    st = optuna.load_study(study_name="rep", storage=open_storage(study))
    sampled = sampled_study(st)
    assert len(sampled.trials) == len(st.trials) - 2 == MIN_IMPORTANCE_TRIALS  # the two references left out
    assert "<svg" in optuna_plot(st, "importances") and "<svg" in optuna_plot(st, "history")

    few = optuna.create_study()
    few.add_trials(st.trials[:MIN_IMPORTANCE_TRIALS + 1])  # the references and all but one sampled trial
    assert optuna_plot(few, "importances").startswith(
        f"<p>Not drawn: {MIN_IMPORTANCE_TRIALS - 1} sampled trial(s) completed")
    refs = optuna.create_study()
    refs.add_trials(st.trials[:2])
    assert "the references alone are not a history" in optuna_plot(refs, "history")

    once = optuna.create_study()
    for key, value in st.user_attrs.items():  # every stored run cut to its last evaluation
        if key.startswith(("run/", "baseline/")):
            last = max(value["curve"], key=int)
            value = {**value, "curve": {last: value["curve"][last]}}
        once.set_user_attr(key, value)
    assert "<svg" in curves_plot(rows_of(st), st)
    assert "evaluated once" in curves_plot(rows_of(st), once)


def test_the_leaderboard_band_is_the_confirmations_mde_once_there_is_one(study):
    from autotaper.report import mde_band
    from autotaper.search.results import leaderboard

    board = leaderboard(study, "rep")
    mde, which = mde_band(board)
    assert mde == board["confirmation"]["mde"] != board["noise"]["mde_search"]
    assert which.startswith(f"confirmation: {len(board['confirmation']['seeds'])} fresh seeds")
    assert f"MDE ±{mde:.3f}" in build_report(study, "rep")
    board["confirmation"] = None
    assert mde_band(board) == (board["noise"]["mde_search"], f"search: {board['noise']['search_seeds']} seeds")
