"""The HTML reports: one self-contained file each (inline SVG, no script, no network).

A study's report (`build_report`), and a ladder's (`ladder_report`, from its ladder.json):
the probe set's effect against scale with intervals, rank agreement between rungs, and the
trend fit with its prediction at the target.

Sections, each drawn from the study storage alone (so any study, from any backend, reports):
- recipe: what every verdict holds under: the proxy (preset, shape, steps, batch, lr,
  parametrization, precision), corpus, seeds, device, the versions that created the study, dates;
- verdict: the confirmed verdict (or the search-stage one, marked unconfirmed) and the noise floor;
- leaderboard: the mean paired difference against uniform with its 95% interval as error bars,
  zero and the minimum detectable effect drawn as a band (the confirmation's, the one its
  verdict used, once there is one), confirmed intervals beside them;
- widths: the per-layer profile of the top tapers against uniform, per tapered dimension;
- history and importances: Optuna's own matplotlib plots (`optuna.visualization.matplotlib`)
  over the sampled trials (the uniform and paper-default references left out);
- curves: the paired difference per seed at each evaluation, for the top candidates.
A section with too little data to draw says so instead of drawing a degenerate figure.
- probe: the residual-stream probe of a run, when one is given (`autotaper.probe`).
"""

from __future__ import annotations

import html
import io
from pathlib import Path

from autotaper.paired import RUN_KEY
from autotaper.search import records
from autotaper.search.records import BASELINE_KEY, PROBE_ATTR, TrialRecord

TOP = 3
_RUNS = (records.RUN_PREFIX, records.BASELINE_PREFIX)  # the stored runs' attribute keys
MIN_IMPORTANCE_TRIALS = 5  # fANOVA over fewer sampled trials ranks noise


def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prologue: the SVG sits inside HTML


def _figure(w: float = 7.5, h: float = 3.5, ncols: int = 1):
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(w, h))


def leaderboard_plot(board: dict) -> str:
    rows = [r for r in board["trials"] if r["status"] == "complete" and r["ci95"]]
    rows = sorted(rows, key=lambda r: r["delta_bpb"])[:15]
    if not rows:
        return "<p>No complete trial with an interval yet.</p>"
    conf = {c["trial"]: c for c in (board.get("confirmation") or {}).get("candidates", [])}
    fig, ax = _figure(7.5, 0.45 * len(rows) + 1.4)
    ys = list(range(len(rows)))[::-1]
    for y, r in zip(ys, rows):
        lo, hi = r["ci95"]
        ax.errorbar(r["delta_bpb"], y, xerr=[[r["delta_bpb"] - lo], [hi - r["delta_bpb"]]], fmt="o",
                    color="tab:blue", capsize=3, label="search (proxy seeds)" if y == ys[0] else None)
        c = conf.get(r["trial"])
        if c and c.get("ci95"):
            clo, chi = c["ci95"]
            ax.errorbar(c["mean"], y - 0.25, xerr=[[c["mean"] - clo], [chi - c["mean"]]], fmt="s",
                        color="tab:green" if c.get("beats_uniform") else "tab:gray", capsize=3,
                        label="confirmed (fresh seeds)" if not ax.get_legend_handles_labels()[1].count(
                            "confirmed (fresh seeds)") else None)
    mde, which = mde_band(board)
    if mde:
        ax.axvspan(-mde, mde, color="tab:orange", alpha=0.15, label=f"MDE ±{mde:.3f} ({which})")
    ax.axvline(0, color="black", lw=1)
    ax.set_yticks(ys, [f"#{r['trial']} {r['taper']}" for r in rows], fontsize=8)
    ax.set_ylim(-0.6, len(rows) - 0.4)  # room for the confirmed interval drawn under the lowest row
    ax.set_xlabel("Δ bits per byte vs uniform (negative is better), 95% CI")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=3)  # below: never over a bar
    return _svg(fig)


def mde_band(board: dict) -> tuple[float | None, str]:
    """The minimum detectable effect the verdict used: the confirmation's once there is one
    (its fresh seeds, Holm over its candidates), else the search's (calibration at the search's seeds)."""
    conf = board.get("confirmation") or {}
    if conf.get("mde"):
        return conf["mde"], f"confirmation: {len(conf['seeds'])} fresh seeds, Holm over {conf['m']}"
    noise = board.get("noise") or {}
    if noise.get("mde_search"):
        return noise["mde_search"], f"search: {noise['search_seeds']} seeds"
    return None, ""


