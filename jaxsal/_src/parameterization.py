"""Image parameterizations: how the optimized variables become an image inside a range.

A :class:`Parameterization` is three pure functions of ONE image (optax-style factories close
over the hyperparameters, the range is passed in):

- ``init(key, shape, input_range) -> params``: random starting variables for an image of
  ``shape = (H, W, C)``;
- ``to_image(params, input_range) -> image``: the image ``(H, W, C)``, inside the range;
- ``from_image(image, input_range) -> params``: the (approximate) inverse, used to start from
  a seed image, to rescale between multi-scale rounds and after blurring steps;
- ``project(params, input_range) -> params``: applied after every update (clipping for the
  ``"clip"`` pixel parameterization, the identity otherwise).

:func:`pixels` optimizes one variable per pixel; :func:`fourier` optimizes a scaled Fourier
spectrum with decorrelated colours (Olah, Mordvintsev & Schubert 2017, "Feature
Visualization", Distill; Mordvintsev et al. 2018, "Differentiable Image Parameterizations").
Both return parameterizations that are equal when built with equal hyperparameters
(``pixels() == pixels()``), so calls that build them inline share a compiled program.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src.transforms import Closure, check_finite_array, check_real, closure, frozen

Array = jax.Array
Range = Sequence[float]

# The inverse of a squash (``from_image``) clamps its argument into [2^-24, 1 - 2^-24], where it
# is finite: 1 - 2^-24 is the largest float32 below 1, and float32 rounds sigmoid(u) to 1 above
# u = 16.6, so a saturated pixel comes back to within 2^-24 (6e-8) of the range from either end
# and ``to_image(from_image(x))`` is ``x`` to float32 rounding across the whole range, its ends
# included. The variables stay within +-16.6 (the lower end is bounded like the upper one: a
# pixel at lo is not sent to -87, where the sigmoid's slope is 1e-38). A clamp at 1e-6 moved a
# pixel at an end by 1e-6 of the range, at every blur step and multi-scale round.
_V_MIN = 2.0 ** -24
_V_MAX = 1.0 - 2.0 ** -24  # == np.nextafter(np.float32(1), np.float32(0))


class Parameterization(NamedTuple):
    """How the optimized variables of one image become the image, inside ``input_range``.

    Attributes:
      init: ``init(key, shape, input_range) -> params``, random starting variables for an
        image of ``shape = (H, W, C)``.
      to_image: ``to_image(params, input_range) -> image``, the image ``(H, W, C)``, inside
        the range.
      from_image: ``from_image(image, input_range) -> params``, the (approximate) inverse:
        starts from a seed image, rescales between multi-scale rounds and after blurs.
      project: ``project(params, input_range) -> params``, applied after every update
        (clipping for ``pixels(squash="clip")``, the identity otherwise).
      name: a label, shown in its ``repr``.
    """

    init: Callable[[Array, tuple, Range], Any]
    to_image: Callable[[Any, Range], Array]
    from_image: Callable[[Array, Range], Any]
    project: Callable[[Any, Range], Any]
    name: str = "custom"


def _unit(x: Array, r: Range) -> Array:
    lo, hi = r
    return (x - lo) / (hi - lo)


def _logit(v: Array) -> Array:
    v = jnp.clip(v, _V_MIN, _V_MAX)
    return jnp.log(v) - jnp.log1p(-v)


def _squash(u: Array, squash: str) -> Array:
    if squash == "sigmoid":
        return jax.nn.sigmoid(u)
    if squash == "tanh":
        # (tanh(u) + 1) / 2 is sigmoid(2 u); written so, it keeps float32's precision near 0,
        # where tanh(u) + 1 cancels (pixels below 3e-8 of the range became exactly lo)
        return jax.nn.sigmoid(2.0 * u)
    return u  # clip: the projection keeps it in [0, 1]


def _unsquash(v: Array, squash: str) -> Array:
    if squash == "sigmoid":
        return _logit(v)
    if squash == "tanh":
        # arctanh(2 v - 1), without the cancellation of 2 v - 1 near v = 0
        return 0.5 * _logit(v)
    return v


SQUASHES = ("sigmoid", "tanh", "clip")


def pixels(*, squash: str = "sigmoid", init_value: float = 0.5,
           init_std: float = 0.01) -> Parameterization:
    """One variable per pixel and channel.

    Args:
      squash: how variables map into ``input_range``: ``"sigmoid"`` or ``"tanh"`` (smooth,
        always inside), or ``"clip"`` (the variable is the pixel value, clipped after every
        step: projected gradient ascent).
      init_value: the starting image, as a fraction of the range (0 = ``lo``, 1 = ``hi``);
        strictly between 0 and 1 for ``"sigmoid"`` and ``"tanh"``, which reach the ends of
        the range only at infinity (a start there would be saturated).
      init_std: standard deviation of the starting noise, in variable units (for ``"clip"``,
        in fractions of the range, and the noisy start is clipped into the range).
    """
    if squash not in SQUASHES:
        raise ValueError(f"pixels: expected squash in {SQUASHES}, got {squash!r}")
    init_value = check_real(init_value, "pixels", "init_value", low=0, high=1,
                            kind="a fraction of input_range")
    if squash != "clip" and init_value in (0.0, 1.0):
        # a squashed pixel reaches lo and hi only at infinity: the start would be clamped to
        # 2^-24 of the range from the bound (a variable of +-16.6), where the squash's
        # slope is 6e-8 and Adam's steps of ~learning_rate take 100+ steps to move a
        # pixel at all
        raise ValueError(f"pixels: expected init_value strictly between 0 and 1 with "
                         f"squash={squash!r}, got {init_value:g}: a {squash} reaches the ends "
                         f"of the range only at infinity, so the start would be saturated "
                         f"(the ascent barely moves it for 100+ steps). Start near the end, "
                         f"e.g. init_value={0.05 if init_value == 0 else 0.95}, or use "
                         f"squash='clip' to start exactly at it")
    init_std = check_real(init_std, "pixels", "init_std", low=0)

    hyper = dict(squash=squash)
    return Parameterization(
        closure(_pixels_init, squash=squash, init_value=float(init_value),
                init_std=float(init_std)),
        closure(_pixels_to_image, **hyper), closure(_pixels_from_image, **hyper),
        closure(_pixels_project, **hyper), f"pixels({squash})")


def _pixels_init(key, shape, r, *, squash, init_value, init_std):
    u0 = _unsquash(jnp.full(shape, init_value, jnp.float32), squash)
    # "clip": the variables are the pixels; start inside the range, as every later step is
    return _pixels_project(u0 + init_std * jax.random.normal(key, shape, jnp.float32), r,
                           squash=squash)


def _pixels_to_image(u, r, *, squash):
    lo, hi = r
    return lo + (hi - lo) * _squash(u, squash)


def _pixels_from_image(x, r, *, squash):
    return _unsquash(_unit(x, r), squash)


def _pixels_project(u, r, *, squash):
    return jnp.clip(u, 0.0, 1.0) if squash == "clip" else u


#: How far inside ``input_range`` (a fraction of it) a starting image (``seed_images``) is
#: clipped for a parameterization that reaches the ends of the range only at infinity (a
#: sigmoid or tanh): a pixel at an end would start where the squash is flat (its variable
#: clamped to about -13.8) and barely move; 0.01 starts it at -4.6.
START_MARGIN = 0.01


def reaches_ends(par: Parameterization) -> bool:
    """Whether ``par`` represents the ends of the range exactly (``pixels(squash="clip")``);
    other parameterizations (sigmoid and tanh pixels, ``fourier``, custom ones) start a seed
    :data:`START_MARGIN` inside the range."""
    proj = par.project
    return (isinstance(proj, Closure) and proj.fn is _pixels_project
            and dict(proj.hyper).get("squash") == "clip")


# Square root of the colour correlation of ImageNet RGB pixels (an empirical statistic; the
# values used throughout the feature-visualization literature, Olah et al. 2017).
_IMAGENET_COLOR_SQRT = np.asarray([[0.26, 0.09, 0.02],
                                   [0.27, 0.00, -0.05],
                                   [0.27, -0.09, 0.03]], np.float32)


def _spectrum_scale(h: int, w: int, decay_power: float) -> Array:
    """``(h, w // 2 + 1)``: the 1/f^decay_power scale of every coefficient of a real 2-D FFT
    (``rfft2``) of an ``(h, w)`` image, normalized so that coefficients whose real and
    imaginary parts have unit variance give pixels of unit variance on average (``irfft2``
    with ``norm="ortho"``)."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fy ** 2 + fx ** 2)
    s = 1.0 / np.maximum(f, 1.0 / max(h, w)) ** decay_power
    # a column 1 <= j < w / 2 stands for itself and its mirror w - j: its coefficients add
    # twice (pixel variance 4 s^2 / hw); the first column and, for an even w, the last one
    # (the Nyquist frequency) stand for themselves, of which irfft2 keeps the real part
    # (pixel variance s^2 / hw)
    mult = np.full(s.shape[1], 4.0)
    mult[0] = 1.0
    if w % 2 == 0:
        mult[-1] = 1.0
    s = s / np.sqrt(np.sum(mult * s ** 2) / (h * w))
    return jnp.asarray(s, jnp.float32)


def fourier(*, decay_power: float = 1.0, decorrelate: bool = True, init_std: float = 0.01,
            color_matrix: Any = None) -> Parameterization:
    """A Fourier-space parameterization with 1/f^decay_power scaling and decorrelated colour.

    The variables are the real and imaginary parts of the real 2-D FFT of each channel
    (``rfft2``, as Lucid's ``fft_image``: shape ``(2, C, H, W // 2 + 1)``, about half the
    ``2 C H W`` of a full complex FFT, whose imaginary image is discarded; the image is
    ``irfft2`` of them; the variables are a pair ``(spectrum, width)`` whose second,
    ``(0, W)``, holds no values and gives the image's width, which the spectrum's shape
    leaves open between ``2 n - 2`` and ``2 n - 1``), multiplied by ``1 / f^decay_power``
    (scaled so that unit-variance variables give unit-variance values before the sigmoid) so
    that the optimizer's steps are spread evenly over spatial frequencies instead of favouring
    high frequencies; a colour matrix ``M`` of shape ``(C, C)`` then mixes the channels of
    every pixel (``v @ M.T``: decorrelated variables become correlated colours), and a
    sigmoid maps the result into ``input_range``.

    The colour matrix: by default, for 3-channel (RGB) images the square root of ImageNet's
    colour correlation (Olah et al. 2017), and the identity for images of any other channel
    count (a grayscale MNIST model, 4-channel RGBA or RGB + infrared: no mixing);
    ``color_matrix=M`` uses ``M`` instead, for images of ``M``'s channel count only (images
    of another count are refused). ``M`` is scaled so that its largest column has norm 1,
    as Lucid scales ImageNet's; ``from_image`` maps colours back through its inverse.

    Args:
      decay_power: spectral decay exponent (1 in the Distill article), ``>= 0``.
      decorrelate: mix the channels by the colour matrix; ``False``: no mixing (the identity
        for every channel count).
      init_std: standard deviation of the initial coefficients.
      color_matrix: an invertible ``(C, C)`` matrix, for images of ``C`` channels (e.g. a
        ``(4, 4)`` one for RGBA that mixes RGB by ``M_rgb`` and leaves alpha alone,
        ``scipy.linalg.block_diag(M_rgb, 1.0)`` with ``M_rgb`` scaled to a largest column norm
        of 1 first, as the whole matrix is); ``None``: the default above. Refused with
        ``decorrelate=False``, which would not use it.

    Example::

        par = jaxsal.fourier()                      # ImageNet's for RGB, identity otherwise
        par = jaxsal.fourier(color_matrix=np.eye(4))  # a 4-channel model, explicitly
    """
    decay_power = check_real(decay_power, "fourier", "decay_power", low=0)
    init_std = check_real(init_std, "fourier", "init_std", low=0)
    if not isinstance(decorrelate, (bool, np.bool_)):
        raise TypeError(f"fourier: expected decorrelate as a bool (True or False), got "
                        f"{decorrelate!r} ({type(decorrelate).__name__})")
    given = color_matrix is not None
    if given and not decorrelate:
        raise ValueError("fourier: expected color_matrix=None with decorrelate=False (no "
                         "colour mixing), got a color_matrix, which would not be used. Drop "
                         "color_matrix (no mixing), or pass decorrelate=True (the default) "
                         "to mix by it")
    if not decorrelate:
        to_rgb = from_rgb = None
    else:
        cm = _IMAGENET_COLOR_SQRT if not given else _check_color_matrix(color_matrix)
        cm = cm / np.max(np.linalg.norm(cm, axis=0))
        to_rgb, from_rgb = (frozen(np.asarray(m, np.float32))
                            for m in (cm, np.linalg.inv(cm)))
    # a matrix given for C channels is refused on images of another count; the default
    # (ImageNet's, for RGB) leaves them unmixed
    mix = dict(decay_power=float(decay_power), given=given)
    return Parameterization(
        closure(_fourier_init, init_std=float(init_std)),
        closure(_fourier_to_image, matrix=to_rgb, **mix),
        closure(_fourier_from_image, matrix=from_rgb, **mix),
        _keep, f"fourier(decay={float(decay_power)})")


def _check_color_matrix(color_matrix: Any) -> np.ndarray:
    """A user's colour matrix as a float64 ``(C, C)`` array, or an error saying what is
    expected."""
    cm = check_finite_array(color_matrix, "fourier", "color_matrix")
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] < 1:
        raise ValueError(f"fourier: expected color_matrix of shape (C, C) for images of C "
                         f"channels (a square matrix: (3, 3) for RGB), got shape {cm.shape}. "
                         f"Pass a square matrix, or drop color_matrix (ImageNet's for RGB, "
                         f"the identity for other channel counts)")
    rank = np.linalg.matrix_rank(cm)
    if rank < len(cm):
        raise ValueError(f"fourier: expected an invertible color_matrix (the image's colours "
                         f"are mapped back through its inverse), got rank {rank} of "
                         f"{len(cm)}: {cm.tolist()}. Pass an invertible matrix (np.eye("
                         f"{len(cm)}) for no mixing)")
    return cm


