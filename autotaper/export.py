"""Export a trained run as a Hugging Face folder that `transformers` loads.

`export_hf(run_dir, out)` reads the run's spec.json and its latest checkpoint and writes:
    config.json          the architecture; a tapered spec lists its per-layer widths and an
                         `auto_map` to the modeling file beside it
    configuration_autotaper.py, modeling_autotaper.py
                         the remote code (tapered specs only; see `autotaper.hf`)
    model.safetensors    the weights, float32 as trained
    tokenizer.json, tokenizer_config.json
                         the run's tokenizer (byte-level BPE, or raw bytes as a byte-level
                         vocabulary of 256 with no merges); none for pre-tokenised data
A width-aware run (`mup`, `completep`) exports with its multipliers folded into the weights: the
residual-branch multiplier into every projection that writes the stream (weight and bias), the
output multiplier into the head (a tied head is untied for it), so the exported model is a
plain one with the same logits.
A uniform llama spec becomes a plain `LlamaForCausalLM` and a uniform GPT-2 spec (no grouped
heads, heads x head_dim = d_model) a plain `GPT2LMHeadModel`, loadable without remote code.
The folder is written under a temporary name, loaded back with `transformers` and its logits
compared with autotaper's before it takes its final name: an export that does not reproduce
the model never appears.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from autotaper._io import fix_tree, make_temp_dir
from autotaper.errors import InputError
from autotaper.spec import ModelSpec
from autotaper.train.checkpoint import load_run

AUTO_MAP = {"AutoConfig": "configuration_autotaper.AutotaperConfig",
            "AutoModelForCausalLM": "modeling_autotaper.AutotaperForCausalLM"}
REMOTE_FILES = ("configuration_autotaper.py", "modeling_autotaper.py")
LLAMA_RENAMES = ((".embed.", ".embed_tokens."), (".input_norm.", ".input_layernorm."),
                 (".mlp_norm.", ".post_attention_layernorm."), (".attn.", ".self_attn."))


@dataclass
class ExportResult:
    out: str
    architecture: str  # LlamaForCausalLM, GPT2LMHeadModel or AutotaperForCausalLM
    remote_code: bool
    step: int
    tokenizer: str | None
    files: list[str] = field(default_factory=list)
    max_abs_diff: float | None = None  # logits, exported vs autotaper (None: not verified)

    def text(self) -> str:
        load = ("AutoModelForCausalLM.from_pretrained(OUT, trust_remote_code=True)" if self.remote_code
                else "AutoModelForCausalLM.from_pretrained(OUT)")
        check = (f"; logits equal autotaper's (max |diff| {self.max_abs_diff:.2e})"
                 if self.max_abs_diff is not None else "; not verified")
        return (f"exported step {self.step} as {self.architecture} to {self.out} "
                f"({', '.join(self.files)}){check}\nload it with {load}")


def plain_architecture(spec: ModelSpec) -> str | None:
    """The stock `transformers` class that holds `spec` exactly, or None (remote code)."""
    widths = (spec.layer_ffn, spec.layer_heads, spec.layer_kv_heads)
    if any(len(set(w)) > 1 for w in widths) or any(d != spec.d_stream for d in spec.layer_d_model):
        return None
    if spec.family == "llama":
        return "LlamaForCausalLM"
    if spec.family == "gpt" and spec.layer_kv_heads[0] == spec.layer_heads[0] \
            and spec.layer_heads[0] * spec.head_dim == spec.d_stream:
        return "GPT2LMHeadModel"
    return None


def fold_multipliers(spec: ModelSpec, state: dict) -> tuple[ModelSpec, dict]:
    """The spec and state dict of a model without forward multipliers that computes the same
    logits: residual projections x the residual scale, the head x the logit scale (untied)."""
    import dataclasses

    from autotaper.parametrization import is_residual_out, logit_scale, residual_scale

    r, s = residual_scale(spec), logit_scale(spec)
    state = dict(state)
    if r != 1.0:
        for name in state:
            if is_residual_out(name):
                state[name] = state[name] * r
    if s != 1.0:
        state["lm_head.weight"] = state["lm_head.weight"] * s
        if spec.tie_embeddings:  # the head and the embedding now differ
            spec = dataclasses.replace(spec, tie_embeddings=False)
    plain = dataclasses.replace(spec, parametrization="sp", depth_alpha=1.0, base_d_model=None, base_n_layers=None,
                                layer_lr=None)
    return plain, state


def _config(spec: ModelSpec, arch: str | None):
    if arch == "LlamaForCausalLM":
        from transformers import LlamaConfig

        return LlamaConfig(vocab_size=spec.vocab_size, hidden_size=spec.d_stream, intermediate_size=spec.layer_ffn[0],
                           num_hidden_layers=spec.n_layers, num_attention_heads=spec.layer_heads[0],
                           num_key_value_heads=spec.layer_kv_heads[0], head_dim=spec.head_dim,
                           max_position_embeddings=spec.context_length, rms_norm_eps=spec.norm_eps,
                           rope_parameters={"rope_type": "default", "rope_theta": spec.rope_theta},
                           tie_word_embeddings=spec.tie_embeddings, bos_token_id=None, eos_token_id=None,
                           architectures=[arch], dtype="float32")
    if arch == "GPT2LMHeadModel":
        from transformers import GPT2Config

        return GPT2Config(vocab_size=spec.vocab_size, n_positions=spec.context_length, n_embd=spec.d_stream,
                          n_layer=spec.n_layers, n_head=spec.layer_heads[0], n_inner=spec.layer_ffn[0],
                          activation_function="gelu_new", layer_norm_epsilon=spec.norm_eps,
                          resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                          tie_word_embeddings=spec.tie_embeddings, bos_token_id=None, eos_token_id=None,
                          architectures=[arch], dtype="float32")
    from autotaper.hf.configuration_autotaper import AutotaperConfig

    config = AutotaperConfig(
        family=spec.family, vocab_size=spec.vocab_size, hidden_size=spec.d_stream, num_hidden_layers=spec.n_layers,
        head_dim=spec.head_dim, hidden_size_per_layer=list(spec.layer_d_model),
        num_attention_heads_per_layer=list(spec.layer_heads), num_key_value_heads_per_layer=list(spec.layer_kv_heads),
        intermediate_size_per_layer=list(spec.layer_ffn), max_position_embeddings=spec.context_length,
        rope_theta=spec.rope_theta, norm_eps=spec.norm_eps, tie_word_embeddings=spec.tie_embeddings,
        taper=spec.taper, architectures=["AutotaperForCausalLM"], dtype="float32")
    config.auto_map = dict(AUTO_MAP)
    return config


def hf_state_dict(spec: ModelSpec, state: dict, arch: str | None) -> dict:
    """autotaper's tensor names -> the exported class's; tied heads are left to `transformers`."""
    out = {}
    for name, tensor in state.items():
        if name == "lm_head.weight" and spec.tie_embeddings:
            continue
        if arch == "LlamaForCausalLM" and not name.startswith("lm_head"):
            name = "model." + name
            for a, b in LLAMA_RENAMES:
                name = name.replace(a, b)
        elif arch == "GPT2LMHeadModel" and not name.startswith("lm_head"):
            if tensor.ndim == 2 and (".attn." in name or ".mlp." in name):
                tensor = tensor.t()  # GPT-2's Conv1D stores (in, out)
            name = "transformer." + name
        out[name] = tensor.detach().contiguous().cpu()
    return out


def _bytes_to_unicode() -> dict[int, str]:
    """Byte-level BPE's printable character for each byte: printable Latin-1 bytes stand for
    themselves, the rest are moved to code points from 256 up, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def byte_tokenizer():
    """autotaper's raw-byte tokenizer (id = byte value) as a `tokenizers` Tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {ch: b for b, ch in _bytes_to_unicode().items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def _tokenizer(run: Path):
    """The run's tokenizer as a `tokenizers` Tokenizer, its name, or (None, None)."""
    from tokenizers import Tokenizer

    if (run / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(run / "tokenizer.json")), "bpe"
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    name = (summary.get("corpus") or {}).get("tokenizer")
    if name == "bytes":
        return byte_tokenizer(), "bytes"
    return None, None


