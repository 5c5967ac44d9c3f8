import os
from pathlib import Path

import numpy as np
import pytest

from autotaper.data import load_data, sample_batch
from autotaper.data.tokens import val_windows
from tests.helpers import write_corpus


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "corpus")


def _no_reading(monkeypatch):
    """Make reading any source document fail: a load that succeeds took the stamp fast path."""
    import autotaper.data.tokens as tokens

    def refuse(*args, **kwargs):
        raise AssertionError("the source was read again: the stamp fast path was not taken")

    monkeypatch.setattr(tokens, "file_documents", refuse)
    monkeypatch.setattr(tokens, "stdlib_documents", refuse)


def test_embedded_corpus_is_the_stdlib_with_a_manifest(tmp_path, monkeypatch):
    data = load_data(cache_dir=tmp_path)
    m = data.manifest
    assert m["corpus"] == "stdlib" and len(m["content_sha256"]) == 64 and m["python"]
    assert m["train_bytes"] > 10_000_000 and m["val_tokens"] > 50_000
    assert isinstance(data.train, np.memmap)
    # cached: a second load opens the same files without rebuilding
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "corpus").rglob("*.bin")}
    with monkeypatch.context() as patch:
        _no_reading(patch)
        again = load_data(cache_dir=tmp_path)
    assert again.manifest == m
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "corpus").rglob("*.bin")} == before


def test_split_is_by_file_and_deterministic(corpus, tmp_path):
    a = load_data(str(corpus), cache_dir=tmp_path / "c1")
    b = load_data(str(corpus), cache_dir=tmp_path / "c2")
    assert np.array_equal(a.val, b.val) and np.array_equal(a.train, b.train)
    assert a.manifest["val_documents"] >= 1 and a.manifest["train_documents"] >= 1
    assert a.manifest["train_bytes"] + a.manifest["val_bytes"] == sum(p.stat().st_size for p in corpus.iterdir())


def test_validation_grows_to_its_minimum_when_the_hash_rule_leaves_it_small():
    from autotaper.data.corpus import MAX_VAL_SHARE, MIN_VAL_BYTES, is_val, split_documents

    # 400 documents of 12 KB (4.8 MB): the 2% hash rule alone keeps ~8 (about 100 KB), like a
    # stripped stdlib; the split must reach MIN_VAL_BYTES and stay under MAX_VAL_SHARE
    docs = [(f"pkg/mod{i:03d}.py", bytes([97 + i % 26]) * 12_000) for i in range(400)]
    by_hash = sum(len(d) for n, d in docs if is_val(n))
    assert by_hash < MIN_VAL_BYTES
    train, val = split_documents(docs)
    total = sum(len(d) for _, d in docs)
    assert MIN_VAL_BYTES <= sum(map(len, val)) <= MAX_VAL_SHARE * total
    assert sum(map(len, train)) + sum(map(len, val)) == total
    assert split_documents(list(reversed(docs)))[1] == [d for d in reversed(val)] or \
        sorted(split_documents(list(reversed(docs)))[1]) == sorted(val)  # order of files never matters
    # a corpus too small to spare MIN_VAL_BYTES keeps validation within its share, and says so
    small = docs[:40]
    _, small_val = split_documents(small)
    assert sum(map(len, small_val)) <= max(MAX_VAL_SHARE * sum(len(d) for _, d in small), 12_000)


def test_a_small_validation_split_is_noted(corpus, tmp_path):
    data = load_data(str(corpus), cache_dir=tmp_path)
    assert data.manifest["val_bytes"] < 256 * 1024 and "validates on only" in data.note()
    assert load_data(cache_dir=tmp_path / "std").note() is None  # the stdlib here holds 414K val bytes


def test_globs_and_single_files(corpus, tmp_path):
    data = load_data(str(corpus / "doc0*.py"), cache_dir=tmp_path)
    assert data.manifest["train_documents"] + data.manifest["val_documents"] == 8


def test_bpe_tokenizer_counts_bytes_exactly(corpus, tmp_path):
    data = load_data(str(corpus), tokenizer="bpe", vocab_size=300, cache_dir=tmp_path)
    assert data.vocab_size == 300
    assert len(data.train) < data.manifest["train_bytes"]  # merges happened
    # each token's byte length adds up to the split's bytes: bits per byte is exact
    assert int(data.token_bytes[np.asarray(data.val)].sum()) == data.manifest["val_bytes"]