def check_parameterization(par: Parameterization, shape: tuple, input_range: Range) -> None:
    """Refuse, before any compute (shapes only, ``jax.eval_shape``), a parameterization that
    cannot make images of ``shape = (H, W, C)``: a ``fourier(color_matrix=M)`` for images of
    another channel count than ``M``'s, a custom one whose ``to_image(init(...))`` is not
    ``(H, W, C)`` or whose ``from_image`` does not give variables like ``init``'s (it starts
    seeds and multi-scale rounds). Raises a ``ValueError`` saying what was expected.
    A check that passed is remembered (tracing ``fourier`` at 224x224 takes 13 ms)."""
    args = (par, tuple(int(d) for d in shape), tuple(float(v) for v in input_range))
    try:
        hash(args)
    except TypeError:  # a custom parameterization with an unhashable part: not remembered
        return _check_parameterization(*args)
    return _checked(*args)


@functools.lru_cache(maxsize=64)
def _checked(par: Parameterization, shape: tuple, input_range: tuple) -> None:
    return _check_parameterization(par, shape, input_range)


def _check_parameterization(par: Parameterization, shape: tuple, input_range: tuple) -> None:
    to_image = par.to_image
    # fourier's channel count: the check to_image makes (_mix), made before tracing, so that
    # the error comes without the frames of eval_shape's trace and JAX's note on them
    if isinstance(to_image, Closure) and to_image.fn is _fourier_to_image:
        hyper = dict(to_image.hyper)
        _channel_matrix(shape[-1], hyper["matrix"], hyper["given"])
    r = tuple(float(v) for v in input_range)
    variables = jax.eval_shape(lambda k: par.init(k, tuple(shape), r), jax.random.key(0))
    image = jax.eval_shape(lambda p: par.to_image(p, r), variables)
    if not (isinstance(image, jax.ShapeDtypeStruct) and image.shape == tuple(shape)
            and jnp.issubdtype(image.dtype, jnp.floating)):
        got = (f"shape {image.shape} and dtype {image.dtype}"
               if isinstance(image, jax.ShapeDtypeStruct) else
               str(jax.tree_util.tree_map(lambda a: (a.shape, str(a.dtype)), image)))
        raise ValueError(f"parameterization {par.name}: expected to_image(init(key, {shape}, "
                         f"input_range), input_range) to be a float image of shape {shape}, "
                         f"got {got}. Fix its init or to_image")
    back = jax.eval_shape(lambda x: par.from_image(x, r), image)
    same = jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(variables) and all(
        a.shape == b.shape for a, b in zip(jax.tree_util.tree_leaves(back),
                                           jax.tree_util.tree_leaves(variables)))
    if not same:
        def shapes(t):
            return jax.tree_util.tree_map(lambda a: a.shape, t)
        raise ValueError(f"parameterization {par.name}: expected from_image of a {shape} image "
                         f"to give variables shaped as init's, {shapes(variables)}, got "
                         f"{shapes(back)}. Fix its from_image (it starts seed_images and the "
                         f"rounds of upscaling_steps)")


