"""What the commands share: the parser classes, flag types, and the model, training and
data flags with the functions that read them."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys

from autotaper.errors import InputError

EXIT_USAGE = 2


EXIT_BUG = 70  # EX_SOFTWARE (sysexits.h): an internal error
COMPARE_SEEDS = 3  # `autotaper compare` without --seeds or --space


class UsageError(InputError):
    """Bad input from the user: reported as one line, exit status 2."""


class _Help(argparse.HelpFormatter):
    """Help that shows each flag's default, unless the text already says it or there is none."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "(default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # one line, not argparse's usage block
        raise UsageError(f"{self.prog}: {message}")


def _article(kind) -> str:
    return "an" if kind.__name__[0] in "aeiou" else "a"


def _positive(kind):
    """An argparse type: a finite `kind` > 0."""
    return _bounded(kind, 0, math.inf, low_open=True)


def _bounded(kind, low, high, *, low_open: bool = False):
    """An argparse type: a finite `kind` in [low, high] ((low, high] with `low_open`)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {_article(kind)} {kind.__name__}, got {text!r}") from None
        if not math.isfinite(value) or not (low < value if low_open else low <= value) or value > high:
            show = (lambda v: f"{v:,}") if kind is int else (lambda v: f"{v:g}")
            if high == math.inf:
                raise argparse.ArgumentTypeError(f"must be a finite number {'>' if low_open else '>='} {show(low)}, "
                                                 f"got {text!r}")
            raise argparse.ArgumentTypeError(f"must be in {'(' if low_open else '['}{show(low)}, {show(high)}], "
                                             f"got {text!r}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its own messages
    return parse


def _auto_or(kind):
    def parse(text):
        return "auto" if text == "auto" else kind(text)
    return parse


def _duration(text: str) -> float:
    from autotaper.search.space import parse_duration

    try:
        return parse_duration(text, "--budget")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).split(": ", 1)[1]) from None


def _floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be numbers separated by commas, got {text!r}") from None
    if not values or any(not 0 < v <= 1e4 for v in values):
        raise argparse.ArgumentTypeError(f"must be positive numbers, got {text!r}")
    return values


def _nonnegative(kind):
    """An argparse type: a finite `kind` >= 0."""
    return _bounded(kind, 0, math.inf)


def _seeds(text: str) -> tuple[int, int]:
    """--seeds N (every candidate on N seeds) or MIN:MAX (racing)."""
    try:
        lo, _, hi = text.partition(":")
        pair = (int(lo), int(hi or lo))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be N or MIN:MAX, got {text!r}") from None
    if pair[0] < 1 or pair[1] < pair[0]:
        raise argparse.ArgumentTypeError(f"needs 1 <= MIN <= MAX, got {text!r}")
    return pair


def _slug(text: str) -> str:
    return "".join(c if (c.isascii() and c.isalnum()) or c in ".-" else "_" for c in text)


def _add_model_args(p: argparse.ArgumentParser, *, taper_required: bool = True, preset_required: bool = True,
                    several_params: bool = False) -> None:
    p.add_argument("--preset", required=preset_required, help="model preset (see `autotaper presets`)")
    p.add_argument("--family", help="override the preset's family: gpt, llama, gated, or a registered one")
    p.add_argument("--taper", default="uniform" if not taper_required else None,
                   required=taper_required, help="taper text, e.g. ffn:cosine:1.5:0.5 (or 'uniform')")
    p.add_argument("--constraint", default="params", choices=["params", "flops", "both"],
                   help="which budget the tapered model must match (default: params)")
    p.add_argument("--tolerance", type=_bounded(float, 0, 0.5), default=1e-3,
                   help="largest relative budget error when an exact match is impossible (default 1e-3)")
    _add_param_args(p, several=several_params)


def _add_param_args(p: argparse.ArgumentParser, *, several: bool) -> None:
    p.add_argument("--param",
                   help=("parametrizations to compare, e.g. sp,mup (sp, mup, completep; default sp)" if several else
                         "parametrization: sp (one global LR), mup (init, LR, eps and weight decay per matrix "
                         "from its fan-in) or completep (mup plus depth rules); default sp"))
    p.add_argument("--depth-alpha", type=_bounded(float, 0.5, 1.0),
                   help="completep: residual branches x (depth / base depth)^-alpha, alpha in [0.5, 1] (default 1)")
    p.add_argument("--base-d-model", type=_bounded(int, 1, 2**20),
                   help="mup/completep: the width the LR was tuned at (default: the model's own)")
    p.add_argument("--base-n-layers", type=_bounded(int, 1, 10_000),
                   help="completep: the depth the LR was tuned at (default: the model's own)")


def _param_fields(args, name: str | None = None) -> dict:
    """The ModelSpec fields of --param (or `name`), --depth-alpha and the base shape, checked."""
    from autotaper.parametrization import parse_names, problems

    name = name or getattr(args, "param", "sp")
    if name is None:
        name = "sp"
    if "," in name:
        raise UsageError(f"--param: one parametrization here, got {name!r} (compare takes several)")
    alpha = 1.0 if getattr(args, "depth_alpha", None) is None else args.depth_alpha
    found = problems(parse_names(name)[0], alpha)
    if found:
        raise UsageError(found[0])
    out = {"parametrization": name, "depth_alpha": alpha}
    for key in ("base_d_model", "base_n_layers"):
        if getattr(args, key, None) is not None:
            out[key] = getattr(args, key)
    return out


def _baseline(args, param: str | None = None):
    from autotaper.spec import PRESETS, ModelSpec

    if args.preset not in PRESETS:
        try:
            ModelSpec.from_name(args.preset)
        except ValueError as e:
            raise UsageError(f"--preset: {e}") from None
    overrides = {"family": args.family} if args.family else {}
    try:
        return ModelSpec.from_name(args.preset, **overrides, **_param_fields(args, param))
    except ValueError as e:
        if args.family and "family" in str(e):
            raise UsageError(f"--family: {e}") from None
        raise


# TrainConfig fields that train and compare take as flags: field -> (type or choices, help). Their
# defaults are TrainConfig's (one place), or, with --space FILE, the space's proxy recipe.
TRAIN_FLAGS = {
    "steps": (_bounded(int, 1, 10_000_000), "optimizer steps"),
    "batch_size": (_bounded(int, 1, 2**20), "sequences per step"),
    "grad_accum": (_bounded(int, 1, 2**20), "micro-batches per step"),
    "lr": (_bounded(float, 0, 1e4, low_open=True), "peak learning rate"),
    "schedule": ("SCHEDULES", "the learning-rate schedule after warmup"),
    "precision": ("PRECISIONS", "auto: bf16 where the device runs it fast, else fp32"),
    "device": (str, "cpu, cuda, cuda:N, or auto (cuda when present)"),
    "compile": ("COMPILE", "torch.compile each block (each distinct layer shape compiles once; the time is reported "
                           "apart from tokens/s); --compile MODE: that torch.compile mode, e.g. reduce-overhead "
                           "(CUDA graphs)"),
    "eval_every": (_bounded(int, 1, 10_000_000), "steps between evaluations (None: four per run)"),
    "checkpoint_every": (_bounded(int, 0, 10_000_000), "steps between checkpoints (0: at the end only)"),
    "log_every": (_bounded(int, 1, 10_000_000), "steps between metrics.jsonl rows"),
}
# Flags a --space file's proxy section also sets (the flag wins): flag dest -> Proxy field.
PROXY_FLAGS = {"preset": "preset", "family": "family", "steps": "steps", "batch_size": "batch_size", "lr": "lr",
               "schedule": "schedule", "precision": "precision", "eval_every": "eval_every", "compile": "compile",
               "data": "data", "strict_data": "strict_data", "tokenizer": "tokenizer", "vocab_size": "vocab_size",
               "param": "parametrization", "depth_alpha": "depth_alpha"}
DATA_DEFAULTS = {"tokenizer": "bytes", "strict_data": False}  # load_data's own defaults, without --space


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from autotaper.train.config import PRECISIONS, SCHEDULES, TrainConfig

    p.add_argument("--space", metavar="FILE", help="take the recipe (model, data, steps, batch, lr, ...) from this "
                   "search space's proxy section, e.g. search_spaces/quickstart.yaml; flags given override it")
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    choices = {"SCHEDULES": SCHEDULES, "PRECISIONS": PRECISIONS}
    for name, (kind, text) in TRAIN_FLAGS.items():
        flag = "--" + name.replace("_", "-")
        text = f"{text} (default: {defaults[name]}" + (", or the --space proxy's)" if name in PROXY_FLAGS else ")")
        if kind is bool:
            p.add_argument(flag, action="store_true", default=None, help=text)
        elif kind == "COMPILE":
            from autotaper.train.config import COMPILE_MODES as MODES

            def mode(text: str) -> str:
                if text not in MODES:
                    raise argparse.ArgumentTypeError(f"must be one of {', '.join(MODES)}, got {text!r}")
                return text

            p.add_argument(flag, nargs="?", const=True, type=mode, default=None, metavar="MODE", help=text)
        elif isinstance(kind, str):
            p.add_argument(flag, choices=choices[kind], default=None, help=text)
        else:
            p.add_argument(flag, type=kind, default=None, help=text)
    p.add_argument("--data", help="text file, directory, glob, .bin/.npy tokens, or hf:PATH "
                   "(default: the embedded standard-library corpus, or the --space proxy's)")
    p.add_argument("--strict-data", action="store_true", default=None,
                   help="refuse a data folder or glob holding files that are not UTF-8 text (default: skip them)")
    p.add_argument("--tokenizer", choices=["bytes", "bpe"], help="bytes (256 symbols) or a BPE trained on the corpus "
                   "(default: bytes, or the --space proxy's)")
    p.add_argument("--vocab-size", type=_bounded(int, 2, 2**16), help="BPE vocabulary size (default 4096)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="last line of stdout: one JSON object")


def _recipe_space(args, skip: tuple[str, ...] = ()):
    """The --space file's space, its proxy overridden by the flags given (but `skip`); None
    without --space."""
    if not getattr(args, "space", None):
        return None
    from autotaper.search import load_space

    if getattr(args, "data", None) is not None and not args.data.strip():
        raise UsageError("--data: an empty path (leave --data out for the space's data)")
    overrides = {field: getattr(args, flag, None) for flag, field in PROXY_FLAGS.items() if flag not in skip}
    return load_space(args.space, overrides=overrides)



def _train_config(args, seed: int, space=None):
    """The training recipe: TrainConfig's defaults, or `space`'s proxy, with the flags given on top."""
    from autotaper.train.config import TrainConfig

    if space is not None:
        from autotaper.search.objective import train_config

        base = train_config(space, seed)
    else:
        base = TrainConfig(seed=seed)
    given = {name: getattr(args, name) for name in TRAIN_FLAGS if getattr(args, name, None) is not None}
    return dataclasses.replace(base, **given)



def _data_and_baseline(args, space=None, param: str | None = None):
    """The data and the uniform baseline: --space's proxy model, or --preset's (under `param`)."""
    data = _load_data(args, space)
    if space is not None:
        from autotaper.search.objective import baseline_spec

        return data, baseline_spec(space, data)
    return data, dataclasses.replace(_baseline(args, param), vocab_size=data.vocab_size)



def _load_data(args, space=None):
    from autotaper.data import load_data

    if space is not None:
        data = space.proxy.load_data()
    else:
        if args.data is not None and not args.data.strip():
            raise UsageError("--data: an empty path (leave --data out for the embedded corpus)")
        kw = {k: getattr(args, k) if getattr(args, k, None) is not None else v for k, v in DATA_DEFAULTS.items()}
        data = load_data(args.data, tokenizer=kw["tokenizer"], vocab_size=args.vocab_size, strict=kw["strict_data"])
    if data.note():
        print(data.note(), file=sys.stderr)
    return data



def _add_data_override(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="override the proxy's data (a study keeps one corpus: a worker elsewhere passes "
                   "the study's corpus folder)")
    p.add_argument("--strict-data", action="store_true", help="refuse data folders holding files that are not text")


def _add_param_override(p: argparse.ArgumentParser) -> None:
    from autotaper.parametrization import PARAMETRIZATIONS

    p.add_argument("--param", choices=PARAMETRIZATIONS,
                   help="override the proxy's parametrization (a study holds one: the default study name gets "
                        "-PARAM appended)")
    p.add_argument("--depth-alpha", type=_bounded(float, 0.5, 1.0), help="completep's depth exponent, in [0.5, 1] (default 1)")


def _load_space(args):
    from autotaper.search import load_space

    seeds = getattr(args, "seeds", None)
    param = getattr(args, "param", None)
    if getattr(args, "data", None) is not None and not args.data.strip():
        raise UsageError("--data: an empty path (leave --data out for the space's data)")
    overrides = {"preset": getattr(args, "preset", None), "family": getattr(args, "family", None),
                 "steps": getattr(args, "steps", None), "data": getattr(args, "data", None),
                 "strict_data": getattr(args, "strict_data", None) or None,
                 "parametrization": param, "depth_alpha": getattr(args, "depth_alpha", None)}
    if seeds is not None:
        overrides["seeds"] = {"min": seeds[0], "max": seeds[1]}
    space = load_space(args.space, overrides=overrides)
    if getattr(args, "study", None) is None:  # the overrides name their own study: the space's stays its own
        space.name = _derived_name(args.space, space)
    elif param is not None and param != "sp":
        space.name = f"{space.name}-{param}"
    if getattr(args, "sampler_seed", None) is not None:
        import dataclasses

        space.settings = dataclasses.replace(space.settings, seed=args.sampler_seed)
    return with_population(space, getattr(args, "population", None))


def with_population(space, population):
    """`space` with its search.population replaced by a --population given (checked as in a space file)."""
    if population is None:
        return space
    import dataclasses

    space.settings = dataclasses.replace(space.settings, population=population)
    return space


def _derived_name(path: str, space) -> str:
    """The default study name of a search whose flags override its space's proxy: the space's
    name, then each proxy field the flags changed (preset, family, steps, seeds, parametrization),
    so `search --space quickstart.yaml --steps 20` is not stored as the quickstart's own study."""
    from autotaper.search.space import Proxy, read_space_file

    raw = read_space_file(path)
    section = raw.get("proxy") if isinstance(raw, dict) and isinstance(raw.get("proxy"), dict) else {}
    default = Proxy()
    given = space.proxy
    raw_seeds = section.get("seeds", default.seeds)
    seeds = (raw_seeds.get("min"), raw_seeds.get("max")) if isinstance(raw_seeds, dict) else (raw_seeds, None)
    seeds = (seeds[0], seeds[1] or seeds[0])
    parts = []
    for key in ("preset", "family"):
        if getattr(given, key) != section.get(key, getattr(default, key)):
            parts.append(str(getattr(given, key)))
    if given.steps != section.get("steps", default.steps):
        parts.append(f"{given.steps}steps")
    if (given.seeds, given.max_seeds) != seeds:
        parts.append(f"seeds{given.seeds}" + (f"-{given.max_seeds}" if given.racing else ""))
    if given.parametrization != section.get("parametrization", default.parametrization):
        parts.append(given.parametrization)
    if given.depth_alpha != section.get("depth_alpha", default.depth_alpha):
        parts.append(f"alpha{given.depth_alpha:g}")
    name = "-".join([space.name, *(_slug(x) for x in parts)])
    return name if len(name) <= 100 else name[:90] + "-" + __import__("hashlib").sha256(name.encode()).hexdigest()[:8]
