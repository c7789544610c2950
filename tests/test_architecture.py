"""The package's seams: no module uses another module's underscore names (the layers themselves
are checked by `lint-imports`, which .ci/run runs)."""

import ast
import pathlib

import s2s_jax

PACKAGE = pathlib.Path(s2s_jax.__file__).parent


def private_uses(path: pathlib.Path) -> list[str]:
    """`from s2s_jax.x import _y` and `x._y` where x names an s2s_jax module, in one file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("s2s_jax"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{path.name}:{node.lineno}: from {node.module} import {alias.name}")
                if node.module == "s2s_jax" or (PACKAGE / node.module.split(".", 1)[-1].replace(".", "/")).is_dir():
                    modules.add(alias.asname or alias.name)  # a module imported by name
        elif isinstance(node, ast.Import):
            modules.update(a.asname or a.name for a in node.names if a.name.startswith("s2s_jax"))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_another_modules_underscore_names():
    found = [use for path in sorted(PACKAGE.rglob("*.py")) for use in private_uses(path)]
    assert found == []


def test_the_check_sees_an_underscore_use(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from s2s_jax.decoding import inference\nfrom s2s_jax.data.text import _decoded_lines\ninference._rows(1, 2)\n"
    )
    assert private_uses(bad) == ["bad.py:2: from s2s_jax.data.text import _decoded_lines", "bad.py:3: inference._rows"]
