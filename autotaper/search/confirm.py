"""Confirmation: the search's best tapers retrained on seeds the search never saw.

The best of many noisy candidates is biased low (winner's curse): its proxy-stage effect is
partly the luck that made it the best. Confirmation retrains the top k complete tapers and
the paper's default (cosine 1.5 -> 0.5 on ffn; the top k are chosen among the others) with
uniform on `seeds` fresh seeds
(`CONFIRM_SEED_BASE` + i: disjoint from every search seed), and the final verdict comes from
those runs alone: a two-sided paired t-test per candidate, Holm's correction over the m
candidates (family-wise error <= 5%). A taper "beats uniform" only when its corrected test
rejects with a negative mean. The minimum detectable effect printed with it is at level
5% / m (Holm's first step) and power 80%, from the pooled SD of the fresh paired deltas.
Runs land in the study like every other run, so confirming again costs nothing.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from autotaper import stats
from autotaper.errors import InputError
from autotaper.log import sayer
from autotaper.search import records
from autotaper.search.records import CONFIRMATION_ATTR, SPACE_ATTR, Confirmation, TrialRecord
from autotaper.search.space import CONFIRM_SEED_BASE, PAPER_DEFAULT, BaseSpace, Confirm, Proxy


class StoredSpace(BaseSpace):
    """The proxy of an existing study, rebuilt from the space it recorded."""

    def __init__(self, identity: dict[str, Any]):
        self.name = identity.get("name", "stored")
        self.proxy = Proxy(**identity["proxy"])

    def suggest(self, trial):  # pragma: no cover - confirmation never samples
        raise NotImplementedError


def complete_trials(study) -> list:
    out = []
    for t in study.get_trials(deepcopy=False):
        r = TrialRecord.from_trial(t)
        if r.status == records.COMPLETE and r.delta is not None and not r.early_stopped:
            out.append(t)
    return out


def pick(study, top_k: int, *, exclude: set[str] = frozenset()) -> list:
    """The top_k complete trials, one per distinct spec, none of whose
    spec_key is in `exclude` (the paper default, confirmed anyway: so m = top_k + 1 always,
    and Holm's correction does not depend on where the paper default ranked)."""
    rows, seen = [], set(exclude)
    if top_k <= 0:
        return rows
    done = complete_trials(study)
    # survivors of racing first (a raced-out trial was not better than the incumbent on its
    # seeds), each group by mean paired delta
    def order(t):
        r = TrialRecord.from_trial(t)
        return r.race == "worse", r.delta, t.number

    for t in sorted(done, key=order):
        key = TrialRecord.from_trial(t).spec_key
        if key in seen:
            continue
        seen.add(key)
        rows.append(t)
        if len(rows) == top_k:
            break
    return rows


def confirm_study(study, space: BaseSpace, data, *, top_k: int = Confirm.top_k, seeds: int = Confirm.seeds,
                  quiet: bool = True,
                  extra: Sequence[str] = (), decompose: bool = False, steps: int | None = None,
                  tokens_per_param: float | None = None, population: int | str | None = None) -> dict:
    """Confirm a study's best tapers on fresh seeds; the result is stored in the study.
    `extra`: more tapers (text) to confirm beside them, e.g. a ladder's shared probe set;
    each keeps its text as its name, and Holm's correction counts it. `decompose`: also train
    the verdict's taper under the other parametrization on the same seeds (`decomposition`).
    `steps` or `tokens_per_param`: every confirmation run (uniform's too) trains that long
    instead of the proxy's steps, so the verdict is measured nearer the target's regime.
    `population`: train up to that many runs at once (`autotaper.train.population`), or "auto"
    (`population.auto_size`); default the space's search.population."""
    from autotaper.budget import solve, solve_report
    from autotaper.cost import count
    from autotaper.paired import spec_key
    from autotaper.search.objective import StudyStore, make_evaluator
    from autotaper.spec import ModelSpec

    rule = Confirm(top_k=top_k, seeds=seeds, steps=steps, tokens_per_param=tokens_per_param)
    problems = rule.problems()
    if problems:
        raise InputError("; ".join(p.replace("search.confirm.", "confirm.") for p in problems))
    if population is not None and population != "auto" and (
            isinstance(population, bool) or not isinstance(population, int) or not 1 <= population <= 256):
        raise InputError(f"confirm: population must be an integer from 1 to 256 or auto, got {population!r}")
    ev = make_evaluator(space, data, StudyStore(study), population=population)
    run_steps = rule.run_steps(space.proxy, count(ev.base).params, ev.base.context_length)
    if run_steps != space.proxy.steps:  # its own uniform runs and keys: a longer run is another run
        ev = make_evaluator(space, data, StudyStore(study), train={"steps": run_steps}, population=population)
    try:
        paper = solve_report(ev.base, PAPER_DEFAULT, constraint=space.proxy.constraint,
                             tolerance=space.proxy.tolerance).spec
    except ValueError:
        paper = None
    cands: list[dict] = []
    for t in pick(study, top_k, exclude={spec_key(paper)} if paper is not None else set()):
        a = TrialRecord.from_trial(t)
        spec = ModelSpec.from_dict(a.spec) if a.spec else solve(
            ev.base, a.taper, constraint=space.proxy.constraint, tolerance=space.proxy.tolerance)
        cands.append({"trial": t.number, "taper": a.taper, "spec": spec, "proxy_delta": a.delta,
                      "proxy_ci95": a.ci95, "proxy_seeds": len(a.seed_deltas or [])})
    if paper is not None:
        cands.append(_candidate(study, paper))
    named, skipped = {c["taper"] for c in cands}, {}
    for text in extra:
        try:
            spec = solve(ev.base, text, constraint=space.proxy.constraint, tolerance=space.proxy.tolerance)
        except ValueError as e:  # e.g. another scale's best cannot meet this one's budget
            skipped[text] = str(e)
            continue
        if spec.taper in named or spec_key(spec) == spec_key(ev.base):
            continue
        named.add(spec.taper)
        cands.append(_candidate(study, spec))
    if not cands:
        raise InputError("confirm: the study has no complete taper to confirm")
    fresh = [CONFIRM_SEED_BASE + i for i in range(seeds)]
    say = sayer(quiet)
    longer = (f", {run_steps} steps a run ({run_steps / space.proxy.steps:.3g}x the search's)"
              if run_steps != space.proxy.steps else "")
    say(f"confirming {len(cands)} taper(s) against uniform on {seeds} fresh seeds ({fresh[0]}..{fresh[-1]}){longer}")

    def show(name, r):
        say(f"  seed {r.seed}: {name.rsplit('#', 1)[0]} {r.delta:+.4f}{' (stored)' if r.cached else ''}")

    results = ev.compare({c["taper"] + f"#{i}": c["spec"] for i, c in enumerate(cands)}, fresh, on_run=show)
    specs = {}
    for c, comp in zip(cands, results.values()):
        s = comp.stats
        c.update(deltas=comp.deltas, mean=s.mean, sd=s.sd, ci95=list(s.ci95) if s.ci95 else None, p=s.p)
        specs[c["taper"]] = c.pop("spec")
    adjusted, rejected = stats.holm([c["p"] for c in cands])
    for c, p_adj, rej in zip(cands, adjusted, rejected):
        c.update(p_holm=p_adj, beats_uniform=bool(rej and c["mean"] < 0), worse_than_uniform=bool(rej and c["mean"] > 0))
    sds = [c["sd"] for c in cands if c["sd"] is not None]
    pooled = math.sqrt(sum(x * x for x in sds) / len(sds)) if sds else None
    out = {"seeds": fresh, "metric": ev.key, "candidates": cands, "pooled_sd": pooled,
           "mde": stats.mde(pooled, seeds, alpha=stats.ALPHA / len(cands)), "m": len(cands),
           "complete_trials": len(complete_trials(study)),  # to tell a later reader the study grew since
           "skipped": skipped, "parametrization": ev.base.parametrization,
           "steps": run_steps, "search_steps": space.proxy.steps}
    if decompose:
        winners = [c for c in cands if c["beats_uniform"]]
        chosen = min(winners or cands, key=lambda c: c["mean"])
        out["decomposition"] = decompose_effect(ev, specs[chosen["taper"]], chosen, fresh, say)
    out.update(confirmed_verdict(out))
    study.set_user_attr(CONFIRMATION_ATTR, out)
    return out


def decompose_effect(ev, spec, cand: dict, seeds: list[int], say) -> dict:
    """`spec` (confirmed as `cand` on `seeds`) trained under the other parametrization (sp under
    a width-aware study, mup under sp) on the same seeds against the same uniform runs: its
    effect under mup is what its capacity does, sp - mup per seed what its per-layer learning
    rate and init do. Skipped (with the reason) when uniform itself trains differently under
    the two, i.e. the proxy is not its own base shape (a ladder's rungs)."""
    import copy
    import dataclasses

    from autotaper.paired import trains_as_sp

    mine = ev.base.parametrization
    other = "mup" if mine == "sp" else "sp"
    if not trains_as_sp(ev.base):
        return {"taper": cand["taper"], "skipped": f"uniform is not its own base shape under {mine}, so it "
                                                   f"trains differently under {other}: no shared baseline"}
    other_ev = copy.copy(ev)  # the same store, data, training config (and evaluator class)
    other_ev.base = dataclasses.replace(ev.base, parametrization=other, depth_alpha=1.0)
    other_spec = dataclasses.replace(spec, parametrization=other, depth_alpha=1.0)
    say(f"decomposing {cand['taper']}: the same widths under {other} on the same seeds")
    deltas = []
    for seed in seeds:
        r = other_ev.run(other_spec, seed)
        if r.status != "complete":
            return {"taper": cand["taper"], "skipped": f"under {other} on seed {seed}: {r.status} {r.reason or ''}"}
        say(f"  seed {seed}: {cand['taper']} under {other} {r.delta:+.4f}{' (stored)' if r.cached else ''}")
        deltas.append(r.delta)
    by = {mine: cand["deltas"], other: deltas}
    width_aware = by[other if mine == "sp" else mine]  # completep at its own depth is mup
    lr_part = [a - b for a, b in zip(by["sp"], width_aware)]
    cap, lr = stats.paired_stats(width_aware), stats.paired_stats(lr_part)
    return {"taper": cand["taper"], "other": other, "deltas": {k: list(v) for k, v in by.items()},
            "capacity": cap.to_dict(), "per_layer_lr": lr.to_dict()}


def decomposition_text(dec: dict, unit: str) -> str:
    if "skipped" in dec:
        return f"decomposition of {dec['taper']} skipped: {dec['skipped']}"

    def ci(st):
        return f"[{st['ci95'][0]:+.4f}, {st['ci95'][1]:+.4f}]" if st.get("ci95") else "[n/a]"

    cap, lr = dec["capacity"], dec["per_layer_lr"]
    return (f"of {dec['taper']}'s effect, its capacity (under mup) is {cap['mean']:+.4f} {unit}, 95% CI {ci(cap)}, "
            f"and its per-layer learning rate and init (sp - mup, same seeds) {lr['mean']:+.4f}, 95% CI {ci(lr)}")


def _candidate(study, spec) -> dict:
    """A taper confirmed by name (the paper default, a probe), with the search's estimate of
    it when a trial of the study measured the same spec."""
    from autotaper.paired import spec_key

    key = spec_key(spec)
    trial = next((t for t in study.get_trials(deepcopy=False)
                  if (r := TrialRecord.from_trial(t)).spec_key == key and r.delta is not None), None)
    a = TrialRecord.from_trial(trial) if trial else TrialRecord()
    return {"trial": trial.number if trial else None, "taper": spec.taper, "spec": spec,
            "proxy_delta": a.delta, "proxy_ci95": a.ci95, "proxy_seeds": len(a.seed_deltas or [])}


def confirmed_verdict(conf: dict) -> dict:
    """The confirmed verdict's text and winner from a confirmation (see the module doc)."""
    cands, n, m, mde = conf["candidates"], len(conf["seeds"]), conf["m"], conf["mde"]
    mde_text = "n/a" if mde is None else f"{mde:.4f}"
    winners = [c for c in cands if c["beats_uniform"]]
    losers = [c for c in cands if c["worse_than_uniform"]]

    def ci(c):
        return f"[{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]" if c["ci95"] else "[n/a]"

    if winners:
        best = min(winners, key=lambda c: c["mean"])
        text = (f"{best['taper']} beats uniform on {n} fresh seeds: {best['mean']:+.4f} bpb, 95% CI {ci(best)}, "
                f"Holm-adjusted p {best['p_holm']:.3g} over {m} candidate(s)")
        if best["proxy_delta"] is not None:
            text += (f"; the search estimated {best['proxy_delta']:+.4f} on {best['proxy_seeds']} seed(s), so "
                     f"confirmation moved it by {best['mean'] - best['proxy_delta']:+.4f} (selection bias removed)")
        others = [c for c in winners if c is not best]
        if others:  # which of them is best is not what the test says: name them all
            text += "; also beats uniform: " + ", ".join(f"{c['taper']} ({c['mean']:+.4f}, 95% CI {ci(c)})"
                                                          for c in others)
    else:
        best = min(cands, key=lambda c: c["mean"])
        text = (f"no taper beats uniform on {n} fresh seeds (Holm over {m}): the best, {best['taper']}, is "
                f"{best['mean']:+.4f} bpb, 95% CI {ci(best)}; minimum detectable effect {mde_text}")
        if mde is not None and abs(best["mean"]) < mde:
            text += ": its effect is below the MDE, indistinguishable from seed noise at this budget"
        if best["proxy_delta"] is not None:
            text += f" (the search estimated {best['proxy_delta']:+.4f} on {best['proxy_seeds']} seed(s))"
    if losers:
        text += "; worse than uniform beyond noise: " + ", ".join(f"{c['taper']} ({c['mean']:+.4f})" for c in losers)
    unit = "bpb" if conf.get("metric", "val_bpb") == "val_bpb" else "loss"
    text = f"under {conf.get('parametrization', 'sp')}: {text.replace(' bpb', ' ' + unit)}"
    if conf.get("steps") and conf.get("search_steps") and conf["steps"] != conf["search_steps"]:
        text += (f" (confirmed at {conf['steps']} steps a run, {conf['steps'] / conf['search_steps']:.3g}x the "
                 f"search's {conf['search_steps']})")
    if conf.get("decomposition"):
        text += "; " + decomposition_text(conf["decomposition"], unit)
    return {"text": text, "winner": best["taper"] if winners else None, "beats_uniform": bool(winners)}


def confirm(*, storage: str | None = None, study_name: str, top_k: int = Confirm.top_k, seeds: int = Confirm.seeds,
            quiet: bool = False, steps: int | None = None, tokens_per_param: float | None = None,
            decompose: bool = Confirm.decompose, population: int | str = 1) -> Confirmation:
    """`autotaper confirm --study X`: confirm any existing study's best tapers on fresh seeds."""
    from autotaper.search.study import check_corpus, load_study

    study, _ = load_study(storage, study_name)
    identity = study.user_attrs.get(SPACE_ATTR)
    if identity is None:
        raise InputError(f"confirm: study {study_name!r} was not made by autotaper (no recorded space)")
    space = StoredSpace(identity)
    data = space.proxy.load_data()
    check_corpus(study, data)
    return Confirmation.from_dict(confirm_study(study, space, data, top_k=top_k, seeds=seeds, quiet=quiet,
                                                steps=steps, tokens_per_param=tokens_per_param, decompose=decompose,
                                                population=population))
