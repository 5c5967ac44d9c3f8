"""Text sources: the embedded standard-library corpus, user files, Hugging Face datasets.

Every source yields (name, bytes) documents in a deterministic order, and is split into
train and validation by document (`split_documents`): a document is in validation when a
hash of its name falls in the lowest `VAL_PERCENT` percent, so the split never depends on
file order. Validation must be large enough to rank tapers everywhere: a stripped Python
(Debian's 3.12) has far fewer stdlib files than CPython 3.11 and gave 39K validation bytes,
so when the hash rule leaves fewer than `MIN_VAL_BYTES`, more documents join validation in
hash order until it holds that many, as long as validation stays within `MAX_VAL_SHARE` of
the corpus. Commands print a note when a corpus is too small for that (`TokenData.note`).
"""

from __future__ import annotations

import glob
import hashlib
import os
import sysconfig
from pathlib import Path
from typing import Iterator

from autotaper.errors import InputError

VAL_PERCENT = 2
MIN_VAL_BYTES = 256 * 1024  # = validation tokens with the byte tokenizer (BPE: about 1/3.4 of it)
MAX_VAL_SHARE = 0.1  # validation never takes more than this share of the corpus's bytes
SPLIT_VERSION = 2  # part of the cache key: a change of the split rule rebuilds every cache
TEXT_SUFFIXES = {".txt", ".md", ".rst", ".py", ".json", ".jsonl", ".csv", ".html", ".xml", ".tex", ".c",
                 ".h", ".cpp", ".js", ".ts", ".rs", ".go", ".java", ".yaml", ".yml", ".toml", ".cfg", ".ini"}


def _name_hash(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def is_val(name: str, val_percent: int = VAL_PERCENT) -> bool:
    return _name_hash(name) % 100 < val_percent


def split_documents(docs: list[tuple[str, bytes]]) -> tuple[list[bytes], list[bytes]]:
    """(train, val) document bytes, by the rule in the module docstring."""
    val_names = {n for n, _ in docs if is_val(n)}
    total = sum(len(d) for _, d in docs)
    target = min(MIN_VAL_BYTES, int(MAX_VAL_SHARE * total))
    size = sum(len(d) for n, d in docs if n in val_names)
    if size < target:
        for n, d in sorted(docs, key=lambda nd: (_name_hash(nd[0]) % 100, _name_hash(nd[0]), nd[0])):
            if size >= target:
                break
            if n not in val_names and size + len(d) <= int(MAX_VAL_SHARE * total):
                val_names.add(n)
                size += len(d)
    train = [d for n, d in docs if n not in val_names]
    val = [d for n, d in docs if n in val_names]
    if not val:  # tiny corpora: the last document validates
        train, val = train[:-1], train[-1:]
    if not train:
        raise InputError("data: the corpus needs at least two documents (files) to split train/val; "
                         "add a file or pass pre-tokenised data")
    return train, val


SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}


def stdlib_files() -> tuple[Path, list[Path]]:
    """The standard library's .py files, installed packages left out (pruned, not walked)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        files += [Path(folder) / n for n in names if n.endswith(".py")]
    return root, sorted(files)


def stdlib_documents() -> Iterator[tuple[str, bytes]]:
    """The running interpreter's standard-library .py sources (about 30 MB on CPython 3.11):
    real text that nobody here wrote and that every Python installation has."""
    root, files = stdlib_files()
    for path in files:
        yield path.relative_to(root).as_posix(), path.read_bytes()


def text_problem(data: bytes) -> str | None:
    """Why `data` is not UTF-8 text, or None when it is. The whole file is decoded: a
    tokenizer that replaced bad bytes would count bits per byte against the wrong bytes."""
    if b"\x00" in data[:8192]:
        return "binary content"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"not UTF-8: byte 0x{data[e.start]:02x} at offset {e.start}"
    return None


def resolve_text_files(source: str) -> list[Path]:
    """Files named by a path, a directory (recursively, text suffixes only) or a glob."""
    if any(ch in source for ch in "*?["):
        paths = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
        if not paths:
            raise InputError(f"data: the glob {source!r} matches no files")
        return paths
    path = Path(source)
    if not path.exists():
        raise InputError(f"data: path {source!r} does not exist")
    if path.is_dir():
        paths = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        if not paths:
            raise InputError(f"data: directory {source!r} holds no text files "
                             f"({', '.join(sorted(TEXT_SUFFIXES))})")
        return paths
    from autotaper._io import regular_file

    return [regular_file(path, "data", limit=None)]  # not a FIFO or a device: they never end


def check_size(paths: list[Path], source: str) -> None:
    """Refuse text that could not be tokenised in this machine's memory (the documents, their
    tokens and the tokenizer's work: about 8 bytes of memory per byte of text), before reading."""
    from autotaper.memory import available_bytes

    total = sum(p.stat().st_size for p in paths)
    have = available_bytes("cpu")
    if have is not None and total * TEXT_MEMORY_FACTOR > have:
        raise InputError(f"data: {source!r} holds {total / 2**30:,.1f} GiB of text; tokenising it here needs about "
                         f"{total * TEXT_MEMORY_FACTOR / 2**30:,.0f} GiB and this machine has {have / 2**30:,.1f} "
                         f"GiB: tokenise it elsewhere into a .bin/.npy token file")


