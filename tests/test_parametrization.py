"""Parametrizations (sp, mup, completep) and the lr taper: exact at the base shape, the
per-matrix formulas read back from the built model and optimizer, and refused bad values."""

import dataclasses
import json
import math
import subprocess
import sys

import pytest
import torch

from autotaper.budget import solve
from autotaper.cost import count
from autotaper.data import load_data
from autotaper.models import build_model
from autotaper.spec import ModelSpec
from autotaper.train import Callback, TrainConfig, train
from autotaper.train.trainer import _optimizer
from tests.helpers import micro_space, write_corpus

TAPERS = {  # one spec per tapered dimension, on two families
    "ffn": lambda: solve(ModelSpec.from_name("tiny"), "ffn:cosine:1.5:0.5"),
    "heads": lambda: solve(ModelSpec.from_name("tiny", family="gpt", n_kv_heads=4), "heads:linear:1.5:0.5"),
    "embed": lambda: solve(ModelSpec.from_name("tiny", family="gpt", n_kv_heads=4), "embed:linear:1.5:0.5",
                           tolerance=0.02),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_data(str(write_corpus(tmp_path_factory.mktemp("corpus"))))


class _Losses(Callback):
    def __init__(self):
        self.losses = []

    def on_step(self, step, metrics):
        self.losses.append(metrics["loss"])


def _losses(spec, data, steps=6):
    rec = _Losses()
    r = train(spec, data, TrainConfig(steps=steps, batch_size=4, precision="fp32", log_every=1), callbacks=[rec],
              quiet=True)
    return rec.losses, r.val_loss


@pytest.mark.parametrize("family", ["llama", "gpt"])
def test_at_the_base_shape_every_parametrization_trains_as_sp_step_for_step(data, family):
    base = ModelSpec.from_name("tiny", family=family, n_kv_heads=4 if family == "gpt" else 2)
    sp = _losses(base, data)
    for name in ("mup", "completep"):
        got = _losses(dataclasses.replace(base, parametrization=name, depth_alpha=0.5), data)
        assert got == sp, name  # bit for bit: every multiplier is 1 and skipped


def _group_of(optimizer, param):
    return next(g for g in optimizer.param_groups if any(p is param for p in g["params"]))


def _expected_m(name: str, spec: ModelSpec) -> float:
    """A hidden matrix's fan-in over the same matrix's fan-in in the uniform model, from the spec alone."""
    layer = int(name.split(".")[1])
    hd = spec.head_dim
    if name.endswith(("down_proj.weight", "mlp.c_proj.weight")):
        return spec.layer_ffn[layer] / spec.ffn_width
    if name.endswith(("o_proj.weight", "attn.c_proj.weight")):
        return spec.layer_heads[layer] * hd / (spec.n_heads * hd)
    return spec.layer_d_model[layer] / spec.d_model  # everything else in a block reads the stream


@pytest.mark.parametrize("dim", list(TAPERS))
def test_each_matrix_init_lr_eps_and_weight_decay_follow_its_own_fan_in(dim):
    tapered = TAPERS[dim]()
    spec = dataclasses.replace(tapered, parametrization="mup")
    sp_model, model = build_model(tapered, seed=3), build_model(spec, seed=3)
    config = TrainConfig(lr=1e-3, eps=1e-8, weight_decay=0.1)
    opt = _optimizer(model, config, torch.device("cpu"))
    sp_w = dict(sp_model.named_parameters())
    moved = 0
    for name, p in model.named_parameters():
        group = _group_of(opt, p)
        in_block = name.split(".")[0] in ("h", "layers")
        if p.ndim == 2 and in_block:
            m = _expected_m(name, spec)
            moved += m != 1
            # the same draw (seed and name) scaled by 1 / sqrt(m)
            torch.testing.assert_close(p, sp_w[name] / math.sqrt(m), rtol=1e-6, atol=0)
            assert group["lr_scale"] == pytest.approx(1 / m) and group["lr"] == pytest.approx(1e-3 / m)
            assert group["eps"] == pytest.approx(1e-8 / m)
            assert group["weight_decay"] == pytest.approx(0.1 * m)
        elif name.startswith("lm_head"):
            m = spec.d_stream / spec.d_model
            assert group["lr_scale"] == 1 and group["eps"] == pytest.approx(1e-8 / m)
            assert model.logit_scale == pytest.approx(1 / m)
        else:  # embeddings, norms and biases keep the base recipe
            torch.testing.assert_close(p, sp_w[name], rtol=0, atol=0)
            assert group["lr_scale"] == 1 and group["eps"] == 1e-8
            assert group["weight_decay"] == (0.1 if p.ndim == 2 else 0.0)
    assert moved >= spec.n_layers  # the taper really moved fan-ins
    if dim == "embed":
        assert model.logit_scale < 1  # the stream is wider than d_model: the head's fan-in grew


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_completep_scales_branches_lr_and_eps_with_depth(alpha):
    base = ModelSpec.from_name("tiny")
    spec = dataclasses.replace(base, parametrization="completep", depth_alpha=alpha, base_n_layers=2,
                               base_d_model=16)  # 2x deeper and 2x wider than the base
    model = build_model(spec, seed=0)
    opt = _optimizer(model, TrainConfig(lr=1e-3), torch.device("cpu"))
    m_l, m_n = 2.0, 2.0
    assert all(b.residual_scale == pytest.approx(m_l ** -alpha) for b in model.layers)
    assert model.logit_scale == pytest.approx(1 / m_n)
    q = model.layers[0].attn.q_proj.weight
    g = _group_of(opt, q)
    assert g["lr_scale"] == pytest.approx(m_l ** (alpha - 1) / m_n)
    assert g["eps"] == pytest.approx(1e-8 * m_l ** -alpha / m_n)
    assert g["lr_scale"] * g["weight_decay"] == pytest.approx(0.1)  # lr x wd per step as at the base
    norm = _group_of(opt, model.layers[0].input_norm.weight)
    assert norm["lr_scale"] == pytest.approx(m_l ** (alpha - 1)) and norm["weight_decay"] == 0
    # residual projections start at the base depth's std 0.02 / sqrt(2 x 2), / sqrt(m_n) for width
    o = model.layers[0].attn.o_proj.weight
    sp_o = build_model(dataclasses.replace(base, n_layers=4), seed=0).layers[0].attn.o_proj.weight
    torch.testing.assert_close(o, sp_o * math.sqrt(2 * 4) / math.sqrt(2 * 2) / math.sqrt(m_n), rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", ["sp", "mup", "completep"])
def test_counts_do_not_depend_on_the_parametrization(name):
    for make in TAPERS.values():
        tapered = make()
        spec = dataclasses.replace(tapered, parametrization=name, base_n_layers=2)
        assert count(spec) == count(tapered)
        assert sum(p.numel() for p in build_model(spec, seed=None).parameters()) == count(tapered).params


def test_a_spec_file_round_trips_the_parametrization_and_layer_lr(tmp_path):
    spec = solve(dataclasses.replace(ModelSpec.from_name("tiny"), parametrization="completep", depth_alpha=0.5,
                                     base_d_model=16, base_n_layers=2), "ffn:cosine:1.5:0.5+lr:linear:2:0.5")
    loaded = ModelSpec.load(spec.save(tmp_path / "s.json"))
    assert loaded == spec
    assert (loaded.parametrization, loaded.depth_alpha, loaded.base_d_model, loaded.base_n_layers) == \
        ("completep", 0.5, 16, 2)
    assert loaded.layer_lr == (2.0, 1.5, 1.0, 0.5)
    # a spec file of the previous release (no such fields) is sp with every layer at the global LR
    old = {k: v for k, v in spec.to_dict().items()
           if k not in ("parametrization", "depth_alpha", "base_d_model", "base_n_layers", "layer_lr")}
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert ModelSpec.load(tmp_path / "old.json").parametrization == "sp"


def test_an_lr_taper_changes_only_learning_rates():
    base = ModelSpec.from_name("tiny")
    widths = solve(base, "ffn:cosine:1.5:0.5")
    both = solve(base, "ffn:cosine:1.5:0.5+lr:linear:2:0.5")
    assert both.taper == "ffn:cosine:1.5:0.5+lr:linear:2:0.5"
    assert dataclasses.replace(both, taper="", layer_lr=None) == dataclasses.replace(widths, taper="")
    assert count(both) == count(widths)
    lr_only = solve(base, "lr:linear:2:0.5")
    assert dataclasses.replace(lr_only, taper="", layer_lr=None) == dataclasses.replace(base, taper="")
    a, b = build_model(widths, seed=1), build_model(both, seed=1)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb and torch.equal(pa, pb)  # the same init
    opt_a = _optimizer(a, TrainConfig(), torch.device("cpu"))
    opt_b = _optimizer(b, TrainConfig(), torch.device("cpu"))
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        ga, gb = _group_of(opt_a, pa), _group_of(opt_b, pb)
        layer = int(name.split(".")[1]) if name.startswith("layers.") else None
        want = both.layer_lr[layer] if layer is not None else 1.0
        assert gb["lr_scale"] == pytest.approx(ga["lr_scale"] * want), name
        assert (gb["eps"], gb["weight_decay"]) == (ga["eps"], ga["weight_decay"]), name


def test_a_width_aware_run_exports_to_hugging_face_with_equal_logits(tmp_path, data):
    pytest.importorskip("transformers")
    from transformers import AutoModelForCausalLM

    from autotaper.export import export_hf

    # completep off its base depth and width, tied embeddings: both multipliers are folded
    spec = solve(dataclasses.replace(ModelSpec.from_name("tiny", family="gpt", n_kv_heads=4, tie_embeddings=True),
                                     parametrization="completep", base_n_layers=2, base_d_model=16),
                 "ffn:cosine:1.5:0.5")
    run = tmp_path / "run"
    train(spec, data, TrainConfig(steps=3, batch_size=2, precision="fp32"), out_dir=run, quiet=True)
    result = export_hf(run, tmp_path / "hf")
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", trust_remote_code=True).eval()
    model = build_model(spec, seed=None)
    from autotaper.train.checkpoint import latest_checkpoint, load_checkpoint

    load_checkpoint(latest_checkpoint(run), model=model, optimizer=None, device=torch.device("cpu"))
    assert model.logit_scale != 1 and model.h[0].residual_scale != 1
    idx = torch.randint(0, spec.vocab_size, (2, spec.context_length), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, model.eval()(idx), rtol=1e-5, atol=1e-5)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "autotaper", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd)


@pytest.mark.parametrize("args, needle", [
    (["--param", "mupp"], "parametrization: unknown name 'mupp'"),
    (["--param", "completep", "--depth-alpha", "0.3"], "--depth-alpha: must be in [0.5, 1], got '0.3'"),
    (["--param", "completep", "--depth-alpha", "nan"], "--depth-alpha"),
    (["--taper", "lr:linear:0:1"], "lr.start must be a ratio > 0, got 0"),
    (["--taper", "lr:linear:1:-2"], "lr.end must be a ratio > 0, got -2"),
    (["--taper", "lr:linear:1:2:m=8"], "no rounding multiple"),
])
def test_bad_parametrization_values_are_refused_with_the_field_named(args, needle):
    base = ["plan", "--preset", "tiny", "--taper", "ffn:cosine:1.5:0.5"]
    if "--taper" in args:
        base = base[:3]
    r = _cli(*base, *args)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_bad_parametrization_in_a_space_or_spec_file_is_refused(tmp_path):
    import yaml

    corpus = write_corpus(tmp_path / "corpus")
    space = micro_space(str(corpus), proxy={"parametrization": "ntk"})
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(space))
    r = _cli("search", "--space", str(tmp_path / "s.yaml"), "--storage", f"sqlite:///{tmp_path}/s.db", cwd=tmp_path)
    assert r.returncode == 2 and "proxy.parametrization: unknown name 'ntk'" in r.stderr, r.stderr
    assert not (tmp_path / "s.db").exists()
    bad = ModelSpec.from_name("tiny").to_dict() | {"depth_alpha": 2}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    r = _cli("train", "--spec", str(tmp_path / "bad.json"), "--steps", "1")
    assert r.returncode == 2 and "depth_alpha: must be in [0.5, 1], got 2" in r.stderr, r.stderr


