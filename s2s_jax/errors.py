"""The errors a user can act on, below every other module so any of them can raise them.

Each is one sentence for the user: the CLIs print it as one `error:` line and exit non-zero,
the server answers it as a 4xx. Anything else reaching a CLI is a bug and keeps its traceback.
"""

from __future__ import annotations


class DataError(ValueError):
    """A problem with the user's input files, phrased for the user (names file and line)."""


class ConfigError(ValueError):
    """A configuration that cannot work, said in a sentence."""


class CheckpointError(RuntimeError):
    """A workdir without a usable checkpoint, said in words a user can act on."""
