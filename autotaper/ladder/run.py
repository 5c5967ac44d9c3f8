"""`autotaper ladder`: one space searched at several scales, compared on a shared probe set,
and its trend handed to the target.

Stages, each printed as it runs:
1. **Rungs**: the space's proxy at every rung's shape, sized by the ladder's rules
   (`autotaper.ladder.rungs`).
2. **Search per rung**: `run_search` on the rung's own study (`{prefix}-{rung}` in
   `--storage`, or runs/search/{prefix}-{rung}/): calibration, plan, raced trials; an
   existing study resumes and its stored runs are reused.
3. **Probe set at every rung**: uniform, the paper's cosine 1.5 -> 0.5, its reverse and each
   rung's top k, retrained on fresh paired seeds at every rung with Holm's correction
   (`confirm_study`, stored in the rung's study: the per-rung verdicts are confirmed ones).
4. **Fidelity** between adjacent rungs, in the order listed (smallest first, the rung
   nearest the target last) (`autotaper.ladder.fidelity`).
5. **Trend** of the best taper's knobs and effect across rungs and its prediction at the
   target (`autotaper.ladder.trend`); with three rungs or more, the last is held out and
   predicted from the others, as a check of the extrapolation.
6. **Hand-off**: the predicted taper solved to the target's exact budget, written as a spec
   file with the commands that train it and its uniform control.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotaper._io import atomic_write_text
from autotaper.errors import InputError
from autotaper.ladder.fidelity import UNIFORM, fidelity
from autotaper.ladder.rungs import LadderConfig, Rung, check_scales, parse_ladder, resolve
from autotaper.ladder.trend import best_per_rung, features, fit_trend, held_out
from autotaper.log import sayer
from autotaper.parametrization import describe as describe_param
from autotaper.search.records import TrialRecord
from autotaper.search.space import PAPER_DEFAULT, YamlSpace, parse_space, read_space_file
from autotaper.search.storage import mask_url

REVERSE_DEFAULT = "ffn:cosine:0.5:1.5"  # the paper's taper growing with depth instead
HEADS_GROWING = "heads:linear:0.5:1.5"  # attention heads growing with depth (arXiv 2606.27449)


def rival_shapes(dims: list[str]) -> list[str]:
    """The probe set's fixed members beside uniform: the paper's cosine and its reverse, a valley
    in the space's first tapered dimension (wide first and last layers, narrow middle) and heads
    growing with depth, so a ladder says how the paper's shape fares against its rivals."""
    dim = dims[0] if dims and dims[0] != "lr" else "ffn"
    return [PAPER_DEFAULT, REVERSE_DEFAULT, f"{dim}:valley:1.5:0.5", HEADS_GROWING]


TARGET_BATCH_TOKENS = 2 ** 19  # the paper's 0.5M-token batches, for the printed training command


def load_ladder(path: str | Path, *, scales: list[str] | None = None,
                overrides: dict[str, Any] | None = None) -> tuple[YamlSpace, LadderConfig]:
    """A space YAML and its ladder: the `ladder:` section, or `scales` (presets) with the
    section's rules (or the defaults); `overrides` replace proxy keys (--param)."""
    path = Path(path)
    data = read_space_file(path)
    space = parse_space(data, name=path.stem, overrides=overrides)
    raw = data.get("ladder")
    if scales:
        return space, parse_ladder({**(raw or {}), "rungs": check_scales(scales)})
    if raw is None:
        raise InputError(f"space {path.name}: no ladder section; pass --scales PRESET,PRESET,... "
                         f"or add ladder: {{rungs: [...]}}")
    return space, parse_ladder(raw)


def load_target(text: str):
    """A preset name or a spec file (from `autotaper plan --out`), uniform: the baseline."""
    from autotaper.spec import PRESETS, ModelSpec

    if text in PRESETS:
        return ModelSpec.from_name(text).uniform(), text
    if Path(text).suffix == ".json" or Path(text).exists():
        return ModelSpec.load(text).uniform(), Path(text).stem
    raise InputError(f"--target: {text!r} is neither a preset ({', '.join(PRESETS)}) nor a spec file")


def _rung_space(space: YamlSpace, rung: Rung) -> YamlSpace:
    out = copy.copy(space)
    out.proxy = rung.proxy
    return out