def test_pretokenised_bin_npy_and_nanogpt_dir(tmp_path):
    tokens = (np.arange(5000) % 300).astype(np.uint16)
    tokens.tofile(tmp_path / "toks.bin")
    np.save(tmp_path / "toks.npy", tokens.astype(np.int32))
    for path in ("toks.bin", "toks.npy"):
        data = load_data(str(tmp_path / path))
        assert data.vocab_size == 300 and data.token_bytes is None
        assert len(data.train) + len(data.val) == 5000
    d = tmp_path / "nano"
    d.mkdir()
    tokens[:4000].tofile(d / "train.bin")
    tokens[4000:].tofile(d / "val.bin")
    data = load_data(str(d))
    assert len(data.train) == 4000 and len(data.val) == 1000


def test_hugging_face_dataset_from_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    texts = [f"sample {i}: " + "lorem ipsum " * 20 for i in range(40)]
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "ds"))
    data = load_data(f"hf:{tmp_path / 'ds'}", cache_dir=tmp_path / "cache")
    assert data.manifest["corpus"].startswith("hf:")
    assert data.manifest["train_bytes"] + data.manifest["val_bytes"] == sum(len(t.encode()) for t in texts)
    with pytest.raises(ValueError, match="no column 'body'"):
        load_data(f"hf:{tmp_path / 'ds'}", cache_dir=tmp_path / "cache", hf_column="body")


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("empty_dir", "holds no text files"),
    ("binary", "not usable text \\(binary content\\)"),
    ("glob", "matches no files"),
    ("odd_bin", "odd byte length"),
    ("one_file", "at least two documents"),
])
def test_bad_data_is_rejected_before_training(tmp_path, case, message):
    if case == "missing":
        source = tmp_path / "nope.txt"
    elif case == "empty_dir":
        source = tmp_path / "empty"
        source.mkdir()
    elif case == "binary":
        source = tmp_path / "junk.txt"
        source.write_bytes(bytes(range(256)) * 10)
    elif case == "glob":
        source = tmp_path / "*.nothing"
    elif case == "odd_bin":
        source = tmp_path / "t.bin"
        source.write_bytes(b"\x01\x02\x03")
    else:
        source = tmp_path / "only.txt"
        source.write_text("hello " * 100)
    with pytest.raises(ValueError, match=message):
        load_data(str(source), cache_dir=tmp_path / "cache")


def test_short_data_and_vocab_overflow_fail_the_check(tmp_path):
    tokens = np.arange(100, dtype=np.uint16)
    tokens.tofile(tmp_path / "t.bin")
    data = load_data(str(tmp_path / "t.bin"))
    with pytest.raises(ValueError, match="fewer than one context"):
        data.check(vocab_size=256, context_length=64)
    big = np.full(5000, 400, dtype=np.uint16)
    big.tofile(tmp_path / "big.bin")
    with pytest.raises(ValueError, match="token id 400 is over the model's vocab_size=256"):
        load_data(str(tmp_path / "big.bin")).check(vocab_size=256, context_length=8)


def test_batches_depend_on_seed_and_step_only():
    tokens = np.arange(10_000, dtype=np.uint16)
    a = sample_batch(tokens, seed=1, step=5, batch_size=4, context_length=16)
    b = sample_batch(tokens, seed=1, step=5, batch_size=4, context_length=16)
    c = sample_batch(tokens, seed=2, step=5, batch_size=4, context_length=16)
    assert a.shape == (4, 17) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.all(np.diff(a, axis=1) == 1)  # contiguous windows
    w = val_windows(tokens, n=5, context_length=16)
    assert w[0, 0] == 0 and w[-1, -1] == 9999


