"""What a search checks before it stores a byte: the study's name and storage, the data, the
proxy's model against the machine's memory, the training recipe, the sampler and pruner.

Every check here reads; none writes to a study (loading the data may fill the token cache,
which holds no study state). A command that fails here leaves every stored study as it was,
and no study folder appears.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from autotaper.errors import InputError
from autotaper.search.space import BaseSpace


@dataclass
class Ready:
    """What the checks produced, for the search to use without doing the work twice."""

    name: str  # the study's name
    url: str  # its storage
    data: Any  # the proxy's TokenData
    base: Any  # the uniform proxy ModelSpec
    estimate_bytes: int  # one proxy training's memory, estimated


def preflight(space: BaseSpace, *, storage: str | None, study_name: str | None, workers: int = 1) -> Ready:
    """Run every check of a search of `space` (see the module docstring); ValueError naming the
    field and the value on the first that fails."""
    from autotaper.memory import check_fits
    from autotaper.search.objective import baseline_spec, train_config
    from autotaper.search.samplers import make_pruner, make_sampler
    from autotaper.search.storage import check_storage, check_study_name, default_location

    if study_name is not None:
        name = check_study_name(study_name, "--study")
    else:
        name = check_study_name(space.name, "name")
    url = check_storage(storage or default_location(name, workers=workers))
    device, precision = _device(space)
    proxy = space.proxy
    if proxy.data is None or proxy.tokenizer == "bpe":  # the vocabulary is known before the data is read:
        vocab = 256 if proxy.tokenizer == "bytes" else proxy.vocab_size or 4096  # judge the memory first
        try:
            guess = baseline_spec(space, SimpleNamespace(vocab_size=vocab))
        except ValueError as e:
            raise InputError(f"proxy: {e}") from None
        check_fits(guess, proxy.batch_size, precision=precision, device=device, what=f"proxy {proxy.preset}")
    data = space.proxy.load_data()
    try:
        base = baseline_spec(space, data)
    except ValueError as e:
        raise InputError(f"proxy: {e}") from None
    data.check(vocab_size=base.vocab_size, context_length=base.context_length)
    train_config(space, 0)  # the recipe builds
    need = check_fits(base, space.proxy.batch_size, precision=precision, device=device,
                      what=f"proxy {space.proxy.preset}")
    import warnings

    with warnings.catch_warnings():  # built to be checked only: the search's own warn once, as before
        warnings.simplefilter("ignore")
        make_sampler(space, workers=workers)
        make_pruner(space)
    return Ready(name, url, data, base, need)


def _device(space: BaseSpace) -> tuple[str, str]:
    """The device a proxy trains on here, and its precision for the memory estimate."""
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu"), ("fp32" if space.proxy.precision == "fp32" else "bf16")