def _knob_values(label: str, dim: str) -> dict[str, float | None]:
    from autotaper.taper import Taper

    if label == UNIFORM:
        return {"strength": 0.0, "asymmetry": 0.0, "curve": "uniform"}
    d = Taper.parse(label).get(dim)
    if d.curve == "list":
        return {"strength": None, "asymmetry": None, "curve": "list"}
    return {"strength": (d.start - d.end) / 2, "asymmetry": (d.start + d.end) / 2 - 1, "curve": d.curve}


def run_ladder(space: YamlSpace, config: LadderConfig, *, target: str, storage: str | None = None,
               prefix: str | None = None, out_dir: str | None = None, quiet: bool = False) -> "LadderResult":
    """Run (or resume) the ladder; returns its result (also written to out_dir/ladder.json;
    `autotaper.report.write_ladder_report` makes its HTML page)."""
    from autotaper.cost import count
    from autotaper.search.backends.optuna import run_search
    from autotaper.search.confirm import confirm_study, pick
    from autotaper.search.objective import metric_key
    from autotaper.search.study import open_study

    say = sayer(quiet)
    started = time.time()
    p = space.proxy
    data = p.load_data()
    target_spec, target_name = load_target(target)
    target_cost = count(target_spec)
    from autotaper.search.storage import check_study_name

    prefix = check_study_name(prefix, "--prefix") if prefix is not None else check_study_name(space.name, "name")
    out_dir = Path(out_dir or f"runs/ladder/{prefix}")
    rungs = resolve(config, p, target_spec, vocab_size=data.vocab_size)  # in the order listed: smallest first
    from autotaper.search.preflight import preflight

    for r in rungs:  # every rung checked (name, storage, memory) before the first one stores anything
        preflight(_rung_space(space, r), storage=storage, study_name=f"{prefix}-{r.name}")
    say(f"ladder {prefix}: {len(rungs)} rungs, target {target_name} ({target_cost.params:,} params, "
        f"{target_spec.n_layers} layers, {config.target_tokens_per_param:g} tokens/param)")
    for r in rungs:
        say(f"  {_rung_line(r)}")

    # 2. search per rung
    studies = {}
    for r in rungs:
        say(f"\n== rung {r.name}: search ==")
        summary = run_search(_rung_space(space, r), storage=storage, study_name=f"{prefix}-{r.name}",
                             n_trials=config.n_trials, budget_s=config.budget_s, confirm=False, quiet=quiet)
        study, url = open_study(_rung_space(space, r), storage=summary.storage, study_name=summary.study_name)
        studies[r.name] = (study, url)

    # 3. the shared probe set on fresh seeds at every rung
    probe_set = rival_shapes([d.dim for d in space.dims])
    for r in rungs:
        for t in pick(studies[r.name][0], config.top_k):
            taper = TrialRecord.from_trial(t).taper
            if taper not in probe_set and taper != UNIFORM:
                probe_set.append(taper)
    say(f"\n== probe set at every rung, {config.seeds} fresh seeds: uniform, {', '.join(probe_set)} ==")
    per_rung = []
    for r in rungs:
        study, url = studies[r.name]
        conf = confirm_study(study, _rung_space(space, r), data, top_k=0, seeds=config.seeds, quiet=quiet,
                             extra=probe_set, tokens_per_param=config.probe_tokens_per_param)
        say(f"{r.name}: {conf['text']}")
        per_rung.append(_rung_report(r, study, url, conf, probe_set))

    # 4. fidelity between adjacent rungs
    fid = [fidelity(a["name"], a["deltas"], b["name"], b["deltas"]) for a, b in zip(per_rung, per_rung[1:])]

    # 5. trend and target
    target_point = {"name": target_name, "params": target_cost.params, "n_layers": target_spec.n_layers,
                    "tokens_per_param": config.target_tokens_per_param}
    dims = [d.dim for d in space.dims] or ["ffn"]
    trend = _trend(per_rung, probe_set, dims, target_point)
    report = {"ladder": prefix, "space": space.name, "metric": metric_key(data), "corpus": data.name,
              "target": {**target_point, "spec": target_spec.to_dict()}, "probe_set": [UNIFORM] + probe_set,
              "rungs": per_rung, "fidelity": [f.to_dict() for f in fid], "trend": trend,
              "held_out": _held_out(per_rung, probe_set, dims[0])}
    report["recommendation"] = _hand_off(space, config, rungs, trend, target_spec, target_name, out_dir)
    report["elapsed_s"] = time.time() - started
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "ladder.json"
    atomic_write_text(path, json.dumps(report, indent=1) + "\n")
    return LadderResult(report, str(path))


