"""Every name-valued config key is checked against the registry that builds it, and
configs/default.py documents exactly those names."""

import re

import pytest

from s2s_jax import errors
from s2s_jax.config import checks
from s2s_jax.configs import default


def documented_choices(key: str) -> list[str]:
    """The `a | b | c` list in the comment on the line that sets `key` in default.py."""
    section, name = key.split(".")
    with open(default.__file__, encoding="utf-8") as f:
        for line in f:
            if re.match(rf"\s*{section}\.{name} = ", line):
                comment = line.split("#", 1)[1]
                return [part.strip().split()[0] for part in comment.split(":")[0].split("(")[0].split("|")]
    raise AssertionError(f"{key} is not set in {default.__file__}")


@pytest.mark.parametrize("key", sorted(checks.choices()))
def test_default_config_documents_exactly_the_registered_choices(key):
    assert documented_choices(key) == list(checks.choices()[key])


@pytest.mark.parametrize("key", sorted(checks.choices()))
def test_a_name_outside_the_registry_is_refused_naming_the_choices(key):
    config = default.get_config()
    section, name = key.split(".")
    with config.unlocked():
        setattr(config[section], name, "nonsense")
    with pytest.raises(errors.ConfigError) as err:
        checks.validate(config)
    assert str(err.value) == f"{key} must be one of {', '.join(checks.choices()[key])}, got 'nonsense'"


def test_every_registered_choice_validates():
    for key, allowed in checks.choices().items():
        for value in allowed:
            config = default.get_config()
            section, name = key.split(".")
            setattr(config[section], name, value)
            checks.validate(config)
