"""The leaderboard: one row per trial, read from any study storage, and a verdict.

Rows carry the taper text, first-to-last widths of each tapered dimension, the budget
deltas, the mean paired difference in validation bits per byte against uniform with its
95% interval and the number of seeds, and the status (reference, complete, pruned, failed,
infeasible, running) and racing's decision. The board also carries the study's noise floor
(`calibrate.py`) and, once run, the confirmation on fresh seeds (`confirm.py`): the verdict
is the confirmed one when a confirmation exists. Without one, the search-stage verdict asks
whether the best complete taper's whole 95% interval lies below zero, and says that it is
unconfirmed: the best of many noisy trials is biased low (winner's curse).
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from autotaper.search import records
from autotaper.search.calibrate import Calibration
from autotaper.search.confirm import complete_trials
from autotaper.search.records import CALIBRATION_ATTR, CONFIRMATION_ATTR, SPACE_ATTR, TrialRecord
from autotaper.search.storage import mask_url
from autotaper.search.study import load_study

RACE_MARK = {"worse": ">", "better": "<", "max_seeds": "="}
ORDER = {"reference": 0, "complete": 1, "pruned": 2, "infeasible": 3, "failed": 4, "running": 5, "waiting": 6}


def _status(t) -> str:
    from optuna.trial import TrialState

    attr = records.status_of(t)
    if attr in (records.REFERENCE, records.DUPLICATE):
        return attr
    if t.state == TrialState.COMPLETE:
        return records.INFEASIBLE if attr == records.INFEASIBLE else records.COMPLETE
    return {TrialState.PRUNED: "pruned", TrialState.FAIL: "failed", TrialState.RUNNING: "running",
            TrialState.WAITING: "waiting"}.get(t.state, t.state.name.lower())


def _widths(layers: dict | None) -> str:
    if not layers:
        return ""
    parts = []
    for dim, values in layers.items():
        if values and len(set(values)) > 1:
            parts.append(f"{dim} {values[0]}..{values[-1]}")
    return ", ".join(parts) or "uniform"


def rows_of(study) -> list[dict[str, Any]]:
    """One row per candidate: a spec evaluated by several trials (knob settings that round to
    the same widths, or workers that proposed it at once) is shown once, as the trial with the
    most seeds, with the others under `same_as`; proposals that yielded to a running trial of
    the same spec (status duplicate) are not rows."""
    rows = []
    reference_seen = False
    for t in study.get_trials(deepcopy=False):
        a = TrialRecord.from_trial(t)
        status = _status(t)
        if status == "duplicate":
            continue
        if status == "reference":
            # workers that start together may each record the reference: show it once
            if reference_seen:
                continue
            reference_seen = True
        rows.append({
            "trial": t.number, "taper": a.taper if a.taper is not None else "", "widths": _widths(a.layers),
            "params_delta": a.params_delta, "flops_delta": a.flops_delta,
            "delta_bpb": a.delta, "se": a.se, "ci95": a.ci95,
            "seeds": len(a.seed_deltas or []), "status": status,
            "early_stopped": bool(a.early_stopped or False),
            "tokens_per_s": a.tokens_per_s, "reason": a.reason or t.system_attrs.get("fail_reason"),
            "backend": a.backend if a.backend is not None else "optuna", "race": a.race, "spec_key": a.spec_key,
            "same_as": [],
        })
    rows = _once_per_spec(rows)

    def key(r):
        d = r["delta_bpb"]
        return (ORDER.get(r["status"], 9), d if isinstance(d, (int, float)) else math.inf, r["trial"])

    return sorted(rows, key=key)


def _once_per_spec(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r["spec_key"] and r["status"] in ("complete", "pruned"):
            groups.setdefault(r["spec_key"], []).append(r)
    drop = set()
    for members in groups.values():
        keep = max(members, key=lambda r: (r["status"] == "complete", r["seeds"], -r["trial"]))
        keep["same_as"] = sorted(r["trial"] for r in members if r is not keep)
        drop.update(id(r) for r in members if r is not keep)
    return [r for r in rows if id(r) not in drop]


def search_verdict(rows: list[dict[str, Any]], *, mde: float | None = None, unit: str = "bpb") -> dict[str, Any]:
    """The search-stage verdict (unconfirmed); `mde` is the noise floor's at the search's seeds;
    `unit` the metric's (bpb, or loss on pre-tokenised data)."""
    done = [r for r in rows if r["status"] == "complete" and r["delta_bpb"] is not None and not r["early_stopped"]]
    if not done:
        return {"best": None, "beats_uniform": False, "text": "no complete trial yet"}
    # A taper beats uniform when its whole 95% interval lies below zero; among those the
    # lowest mean is the answer. Otherwise report the lowest mean and its interval.
    beating = [r for r in done if r["ci95"] is not None and r["ci95"][1] < 0]
    best = min(beating or done, key=lambda r: r["delta_bpb"])
    ci = best["ci95"]
    if ci is None:
        text = (f"best {best['taper']} at {best['delta_bpb']:+.4f} {unit} from one seed: no interval, "
                f"no verdict (use 2 or more seeds)")
        beats = False
    elif ci[1] < 0:
        text = (f"{best['taper']} beats uniform beyond seed noise: {best['delta_bpb']:+.4f} {unit}, 95% CI "
                f"[{ci[0]:+.4f}, {ci[1]:+.4f}] over {best['seeds']} paired seeds")
        beats = True
    else:
        text = (f"no taper beats uniform beyond seed noise: the best, {best['taper']}, is {best['delta_bpb']:+.4f} "
                f"{unit} with 95% CI [{ci[0]:+.4f}, {ci[1]:+.4f}] over {best['seeds']} paired seeds")
        beats = False
    if mde is not None and abs(best["delta_bpb"]) < mde:
        text += f"; its effect is below the minimum detectable effect ({mde:.4f})"
    if len(done) > 1:
        text += f" (unconfirmed, best of {len(done)}: confirm on fresh seeds with `autotaper confirm`)"
    lowest = min(done, key=lambda r: r["delta_bpb"])
    if beating and lowest is not best:
        text += f"; the lowest mean, {lowest['taper']} at {lowest['delta_bpb']:+.4f}, has an interval reaching 0"
    return {"best": best["trial"], "taper": best["taper"], "beats_uniform": beats, "text": text, "confirmed": False}