def widths_plot(rows: list[dict], study) -> str:
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    top = [r for r in rows if r["status"] == "complete" and r["taper"] != "uniform"][:TOP]
    specs = [(r, TrialRecord.from_trial(by_number[r["trial"]]).spec or {}) for r in top]
    specs = [(r, s) for r, s in specs if s.get("layer_ffn")]
    if not specs:
        return "<p>No tapered candidate to draw.</p>"
    dims = [(k, lab, base) for k, lab, base in (("layer_ffn", "MLP width", "ffn_width"),
                                                 ("layer_heads", "query heads", "n_heads"),
                                                 ("layer_d_model", "residual width", "d_model"))
            if any(len(set(s[k])) > 1 for _, s in specs)]
    out = []
    for key, label, base in dims or [("layer_ffn", "MLP width", "ffn_width")]:
        fig, ax = _figure(6.5, 3.0)
        n = len(specs[0][1][key])
        ax.plot(range(n), [specs[0][1][base]] * n, "k--", lw=1, label="uniform")
        for r, s in specs:
            ax.plot(range(len(s[key])), s[key], marker="o", ms=3, label=f"#{r['trial']} {r['taper']}")
        ax.set_xlabel("layer")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
        out.append(_svg(fig))
    return "\n".join(out)


def curves_plot(rows: list[dict], study) -> str:
    attrs = study.user_attrs
    top = [r for r in rows if r["status"] == "complete" and r.get("spec_key") and r["taper"] != "uniform"][:TOP]
    evaluations = {len(run.get("curve") or ()) for k, run in attrs.items() if k.startswith(_RUNS) and isinstance(run, dict)}
    if evaluations and max(evaluations) < 2:
        return ("<p>Each run was evaluated once, at its last step (eval_every = steps): there is no curve to "
                "draw. The final paired differences are in the leaderboard.</p>")
    out = []
    for r in top:
        fig, ax = _figure(6.5, 2.8)
        drawn = 0
        for seed in range(64):
            run = attrs.get(RUN_KEY.format(key=r["spec_key"], seed=seed))
            base = attrs.get(BASELINE_KEY.format(seed=seed))
            if run is None or base is None:
                continue
            steps = sorted((int(s) for s in run["curve"] if s in base["curve"]))
            ax.plot(steps, [run["curve"][str(s)] - base["curve"][str(s)] for s in steps], marker="o", ms=3,
                    label=f"seed {seed}")
            drawn += 1
        if not drawn:
            continue
        ax.axhline(0, color="black", lw=1)
        ax.set_title(f"#{r['trial']} {r['taper']}", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("Δ bpb vs uniform")
        ax.legend(fontsize=7)
        out.append(_svg(fig))
    return "\n".join(out) or "<p>No stored learning curves.</p>"


def sampled_study(study):
    """An in-memory copy of `study` holding only its sampled trials: the uniform and
    paper-default references are enqueued, not sampled, and would bend the history and the
    importances."""
    import optuna

    from autotaper.search.space import PAPER_DEFAULT

    def sampled(t) -> bool:
        r = TrialRecord.from_trial(t)
        return r.status not in (records.REFERENCE, records.DUPLICATE) and r.enqueued != PAPER_DEFAULT

    copy = optuna.create_study(directions=study.directions)
    copy.add_trials([t for t in study.get_trials(deepcopy=False) if sampled(t)])
    return copy


def optuna_plot(study, kind: str) -> str:
    """Optuna's own plot over the sampled trials, or a line saying why it is not drawn."""
    import warnings

    import matplotlib
    import optuna
    from optuna.visualization import matplotlib as ovm

    matplotlib.use("Agg")  # Optuna's plots draw with pyplot
    study = sampled_study(study)
    done = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if kind == "importances" and len(done) < MIN_IMPORTANCE_TRIALS:
        return (f"<p>Not drawn: {len(done)} sampled trial(s) completed, and importances from fewer than "
                f"{MIN_IMPORTANCE_TRIALS} rank noise.</p>")
    if not done:
        return "<p>Not drawn: no sampled trial completed (the references alone are not a history).</p>"
    try:
        with warnings.catch_warnings(), matplotlib.rc_context():  # Optuna switches pyplot's style
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
            fn = ovm.plot_optimization_history if kind == "history" else ovm.plot_param_importances
            ax = fn(study, target=(lambda t: t.values[0]) if len(study.directions) > 1 else None,
                    target_name="Δ bpb vs uniform")
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.set_size_inches(7, 3.5)
            return _svg(fig)
    except (ValueError, RuntimeError, ImportError) as e:
        return f"<p>Not available for this study: {html.escape(str(e).splitlines()[0])}</p>"


def probe_plot(result: dict) -> str:
    layers = result["layers"]
    fig, (a, b) = _figure(9, 3.0, ncols=2)
    xs = [r["layer"] for r in layers]
    for key, label in (("cos", "block"), ("attn_cos", "attention"), ("mlp_cos", "MLP")):
        if layers[0].get(key) is not None:
            a.plot(xs, [r[key] for r in layers], marker="o", ms=3, label=label)
    a.set_xlabel("layer")
    a.set_ylabel("cos(stream before, after)")
    a.legend(fontsize=7)
    for key, label in (("update", "block"), ("attn_update", "attention"), ("mlp_update", "MLP")):
        if layers[0].get(key) is not None:
            b.plot(xs, [r[key] for r in layers], marker="o", ms=3, label=label)
    b.set_yscale("log")
    b.set_xlabel("layer")
    b.set_ylabel("|update| / |stream|")
    b.legend(fontsize=7)
    return _svg(fig)


def recipe(study, board: dict) -> list[tuple[str, str]]:
    """The report's header: what every number in it holds under, one (field, value) per line,
    read from the study alone."""
    import datetime

    import autotaper

    attrs = study.user_attrs
    proxy = (attrs.get(records.SPACE_ATTR) or {}).get("proxy") or {}
    corpus = attrs.get(records.CORPUS_ATTR) or {}
    env = attrs.get(records.ENVIRONMENT_ATTR) or {}
    conf = board.get("confirmation") or {}
    out = [("study", f"{board['study']} ({board['storage']})")]
    if proxy:
        out.append(("proxy", f"{proxy['preset']}, {proxy['steps']} steps x batch {proxy['batch_size']}, lr "
                             f"{proxy['lr']:g} ({proxy['schedule']}), {proxy['constraint']} budget"))
        out.append(("shape", _shape(proxy)))
        alpha = f" (alpha {proxy['depth_alpha']:g})" if proxy.get("parametrization") == "completep" else ""
        out.append(("parametrization", f"{proxy.get('parametrization', 'sp')}{alpha}: every verdict holds under it"))
        out.append(("precision", _runs_say(attrs, "precision", proxy["precision"])))
        seeds = f"{proxy['seeds']}" + (f" to {proxy['seeds_max']} (racing)" if (proxy.get("seeds_max") or 0) >
                                       proxy["seeds"] else "")
        fresh = f"; confirmation on fresh seeds {', '.join(map(str, conf['seeds']))}" if conf.get("seeds") else ""
        out.append(("seeds", f"{seeds} per candidate in the search{fresh}"))
    if corpus:
        out.append(("corpus", f"{corpus['corpus']}: {corpus['tokenizer']} tokenizer of {corpus['vocab_size']}, "
                              f"{corpus['train_tokens']:,} train and {corpus['val_tokens']:,} validation tokens, "
                              f"sha256 {corpus['content_sha256'][:12]}"))
    device = _runs_say(attrs, "device", "no stored run")
    out.append(("device", f"{device}; the study was created on {env['device']}" if env else device))
    versions = (f"autotaper {env['autotaper']}, torch {env['torch']}, Optuna {env['optuna']}, Python "
                f"{env['python']} on {env['host']}" if env else "not recorded")
    out.append(("created by", versions))
    out.append(("dates", f"study created {env.get('created', 'not recorded')}; report written "
                         f"{datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')} "
                         f"by autotaper {autotaper.__version__}"))
    return out


def _shape(proxy: dict) -> str:
    from autotaper.spec import ModelSpec

    try:
        s = ModelSpec.from_name(proxy["preset"], **(proxy.get("shape") or {}))
    except (KeyError, ValueError, TypeError):
        return "unknown (the preset is not known to this version)"
    return (f"{s.family}, {s.n_layers} layers x d_model {s.d_model}, {s.n_heads} heads ({s.n_kv_heads or s.n_heads} kv), "
            f"MLP width {s.ffn_width}, context {s.context_length}")


def _runs_say(attrs: dict, key: str, fallback: str) -> str:
    """What the stored runs record for `key` (device, precision), each value with its count."""
    from collections import Counter

    said = Counter(v[key] for k, v in attrs.items() if k.startswith(_RUNS) and isinstance(v, dict) and v.get(key))
    if not said:
        return str(fallback)
    return ", ".join(f"{value} ({n} run{'s' if n > 1 else ''})" for value, n in said.most_common())


def _table(rows: list[dict]) -> str:
    head = "<tr><th>trial</th><th>status</th><th>Δ bpb</th><th>95% CI</th><th>seeds</th><th>taper</th></tr>"
    body = []
    for r in rows:
        d = f"{r['delta_bpb']:+.4f}" if isinstance(r["delta_bpb"], (int, float)) else "-"
        ci = f"[{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}]" if r["ci95"] else "-"
        same = f" (also #{', #'.join(map(str, r['same_as']))})" if r.get("same_as") else ""
        body.append(f"<tr><td>{r['trial']}</td><td>{html.escape(r['status'])}</td><td>{d}</td><td>{ci}</td>"
                    f"<td>{r['seeds']}</td><td>{html.escape(r['taper'])}{same}</td></tr>")
    return f"<table>{head}{''.join(body)}</table>"


STYLE = ("body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}"
         "section{margin:2em 0}table{border-collapse:collapse;font-size:13px}"
         "td,th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}"
         "pre{background:#f6f6f6;padding:8px;font-size:12px;white-space:pre-wrap}svg{max-width:100%;height:auto}")


def build_report(storage: str | None, study_name: str, *, probe: dict | None = None) -> str:
    """The report's HTML for one study (see the module docstring)."""
    from autotaper.search.results import leaderboard
    from autotaper.search.study import load_study

    board = leaderboard(storage, study_name)
    study, _ = load_study(storage, study_name)  # the URL as given: the board's is masked
    rows = board["trials"]
    verdict = board["verdict"]
    noise = "\n".join((board.get("noise") or {}).get("lines") or ["(no calibration stored)"])
    header = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in recipe(study, board))
    parts = [
        ("recipe", "Recipe", f"<table>{header}</table>"),
        ("verdict", "Verdict", f"<p><b>{'confirmed' if verdict.get('confirmed') else 'unconfirmed'}:</b> "
                               f"{html.escape(verdict['text'])}</p><pre>{html.escape(noise)}</pre>"),
        ("leaderboard", "Leaderboard: paired differences against uniform",
         leaderboard_plot(board) + _table(rows)),
        ("widths", f"Per-layer widths of the top {TOP} tapers", widths_plot(rows, study)),
        ("history", "Optimisation history (Optuna)", optuna_plot(study, "history")),
        ("importances", "Parameter importances (Optuna)", optuna_plot(study, "importances")),
        ("curves", f"Paired differences per seed during training, top {TOP}", curves_plot(rows, study)),
    ]
    probe = probe if probe is not None else study.user_attrs.get(PROBE_ATTR)  # search.suggest_from_probe
    if probe is not None:
        parts.append(("probe", f"Residual-stream probe of {probe['run_dir']}", probe_plot(probe)))
    return _page(f"autotaper report: {study_name}", f"storage {board['storage']}", parts)


