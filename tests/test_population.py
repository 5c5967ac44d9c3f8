"""Populations (`autotaper.train.population`): K seeds of one spec trained in lockstep equal K
single runs, a diverging member stops alone, and settings members cannot share are refused."""

import dataclasses

import pytest

import autotaper as at
from autotaper.errors import InputError
from autotaper.train import TrainConfig, train
from autotaper.train.population import check_population, train_population
from tests.helpers import write_corpus

# fp32 on CPU: a member's batched matmuls may sum in another order than a single run's, and the
# difference compounds over steps; measured up to 3e-6 after 20 steps on tiny
# (benchmarks/population_throughput.py), so 1e-4 on the validation loss.
FP32_TOLERANCE = 1e-4
# bf16 autocast rounds every matmul's inputs to 8 bits of mantissa, so the summation order
# matters more: measured up to 3.7e-4 after 20 steps on tiny, so 2e-3.
BF16_TOLERANCE = 2e-3


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from autotaper.data import load_data

    return load_data(str(write_corpus(tmp_path_factory.mktemp("pop") / "corpus")))


def _configs(seeds, **changes):
    changes = {"precision": "fp32", **changes}
    return [TrainConfig(steps=20, batch_size=8, seed=s, eval_every=10, **changes) for s in seeds]


@pytest.mark.parametrize("param,taper", [("sp", "ffn:cosine:1.5:0.5"), ("mup", "heads:linear:1.5:0.5"),
                                         ("sp", "uniform")])
def test_a_population_equals_its_members_trained_one_by_one(data, param, taper):
    spec = at.solve(dataclasses.replace(at.ModelSpec.from_name("tiny"), parametrization=param), taper)
    configs = _configs([0, 1, 5])
    pop = train_population(spec, data, configs)
    for member, config in zip(pop, configs):
        alone = train(spec, data, config, quiet=True)
        assert member.status == alone.status == "complete"
        assert member.data_fingerprint == alone.data_fingerprint  # the same batches, in the same order
        assert [h["step"] for h in member.history] == [h["step"] for h in alone.history] == [10, 20]
        for a, b in zip(member.history, alone.history):
            assert a["val_loss"] == pytest.approx(b["val_loss"], abs=FP32_TOLERANCE)
            assert a["val_bpb"] == pytest.approx(b["val_bpb"], abs=FP32_TOLERANCE)
        assert member.train_loss == pytest.approx(alone.train_loss, abs=FP32_TOLERANCE)
    assert len({m.val_loss for m in pop}) == 3  # three seeds, three different runs


def test_a_bf16_population_equals_its_members_within_the_bf16_tolerance(data):
    """bf16 autocast (on a CPU without native bf16 too): uniform, an MLP taper and a heads taper,
    padded, each equal to its single run within BF16_TOLERANCE at every evaluation."""
    base = at.ModelSpec.from_name("tiny")
    specs = [at.solve(base, t) for t in ("uniform", "ffn:cosine:1.5:0.5", "heads:linear:1.5:0.5")]
    configs = _configs([0, 1, 5], precision="bf16")
    for member, spec, config in zip(train_population(specs, data, configs), specs, configs):
        alone = train(spec, data, config, quiet=True)
        assert member.precision == alone.precision == "bf16"
        for a, b in zip(member.history, alone.history):
            assert a["val_loss"] == pytest.approx(b["val_loss"], abs=BF16_TOLERANCE)


def test_a_diverging_member_stops_alone_and_the_others_train_on_unchanged(data):
    """The divergence limit is set between the members' first losses (their inits differ), so
    some members go over it at step 0: those stop there, as their single runs do; the rest
    train exactly as in a population where nobody stops."""
    spec = at.ModelSpec.from_name("tiny")
    seeds = [0, 1, 2, 3]
    one_step = [dataclasses.replace(c, steps=1, eval_every=1) for c in _configs(seeds)]
    first = [r.train_loss for r in train_population(spec, data, one_step)]  # each member's step-0 loss
    limit = sorted(first)[1] + (sorted(first)[2] - sorted(first)[1]) / 2  # two above, two below
    free = train_population(spec, data, _configs(seeds))
    capped = train_population(spec, data, _configs(seeds, diverge_loss=limit))
    for seed, loss, a, b in zip(seeds, first, capped, free):
        if loss > limit:
            assert a.status == "diverged" and a.steps == 0 and a.reason.startswith("loss ")
            alone = train(spec, data, _configs([seed], diverge_loss=limit)[0], quiet=True)
            assert alone.status == "diverged" and alone.steps == 0
        else:
            assert a.status == "complete" and a.val_loss == b.val_loss and a.history == b.history
    assert sorted(r.status for r in capped) == ["complete", "complete", "diverged", "diverged"]


