"""Process-wide settings shared by the CLIs: OpenBLAS threads, the persistent compilation cache.

Imports nothing heavy at module level: the CLIs import it before numpy and jax."""

from __future__ import annotations

import os
import sys
from typing import Callable

_COMMANDS_WITH_FLAGS: set[str] = set()


def define_command_flags(command: str, define: Callable[[], None]) -> None:
    """Runs `define` (a command's absl flag definitions) once, when the command starts.

    Not on import: tests import both CLI modules, whose flags would clash. The new
    flags are listed as the main module's own, so `--helpshort` shows them.
    """
    if command in _COMMANDS_WITH_FLAGS:
        return
    from absl import flags

    before = set(flags.FLAGS)
    define()
    _COMMANDS_WITH_FLAGS.add(command)
    for name in set(flags.FLAGS) - before:
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])


def run_command(
    command: str,
    define: Callable[[], None],
    run: Callable,
    argv: list[str] | None = None,
    flags_parser: Callable | None = None,
    compiles: bool = True,
) -> None:
    """A command's entry point: defines its flags, parses argv, refuses stray arguments, turns on
    the compile cache (`setup`; not for a command that never compiles, which need not import jax)
    and exits with `run(flags.FLAGS)`'s status. Commands with a `--config` pass
    `config_flags.parse_flags` as `flags_parser` (one error line for a bad flag)."""
    from absl import app, flags

    def main(args: list[str]) -> int:
        if len(args) > 1:
            raise app.UsageError(f"unexpected arguments: {args[1:]}")
        if compiles:
            setup()
        return run(flags.FLAGS)

    define_command_flags(command, define)
    if flags_parser is None:
        app.run(main, argv=argv)
    else:
        app.run(main, argv=argv, flags_parser=flags_parser)


def limit_openblas_threads() -> None:
    """OPENBLAS_NUM_THREADS=1 unless set: call before numpy or jax is first imported.

    Parameter init's QR decompositions go to OpenBLAS, which stalls for seconds with
    several threads on a busy 2-core machine; XLA's own matmuls do not use it.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def setup(cache_dir: str | None = None) -> None:
    """Turns on JAX's persistent compilation cache, so a second run does not recompile.

    The directory is $S2S_JAX_CACHE, else ~/.cache/s2s_jax/xla; set
    S2S_JAX_CACHE=off to disable it. Programs that compile in under 0.5 s are not kept unless
    JAX's own JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS says otherwise (the tests set it to 0).
    """
    import jax
    from absl import logging

    logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO

    cache_dir = cache_dir or os.environ.get("S2S_JAX_CACHE") or os.path.expanduser("~/.cache/s2s_jax/xla")
    if cache_dir != "off":
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:  # else JAX's own setting stands
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