def ladder_effects_plot(report: dict) -> str:
    """Each probe taper's confirmed difference against uniform (95% CI) at every rung."""
    rungs = report["rungs"]
    fig, ax = _figure(7.5, 3.8)
    n = len(report["probe_set"]) - 1  # rungs side by side, in the ladder's order (two may share a size)
    for k, label in enumerate(report["probe_set"][1:]):
        pts = [(i + 0.3 * (k - (n - 1) / 2) / max(n - 1, 1), r["probe"][label]) for i, r in enumerate(rungs)
               if "mean" in r["probe"].get(label, {})]
        if not pts:
            continue
        means = [p["mean"] for _, p in pts]
        err = [[p["mean"] - (p["ci95"] or [p["mean"]] * 2)[0] for _, p in pts],
               [(p["ci95"] or [p["mean"]] * 2)[1] - p["mean"] for _, p in pts]]
        ax.errorbar([x for x, _ in pts], means, yerr=err, marker="o", ms=4, capsize=3, label=label)
    ax.axhline(0, color="black", lw=1)
    ax.set_xticks(range(len(rungs)), [f"{r['name']}\n{r['n_layers']} x {r['d_model']}, {r['params']:,} params\n"
                                      f"{r['tokens_per_param']:.3g} tokens/param" for r in rungs], fontsize=7)
    ax.set_ylabel("Δ vs uniform, 95% CI (fresh seeds)")
    ax.legend(fontsize=7)
    return _svg(fig)