def test_settings_members_cannot_share_are_refused_naming_the_field():
    with pytest.raises(InputError, match="member 1 lr 0.001 differs from member 0's 0.003"):
        check_population([TrainConfig(seed=0), TrainConfig(seed=1, lr=1e-3)])
    with pytest.raises(InputError, match=r"repeats a spec and seed \(seeds \[3, 3\]\)"):
        check_population([TrainConfig(seed=3), TrainConfig(seed=3)])
    with pytest.raises(InputError, match="at least one member"):
        check_population([])
    with pytest.raises(InputError, match="257 members, over the 256"):
        check_population([TrainConfig(seed=s) for s in range(257)])
    with pytest.raises(InputError, match="grad_accum 2"):
        check_population([TrainConfig(seed=0, batch_size=16, grad_accum=2)])


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_a_population_on_cuda_equals_its_members_trained_one_by_one(data):
    """The GPU path (benchmarks/gpu_check.sh runs it): fp32 matmuls on CUDA, same bound."""
    spec = at.solve(at.ModelSpec.from_name("tiny"), "ffn:cosine:1.5:0.5")
    configs = [dataclasses.replace(c, device="cuda") for c in _configs([0, 1])]
    for member, config in zip(train_population(spec, data, configs), configs):
        alone = train(spec, data, config, quiet=True)
        assert member.device.startswith("cuda") and member.val_loss == pytest.approx(alone.val_loss,
                                                                                     abs=FP32_TOLERANCE)


def test_candidates_of_different_mlp_widths_share_a_population_exactly(data):
    """Candidates x seeds (the paired design) in one population: each member equals its single
    run, and every padded weight is still exactly zero after training."""
    import torch

    base = at.ModelSpec.from_name("tiny")
    tapers = ["uniform", "ffn:cosine:1.5:0.5", "ffn:linear:0.6:1.4"]
    specs = [at.solve(base, t) for t in tapers for _ in (0, 1)]
    configs = [c for _ in tapers for c in _configs([0, 1])]
    seen: dict = {}
    pop = train_population(specs, data, configs, inspect=seen)
    for member, spec, config in zip(pop, specs, configs):
        alone = train(spec, data, config, quiet=True)
        assert member.params == alone.params and member.data_fingerprint == alone.data_fingerprint
        assert member.val_loss == pytest.approx(alone.val_loss, abs=FP32_TOLERANCE)
    assert seen["masks"], "the widths differ: some weights are padding"
    for name, mask in seen["masks"].items():
        padded = seen["params"][name][mask == 0]
        assert padded.numel() > 0 and torch.count_nonzero(padded) == 0, name
    uniform, cosine = pop[0], pop[2]  # seed 0 of each: paired, so they differ by the taper alone
    assert uniform.data_fingerprint == cosine.data_fingerprint and uniform.val_loss != cosine.val_loss


def test_candidates_of_different_heads_share_a_population_exactly(data):
    """Heads tapers (and an MLP taper) padded to each layer's most heads: each member equals its
    single run, and the padded heads' weights are exactly zero after training."""
    import torch

    base = at.ModelSpec.from_name("tiny")
    tapers = ["uniform", "heads:linear:1.5:0.5", "heads:cosine:0.5:1.5", "ffn:cosine:1.5:0.5"]
    specs = [at.solve(base, t) for t in tapers]
    assert len({s.layer_heads for s in specs}) == 3
    configs = _configs([0, 1, 0, 1])
    seen: dict = {}
    for member, spec, config in zip(train_population(specs, data, configs, inspect=seen), specs, configs):
        alone = train(spec, data, config, quiet=True)
        assert member.params == alone.params
        assert member.val_loss == pytest.approx(alone.val_loss, abs=FP32_TOLERANCE)
    padded_heads = [n for n in seen["masks"] if "attn" in n]
    assert padded_heads, "the heads differ: some attention weights are padding"
    for name in padded_heads:
        assert torch.count_nonzero(seen["params"][name][seen["masks"][name] == 0]) == 0, name