@dataclass
class LadderResult:
    """What `run_ladder` returns: the ladder's report (ladder.json's content) and where it is."""

    report: dict[str, Any]
    path: str  # ladder.json
    html_path: str | None = None  # ladder.html, once written

    @property
    def recommendation(self) -> dict[str, Any]:
        """The hand-off: the taper for the target and the call that trains it."""
        return self.report["recommendation"]

    @property
    def rungs(self) -> list[dict[str, Any]]:
        return self.report["rungs"]

    @property
    def fidelity(self) -> list[dict[str, Any]]:
        return self.report["fidelity"]

    @property
    def trend(self) -> dict[str, Any]:
        return self.report["trend"]

    def to_dict(self) -> dict[str, Any]:
        return {**self.report, "report_path": self.path, "html_path": self.html_path}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LadderResult":
        report = {k: v for k, v in data.items() if k not in ("report_path", "html_path")}
        return cls(report, data["report_path"], data.get("html_path"))


def _rung_line(r: Rung) -> str:
    clamp = f", clamped at {r.clamped} (rule: {r.wanted_tokens_per_param:.3g})" if r.clamped else ""
    role = "  [the target's depth]" if r.depth_proxy else ""
    return (f"{r.name}: {r.n_layers} layers x {r.d_model}, {r.params:,} params; {r.proxy.steps} steps x "
            f"{r.proxy.batch_size} = {r.tokens:,} tokens ({r.tokens_per_param:.3g} tokens/param{clamp}); "
            f"lr {r.proxy.lr:g} ({r.lr_note}){role}")


def _rung_report(r: Rung, study, url: str, conf: dict, probe_set: list[str]) -> dict[str, Any]:
    by_name = {c["taper"]: c for c in conf["candidates"]}
    probe_out, deltas = {}, {}
    for label in probe_set:
        c = by_name.get(label)
        if label in conf.get("skipped", {}):  # no solution at this rung's budget: not measured here
            probe_out[label] = {"infeasible": conf["skipped"][label]}
            continue
        if c is None:  # solved to uniform's widths at this rung: it is uniform here
            deltas[label] = [0.0] * len(conf["seeds"])
            probe_out[label] = {"mean": 0.0, "ci95": [0.0, 0.0], "p_holm": None, "same_as_uniform": True}
            continue
        deltas[label] = c["deltas"]
        probe_out[label] = {k: c[k] for k in ("mean", "ci95", "sd", "p", "p_holm", "beats_uniform",
                                              "worse_than_uniform", "deltas", "proxy_delta")}
    return {**r.to_dict(), "study": study.study_name, "storage": mask_url(url), "seeds": conf["seeds"],
            "probe_steps": conf.get("steps"),
            "mde": conf["mde"], "pooled_sd": conf["pooled_sd"], "verdict": conf["text"], "winner": conf["winner"],
            "probe": probe_out, "deltas": deltas}


def _point(rung: dict) -> dict:
    return {k: rung[k] for k in ("name", "params", "n_layers", "tokens_per_param")} | {"deltas": rung["deltas"]}


