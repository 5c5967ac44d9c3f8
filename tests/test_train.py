import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autotaper import ModelSpec, solve
from autotaper.data import load_data
from autotaper.train import Callback, TrainConfig, evaluate, train
from tests.helpers import write_corpus

GOLDEN = Path(__file__).parent / "golden" / "train_tiny.json"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    return load_data(str(write_corpus(root / "corpus")), cache_dir=root / "cache")


def cfg(**kw):
    base = dict(steps=12, batch_size=8, precision="fp32", log_every=1, eval_batches=2, seed=0)
    return TrainConfig(**{**base, **kw})


def losses(run_dir):
    return [r["loss"] for r in map(json.loads, (Path(run_dir) / "metrics.jsonl").read_text().splitlines())
            if "loss" in r]


def test_golden_losses(data, tmp_path):
    """Expected per-step losses of tiny/uniform, seed 0, fp32 (stored once; regenerate with
    `python tests/golden/make_golden.py` only for an intended change of the numerics)."""
    train(ModelSpec.from_name("tiny"), data, cfg(), out_dir=tmp_path, quiet=True)
    got = losses(tmp_path)
    # independent of the stored file: a freshly initialised byte model predicts close to
    # uniformly (loss ln 256), and twelve steps on a repetitive corpus bring it down
    assert got[0] == pytest.approx(math.log(256), rel=0.02) and got[-1] < got[0] - 0.5
    expected = json.loads(GOLDEN.read_text())["losses"]
    assert got == pytest.approx(expected, rel=1e-4)


def test_same_seed_is_bitwise_deterministic(data, tmp_path):
    a = train(ModelSpec.from_name("tiny"), data, cfg(), out_dir=tmp_path / "a", quiet=True)
    b = train(ModelSpec.from_name("tiny"), data, cfg(), out_dir=tmp_path / "b", quiet=True)
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert a.val_loss == b.val_loss and a.data_fingerprint == b.data_fingerprint


def test_tapers_with_one_seed_see_the_same_batches(data):
    base = ModelSpec.from_name("tiny")
    u = train(base, data, cfg(steps=4), quiet=True)
    t = train(solve(base, "ffn:cosine:1.5:0.5"), data, cfg(steps=4), quiet=True)
    other = train(base, data, cfg(steps=4, seed=1), quiet=True)
    assert u.data_fingerprint == t.data_fingerprint != other.data_fingerprint
    assert u.val_loss != t.val_loss


class Crash(Callback):
    def __init__(self, at):
        self.at = at

    def on_step(self, step, metrics):
        if step == self.at:
            raise RuntimeError("simulated crash")


def test_resume_after_a_crash_ends_at_the_same_numbers(data, tmp_path):
    config = cfg(steps=30, checkpoint_every=10, eval_every=10)
    whole = train(ModelSpec.from_name("tiny"), data, config, out_dir=tmp_path / "whole", quiet=True)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(ModelSpec.from_name("tiny"), data, config, out_dir=tmp_path / "cut", quiet=True,
              callbacks=[Crash(at=17)])
    resumed = train(ModelSpec.from_name("tiny"), data, config, out_dir=tmp_path / "cut", quiet=True)
    assert resumed.resumed_from == 10
    assert resumed.val_loss == whole.val_loss and resumed.train_loss == whole.train_loss
    assert resumed.data_fingerprint == whole.data_fingerprint
    assert losses(tmp_path / "cut") == losses(tmp_path / "whole")
    assert [h["step"] for h in resumed.history] == [10, 20, 30]


def test_resume_refuses_a_different_run(data, tmp_path):
    train(ModelSpec.from_name("tiny"), data, cfg(steps=4), out_dir=tmp_path, quiet=True)
    with pytest.raises(ValueError, match="different run"):
        train(ModelSpec.from_name("tiny"), data, cfg(steps=4, lr=1e-2), out_dir=tmp_path, quiet=True)


def test_divergence_ends_with_a_status_not_a_crash(data):
    r = train(ModelSpec.from_name("tiny"), data, cfg(steps=30, lr=50.0, grad_clip=0.0, warmup_frac=0.0),
              quiet=True)
    assert r.status == "diverged" and "step" in r.reason
    assert r.steps < 30 and r.val_bpb is None
    json.dumps(r.to_dict(), allow_nan=False)  # NaN never leaks into JSON (json.dumps writes NaN unless told)