def test_a_family_whose_layout_does_not_pad_as_a_prefix_is_refused(data):
    """GPT fuses Q, K and V in one projection: a member with fewer heads than the template has its
    K rows where the template's Q rows are, so its padded forward pass is not its own."""
    base = dataclasses.replace(at.ModelSpec.from_name("tiny"), family="gpt")
    specs = [at.solve(base, "uniform"), at.solve(base, "heads:linear:1.5:0.5")]
    with pytest.raises(InputError, match="family 'gpt' does not pad member 0's widths exactly"):
        train_population(specs, data, _configs([0, 1]))
    same = train_population([at.solve(base, "ffn:linear:1.5:0.5"), at.solve(base, "ffn:linear:0.5:1.5")], data,
                            _configs([0, 1]))  # its MLP pads as a prefix
    assert [r.status for r in same] == ["complete", "complete"]


def test_padding_waste_and_greedy_grouping_by_width():
    from autotaper.train.population import group_by_width, padding_waste

    base = at.ModelSpec.from_name("proxy-xs")
    specs = [at.solve(base, f"ffn:cosine:{1 + s:.2f}:{1 - s:.2f}") for s in (0.6, -0.6, 0.5, -0.5, 0.0, 0.1)]
    assert padding_waste([specs[0]] * 3) == 0.0
    groups = group_by_width(specs, 2)
    assert sorted(i for g in groups for i in g) == list(range(6)) and all(len(g) == 2 for g in groups)
    grouped = sum(padding_waste([specs[i] for i in g]) for g in groups)
    in_order = sum(padding_waste(specs[i:i + 2]) for i in range(0, 6, 2))
    assert grouped < in_order  # similar widths together pad less than the order given
    with pytest.raises(InputError, match="population size must be >= 1, got 0"):
        group_by_width(specs, 0)


def test_members_that_differ_in_more_than_mlp_widths_and_heads_are_refused():
    base = at.ModelSpec.from_name("tiny")
    with pytest.raises(InputError, match="member 1 spec layer_d_model"):
        check_population(_configs([0, 1]), [at.solve(base, "ffn:cosine:1.5:0.5"),
                                            dataclasses.replace(base, layer_d_model=(32, 32, 32, 16), taper="x")])
    regrouped = dataclasses.replace(base, layer_heads=(4, 4, 4, 4), layer_kv_heads=(4, 2, 2, 2), taper="x")
    with pytest.raises(InputError, match="member 1 layer 0 has 4 heads per 4 KV heads, member 0 4 per 2"):
        check_population(_configs([0, 1]), [base, regrouped])
    with pytest.raises(InputError, match="repeats a spec and seed"):
        check_population(_configs([0, 0]), [base, base])
    with pytest.raises(InputError, match="2 specs for 3 configs"):
        check_population(_configs([0, 1, 2]), [base, base])


