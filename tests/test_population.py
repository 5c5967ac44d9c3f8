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


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from autotaper.data import load_data

    return load_data(str(write_corpus(tmp_path_factory.mktemp("pop") / "corpus")))


def _configs(seeds, **changes):
    return [TrainConfig(steps=20, batch_size=8, seed=s, precision="fp32", eval_every=10, **changes) for s in seeds]


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
    with pytest.raises(InputError, match=r"seeds must differ, got \[3, 3\]"):
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