def test_a_study_made_under_one_parametrization_refuses_a_worker_with_another(tmp_path):
    import yaml

    from autotaper.search import load_space
    from autotaper.search.study import open_study

    corpus = write_corpus(tmp_path / "corpus")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(micro_space(str(corpus), proxy={"parametrization": "mup"})))
    storage = f"sqlite:///{tmp_path}/s.db"
    open_study(load_space(str(path)), storage=storage, study_name="s")
    open_study(load_space(str(path)), storage=storage, study_name="s")  # the same recipe opens it again
    other = load_space(str(path), overrides={"parametrization": "sp"})
    with pytest.raises(ValueError, match=r"different space or proxy \(proxy.parametrization: stored 'mup', given 'sp'"):
        open_study(other, storage=storage, study_name="s")


def test_compare_prints_each_effect_and_their_paired_difference(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    r = _cli("compare", "--preset", "tiny", "--taper", "ffn:cosine:1.5:0.5", "--param", "sp,mup", "--seeds", "3",
             "--steps", "6", "--batch-size", "4", "--precision", "fp32", "--data", str(corpus), "--quiet", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    sp, mup = out["by_parametrization"]["sp"], out["by_parametrization"]["mup"]
    assert sp["baselines"] == mup["baselines"]  # one uniform per seed serves both
    assert sp["values"] != mup["values"]  # the taper itself trains differently
    diff = [a - b for a, b in zip(sp["deltas"], mup["deltas"])]
    assert out["differences"]["sp-mup"]["mean"] == pytest.approx(sum(diff) / 3)
    assert out["differences"]["sp-mup"]["n"] == 3 and out["differences"]["sp-mup"]["ci95"] is not None
    assert "under sp" in r.stderr and "under mup" in r.stderr and "sp - mup" in r.stderr
    assert "per-layer learning rate" in r.stderr
    assert r.stderr.count("uniform") >= 6


def test_a_confirmation_can_train_longer_than_the_search(tmp_path):
    import optuna
    import yaml

    from autotaper.search import load_space, run_search

    corpus = write_corpus(tmp_path / "corpus")
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(micro_space(str(corpus), name="long", search={
        "n_trials": 3, "confirm": {"top_k": 1, "seeds": 2, "steps": 20, "decompose": False}})))
    summary = run_search(load_space(str(path)), storage=f"sqlite:///{tmp_path}/long.db", quiet=True)
    conf = summary.confirmation
    assert conf["steps"] == 20 and conf["search_steps"] == 10
    assert "confirmed at 20 steps a run, 2x the search's 10" in conf["text"]
    attrs = optuna.load_study(study_name="long", storage=summary.storage).user_attrs
    long_base = {k: v for k, v in attrs.items() if k.startswith("baseline/") and k.count("/") == 2}
    assert sorted(k.rsplit("/", 1)[1] for k in long_base) == ["seed1000", "seed1001"]
    assert all(v["steps"] == 20 for v in long_base.values())  # uniform trained as long as the candidates
    assert attrs["baseline/seed0"]["steps"] == 10  # the search's own baselines are untouched
    runs = [v for k, v in attrs.items() if k.startswith("run/") and k.endswith(("seed1000", "seed1001"))]
    assert runs and all(v["steps"] == 20 for v in runs)


@pytest.mark.parametrize("confirm, needle", [
    ({"steps": 0}, "search.confirm.steps: must be a positive integer, got 0"),
    ({"tokens_per_param": -1}, "search.confirm.tokens_per_param: must be a number in (0, 1e6], got -1"),
    ({"steps": 10, "tokens_per_param": 2}, "give steps or tokens_per_param, not both"),
    ({"decompose": "yes"}, "search.confirm.decompose: must be true or false, got 'yes'"),
])
def test_bad_confirmation_lengths_are_refused(tmp_path, confirm, needle):
    from autotaper.search.space import parse_space

    space = micro_space("corpus", search={"confirm": {"top_k": 1, "seeds": 2, **confirm}})
    with pytest.raises(ValueError) as e:
        parse_space(space)
    assert needle in str(e.value)


def test_a_search_verdict_says_its_parametrization_and_decomposes_the_effect(tmp_path):
    import yaml

    from autotaper.search import load_space, run_search
    from autotaper.search.results import leaderboard, to_table

    corpus = write_corpus(tmp_path / "corpus")
    path = tmp_path / "dec.yaml"
    path.write_text(yaml.safe_dump(micro_space(str(corpus), name="dec", search={
        "n_trials": 3, "confirm": {"top_k": 1, "seeds": 2}})))
    space = load_space(str(path), overrides={"parametrization": "mup"})
    summary = run_search(space, storage=f"sqlite:///{tmp_path}/dec.db", quiet=True)
    conf = summary.confirmation
    assert conf["parametrization"] == "mup" and conf["text"].startswith("under mup: ")
    dec = conf["decomposition"]
    assert dec["other"] == "sp" and len(dec["deltas"]["sp"]) == len(dec["deltas"]["mup"]) == 2
    chosen = next(c for c in conf["candidates"] if c["taper"] == dec["taper"])
    assert dec["deltas"]["mup"] == chosen["deltas"]  # the study's own confirmation runs
    lr_part = [a - b for a, b in zip(dec["deltas"]["sp"], dec["deltas"]["mup"])]
    assert dec["per_layer_lr"]["mean"] == pytest.approx(sum(lr_part) / 2)
    assert "per-layer learning rate and init (sp - mup, same seeds)" in conf["text"]
    board = leaderboard(summary.storage, "dec")
    assert board["recipe"]["parametrization"] == "mup"
    assert "parametrization mup: every verdict below holds under it" in to_table(board)
