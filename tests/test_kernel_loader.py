"""The kernels' shared loader (s2s_jax/kernels/loader.py): a missing extension says why, and
`portable()` switches every kernel to its pure-JAX path while tracing."""

from __future__ import annotations

import jax
import numpy as np

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
