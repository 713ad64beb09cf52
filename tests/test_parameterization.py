"""Image parameterizations: the image -> variables -> image round trip (seeds, blur steps,
multi-scale rounds) and the Fourier parameterization's colour matrix for any channel count."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsal
from jaxsal._src import parameterization as _param

PLAIN = dict(transforms=jaxsal.identity(), regularizers=())
RANGES = [(0.0, 1.0), (0.0, 255.0), (-1.5, 0.5)]
# float32 rounding, in fractions of the range: the squashes come back to within 2^-24 of an end
# and to a few float32 steps inside; the Fourier round trip adds the FFT's rounding of
# variables up to 16.6 (its sigmoid is flat at the ends, where that rounding does not show)
PIXEL_TOL, FOURIER_TOL = 2.5e-7, 1.5e-6


def _image(shape, r):
    """A random image in ``r`` whose first rows are exactly at the ends and next to them."""
    lo, hi = r
    u = np.asarray(jax.random.uniform(jax.random.key(0), shape), np.float64)
    for row, v in enumerate((0.0, 1.0, 1e-7, 1.0 - 1e-7)):
        u[..., row, :, :] = v
    return jnp.asarray(lo + (hi - lo) * u, jnp.float32)


def _linear(shape, units=2):
    w = jax.random.normal(jax.random.key(0), (int(np.prod(shape)), units))
    return jaxsal.FunctionModel(lambda p, x: x.reshape(x.shape[0], -1) @ p["w"], {"w": w},
                                input_shape=shape)


PARAMS = {
    "sigmoid": (jaxsal.pixels(), PIXEL_TOL),
    "tanh": (jaxsal.pixels(squash="tanh"), PIXEL_TOL),
    "clip": (jaxsal.pixels(squash="clip"), PIXEL_TOL),
    "fourier": (jaxsal.fourier(), FOURIER_TOL),
    "fourier-plain": (jaxsal.fourier(decorrelate=False, decay_power=1.5), FOURIER_TOL),
}


@pytest.mark.parametrize("name", list(PARAMS))
def test_round_trip_is_exact_to_float32_rounding_up_to_the_ends(name):
    """``to_image(from_image(x)) == x`` to float32 rounding for every image in the range, its
    ends included. The inverse of the squash clamped at 1e-6 of the range (arctanh's argument
    at 1 - 1e-6): a pixel at an end came back 1e-6 of the range inside it (0.000255 in
    [0, 255]), at every blur step and multi-scale round."""
    par, tol = PARAMS[name]
    trip = jax.jit(lambda x, lo, hi: par.to_image(par.from_image(x, (lo, hi)), (lo, hi)))
    # an even width too for fourier: its real spectrum has a Nyquist column then
    widths = (7, 8) if name.startswith("fourier") else (7,)
    for r, c, w in [(r, c, w) for r in RANGES for c in (1, 3, 4) for w in widths]:
        lo, hi = r
        x = _image((6, w, c), r)
        back = trip(x, *r)
        err = np.abs(np.asarray(back, np.float64) - np.asarray(x, np.float64)) / (hi - lo)
        assert err.max() <= tol, (name, r, c, err.max())
        # at the ends every parameterization is exact to float32 rounding
        assert err[:4].max() <= PIXEL_TOL, (name, r, c, err[:4].max(axis=(1, 2)))


def test_tanh_keeps_float32_precision_near_the_low_end():
    """``pixels(squash="tanh")`` computed ``(tanh(u) + 1) / 2`` and ``arctanh(2 v - 1)``, whose
    ``+ 1`` and ``- 1`` cancel near 0: a pixel at 1e-3 of the range came back with a relative
    error of 4e-5 (the sigmoid's: 2e-7); below 3e-8 to_image gave exactly ``lo``. It is
    ``sigmoid(2 u)``, and its inverse ``logit(v) / 2``."""
    par = jaxsal.pixels(squash="tanh")
    x = jnp.asarray([1e-3, 1e-5, 1e-6], jnp.float32).reshape(1, 3, 1)
    back = par.to_image(par.from_image(x, (0.0, 1.0)), (0.0, 1.0))
    np.testing.assert_allclose(back, x, rtol=1e-6)
    u = jnp.asarray([-10.0, -3.0, 0.0, 2.0], jnp.float32).reshape(1, 4, 1)
    want = 0.5 * (np.tanh(np.asarray(u, np.float64)) + 1.0)  # float64: no cancellation
    np.testing.assert_allclose(par.to_image(u, (0.0, 1.0)), want, rtol=1e-6)


@pytest.mark.parametrize("name", list(PARAMS))
def test_seed_images_come_back_through_maximize(name):
    """With an optimizer that does not move (``sgd(0)``), ``maximize`` returns its seed images
    through every round trip it makes: seed -> variables, then, at a second multi-scale round
    of the same size (``upscaling_factor=1.05`` on 6 pixels), image -> variables again. Seeds
    start 1% of the range inside it, except for the clipped pixels, which reach the ends."""
    par, tol = PARAMS[name]
    r = (0.0, 255.0)
    seed = _image((2, 6, 6, 3), r)
    res = jaxsal.maximize(_linear((6, 6, 3)), [0, 1], steps=1, key=0, seed_images=seed,
                          input_range=r, parameterization=par, optimizer=optax.sgd(0.0),
                          upscaling_steps=2, upscaling_factor=1.05, **PLAIN)
    margin = 0.0 if name == "clip" else 0.01 * 255.0
    want = np.clip(np.asarray(seed), margin, 255.0 - margin)
    np.testing.assert_allclose(res.images, want, rtol=0, atol=2 * tol * 255.0)


def test_a_blur_step_keeps_saturated_pixels_at_the_ends():
    """A blur step maps the image back to the variables (``from_image``) after every k-th
    update; with ``weight=0`` it leaves the image as it is, so the images are those of the
    run without it. An ascent that saturates the pixels (SGD at 1e4 on a linear model) has
    them at the ends; the clamp at 1e-6 moved them 1e-6 of the range (0.000255 in [0, 255])
    inside at every step."""
    m, r = _linear((8, 8, 1)), (0.0, 255.0)
    opts = dict(steps=3, key=0, input_range=r, optimizer=optax.sgd(1e4),
                parameterization=jaxsal.pixels(), transforms=jaxsal.identity())
    plain = jaxsal.maximize(m, [0, 1], regularizers=(), **opts)
    stepped = jaxsal.maximize(m, [0, 1], regularizers=(jaxsal.blur_every(1, 1.0, weight=0.0),),
                              **opts)
    at_ends = np.isin(np.asarray(plain.images), [0.0, 255.0])
    assert at_ends.mean() > 0.5, at_ends.mean()  # the ascent saturated most pixels
    np.testing.assert_allclose(stepped.images, plain.images, rtol=0, atol=PIXEL_TOL * 255.0)


# ---------------------------------------------------------------- the real spectrum
@pytest.mark.parametrize("hw", [(6, 7), (6, 8), (5, 1)])
def test_fourier_variables_are_a_real_spectrum(hw):
    """``fourier`` optimizes the real FFT (rfft2): ``2 C H (W // 2 + 1)`` variables (a full
    complex FFT had ``2 C H W``), the image's width carried by an empty ``(0, W)`` array;
    the spectrum is ``rfft2`` (ortho) of the values before the sigmoid, divided by the
    1/f scale; unit-variance variables give pre-sigmoid values of unit variance on
    average, measured on the exact Jacobian of the (linear) map."""
    h, w = hw
    c, r, decay = 2, (0.0, 1.0), 1.5
    par = jaxsal.fourier(decorrelate=False, decay_power=decay)
    spec, width = par.init(jax.random.key(0), (h, w, c), r)
    assert spec.shape == (2, c, h, w // 2 + 1) and width.shape == (0, w)
    # the spectrum of a given image, by NumPy's rfft2 and the scale written out
    x = np.asarray(_image((h, w, c), r)) * 0.9 + 0.05
    got, got_w = par.from_image(jnp.asarray(x, jnp.float32), r)
    assert got_w.shape == (0, w)
    v = np.log(x) - np.log1p(-x)
    f = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.rfftfreq(w)[None, :] ** 2)
    scale = 1.0 / np.maximum(f, 1.0 / max(h, w)) ** decay
    want = np.fft.rfft2(np.moveaxis(v, -1, 0), norm="ortho") / scale
    ratio = np.asarray(got[0] + 1j * got[1], np.complex128) / want
    # one normalization constant for every coefficient (the scale's), the same for both parts
    np.testing.assert_allclose(ratio, np.full_like(ratio, ratio.flat[0]), rtol=2e-4)
    # the variance: sum of squared Jacobian entries over the variables, mean over the values
    jac = jax.jacfwd(lambda s: jax.scipy.special.logit(par.to_image((s, width), r)))(
        jnp.zeros_like(spec))
    var = np.sum(np.asarray(jac, np.float64) ** 2) / (h * w * c)
    np.testing.assert_allclose(var, 1.0, rtol=1e-4)


# ---------------------------------------------------------------- the colour matrix
def _variables(c, key=1):
    """Random ``fourier`` variables of a (6, 7, c) image: its real spectrum (7 // 2 + 1
    columns) and its width."""
    return (jax.random.normal(jax.random.key(key), (2, c, 6, 4), jnp.float32),
            jnp.zeros((0, 7), jnp.float32))


def test_fourier_default_colour_is_imagenet_for_rgb_and_the_identity_otherwise():
    """``fourier()`` mixes RGB by ImageNet's colour matrix (scaled to a largest column norm
    of 1) and leaves other channel counts unmixed, as ``decorrelate=False`` does."""
    r = (0.0, 1.0)
    plain = jaxsal.fourier(decorrelate=False)
    for c in (1, 4):
        p = _variables(c)
        np.testing.assert_array_equal(jaxsal.fourier().to_image(p, r), plain.to_image(p, r))
    p = _variables(3)
    v = np.asarray(jax.scipy.special.logit(plain.to_image(p, r)), np.float64)  # unmixed
    m = np.asarray([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
    m = m / np.linalg.norm(m, axis=0).max()
    want = 1.0 / (1.0 + np.exp(-(v @ m.T)))
    np.testing.assert_allclose(jaxsal.fourier().to_image(p, r), want, atol=2e-6)


@pytest.mark.parametrize("c", [1, 4])
def test_fourier_color_matrix_of_any_channel_count(c):
    """``color_matrix`` of shape ``(C, C)`` mixes C-channel images (a 1-channel scale, an
    RGBA block matrix) and ``from_image`` inverts it."""
    rgb = np.asarray([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
    given = np.asarray([[2.0]]) if c == 1 else np.block([[rgb, np.zeros((3, 1))],
                                                        [np.zeros((1, 3)), np.ones((1, 1))]])
    par, plain, r = jaxsal.fourier(color_matrix=given), jaxsal.fourier(decorrelate=False), (
        -1.0, 1.0)
    p = _variables(c)
    v = np.asarray(jax.scipy.special.logit((plain.to_image(p, r) + 1.0) / 2.0), np.float64)
    m = given / np.linalg.norm(given, axis=0).max()
    want = -1.0 + 2.0 / (1.0 + np.exp(-(v @ m.T)))
    got = par.to_image(p, r)
    np.testing.assert_allclose(got, want, atol=5e-6)
    if c == 4:  # the alpha channel is not mixed with the colours: the plain one, scaled
        scale = 1.0 / np.linalg.norm(given, axis=0).max()
        np.testing.assert_allclose(got[..., 3], -1.0 + 2.0 / (1.0 + np.exp(-scale * v[..., 3])),
                                   atol=5e-6)
    x = _image((6, 7, c), r)
    back = par.to_image(par.from_image(x, r), r)
    assert float(jnp.abs(back - x).max()) <= FOURIER_TOL * 2.0


def test_fourier_on_a_four_channel_model_through_maximize():
    """A 4-channel model is optimized with the identity by default and with a (4, 4) matrix
    given; the two differ and stay in range; a (3, 3) matrix is refused before compute."""
    m = _linear((6, 6, 4))
    opts = dict(steps=4, key=0, optimizer=optax.adam(0.2), **PLAIN)
    a = jaxsal.maximize(m, [0, 1], parameterization=jaxsal.fourier(), **opts)
    b = jaxsal.maximize(m, [0, 1], parameterization=jaxsal.fourier(
        color_matrix=np.eye(4) + 0.5), **opts)
    for res in (a, b):
        assert res.images.shape == (2, 6, 6, 4)
        assert float(res.images.min()) >= 0.0 and float(res.images.max()) <= 1.0
        assert np.all(np.asarray(res.trajectory[:, -1]) > np.asarray(res.trajectory[:, 0]))
    assert float(jnp.abs(a.images - b.images).max()) > 1e-3


def test_fourier_colour_refusals_say_what_to_do():
    m = _linear((6, 6, 1))
    rgb = jaxsal.fourier(color_matrix=np.diag([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=r"fourier: expected images of 3 channel\(s\) for the "
                                         r"\(3, 3\) color_matrix given, got 1 channel\(s\)\. "
                                         r"Pass a \(1, 1\) color_matrix.*decorrelate=False"):
        jaxsal.maximize(m, [0], steps=1, parameterization=rgb, **PLAIN)
    with pytest.raises(ValueError, match=r"expected images of 3 channel"):  # called directly
        rgb.to_image(_variables(4), (0.0, 1.0))
    for bad, got in ((np.ones((3, 4)), r"\(3, 4\)"), (np.ones(3), r"\(3,\)"),
                     (np.ones((1, 2, 2)), r"\(1, 2, 2\)")):
        with pytest.raises(ValueError, match=rf"expected color_matrix of shape \(C, C\) for "
                                             rf"images of C channels.*got shape {got}\. Pass"):
            jaxsal.fourier(color_matrix=bad)
    with pytest.raises(ValueError, match=r"expected an invertible color_matrix.*rank 1 of 2.*"
                                         r"np\.eye\(2\)"):
        jaxsal.fourier(color_matrix=np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"expected color_matrix=None with decorrelate=False"
                                         r".*would not be used"):
        jaxsal.fourier(color_matrix=np.eye(3), decorrelate=False)
    with pytest.raises(TypeError, match=r"expected decorrelate as a bool.*'no'"):
        jaxsal.fourier(decorrelate="no")


def test_a_custom_parameterization_of_the_wrong_shape_is_refused_before_compute():
    """A custom parameterization whose images are not ``image_shape`` was resized to the
    model's input without a word (6 rows for 8) or failed inside the model's matmul; one
    whose ``from_image`` does not give ``init``'s variables failed while tracing the loop."""
    m = _linear((8, 8, 1))
    px = jaxsal.pixels()
    rows = jaxsal.Parameterization(px.init, lambda p, r: px.to_image(p, r)[:6], px.from_image,
                                   px.project, "rows")
    for _ in range(2):  # a refusal is not remembered as a check that passed
        with pytest.raises(ValueError, match=r"parameterization rows: expected to_image\(init\("
                                             r"key, \(8, 8, 1\).*got shape \(6, 8, 1\) and "
                                             r"dtype float32\. Fix its init or to_image"):
            jaxsal.maximize(m, [0], steps=1, parameterization=rows, **PLAIN)
    back = jaxsal.Parameterization(px.init, px.to_image, lambda x, r: px.from_image(x, r)[0],
                                   px.project, "back")
    with pytest.raises(ValueError, match=r"parameterization back: expected from_image.*\(8, 8, "
                                         r"1\).*got \(8, 1\)\. Fix its from_image"):
        jaxsal.maximize(m, [0], steps=1, parameterization=back, **PLAIN)
    assert _param.check_parameterization(px, (8, 8, 1), (0.0, 1.0)) is None


def test_the_colour_refusal_with_decorrelate_false_offers_a_call_that_works():
    """The refusal of ``color_matrix`` with ``decorrelate=False`` said "Drop color_matrix, or
    decorrelate=False to mix by it": the second fix was the refused call itself. Both fixes
    it names now work as written."""
    with pytest.raises(ValueError, match=r"Drop color_matrix \(no mixing\), or pass "
                                         r"decorrelate=True \(the default\) to mix by it") as e:
        jaxsal.fourier(color_matrix=np.eye(3), decorrelate=False)
    assert "decorrelate=False to mix" not in str(e.value)
    mixed = jaxsal.fourier(color_matrix=np.eye(3), decorrelate=True)
    plain = jaxsal.fourier(decorrelate=False)
    assert isinstance(mixed, jaxsal.Parameterization)
    assert isinstance(plain, jaxsal.Parameterization)