def _trend(per_rung: list[dict], probe_set: list[str], dims: list[str], target: dict) -> dict[str, Any]:
    points = [_point(r) for r in per_rung]
    tfeat = features(target)
    out: dict[str, Any] = {}
    quantities = []
    for dim in dims:
        values = {label: _knob_values(label, dim) for label in [UNIFORM] + probe_set}
        for knob in ("strength", "asymmetry"):
            quantities.append((f"{dim}.{knob}", {k: v[knob] for k, v in values.items()}, "knob", "knob_se"))
    first_knob = quantities[0][1]
    quantities.append(("effect", first_knob, "effect", "effect_se"))
    for name, knob, key, se_key in quantities:
        bests = [best_per_rung(p["deltas"], knob) for p in points]
        fit = fit_trend(points, [b[key] for b in bests], [b[se_key] for b in bests], quantity=name)
        mean, lo, hi = fit.predict(tfeat)
        cm, clo, chi = fit.predict_constant()
        out[name] = {"per_rung": [{"rung": p["name"], "best": b["best"], "value": b[key], "se": b[se_key]}
                                  for p, b in zip(points, bests)],
                     "fit": fit.to_dict(), "at_target": {"trend": [mean, lo, hi], "no_trend": [cm, clo, chi]},
                     "detectable": fit.detectable, "text": _trend_text(name, fit, (mean, lo, hi), (cm, clo, chi))}
    for dim in dims:  # the curve is categorical: the best curve at the rung nearest the target
        curves = [_knob_values(b["best"], dim)["curve"] for b in out[f"{dim}.strength"]["per_rung"]]
        shaped = [c for c in curves if c not in ("uniform", "list")]
        out[f"{dim}.curve"] = {"per_rung": curves, "pick": shaped[-1] if shaped else "cosine",
                               "text": f"{dim} curve of the best taper per rung: {', '.join(curves)}"}
    return out


def _trend_text(name: str, fit, trend: tuple, const: tuple) -> str:
    g = lambda v: f"{0.0 if abs(v) < 1e-12 else v:+.3g}"  # noqa: E731  (no float dust: +3e-30 is 0)
    slopes = "; ".join(f"slope on {a} {g(v)} [{g(lo)}, {g(hi)}]" for a, (v, lo, hi) in fit.slopes().items())
    dof = (f"{fit.dof} residual dof" + (f", reduced chi2 {fit.chi2_ratio:.2f}" if fit.chi2_ratio is not None else "")
           if fit.dof else "no residual dof: intervals carry measurement error only")
    dropped = f"; {', '.join(fit.dropped)} varies but too few rungs to fit it" if fit.dropped else ""
    if fit.detectable:
        return (f"{name}: trend detected ({slopes}; {dof}{dropped}); at the target {trend[0]:+.3f} "
                f"[{trend[1]:+.3f}, {trend[2]:+.3f}]")
    return (f"{name}: no trend detectable ({slopes or 'no axis varies'}; {dof}{dropped}); assuming none, at the "
            f"target {const[0]:+.3f} [{const[1]:+.3f}, {const[2]:+.3f}]; extrapolating the fitted line instead: "
            f"{trend[0]:+.3f} [{trend[1]:+.3f}, {trend[2]:+.3f}]")


def _held_out(per_rung: list[dict], probe_set: list[str], dim: str) -> dict[str, Any]:
    knob = {label: _knob_values(label, dim)["strength"] for label in [UNIFORM] + probe_set}
    return held_out([_point(r) for r in per_rung], knob)


