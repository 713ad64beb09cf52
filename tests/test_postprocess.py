"""Post-processing functions: normalize, clip_percentile, resize, reduce_channels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal

from scipy import ndimage  # noqa: E402  (declared in the test extras)


def test_normalize_per_map_and_shared():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(2, 3, 5, 4)).astype(np.float32)
    per = np.asarray(jaxsal.normalize(maps))
    lo = maps.min(axis=(2, 3), keepdims=True)
    hi = maps.max(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(per, (maps - lo) / (hi - lo + 1e-7), rtol=1e-6)
    shared = np.asarray(jaxsal.normalize(maps, axis=(1, 2, 3)))
    lo = maps.min(axis=(1, 2, 3), keepdims=True)
    hi = maps.max(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(shared, (maps - lo) / (hi - lo + 1e-7), rtol=1e-6)
    assert shared[0].min() == 0 and abs(shared[0].max() - 1) < 1e-6
    np.testing.assert_array_equal(jaxsal.normalize(np.zeros((1, 3, 3))), 0)


def test_clip_percentile():
    maps = np.arange(2 * 10 * 10, dtype=np.float32).reshape(2, 10, 10)
    out = np.asarray(jaxsal.clip_percentile(maps, 5, 95))
    for i in range(2):
        lo, hi = np.percentile(maps[i], [5, 95])
        np.testing.assert_allclose(out[i], np.clip(maps[i], lo, hi), rtol=1e-6)
    with pytest.raises(ValueError):
        jaxsal.clip_percentile(maps, 50, 10)


@pytest.mark.parametrize("hw,size", [((24, 24), (28, 28)), ((3, 5), (11, 7)), ((7, 7), (224, 224))])
def test_resize_align_corners_matches_scipy_zoom(hw, size):
    maps = np.random.default_rng(1).uniform(size=(2,) + hw).astype(np.float32)
    got = np.asarray(jaxsal.resize(maps, size))
    want = ndimage.zoom(maps, (1, size[0] / hw[0], size[1] / hw[1]), order=1)
    assert want.shape == got.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    half = np.asarray(jaxsal.resize(maps, size, method="bilinear"))
    assert half.shape == got.shape


def test_reduce_channels_modes():
    g = np.random.default_rng(2).normal(size=(2, 4, 4, 3)).astype(np.float32)
    cases = {"max_abs": np.abs(g).max(-1), "abs_sum": np.abs(g).sum(-1), "sum": g.sum(-1),
             "signed": g.sum(-1), "max": g.max(-1), "mean": g.mean(-1),
             "l2": np.sqrt((g ** 2).sum(-1))}
    for mode, want in cases.items():
        np.testing.assert_allclose(jaxsal.reduce_channels(g, mode), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(jaxsal.reduce_channels(g, None), g)
    with pytest.raises(ValueError, match="unknown channel reduction"):
        jaxsal.reduce_channels(g, "median")


def test_reduce_channels_keeps_nan_and_inf():
    """A NaN or infinite channel makes the pixel NaN / inf in every reduction, as in NumPy
    (``"l2"`` turned NaN into 0, which hid non-finite maps from ``check_finite``)."""
    g = np.ones((1, 2, 2, 3), np.float32)
    g[0, 0, 1, 2], g[0, 1, 0, 0] = np.nan, np.inf
    cases = {"max_abs": np.abs(g).max(-1), "abs_sum": np.abs(g).sum(-1), "sum": g.sum(-1),
             "max": g.max(-1), "mean": g.mean(-1), "l2": np.sqrt((g ** 2).sum(-1))}
    for mode, want in cases.items():
        np.testing.assert_array_equal(jaxsal.reduce_channels(g, mode), want, err_msg=mode)


def test_l2_reduction_is_differentiable_where_every_channel_is_zero():
    """The norm's gradient at an all-zero pixel is 0 (its subgradient), not NaN: a map may be
    differentiated (an attack on an explanation); elsewhere it is g / |g|."""
    import jax

    g = np.random.default_rng(3).normal(size=(1, 3, 3, 2)).astype(np.float32)
    g[0, 1, 1] = 0.0
    grad = np.asarray(jax.grad(lambda v: jaxsal.reduce_channels(v, "l2").sum())(jnp.asarray(g)))
    assert np.isfinite(grad).all()
    np.testing.assert_array_equal(grad[0, 1, 1], 0.0)
    norm = np.sqrt((g ** 2).sum(-1, keepdims=True))
    keep = norm[..., 0] > 0
    np.testing.assert_allclose(grad[keep], (g / np.where(norm > 0, norm, 1))[keep], rtol=1e-6)


def test_integer_and_half_maps_are_reduced_and_normalized_in_float32():
    """Integer maps were reduced in their own dtype (uint8 200s: l2 13.9 instead of 346;
    int8 -128: max_abs -128), float16 maps spanning +-4e4 normalized to NaN."""
    cases = [(np.full((1, 2, 2, 3), 200, np.uint8), "l2", np.sqrt(3) * 200),
             (np.full((1, 2, 2, 3), -128, np.int8), "max_abs", 128),
             (np.full((1, 2, 2, 3), -128, np.int8), "abs_sum", 384),
             (np.full((1, 2, 2, 3), 100000, np.int32), "l2", np.sqrt(3) * 1e5)]
    for maps, mode, want in cases:
        got = jaxsal.reduce_channels(maps, mode)
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(got, want, rtol=1e-6)
    half = np.array([[[-4e4, 0.0], [1e4, 4e4]]], np.float16)
    got = jaxsal.normalize(half)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, [[[0, 0.5], [0.625, 1]]], rtol=1e-6)
    # eps as a NumPy or JAX scalar (a static argument: was "Non-hashable static arguments")
    np.testing.assert_array_equal(jaxsal.normalize(half, eps=jnp.float32(1e-7)), got)
    with pytest.raises(ValueError, match="eps >= 0"):
        jaxsal.normalize(half, eps=-1.0)


def test_resize_says_how_to_resize_1d_maps_and_what_size_is():
    """A 1-D map and an image shape (H, W, C) as size were refused without the fix."""
    with pytest.raises(ValueError, match=r"got maps of shape \(6,\).*"
                                         r"resize\(maps\[\.\.\., None, :\], \(1, L\)\)"):
        jaxsal.resize(np.arange(6.0), (1, 12))
    with pytest.raises(ValueError, match=r"size=\(H, W\).*got \(28, 28, 1\).*x.shape\[1:3\]"):
        jaxsal.resize(np.ones((2, 7, 7)), (28, 28, 1))
    got = jaxsal.resize(np.arange(6.0)[None, None, :], (1, 11))[:, 0, :]  # the recipe works
    np.testing.assert_allclose(got[0], np.linspace(0, 5, 11), rtol=1e-6)


def test_non_finite_entries_as_the_readme_says():
    """normalize: a NaN or -inf makes the whole map NaN, a +inf zeros with NaN at the inf (as
    tf-keras-vis's (a - min) / (max - min + eps)); clip_percentile at its default (0, 99):
    +inf stays, NaN or -inf make the map NaN. (The README said every non-finite entry made
    the map all NaN.)"""
    base = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    for bad, norm_nan, clip_nan in ((np.inf, "at", False), (-np.inf, "all", True),
                                    (np.nan, "all", True)):
        m = base.copy()
        m[0, 1] = bad
        n = np.asarray(jaxsal.normalize(m[None]))[0]
        if norm_nan == "all":
            assert np.isnan(n).all()
        else:
            assert np.isnan(n[0, 1]) and np.all(np.delete(n.ravel(), 1) == 0)
        c = np.asarray(jaxsal.clip_percentile(m[None]))[0]  # (0, 99)
        assert np.isnan(c).all() if clip_nan else (c[0, 1] == np.inf)


def test_big_endian_maps_are_read_by_value():
    """Maps in big-endian byte order (a .npy saved on a big-endian machine, FITS data): JAX
    reads no other order, and a jitted function already compiled for the shape read their
    bytes as native ones: normalize gave zeros, resize and reduce_channels garbage, silently."""
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(2, 3, 4)).astype(np.float32)
    big = maps.astype(">f4")
    for fn in (jaxsal.normalize, jaxsal.clip_percentile, jaxsal.reduce_channels,
               lambda a: jaxsal.resize(a, (5, 6))):
        want = np.asarray(fn(maps))  # compiles for the shape first
        np.testing.assert_array_equal(np.asarray(fn(big)), want)
    image = maps.reshape(4, 3, 2)
    key = jax.random.key(0)
    for fn in (lambda a: jaxsal.gaussian_blur(a, 1.0), jaxsal.image_grid,
               lambda a: jaxsal.random_rotate(10.0)(key, a),
               lambda a: jaxsal.jitter(1)(key, a)):
        want = np.asarray(fn(image))
        np.testing.assert_array_equal(np.asarray(fn(image.astype(">f4"))), want)


def test_int64_maps_beyond_int32_are_not_wrapped():
    """JAX takes an int64 NumPy array as int32 (without jax_enable_x64), wrapping values
    beyond 2**31 silently: a count map [0, 2**40] normalized to [0, 0], resized to zeros.
    Integer maps are made float32 on the host, as the functions compute them anyway."""
    big = np.array([[[0, 2 ** 40], [2 ** 39, 2 ** 38]]], np.int64)
    want = big.astype(np.float64)
    np.testing.assert_allclose(jaxsal.normalize(big), want / 2 ** 40, rtol=1e-6)
    np.testing.assert_allclose(jaxsal.clip_percentile(big, 0, 100), want, rtol=1e-6)
    np.testing.assert_allclose(jaxsal.resize(big, (2, 2)), want, rtol=1e-6)
    np.testing.assert_allclose(jaxsal.reduce_channels(big, "sum"), want.sum(-1), rtol=1e-6)


def test_resize_antialias_choice_when_shrinking():
    """jax.image.resize antialiases when shrinking, tf.image.resize (by default) and OpenCV do
    not, and resize had no way to ask for plain interpolation. Halving with half-pixel centres
    samples between two pixels: antialias=False is the mean of each 2x2 block (analytic);
    the default (None, jax's True) low-pass filters wider; align_corners refuses True."""
    m = np.random.default_rng(4).uniform(size=(2, 8, 6)).astype(np.float32)
    blocks = m.reshape(2, 4, 2, 3, 2).mean(axis=(2, 4))
    plain = jaxsal.resize(m, (4, 3), method="bilinear", antialias=False)
    np.testing.assert_allclose(plain, blocks, rtol=1e-6, atol=1e-7)
    smooth = np.asarray(jaxsal.resize(m, (4, 3), method="bilinear"))
    np.testing.assert_array_equal(smooth, jax.image.resize(m, (2, 4, 3), "bilinear"))
    assert np.abs(smooth - blocks).max() > 1e-2
    up = (8, 9)  # growing: the same either way
    np.testing.assert_array_equal(jaxsal.resize(m, up, method="bilinear", antialias=False),
                                  jaxsal.resize(m, up, method="bilinear"))
    with pytest.raises(ValueError, match="align_corners.*antialias=True"):
        jaxsal.resize(m, (4, 3), antialias=True)
    with pytest.raises(TypeError, match="antialias as True, False or None"):
        jaxsal.resize(m, (4, 3), method="bilinear", antialias="no")


def test_complex_maps_are_refused():
    """Complex maps were cast to real (a DeprecationWarning, hidden outside __main__): the
    imaginary part dropped. Refused with the fix."""
    z = np.ones((1, 2, 2), np.complex64) * (3 + 4j)
    for fn in (jaxsal.normalize, jaxsal.clip_percentile, lambda a: jaxsal.resize(a, (3, 3)),
               lambda a: jaxsal.reduce_channels(a, "sum")):
        for maps in (z, jnp.asarray(z), z.tolist()):
            with pytest.raises(TypeError, match=r"expected real maps.*jnp.abs\(maps\)"):
                fn(maps)
    np.testing.assert_allclose(jaxsal.reduce_channels(np.abs(z), "sum"), [[10, 10]])


def test_resize_channels_last_arrays_by_axes_and_refused_without():
    """resize takes the last two axes as spatial: images or maps (N, H, W, C) came back
    (N, H, size...) with their width and channels interpolated, silently. axes=(-3, -2)
    resizes them (scipy.ndimage.zoom per channel, the align-corners reference); the default
    refuses arrays whose last axis of <= 4 the size would widen 2-fold or more, and lets
    small CAMs (2x2, 4x4) and narrow maps of their own shape through."""
    x = np.random.default_rng(5).uniform(size=(2, 8, 6, 3)).astype(np.float32)
    want = ndimage.zoom(x, (1, 16 / 8, 12 / 6, 1), order=1)
    for axes in ((-3, -2), [1, 2]):
        np.testing.assert_allclose(jaxsal.resize(x, (16, 12), axes=axes), want, rtol=1e-5,
                                   atol=1e-6)
    got = jaxsal.resize(x, (5, 4), method="bilinear", antialias=False, axes=(1, 2))
    np.testing.assert_array_equal(got, jax.image.resize(x, (2, 5, 4, 3), "bilinear",
                                                        antialias=False))
    for shape, size in (((2, 12, 9, 3), (24, 18)), ((1, 224, 224, 3), (7, 7)),
                        ((3, 28, 28, 1), (14, 14)), ((32, 32, 4), (64, 64))):
        with pytest.raises(ValueError, match=r"channels-last.*axes=\(-3, -2\).*"
                                             r"axes=\(-2, -1\)"):
            jaxsal.resize(np.zeros(shape, np.float32), size)
    cams = [((5, 2, 2), (28, 28)), ((3, 4, 4), (32, 32)), ((2, 7, 3), (224, 96)),
            ((2, 9, 4), (18, 4))]
    for shape, size in cams:  # keep about their shape: not refused
        m = np.random.default_rng(6).uniform(size=shape).astype(np.float32)
        want = ndimage.zoom(m, (1, size[0] / shape[1], size[1] / shape[2]), order=1)
        np.testing.assert_allclose(jaxsal.resize(m, size), want, rtol=1e-5, atol=1e-6)
    narrow = np.random.default_rng(7).uniform(size=(2, 10, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="channels-last"):
        jaxsal.resize(narrow, (10, 30))
    want = ndimage.zoom(narrow, (1, 1, 10), order=1)  # meant: say so with axes=(-2, -1)
    np.testing.assert_allclose(jaxsal.resize(narrow, (10, 30), axes=(-2, -1)), want,
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"axes=\(height axis, width axis\)"):
        jaxsal.resize(x, (4, 4), axes=(1,))


def test_resize_size_as_numpy_or_jax_integers():
    """A size of JAX integers (jnp.array([H, W]), a tuple of 0-d arrays) was refused; floats,
    bools and a size traced under jit are refused saying why."""
    m = np.random.default_rng(8).uniform(size=(2, 3, 4)).astype(np.float32)
    want = np.asarray(jaxsal.resize(m, (7, 6)))
    for size in (jnp.array([7, 6]), np.array([7, 6], np.int16), (jnp.int32(7), np.int64(6)),
                 (np.array(7), jnp.array(6, jnp.uint8)), [7, 6]):
        np.testing.assert_array_equal(jaxsal.resize(m, size), want)
    for size in ((7.0, 6), jnp.array([7.0, 6.0]), np.array([7.5, 6.0])):
        with pytest.raises(ValueError, match=r"positive ints.*pass ints, e\.g\. \(int\(H\)"):
            jaxsal.resize(m, size)
    for size in ((True, 6), np.array([True, True]), np.array([[7], [6]]), jnp.array([0, 6])):
        with pytest.raises(ValueError, match="size=.*positive ints"):
            jaxsal.resize(m, size)
    with pytest.raises(ValueError, match="traced under jax.jit.*static"):
        jax.jit(jaxsal.resize)(m, jnp.array([7, 6]))


def test_normalize_maps_of_extreme_finite_values():
    """max - min overflowed for maps spanning +-3e38 (NaN), and a range beyond 2**126, whose
    reciprocal XLA:CPU flushes to 0, normalized [0, 1e38] to zeros. Want (a - min) /
    (max - min), computed in float64 (eps is negligible at that scale)."""
    maps = np.array([[[-3e38, 0.0], [1.0, 3e38]], [[0.0, 1e38], [5e37, 2.5e37]],
                     [[-3.4e38, 3.4e38], [0.0, 1.7e38]], [[1.0, 2.0], [3.0, 5.0]]], np.float32)
    a = maps.astype(np.float64)
    lo, hi = a.min(axis=(1, 2), keepdims=True), a.max(axis=(1, 2), keepdims=True)
    got = np.asarray(jaxsal.normalize(maps))
    np.testing.assert_allclose(got, (a - lo) / (hi - lo), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got[3], np.asarray(jaxsal.normalize(maps[3:]))[0])
    shared = np.asarray(jaxsal.normalize(maps, axis=None))
    np.testing.assert_allclose(shared, (a - a.min()) / (a.max() - a.min()), rtol=1e-6,
                               atol=1e-7)
    grad = jax.grad(lambda v: jaxsal.normalize(v).sum())(jnp.asarray(maps))
    assert np.isfinite(np.asarray(grad)).all()


def test_float64_maps_beyond_float32_range():
    """Float64 NumPy maps beyond float32's range became inf on the way to JAX (without
    jax_enable_x64): normalize gave NaN, the others inf. normalize (scale-invariant) scales
    each such map by a power of two first; the others refuse them, saying how to fix them."""
    wide = np.array([[[0.0, 1e40], [2e40, 4e40]], [[1.0, 2.0], [3.0, 5.0]]])
    lo, hi = wide.min(axis=(1, 2), keepdims=True), wide.max(axis=(1, 2), keepdims=True)
    got = np.asarray(jaxsal.normalize(wide))
    np.testing.assert_allclose(got, (wide - lo) / (hi - lo), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got[1], np.asarray(jaxsal.normalize(wide[1:]))[0])
    shared = np.asarray(jaxsal.normalize(wide.tolist(), axis=None))
    np.testing.assert_allclose(shared, wide / 4e40, rtol=1e-6, atol=1e-7)
    for fn in (jaxsal.clip_percentile, lambda a: jaxsal.resize(a, (3, 3)),
               lambda a: jaxsal.reduce_channels(a, "sum")):
        with pytest.raises(ValueError, match=r"float32's range.*4e\+40.*Scale the maps down"):
            fn(wide)


def test_default_axes_refuse_maps_of_the_other_layout():
    """With the default axis=(-2, -1), normalize and clip_percentile scaled each image row
    (W, C) of channels-last maps (N, H, W, C) on its own (every row's maximum 1), and
    reduce_channels' default axis=-1 reduced the width of channels-first maps (N, C, H, W):
    refused with the fix. An axis passed skips the check; maps (N, H, W) of width <= 4,
    signals (N, L, C), grids (N, T, h, w) of few targets and activations (N, 4, 4, C) pass."""
    rng = np.random.default_rng(9)
    cl = rng.uniform(size=(2, 12, 12, 3)).astype(np.float32)
    for fn in (jaxsal.normalize, jaxsal.clip_percentile):
        with pytest.raises(ValueError, match=r"look channels-last.*pass axis=\(1, 2, 3\).*"
                                             r"reduce_channels.*axis=\(-2, -1\)"):
            fn(cl)
        with pytest.raises(ValueError, match=r"axis=\(2, 3, 4\)"):
            fn(cl[:, None])
    lo, hi = cl.min(axis=(1, 2, 3), keepdims=True), cl.max(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(jaxsal.normalize(cl, axis=(1, 2, 3)), (cl - lo) / (hi - lo),
                               rtol=1e-5, atol=1e-6)
    lo, hi = cl.min(axis=(2, 3), keepdims=True), cl.max(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(jaxsal.normalize(cl, axis=[-2, -1]), (cl - lo) / (hi - lo),
                               rtol=1e-5, atol=1e-6)  # meant: passed, not refused
    cf = np.moveaxis(cl, -1, 1)  # (2, 3, 12, 12)
    with pytest.raises(ValueError, match=r"look channels-first.*: axis=1 \(.*axis=-1"):
        jaxsal.reduce_channels(cf)
    with pytest.raises(ValueError, match=r"with targets: axis=2 "):
        jaxsal.reduce_channels(cf[:, None], "sum")
    np.testing.assert_array_equal(jaxsal.reduce_channels(cf, axis=1), np.abs(cl).max(-1))
    np.testing.assert_array_equal(jaxsal.reduce_channels(cf, axis=-1), np.abs(cf).max(-1))
    for shape in ((2, 9, 3), (2, 9, 4), (1, 3, 9, 4), (1, 9, 9, 4)):
        m = rng.uniform(size=shape).astype(np.float32)
        lo, hi = m.min(axis=(-2, -1), keepdims=True), m.max(axis=(-2, -1), keepdims=True)
        np.testing.assert_allclose(jaxsal.normalize(m), (m - lo) / (hi - lo), rtol=1e-5,
                                   atol=1e-6)
        assert jaxsal.clip_percentile(m).shape == shape
    for shape in ((1, 4, 4, 8), (1, 9, 9, 3)):
        a = rng.normal(size=shape).astype(np.float32)
        np.testing.assert_array_equal(jaxsal.reduce_channels(a), np.abs(a).max(-1))


def test_empty_batches_give_empty_results_and_empty_maps_are_refused():
    """Zero-size maps gave raw errors (no identity for min, an index out of bounds, a gather
    slice size, reshape's ZeroDivisionError). An empty batch (0, h, w) is returned empty, as
    NumPy would; a map of no pixels (h = 0), or no channels, is refused."""
    empty = np.zeros((0, 4, 5), np.float32)
    for fn, shape in ((jaxsal.normalize, (0, 4, 5)), (jaxsal.clip_percentile, (0, 4, 5)),
                      (lambda a: jaxsal.resize(a, (8, 6)), (0, 8, 6)),
                      (lambda a: jaxsal.resize(a, (8, 6), "bilinear"), (0, 8, 6))):
        got = fn(empty)
        assert got.shape == shape and got.dtype == jnp.float32
    assert jaxsal.resize(np.zeros((0, 0, 4), np.int32), (8, 6)).shape == (0, 8, 6)
    assert jaxsal.normalize(np.zeros((2, 0, 4)), axis=-1).shape == (2, 0, 4)
    for mode in ("max_abs", "max", "l2", "sum"):
        assert jaxsal.reduce_channels(np.zeros((0, 4, 5, 3)), mode).shape == (0, 4, 5)
    for fn in (jaxsal.normalize, jaxsal.clip_percentile, lambda a: jaxsal.resize(a, (8, 6))):
        for shape in ((2, 0, 4), (2, 4, 0)):
            with pytest.raises(ValueError, match=r"expected at least one value over "
                                                 r"ax[ie]s=.*\(2, [04], [04]\)"):
                fn(np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match=r"normalize: .*axis=None"):
        jaxsal.normalize(empty, axis=None)  # one map, of no values
    with pytest.raises(ValueError, match=r"reduce_channels: expected at least one value"):
        jaxsal.reduce_channels(np.zeros((2, 4, 4, 0)))


def test_maps_of_several_inputs_keep_their_container():
    """The maps of a multi-input call (``jaxsal.Maps``: a list, tuple or dict, one array per
    input) were read as one array: ``normalize(list)`` failed with NumPy's "setting an array
    element with a sequence", a dict with "maps of rank 0", and a list of equal shapes was
    stacked into one array. Each input's maps are now processed on their own and come back
    in the same container (against NumPy per array)."""
    rng = np.random.default_rng(0)
    img, vec = rng.normal(size=(2, 3, 5, 5)), rng.normal(size=(2, 3, 4))
    img, vec = img.astype(np.float32), vec.astype(np.float32)

    def norm(a, axis):
        lo, hi = a.min(axis, keepdims=True), a.max(axis, keepdims=True)
        return (a - lo) / (hi - lo + 1e-7)

    def clip(a, axis):
        return np.clip(a, np.percentile(a, 0, axis, keepdims=True),
                       np.percentile(a, 99, axis, keepdims=True))

    for maps, axes in (([img, vec], {"axis": -1}), ((img, img), {}),
                       ({"img": img, "vec": vec}, {"axis": -1})):
        keys = list(maps) if isinstance(maps, dict) else range(len(maps))
        for fn, ref in ((jaxsal.normalize, norm), (jaxsal.clip_percentile, clip)):
            got = fn(maps, **axes)
            assert type(got) is type(maps), fn.__name__
            for k in keys:
                np.testing.assert_allclose(got[k], ref(maps[k], axes.get("axis", (-2, -1))),
                                           rtol=1e-5, atol=1e-6)
    chans = {"a": rng.normal(size=(2, 5, 5, 3)), "b": rng.normal(size=(2, 4, 2))}
    got = jaxsal.reduce_channels(chans, "max_abs")
    for k, a in chans.items():
        np.testing.assert_allclose(got[k], np.abs(a).max(-1), rtol=1e-6)
    got = jaxsal.resize([img, img[:, :, :3]], (10, 10))
    assert isinstance(got, list) and [g.shape for g in got] == [(2, 3, 10, 10)] * 2
    np.testing.assert_allclose(got[1], jaxsal.resize(img[:, :, :3], (10, 10)))
    with pytest.raises(ValueError,
                       match="normalize: maps of input 'vec' .*axis=\\(1, 2, 3\\)"):
        jaxsal.normalize({"img": img, "vec": vec}, axis=(1, 2, 3))  # vec has 3 axes


def test_the_float32_range_fix_keeps_maps_holding_an_inf():
    """The refusal of float64 maps beyond float32's range suggested maps /
    np.abs(maps).max(), which is inf for maps that hold an inf: every value became 0 or NaN.
    The scale it gives now is the largest finite magnitude; applied as written, the sums of
    reduce_channels are NumPy's of the scaled maps (the inf stays inf, no NaN)."""
    import re

    maps = np.array([[[1e40, 2e40], [np.inf, 3.0]]])
    with pytest.raises(ValueError, match=r"Scale the maps down first") as e:
        jaxsal.reduce_channels(maps, "sum")
    fix = re.search(r"\(e\.g\. (maps / .*?)\), or", str(e.value)).group(1)
    scaled = eval(fix, {"np": np, "maps": maps})  # noqa: S307
    got = np.asarray(jaxsal.reduce_channels(scaled, "sum"))
    np.testing.assert_allclose(got, [[1.5, np.inf]], rtol=1e-6)


def test_reduce_channels_names_the_channel_axis_of_each_channels_first_layout():
    """reduce_channels' default axis=-1 advised axis=len(shape)-3 for maps that look
    channels-first: for a one-target volume (N, C=1, D=4, H, W) that is the depth (the result
    (N, 1, H, W)); and it reduced the width of (N, T, C, D, H, W) maps without a word. The
    error names the channel axis of each channels-first layout of the rank, with its result;
    channels-last volume maps (N, T, D, H, W, C) still pass."""
    rng = np.random.default_rng(3)
    v = rng.normal(size=(2, 1, 4, 8, 8)).astype(np.float32)  # (N, C, D, H, W)
    with pytest.raises(ValueError, match=r"look channels-first.*\(N, C, D, H, W\) of volumes, "
                                         r"one target: axis=1 \(the result \(2, 4, 8, 8\)\)"):
        jaxsal.reduce_channels(v)
    np.testing.assert_array_equal(jaxsal.reduce_channels(v, axis=1), np.abs(v).max(1))
    with pytest.raises(ValueError, match=r"\(N, T, C, L\) of signals with targets: axis=2 "):
        jaxsal.reduce_channels(v[:, 0, :3])  # rank 4: (N, C, H, W) or (N, T, C, L)
    v6 = rng.normal(size=(2, 2, 1, 6, 8, 8)).astype(np.float32)  # (N, T, C, D, H, W)
    with pytest.raises(ValueError, match=r"look channels-first.*\(N, T, C, D, H, W\) of "
                                         r"volumes with targets: axis=2 \(the result "
                                         r"\(2, 2, 6, 8, 8\)\).*axis=-1"):
        jaxsal.reduce_channels(v6)
    for shape in ((2, 2, 6, 8, 8, 1), (2, 2, 3, 8, 8, 3), (1, 1, 8, 4, 4, 16)):
        a = rng.normal(size=shape).astype(np.float32)  # channels-last (N, T, D, H, W, C)
        np.testing.assert_array_equal(jaxsal.reduce_channels(a), np.abs(a).max(-1))


def test_normalize_axes_documented_for_signal_and_volume_maps():
    """The README's advice: the default axis=(-2, -1) takes one 2-D map, so it scales a batch
    of signal maps (N, L) as one map and a volume map (N, D, H, W) slice by slice (not
    refused: those are the shapes of 2-D maps); axis=-1 and axis=(-3, -2, -1) scale each
    signal and each volume on its own (NumPy's min and max)."""
    rng = np.random.default_rng(5)
    sig = rng.uniform(size=(3, 20)).astype(np.float32) * np.float32([[100], [1], [1]])
    assert np.asarray(jaxsal.normalize(sig)).max(axis=1)[1:].max() < 0.1  # one range: batch
    lo, hi = sig.min(-1, keepdims=True), sig.max(-1, keepdims=True)
    np.testing.assert_allclose(jaxsal.normalize(sig, axis=-1), (sig - lo) / (hi - lo),
                               rtol=1e-5, atol=1e-6)
    vol = rng.uniform(size=(2, 3, 6, 7)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(jaxsal.normalize(vol)).max(axis=(2, 3)), 1, rtol=1e-5)
    lo, hi = vol.min((1, 2, 3), keepdims=True), vol.max((1, 2, 3), keepdims=True)
    np.testing.assert_allclose(jaxsal.normalize(vol, axis=(-3, -2, -1)), (vol - lo) / (hi - lo),
                               rtol=1e-5, atol=1e-6)
    c = np.asarray(jaxsal.clip_percentile(sig, 0, 90, axis=-1))
    np.testing.assert_allclose(c.max(-1), np.percentile(sig, 90, axis=-1), rtol=1e-5)