def test_a_search_trains_in_populations_with_the_same_numbers(tmp_path):
    """`search.population`: the racing seeds' baselines, each candidate's first seeds and the
    confirmation's candidates x fresh seeds (uniform's too) train as populations; every run
    lands under its usual key, and the trials' and the confirmation's per-seed deltas equal
    those of one-at-a-time training within the tolerance."""
    import optuna

    from autotaper.search import parse_space, run_search
    from autotaper.search.storage import open_storage
    from tests.helpers import micro_space

    corpus = str(write_corpus(tmp_path / "corpus"))
    out = {}
    for population in (1, 4):
        space = parse_space(micro_space(corpus, name="conf", search={
            "n_trials": 3, "sampler": "random", "seed": 0, "population": population,
            "confirm": {"top_k": 1, "seeds": 2}}))
        storage = f"sqlite:///{tmp_path}/p{population}.db"
        run_search(space, storage=storage, quiet=True)
        study = optuna.load_study(study_name="conf", storage=open_storage(storage))
        fresh = [v["train_time_s"] for k, v in study.user_attrs.items() if k.startswith(("run/", "baseline/"))]
        trials = [(t.user_attrs.get("taper"), t.user_attrs.get("seed_deltas")) for t in study.trials]
        out[population] = (study.user_attrs["confirmation"],
                           sorted(k for k in study.user_attrs if k.startswith(("run/", "baseline/"))), fresh, trials)
    (one, keys_one, times_one, trials_one), (four, keys_four, times_four, trials_four) = out[1], out[4]
    assert [t for t, _ in trials_one] == [t for t, _ in trials_four]
    for (_, a), (_, b) in zip(trials_one, trials_four):
        assert (a is None and b is None) or a == pytest.approx(b, abs=FP32_TOLERANCE)
    # one at a time, every run has its own training time; a population's members share theirs
    assert len(set(times_one)) == len(times_one) and len(set(times_four)) < len(times_four)
    assert keys_one == keys_four  # the same runs, stored under the same keys
    assert [c["taper"] for c in one["candidates"]] == [c["taper"] for c in four["candidates"]]
    for a, b in zip(one["candidates"], four["candidates"]):
        assert a["deltas"] == pytest.approx(b["deltas"], abs=FP32_TOLERANCE)
    assert one["winner"] == four["winner"]


def test_a_bad_population_setting_is_refused_with_exit_2(tmp_path):
    import subprocess
    import sys

    for command in (["confirm", "--study", "x"], ["search", "--space", "x.yaml"], ["ladder", "--space", "x.yaml"]):
        for bad in ("0", "autox"):
            proc = subprocess.run([sys.executable, "-m", "autotaper", *command, "--population", bad],
                                  capture_output=True, text=True, cwd=tmp_path, timeout=120)
            assert proc.returncode == 2 and "--population" in proc.stderr and repr(bad) in proc.stderr, proc.stderr
            assert "Traceback" not in proc.stderr
    from autotaper.search import parse_space
    from tests.helpers import micro_space

    for bad in (300, 0, "autox", True, 2.5):
        with pytest.raises(InputError, match=f"search.population: must be an integer from 1 to 256 or auto, "
                                             f"got {bad!r}"):
            parse_space(micro_space("corpus", search={"population": bad}))


def test_population_auto_is_one_on_a_cpu_and_fits_the_gpu_on_cuda(tmp_path):
    """`search.population: auto`: 1 on a CPU (a population is no faster on proxy-xs there); on
    CUDA as many members as the memory estimate fits, at most AUTO_MAX."""
    import torch

    from autotaper.data import load_data
    from autotaper.search import parse_space
    from autotaper.search.objective import make_evaluator
    from autotaper.train.population import AUTO_MAX, auto_size
    from tests.helpers import micro_space

    corpus = str(write_corpus(tmp_path / "corpus"))
    space = parse_space(micro_space(corpus, search={"population": "auto"}))
    ev = make_evaluator(space, load_data(corpus), {})
    spec = at.ModelSpec.from_name("proxy-xs")
    assert auto_size(spec, 16, device="cpu") == 1
    if torch.cuda.is_available():
        assert ev.population == auto_size(ev.base, 8) and 1 <= auto_size(spec, 16) <= AUTO_MAX
    else:
        assert ev.population == 1


def test_a_population_too_large_for_memory_is_refused_before_anything_is_built(data, monkeypatch):
    """The estimate single runs are checked with, times K: refused with the sizes, nothing allocated
    (the members would be 440m models: building them would take seconds and gigabytes)."""
    from autotaper import memory

    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 4 * 2**30)  # a 4 GiB machine
    spec = at.ModelSpec.from_name("440m")
    with pytest.raises(InputError, match=r"population: 3 members of 24 x \d+ at batch 8 need about [\d.]+ GiB; cpu has 4.0 GiB"):
        train_population(spec, data, _configs([0, 1, 2]))