def test_callbacks_can_stop_a_run(data):
    seen = []

    def prune(step, metrics):
        seen.append((step, metrics["val_bpb"]))
        return True

    r = train(ModelSpec.from_name("tiny"), data, cfg(steps=20, eval_every=5), callbacks=[prune], quiet=True)
    assert r.status == "stopped" and r.steps == 5 and seen[0][0] == 5


def test_bits_per_byte_is_loss_over_ln2_for_bytes(data):
    from autotaper.data.tokens import val_windows
    from autotaper.models import build_model

    model = build_model(ModelSpec.from_name("tiny"))
    w = val_windows(data.val, n=4, context_length=32)
    m = evaluate(model, w, token_bytes=data.token_bytes)
    assert m["val_bpb"] == pytest.approx(m["val_loss"] / math.log(2))
    assert m["val_ppl"] == pytest.approx(math.exp(m["val_loss"]))


def test_bits_per_byte_with_bpe_counts_the_bytes_the_targets_decode_to(tmp_path):
    """bpb with a BPE tokenizer against an independent count: a plain forward's summed loss in
    bits over the bytes that the `tokenizers` library decodes the predicted tokens to (the
    corpus is ASCII, so a window's edges cut no character)."""
    import torch.nn.functional as F
    from tokenizers import Tokenizer

    from autotaper.data.tokens import val_windows
    from autotaper.models import build_model

    data = load_data(str(write_corpus(tmp_path / "corpus")), tokenizer="bpe", vocab_size=300,
                     cache_dir=tmp_path / "cache")
    model = build_model(ModelSpec.from_name("tiny", vocab_size=data.vocab_size))
    w = val_windows(data.val, n=4, context_length=32)
    m = evaluate(model, w, token_bytes=data.token_bytes)
    tok = Tokenizer.from_file(str(data.root / "tokenizer.json"))
    n_bytes = sum(len(tok.decode([int(t) for t in row[1:]]).encode("utf-8")) for row in w)
    assert n_bytes > w[:, 1:].size  # merges: more than one byte per token on average
    with torch.no_grad():
        x = torch.from_numpy(w.astype("int64"))
        nats = F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten(), reduction="sum").item()
    assert m["val_bpb"] == pytest.approx(nats / math.log(2) / n_bytes, rel=1e-6)


def test_lr_schedules():
    c = TrainConfig(steps=100, lr=1.0, min_lr_ratio=0.1, warmup_frac=0.1)
    assert c.lr_at(0) == pytest.approx(0.1) and c.lr_at(9) == pytest.approx(1.0)
    assert c.lr_at(99) == pytest.approx(0.1, abs=1e-3)
    w = TrainConfig(steps=100, lr=1.0, schedule="wsd", decay_frac=0.2, warmup_frac=0.0, min_lr_ratio=0.0)
    assert w.lr_at(79) == 1.0 and w.lr_at(90) == pytest.approx(0.5) and w.lr_at(100) == 0.0


