"""Tokenisers: raw bytes (vocab 256, the default) and a byte-level BPE trained locally.

Both expose `encode(bytes) -> list[int]`, `vocab_size` and `token_bytes` (how many bytes of
text each token id stands for), which is what makes bits per byte comparable across them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

import numpy as np

from autotaper.errors import InputError


class ByteTokenizer:
    name = "bytes"
    vocab_size = 256

    def encode(self, data: bytes) -> np.ndarray:
        return np.frombuffer(data, dtype=np.uint8).astype(np.uint16)

    @property
    def token_bytes(self) -> np.ndarray:
        return np.ones(256, dtype=np.int64)

    def config(self) -> dict:
        return {"name": self.name, "vocab_size": 256}


class BPETokenizer:
    """Byte-level BPE from the `tokenizers` library (Rust, multi-threaded), no special tokens."""

    name = "bpe"

    def __init__(self, tok):
        self._tok = tok
        self.vocab_size = tok.get_vocab_size()

    @classmethod
    def train(cls, documents: Iterable[bytes], vocab_size: int) -> "BPETokenizer":
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if not 256 < vocab_size <= 65536:
            raise InputError(f"bpe vocab_size must be in (256, 65536], got {vocab_size}")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator((d.decode("utf-8", errors="replace") for d in documents), trainer)
        return cls(tok)

    @classmethod
    def load(cls, path: Path) -> "BPETokenizer":
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)))

    def save(self, path: Path) -> None:
        self._tok.save(str(path))

    def encode(self, data: bytes) -> np.ndarray:
        return np.array(self._tok.encode(data.decode("utf-8", errors="replace")).ids, dtype=np.uint16)

    def encode_batch(self, docs: list[bytes]) -> list[np.ndarray]:
        texts = [d.decode("utf-8", errors="replace") for d in docs]
        return [np.array(e.ids, dtype=np.uint16) for e in self._tok.encode_batch(texts)]

    @property
    def token_bytes(self) -> np.ndarray:
        # Byte-level BPE writes each byte as one printable character, so a token's length
        # in characters is the number of bytes it stands for.
        return np.array([len(self._tok.id_to_token(i)) for i in range(self.vocab_size)], dtype=np.int64)

    def config(self) -> dict:
        return {"name": self.name, "vocab_size": self.vocab_size,
                "sha256": hashlib.sha256(self._tok.to_str().encode()).hexdigest()[:16]}