def _channel_matrix(c: int, matrix: Any, given: bool) -> np.ndarray | None:
    """The ``(c, c)`` matrix that mixes the channels of ``c``-channel images, ``None`` for
    none (the identity): ``matrix`` (a frozen ``(K, K)``, or ``None`` for
    ``decorrelate=False``) when ``K == c``; a ``ValueError`` when it was given for another
    channel count; ``None`` for the default (ImageNet's, for RGB) on other channel counts."""
    if matrix is None:
        return None
    k = len(matrix)
    if k == c:
        return np.asarray(matrix, np.float32)
    if not given:
        return None
    raise ValueError(f"fourier: expected images of {k} channel(s) for the ({k}, {k}) "
                     f"color_matrix given, got {c} channel(s). Pass a ({c}, {c}) color_matrix "
                     f"(np.eye({c}): no mixing), drop color_matrix (ImageNet's for RGB, the "
                     f"identity for other channel counts) or pass decorrelate=False")


def _mix(v, matrix, given):  # v (H, W, C)
    m = _channel_matrix(v.shape[-1], matrix, given)
    return v if m is None else v @ jnp.asarray(m.T)


def _fourier_init(key, shape, r, *, init_std):
    h, w, c = shape
    return (init_std * jax.random.normal(key, (2, c, h, w // 2 + 1), jnp.float32),
            _width(w))


def _width(w: int) -> Array:
    """A ``(0, w)`` array: no values, the image's width ``w`` in its shape (an ``rfft2``
    spectrum of ``n`` columns is that of an image ``2 n - 2`` or ``2 n - 1`` wide)."""
    return jnp.zeros((0, w), jnp.float32)


def _fourier_to_image(p, r, *, matrix, decay_power, given):
    lo, hi = r
    p, width = p
    h, w = p.shape[-2], width.shape[-1]
    spec = (p[0] + 1j * p[1]) * _spectrum_scale(h, w, decay_power)
    v = jnp.fft.irfft2(spec, s=(h, w), norm="ortho").astype(jnp.float32)  # (C, H, W)
    v = _mix(jnp.transpose(v, (1, 2, 0)), matrix, given)
    return lo + (hi - lo) * jax.nn.sigmoid(v)


def _fourier_from_image(x, r, *, matrix, decay_power, given):
    h, w, c = x.shape
    v = _mix(_unsquash(_unit(x, r), "sigmoid"), matrix, given)
    spec = jnp.fft.rfft2(jnp.transpose(v, (2, 0, 1)), norm="ortho")
    spec = spec / _spectrum_scale(h, w, decay_power)
    return jnp.stack([spec.real, spec.imag]).astype(jnp.float32), _width(w)


def _keep(p, r):
    return p