def test_a_population_keeps_each_members_run_folder_as_its_single_run_would(data, tmp_path):
    """`out_dirs`: each member's folder is a single run's (spec, metrics, checkpoint, summary):
    a single `train` on it finds the run finished and trains nothing, `load_run` loads the
    member's weights, and the saved AdamW moments are the single run's within the tolerance."""
    import json

    import torch
    from safetensors.torch import load_file

    from autotaper.data.tokens import val_windows
    from autotaper.train.checkpoint import latest_checkpoint, load_run
    from autotaper.train.evaluation import evaluate

    base = at.ModelSpec.from_name("tiny")
    specs = [at.solve(base, "uniform"), at.solve(base, "heads:linear:1.5:0.5")]
    configs = _configs([0, 1], checkpoint_every=10)
    dirs = [tmp_path / "pop" / str(k) for k in range(2)]
    pop = train_population(specs, data, configs, out_dirs=dirs)
    for member, spec, config, d in zip(pop, specs, configs, dirs):
        assert member.run_dir == str(d) and member.resumed_from is None
        again = train(spec, data, config, out_dir=d, quiet=True)  # finished: returned as stored, nothing trained
        assert again.resumed_from == 20 and again.val_loss == member.val_loss
        assert [json.loads(line)["step"] for line in (d / "metrics.jsonl").read_text().splitlines()] == [10, 20]
        _, model, step = load_run(d)
        windows = val_windows(data.val, n=config.eval_batches * 8, context_length=spec.context_length)
        own = evaluate(model, windows, token_bytes=data.token_bytes, batch_size=8, precision="fp32", device="cpu")
        assert step == 20 and own["val_loss"] == pytest.approx(member.val_loss, abs=1e-6)
        alone = train(spec, data, config, out_dir=tmp_path / "alone" / d.name, quiet=True)
        mine = load_file(str(latest_checkpoint(d) / "optimizer.safetensors"))
        theirs = load_file(str(latest_checkpoint(tmp_path / "alone" / d.name) / "optimizer.safetensors"))
        assert mine.keys() == theirs.keys() and len(mine) > 0  # the same parameters, in the same order
        for key in mine:
            assert mine[key].shape == theirs[key].shape, key
            assert torch.allclose(mine[key], theirs[key], rtol=1e-2, atol=1e-6), key
        assert alone.val_loss == pytest.approx(member.val_loss, abs=FP32_TOLERANCE)


def test_a_population_resumes_its_members_from_their_checkpoints(data, tmp_path):
    """Runs stopped at step 10 (their checkpoints single runs' own) resume together as one
    population and end where uninterrupted runs end; members standing at different steps are
    refused, and a folder of another run is refused naming what differs."""
    from autotaper.train import Callback

    class StopAt(Callback):
        def on_eval(self, step, metrics):
            return step >= 10

    spec = at.solve(at.ModelSpec.from_name("tiny"), "ffn:cosine:1.5:0.5")
    configs = _configs([0, 1, 2])
    dirs = [tmp_path / f"s{c.seed}" for c in configs]
    for config, d in zip(configs, dirs):
        stopped = train(spec, data, config, out_dir=d, quiet=True, callbacks=[StopAt()])
        assert stopped.status == "stopped" and stopped.steps == 10
    resumed = train_population(spec, data, configs, out_dirs=dirs)
    straight = train_population(spec, data, configs)
    for a, b in zip(resumed, straight):
        assert a.resumed_from == 10 and a.steps == 20 and a.data_fingerprint == b.data_fingerprint
        assert [h["step"] for h in a.history] == [10, 20]
        assert a.val_loss == pytest.approx(b.val_loss, abs=FP32_TOLERANCE)
    train(spec, data, _configs([3])[0], out_dir=tmp_path / "s3", quiet=True, callbacks=[StopAt()])
    with pytest.raises(InputError, match=r"checkpoints stand at steps \[0, 10\]"):
        train_population(spec, data, _configs([3, 4]), out_dirs=[tmp_path / "s3", tmp_path / "s4"])
    with pytest.raises(InputError, match="holds a checkpoint of a different run.*seed"):
        train_population(spec, data, _configs([7]), out_dirs=[tmp_path / "s3"])


