"""Token data for proxy training: corpora, tokenisers, the cached token arrays, batches.

    load_data()                         the embedded corpus (this interpreter's stdlib source)
    load_data("docs/**/*.md")           text files, directories or globs
    load_data("tokens.bin")             pre-tokenised uint16 (nanoGPT) or .npy
    load_data("hf:/path/to/saved")      a Hugging Face dataset saved to disk (needs `datasets`)
    load_data("copied/corpus/KEY")      a corpus folder of the cache (~/.cache/autotaper/corpus/KEY),
                                        copied from another machine: the same corpus, bit for bit
"""

from autotaper.data.tokens import TokenData, load_data, sample_batch

__all__ = ["TokenData", "load_data", "sample_batch"]
