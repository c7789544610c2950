"""The scan LSTM equals flax's own LSTMCell stepped in a Python loop, and respects padding."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.models.lstm import LSTMLayer, reverse_padded

B, T, D, H = 3, 6, 5, 4


@pytest.fixture(scope="module")
def layer_and_params():
    layer = LSTMLayer(H)
    x = jax.random.normal(jax.random.key(0), (B, T, D))
    mask = jnp.ones((B, T), bool)
    params = jax.jit(layer.init)(jax.random.key(1), x, mask)["params"]
    return layer, params


def flax_cell_params(params):
    """Our fused [D,4H]/[H,4H] kernels, split into flax LSTMCell's per-gate Dense layers."""
    w_in = params["input"]["kernel"]
    bias = params["input"]["bias"]
    w_rec = params["recurrent"]["kernel"]
    out = {}
    for k, gate in enumerate("ifgo"):
        cols = slice(k * H, (k + 1) * H)
        out[f"i{gate}"] = {"kernel": w_in[:, cols]}
        out[f"h{gate}"] = {"kernel": w_rec[:, cols], "bias": bias[cols]}
    return out


def reference_loop(params, x, lengths, carry):
    """Step-by-step Python loop over flax's LSTMCell; stops each row at its length."""
    cell = nn.LSTMCell(H)
    cell_params = {"params": flax_cell_params(params)}
    c, h = carry
    outputs = np.zeros((B, T, H), np.float32)
    for t in range(T):
        (new_c, new_h), out = cell.apply(cell_params, (c, h), x[:, t])
        live = (t < lengths)[:, None]
        c = jnp.where(live, new_c, c)
        h = jnp.where(live, new_h, h)
        outputs[:, t] = np.where(live, out, 0.0)
    return outputs, (c, h)


@pytest.mark.parametrize("unroll", [1, 3])
def test_scan_lstm_equals_flax_cell_loop(layer_and_params, unroll):
    layer, params = layer_and_params
    x = jax.random.normal(jax.random.key(2), (B, T, D))
    lengths = jnp.array([6, 3, 1])
    mask = jnp.arange(T)[None, :] < lengths[:, None]
    init = (jax.random.normal(jax.random.key(3), (B, H)), jax.random.normal(jax.random.key(4), (B, H)))
    out, (c, h) = LSTMLayer(H, unroll=unroll).apply({"params": params}, x, mask, init)
    ref_out, (ref_c, ref_h) = reference_loop(params, x, lengths, init)
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c, ref_c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, ref_h, rtol=1e-5, atol=1e-6)


def test_final_carry_is_taken_at_last_real_token(layer_and_params):
    layer, params = layer_and_params
    x = jax.random.normal(jax.random.key(5), (1, T, D))
    short_out, short_carry = layer.apply({"params": params}, x[:, :3], jnp.ones((1, 3), bool))
    padded = x.at[:, 3:].set(123.0)  # garbage in the padding must not leak
    mask = jnp.arange(T)[None, :] < 3
    out, carry = layer.apply({"params": params}, padded, mask)
    np.testing.assert_allclose(carry[1], short_carry[1], rtol=1e-6)
    np.testing.assert_allclose(carry[0], short_carry[0], rtol=1e-6)
    np.testing.assert_allclose(out[:, :3], short_out, rtol=1e-6)
    assert np.all(np.asarray(out[:, 3:]) == 0.0)


def test_an_empty_row_keeps_its_initial_carry(layer_and_params):
    """A row with no real position (a filler row of a bucket's last batch) emits zeros and
    returns the carry it was given."""
    layer, params = layer_and_params
    x = jax.random.normal(jax.random.key(6), (2, T, D))
    mask = jnp.arange(T)[None, :] < jnp.array([[0], [4]])
    init = (jax.random.normal(jax.random.key(7), (2, H)), jax.random.normal(jax.random.key(8), (2, H)))
    out, carry = layer.apply({"params": params}, x, mask, init)
    np.testing.assert_array_equal(carry[0][0], init[0][0])
    np.testing.assert_array_equal(carry[1][0], init[1][0])
    assert np.all(np.asarray(out[0]) == 0.0)
    _, short = layer.apply({"params": params}, x[1:, :4], jnp.ones((1, 4), bool), (init[0][1:], init[1][1:]))
    np.testing.assert_allclose(carry[1][1:], short[1], rtol=1e-6)


def test_reverse_padded_reverses_only_real_tokens():
    x = jnp.array([[1, 2, 3, 0, 0], [4, 5, 6, 7, 8], [9, 0, 0, 0, 0]])
    lengths = jnp.array([3, 5, 1])
    rev = reverse_padded(x[..., None], lengths)[..., 0]
    np.testing.assert_array_equal(rev, [[3, 2, 1, 0, 0], [8, 7, 6, 5, 4], [9, 0, 0, 0, 0]])
    np.testing.assert_array_equal(reverse_padded(rev[..., None], lengths)[..., 0], x)
