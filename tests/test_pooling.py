"""The reshape max-pool equals reduce_window max-pool in value and gradient, ties included,
through both ways of finding a window's first maximum (a comparison chain for small windows,
a two-operand reduction for large ones); the derivative of the importer's other max (min)
reductions -- global max pooling, Keras 3's ``ops.max``/``amax``/``min``/``amin``,
``ops.ptp``, tf.keras's ``reduce_max``/``reduce_min`` and ``tf.norm(ord=inf)``, adaptive
max pooling's bins -- is ``jnp.max``'s (``jnp.ptp``'s; ties split), and reaches the maximum
through a recomputed producer."""

import functools
import math
import warnings

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


# ------------------------------------------------------------- global max and max/min reductions
def _site(cls, config, rt=Runtime(), **kw):
    """The imported layer's (Keras 3 operation's, tf.keras function's) ``x -> y``, as a model
    calls it (``kw``: a ``TFOpLambda``'s call arguments)."""
    impl = lookup(cls)(config, ConvertContext(layer_name="r", class_name=cls))
    return lambda x: impl.call({}, x, rt=rt, **kw)


def _global_max_layer(cls, data_format="channels_last", keepdims=False, rt=Runtime()):
    return _site(cls, {"data_format": data_format, "keepdims": keepdims}, rt)


def _gmp(cls, fmt, keep, shape):
    """A global max pooling case: ``(name, x -> y, "max", reduced axes, keepdims, shape)``."""
    n = len(shape) - 2
    axes = tuple(range(2, 2 + n)) if fmt == "channels_first" else tuple(range(1, 1 + n))
    return (f"{cls}-{fmt}-{keep}", _global_max_layer(cls, fmt, keep), "max", axes, keep, shape)


def _tf(fn, axis, keepdims):
    return _site("TFOpLambda", {"function": fn}, axis=axis, keepdims=keepdims)


#: every importer site of a float max (min) reduction, TensorFlow's/jnp.max's tie rule:
#: ``(name, x -> y, kind, the axes it reduces, keepdims, input shape)``
REDUCTION_CASES = [
    _gmp("GlobalMaxPooling1D", "channels_last", False, (2, 5, 3)),
    _gmp("GlobalMaxPooling2D", "channels_last", False, (2, 5, 4, 3)),
    _gmp("GlobalMaxPool2D", "channels_first", True, (2, 3, 4, 5)),
    _gmp("GlobalMaxPooling3D", "channels_first", False, (1, 3, 2, 3, 2)),
    _gmp("GlobalMaxPool3D", "channels_last", True, (1, 2, 3, 2, 3)),
    ("ops.max-axes-1-3", _site("ops.Max", {"axis": [1, 3], "keepdims": False}), "max",
     (1, 3), False, (2, 3, 4, 3)),
    ("ops.amin--1-0-keepdims", _site("ops.Amin", {"axis": [-1, 0], "keepdims": True}), "min",
     (0, 2), True, (3, 2, 4)),
    ("tf.reduce_max-None-keepdims", _tf("math.reduce_max", None, True), "max", (0, 1, 2), True,
     (2, 3, 2)),
    ("tf.reduce_min-2--3", _tf("math.reduce_min", [2, -3], False), "min", (0, 2), False,
     (2, 3, 4)),
    ("ops.ptp--1-1", _site("ops.Ptp", {"axis": [-1, 1], "keepdims": False}), "ptp", (1, 3),
     False, (2, 3, 4, 3)),
    ("ops.nanmax-0-2-keepdims", _site("ops.Nanmax", {"axis": [0, 2], "keepdims": True}), "max",
     (0, 2), True, (3, 2, 4)),
    ("ops.nanmin--1", _site("ops.Nanmin", {"axis": [-1], "keepdims": False}), "min", (2,),
     False, (2, 3, 4))]

#: each kind's reference (``ptp``: max - min)
_REFS = {"max": jnp.max, "min": jnp.min, "ptp": jnp.ptp}


