"""A ladder's rungs: the scales one space is run at, and the rules that size each one's run.

A rung is a proxy shape (a preset, with any shape field overridden) trained by the space's
recipe, except for two things set per rung by stated rules:

- **training tokens** = `tokens_per_param` x the rung's parameters (all of them, embeddings
  included, as Chinchilla counts), as whole steps of `batch_size` x `context_length`
  tokens, clamped to [min_steps, max_steps]. Unset, tokens_per_param is anchored on the
  space's own proxy (its steps on its preset), so the first rung of a ladder made from the
  quickstart trains like the quickstart. A clamped rung says so, with the tokens per
  parameter it really got.
- **peak learning rate**, rule `parametrization` (default): the proxy's parametrization
  decides. Under `mup` and `completep` every rung's spec takes its multipliers against the
  anchor (the space's proxy: width `base_width`, its depth), so the LR tuned there transfers
  and every rung trains at proxy.lr (`autotaper.parametrization`; `benchmarks/lr_transfer.py`
  measures how well). Under `sp` there are no multipliers, and one global LR approximates
  muP's hidden-weight rule: lr = proxy.lr * (base_width / d_model) ** exponent (Yang et al.
  2022, Tensor Programs V, Table 3); depth is not corrected, and deep narrow rungs train at
  the wrong LR. Rule `width` forces that approximation under any parametrization, rule
  `fixed` trains every rung at proxy.lr with no base shape. base_width defaults to the
  space's proxy width, so that rung keeps the space's LR.

The depth-preserving proxy of the target is a rung with `n_layers: target` (and usually
`tokens_per_param: target`): the target's depth at a narrow width, since a taper is defined
on normalised depth but its effect may depend on how many layers share it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from autotaper.errors import InputError
from autotaper.search.space import SHAPE_KEYS, Proxy

TARGET = "target"  # n_layers / tokens_per_param: take the target's value
LR_RULES = ("parametrization", "width", "fixed")
RUNG_KEYS = {"name", "preset", "tokens_per_param", "steps", "lr", "batch_size", *SHAPE_KEYS}
LADDER_KEYS = {"rungs", "tokens_per_param", "steps", "lr", "target", "target_tokens_per_param", "probe", "budget",
               "n_trials"}
DEFAULT_TARGET_TOKENS_PER_PARAM = 20.0  # Chinchilla's compute-optimal ratio (Hoffmann et al. 2022)


@dataclass(frozen=True)
class RungDef:
    """One rung as written: shape overrides and optional per-rung values of the rules."""

    name: str
    preset: str | None = None  # default: the space's proxy preset
    shape: dict = field(default_factory=dict)  # may hold n_layers: "target"
    tokens_per_param: float | str | None = None  # a number, "target", or None (the ladder's rule)
    steps: int | None = None  # explicit: overrides the token rule
    lr: float | None = None  # explicit: overrides the LR rule
    batch_size: int | None = None

    @property
    def depth_proxy(self) -> bool:
        return self.shape.get("n_layers") == TARGET


@dataclass(frozen=True)
class Rules:
    tokens_per_param: float | None = None  # None: anchored on the space's proxy
    min_steps: int = 50
    max_steps: int | None = None  # None: 4 x the space's proxy steps
    lr_rule: str = "parametrization"  # the proxy's: sp -> the width rule, mup/completep -> one LR that transfers
    base_width: int | None = None  # None: the space's proxy width
    lr_exponent: float = 1.0


@dataclass(frozen=True)
class LadderConfig:
    rungs: tuple[RungDef, ...]
    rules: Rules = Rules()
    target: str | None = None  # a preset name or a spec file
    target_tokens_per_param: float = DEFAULT_TARGET_TOKENS_PER_PARAM
    top_k: int = 1  # each rung's best tapers added to the shared probe set
    seeds: int = 4  # fresh paired seeds of the probe set at every rung
    # the probe set trains this many tokens per uniform parameter at each rung (None: the rung's
    # search steps), so each rung's verdict is measured nearer the target's regime than its search
    probe_tokens_per_param: float | None = None
    budget_s: float | None = None  # each rung's search (calibration and trials)
    n_trials: int | None = None


@dataclass(frozen=True)
class Rung:
    """A rung resolved against the space and the target: what it trains, and why."""

    name: str
    proxy: Proxy
    params: int
    non_embedding: int
    n_layers: int
    d_model: int
    tokens: int
    tokens_per_param: float  # what it really trains on
    wanted_tokens_per_param: float
    clamped: str | None  # "min_steps" / "max_steps" when the rule was clamped
    depth_proxy: bool
    lr_note: str

    def to_dict(self) -> dict[str, Any]:
        p = self.proxy
        return {"name": self.name, "preset": p.preset, "shape": p.shape, "params": self.params,
                "non_embedding": self.non_embedding, "n_layers": self.n_layers, "d_model": self.d_model,
                "steps": p.steps, "batch_size": p.batch_size, "lr": p.lr, "tokens": self.tokens,
                "tokens_per_param": self.tokens_per_param, "wanted_tokens_per_param": self.wanted_tokens_per_param,
                "clamped": self.clamped, "depth_proxy": self.depth_proxy, "lr_rule": self.lr_note,
                "parametrization": p.parametrization, "depth_alpha": p.depth_alpha,
                "base_d_model": p.base_d_model, "base_n_layers": p.base_n_layers}


def _number(where: str, value: Any, problems: list[str], *, integer: bool = False, allow_target: bool = False,
            positive: bool = True):
    if value is None or (allow_target and value == TARGET):
        return value
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if integer:
        ok = ok and float(value).is_integer()
    if not ok or (positive and value <= 0):
        kind = "a positive integer" if integer else "a positive number"
        problems.append(f"{where}: must be {kind}{' or target' if allow_target else ''}, got {value!r}")
        return None
    return int(value) if integer else float(value)


def parse_ladder(raw: Any, *, where: str = "ladder") -> LadderConfig:
    """Validate a space's `ladder:` section; ValueError listing every problem (field and value)."""
    from autotaper.search.space import parse_duration

    problems: list[str] = []
    if not isinstance(raw, dict):
        raise InputError(f"{where}: must be a mapping with rungs, got {raw!r}")
    for key in sorted(set(raw) - LADDER_KEYS):
        problems.append(f"{where}.{key}: unknown key (known: {', '.join(sorted(LADDER_KEYS))})")
    rungs_raw = raw.get("rungs")
    rungs: list[RungDef] = []
    if not isinstance(rungs_raw, list) or len(rungs_raw) < 2:
        problems.append(f"{where}.rungs: a ladder needs a list of at least 2 rungs, got {rungs_raw!r}")
        rungs_raw = []
    for i, r in enumerate(rungs_raw):
        w = f"{where}.rungs[{i}]"
        if isinstance(r, str):
            r = {"name": r, "preset": r}
        if not isinstance(r, dict):
            problems.append(f"{w}: must be a preset name or a mapping, got {r!r}")
            continue
        for key in sorted(set(r) - RUNG_KEYS):
            problems.append(f"{w}.{key}: unknown key (known: {', '.join(sorted(RUNG_KEYS))})")
        name = r.get("name") or r.get("preset")
        if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_." for c in name):
            problems.append(f"{w}.name: needs a name of letters, digits, '-', '_' or '.', got {name!r}")
            continue
        shape = {}
        for key in SHAPE_KEYS:
            if key in r:
                v = _number(f"{w}.{key}", r[key], problems, integer=True, allow_target=key == "n_layers")
                if v is not None:
                    shape[key] = v
        rungs.append(RungDef(name=name, preset=r.get("preset"), shape=shape,
                             tokens_per_param=_number(f"{w}.tokens_per_param", r.get("tokens_per_param"), problems,
                                                      allow_target=True),
                             steps=_number(f"{w}.steps", r.get("steps"), problems, integer=True),
                             lr=_number(f"{w}.lr", r.get("lr"), problems),
                             batch_size=_number(f"{w}.batch_size", r.get("batch_size"), problems, integer=True)))
    names = [r.name for r in rungs]
    for n in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{where}.rungs: name {n!r} used twice")
    steps = raw.get("steps") or {}
    if not isinstance(steps, dict) or set(steps) - {"min", "max"}:
        problems.append(f"{where}.steps: must be a mapping {{min, max}}, got {steps!r}")
        steps = {}
    lr = raw.get("lr") or {}
    if not isinstance(lr, dict) or set(lr) - {"rule", "base_width", "exponent"}:
        problems.append(f"{where}.lr: must be a mapping {{rule, base_width, exponent}}, got {lr!r}")
        lr = {}
    if lr.get("rule", "parametrization") not in LR_RULES:
        problems.append(f"{where}.lr.rule: must be one of {', '.join(LR_RULES)}, got {lr.get('rule')!r}")
    rules = Rules(tokens_per_param=_number(f"{where}.tokens_per_param", raw.get("tokens_per_param"), problems),
                  min_steps=_number(f"{where}.steps.min", steps.get("min", 50), problems, integer=True) or 50,
                  max_steps=_number(f"{where}.steps.max", steps.get("max"), problems, integer=True),
                  lr_rule=lr.get("rule", "parametrization"),
                  base_width=_number(f"{where}.lr.base_width", lr.get("base_width"), problems, integer=True),
                  lr_exponent=_number(f"{where}.lr.exponent", lr.get("exponent", 1.0), problems, positive=False)
                  if lr.get("exponent", 1.0) is not None else 1.0)
    if rules.max_steps is not None and rules.max_steps < rules.min_steps:
        problems.append(f"{where}.steps: max {rules.max_steps} < min {rules.min_steps}")
    probe = raw.get("probe") or {}
    if not isinstance(probe, dict) or set(probe) - {"top_k", "seeds", "tokens_per_param"}:
        problems.append(f"{where}.probe: must be a mapping {{top_k, seeds, tokens_per_param}}, got {probe!r}")
        probe = {}
    probe_tpp = _number(f"{where}.probe.tokens_per_param", probe.get("tokens_per_param"), problems)
    top_k = probe.get("top_k", 1)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        problems.append(f"{where}.probe.top_k: must be an integer >= 0, got {top_k!r}")
    seeds = probe.get("seeds", 4)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 2 <= seeds <= 1000:
        problems.append(f"{where}.probe.seeds: must be an integer from 2 to 1000, got {seeds!r}")
    budget_s = None
    if raw.get("budget") is not None:
        try:
            budget_s = parse_duration(raw["budget"], f"{where}.budget")
        except ValueError as e:
            problems.append(str(e))
    n_trials = _number(f"{where}.n_trials", raw.get("n_trials"), problems, integer=True)
    target = raw.get("target")
    if target is not None and not isinstance(target, str):
        problems.append(f"{where}.target: must be a preset name or a spec file, got {target!r}")
    ttpp = _number(f"{where}.target_tokens_per_param", raw.get("target_tokens_per_param",
                                                                 DEFAULT_TARGET_TOKENS_PER_PARAM), problems)
    if problems:
        from autotaper.search.space import ProblemsError

        raise ProblemsError(where, problems)
    return LadderConfig(rungs=tuple(rungs), rules=rules, target=target, target_tokens_per_param=ttpp,
                        top_k=top_k, seeds=seeds, budget_s=budget_s, n_trials=n_trials,
                        probe_tokens_per_param=probe_tpp)


