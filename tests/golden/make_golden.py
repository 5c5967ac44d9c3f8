"""Regenerate tests/golden/train_tiny.json (only for an intended change of the numerics)."""

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from autotaper import ModelSpec  # noqa: E402
from autotaper.data import load_data  # noqa: E402
from autotaper.train import train  # noqa: E402
from tests.helpers import write_corpus  # noqa: E402
from tests.test_train import cfg, losses  # noqa: E402

with tempfile.TemporaryDirectory() as tmp:
    data = load_data(str(write_corpus(Path(tmp) / "corpus")), cache_dir=Path(tmp) / "cache")
    train(ModelSpec.from_name("tiny"), data, cfg(), out_dir=Path(tmp) / "run", quiet=True)
    out = {"preset": "tiny", "taper": "uniform", "seed": 0, "precision": "fp32", "losses": losses(Path(tmp) / "run")}
    (Path(__file__).parent / "train_tiny.json").write_text(json.dumps(out, indent=1) + "\n")
    print(out)