def _unit(study) -> str:
    """The unit of a study's deltas: bpb, or loss on pre-tokenised data (the reference's metric)."""
    metric = next((r.metric for t in study.get_trials(deepcopy=False)
                   if (r := TrialRecord.from_trial(t)).status == records.REFERENCE and r.metric), "val_bpb")
    return "bpb" if metric == "val_bpb" else "loss"


def leaderboard(storage: str | None, study_name: str) -> dict[str, Any]:
    study, url = load_study(storage, study_name)
    rows = rows_of(study)
    attrs = study.user_attrs
    cal = Calibration.from_dict(attrs[CALIBRATION_ATTR]) if attrs.get(CALIBRATION_ATTR) else None
    proxy = (attrs.get(SPACE_ATTR) or {}).get("proxy") or {}
    seeds = proxy.get("seeds") or 2
    noise = None
    if cal is not None:
        noise = {**cal.to_dict(), "search_seeds": seeds, "mde_search": cal.mde(seeds),
                 "lines": cal.lines({"search": seeds} | ({"racing up to": proxy["seeds_max"]}
                                                         if (proxy.get("seeds_max") or 0) > seeds else {}))}
    conf = attrs.get(CONFIRMATION_ATTR)
    if conf:
        text = conf["text"]
        grown = len(complete_trials(study)) - conf["complete_trials"]
        if grown > 0:
            text += (f" [confirmed before {grown} more trial(s) completed: run `autotaper confirm --study "
                     f"{study_name}` to confirm the current best]")
        final = {"best": None, "taper": conf["winner"], "beats_uniform": conf["beats_uniform"], "text": text,
                 "confirmed": True, "stale": grown > 0}
    else:
        final = search_verdict(rows, mde=noise["mde_search"] if noise else None, unit=_unit(study))
    duplicates = sum(1 for t in study.get_trials(deepcopy=False) if records.status_of(t) == records.DUPLICATE)
    recipe = {k: proxy.get(k) for k in ("preset", "steps", "batch_size", "lr", "parametrization", "depth_alpha")}
    return {"study": study_name, "storage": mask_url(url), "trials": rows, "noise": noise, "confirmation": conf,
            "verdict": final, "duplicates": duplicates, "recipe": recipe}