def _tied(rng, shape, axes, value):
    """``(x, share)``: random normal ``x`` of ``shape`` whose every slice over ``axes`` holds
    ``value`` at 3 (then 2, alternately) random positions, and ``share`` 1/3 (1/2) there,
    0 elsewhere: the share of the slice's cotangent each element gets."""
    rest = [i for i in range(len(shape)) if i not in axes]
    moved = [shape[i] for i in rest] + [shape[i] for i in axes]
    flat = rng.normal(size=(math.prod(moved[:len(rest)]), math.prod(moved[len(rest):])))
    share = np.zeros_like(flat)
    for i in range(flat.shape[0]):
        k = 3 - i % 2
        at = rng.choice(flat.shape[1], k, replace=False)
        flat[i, at], share[i, at] = value, 1.0 / k
    back = np.argsort(rest + list(axes))  # the inverse permutation
    return (flat.reshape(moved).transpose(back).astype(np.float32),
            share.reshape(moved).transpose(back).astype(np.float32))


def test_max_reductions_are_jnp_max_in_value_and_gradient_ties_split():
    """Values bitwise ``jnp.max``'s (``jnp.min``'s); gradients, reverse and forward mode,
    ``jnp.max``'s (TensorFlow's ``reduce_max`` rule) on random inputs; where two (three)
    elements equal the maximum each gets half (a third) of the cotangent: the global max
    pooling layers (every rank, both layouts, with and without ``keepdims``), Keras 3's
    ``ops.max``/``amin``/``nanmax``/``nanmin`` and tf.keras's ``reduce_max``/``reduce_min``
    over axes that are not consecutive, negative, or ``None``; ``ops.ptp`` (``jnp.ptp``'s:
    the maximum's share minus the minimum's cotangent)."""
    rng = np.random.default_rng(0)
    xs, ties, gs, expected = [], [], [], []
    for name, f, kind, axes, keep, shape in REDUCTION_CASES:
        xs.append(rng.normal(size=shape).astype(np.float32))
        tie, share = _tied(rng, shape, axes, -5.0 if kind == "min" else 5.0)
        g = rng.normal(size=np.max(np.zeros(shape), axis=axes, keepdims=keep).shape)
        g = (g if keep else np.expand_dims(g, axes)).astype(np.float32)
        want = share * g
        if kind == "ptp":  # random values: one minimum
            want = want - _at_first(tie, axes, "min") * g
        ties.append(tie)
        gs.append(g if keep else np.squeeze(g, axes))
        expected.append(want)

    @jax.jit  # one program for every case
    def run(xs, ties, gs):
        out = []
        for (name, f, kind, axes, keep, shape), x, tie, g in zip(REDUCTION_CASES, xs, ties, gs):
            ref = functools.partial(_REFS[kind], axis=axes, keepdims=keep)
            y, pull = jax.vjp(f, x)
            y_ref, pull_ref = jax.vjp(ref, x)
            tied = jax.vjp(f, tie)[1](g)[0]
            dy, dy_ref = jax.jvp(f, (x,), (tie,))[1], jax.jvp(ref, (x,), (tie,))[1]
            out.append((y, pull(g)[0], y_ref, pull_ref(g)[0], tied, dy, dy_ref))
        return out

    for (y, dx, y_ref, dx_ref, tied, dy, dy_ref), case, want in zip(
            run(xs, ties, gs), REDUCTION_CASES, expected):
        assert y.shape == y_ref.shape and np.asarray(y).tobytes() == np.asarray(y_ref).tobytes()
        np.testing.assert_array_equal(dx, dx_ref, err_msg=case[0])
        np.testing.assert_array_equal(dy, dy_ref, err_msg=case[0])
        np.testing.assert_allclose(tied, want, rtol=1e-6, atol=0, err_msg=case[0])


def test_integer_reductions_are_jnp_max_itself():
    """Integer inputs are reduced by ``jnp.max`` (``jnp.min``, ``jnp.ptp``), without
    the custom rule: the same values and dtype, and nothing else traced."""
    for name, f, kind, axes, keep, shape in REDUCTION_CASES[5:]:
        x = np.arange(math.prod(shape), dtype=np.int32).reshape(shape) % 7
        ref = functools.partial(_REFS[kind], axis=axes, keepdims=keep)
        assert "custom_jvp_call" not in str(jax.make_jaxpr(f)(x)), name
        y = f(x)
        assert y.dtype == ref(x).dtype and np.array_equal(y, ref(x)), name


