"""`autotaper export`: a trained run becomes a Hugging Face folder with autotaper's logits."""

import json
import subprocess
import sys

import pytest
import torch

from autotaper.budget import solve
from autotaper.data import load_data
from autotaper.export import export_hf
from autotaper.models import build_model
from autotaper.spec import ModelSpec
from autotaper.train import TrainConfig, train
from autotaper.train.checkpoint import latest_checkpoint, load_checkpoint
from tests.helpers import write_corpus

transformers = pytest.importorskip("transformers")
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

SPECS = {
    "llama-ffn": lambda: solve(ModelSpec.from_name("tiny"), "ffn:cosine:1.5:0.5"),
    "gated-heads": lambda: solve(ModelSpec.from_name("tiny", family="gated"), "heads:linear:1.5:0.5"),
    "gpt-embed": lambda: solve(ModelSpec.from_name("tiny", family="gpt", n_kv_heads=4, tie_embeddings=True),
                               "embed:linear:1.5:0.5+ffn:linear:1.5:0.5", tolerance=0.02),
    "llama-uniform": lambda: ModelSpec.from_name("tiny", tie_embeddings=True),
    "gpt-uniform": lambda: ModelSpec.from_name("tiny", family="gpt", n_kv_heads=4),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return str(write_corpus(tmp_path_factory.mktemp("corpus")))


def trained(tmp_path, spec, data, steps=3):
    run = tmp_path / "run"
    train(spec, data, TrainConfig(steps=steps, batch_size=2, precision="fp32"), out_dir=run, quiet=True)
    return run


def reference_logits(run, spec, idx):
    """autotaper's own model from the run's checkpoint, loaded by the trainer's path."""
    model = build_model(spec, seed=None)
    load_checkpoint(latest_checkpoint(run), model=model, optimizer=None, device=torch.device("cpu"))
    with torch.no_grad():
        return model.eval()(idx)


@pytest.mark.parametrize("name", list(SPECS))
def test_export_round_trip_gives_autotapers_logits(tmp_path, corpus, name):
    spec = SPECS[name]()
    run = trained(tmp_path, spec, load_data(corpus))
    out = tmp_path / "hf"
    result = export_hf(run, out)
    uniform = name.endswith("uniform")
    assert result.remote_code is not uniform
    assert ((out / "modeling_autotaper.py").exists()) is not uniform
    # uniform specs load as stock classes without remote code; tapered ones need it
    hf = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=not uniform).eval()
    expected = {"llama-uniform": "LlamaForCausalLM", "gpt-uniform": "GPT2LMHeadModel"}.get(name, "AutotaperForCausalLM")
    assert type(hf).__name__ == expected
    assert sum(p.numel() for p in hf.parameters()) == sum(p.numel() for p in build_model(spec, seed=None).parameters())
    idx = torch.randint(0, spec.vocab_size, (2, spec.context_length), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, reference_logits(run, spec, idx), rtol=1e-5, atol=1e-5)
    config = json.loads((out / "config.json").read_text())
    if not uniform:
        assert config["intermediate_size_per_layer"] == list(spec.layer_ffn)
        assert config["num_attention_heads_per_layer"] == list(spec.layer_heads)
        assert config["num_key_value_heads_per_layer"] == list(spec.layer_kv_heads)
        assert config["hidden_size_per_layer"] == list(spec.layer_d_model)
        assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_autotaper.AutotaperForCausalLM"
        assert len(set(spec.layer_ffn) | set(spec.layer_heads) | set(spec.layer_d_model)) > 3  # really tapered


def test_exported_tokenizer_encodes_like_the_run(tmp_path, corpus):
    """Raw bytes and a trained BPE both come out as tokenizer.json with the run's ids."""
    text = "def alpha_1(beta, gamma):\n    return beta * 3 + gamma  # héllo\n"
    for tok_name, vocab in (("bytes", None), ("bpe", 300)):
        data = load_data(corpus, tokenizer=tok_name, vocab_size=vocab)
        spec = ModelSpec.from_name("tiny", vocab_size=data.vocab_size)
        run = trained(tmp_path / tok_name, spec, data, steps=1)
        export_hf(run, tmp_path / tok_name / "hf", verify=False)
        hf_tok = AutoTokenizer.from_pretrained(tmp_path / tok_name / "hf", trust_remote_code=True)
        if tok_name == "bytes":
            ours = list(text.encode())
        else:
            from autotaper.data.tokenizer import BPETokenizer

            ours = BPETokenizer.load(data.root / "tokenizer.json").encode(text.encode()).tolist()
        assert hf_tok(text)["input_ids"] == ours
        assert hf_tok.decode(ours) == text


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "autotaper", *args], capture_output=True, text=True, timeout=300)


def test_export_cli_refuses_bad_input_and_keeps_what_exists(tmp_path, corpus):
    proc = run_cli("export", str(tmp_path / "nope"), str(tmp_path / "hf"))
    assert proc.returncode == 2 and "has no spec.json" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "hf").exists()

    run = trained(tmp_path, ModelSpec.from_name("tiny"), load_data(corpus), steps=1)
    (tmp_path / "run" / "checkpoints").rename(tmp_path / "checkpoints.bak")
    proc = run_cli("export", str(run), str(tmp_path / "hf"))
    assert proc.returncode == 2 and "holds no checkpoint" in proc.stderr
    (tmp_path / "checkpoints.bak").rename(tmp_path / "run" / "checkpoints")

    out = tmp_path / "hf"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    proc = run_cli("export", str(run), str(out))
    assert proc.returncode == 2 and "is not empty" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert (out / "mine.txt").read_text() == "keep me"
    proc = run_cli("export", str(run), str(run), "--overwrite")
    assert proc.returncode == 2 and "would replace the run directory" in proc.stderr

    proc = run_cli("export", str(run), str(out), "--overwrite", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["architecture"] == "LlamaForCausalLM" and result["max_abs_diff"] <= 1e-4
    assert not (out / "mine.txt").exists() and (out / "model.safetensors").exists()


def test_failed_verification_leaves_the_previous_export(tmp_path, corpus, monkeypatch):
    import autotaper.export as export

    run = trained(tmp_path, solve(ModelSpec.from_name("tiny"), "ffn:linear:1.4:0.6"), load_data(corpus), steps=1)
    out = tmp_path / "hf"
    export_hf(run, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def differs(*args, **kwargs):  # a fault injected where the comparison happens
        raise ValueError("export: the exported model's logits differ from autotaper's by 1 (tolerance 0.0001)")

    monkeypatch.setattr(export, "compare_logits", differs)
    with pytest.raises(ValueError, match="logits differ"):
        export_hf(run, out, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "run"]  # no temporary or backup folder left
