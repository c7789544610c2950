"""Process-wide JAX settings shared by the CLIs: the persistent compilation cache."""

from __future__ import annotations

import os


def setup(cache_dir: str | None = None) -> None:
    """Turns on JAX's persistent compilation cache, so a second run does not recompile.

    The directory is $S2S_JAX_CACHE, else ~/.cache/s2s_jax/xla; set
    S2S_JAX_CACHE=off to disable it.
    """
    import jax
    from absl import logging

    logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO

    cache_dir = cache_dir or os.environ.get("S2S_JAX_CACHE") or os.path.expanduser("~/.cache/s2s_jax/xla")
    if cache_dir != "off":
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
