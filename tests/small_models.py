"""Small models shared by several test files."""

import jax.numpy as jnp
import numpy as np

import jaxsal


def smooth_model(shape=(5, 4, 2)):
    """A smooth 4-class function of ``(N, *shape)`` inputs (40 features): tanh hidden layer,
    no ReLU, no bias, so integrated gradients and GradientSHAP are exact up to their
    quadrature or sampling error."""
    rng = np.random.default_rng(3)
    params = {"w1": jnp.asarray(rng.normal(size=(40, 16)) * 0.3, jnp.float32),
              "w2": jnp.asarray(rng.normal(size=(16, 4)), jnp.float32)}

    def f(p, x):
        return jnp.tanh(x.reshape(x.shape[0], -1) @ p["w1"]) @ p["w2"]

    return jaxsal.FunctionModel(f, params, input_shape=shape)


def token_sum_model():
    """``(model, table, ids)``: a model of token ids ``(N, 4)`` (vocabulary 10) scoring the
    sum of one number per token, and its negative: every token's effect is additive."""
    table = jnp.asarray(np.random.default_rng(2).normal(size=(10, 1)), jnp.float32)

    def f(p, ids):
        return p[ids][..., 0].sum(1, keepdims=True) * jnp.asarray([[1.0, -1.0]])

    ids = jnp.asarray([[1, 4, 7, 2], [3, 3, 9, 0]], jnp.int32)
    return jaxsal.FunctionModel(f, table), table, ids


def grid_regions():
    """XRAI's regions for 28x28 inputs: two grids, of 7x7 and of 4x4 pixel cells, each cell
    dilated by one pixel (``(65, 28, 28)``, for every input)."""
    yy, xx = np.mgrid[:28, :28]
    labels = np.stack([(yy // 7) * 4 + xx // 7, (yy // 4) * 7 + xx // 4])
    return jaxsal.segment_masks(labels[None], dilation=1)[0]