def check_scales(names: list[str]) -> list[str]:
    """`--scales proxy-xs,proxy-s`: at least two presets, none twice; one rung each."""
    from autotaper.spec import PRESETS

    names = [n.strip() for n in names if n.strip()]
    if len(names) < 2:
        raise InputError(f"--scales: a ladder needs at least 2 scales, got {','.join(names)!r}")
    for n in names:
        if n not in PRESETS:
            raise InputError(f"--scales: unknown preset {n!r} (known: {', '.join(PRESETS)})")
    if len(set(names)) != len(names):
        raise InputError(f"--scales: a preset named twice in {','.join(names)!r}")
    return names


def resolve(config: LadderConfig, proxy: Proxy, target, *, vocab_size: int) -> list[Rung]:
    """Every rung's proxy, steps and LR by the rules, against the space's `proxy` and the
    `target` ModelSpec (for `n_layers: target`)."""
    from autotaper.cost import count
    from autotaper.spec import ModelSpec

    def spec_of(preset, shape, base=None):
        overrides = {"vocab_size": vocab_size, **({"family": proxy.family} if proxy.family else {}),
                     **proxy.spec_fields(), **(base or {})}
        return ModelSpec.from_name(preset, **shape, **overrides)

    anchor = spec_of(proxy.preset, proxy.shape or {})
    rules = config.rules
    # Under mup and completep every rung's multipliers are taken against the anchor (the
    # space's proxy, whose LR was tuned): the LR transfers, so every rung trains at proxy.lr.
    transfer = rules.lr_rule == "parametrization" and proxy.parametrization != "sp"
    base = {"base_d_model": rules.base_width or anchor.d_model, "base_n_layers": anchor.n_layers} if transfer else {}
    tpp_rule = rules.tokens_per_param
    if tpp_rule is None:
        tpp_rule = proxy.steps * proxy.batch_size * anchor.context_length / count(anchor).params
    max_steps = rules.max_steps or 4 * proxy.steps
    base_width = rules.base_width or anchor.d_model
    out = []
    for r in config.rungs:
        shape = dict(proxy.shape or {}) if r.preset is None else {}
        shape.update({k: (target.n_layers if v == TARGET else v) for k, v in r.shape.items()})
        preset = r.preset or proxy.preset
        try:
            spec = spec_of(preset, shape, base)
        except ValueError as e:
            raise InputError(f"ladder rung {r.name}: {e}") from None
        c = count(spec)
        batch = r.batch_size or proxy.batch_size
        per_step = batch * spec.context_length
        wanted = config.target_tokens_per_param if r.tokens_per_param == TARGET else (r.tokens_per_param or tpp_rule)
        clamped = None
        if r.steps is not None:
            steps = r.steps
        else:
            steps = max(1, round(wanted * c.params / per_step))
            if steps < rules.min_steps:
                steps, clamped = rules.min_steps, "min_steps"
            elif steps > max_steps:
                steps, clamped = max_steps, "max_steps"
        if r.lr is not None:
            lr, note = r.lr, "given"
        elif rules.lr_rule == "fixed":
            lr, note = proxy.lr, "fixed"
        elif transfer:
            lr = proxy.lr
            note = (f"{proxy.parametrization}: {proxy.lr:g} against base {base['base_d_model']} wide, "
                    f"{base['base_n_layers']} deep")
        else:
            lr = proxy.lr * (base_width / spec.d_model) ** rules.lr_exponent
            note = f"{proxy.lr:g} x ({base_width}/{spec.d_model})^{rules.lr_exponent:g}"
        rung_proxy = dataclasses.replace(proxy, preset=preset, shape=shape or None, steps=steps, batch_size=batch,
                                         **base,
                                         lr=float(f"{lr:.4g}"),
                                         eval_every=steps if proxy.eval_every == proxy.steps else proxy.eval_every)
        problems = rung_proxy.problems()
        if problems:
            raise InputError(f"ladder rung {r.name}: " + "; ".join(problems))
        tokens = steps * per_step
        out.append(Rung(r.name, rung_proxy, c.params, c.params_non_embedding, spec.n_layers, spec.d_model, tokens,
                        tokens / c.params, float(wanted), clamped, r.depth_proxy, note))
    return out