SKIP_SHOWN = 3  # skipped files named in the summary line
TEXT_MEMORY_FACTOR = 8


def file_documents(paths: list[Path], *, strict: bool = False,
                   skipped: list[tuple[str, str]] | None = None) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) per readable UTF-8 file. Other files are appended to `skipped` as
    (name, why) and left out, or with `strict` refused with a one-line error. A single
    file named on its own is always refused: there is nothing to fall back on."""
    common = os.path.commonpath([str(p.resolve()) for p in paths]) if len(paths) > 1 else str(paths[0].parent.resolve())
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as e:
            why = f"unreadable: {e.strerror or e}"
        else:
            why = text_problem(data)
        if why is None:
            yield os.path.relpath(str(path.resolve()), common), data
            continue
        if strict or skipped is None or len(paths) == 1:
            hint = "; pass text, or a .bin/.npy token file" if len(paths) == 1 else \
                "; leave out --strict-data to skip such files"
            raise InputError(f"data: {str(path)!r} is not usable text ({why}){hint}")
        skipped.append((os.path.relpath(str(path.resolve()), common), why))


def skipped_summary(first: list[tuple[str, str]], count: int, total: int) -> str:
    """The one line that says which files a corpus left out: `count` of `total`, the
    first few (name, why) named."""
    shown = ", ".join(f"{name} ({why})" for name, why in first[:SKIP_SHOWN])
    more = f" and {count - SKIP_SHOWN} more" if count > SKIP_SHOWN else ""
    return (f"note: data skipped {count} of {total:,} files that are not UTF-8 text or not readable: "
            f"{shown}{more}; --strict-data refuses them instead")


def hf_documents(location: str, column: str = "text") -> Iterator[tuple[str, bytes]]:
    """A dataset saved with `save_to_disk`, or a local `load_dataset` directory/script."""
    try:
        import datasets
    except ImportError:
        raise InputError("data: hf: sources need the `datasets` package (pip install datasets)") from None
    if not Path(location).exists():
        raise InputError(f"data: Hugging Face dataset path {location!r} does not exist")
    try:
        ds = datasets.load_from_disk(location)
    except FileNotFoundError:
        try:
            ds = datasets.load_dataset(location)
        except Exception as e:  # noqa: BLE001 - datasets raises many kinds for a folder it cannot read
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise InputError(f"data: hf:{location} is neither a saved dataset (save_to_disk) nor one "
                             f"load_dataset reads ({first})") from None
    if isinstance(ds, datasets.DatasetDict):
        splits = [(name, ds[name]) for name in sorted(ds)]
    else:
        splits = [("data", ds)]
    for split, part in splits:
        if column not in part.column_names:
            raise InputError(f"data: dataset {location!r} has no column {column!r} "
                             f"(columns: {', '.join(part.column_names)})")
        for i, text in enumerate(part[column]):
            yield f"{split}/{i}", str(text).encode("utf-8")
