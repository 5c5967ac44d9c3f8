import dataclasses

import pytest

from autotaper.spec import PRESETS, ModelSpec


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip_through_json_and_yaml(name):
    spec = ModelSpec.from_name(name)
    assert ModelSpec.from_json(spec.to_json()) == spec
    assert ModelSpec.from_yaml(spec.to_yaml()) == spec


def test_defaults_are_derived():
    spec = ModelSpec(d_model=64, n_heads=4, n_layers=3, ffn_width=128)
    assert spec.head_dim == 16 and spec.n_kv_heads == 4
    assert spec.layer_ffn == (128,) * 3 and spec.layer_d_model == (64,) * 3
    assert spec.d_stream == 64


@pytest.mark.parametrize("overrides, field", [
    (dict(d_model=0), "d_model"),
    (dict(n_layers=-2), "n_layers"),
    (dict(n_kv_heads=3), "n_kv_heads"),
    (dict(family="mamba"), "unknown family 'mamba'"),
    (dict(layer_ffn=[64, 64]), "layer_ffn must have n_layers=4"),
    (dict(layer_heads=[4, 4, 4, 3]), r"layer_heads\[3\]"),
    (dict(layer_d_model=[32, 32, 0, 32]), r"layer_d_model\[2\]"),
    (dict(head_dim=7), "head_dim must be even"),
    (dict(vocab_size=2.5), "vocab_size"),
])
def test_bad_specs_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        ModelSpec.from_name("tiny", **overrides)


def test_unknown_preset_and_fields():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        ModelSpec.from_name("huge")
    with pytest.raises(ValueError, match="unknown model spec field"):
        ModelSpec.from_dict({**ModelSpec.from_name("tiny").to_dict(), "colour": "red"})


def test_uniform_resets_per_layer_lists():
    spec = ModelSpec.from_name("tiny", layer_ffn=[96, 80, 48, 32], taper="x")
    assert spec.uniform() == ModelSpec.from_name("tiny")
    assert isinstance(spec.layer_ffn, tuple) and hash(spec)  # lists are frozen: specs are hashable keys
    with pytest.raises(ValueError, match="layer_ffn"):
        dataclasses.replace(spec, layer_ffn=(96, 80, 48))  # replace validates like the constructor
