"""Built-in configs: `--config NAME` (quickstart, multi30k_attention, ...) or `--config PATH.py`."""
