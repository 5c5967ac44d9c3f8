"""Files copied verbatim into an exported Hugging Face folder (`autotaper.export`).

`configuration_autotaper.py` and `modeling_autotaper.py` import only torch and transformers,
never autotaper, so a folder loads with `trust_remote_code=True` where autotaper is not
installed. They mirror `autotaper.models` (same module names, so the checkpoint's tensors
load unrenamed); `tests/test_export.py` holds the two to equal logits.
"""