def test_an_empty_batch_differentiates_as_jnp_max():
    """Over an input with a zero-size axis that is not reduced (an empty batch), reverse and
    forward mode give ``jnp.max``'s (``jnp.min``'s) empty derivatives, of the same shapes
    and dtypes (an empty array has no values to compare): the rule's reshape of the reduced
    axes into one divided by zero where it inferred their size. An empty *reduced* axis
    raises ``jnp.max``'s ValueError (no identity without ``initial``)."""
    cases = [("max", (0, 5), 1, False), ("min", (0, 3, 2), (1, 2), True),
             ("max", (2, 0, 3), (0, 2), False), ("min", (2, 0, 3), (2, 0), True)]

    def derivatives(x, case, robust):
        kind, _, axes, keep = case
        f = functools.partial((pooling.reduce_max if kind == "max" else pooling.reduce_min)
                              if robust else (jnp.max if kind == "max" else jnp.min),
                              axis=axes, keepdims=keep)
        y, pull = jax.vjp(f, x)
        return y, pull(y)[0], jax.jvp(f, (x,), (x,))[1]

    @jax.jit  # one program for every case
    def run(xs):
        return [[derivatives(x, case, robust) for robust in (True, False)]
                for x, case in zip(xs, cases)]

    for (got, want), case in zip(run([jnp.zeros(c[1]) for c in cases]), cases):
        assert [(v.shape, v.dtype) for v in got] == [(v.shape, v.dtype) for v in want], case
    for f in (pooling.reduce_max, jnp.max, pooling.reduce_min, jnp.min):
        with pytest.raises(ValueError, match="zero-size array"):
            jax.eval_shape(jax.grad(lambda x: f(x, axis=1).sum()), jnp.zeros((2, 0)))


def _affine(rng, shape, channel_axis):
    """``(z, u -> a * u + b, a)``: a random input and a per-channel affine map of it (as a
    normalization ends), ``a`` shaped to broadcast against ``z``."""
    c = shape[channel_axis]
    z = rng.normal(size=shape).astype(np.float32)
    mu, var, gamma, beta = (rng.normal(size=c).astype(np.float32) for _ in range(4))
    scale = gamma / np.sqrt(np.abs(var) + np.float32(1e-3))
    at = [1] * len(shape)
    at[channel_axis] = c
    mu, scale, beta = (v.reshape(at) for v in (mu, scale, beta))
    return z, lambda u: (u - mu) * scale + beta, scale


def _at_first(v, axes, kind):
    """NumPy: 1 at the first maximum (``kind="min"``: minimum) of each slice of ``v`` over
    ``axes``, 0 elsewhere."""
    rest = [i for i in range(v.ndim) if i not in axes]
    moved = np.transpose(v, rest + list(axes))
    flat = moved.reshape(*moved.shape[:len(rest)], -1)
    first = (np.argmax if kind == "max" else np.argmin)(flat, axis=-1)
    hot = np.arange(flat.shape[-1]) == first[..., None]
    return hot.reshape(moved.shape).transpose(np.argsort(rest + list(axes)))


@pytest.mark.parametrize("case,channel", [
    (REDUCTION_CASES[1], 3), (REDUCTION_CASES[2], 1), (REDUCTION_CASES[5], 3),
    (REDUCTION_CASES[8], 2), (REDUCTION_CASES[9], 3), (REDUCTION_CASES[10], 0),
    (("tf.norm-inf-axis-1", _site("TFOpLambda", {"function": "compat.v1.norm"}, ord=np.inf,
                                  axis=1), "max-abs", (1,), False, (3, 5, 4)), 0),
    (("ops.norm-inf-axis-1", _site("ops.Norm", {"ord": np.inf, "axis": [1], "keepdims": False}),
      "max-abs", (1,), False, (3, 5, 4)), 1),
    (("ops.norm--inf-axis--1", _site("ops.Norm", {"ord": -np.inf, "axis": [-1],
                                                   "keepdims": False}),
      "min-abs", (2,), False, (3, 5, 4)), 2)],
    ids=lambda c: c[0] if isinstance(c, tuple) else f"affine-axis-{c}")
