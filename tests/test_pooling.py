"""The reshape max-pool equals reduce_window max-pool in value and gradient, ties included,
through both ways of finding a window's first maximum (a comparison chain for small windows,
a two-operand reduction for large ones); the global max pooling layers' derivative is
``jnp.max``'s (ties split), and reaches the maximum through a recomputed producer."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model_import._layers import pooling
from model_import._layers.pooling import _blocked_max
from model_import._layers.registry import ConvertContext, Runtime, lookup


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


# ---------------------------------------------------------------------- global max pooling
def _global_max_layer(cls, data_format="channels_last", keepdims=False, rt=Runtime()):
    """The imported layer's ``x -> y``, as a model calls it."""
    config = {"data_format": data_format, "keepdims": keepdims}
    impl = lookup(cls)(config, ConvertContext(layer_name="gmp", class_name=cls))
    return lambda x: impl.call({}, x, rt=rt)


GLOBAL_CASES = [("GlobalMaxPooling1D", "channels_last", False, (2, 5, 3)),
                ("GlobalMaxPooling2D", "channels_last", False, (2, 5, 4, 3)),
                ("GlobalMaxPool2D", "channels_first", True, (2, 3, 4, 5)),
                ("GlobalMaxPooling3D", "channels_first", False, (1, 3, 2, 3, 2)),
                ("GlobalMaxPool3D", "channels_last", True, (1, 2, 3, 2, 3))]


def _layout(flat, spatial, fmt):
    """``(N, S, C)`` -> the layer's input layout, ``S`` unflattened to ``spatial``."""
    x = flat.reshape(flat.shape[0], *spatial, flat.shape[-1])
    return np.moveaxis(x, -1, 1) if fmt == "channels_first" else x


def test_global_max_pooling_is_jnp_max_in_value_and_gradient_ties_split():
    """Values bitwise ``jnp.max``'s; gradients ``jnp.max``'s (TensorFlow's ``reduce_max``
    rule) on random inputs; where two (three) elements equal the maximum each gets half (a
    third) of the cotangent, for every rank and both layouts, with and without
    ``keepdims``."""
    rng = np.random.default_rng(0)
    cases, xs, ties, gs, expected = [], [], [], [], []
    for cls, fmt, keep, shape in GLOBAL_CASES:
        cf = fmt == "channels_first"
        n, c = shape[0], shape[1 if cf else -1]
        spatial = shape[2:] if cf else shape[1:-1]
        axes = tuple(range(2, len(shape))) if cf else tuple(range(1, len(shape) - 1))
        cases.append((cls, fmt, keep, axes))
        xs.append(rng.normal(size=shape).astype(np.float32))
        flat = rng.normal(size=(n, math.prod(spatial), c)).astype(np.float32)
        share = np.zeros_like(flat)
        for i in range(n):
            for j in range(c):
                k = 3 if j == 0 else 2  # tied maxima of this slice
                at = rng.choice(flat.shape[1], k, replace=False)
                flat[i, at, j] = 5.0
                share[i, at, j] = 1.0 / k
        ties.append(_layout(flat, spatial, fmt))
        g = rng.normal(size=(n, 1, c)).astype(np.float32)
        g_layer = g[:, 0] if not keep else _layout(g, (1,) * len(spatial), fmt)
        gs.append(g_layer)
        expected.append(_layout(share * g, spatial, fmt))

    @jax.jit  # one program for every case
    def run(xs, ties, gs):
        out = []
        for (cls, fmt, keep, axes), x, tie, g in zip(cases, xs, ties, gs):
            y, pull = jax.vjp(_global_max_layer(cls, fmt, keep), x)
            y_ref, pull_ref = jax.vjp(lambda v: jnp.max(v, axis=axes, keepdims=keep), x)
            tied = jax.vjp(_global_max_layer(cls, fmt, keep), tie)[1](g)[0]
            dy = jax.jvp(_global_max_layer(cls, fmt, keep), (x,), (tie,))[1]  # forward mode
            dy_ref = jax.jvp(lambda v: jnp.max(v, axis=axes, keepdims=keep), (x,), (tie,))[1]
            out.append((y, pull(g)[0], y_ref, pull_ref(g)[0], tied, dy, dy_ref))
        return out

    for (y, dx, y_ref, dx_ref, tied, dy, dy_ref), case, want in zip(run(xs, ties, gs), cases,
                                                                    expected):
        assert y.shape == y_ref.shape and np.asarray(y).tobytes() == np.asarray(y_ref).tobytes()
        np.testing.assert_array_equal(dx, dx_ref, err_msg=str(case))
        np.testing.assert_array_equal(dy, dy_ref, err_msg=str(case))
        np.testing.assert_allclose(tied, want, rtol=1e-6, atol=0, err_msg=str(case))


@pytest.mark.parametrize("cls,fmt,keep,shape", [GLOBAL_CASES[1], GLOBAL_CASES[2]],
                         ids=["2d", "2d-channels-first-keepdims"])
def test_global_max_pooling_passes_its_gradient_through_a_recomputed_producer(cls, fmt, keep,
                                                                              shape):
    """Each slice's maximum gets its whole cotangent when the pooled values come from an
    element-wise producer (a per-channel affine map, as a normalization ends) that XLA may
    compute twice with different roundings: ``jnp.max``'s derivative, to the elements equal
    to the maximum computed apart, dropped the term of 1 (2) of the 6 slices of the first
    (second) case under the suite's XLA flags (``scripts/test_env.sh``), jax 0.10.2. The
    analytic gradient of ``sum(max(a * u + b))`` is ``a`` at the maximum's position, 0
    elsewhere."""
    rng = np.random.default_rng(0)
    cf = fmt == "channels_first"
    c = shape[1 if cf else -1]
    z = rng.normal(size=shape).astype(np.float32)
    mu, var, gamma, beta = (rng.normal(size=c).astype(np.float32) for _ in range(4))
    scale = gamma / np.sqrt(np.abs(var) + np.float32(1e-3))
    channel = (1, c) + (1,) * (len(shape) - 2) if cf else (c,)
    layer = _global_max_layer(cls, fmt, keep)

    @jax.jit
    def grad(u):
        def f(u):
            x = (u - mu.reshape(channel)) * scale.reshape(channel) + beta.reshape(channel)
            return layer(x).sum()
        return jax.grad(f)(u)

    g = np.asarray(grad(z))
    axes = tuple(range(2, len(shape))) if cf else tuple(range(1, len(shape) - 1))
    np.testing.assert_array_equal((g != 0).sum(axis=axes), 1)  # one position per slice...
    want = np.broadcast_to(scale, (shape[0], c))
    np.testing.assert_allclose(g.sum(axis=axes), want, rtol=1e-6)  # ...with the whole term


def test_the_first_maximum_shares_when_no_element_equals_the_maximum():
    """The derivative's weights when the maximum was computed from values rounded apart (one
    ulp above every element): the first maximum takes it all; exact ties still split; a NaN
    maximum (``jnp.max``'s value) passes it to the first NaN."""
    x = jnp.asarray([[1.0, 3.0, 3.0, 2.0], [1.0, 3.0, 2.0, 3.0], [1.0, np.nan, 3.0, np.nan]],
                    jnp.float32)
    up = np.nextafter(np.float32(3.0), np.float32(4.0))
    mask, count = pooling._max_positions(x, jnp.asarray([[3.0], [up], [np.nan]]), 1)
    np.testing.assert_array_equal(mask, [[0, 1, 1, 0], [0, 1, 0, 0], [0, 1, 0, 0]])
    np.testing.assert_array_equal(count, [[2], [1], [1]])