def export_hf(run_dir: str | Path, out: str | Path, *, overwrite: bool = False, verify: bool = True) -> ExportResult:
    """Write the Hugging Face folder `out` for the run in `run_dir` (see the module docstring)."""
    import importlib.util

    if importlib.util.find_spec("transformers") is None:
        raise InputError("export: needs transformers (pip install 'autotaper[hf]')")
    from safetensors.torch import save_file

    out = Path(out)
    run = Path(run_dir).resolve()
    if out.resolve() == run or out.resolve() in run.parents:
        raise InputError(f"export: OUT {str(out)!r} would replace the run directory {str(run_dir)!r}")
    if out.exists() and not out.is_dir():
        raise InputError(f"export: OUT {str(out)!r} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"export: OUT {str(out)!r} is not empty; pass --overwrite to replace it")
    spec, model, step = load_run(run_dir, command="export")
    plain, state = fold_multipliers(spec, model.state_dict())
    arch = plain_architecture(plain)
    config = _config(plain, arch)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out.parent, f".{out.name}-")
    try:
        config.save_pretrained(tmp)
        if arch is None:
            here = Path(__file__).parent / "hf"
            for name in REMOTE_FILES:
                shutil.copyfile(here / name, tmp / name)
        save_file(hf_state_dict(plain, state, arch), str(tmp / "model.safetensors"),
                  metadata={"format": "pt", "autotaper_taper": spec.taper, "autotaper_step": str(step),
                            "autotaper_parametrization": spec.parametrization})
        tok, tok_name = _tokenizer(Path(run_dir))
        if tok is not None:
            tok.save(str(tmp / "tokenizer.json"))
            (tmp / "tokenizer_config.json").write_text(json.dumps(
                {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": spec.context_length,
                 "clean_up_tokenization_spaces": False}, indent=1) + "\n")
        fix_tree(tmp)
        backup = None
        if out.exists():
            backup = out.with_name(f".{out.name}-replaced-{os.getpid()}")
            os.replace(out, backup)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result = ExportResult(str(out), arch or "AutotaperForCausalLM", arch is None, step, tok_name,
                          sorted(p.name for p in out.iterdir()))
    try:
        if verify:
            result.max_abs_diff = compare_logits(out, model, spec, remote_code=arch is None)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # never leave an export that does not reproduce the run
        if backup is not None:
            os.replace(backup, out)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
    return result


def compare_logits(folder: str | Path, model, spec: ModelSpec, *, remote_code: bool, atol: float = 1e-4) -> float:
    """Load `folder` with transformers and return max |logits - autotaper's| on a fixed batch;
    ValueError beyond `atol`."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.utils.logging.disable_progress_bar()
    hf = AutoModelForCausalLM.from_pretrained(str(folder), trust_remote_code=remote_code, dtype=torch.float32).eval()
    idx = torch.randint(0, spec.vocab_size, (2, min(spec.context_length, 64)),
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (hf(idx).logits.float() - model(idx).float()).abs().max().item()
    if not diff <= atol:
        raise InputError(f"export: the exported model's logits differ from autotaper's by {diff:.3g} "
                         f"(tolerance {atol}); nothing was written")
    return diff