def test_max_reductions_pass_their_gradient_through_a_recomputed_producer(case, channel):
    """Each slice's maximum (minimum) gets its whole cotangent when the reduced values come
    from an element-wise producer (an affine map along axis ``channel``, as a normalization
    ends) that XLA may compute twice with different roundings: ``jnp.max``'s derivative, to
    the elements equal to the maximum computed apart, dropped the term of 1 of 6 slices of
    ``GlobalMaxPooling2D``, 2 of 6 of its channels-first case, 6 of 8 of ``ops.max`` over
    axes (1, 3), 1 of 3 of ``reduce_min`` over (2, -3), 3 of 12 of ``tf.norm(ord=inf)``, 1
    of 12 of Keras 3's ``ops.norm(ord=inf)`` and 4 of 15 of ``ops.norm(ord=-inf)``
    (``jnp.linalg.norm``) (``jnp.ptp``'s: 7 of 8 slices of ``ops.ptp`` over (-1, 1) wrong)
    under the suite's XLA flags (``scripts/test_env.sh``), jax 0.10.2. The analytic gradient
    of ``sum(max(a * u + b))`` is ``a`` at the maximum's position, 0 elsewhere (``max(|.|)``:
    ``a * sign``; ``min(|.|)`` likewise at the minimum)."""
    name, f, kind, axes, keep, shape = case
    z, affine, scale = _affine(np.random.default_rng(0), shape, channel)
    g = np.asarray(jax.jit(jax.grad(lambda u: f(affine(u)).sum()))(z))
    x = affine(z)  # in NumPy: the same float32 operations; no near-ties in random data
    if kind in ("max-abs", "min-abs"):
        want = _at_first(np.abs(x), axes, kind[:3]) * scale * np.sign(x)
    elif kind == "ptp":  # max - min: a at the maximum, -a at the minimum
        want = (_at_first(x, axes, "max") * 1.0 - _at_first(x, axes, "min")) * scale
    else:
        want = _at_first(x, axes, kind) * scale
    # one position per slice (ptp: two)...
    np.testing.assert_array_equal((g != 0).sum(axis=axes), 2 if kind == "ptp" else 1)
    np.testing.assert_allclose(g, want, rtol=1e-6, atol=0)  # ...with the whole term


def test_adaptive_max_pooling_passes_its_gradient_through_a_recomputed_producer():
    """``AdaptiveMaxPooling2D`` to (3, 3) of a (6, 7) map, as the recomputed-producer test
    above: 6 -> 3 is a reshape and a max, 7 -> 3 a gather of bins of 3 that overlap by one
    and a max. Each bin's maximum (found in NumPy over the bin's box) gets ``a``; with
    ``jnp.max``'s derivative the gradient was wrong at 6 of the 252 input elements
    (suite flags, jax 0.10.2)."""
    shape, size = (2, 6, 7, 3), (3, 3)
    z, affine, scale = _affine(np.random.default_rng(0), shape, 3)
    f = _site("AdaptiveMaxPooling2D", {"output_size": list(size)})
    g = np.asarray(jax.jit(jax.grad(lambda u: f(affine(u)).sum()))(z))
    x, want = affine(z), np.zeros(shape, np.float32)
    (s0, e0), (s1, e1) = pooling.adaptive_bins(6, 3), pooling.adaptive_bins(7, 3)
    for n, i, j, c in np.ndindex(shape[0], *size, shape[3]):
        box = x[n, s0[i]:e0[i], s1[j]:e1[j], c]
        p, q = np.unravel_index(np.argmax(box), box.shape)
        want[n, s0[i] + p, s1[j] + q, c] += scale[0, 0, 0, c]
    np.testing.assert_allclose(g, want, rtol=1e-6, atol=0)


