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

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src.transforms import Closure, check_finite_array, check_real, closure, frozen

Array = jax.Array
Range = Sequence[float]

_EPS = 1e-6


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


def _squash(u: Array, squash: str) -> Array:
    if squash == "sigmoid":
        return jax.nn.sigmoid(u)
    if squash == "tanh":
        return 0.5 * (jnp.tanh(u) + 1.0)
    return u  # clip: the projection keeps it in [0, 1]


def _unsquash(v: Array, squash: str) -> Array:
    if squash == "sigmoid":
        v = jnp.clip(v, _EPS, 1 - _EPS)
        return jnp.log(v) - jnp.log1p(-v)
    if squash == "tanh":
        return jnp.arctanh(jnp.clip(2.0 * v - 1.0, -1 + _EPS, 1 - _EPS))
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
        # a fraction _EPS from the bound (a variable of +-13.8), where the squash's slope is
        # ~1e-6 and Adam's steps of ~learning_rate take 100+ steps to move a pixel at all
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
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    f = np.sqrt(fy ** 2 + fx ** 2)
    s = 1.0 / np.maximum(f, 1.0 / max(h, w)) ** decay_power
    # normalize so that unit-variance coefficients give unit-variance pixels (ortho FFT)
    s = s / np.sqrt(np.mean(s ** 2))
    return jnp.asarray(s, jnp.float32)


def fourier(*, decay_power: float = 1.0, decorrelate: bool = True, init_std: float = 0.01,
            color_matrix: Any = None) -> Parameterization:
    """A Fourier-space parameterization with 1/f^decay_power scaling and decorrelated colour.

    The variables are the real and imaginary parts of the 2-D FFT of each channel (shape
    ``(2, C, H, W)``; the image is the real part of the inverse FFT), multiplied by
    ``1 / f^decay_power`` so that the optimizer's steps are spread evenly over spatial
    frequencies instead of favouring high frequencies; for 3-channel images a colour
    decorrelation matrix (by default the square root of ImageNet's colour correlation) mixes
    the channels; a sigmoid maps the result into ``input_range``. Grayscale and other channel
    counts skip the colour step.

    Args:
      decay_power: spectral decay exponent (1 in the Distill article).
      decorrelate: use the colour decorrelation for RGB.
      init_std: standard deviation of the initial coefficients.
      color_matrix: a ``(3, 3)`` matrix to use instead of ImageNet's, for 3-channel images
        (on images of other channel counts, which are not decorrelated, it is refused).
    """
    decay_power = check_real(decay_power, "fourier", "decay_power", low=0)
    init_std = check_real(init_std, "fourier", "init_std", low=0)
    cm = _IMAGENET_COLOR_SQRT if color_matrix is None else np.asarray(
        check_finite_array(color_matrix, "fourier", "color_matrix"), np.float32)
    if cm.shape != (3, 3):
        raise ValueError(f"fourier: expected color_matrix of shape (3, 3), got {cm.shape}")
    if np.linalg.matrix_rank(cm) < 3:
        raise ValueError(f"fourier: expected an invertible color_matrix (the image's colours "
                         f"are mapped back through its inverse), got rank "
                         f"{np.linalg.matrix_rank(cm)}: {cm.tolist()}")
    cm = cm / np.max(np.linalg.norm(cm, axis=0))
    # a matrix given for RGB must not be skipped without a word on images of other channels
    mix = dict(decay_power=float(decay_power), decorrelate=bool(decorrelate),
               given=color_matrix is not None)
    to_rgb, from_rgb = (frozen(np.asarray(m, np.float32)) for m in (cm, np.linalg.inv(cm)))
    return Parameterization(
        closure(_fourier_init, init_std=float(init_std)),
        closure(_fourier_to_image, matrix=to_rgb, **mix),
        closure(_fourier_from_image, matrix=from_rgb, **mix),
        _keep, f"fourier(decay={float(decay_power)})")


def _mix(v, matrix, decorrelate, given):  # v (H, W, C)
    if decorrelate and v.shape[-1] == 3:
        return v @ jnp.asarray(np.asarray(matrix, np.float32).T)
    if decorrelate and given:
        raise ValueError(f"fourier: a (3, 3) color_matrix mixes the channels of RGB images; "
                         f"these images have {v.shape[-1]} channel(s) (shape {v.shape}). Drop "
                         "color_matrix (other channel counts are not decorrelated) or pass "
                         "decorrelate=False")
    return v


def _fourier_init(key, shape, r, *, init_std):
    h, w, c = shape
    return init_std * jax.random.normal(key, (2, c, h, w), jnp.float32)


def _fourier_to_image(p, r, *, matrix, decay_power, decorrelate, given):
    lo, hi = r
    _, c, h, w = p.shape
    spec = (p[0] + 1j * p[1]) * _spectrum_scale(h, w, decay_power)
    v = jnp.real(jnp.fft.ifft2(spec, norm="ortho")).astype(jnp.float32)  # (C, H, W)
    v = _mix(jnp.transpose(v, (1, 2, 0)), matrix, decorrelate, given)
    return lo + (hi - lo) * jax.nn.sigmoid(v)


def _fourier_from_image(x, r, *, matrix, decay_power, decorrelate, given):
    h, w, c = x.shape
    v = _mix(_unsquash(_unit(x, r), "sigmoid"), matrix, decorrelate, given)
    spec = jnp.fft.fft2(jnp.transpose(v, (2, 0, 1)), norm="ortho")
    spec = spec / _spectrum_scale(h, w, decay_power)
    return jnp.stack([spec.real, spec.imag]).astype(jnp.float32)


def _keep(p, r):
    return p
