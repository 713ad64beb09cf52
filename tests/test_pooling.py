"""The reshape max-pool equals reduce_window max-pool in value and gradient, ties included,
through both ways of finding a window's first maximum (a comparison chain for small windows,
a two-operand reduction for large ones)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model_import._layers import pooling
from model_import._layers.pooling import _blocked_max


CASES = [((2, 7, 9, 3), (2, 2)), ((2, 8, 8, 3), (2, 2)), ((2, 9, 9, 4), (3, 3)),
         ((2, 10, 5), (2,)), ((1, 6, 4, 4, 2), (2, 2, 2)),
         ((2, 11, 10, 3), (5, 5)), ((2, 45, 3), (20,))]  # beyond _CHAIN_MAX: the reduction


@pytest.fixture(params=["default", "reduction only"])
def way(request, monkeypatch):
    if request.param == "reduction only":
        monkeypatch.setattr(pooling, "_CHAIN_MAX", 0)
    return request.param


@pytest.mark.parametrize("shape,pool", CASES)
def test_blocked_max_matches_reduce_window_with_ties(shape, pool, way):
    x = jax.random.normal(jax.random.key(0), shape)
    x = jnp.where(x < 0, 0.25, x)  # many tied window maxima, as ReLU(bias) gives in blank areas

    @jax.jit  # one compiled program per case (eager, every primitive compiles on its own)
    def both(x, g):
        out = []
        for f in (lambda v: _blocked_max(v, pool), lambda v: nn.max_pool(v, pool, pool, "VALID")):
            y, pull = jax.vjp(f, x)
            out.append((y, pull(g)[0]))
        return out

    g_shape = jax.eval_shape(lambda v: _blocked_max(v, pool), x).shape
    (y, dx), (y_ref, dx_ref) = both(x, jax.random.normal(jax.random.key(1), g_shape))
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dx, dx_ref)  # first maximum gets it all


def test_every_window_passes_its_gradient_through_a_recomputed_producer(way):
    """One position of each window gets the cotangent when the pooled values come from an
    element-wise producer that XLA may fuse into several consumers (an inference batch
    normalization): finding the maximum and its position apart, by comparing the values
    with their maximum, lost windows under XLA:CPU's backend optimization level 0."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3, 12, 10, 6)).astype(np.float32)
    mu, var, gamma, beta = (rng.normal(size=6).astype(np.float32) for _ in range(4))

    @jax.jit
    def grad(u):
        def f(u):
            x = (u - mu) / jnp.sqrt(np.abs(var) + 1e-3) * gamma + beta
            return _blocked_max(x, (2, 2)).sum()
        return jax.grad(f)(u)

    g = np.asarray(grad(z)).reshape(3, 6, 2, 5, 2, 6)
    np.testing.assert_array_equal((g != 0).sum(axis=(2, 4)), 1)


@pytest.mark.parametrize("pool", [(2, 2), (5, 5)])
def test_a_nan_window_is_nan_and_passes_its_gradient_to_one_position(pool, way):
    x = jnp.zeros((1, 10, 10, 2)).at[0, 1, 1, 0].set(jnp.nan)
    y, pull = jax.vjp(lambda v: _blocked_max(v, pool), x)
    assert jnp.isnan(y[0, 0, 0, 0]) and not jnp.isnan(y[0, 0, 0, 1])
    assert int(jnp.isnan(y).sum()) == 1
    dx = np.asarray(pull(jnp.ones_like(y))[0])
    assert dx[0, 1, 1, 0] == 1.0  # the NaN is the window's maximum
    assert dx.sum() == y.size  # one position per window