def test_segment_and_scatter_maxima_pass_their_gradient_through_a_recomputed_producer():
    """tf.keras's ``tf.math.segment_max``, ``unsorted_segment_min`` and
    ``tensor_scatter_nd_max`` keep JAX's scatter-max derivative (by equality; ties split, as
    TensorFlow's gradients of these ops do), which lost no term after an affine producer in
    any probe (README, Known limitations): the row that holds each output's maximum
    (minimum), found in NumPy, gets ``a``. A guard for that probe, in the suite's setting."""
    z, affine, scale = _affine(np.random.default_rng(0), (8, 3, 4), 2)
    ids, idx = np.array([0, 0, 1, 1, 1, 2, 3, 3]), np.array([[0], [2], [0], [1], [2]])
    cases = [  # (x -> y, kind, the rows of x each output row reduces)
        (_site("TFOpLambda", {"function": "math.segment_max"}, segment_ids=ids), "max",
         [np.flatnonzero(ids == s) for s in range(4)]),
        (_site("TFOpLambda", {"function": "math.unsorted_segment_min"},
               segment_ids=ids[::-1], num_segments=4), "min",
         [np.flatnonzero(ids[::-1] == s) for s in range(4)]),
        (lambda v: _site("TFOpLambda", {"function": "tensor_scatter_nd_max"}, indices=idx,
                         updates=v[3:])(v[:3]), "max",
         [np.r_[t, 3 + np.flatnonzero(idx[:, 0] == t)] for t in range(3)])]
    x = affine(z)
    grads = jax.jit(lambda u: [jax.grad(lambda v, f=f: f(affine(v)).sum())(u)
                               for f, _, _ in cases])(z)  # one program
    for g, (_, kind, groups) in zip(grads, cases):
        want = np.zeros_like(x)
        for rows in groups:
            first = (np.argmax if kind == "max" else np.argmin)(x[rows], axis=0)
            for j, k in np.ndindex(first.shape):
                want[rows[first[j, k]], j, k] += scale[0, 0, k]
        np.testing.assert_allclose(g, want, rtol=1e-6, atol=0)


def test_the_first_maximum_shares_when_no_element_equals_the_maximum():
    """The derivative's weights when the maximum was computed from values rounded apart (one
    ulp above every element): the first maximum takes it all; exact ties still split; a NaN
    maximum (``jnp.max``'s value) passes it to the first NaN."""
    x = jnp.asarray([[1.0, 3.0, 3.0, 2.0], [1.0, 3.0, 2.0, 3.0], [1.0, np.nan, 3.0, np.nan]],
                    jnp.float32)
    up = np.nextafter(np.float32(3.0), np.float32(4.0))
    mask, count = pooling._max_positions(x, jnp.asarray([[3.0], [up], [np.nan]]), 1)
    np.testing.assert_array_equal(mask, [[0, 1, 1, 0], [0, 1, 0, 0], [0, 1, 0, 0]])
    np.testing.assert_array_equal(count, [2, 1, 1])


def _vjps_beside(fs, refs, x):
    """``(y, dx, y_ref, dx_ref)`` per pair of ``fs`` and ``refs``, in one compiled program: each
    function's value at ``x`` and its pullback of one fixed cotangent."""
    @jax.jit
    def run(x):
        out = []
        for f, ref in zip(fs, refs):
            y, pull = jax.vjp(f, x)
            y_ref, pull_ref = jax.vjp(ref, x)
            g = jnp.cos(jnp.arange(y.size, dtype=y.dtype)).reshape(y.shape)
            out.append((y, pull(g)[0], y_ref, pull_ref(g)[0]))
        return out
    return run(x)


def test_ops_norm_is_jnp_linalg_norm_in_value_and_gradient():
    """Keras 3's ``ops.norm`` (``jnp.linalg.norm`` on JAX) with the orders that are a maximum
    or a minimum -- a vector's ``inf``/``-inf``, a matrix's ``1``/``-1``/``inf``/``-inf``
    and ``2``/``-2`` (the largest/smallest singular value),
    over axes in either order, with and without ``keepdims`` -- taken by ``reduce_max`` /
    ``reduce_min``: values bitwise ``jnp.linalg.norm``'s (a signed zero and a tie among the
    random values), gradients equal on random inputs and cotangents."""
    inf = np.inf
    cases = [(inf, [1], False), (-inf, [-1], True), (1, [1, 2], False), (-1, [2, 1], True),
             (inf, [-1, 1], True), (-inf, [1, 2], False), (2, [1, 2], False),
             (-2, [2, 1], True), (2, [0, -1], True)]
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    x[0, 1, 2], x[1, 2, 0] = -0.0, x[1, 2, 3]
    fs = [_site("ops.Norm", {"ord": o, "axis": a, "keepdims": k}) for o, a, k in cases]
    refs = [functools.partial(jnp.linalg.norm, ord=o, axis=tuple(a), keepdims=k)
            for o, a, k in cases]

    for (y, dx, y_ref, dx_ref), case in zip(_vjps_beside(fs, refs, x), cases):
        assert y.shape == y_ref.shape and np.asarray(y).tobytes() == np.asarray(y_ref).tobytes()
        np.testing.assert_array_equal(dx, dx_ref, err_msg=str(case))


