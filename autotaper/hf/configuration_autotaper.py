"""Configuration of a tapered transformer exported by autotaper (https://github.com/autotaper).

Per-layer widths follow the convention of DeciLM-7B (`num_key_value_heads_per_layer`) and
OpenELM (per-layer head counts): one explicit integer per layer, not multipliers, because
autotaper solves every width exactly to a parameter budget and rounding would break it.

    hidden_size                    width of the residual stream (the embedding)
    hidden_size_per_layer          channels of the stream layer l reads and writes (its first d_l)
    num_attention_heads_per_layer  query heads of layer l, each head_dim wide
    num_key_value_heads_per_layer  key/value heads of layer l
    intermediate_size_per_layer    MLP hidden width of layer l
    family                         "llama" (SwiGLU, RMSNorm, RoPE), "gated" (llama with a
                                   sigmoid gate on the attention output) or "gpt" (GPT-2)
"""

from transformers import PretrainedConfig


class AutotaperConfig(PretrainedConfig):
    model_type = "autotaper"

    def __init__(self, family="llama", vocab_size=256, hidden_size=32, num_hidden_layers=2, head_dim=8,
                 hidden_size_per_layer=None, num_attention_heads_per_layer=None,
                 num_key_value_heads_per_layer=None, intermediate_size_per_layer=None,
                 max_position_embeddings=32, rope_theta=10000.0, norm_eps=1e-5, tie_word_embeddings=False,
                 taper="uniform", **kwargs):
        n = num_hidden_layers
        self.family = family
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = n
        self.head_dim = head_dim
        self.hidden_size_per_layer = list(hidden_size_per_layer or [hidden_size] * n)
        self.num_attention_heads_per_layer = list(num_attention_heads_per_layer or [hidden_size // head_dim] * n)
        self.num_key_value_heads_per_layer = list(num_key_value_heads_per_layer or self.num_attention_heads_per_layer)
        self.intermediate_size_per_layer = list(intermediate_size_per_layer or [4 * hidden_size] * n)
        for name in ("hidden_size_per_layer", "num_attention_heads_per_layer", "num_key_value_heads_per_layer",
                     "intermediate_size_per_layer"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {n} layers")
        # The widest layer's values, for tools that read the uniform names.
        self.num_attention_heads = max(self.num_attention_heads_per_layer)
        self.num_key_value_heads = max(self.num_key_value_heads_per_layer)
        self.intermediate_size = max(self.intermediate_size_per_layer)
        self.max_position_embeddings = max_position_embeddings
        self.rope_theta = rope_theta
        self.norm_eps = norm_eps
        self.taper = taper
        kwargs.setdefault("use_cache", False)  # no KV cache: generation recomputes the prefix
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
