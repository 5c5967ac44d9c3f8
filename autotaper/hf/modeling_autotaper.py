"""A tapered transformer exported by autotaper: every layer has its own widths.

Layer l reads the first d_l = config.hidden_size_per_layer[l] channels of the residual stream
and adds its output to those channels; it has its own number of query and key/value heads and
its own MLP width. Module names are autotaper's, so the checkpoint loads without renaming.
Inputs are unpadded causal sequences; there is no KV cache, so generation recomputes the prefix.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_autotaper import AutotaperConfig


def add_to_stream(x, y):
    d, D = y.shape[-1], x.shape[-1]
    return x + y if d == D else x + F.pad(y, (0, D - d))


def causal_attention(q, k, v):
    B, h, T, hd = q.shape
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=k.shape[1] != h)
    return y.transpose(1, 2).reshape(B, T, h * hd)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rope_tables(head_dim, length, theta):
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class LlamaAttention(nn.Module):
    def __init__(self, d, n_heads, n_kv_heads, head_dim, gated):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.q_proj = nn.Linear(d, n_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(d, n_kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(d, n_kv_heads * head_dim, bias=False)
        self.g_proj = nn.Linear(d, n_heads * head_dim, bias=False) if gated else None
        self.o_proj = nn.Linear(n_heads * head_dim, d, bias=False)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        y = causal_attention(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v)
        if self.g_proj is not None:
            y = y * torch.sigmoid(self.g_proj(x))
        return self.o_proj(y)


class SwiGLU(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.gate_proj = nn.Linear(d, hidden, bias=False)
        self.up_proj = nn.Linear(d, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaBlock(nn.Module):
    def __init__(self, config, i):
        super().__init__()
        self.d = d = config.hidden_size_per_layer[i]
        self.input_norm = RMSNorm(d, config.norm_eps)
        self.attn = LlamaAttention(d, config.num_attention_heads_per_layer[i],
                                   config.num_key_value_heads_per_layer[i], config.head_dim,
                                   config.family == "gated")
        self.mlp_norm = RMSNorm(d, config.norm_eps)
        self.mlp = SwiGLU(d, config.intermediate_size_per_layer[i])

    def forward(self, x, cos, sin):
        x = add_to_stream(x, self.attn(self.input_norm(x[..., : self.d]), cos, sin))
        return add_to_stream(x, self.mlp(self.mlp_norm(x[..., : self.d])))


class GPTAttention(nn.Module):
    def __init__(self, d, n_heads, n_kv_heads, head_dim):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.c_attn = nn.Linear(d, (n_heads + 2 * n_kv_heads) * head_dim)
        self.c_proj = nn.Linear(n_heads * head_dim, d)

    def forward(self, x):
        B, T, _ = x.shape
        hd = self.head_dim
        q, k, v = self.c_attn(x).split([self.n_heads * hd, self.n_kv_heads * hd, self.n_kv_heads * hd], -1)
        q = q.view(B, T, self.n_heads, hd).transpose(1, 2)
        k = k.view(B, T, self.n_kv_heads, hd).transpose(1, 2)
        v = v.view(B, T, self.n_kv_heads, hd).transpose(1, 2)
        return self.c_proj(causal_attention(q, k, v))


class GPTMLP(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.c_fc = nn.Linear(d, hidden)
        self.c_proj = nn.Linear(hidden, d)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class GPTBlock(nn.Module):
    def __init__(self, config, i):
        super().__init__()
        self.d = d = config.hidden_size_per_layer[i]
        self.ln_1 = nn.LayerNorm(d, eps=config.norm_eps)
        self.attn = GPTAttention(d, config.num_attention_heads_per_layer[i],
                                 config.num_key_value_heads_per_layer[i], config.head_dim)
        self.ln_2 = nn.LayerNorm(d, eps=config.norm_eps)
        self.mlp = GPTMLP(d, config.intermediate_size_per_layer[i])

    def forward(self, x):
        x = add_to_stream(x, self.attn(self.ln_1(x[..., : self.d])))
        return add_to_stream(x, self.mlp(self.ln_2(x[..., : self.d])))


class AutotaperPreTrainedModel(PreTrainedModel):
    config_class = AutotaperConfig
    base_model_prefix = "autotaper"
    _no_split_modules = ["LlamaBlock", "GPTBlock"]
    _supports_sdpa = True

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, (nn.LayerNorm, RMSNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)


class AutotaperForCausalLM(AutotaperPreTrainedModel, GenerationMixin):
    def __init__(self, config):
        super().__init__(config)
        D, n = config.hidden_size, config.num_hidden_layers
        if config.family == "gpt":
            self.wte = nn.Embedding(config.vocab_size, D)
            self.wpe = nn.Embedding(config.max_position_embeddings, D)
            self.h = nn.ModuleList(GPTBlock(config, i) for i in range(n))
            self.ln_f = nn.LayerNorm(D, eps=config.norm_eps)
            embed = "wte"
        elif config.family in ("llama", "gated"):
            self.embed = nn.Embedding(config.vocab_size, D)
            self.layers = nn.ModuleList(LlamaBlock(config, i) for i in range(n))
            self.norm = RMSNorm(D, config.norm_eps)
            embed = "embed"
        else:
            raise ValueError(f"family must be llama, gated or gpt, got {config.family!r}")
        self.lm_head = nn.Linear(D, config.vocab_size, bias=False)
        self._embed_name = embed
        if config.tie_word_embeddings:
            self._tied_weights_keys = {"lm_head.weight": f"{embed}.weight"}
        self.post_init()

    def get_input_embeddings(self):
        return getattr(self, self._embed_name)

    def set_input_embeddings(self, value):
        setattr(self, self._embed_name, value)

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        B, T = input_ids.shape
        if T > self.config.max_position_embeddings:
            raise ValueError(f"sequence length {T} exceeds max_position_embeddings "
                             f"{self.config.max_position_embeddings}")
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("padded inputs are not supported: pass unpadded sequences of one length")
        if self.config.family == "gpt":
            x = self.wte(input_ids) + self.wpe(torch.arange(T, device=input_ids.device))
            for block in self.h:
                x = block(x)
            logits = self.lm_head(self.ln_f(x))
        else:
            # computed per call (T x head_dim/2, negligible): no buffer to rebuild after meta-device loading
            cos, sin = (t.to(input_ids.device) for t in rope_tables(self.config.head_dim, T, self.config.rope_theta))
            x = self.embed(input_ids)
            for block in self.layers:
                x = block(x, cos, sin)
            logits = self.lm_head(self.norm(x))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        return {"input_ids": input_ids, "attention_mask": attention_mask}