def ladder_trend_plot(report: dict) -> str:
    """The best effect per rung (with its standard error) and the fit's prediction at the
    target: with the trend (95% prediction interval) and without it (the weighted mean)."""
    info = report["trend"].get("effect")
    if not info:
        return "<p>No trend fitted.</p>"
    rungs = {r["name"]: r for r in report["rungs"]}
    fig, ax = _figure(7.5, 3.5)
    xs = [rungs[p["rung"]]["params"] for p in info["per_rung"]]
    ax.errorbar(xs, [p["value"] for p in info["per_rung"]], yerr=[1.96 * p["se"] for p in info["per_rung"]],
                fmt="o", capsize=3, label="best per rung (±1.96 se)")
    t = report["target"]["params"]
    for key, color, shift in (("trend", "tab:red", 1.0), ("no_trend", "tab:gray", 1.15)):
        mean, lo, hi = info["at_target"][key]
        ax.errorbar([t * shift], [mean], yerr=[[mean - lo], [hi - mean]], fmt="D", color=color, capsize=3,
                    label=f"at {report['target']['name']}: {'trend' if key == 'trend' else 'no trend'}")
    ax.axhline(0, color="black", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("best effect vs uniform")
    ax.legend(fontsize=7)
    return _svg(fig)


def ladder_report(report: dict) -> str:
    """A ladder's report from its ladder.json (see `autotaper.ladder.run`)."""
    from autotaper.ladder.run import to_text

    fid = "".join(f"<li>{html.escape(f['text'])}</li>" for f in report["fidelity"]) or "<li>one rung only</li>"
    trend = "".join(f"<li>{html.escape(i['text'])}</li>" for i in report["trend"].values())
    rec = report["recommendation"]
    parts = [
        ("recommendation", f"At {report['target']['name']}",
         f"<p><b>{html.escape(rec['taper'])}</b>: {html.escape(rec['call'])}</p>"),
        ("effects", "Probe set against scale (confirmed on fresh seeds)", ladder_effects_plot(report)),
        ("fidelity", "Rank agreement between adjacent rungs", f"<ul>{fid}</ul>"),
        ("trend", "Trend across rungs and the prediction at the target", ladder_trend_plot(report)
         + f"<ul>{trend}</ul><p>held-out check: {html.escape(report['held_out']['text'])}</p>"),
        ("text", "The whole report as text", f"<pre>{html.escape(to_text(report))}</pre>"),
    ]
    params = sorted({r.get("parametrization", "sp") for r in report["rungs"]})
    return _page(f"autotaper ladder report: {report['ladder']}", f"space {report['space']}, corpus "
                 f"{report['corpus']}, parametrization {', '.join(params)}", parts)


def _page(title: str, subtitle: str, parts: list[tuple[str, str, str]]) -> str:
    body = "\n".join(f'<section id="{sid}"><h2>{html.escape(head)}</h2>\n{content}\n</section>'
                     for sid, head, content in parts)
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{html.escape(subtitle)}</p>\n{body}\n</body></html>\n")


def write_ladder_report(report: dict, out: str | Path) -> Path:
    from autotaper._io import atomic_write_text

    path = Path(out)
    atomic_write_text(path, ladder_report(report))
    return path


def write_report(storage: str | None, study_name: str, out: str | Path | None = None, *,
                 probe: dict | None = None) -> Path:
    """Write the report (default: beside the study, runs/search/STUDY/report.html)."""
    from autotaper._io import atomic_write_text
    from autotaper.search.storage import check_study_name

    path = Path(out) if out else Path("runs") / "search" / check_study_name(study_name) / "report.html"
    atomic_write_text(path, build_report(storage, study_name, probe=probe))  # the umask's mode, like any page
    return path
