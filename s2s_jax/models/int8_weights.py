"""int8 weights for serving on a CPU (`--int8`): the layers that read them, and the conversion.

Decoding one sentence reads every weight matrix once per step, so at batch 1 a step's time is
mostly the time to stream its float32 weights; int8 reads a quarter of the bytes
(s2s_jax/kernels/int8.py: each matrix quantized per output column, each input row per row).
A model whose `ModelConfig.int8` is set declares, in place of each matrix it multiplies by
(every Dense kernel, every recurrent W_hh and, with tied embeddings, the output layer's
embedding^T), the parameters `<name>_int8` (packed int8) and `<name>_scale`; embedding tables,
biases and everything else stay float32. `quantized(model, params)` turns a trained model and
its parameters into that form at load time; nothing is trained or saved in int8. Recurrences
then run as `nn.scan` steps (the fused CPU recurrence is float32-only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from s2s_jax.kernels import int8, loader

TIED_OUTPUT = "tied_output"  # the decoder's int8 copy of embedding^T when embeddings are tied


def _int8_zeros(key, shape, dtype=jnp.int8):
    del key
    return jnp.zeros(shape, jnp.int8)


def int8_matrix(module: nn.Module, name: str, rows: int, columns: int) -> int8.Int8Matrix:
    """The int8 [rows, columns] matrix `name` of `module` (declared as two parameters)."""
    packed = module.param(f"{name}_int8", _int8_zeros, (-(-rows // 4), columns, 4))
    scale = module.param(f"{name}_scale", nn.initializers.ones_init(), (columns,))
    return int8.Int8Matrix(packed=packed, scale=scale, k=rows)


class Int8Dense(nn.Module):
    """nn.Dense with its kernel in int8: x @ kernel (+ bias), float32 in and out."""

    features: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = int8.matmul(x.astype(jnp.float32), int8_matrix(self, "kernel", x.shape[-1], self.features))
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return y


def dense(features: int, *, int8_weights: bool, name: str, use_bias: bool = True, **float_options) -> nn.Module:
    """nn.Dense(features, ...), or with `int8_weights` its int8 form (the same name, so the same
    place in the parameter tree; `float_options` such as dtype and bias_init apply to nn.Dense)."""
    if int8_weights:
        return Int8Dense(features, use_bias=use_bias, name=name)
    return nn.Dense(features, use_bias=use_bias, name=name, **float_options)


def recurrent_product(
    module: nn.Module, h: jax.Array, hidden: int, gates: int, dtype: Any, int8_weights: bool, init: Callable
) -> jax.Array:
    """h @ W_hh ([hidden, gates * hidden], the parameter "kernel" of `module`) in float32."""
    if int8_weights:
        return int8.matmul(h.astype(jnp.float32), int8_matrix(module, "kernel", hidden, gates * hidden))
    kernel = module.param("kernel", init, (hidden, gates * hidden))
    return jnp.dot(h.astype(dtype), kernel.astype(dtype)).astype(jnp.float32)


def _convert(tree: Mapping) -> dict:
    """Every 2-D "kernel" (a Dense kernel or a W_hh) -> kernel_int8 + kernel_scale, recursively."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out[key] = _convert(value)
        elif key == "kernel" and getattr(value, "ndim", 0) == 2:
            matrix = int8.quantize(value)
            out["kernel_int8"], out["kernel_scale"] = matrix.packed, matrix.scale
        else:
            out[key] = value
    return out


def quantized(model, params: Mapping) -> tuple[Any, dict]:
    """(model, params) of a trained float32 Seq2Seq -> the same model reading int8 weights.

    ValueError for a model that computes in bfloat16 (int8 serving is a float32 model's)."""
    config = model.config
    if config.dtype != jnp.float32:
        raise ValueError("int8 weights need a float32 model (train.dtype = float32)")
    if jax.default_backend() == "cpu" and not int8.available():
        loader.warn_once(
            f"the int8 CPU kernel is missing ({int8.unavailable_reason()}): the int8 products run as XLA's "
            "int8 dot, slower than float32 (`pip install -e .` again with a C++ compiler on the PATH builds it)"
        )
    out = _convert(params)
    if config.tie_embeddings:
        table = params["decoder"]["embed"]["embedding"]
        matrix = int8.quantize(jnp.asarray(table).T)
        out["decoder"] = {**out["decoder"], TIED_OUTPUT: {"kernel_int8": matrix.packed, "kernel_scale": matrix.scale}}
    return type(model)(dataclasses.replace(config, int8=True, recurrence="scan")), out
