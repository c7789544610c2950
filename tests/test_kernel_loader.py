"""The kernels' shared loader (s2s_jax/kernels/loader.py): a missing extension says why, and
`portable()` switches every kernel to its pure-JAX path while tracing."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from s2s_jax.kernels import int8, loader


def test_a_missing_extension_is_none_with_the_reason():
    module, why = loader.load("no_such_kernel_cpu")
    assert module is None
    assert why == "it was not built when s2s-jax was installed"
    assert loader.isa(None) == "none"


def test_a_built_extension_loads_with_no_reason():
    module, why = loader.load("int8_cpu")
    if module is None:
        assert why  # not built here: the reason is what int8 reports
        assert int8.unavailable_reason() == why
        return
    assert why == "" and loader.isa(module) == int8.isa()


def test_portable_traces_no_custom_call():
    x = np.ones((2, 8), np.float32)
    mat = int8.quantize(np.ones((8, 4), np.float32))
    assert not loader.portable_only()
    with loader.portable():
        assert loader.portable_only()
        text = jax.jit(int8.matmul).lower(x, mat).as_text()
    assert not loader.portable_only()
    assert "s2s_int8_matmul" not in text


@pytest.mark.slow
def test_every_kernel_takes_the_same_instruction_set_cap():
    """S2S_JAX_KERNEL_ISA caps every built kernel alike (s2s_jax/kernels/cpu/ffi_module.h); the
    default is each kernel's widest."""
    modules = [m for m in ("int8", "recurrence", "top_log_probs") if loader.load(f"{m}_cpu")[0] is not None]
    if not modules:
        pytest.skip("no kernel was built here")
    code = (
        "from s2s_jax.kernels import "
        + ", ".join(modules)
        + "; print("
        + ", ".join(f"{m}.isa()" for m in modules)
        + ")"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def isas(cap: str) -> list[str]:
        env = {**os.environ, "S2S_JAX_KERNEL_ISA": cap, "JAX_PLATFORMS": "cpu"}
        done = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.split()

    assert isas("generic") == ["generic"] * len(modules)
    widest = isas("")
    assert isas("avx512") == widest  # the cap names the widest family: no narrower than unset
    if all(isa != "generic" for isa in widest):
        assert isas("avx2") == ["avx2"] * len(modules)