def test_unchanged_files_reopen_the_cache_and_changed_files_rebuild_it(corpus, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_data(str(corpus), cache_dir=cache)
    with monkeypatch.context() as patch:
        _no_reading(patch)
        again = load_data(str(corpus), cache_dir=cache)  # the stamp path: no reading, no re-hashing
    assert again.manifest == first.manifest and len(list((cache / "stamps").iterdir())) == 1
    (corpus / "doc03.py").write_text((corpus / "doc03.py").read_text() + "# one more line\n")
    changed = load_data(str(corpus), cache_dir=cache)
    assert changed.manifest["content_sha256"] != first.manifest["content_sha256"]


def _odd_tree(corpus):
    """A real source tree's odd files: Latin-1 text (like CPython's
    test/encoded_modules/module_iso_8859_1.py), a binary blob with a text suffix, and a
    file whose bad byte lies past the first 8 KiB that a sniffer would read."""
    (corpus / "enc").mkdir()
    (corpus / "enc" / "module_iso_8859_1.py").write_bytes("# -*- coding: iso-8859-1 -*-\nx = 'caf\xe9'\n".encode("latin-1"))
    (corpus / "blob.txt").write_bytes(bytes(range(256)) * 4)
    (corpus / "late.md").write_bytes(b"a" * 10_000 + b"\xff tail\n")
    return corpus


def test_a_data_folder_skips_files_that_are_not_text_and_says_which(corpus, tmp_path, monkeypatch):
    _odd_tree(corpus)
    (corpus / "locked.txt").write_text("secret")
    real = Path.read_bytes

    def read_bytes(self):  # root reads a chmod 000 file, so unreadability is injected here
        if self.name == "locked.txt":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    data = load_data(str(corpus), cache_dir=tmp_path / "cache")
    skipped = data.manifest["skipped"]
    assert skipped["count"] == 4 and skipped["of"] == 12
    assert data.manifest["train_documents"] + data.manifest["val_documents"] == 8  # the clean files only
    note = data.note().splitlines()[0]  # the second line: this tiny corpus's small validation split
    assert "skipped 4 of 12 files" in note and "and 1 more" in note
    assert "blob.txt (binary content)" in note and "enc/module_iso_8859_1.py (not UTF-8: byte 0xe9 at offset 37)" in note
    assert "--strict-data" in note
    # the same tree through a glob skips the same files
    globbed = load_data(str(corpus / "**" / "*.*"), cache_dir=tmp_path / "cache2")
    assert globbed.manifest["skipped"]["count"] == 4
    assert globbed.manifest["content_sha256"] == data.manifest["content_sha256"]
    # strict refuses, on the cached fast path too, naming a file
    for cache in ("cache", "fresh"):
        with pytest.raises(ValueError, match=r"is not usable text \(.*\).*leave out --strict-data"):
            load_data(str(corpus), cache_dir=tmp_path / cache, strict=True)


def test_a_clean_copy_of_a_skipping_corpus_has_no_skip_note(corpus, tmp_path):
    """The skipped files are part of the cache key: the same text without them says nothing."""
    import shutil

    clean = shutil.copytree(corpus, tmp_path / "clean")
    _odd_tree(corpus)
    cache = tmp_path / "cache"
    assert load_data(str(corpus), cache_dir=cache).manifest["skipped"]["count"] == 3
    data = load_data(str(clean), cache_dir=cache, strict=True)
    assert "skipped" not in data.manifest and "skipped" not in data.note()


def test_a_folder_of_nothing_but_odd_files_is_refused(tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "a.txt").write_bytes(b"\x00\x01" * 100)
    (folder / "b.txt").write_bytes(b"\xff" * 100)
    with pytest.raises(ValueError, match=r"none of the 2 files of .* is usable text \(first: 'a.txt', binary content\)"):
        load_data(str(folder), cache_dir=tmp_path / "cache")


def test_cli_train_skips_with_one_line_and_strict_data_refuses(corpus, tmp_path):
    import subprocess
    import sys

    _odd_tree(corpus)
    args = [sys.executable, "-m", "autotaper", "train", "--preset", "tiny", "--taper", "uniform", "--steps", "2",
            "--batch-size", "2", "--data", str(corpus), "--precision", "fp32", "--quiet"]
    env = {**os.environ, "AUTOTAPER_CACHE": str(tmp_path / "cache")}
    ok = subprocess.run(args + ["--out", str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert sum("skipped 3 of 11 files" in line for line in ok.stderr.splitlines()) == 1
    strict = subprocess.run(args + ["--out", str(tmp_path / "run2"), "--strict-data"], capture_output=True,
                            text=True, env=env, timeout=300)
    assert strict.returncode == 2 and len(strict.stderr.strip().splitlines()) == 1, strict.stderr
    assert "not usable text" in strict.stderr and not (tmp_path / "run2").exists()
