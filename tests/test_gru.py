"""The scan GRU equals flax's own GRUCell (reset-after, as torch.nn.GRU) stepped in a Python loop."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.models.gru import GRULayer

B, T, D, H = 3, 6, 5, 4


def flax_cell_params(params):
    """Our fused [D,3H] input and [H,3H] recurrent kernels, split into GRUCell's per-gate Dense layers."""
    w_in, b_in = params["input"]["kernel"], params["input"]["bias"]
    w_rec = params["recurrent"]["kernel"]
    out = {}
    for k, gate in enumerate("rzn"):
        cols = slice(k * H, (k + 1) * H)
        out[f"i{gate}"] = {"kernel": w_in[:, cols], "bias": b_in[cols]}
        out[f"h{gate}"] = {"kernel": w_rec[:, cols]}
    out["hn"]["bias"] = params["recurrent"]["bias_n"]
    return out


@pytest.mark.parametrize("unroll", [1, 3])
def test_scan_gru_equals_flax_cell_loop(unroll):
    x = jax.random.normal(jax.random.key(2), (B, T, D))
    lengths = jnp.array([6, 3, 1])
    mask = jnp.arange(T)[None, :] < lengths[:, None]
    params = jax.jit(GRULayer(H).init)(jax.random.key(1), x, mask)["params"]
    # non-zero hidden bias, so that its place (inside r * (W_hn h + b_hn)) matters
    params["recurrent"]["bias_n"] = jax.random.normal(jax.random.key(5), (H,))
    init = jax.random.normal(jax.random.key(3), (B, H))
    out, h = GRULayer(H, unroll=unroll).apply({"params": params}, x, mask, init)

    cell, cell_params = nn.GRUCell(H), {"params": flax_cell_params(params)}
    ref_h, ref_out = init, np.zeros((B, T, H), np.float32)
    for t in range(T):
        new_h, step_out = cell.apply(cell_params, ref_h, x[:, t])
        live = (t < lengths)[:, None]
        ref_h = jnp.where(live, new_h, ref_h)
        ref_out[:, t] = np.where(live, step_out, 0.0)
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, ref_h, rtol=1e-5, atol=1e-6)
    # one step alone (decoding) is the same function as the scan
    one, h1 = GRULayer(H).apply({"params": params}, x[:, :1], mask[:, :1], init)
    np.testing.assert_allclose(one[:, 0], ref_out[:, 0], rtol=1e-5, atol=1e-6)
