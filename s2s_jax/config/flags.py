"""The `--config` flag of the commands: a get_config() file or a built-in name, `--config.x=y`
overrides, and flag mistakes as one line instead of a traceback."""

from __future__ import annotations

import os
import re
import sys
import traceback

from ml_collections import config_flags
from ml_collections.config_flags.config_flags import ConfigFileFlagParser

import s2s_jax
from s2s_jax.errors import ConfigError

_PACKAGE_DIR = os.path.dirname(os.path.abspath(s2s_jax.__file__))
CONFIG_DIR = os.path.join(_PACKAGE_DIR, "configs")


def _is_ours(filename: str) -> bool:
    """A frame of this package (built-in configs aside) or of the command's script: not the config file."""
    path = os.path.abspath(filename)
    in_package = path.startswith(_PACKAGE_DIR + os.sep) and not path.startswith(CONFIG_DIR + os.sep)
    return in_package or path == os.path.abspath(sys.argv[0])


def _flag_error_message(err: BaseException, argv: list[str]) -> str:
    """A sentence for an exception ml_collections raised while applying --config overrides."""
    if isinstance(err, SyntaxError):
        where = f"{err.filename}:{err.lineno}" if err.filename else "the --config file"
        return f"{where}: {err.msg} (a syntax error in the config file)"
    text = str(err.args[0] if err.args else err)
    names = re.findall(r"[A-Za-z_]\w*", text)
    key = names[0] if names else ""
    suggestion = re.search(r'Did you mean "(\w+)"', text)
    offending = [
        a.split("=", 1)[0] for a in argv if a.startswith("--config.") and key and f".{key}" in a.split("=", 1)[0]
    ]
    if isinstance(err, (AttributeError, KeyError)) and offending:
        hint = f"; did you mean {suggestion.group(1)!r}?" if suggestion else ""
        return f"{offending[0]}: the config has no key {key!r}{hint} (s2s_jax/configs/default.py lists every key)"
    first = text.strip().splitlines()[0] if text.strip() else ""
    # An exception raised inside the user's config file: point at its line.
    frames = [f for f in traceback.extract_tb(err.__traceback__) if "site-packages" not in f.filename]
    frames = [f for f in frames if not _is_ours(f.filename)]
    where = f"{frames[-1].filename}:{frames[-1].lineno}: " if frames else ""
    return f"{where}{type(err).__name__}: {first} (while loading --config and its overrides)"


def parse_flags(argv: list[str]) -> list[str]:
    """absl `flags_parser` for the commands that take `--config`: flag errors as one line on stderr, exit status 1.

    absl turns its own flag errors into 'FATAL Flags parsing error: ...', but a
    misspelt `--config.section.key` raises AttributeError/KeyError from
    ml_collections and a config file with a syntax error raises SyntaxError,
    which would end in a traceback. Use as `app.run(main, flags_parser=parse_flags)`.
    """
    from absl import app

    try:
        return app.parse_flags_with_usage(argv)
    except Exception as err:  # noqa: BLE001 -- anything a config file or override can raise
        sys.stderr.write(f"FATAL Flags parsing error: {_flag_error_message(err, argv)}\n")
        sys.stderr.write("Pass --helpshort or --helpfull to see help on flags.\n")
        sys.exit(1)


def check_loaded(config) -> None:
    """Turns a --config file that failed to load (ml_collections defers that error to the
    first use of the config) into a ConfigError."""
    try:
        config.get("seed")
    except ConfigError:
        raise
    except Exception as err:  # ml_collections reports OSError, ImportError, SyntaxError, ...
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = " ".join(lines[-2:]) if lines else type(err).__name__
        raise ConfigError(f"cannot load the --config file: {detail}") from None


# ---------------------------------------------------------------------------
# --config NAME: the built-in configs shipped in s2s_jax/configs
# ---------------------------------------------------------------------------


def builtin_configs() -> list[str]:
    """The names `--config` accepts besides a path: the modules in s2s_jax/configs."""
    return sorted(
        name[: -len(".py")] for name in os.listdir(CONFIG_DIR) if name.endswith(".py") and not name.startswith("_")
    )


def resolve_config_arg(value: str) -> str:
    """`--config`'s value with a built-in name replaced by its file: 'quickstart[:arg]' ->
    '.../s2s_jax/configs/quickstart.py[:arg]'.

    An existing file wins over a name, and anything that looks like a path (has a
    directory part or ends in .py) is passed on unchanged, so a missing file is still
    reported when the config is first used ('cannot load the --config file'). Any
    other value raises ValueError listing the built-in names.
    """
    path, sep, arg = value.partition(":")
    if not path or os.path.exists(path) or "/" in path or os.sep in path or path.endswith(".py"):
        return value
    names = builtin_configs()
    if path in names:
        return os.path.join(CONFIG_DIR, f"{path}.py") + sep + arg
    raise ValueError(
        f"{path!r} is neither a config file nor a built-in config name; "
        f"built-in names: {', '.join(names)} (or pass the path of a get_config() file)"
    )


class ConfigFileOrNameParser(ConfigFileFlagParser):
    """ml_collections' --config parser that also accepts a built-in config name."""

    def parse(self, path):
        return super().parse(resolve_config_arg(path))


def define_config_flag(
    name: str = "config", help_string: str | None = None, flag_values=None, lock_config: bool = True, **kwargs
):
    """`config_flags.DEFINE_config_file` whose value may also be a built-in config name.

    `--config quickstart`, `--config quickstart:arg`, `--config path/to/file.py[:arg]`;
    `--config.x.y=z` overrides work as with DEFINE_config_file. The name is resolved by
    the flag's parser, so absl reports an unknown name as a flag error
    ('FATAL Flags parsing error: flag --config=...: ...', exit status 1 with parse_flags).
    """
    from absl import flags

    flag_values = flags.FLAGS if flag_values is None else flag_values
    if help_string is None:
        help_string = f"A get_config() file (path[:arg]) or a built-in config name: {', '.join(builtin_configs())}."
    holder = config_flags.DEFINE_config_file(
        name, None, help_string, flag_values=flag_values, lock_config=lock_config, **kwargs
    )
    flag_values[name].parser = ConfigFileOrNameParser(name=name, lock_config=lock_config)
    return holder
