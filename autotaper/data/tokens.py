"""Tokenised corpora cached as memory-mapped arrays, and the batches drawn from them.

A corpus is tokenised once and cached under `$AUTOTAPER_CACHE` (default
~/.cache/autotaper) as `train.bin` and `val.bin` (uint16, nanoGPT's layout) beside a
`manifest.json` that records the content hash, sizes, tokenizer and Python version, so
every result can say which corpus it came from. The cache directory is written under a
temporary name and renamed into place, so a killed build never leaves a half cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from autotaper.data.corpus import (
    SKIP_SHOWN,
    SPLIT_VERSION,
    check_size,
    file_documents,
    hf_documents,
    resolve_text_files,
    skipped_summary,
    split_documents,
    stdlib_documents,
    stdlib_files,
)
from autotaper.data.tokenizer import BPETokenizer, ByteTokenizer
from autotaper.errors import InputError
from autotaper.spec import MAX_VOCAB

DEFAULT_BPE_VOCAB = 4096
TOKEN_SUFFIXES = (".bin", ".npy")


def cache_root() -> Path:
    return Path(os.environ.get("AUTOTAPER_CACHE", Path.home() / ".cache" / "autotaper"))


@dataclass
class TokenData:
    train: np.ndarray  # 1-D token ids (usually a read-only memmap)
    val: np.ndarray
    vocab_size: int
    token_bytes: np.ndarray | None  # bytes of text per token id; None for pre-tokenised data
    manifest: dict
    root: Path | None = None  # the cache folder (holds tokenizer.json for a BPE corpus)

    @property
    def name(self) -> str:
        return self.manifest.get("corpus", "?")

    def check(self, *, vocab_size: int, context_length: int) -> None:
        """Fail before training when the data cannot feed this model."""
        for split, arr in (("train", self.train), ("val", self.val)):
            if len(arr) < context_length + 1:
                raise InputError(f"data: the {split} split has {len(arr)} tokens, fewer than one "
                                 f"context of {context_length} + 1")
        top = int(self.manifest.get("max_token", -1))
        if top >= vocab_size:
            raise InputError(f"data: token id {top} is over the model's vocab_size={vocab_size}")

    def note(self) -> str | None:
        """Lines to print about the corpus: files it skipped, a small validation split (see
        `data.corpus`); None when there is nothing to say."""
        from autotaper.data.corpus import MIN_VAL_BYTES

        lines = []
        skipped = self.manifest.get("skipped")
        if skipped:
            lines.append(skipped_summary([tuple(x) for x in skipped["first"]], skipped["count"], skipped["of"]))
        val_bytes = self.manifest.get("val_bytes")
        if val_bytes is not None and val_bytes < MIN_VAL_BYTES:
            lines.append(f"note: corpus {self.name} validates on only {val_bytes:,} bytes ({len(self.val):,} tokens, "
                         f"under {MIN_VAL_BYTES:,}): small effects will be hard to rank; give --data a larger corpus")
        return "\n".join(lines) or None

    def fingerprint(self) -> str:
        return self.manifest["content_sha256"][:16] + "-" + self.manifest["tokenizer"]["name"]


def sample_batch(tokens: np.ndarray, *, seed: int, step: int, batch_size: int,
                 context_length: int) -> np.ndarray:
    """Windows of context_length + 1 tokens, (B, T + 1) int64, chosen by (seed, step) alone:
    every model trained with one seed sees the same batches in the same order, and a resumed
    run continues the same stream without saving any generator state."""
    rng = np.random.default_rng([int(seed), int(step)])
    starts = rng.integers(0, len(tokens) - context_length, size=batch_size)
    return np.stack([tokens[s: s + context_length + 1] for s in starts]).astype(np.int64)


def val_windows(tokens: np.ndarray, *, n: int, context_length: int) -> np.ndarray:
    """n fixed windows (n, T + 1) spread evenly over the validation split."""
    starts = np.linspace(0, len(tokens) - context_length - 1, n).astype(np.int64)
    return np.stack([tokens[s: s + context_length + 1] for s in starts]).astype(np.int64)


# -- building -------------------------------------------------------------------------
def load_data(source: str | None = None, *, tokenizer: str = "bytes", vocab_size: int | None = None,
              cache_dir: str | Path | None = None, hf_column: str = "text", strict: bool = False) -> TokenData:
    """Token data for `source` (see the package docstring), tokenised and cached once.

    Files of a directory or glob that are not UTF-8 text, or not readable, are left out and
    named in `TokenData.note()` (and the manifest's "skipped"); `strict` refuses them."""
    if tokenizer not in ("bytes", "bpe"):
        raise InputError(f"tokenizer must be 'bytes' or 'bpe', got {tokenizer!r}")
    root = Path(cache_dir) if cache_dir else cache_root()
    if source is not None and not str(source).startswith("hf:") and str(source).endswith(TOKEN_SUFFIXES):
        return _load_token_file(Path(source))
    if source is not None and Path(source).is_dir() and (Path(source) / "train.bin").exists():
        if (Path(source) / "manifest.json").exists() and (Path(source) / "token_bytes.npy").exists():
            return _open(Path(source))  # a corpus folder of this cache, copied from another machine
        return _load_token_dir(Path(source))
    vocab = vocab_size or (256 if tokenizer == "bytes" else DEFAULT_BPE_VOCAB)
    suffix = f"{tokenizer}{'' if tokenizer == 'bytes' else vocab}-split{SPLIT_VERSION}"
    # Fast path: files unchanged since the cache was built (same names, sizes and mtimes)
    # open the cache without reading and hashing every byte again.
    stamp_file = _stamp_file(root, source, suffix)
    if stamp_file is not None and stamp_file.exists():
        target = root / "corpus" / stamp_file.read_text().strip()
        if (target / "manifest.json").exists():
            return _strict_check(_open(target), strict)
    skipped: list[tuple[str, str]] = []
    if source is None:
        name, docs = "stdlib", list(stdlib_documents())
    elif str(source).startswith("hf:"):
        name, docs = f"hf:{source[3:]}", list(hf_documents(source[3:], hf_column))
    else:
        paths = resolve_text_files(str(source))
        check_size(paths, str(source))
        name, docs = str(source), list(file_documents(paths, strict=strict, skipped=skipped))
        if skipped and not docs:
            first, why = skipped[0]
            raise InputError(f"data: none of the {len(paths):,} files of {name!r} is usable text "
                             f"(first: {first!r}, {why})")
    if not docs or not any(d for _, d in docs):
        raise InputError(f"data: source {name!r} holds no text")
    extra = {"skipped": {"count": len(skipped), "of": len(docs) + len(skipped),
                         "first": [list(x) for x in skipped[:SKIP_SHOWN]]}} if skipped else {}
    sha = hashlib.sha256()
    for doc_name, data in docs:
        sha.update(doc_name.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    content = sha.hexdigest()
    key = f"{content[:16]}-{suffix}"
    if skipped:  # the same text with other files skipped: its own cache, so the note stays true
        key += "-skip" + hashlib.sha256(repr(skipped).encode()).hexdigest()[:8]
    target = root / "corpus" / key
    if not (target / "manifest.json").exists():
        _build(target, name, docs, content, tokenizer, vocab, extra)
    if stamp_file is not None:
        from autotaper._io import atomic_write_text

        atomic_write_text(stamp_file, key)
    return _open(target)


def _strict_check(data: TokenData, strict: bool) -> TokenData:
    """A cache built without --strict-data may have skipped files that strict refuses."""
    skipped = data.manifest.get("skipped")
    if strict and skipped:
        first, why = skipped["first"][0]
        raise InputError(f"data: {first!r} in {data.name!r} is not usable text ({why}), and "
                         f"{skipped['count'] - 1} more; leave out --strict-data to skip such files")
    return data


def _stamp_file(root: Path, source: str | None, suffix: str) -> Path | None:
    """A cheap fingerprint of a file-based source: paths, sizes and modification times."""
    if source is not None and str(source).startswith("hf:"):
        return None
    try:
        if source is None:
            _, paths = stdlib_files()
        else:
            paths = resolve_text_files(str(source))
    except ValueError:
        return None  # the slow path reports the problem
    h = hashlib.sha256(f"{source}|{suffix}".encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return root / "stamps" / h.hexdigest()[:32]


def _build(target: Path, name: str, docs, content: str, tokenizer: str, vocab: int, extra: dict) -> None:
    train_docs, val_docs = split_documents(docs)
    target.parent.mkdir(parents=True, exist_ok=True)
    from autotaper._io import make_temp_dir

    tmp = make_temp_dir(target.parent, target.name + ".")
    try:
        if tokenizer == "bytes":
            tok = ByteTokenizer()
            encode = lambda ds: [tok.encode(d) for d in ds]  # noqa: E731
        else:
            tok = BPETokenizer.train(train_docs, vocab)
            tok.save(tmp / "tokenizer.json")
            encode = tok.encode_batch
        sizes = {}
        max_token = -1
        for split, split_docs in (("train", train_docs), ("val", val_docs)):
            arr = np.concatenate([*encode(split_docs)]) if split_docs else np.zeros(0, np.uint16)
            arr.astype(np.uint16).tofile(tmp / f"{split}.bin")
            sizes[split] = (len(arr), sum(len(d) for d in split_docs), len(split_docs))
            if len(arr):
                max_token = max(max_token, int(arr.max()))
        np.save(tmp / "token_bytes.npy", tok.token_bytes)
        manifest = {
            "corpus": name, "content_sha256": content, "tokenizer": tok.config(),
            "python": platform.python_version(), "dtype": "uint16", "max_token": max_token,
            "train_tokens": sizes["train"][0], "val_tokens": sizes["val"][0],
            "train_bytes": sizes["train"][1], "val_bytes": sizes["val"][1],
            "train_documents": sizes["train"][2], "val_documents": sizes["val"][2], **extra,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        try:
            os.replace(tmp, target)
        except OSError:  # another process built the same cache first: keep theirs
            if not (target / "manifest.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _open(target: Path) -> TokenData:
    manifest = json.loads((target / "manifest.json").read_text())
    train = np.memmap(target / "train.bin", dtype=np.uint16, mode="r")
    val = np.memmap(target / "val.bin", dtype=np.uint16, mode="r")
    token_bytes = np.load(target / "token_bytes.npy")
    return TokenData(train, val, int(manifest["tokenizer"]["vocab_size"]), token_bytes, manifest, root=target)


def _read_tokens(path: Path) -> np.ndarray:
    from autotaper._io import regular_file

    regular_file(path, "data", limit=None)  # not a folder named x.bin, a FIFO or a device
    if path.suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r")
        except (ValueError, OSError, EOFError) as e:  # not an .npy file, an object array, a truncated header
            raise InputError(f"data: {str(path)!r} is not a NumPy token array ({str(e).splitlines()[0][:120]})") from None
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise InputError(f"data: {str(path)!r} must hold a 1-D integer array, got {arr.dtype} {arr.shape}")
        if arr.size and int(arr.min()) < 0:
            raise InputError(f"data: {str(path)!r} holds negative token ids")
        if arr.size and int(arr.max()) >= MAX_VOCAB:
            raise InputError(f"data: {str(path)!r} holds token id {int(arr.max()):,}, over the largest vocabulary "
                             f"a model may have ({MAX_VOCAB:,})")
        return arr
    if path.stat().st_size % 2:
        raise InputError(f"data: {str(path)!r} is not a uint16 token file (odd byte length)")
    return np.memmap(path, dtype=np.uint16, mode="r")


def _token_manifest(name: str, parts: Iterator[np.ndarray]) -> dict:
    sha = hashlib.sha256()
    top = -1
    for arr in parts:
        sha.update(np.ascontiguousarray(arr).tobytes())
        if arr.size:
            top = max(top, int(arr.max()))
    return {"corpus": name, "content_sha256": sha.hexdigest(), "max_token": top,
            "tokenizer": {"name": "pretokenised", "vocab_size": top + 1},
            "python": platform.python_version()}


def _load_token_file(path: Path) -> TokenData:
    """One token file: the last VAL_PERCENT percent (at least 1/50th) validates."""
    from autotaper.data.corpus import VAL_PERCENT

    arr = _read_tokens(path)
    cut = len(arr) - max(1, len(arr) * VAL_PERCENT // 100)
    manifest = _token_manifest(str(path), [arr])
    manifest.update(train_tokens=cut, val_tokens=len(arr) - cut)
    return TokenData(arr[:cut], arr[cut:], manifest["max_token"] + 1, None, manifest)


def _load_token_dir(path: Path) -> TokenData:
    """nanoGPT's layout: train.bin and val.bin side by side."""
    train, val = _read_tokens(path / "train.bin"), _read_tokens(path / "val.bin")
    manifest = _token_manifest(str(path), [train, val])
    manifest.update(train_tokens=len(train), val_tokens=len(val))
    return TokenData(train, val, manifest["max_token"] + 1, None, manifest)