def confirmation_lines(conf: dict) -> list[str]:
    n = len(conf["seeds"])
    lines = [f"confirmation on {n} fresh seeds ({conf['seeds'][0]}..{conf['seeds'][-1]}), Holm over {conf['m']}:",
             f"{'trial':>5} {'search':>9} {'seeds':>5} {'confirmed':>10} {'95% CI':>21} {'p_holm':>7}  taper"]
    for c in sorted(conf["candidates"], key=lambda c: c["mean"]):
        search = f"{c['proxy_delta']:+.4f}" if c["proxy_delta"] is not None else "-"
        ci = f"[{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]" if c["ci95"] else "-"
        mark = "  beats uniform" if c["beats_uniform"] else "  worse than uniform" if c["worse_than_uniform"] else ""
        trial = c["trial"] if c["trial"] is not None else "-"
        lines.append(f"{trial:>5} {search:>9} {c['proxy_seeds']:>5} {c['mean']:>+10.4f} {ci:>21} {c['p_holm']:>7.3f}  "
                     f"{c['taper']}{mark}")
    return lines


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    fields = [k for k in rows[0] if k != "ci95"] + ["ci95_low", "ci95_high"] if rows else []
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    for r in rows:
        ci = r["ci95"] or [None, None]
        writer.writerow({**{k: v for k, v in r.items() if k != "ci95"}, "ci95_low": ci[0], "ci95_high": ci[1]})
    return out.getvalue()


def to_table(board: dict[str, Any]) -> str:
    lines = [f"study {board['study']} ({board['storage']})"]
    r = board.get("recipe") or {}
    if r.get("preset"):
        param = r["parametrization"] + (f" (alpha {r['depth_alpha']:g})" if r["parametrization"] == "completep" else "")
        lines.append(f"proxy {r['preset']}, {r['steps']} steps x {r['batch_size']}, lr {r['lr']:g}, "
                     f"parametrization {param}: every verdict below holds under it")
    lines.append("")
    if board.get("noise"):
        lines += board["noise"]["lines"] + [""]
    lines += [f"{'trial':>5} {'status':<10} {'delta_bpb':>10} {'95% CI':>21} {'seeds':>5} {'params':>8} "
             f"{'flops':>8}  taper  [widths]"]
    for r in board["trials"]:
        d = f"{r['delta_bpb']:+.4f}" if isinstance(r["delta_bpb"], (int, float)) else "-"
        ci = f"[{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}]" if r["ci95"] else "-"
        pd = f"{r['params_delta']:+d}" if isinstance(r["params_delta"], int) else "-"
        fd = f"{r['flops_delta']:+.0f}" if isinstance(r["flops_delta"], (int, float)) else "-"
        status = r["status"] + ("*" if r["early_stopped"] else "") + (RACE_MARK.get(r.get("race")) or "")
        extra = f"  [{r['widths']}]" if r["widths"] and r["widths"] != "uniform" else ""
        reason = f"  ({r['reason']})" if r["reason"] and r["status"] in ("failed", "infeasible") else ""
        same = f"  (same spec as trial {', '.join(map(str, r['same_as']))})" if r.get("same_as") else ""
        lines.append(f"{r['trial']:>5} {status:<10} {d:>10} {ci:>21} {r['seeds']:>5} {pd:>8} {fd:>8}  "
                     f"{r['taper']}{extra}{same}{reason}")
    if board.get("duplicates"):
        lines.append(f"{board['duplicates']} proposal(s) of a spec another worker was training were not trained "
                     f"(status duplicate; not shown)")
    if any(r["early_stopped"] for r in board["trials"]):
        lines.append("* stopped early by the scheduler: its value is not final")
    if any(r.get("race") in RACE_MARK for r in board["trials"]):
        lines.append("racing: > raced out (not better than the incumbent), < better than the incumbent beyond noise, "
                     "= still within noise at seeds.max")
    if board.get("confirmation"):
        lines += [""] + confirmation_lines(board["confirmation"])
    label = "confirmed verdict" if board["verdict"].get("confirmed") else "verdict"
    lines += ["", f"{label}: " + board["verdict"]["text"]]
    return "\n".join(lines)
