"""Lucid's objectives that jaxsal lacked: ``direction`` with ``cossim_pow``,
``direction_neuron`` and ``channel_interpolate``, each checked against its definition written
out in NumPy (float64) on given activations, then inside :func:`jaxsal.maximize`."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsal
from jaxsal._src.objectives import positions_for


def _np_dot_cossim(a, d, p):
    """Lucid's ``_dot_cossim(x, y, cossim_pow)`` in NumPy: the mean over positions of
    ``<a, d> * max(0.1, <a, d> / (1e-4 + |a|) / (1e-4 + |d|)) ** p`` (``p = 0``: the mean
    dot product)."""
    a, d = np.asarray(a, np.float64), np.asarray(d, np.float64)
    dot = (a * d).sum(-1)
    if p == 0:
        return dot.mean()
    cos = dot / (1e-4 + np.sqrt((a * a).sum(-1))) / (1e-4 + np.sqrt((d * d).sum()))
    return (dot * np.maximum(0.1, cos) ** p).mean()


def test_np_reference_is_lucids_formula():
    """The reference itself on hand values: a = 2 d (cos 1) gives <a, d>; a = -d is floored
    at cos 0.1; p = 0 is the plain dot product."""
    d = np.array([3.0, 4.0])
    np.testing.assert_allclose(_np_dot_cossim(2 * d[None], d, 2.0),
                               50.0 * (50.0 / 10.0001 / 5.0001) ** 2, rtol=1e-12)
    np.testing.assert_allclose(_np_dot_cossim(-d[None], d, 3.0), -25.0 * 0.1 ** 3)
    np.testing.assert_allclose(_np_dot_cossim(np.array([[1.0, 0.0], [0.0, 2.0]]), d, 0), 5.5)


@pytest.mark.parametrize("p", [0.0, 1.0, 2.5, 4.0])
def test_direction_cossim_values(p):
    """``direction_objective(..., cossim_pow=p)`` on (h, w, K) and (K,) activations equals
    Lucid's ``_dot_cossim`` mean over positions; some positions point away from ``d`` (the
    0.1 floor), one is zero."""
    rs = np.random.RandomState(0)
    a = rs.normal(size=(5, 4, 6)).astype(np.float32)
    a[0, 0] = 0.0
    d = rs.normal(size=6).astype(np.float32)
    obj = jaxsal.direction_objective("f", d, cossim_pow=p, weight=1.5)
    f = jax.jit(lambda a: obj(jnp.zeros(3), {"f": a}))
    np.testing.assert_allclose(f(a), 1.5 * _np_dot_cossim(a, d, p), rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(f(a[2, 3]), 1.5 * _np_dot_cossim(a[2, 3][None], d, p),
                               rtol=2e-5, atol=1e-6)
    # cossim_pow=0 is the plain mean projection the objective had before
    if p == 0:
        np.testing.assert_allclose(f(a), 1.5 * (a.astype(np.float64) @ d).mean(), rtol=2e-5)


@pytest.mark.parametrize("p", [0.0, 2.0])
def test_direction_neuron_values(p):
    """``direction_neuron_objective`` reads the given (row, col), or the centre
    ``(h // 2, w // 2)``, and a Dense layer's vector itself; a stack of several directions and
    positions is vmapped, unit by unit."""
    rs = np.random.RandomState(1)
    a = rs.normal(size=(5, 4, 6)).astype(np.float32)
    ds = rs.normal(size=(3, 6)).astype(np.float32)
    objs = [jaxsal.direction_neuron_objective("f", ds[0], (1, 3), cossim_pow=p),
            jaxsal.direction_neuron_objective("f", ds[1], None, cossim_pow=p),
            jaxsal.direction_neuron_objective("f", ds[2], (4, 0), cossim_pow=p, weight=-2.0)]
    want = [_np_dot_cossim(a[1, 3][None], ds[0], p), _np_dot_cossim(a[2, 2][None], ds[1], p),
            -2.0 * _np_dot_cossim(a[4, 0][None], ds[2], p)]
    stacked = jaxsal.stack_objectives(objs)
    got = jax.vmap(lambda o: o(jnp.zeros(3), {"f": jnp.asarray(a)}))(stacked)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
    dense = jaxsal.direction_neuron_objective("f", ds[0], cossim_pow=p)
    np.testing.assert_allclose(dense(jnp.zeros(3), {"f": jnp.asarray(a[0, 0])}),
                               _np_dot_cossim(a[0, 0][None], ds[0], p), rtol=2e-5, atol=1e-6)
    # a layer of one spatial axis (Conv1D, (L, K)): its centre position L // 2 (the position's
    # row indexed the channels: a scalar, and an error in the cosine's sum)
    seq = rs.normal(size=(7, 6)).astype(np.float32)
    np.testing.assert_allclose(dense(jnp.zeros(3), {"f": jnp.asarray(seq)}),
                               _np_dot_cossim(seq[3][None], ds[0], p), rtol=2e-5, atol=1e-6)


def test_channel_interpolate_values():
    """Image i of ``channel_interpolate(l1, c1, l2, c2, n)`` maximizes ``(1 - i / (n - 1)) *
    mean(l1[..., c1]) + i / (n - 1) * mean(l2[..., c2])`` (Lucid's per-image sum)."""
    rs = np.random.RandomState(2)
    a1 = rs.normal(size=(6, 6, 4)).astype(np.float32)
    a2 = rs.normal(size=(3, 3, 5)).astype(np.float32)
    n = 5
    objs = jaxsal.channel_interpolate("l1", 2, "l2", 4, n)
    assert len(objs) == n
    got = jax.vmap(lambda o: o(jnp.zeros(3), {"l1": jnp.asarray(a1), "l2": jnp.asarray(a2)}))(
        jaxsal.stack_objectives(objs))
    want = [(1 - i / (n - 1)) * a1[..., 2].mean() + i / (n - 1) * a2[..., 4].mean()
            for i in range(n)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # the general form: from one direction to another (an Activation Atlas path)
    d1, d2 = rs.normal(size=(2, 4)).astype(np.float32)
    path = jaxsal.interpolate_objectives(jaxsal.direction_objective("l1", d1, cossim_pow=1.0),
                                         jaxsal.direction_objective("l1", d2, cossim_pow=1.0), 3)
    got = [float(o(jnp.zeros(3), {"l1": jnp.asarray(a1)})) for o in path]
    want = [(1 - t) * _np_dot_cossim(a1, d1, 1.0) + t * _np_dot_cossim(a1, d2, 1.0)
            for t in (0.0, 0.5, 1.0)]
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


def test_refusals():
    d = np.ones(4)
    with pytest.raises(ValueError, match=r"cossim_pow >= 0"):
        jaxsal.direction_objective("f", d, cossim_pow=-1.0)
    with pytest.raises(ValueError, match=r"cossim_pow >= 0"):
        jaxsal.direction_neuron_objective("f", d, cossim_pow=float("nan"))
    with pytest.raises(ValueError, match=r"position=\(row, col\)"):
        jaxsal.direction_neuron_objective("f", d, (1, 2, 3))
    # one number (a bare TypeError: len() of an int) and a float entry (told as a 'unit index')
    expected = r"expected position=\(row, col\) as two ints >= 0 or None, got "
    with pytest.raises(ValueError, match=rf"^neuron_objective: {expected}5$"):
        jaxsal.neuron_objective("f", 0, position=5)
    with pytest.raises(ValueError, match=rf"{expected}row 1\.0 in position=\(1\.0, 2\)"):
        jaxsal.direction_neuron_objective("f", d, (1.0, 2))
    with pytest.raises(ValueError, match=rf"{expected}col -1 in position=\(1, -1\)"):
        jaxsal.neuron_objective("f", 0, position=(1, -1))
    with pytest.raises(ValueError, match=r"n as an int >= 2"):
        jaxsal.channel_interpolate("a", 0, "b", 1, 1)
    with pytest.raises(ValueError, match="single objective"):
        jaxsal.interpolate_objectives(jaxsal.stack_objectives([jaxsal.output_objective(0)]),
                                      jaxsal.output_objective(1), 3)
    with pytest.raises(TypeError, match="expected end as an Objective"):
        jaxsal.interpolate_objectives(jaxsal.output_objective(0), 1, 3)
    # cossim_pow is part of the structure: objectives of another power are not stacked
    with pytest.raises(ValueError, match="does not have the structure"):
        jaxsal.stack_objectives([jaxsal.direction_objective("f", d, cossim_pow=1.0),
                                 jaxsal.direction_objective("f", d, cossim_pow=2.0)])
    assert "cossim_pow=2" in repr(jaxsal.direction_objective("f", d, cossim_pow=2.0))


def test_direction_neuron_positions_follow_multiscale_rounds():
    """In a smaller multi-scale round a direction_neuron position moves to the same place of
    the smaller maps as a neuron_objective position does."""
    d = np.arange(4.0)
    dn = jaxsal.stack_objectives([jaxsal.direction_neuron_objective("f", d, (7, 2)),
                                  jaxsal.direction_neuron_objective("f", d)])
    ne = jaxsal.stack_objectives([jaxsal.neuron_objective("f", 1, (7, 2)),
                                  jaxsal.neuron_objective("f", 1)])
    small, final = {"f": (4, 5, 4)}, {"f": (8, 10, 4)}
    moved_dn = positions_for(dn, small, final).indices[0]
    moved_ne = positions_for(ne, small, final).indices[0]
    np.testing.assert_array_equal(np.asarray(moved_dn[:, :2]), np.asarray(moved_ne[:, 1:]))
    np.testing.assert_array_equal(np.asarray(moved_dn[:, 2:]), np.stack([d, d]))
    assert np.asarray(moved_dn)[0, :2].tolist() == [3, 1]


@pytest.fixture(scope="module")
def tiny():
    """relu(conv 3x3, 3 -> 4 channels, "feat") -> mean -> Dense(2), on 8x8x3 images."""
    rs = np.random.RandomState(0)
    params = {"k": jnp.asarray(rs.normal(0, 0.5, (3, 3, 3, 4)), jnp.float32),
              "w": jnp.asarray(rs.normal(0, 0.5, (4, 2)), jnp.float32)}

    def features(p, x):
        y = jax.lax.conv_general_dilated(x, p["k"], (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jax.nn.relu(y)

    def head_fn(p, a):
        return a.mean(axis=(1, 2)) @ p["w"]

    return jaxsal.FunctionModel(features=features, head_fn=head_fn, params=params,
                                layer="feat", input_shape=(8, 8, 3)), features


def test_maximize_scores_are_the_numpy_objectives(tiny):
    """Inside maximize: direction (cossim_pow 2), direction_neuron and channel_interpolate
    objectives are validated, optimized, and their scores are the NumPy objectives of the
    returned images' features; the interpolated images move from one channel to the
    other."""
    model, features = tiny
    rs = np.random.RandomState(3)
    ds = rs.normal(size=(2, 4)).astype(np.float32)
    opts = dict(steps=12, key=0, transforms=jaxsal.identity())
    objs = [jaxsal.direction_objective("feat", ds[0], cossim_pow=2.0)
            + jaxsal.direction_neuron_objective("feat", ds[0], (1, 6), cossim_pow=2.0),
            jaxsal.direction_objective("feat", ds[1], cossim_pow=2.0)
            + jaxsal.direction_neuron_objective("feat", ds[1], None, cossim_pow=2.0)]
    res = jaxsal.maximize(model, objs, **opts)
    a = np.asarray(features(model.params, res.images), np.float64)
    want = [_np_dot_cossim(a[0], ds[0], 2.0) + _np_dot_cossim(a[0, 1, 6][None], ds[0], 2.0),
            _np_dot_cossim(a[1], ds[1], 2.0) + _np_dot_cossim(a[1, 4, 4][None], ds[1], 2.0)]
    np.testing.assert_allclose(res.scores, want, rtol=1e-4, atol=1e-5)
    assert np.all(np.asarray(res.trajectory[:, -1]) > np.asarray(res.trajectory[:, 0]))

    res = jaxsal.maximize(model, jaxsal.channel_interpolate("feat", 0, "feat", 3, 4), **opts)
    a = np.asarray(features(model.params, res.images), np.float64)
    t = np.arange(4) / 3
    np.testing.assert_allclose(res.scores, (1 - t) * a[..., 0].mean((1, 2))
                               + t * a[..., 3].mean((1, 2)), rtol=1e-4, atol=1e-5)
    share = a[..., 3].mean((1, 2)) / (a[..., 0].mean((1, 2)) + a[..., 3].mean((1, 2)))
    assert share[0] < share[-1]

    with pytest.raises(ValueError, match=r"direction has 3 entries but layer 'feat' has 4"):
        jaxsal.maximize(model, [jaxsal.direction_neuron_objective("feat", np.ones(3))], **opts)
    with pytest.raises(ValueError, match=r"direction_neuron position out of range: row 8"):
        jaxsal.maximize(model, [jaxsal.direction_neuron_objective("feat", ds[0], (8, 0))],
                        **opts)


def test_seed_images_one_per_image_with_images_per_unit(tiny):
    """With ``images_per_unit=K`` seeds are ``(T, K, H, W, C)``, one start per image: a zero
    learning rate returns them (pixels and fourier), and Adam steps from them give each
    image what a call of one image per unit gives from the same seed (no diversity, no
    random transform: the images of a unit are then independent) for the objective / K: the
    loss of K images is the mean of theirs (with the objective itself Adam's epsilon, not
    quite free of the loss's scale, moved 2 of 768 pixels by 4e-5)."""
    model, _ = tiny
    rs = np.random.RandomState(4)
    seeds = rs.uniform(0.1, 0.9, (2, 2, 8, 8, 3)).astype(np.float32)
    plain = dict(layer="feat", key=0, transforms=jaxsal.identity(), regularizers=())
    frozen = optax.sgd(0.0)
    for par, tol in ((jaxsal.pixels(), 1e-6), (jaxsal.fourier(), 3e-6)):
        res = jaxsal.maximize(model, [0, 3], steps=1, images_per_unit=2, seed_images=seeds,
                              optimizer=frozen, parameterization=par, **plain)
        np.testing.assert_allclose(res.images, seeds, atol=tol)
    adam = optax.adam(0.05)
    many = jaxsal.maximize(model, [0, 3], steps=4, images_per_unit=2, seed_images=seeds,
                           optimizer=adam, **plain)
    halves = [0.5 * jaxsal.channel_objective("feat", k) for k in (0, 0, 3, 3)]
    one = jaxsal.maximize(model, halves, steps=4, seed_images=seeds.reshape(4, 8, 8, 3),
                          optimizer=adam, **{k: v for k, v in plain.items() if k != "layer"})
    np.testing.assert_allclose(many.images.reshape(4, 8, 8, 3), one.images, atol=1e-5)
    assert float(np.abs(np.asarray(many.images) - seeds).max()) > 0.01  # it moved
    for bad in (seeds[0, 0], seeds[:, 0], seeds[:, :1]):
        with pytest.raises(ValueError, match=r"with images_per_unit=2 expected one start per "
                                             r"image, \(2, 2, 8, 8, 3\)"):
            jaxsal.maximize(model, [0, 3], steps=1, images_per_unit=2, seed_images=bad,
                            **plain)


@pytest.mark.parametrize("p", [1.0, 2.0])
def test_direction_cossim_gradient_at_zero_vector(p):
    """An all-zero activation vector (a ReLU's output on a black region) gets a finite
    gradient equal to the central difference of Lucid's formula (NumPy, float64): there
    ``<a, d> = 0`` so the gradient is ``max(0.1, 0) ** p * d`` over the positions. The norm's
    ``sqrt`` had an infinite derivative at 0, times 0: NaN (the ascent stopped, reported as a
    divergence)."""
    rs = np.random.RandomState(2)
    a = rs.normal(size=(3, 2, 4))
    a[1, 1] = 0.0
    d = rs.normal(size=4)
    for obj, at in ((jaxsal.direction_objective("f", d, cossim_pow=p), lambda x: x),
                    (jaxsal.direction_neuron_objective("f", d, (1, 1), cossim_pow=p),
                     lambda x: x[1, 1][None])):
        g = np.asarray(jax.grad(lambda x: obj(jnp.zeros(3), {"f": x}))(
            jnp.asarray(a, jnp.float32)))
        assert np.all(np.isfinite(g))
        want = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            e = np.zeros_like(a)
            e[i] = 1e-7
            want[i] = (_np_dot_cossim(at(a + e), d, p) - _np_dot_cossim(at(a - e), d, p)) / 2e-7
        np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(g[1, 1], want[1, 1], rtol=1e-5)
        assert np.abs(g[1, 1]).max() > 0  # 0.1 ** p * d / positions, not zero
