"""Analytic counts against the built modules and torch's FlopCounterMode."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from autotaper import build_model, count, solve
from autotaper.spec import ModelSpec

TAPERS = ["uniform", "ffn:cosine:1.5:0.5", "ffn:linear:0.5:1.5", "heads:linear:1.5:0.5",
          "embed:cosine:1.5:0.5:m=8", "embed:linear:0.75:1.25:m=8",
          "ffn:sigmoid:1.5:0.5+heads:cosine:1.5:0.5+embed:linear:1.25:0.75:m=8",
          "ffn:step:0.75:0.75:mid=1.5:m=8"]
FAMILIES = ["gpt", "llama", "gated"]


def tapered(family, taper, **overrides):
    base = ModelSpec.from_name("tiny", family=family, **overrides)
    return solve(base, taper, tolerance=0.05)


def numel(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("taper", TAPERS)
@pytest.mark.parametrize("tie", [False, True])
def test_param_count_equals_built_module(family, taper, tie):
    spec = tapered(family, taper, tie_embeddings=tie)
    assert count(spec).params == numel(build_model(spec))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("taper", TAPERS)
def test_flops_equal_flop_counter_mode(family, taper):
    """FlopCounterMode counts matmuls (linear layers, head, attention bmm) and nothing
    elementwise, like our convention. It sees attention only through the math SDPA kernel and
    counts it dense (all T keys, masked or not), which is `flops_per_token_dense`; the causal
    average in `flops_per_token` differs from it by exactly the masked half."""
    spec = tapered(family, taper)
    model = build_model(spec)
    B, T = 2, spec.context_length
    idx = torch.randint(0, spec.vocab_size, (B, T))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc, torch.no_grad():
        model(idx)
    c = count(spec)
    assert fc.get_total_flops() == pytest.approx(c.flops_per_token_dense * B * T, rel=0, abs=0.5)
    attn_per_key = sum(4 * h * spec.head_dim for h in spec.layer_heads)
    assert c.flops_per_token_dense - c.flops_per_token == pytest.approx(attn_per_key * (T - 1) / 2)


def test_forward_shapes_and_embed_slicing():
    spec = tapered("llama", "embed:cosine:1.5:0.5:m=8")
    model = build_model(spec)
    logits = model(torch.randint(0, 256, (3, 17)))
    assert logits.shape == (3, 17, 256)
    assert model.embed.weight.shape[1] == spec.d_stream == max(spec.layer_d_model)
    assert [b.input_norm.weight.numel() for b in model.layers] == list(spec.layer_d_model)


def test_tinyllama_shape_has_hugging_face_parameter_count():
    # TinyLlama-1.1B: published count 1,100,048,384 (untied embeddings)
    spec = ModelSpec(family="llama", vocab_size=32000, d_model=2048, n_layers=22, n_heads=32,
                     n_kv_heads=4, ffn_width=5632, context_length=2048, tie_embeddings=False)
    assert count(spec).params == 1_100_048_384
    with torch.device("meta"):
        assert numel(build_model(spec, seed=None)) == 1_100_048_384


def test_gpt2_small_has_published_parameter_count():
    spec = ModelSpec.from_name("125m")
    assert count(spec).params == 124_439_808  # GPT-2 small, tied head
    with torch.device("meta"):
        assert numel(build_model(spec, seed=None)) == 124_439_808


def test_llama_matches_hugging_face_llama_logits():
    """Same weights in Hugging Face's LlamaForCausalLM give the same logits and count."""
    transformers = pytest.importorskip("transformers")
    spec = ModelSpec.from_name("tiny")
    cfg = transformers.LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=32, rms_norm_eps=spec.norm_eps,
                                   rope_theta=spec.rope_theta, tie_word_embeddings=False,
                                   attn_implementation="eager")
    hf = transformers.LlamaForCausalLM(cfg).eval()
    ours = build_model(spec, seed=1).eval()
    assert numel(hf) == count(spec).params
    renames = ((".embed.", ".embed_tokens."), (".input_norm.", ".input_layernorm."),
               (".mlp_norm.", ".post_attention_layernorm."), (".attn.", ".self_attn."))
    state = {}
    for name, tensor in ours.state_dict().items():
        if not name.startswith("lm_head"):
            name = "model." + name
            for a, b in renames:
                name = name.replace(a, b)
        state[name] = tensor
    hf.load_state_dict(state, strict=True)
    idx = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), hf(idx).logits, rtol=1e-4, atol=1e-5)


def test_gpt_matches_hugging_face_gpt2_logits():
    transformers = pytest.importorskip("transformers")
    spec = ModelSpec.from_name("tiny", family="gpt", n_kv_heads=4, tie_embeddings=True)
    cfg = transformers.GPT2Config(vocab_size=256, n_positions=32, n_embd=32, n_layer=4, n_head=4,
                                  n_inner=64, layer_norm_epsilon=spec.norm_eps, attn_pdrop=0.0,
                                  resid_pdrop=0.0, embd_pdrop=0.0)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    ours = build_model(spec, seed=1).eval()
    assert numel(hf) == count(spec).params
    state = {}
    for name, tensor in ours.state_dict().items():
        hf_name = name if name.startswith("lm_head") else "transformer." + name
        if name.endswith(".weight") and tensor.ndim == 2 and (".attn." in name or ".mlp." in name):
            tensor = tensor.t().contiguous()  # HF GPT-2 uses Conv1D: (in, out)
        state[hf_name] = tensor
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("attn.bias") or k == "lm_head.weight" for k in missing)
    idx = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), hf(idx).logits, rtol=1e-4, atol=1e-5)


def test_init_depends_only_on_seed_and_name():
    a = build_model(solve(ModelSpec.from_name("tiny"), "ffn:cosine:1.5:0.5"), seed=3)
    b = build_model(ModelSpec.from_name("tiny"), seed=3)
    c = build_model(ModelSpec.from_name("tiny"), seed=4)
    pa, pb, pc = dict(a.named_parameters()), dict(b.named_parameters()), dict(c.named_parameters())
    for name in pa:
        if "mlp" in name:
            assert pa[name].shape != pb[name].shape or name.endswith("weight") and pa[name].ndim == 1
        else:  # untouched by the ffn taper: identical initial weights
            assert torch.equal(pa[name], pb[name]), name
    assert not torch.equal(pb["layers.0.attn.q_proj.weight"], pc["layers.0.attn.q_proj.weight"])


def test_families_are_pluggable():
    from autotaper.families import Llama, register_family

    class NoHeadLlama(Llama):
        name = "llama-test-family"

    register_family(NoHeadLlama(), overwrite=True)
    spec = solve(ModelSpec.from_name("tiny", family="llama-test-family"), "ffn:cosine:1.5:0.5")
    assert count(spec).params == numel(build_model(spec))