def test_nanmax_and_nanmin_are_jnp_nanmax_with_nans():
    """Keras 3's ``ops.nanmax``/``nanmin`` over slices with NaNs, infinities, a signed zero
    and NaNs only: values bitwise ``jnp.nanmax``'s (``jnp.nanmin``'s), NaN for the all-NaN
    slice as NumPy's ``nanmax`` (Keras's NumPy backend) gives, gradients equal (none to the
    NaNs, none from the all-NaN slice)."""
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    x[0, :2], x[1], x[2, 1:3] = np.nan, np.nan, (np.inf, -0.0)
    x[2, 3] = -np.inf
    cases = [("max", [1], False), ("min", [-1], True), ("max", [0, 1], True)]
    fs = [_site("ops.Nan" + kind, {"axis": axis, "keepdims": keep}) for kind, axis, keep in cases]
    refs = [functools.partial(jnp.nanmax if kind == "max" else jnp.nanmin, axis=tuple(axis),
                              keepdims=keep) for kind, axis, keep in cases]

    for (y, dx, y_ref, dx_ref), (kind, axis, keep) in zip(_vjps_beside(fs, refs, x), cases):
        assert y.shape == y_ref.shape and np.asarray(y).tobytes() == np.asarray(y_ref).tobytes()
        np.testing.assert_array_equal(dx, dx_ref)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # All-NaN slice encountered
            want = (np.nanmax if kind == "max" else np.nanmin)(x, axis=tuple(axis),
                                                               keepdims=keep)
        np.testing.assert_array_equal(y, want)


def test_tf_reduce_max_of_an_empty_reduction_is_tensorflows_identity():
    """tf.keras's ``tf.math.reduce_max`` (``reduce_min``) over a reduced axis of size 0 gives
    TensorFlow's value, where ``jnp.max`` raises: ``-inf`` (``+inf``) for floats, the lowest
    (highest) int32 for int32 -- Eigen's ``MaxReducer``/``MinReducer`` initial values, which
    TF's kernels fill an empty reduction with (tensorflow/core/kernels/reduction_ops.h; TF's
    ``tf.reduce_max(tf.constant([]))`` is ``-inf``) -- in the shape of ``keepdims``; the
    gradient of a float one is the input's zeros. A non-empty reduction of an input with an
    empty batch is not one."""
    i32 = np.iinfo(np.int32)
    cases = [("max", (2, 0, 3), [1], False, np.float32, -np.inf),
             ("min", (2, 0, 3), [-2, 0], True, np.float32, np.inf),
             ("max", (0,), None, False, np.float32, -np.inf),
             ("max", (0, 4), [0], True, np.int32, i32.min),
             ("min", (3, 0), None, True, np.int32, i32.max)]
    for kind, shape, axis, keep, dt, want in cases:
        f = _tf(f"math.reduce_{kind}", axis, keep)
        x = np.zeros(shape, dt)
        y = np.asarray(f(x))
        ref_shape = np.max(x, axis=None if axis is None else tuple(axis), keepdims=keep,
                           initial=0).shape
        assert y.shape == ref_shape and y.dtype == dt, (kind, shape, axis, y.shape, y.dtype)
        np.testing.assert_array_equal(y, np.full(ref_shape, want, dt))
        if dt == np.float32:
            g = jax.grad(lambda v: jnp.sum(jnp.where(jnp.isinf(f(v)), 0.0, f(v))))(x)
            assert g.shape == shape and not np.asarray(g).any()
    y = _tf("math.reduce_max", [1], False)(np.ones((0, 3), np.float32))  # empty batch
    assert y.shape == (0,)