def _hand_off(space: YamlSpace, config: LadderConfig, rungs: list[Rung], trend: dict, target, target_name: str,
              out_dir: Path) -> dict[str, Any]:
    """The taper the trend predicts at the target, solved to its exact budget, as a spec file."""
    from autotaper.budget import solve_report
    from autotaper.cost import count
    from autotaper.taper import format_number

    notes, segments = [], []
    for d in space.dims or []:
        s_info, a_info = trend[f"{d.dim}.strength"], trend[f"{d.dim}.asymmetry"]
        pick = lambda info: info["at_target"]["trend" if info["detectable"] else "no_trend"][0]  # noqa: E731
        s, a = pick(s_info), pick(a_info)
        lo, hi = _knob_range(d, "strength")
        if not lo <= s <= hi:
            notes.append(f"{d.dim} strength {s:+.3f} clipped to the space's range [{lo:g}, {hi:g}]")
            s = min(max(s, lo), hi)
        elif min(s - lo, hi - s) < 0.05 * (hi - lo):
            notes.append(f"{d.dim} strength {s:+.3f} is at the edge of the space's range [{lo:g}, {hi:g}]: "
                         f"the optimum may lie beyond it; widen taper.{d.dim}.strength to see")
        if abs(s) < 5e-3 and abs(a) < 5e-3:
            continue
        start, end = round(1 + s + a, 3), round(1 - s + a, 3)
        if start <= 0 or end <= 0:
            notes.append(f"{d.dim}: predicted ratios {start:g} -> {end:g} are not > 0; left uniform")
            continue
        curve = trend[f"{d.dim}.curve"]["pick"]
        segments.append(f"{d.dim}:{curve}:{format_number(start)}:{format_number(end)}")
    taper = "+".join(segments) or "uniform"
    constraint = space.proxy.constraint
    # the target trains under the ladder's parametrization, against the same base shape as its rungs
    p0 = rungs[0].proxy
    target = dataclasses.replace(target, **p0.spec_fields())
    try:
        sol = solve_report(target, taper, constraint=constraint, tolerance=0.0)
    except ValueError:
        sol = solve_report(target, taper, constraint=constraint, tolerance=space.proxy.tolerance)
        notes.append(f"no exact solution: within tolerance {space.proxy.tolerance:g}")
    path = out_dir / f"{target_name}-spec.json"
    sol.spec.save(path)
    effect = trend["effect"]
    if effect["detectable"]:
        e_mean, e_lo, e_hi = effect["at_target"]["trend"]
    else:  # no trend seen: the effect may stay put or follow the fitted line; claim only what both allow
        (e_mean, lo1, hi1), (_, lo2, hi2) = effect["at_target"]["no_trend"], effect["at_target"]["trend"]
        e_lo, e_hi = min(lo1, lo2), max(hi1, hi2)
    if e_hi < 0:
        call = "the ladder predicts it beats uniform at the target"
    elif e_lo > 0:
        call = "the ladder predicts uniform is better at the target: train the uniform control first"
    else:
        call = "the ladder cannot say whether it beats uniform at the target: train both"
    tokens = config.target_tokens_per_param * count(target).params
    batch = max(1, TARGET_BATCH_TOKENS // target.context_length)
    steps = max(1, math.ceil(tokens / (batch * target.context_length)))
    widest = max(r.d_model for r in rungs)
    base_lr = next(r.proxy.lr for r in rungs if r.d_model == widest)
    transfer = p0.base_d_model is not None and p0.parametrization != "sp" and config.rules.lr_rule == "parametrization"
    width_rule = config.rules.lr_rule == "width" or (config.rules.lr_rule == "parametrization" and not transfer)
    lr = base_lr * (widest / target.d_model) if width_rule else space.proxy.lr
    args = f"--data TOKENS --steps {steps} --batch-size {batch} --lr {lr:.3g}"
    param_args = _param_args(target)
    lr_rule = (f"{describe_param(target)}: the anchor's LR transfers" if transfer
               else f"the ladder's width rule from rung width {widest}" if width_rule else "the space's LR")
    return {"taper": sol.spec.taper, "spec_path": str(path), "params": sol.cost.params,
            "baseline_params": sol.baseline_cost.params, "params_delta": sol.params_delta,
            "flops_delta": sol.flops_delta, "constraint": constraint, "predicted_effect": [e_mean, e_lo, e_hi],
            "call": call, "notes": notes,
            "command": f"autotaper train --spec {path} {args}",
            "parametrization": target.parametrization,
            "uniform_command": f"autotaper train --preset {target_name} {args}{param_args}"
            if target_name in _presets() else f"autotaper train --spec UNIFORM_SPEC {args}",
            "training": {"tokens": int(tokens), "tokens_per_param": config.target_tokens_per_param, "steps": steps,
                         "batch_size": batch, "lr": lr, "lr_rule": lr_rule}}


def _param_args(spec) -> str:
    """The `autotaper train` flags that give a preset `spec`'s parametrization (empty for sp)."""
    if spec.parametrization == "sp":
        return ""
    out = f" --param {spec.parametrization}"
    if spec.parametrization == "completep":
        out += f" --depth-alpha {spec.depth_alpha:g}"
    if spec.base_d_model is not None:
        out += f" --base-d-model {spec.base_d_model}"
    if spec.base_n_layers is not None:
        out += f" --base-n-layers {spec.base_n_layers}"
    return out


def _presets():
    from autotaper.spec import PRESETS

    return PRESETS


def _knob_range(d, knob: str) -> tuple[float, float]:
    k = d.knobs.get(knob)
    if k is None:
        return (-0.9, 0.9)
    vals = [v for v in k.values() if isinstance(v, (int, float))]
    return (min(vals), max(vals)) if vals else (-0.9, 0.9)


# -- text ------------------------------------------------------------------------------
def to_text(report: dict) -> str:
    unit = "bpb" if report["metric"] == "val_bpb" else "loss"
    t = report["target"]
    lines = [f"ladder {report['ladder']} (space {report['space']}, corpus {report['corpus']}): "
             f"{len(report['rungs'])} rungs, target {t['name']} ({t['params']:,} params, {t['n_layers']} layers)", ""]
    lines.append(f"{'rung':<12}{'params':>12}{'layers':>7}{'width':>6}{'tok/param':>10}{'steps':>6}{'lr':>9}"
                 f"{'seeds':>6}{'MDE':>8}  best confirmed")
    for r in report["rungs"]:
        mde = "n/a" if r["mde"] is None else f"{r['mde']:.4f}"
        lines.append(f"{r['name']:<12}{r['params']:>12,}{r['n_layers']:>7}{r['d_model']:>6}"
                     f"{r['tokens_per_param']:>10.3g}{r['steps']:>6}{r['lr']:>9.3g}{len(r['seeds']):>6}{mde:>8}  "
                     f"{r['winner'] or 'none beats uniform'}")
    lines += ["", "confirmed verdicts (probe set on fresh seeds, Holm-corrected), each under its rung's parametrization:"]
    lines += [f"  {r['name']} [{r.get('parametrization', 'sp')}]: {r['verdict']}" for r in report["rungs"]]
    lines += ["", f"probe set on fresh paired seeds: delta {unit} vs uniform, 95% CI"]
    width = max(len(p) for p in report["probe_set"]) + 2
    lines.append(f"{'taper':<{width}}" + "".join(f"{r['name']:>26}" for r in report["rungs"]))
    for label in report["probe_set"][1:]:
        cells = []
        for r in report["rungs"]:
            p = r["probe"][label]
            if "infeasible" in p:
                cells.append("infeasible")
                continue
            ci = p.get("ci95")
            mark = "*" if p.get("beats_uniform") or p.get("worse_than_uniform") else " "
            cells.append(f"{p['mean']:+.4f}{mark}" + (f"[{ci[0]:+.3f},{ci[1]:+.3f}]" if ci else ""))
        lines.append(f"{label:<{width}}" + "".join(f"{c:>26}" for c in cells))
    lines.append("(* beyond noise after Holm's correction)")
    lines += ["", "fidelity between adjacent rungs:"] + [f"  {f['text']}" for f in report["fidelity"]]
    lines += ["", "trend across rungs (weighted least squares; 95% prediction intervals):"]
    for name, info in report["trend"].items():
        lines.append(f"  {info['text']}")
    ho = report["held_out"]
    lines += ["", f"held-out check: {ho['text']}"]
    rec = report["recommendation"]
    e = rec["predicted_effect"]
    lines += ["", f"at {t['name']}: {rec['taper']}, predicted effect {e[0]:+.4f} {unit} [{e[1]:+.4f}, {e[2]:+.4f}]: "
              f"{rec['call']}"]
    lines += [f"  note: {n}" for n in rec["notes"]]
    lines += [f"  spec: {rec['spec_path']} ({rec['params']:,} params, {rec['params_delta']:+,} vs uniform's "
              f"{rec['baseline_params']:,})",
              f"  train it:        {rec['command']}",
              f"  uniform control: {rec['uniform_command']}",
              f"  ({rec['training']['tokens']:,} tokens = {rec['training']['tokens_per_param']:g} per param; lr from "
              f"{rec['training']['lr_rule']}, an approximation to tune on your data (the paper trained 440M-1.3B "
              f"at 4e-4); TOKENS is your tokenised corpus; torchrun --nproc-per-node N -m autotaper train ... "
              f"for several GPUs)"]
    lines += ["", f"report: {report.get('report_path', '')}  ({report['elapsed_s'] / 60:.1f} min)"]
    return "\n".join(lines)


def with_rules(config: LadderConfig, **changes) -> LadderConfig:
    return dataclasses.replace(config, **{k: v for k, v in changes.items() if v is not None})