def test_compare_with_a_population_keeps_the_same_runs_and_numbers(tmp_path):
    """`autotaper compare --population 6 --out DIR` under sp and mup: the same per-seed values as
    one at a time, every run's folder kept; sp's uniform and taper runs trained as one population
    (one training time), mup's taper seeds as another (its multipliers are its widths')."""
    import json
    import subprocess
    import sys

    corpus = write_corpus(tmp_path / "corpus")
    out = {}
    for population in ("1", "6"):
        r = subprocess.run([sys.executable, "-m", "autotaper", "compare", "--preset", "tiny", "--taper",
                            "ffn:cosine:1.5:0.5", "--param", "sp,mup", "--seeds", "3", "--steps", "6", "--batch-size",
                            "4", "--precision", "fp32", "--data", str(corpus), "--quiet", "--json", "--population",
                            population, "--out", str(tmp_path / f"runs{population}")],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        runs = {p.name: json.loads((p / "summary.json").read_text()) for p in (tmp_path / f"runs{population}").iterdir()}
        out[population] = (json.loads(r.stdout.strip().splitlines()[-1]), runs)
    (one, runs_one), (six, runs_six) = out["1"], out["6"]
    for param in ("sp", "mup"):
        a, b = one["by_parametrization"][param], six["by_parametrization"][param]
        assert a["values"] == pytest.approx(b["values"], abs=FP32_TOLERANCE)
        assert a["baselines"] == pytest.approx(b["baselines"], abs=FP32_TOLERANCE)
    assert runs_one.keys() == runs_six.keys() and len(runs_six) == 9  # uniform, sp taper, mup taper x 3 seeds
    assert len({r["train_time_s"] for r in runs_one.values()}) == 9
    assert len({r["train_time_s"] for r in runs_six.values()}) == 2
    assert all(r["status"] == "complete" and r["run_dir"] for r in runs_six.values())


def test_a_calibration_trains_its_seeds_in_populations_with_the_same_numbers(tmp_path):
    """`autotaper calibrate --population 8 --lr-sweep`: uniform and the paper's cosine on every
    calibration seed as one population, each swept LR's seeds as another; the same SDs and sweep
    within the tolerance, the same runs stored."""
    import json
    import subprocess
    import sys

    import optuna
    import yaml

    from autotaper.search.storage import open_storage
    from tests.helpers import micro_space

    corpus = str(write_corpus(tmp_path / "corpus"))
    (tmp_path / "cal.yaml").write_text(yaml.safe_dump(micro_space(corpus, name="cal")))
    out = {}
    for population in ("1", "8"):
        storage = f"sqlite:///{tmp_path}/c{population}.db"
        r = subprocess.run([sys.executable, "-m", "autotaper", "calibrate", "--space", str(tmp_path / "cal.yaml"),
                            "--storage", storage, "--lr-sweep", "--population", population, "--json", "--quiet"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        attrs = optuna.load_study(study_name="cal", storage=open_storage(storage)).user_attrs
        runs = {k: v["train_time_s"] for k, v in attrs.items() if k.startswith(("run/", "baseline/"))}
        out[population] = (json.loads(r.stdout.strip().splitlines()[-1]), runs)
    (one, runs_one), (eight, runs_eight) = out["1"], out["8"]
    assert runs_one.keys() == runs_eight.keys() and len(runs_one) == 3 * 2 + 3 * 2  # 3 seeds: 2 tapers, 2 more LRs
    assert len(set(runs_eight.values())) == 3  # the seeds' uniform and cosine, then each swept LR's seeds
    for key in ("uniform", "reference"):
        assert one[key] == pytest.approx(eight[key], abs=FP32_TOLERANCE)
    assert [row["lr"] for row in one["lr_sweep"]] == [row["lr"] for row in eight["lr_sweep"]]
    for a, b in zip(one["lr_sweep"], eight["lr_sweep"]):
        assert (a["mean"], a["delta"]) == pytest.approx((b["mean"], b["delta"]), abs=FP32_TOLERANCE)
