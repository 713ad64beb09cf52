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
    +inf stays, NaN or -inf make the map NaN. (The README said every non-finite entry made the map all NaN.)"""
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