@pytest.mark.slow
def test_ddp_two_processes_match_one(tmp_path, data):
    """torchrun with gloo on CPU, 2 ranks, global batch 8 (4 per rank) against 1 process at
    batch 8: the same batches, so the curves differ only by the order of the fp32 gradient
    reduction (about 1e-7 relative per step); Adam's normalisation keeps that from growing
    beyond ~1e-5 over a dozen steps, so 1e-4 relative is a tolerance with margin."""
    corpus = Path(data.manifest["corpus"])
    env = {**os.environ, "AUTOTAPER_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    common = ["train", "--preset", "tiny", "--steps", "12", "--batch-size", "8", "--precision", "fp32",
              "--data", str(corpus), "--log-every", "1", "--quiet", "--json"]
    one = subprocess.run([sys.executable, "-m", "autotaper", *common, "--out", str(tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                          "--standalone", "-m", "autotaper", *common,
                          "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["data_fingerprint"] == json.loads(one.stdout.strip().splitlines()[-1])["data_fingerprint"]
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-4)


def test_train_cli_json_and_errors(tmp_path, data):
    corpus = data.manifest["corpus"]
    env = {**os.environ, "AUTOTAPER_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "autotaper", "train", "--preset", "tiny", "--taper",
                           "ffn:cosine:1.5:0.5", "--steps", "5", "--data", corpus, "--out", str(tmp_path / "run"),
                           "--json", "--quiet"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("val_loss", "val_bpb", "tokens_per_s", "data_fingerprint", "status"):
        assert key in out
    assert out["status"] == "complete"
    for name in ("spec.json", "config.json", "metrics.jsonl", "summary.json", "checkpoints/latest"):
        assert (tmp_path / "run" / name).exists()
    for bad, needle in ((["--steps", "-3"], "steps"), (["--data", str(tmp_path / "nope")], "does not exist"),
                        (["--tokenizer", "words"], "--tokenizer"), (["--batch-size", "6", "--grad-accum", "4"],
                                                                      "multiple of grad_accum")):
        proc = subprocess.run([sys.executable, "-m", "autotaper", "train", "--preset", "tiny", *bad],
                              capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert needle in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_training(data):
    r = train(ModelSpec.from_name("tiny"), data, cfg(steps=4, device="cuda", precision="auto"), quiet=True)
    assert r.status == "complete" and r.precision == "bf16" and r.device.startswith("cuda")


def test_sigkilled_cli_run_resumes_to_the_same_numbers(tmp_path, data):
    import signal
    import time

    env = {**os.environ, "AUTOTAPER_CACHE": str(tmp_path / "cache")}
    args = [sys.executable, "-m", "autotaper", "train", "--preset", "tiny", "--steps", "300", "--batch-size", "4",
            "--precision", "fp32", "--data", data.manifest["corpus"], "--checkpoint-every", "10", "--quiet", "--json"]
    proc = subprocess.Popen([*args, "--out", str(tmp_path / "killed")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    latest = tmp_path / "killed" / "checkpoints" / "latest"
    deadline = time.time() + 120
    while time.time() < deadline and not (latest.exists() and latest.read_text() >= "step-000020"):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=300)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    resumed = subprocess.run([*args, "--out", str(tmp_path / "killed")], env=env, capture_output=True, text=True, timeout=300)
    whole = subprocess.run([*args, "--out", str(tmp_path / "whole")], env=env, capture_output=True, text=True, timeout=300)
    r, w = (json.loads(p.stdout.strip().splitlines()[-1]) for p in (resumed, whole))
    assert r["resumed_from"] >= 20
    for key in ("val_loss", "val_bpb", "train_loss", "data_fingerprint", "steps"):
        assert r[key] == w[key], key


def _has_cpp_compiler() -> bool:
    import shutil

    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


@pytest.mark.skipif(not _has_cpp_compiler(), reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_tapered_model_trains_like_eager_and_compiles_each_shape_once(data):
    """Regional compile: per-step losses match eager within float tolerance; the training graphs
    compiled equal the distinct block shapes; a second model with those shapes compiles nothing."""
    from torch._dynamo.utils import counters

    from autotaper.models import block_list, build_model
    from autotaper.train.compile import block_shape

    spec = solve(ModelSpec.from_name("tiny", n_layers=3), "ffn:linear:1.5:0.5")
    shapes = {block_shape(b) for b in block_list(build_model(spec))}
    assert len(shapes) == 3

    def run(**changes):
        seen = []
        r = train(spec, data, TrainConfig(**{**cfg(steps=4, eval_every=100).to_dict(), **changes}),
                  callbacks=[type("Losses", (Callback,), {"on_step": lambda self, step, m: seen.append(m["loss"])})()],
                  quiet=True)
        return r, seen

    eager, eager_losses = run()
    before = counters["stats"]["unique_graphs"]
    compiled, compiled_losses = run(compile=True)
    assert counters["stats"]["unique_graphs"] - before == 2 * len(shapes)  # a training and a no_grad graph per shape
    assert len(compiled_losses) == len(eager_losses) == 4
    for a, b in zip(compiled_losses, eager_losses):  # step 0's loss and every one after it
        assert math.isclose(a, b, rel_tol=1e-3), (compiled_losses, eager_losses)
    assert math.isclose(compiled.val_loss, eager.val_loss, rel_tol=1e-3)
    assert compiled.compile_s is not None and compiled.compile_s > 0 and eager.compile_s is None
    before = counters["stats"]["unique_graphs"]
    again, _ = run(compile=True, seed=1)
    assert counters["stats"]["unique_graphs"] == before and again.status == "complete"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_compiled_tapered_training_and_divergence_without_per_step_sync(data):
    spec = solve(ModelSpec.from_name("tiny", n_layers=6), "ffn:cosine:1.5:0.5")
    r = train(spec, data, cfg(steps=20, device="cuda", compile=True, log_every=10), quiet=True)
    assert r.status == "complete" and r.compile_s is not None and r.tokens_per_s > 0
    bad = train(ModelSpec.from_name("tiny"), data, cfg(steps=30, lr=50.0, grad_clip=0.0, warmup_frac=0.0,
                                                        device="cuda", log_every=10), quiet=True)
    assert bad.status == "diverged" and bad.steps < 30 and f"step {bad.steps}" in bad.reason


def test_a_compile_mode_is_taken_by_config_flag_and_space_and_a_bad_one_refused(tmp_path):
    """`compile` is true, false or a torch.compile mode (reduce-overhead: CUDA graphs); anything
    else is refused naming the field and the value, by the config, the space and the CLI (exit 2)."""
    from autotaper.search import parse_space
    from autotaper.train.compile import compile_mode
    from autotaper.train.config import COMPILE_MODES as MODES
    from tests.helpers import micro_space

    assert TrainConfig(compile="reduce-overhead").compile == "reduce-overhead"
    assert [compile_mode(v) for v in (False, True, "reduce-overhead")] == [None, "default", "reduce-overhead"]
    with pytest.raises(ValueError, match="compile must be true, false or one of default, reduce-overhead.*got 'fast'"):
        TrainConfig(compile="fast")
    corpus = str(write_corpus(tmp_path / "corpus"))
    assert parse_space(micro_space(corpus, proxy={"compile": "reduce-overhead"})).proxy.compile == "reduce-overhead"
    with pytest.raises(ValueError, match="proxy.compile: must be true, false or one of .* got 'yes'"):
        parse_space(micro_space(corpus, proxy={"compile": "yes"}))
    from autotaper.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["train", "--preset", "tiny", "--compile"]).compile is True
    assert parser.parse_args(["train", "--preset", "tiny", "--compile", "reduce-overhead"]).compile == "reduce-overhead"
    r = subprocess.run([sys.executable, "-m", "autotaper", "train", "--preset", "tiny", "--compile", "fast"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "--compile: must be one of " + ", ".join(MODES) + ", got 'fast'" in r.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graphs_train_like_eager(data):
    """`compile="reduce-overhead"` on CUDA: each block's graph replayed per step, the same losses
    as eager within compile's float tolerance (benchmarks/cuda_graphs.py measures the speed)."""
    spec = solve(ModelSpec.from_name("tiny", n_layers=3), "ffn:linear:1.5:0.5")
    eager = train(spec, data, cfg(steps=8, device="cuda", eval_every=4), quiet=True)
    graphs = train(spec, data, cfg(steps=8, device="cuda", eval_every=4, compile="reduce-overhead"), quiet=True)
    assert graphs.status == "complete" and graphs.compile_s is not None
    for a, b in zip(graphs.history, eager.history):
        assert math.isclose(a["val_loss"], b["val_loss"], rel_tol=1e-3), (graphs.history, eager.history)


def test_tensorboard_holds_the_metrics_the_run_logged(data, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from autotaper.train import TensorBoard

    r = train(ModelSpec.from_name("tiny"), data, cfg(steps=6, log_every=2), out_dir=tmp_path / "run",
              callbacks=[TensorBoard(tmp_path / "tb")], quiet=True)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = {row["step"]: row["loss"] for row in logged if "loss" in row}
    assert {e.step: e.value for e in events.Scalars("train/loss")} == pytest.approx(losses, rel=1e-6)
    assert sorted(losses) == [2, 4, 6]
    assert events.Scalars("val/val_bpb")[-1].step == 6
    assert events.Scalars("val/val_bpb")[-1].value == pytest.approx(r.val_bpb, rel=1e-6)