@pytest.mark.parametrize("cls", ["ops.Max", "ops.Min", "ops.Amax", "ops.Amin"])
def test_keras_max_of_an_empty_reduction_without_initial_is_refused_clearly(cls):
    """Keras 3's ``ops.max``/``min``/``amax``/``amin`` without ``initial`` over a reduced
    axis of size 0: Keras raises (its NumPy backend: NumPy's zero-size ValueError), and so
    does the importer, saying what to do (``initial``; with it the value is ``initial``, see
    tests/test_import_ops.py)."""
    keras = pytest.importorskip("keras")
    x = np.zeros((2, 0, 3), np.float32)
    with pytest.raises(ValueError):
        getattr(keras.ops, cls[4:].lower())(x, axis=1)
    f = _site(cls, {"axis": [1], "keepdims": False})
    with pytest.raises(ValueError, match=r"expected a non-empty reduction, got a reduced axis "
                                         r"of size 0.*give ops\.m(ax|in) an `initial` value"):
        f(x)
    assert f(np.zeros((0, 2, 3), np.float32)).shape == (0, 3)  # an empty batch is not one


def _layer_of(cls, config, keras_version="3"):
    impl = lookup(cls)(config, ConvertContext(layer_name="pool", class_name=cls,
                                              keras_version=keras_version))
    return lambda x: impl.call({}, x, rt=Runtime())


@pytest.mark.parametrize("cls,config,shape", [
    ("GlobalMaxPooling1D", {}, (2, 0, 3)),
    ("GlobalMaxPooling2D", {"data_format": "channels_first", "keepdims": True}, (2, 3, 4, 0)),
    ("GlobalMaxPooling3D", {}, (1, 2, 0, 2, 3)),
    ("AdaptiveMaxPooling1D", {"output_size": 2}, (2, 0, 3)),
    ("AdaptiveMaxPooling2D", {"output_size": [2, 3], "data_format": "channels_first"},
     (2, 3, 5, 0))])
def test_keras3_max_pooling_over_an_empty_axis_is_refused_clearly(cls, config, shape):
    """Keras 3's global and adaptive max pooling of an input with size 0 on a pooled axis (a
    zero-length sequence): Keras raises (NumPy's zero-size ValueError, checked here), and so
    does the importer, naming the layer, the shape and the axis, where it raised
    ``jnp.max``'s zero-size error (adaptive pooling: a ZeroDivisionError). Zero channels or
    an empty batch pool as in Keras: empty outputs of Keras's shapes."""
    keras = pytest.importorskip("keras")
    x = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match="zero-size array"):
        getattr(keras.layers, cls)(**config)(x)
    empty = next(a for a in range(1, len(shape)) if shape[a] == 0)
    with pytest.raises(ValueError, match=rf"{cls} layer 'pool' of an input of shape "
                       rf"\({', '.join(map(str, shape))}\): expected a non-empty axis to pool "
                       rf"over, got size 0 on axis {empty}, .*Keras 3 raises too"):
        _layer_of(cls, config)(x)
    full = tuple(max(s, 1) for s in shape)
    ch = 1 if config.get("data_format") == "channels_first" else len(shape) - 1
    for other in ((0,) + full[1:], full[:ch] + (0,) + full[ch + 1:]):
        v = np.zeros(other, np.float32)
        want = np.asarray(getattr(keras.layers, cls)(**config)(v))
        got = _layer_of(cls, config)(v)
        assert got.shape == want.shape, (other, got.shape, want.shape)


def test_tf_keras2_global_max_pooling_over_an_empty_axis_is_tensorflows_identity():
    """tf.keras 2's GlobalMaxPooling is ``backend.max``, TensorFlow's ``reduce_max``, which
    fills an empty reduction with Eigen's ``MaxReducer`` initial value (see
    test_tf_reduce_max_of_an_empty_reduction_is_tensorflows_identity): ``-inf`` for floats,
    the lowest integer for integers, in Keras's output shape; the gradient is zero."""
    f = _layer_of("GlobalMaxPooling1D", {}, keras_version="2.13")
    y = f(np.zeros((2, 0, 3), np.float32))
    np.testing.assert_array_equal(y, np.full((2, 3), -np.inf, np.float32))
    g = jax.grad(lambda v: jnp.sum(jnp.where(jnp.isinf(f(v)), 0.0, f(v))))(
        jnp.zeros((2, 0, 3)))
    assert g.shape == (2, 0, 3)
    f = _layer_of("GlobalMaxPooling2D", {"data_format": "channels_first", "keepdims": True},
                  keras_version="2.13")
    y = f(np.zeros((2, 3, 0, 4), np.int32))
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, np.full((2, 3, 1, 1), np.iinfo(np.int32).min))
