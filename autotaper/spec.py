"""ModelSpec: one transformer's shape, layer by layer, and named presets.

Per-layer lists are explicit (length n_layers) so a tapered model is described by data
alone. The residual stream is `d_stream = max(layer_d_model)` wide: the embedding,
positions, final norm and head work on all of it, and layer l reads the first
`layer_d_model[l]` channels (normalised over those channels only) and adds its output back
to the same channels. With no embed taper every layer_d_model equals d_model and this is the
ordinary transformer.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotaper.errors import InputError

SPEC_FILE_REQUIRED = ("family", "vocab_size", "d_model", "n_layers", "n_heads", "ffn_width", "context_length")


# Upper bounds far past any real transformer: a value beyond one is a typo or an attack, and
# refusing it here keeps a 10^6-layer spec from building for a minute before running out of
# memory (the memory estimate, `autotaper.memory`, then judges what remains).
MAX_VOCAB = 2**22
LIMITS = {"vocab_size": MAX_VOCAB, "n_layers": 10_000, "context_length": 2**22}
MAX_WIDTH = 2**20  # d_model, heads, head_dim, ffn width


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    high = LIMITS.get(name.split("[")[0], MAX_WIDTH)
    if value > high:
        raise InputError(f"{name} must be at most {high:,}, got {value:,}")


@dataclass(frozen=True)
class ModelSpec:
    family: str = "llama"
    vocab_size: int = 256
    d_model: int = 32
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = None  # defaults to n_heads (no grouping)
    head_dim: int | None = None  # defaults to d_model // n_heads
    ffn_width: int = 64  # the uniform baseline MLP hidden width
    context_length: int = 32
    tie_embeddings: bool = False
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    taper: str = "uniform"  # the taper text this spec was solved from, for provenance
    layer_ffn: tuple[int, ...] | None = None
    layer_heads: tuple[int, ...] | None = None
    layer_kv_heads: tuple[int, ...] | None = None
    layer_d_model: tuple[int, ...] | None = None
    # How init and per-matrix optimizer settings follow width and depth (`autotaper.parametrization`):
    # sp, mup or completep; the base shape is this spec's uniform model at base_d_model x
    # base_n_layers (None: its own width and depth).
    parametrization: str = "sp"
    depth_alpha: float = 1.0  # completep: residual branches x (L / base_n_layers)^-alpha
    base_d_model: int | None = None
    base_n_layers: int | None = None
    layer_lr: tuple[float, ...] | None = None  # per-layer LR multipliers (the `lr` taper); None: all 1

    def __post_init__(self) -> None:
        from autotaper.families import get_family

        family = get_family(self.family)
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "ffn_width", "context_length"):
            _positive_int(name, getattr(self, name))
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen dataclass)
        if self.n_kv_heads is None:
            set_("n_kv_heads", self.n_heads)
        _positive_int("n_kv_heads", self.n_kv_heads)
        if self.n_heads % self.n_kv_heads:
            raise InputError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads "
                             f"({self.n_kv_heads})")
        if self.head_dim is None:
            if self.d_model % self.n_heads:
                raise InputError(f"d_model ({self.d_model}) must be divisible by n_heads "
                                 f"({self.n_heads}) unless head_dim is given")
            set_("head_dim", self.d_model // self.n_heads)
        _positive_int("head_dim", self.head_dim)
        if family.rotary and self.head_dim % 2:
            raise InputError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        if not isinstance(self.tie_embeddings, bool):
            raise InputError(f"tie_embeddings must be true or false, got {self.tie_embeddings!r}")
        for name in ("rope_theta", "norm_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise InputError(f"{name} must be > 0, got {getattr(self, name)!r}")
        defaults = {"layer_ffn": self.ffn_width, "layer_heads": self.n_heads,
                    "layer_kv_heads": self.n_kv_heads, "layer_d_model": self.d_model}
        for name, default in defaults.items():
            value = getattr(self, name)
            if value is None:
                value = (default,) * self.n_layers
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
                raise InputError(f"{name} must be a list of {self.n_layers} integers, got {value!r}")
            value = tuple(value)
            if len(value) != self.n_layers:
                raise InputError(f"{name} must have n_layers={self.n_layers} entries, got {len(value)}")
            for i, v in enumerate(value):
                _positive_int(f"{name}[{i}]", v)
            set_(name, tuple(int(v) for v in value))
        for i, (h, kv) in enumerate(zip(self.layer_heads, self.layer_kv_heads)):
            if h % kv:
                raise InputError(f"layer_heads[{i}] ({h}) must be a multiple of layer_kv_heads[{i}] ({kv})")
        from autotaper.parametrization import problems

        found = problems(self.parametrization, self.depth_alpha)
        if found:
            raise InputError(found[0])
        set_("depth_alpha", float(self.depth_alpha))
        for name in ("base_d_model", "base_n_layers"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        lrs = self.layer_lr
        if lrs is None:
            lrs = (1.0,) * self.n_layers
        if isinstance(lrs, (str, bytes)) or not hasattr(lrs, "__len__"):
            raise InputError(f"layer_lr must be a list of {self.n_layers} numbers, got {lrs!r}")
        if len(lrs) != self.n_layers:
            raise InputError(f"layer_lr must have n_layers={self.n_layers} entries, got {len(lrs)}")
        for i, v in enumerate(lrs):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
                raise InputError(f"layer_lr[{i}] must be a number > 0, got {v!r}")
        set_("layer_lr", tuple(float(v) for v in lrs))

    # -- derived -------------------------------------------------------------------------
    @property
    def d_stream(self) -> int:
        """Width of the residual stream: the widest layer's residual width."""
        return max(self.layer_d_model)

    @property
    def group_size(self) -> int:
        """Query heads per KV head (GQA group)."""
        return self.n_heads // self.n_kv_heads

    def uniform(self) -> "ModelSpec":
        """The same shape with every per-layer list reset to the baseline."""
        return dataclasses.replace(self, taper="uniform", layer_ffn=None, layer_heads=None,
                                   layer_kv_heads=None, layer_d_model=None, layer_lr=None)

    def layers(self) -> list[dict[str, int]]:
        return [{"ffn": f, "heads": h, "kv_heads": kv, "d_model": d, "lr": r} for f, h, kv, d, r in
                zip(self.layer_ffn, self.layer_heads, self.layer_kv_heads, self.layer_d_model, self.layer_lr)]

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSpec":
        if not isinstance(data, dict):
            raise InputError(f"a model spec must be a mapping, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(f"unknown model spec field(s): {', '.join(unknown)}")
        return cls(**data)

    def save(self, path: str | Path) -> Path:
        """Write the spec as JSON, atomically (a temporary file, then a rename): the hand-off
        file `autotaper train --spec` reads."""
        from autotaper._io import atomic_write_text

        path = Path(path)
        atomic_write_text(path, self.to_json(indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ModelSpec":
        """Read a spec file; ValueError naming the file and the field for anything malformed.
        The shape fields are required: a spec file that left one out would otherwise train a
        default-sized model without a word."""
        from autotaper._io import read_json

        path = Path(path)
        data = read_json(path, f"spec file {str(path)!r}")
        if not isinstance(data, dict):
            raise InputError(f"spec file {str(path)!r}: must hold a JSON object, got {type(data).__name__}")
        missing = [k for k in SPEC_FILE_REQUIRED if k not in data]
        if missing:
            raise InputError(f"spec file {str(path)!r}: missing field(s) {', '.join(missing)}")
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError) as e:
            raise InputError(f"spec file {str(path)!r}: {e}") from None

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        return cls.from_dict(json.loads(text))

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> "ModelSpec":
        import yaml

        return cls.from_dict(yaml.safe_load(text))

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "ModelSpec":
        """A named preset (see PRESETS), with any field overridden."""
        if name not in PRESETS:
            import difflib

            close = difflib.get_close_matches(str(name), list(PRESETS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(f"unknown preset {name!r}{hint}; known: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


# Presets. Byte-level proxies (vocab 256) train on the embedded corpus on 2 CPU cores; the
# large shapes are the published ones they are named after.
PRESETS: dict[str, dict[str, Any]] = {
    # Tests: builds and trains in well under a second.
    "tiny": dict(family="llama", vocab_size=256, d_model=32, n_layers=4, n_heads=4, n_kv_heads=2,
                 ffn_width=64, context_length=32),
    # Proxy runs, sized for about 1, 4 and 15 minutes of a few hundred steps on 2 CPU cores
    # at batch 16 with bf16 autocast (measured: 0.13, 0.72 and about 2.5 s per step).
    "proxy-xs": dict(family="llama", vocab_size=256, d_model=128, n_layers=6, n_heads=4,
                     ffn_width=512, context_length=128),
    "proxy-s": dict(family="llama", vocab_size=256, d_model=256, n_layers=8, n_heads=8,
                    ffn_width=1024, context_length=256),
    "proxy-m": dict(family="llama", vocab_size=256, d_model=512, n_layers=10, n_heads=8,
                    ffn_width=2048, context_length=256),
    # GPT-2 small exactly (124,439,808 parameters with tied embeddings).
    "125m": dict(family="gpt", vocab_size=50257, d_model=768, n_layers=12, n_heads=12,
                 ffn_width=3072, context_length=1024, tie_embeddings=True),
    # The paper's scales as Transformer++ shapes: Llama-2 vocabulary (32,000), untied
    # embeddings, 4K context, 24 layers; d_ff chosen as a multiple of 16 that puts the total at
    # the scale's name (439.9M, 760.2M, 1300.6M) so the 1.5x/0.5x endpoints of the paper's
    # cosine taper land on multiples of 16 for 440m and 760m.
    "440m": dict(family="llama", vocab_size=32000, d_model=1024, n_layers=24, n_heads=16,
                 ffn_width=3712, context_length=4096),
    "760m": dict(family="llama", vocab_size=32000, d_model=1536, n_layers=24, n_heads=16,
                 ffn_width=3936, context_length=4096),
    "1.3b": dict(family="llama", vocab_size=32000, d_model=2048, n_layers=24, n_heads=16,
                 ffn_width=5200, context_length=4096),
}
