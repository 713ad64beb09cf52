"""Random, differentiable image transforms for transformation robustness.

Each transform is a pure function ``t(key, image) -> image`` on ONE image ``(H, W, C)``;
factories close over the hyperparameters (optax style). Applying a random transform before
every forward pass makes the optimized image robust to small shifts, scalings and rotations,
which removes most of the high-frequency patterns an unregularized optimization finds
(Mordvintsev, Olah & Tyka 2015, "Inceptionism"; Olah, Mordvintsev & Schubert 2017,
"Feature Visualization", Distill).

The factories return :class:`Closure` objects: callable as above, and equal when built with
equal hyperparameters, so ``maximize(..., transforms=jaxsal.jitter(2))`` written inline in a
loop finds its compiled program again (a function of your own is matched by its code and
the values of the variables it reads, ``base.callable_key``).

``jitter``, ``random_scale`` and ``random_rotate`` keep the image size; ``pad`` enlarges it
(:func:`jaxsal.maximize` resizes to the model's input size when the model needs one).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src.base import native
from jaxsal._src import ints, reals
from jaxsal._src.base import typed

Array = jax.Array
Transform = Callable[[Array, Array], Array]

_PAD_MODES = ("reflect", "edge", "constant", "wrap")


@dataclasses.dataclass(frozen=True, eq=False)
class Closure:
    """``fn`` with its hyperparameters bound, like ``functools.partial(fn, **hyper)``, but
    equal to another :class:`Closure` of the same ``fn`` and equal hyperparameters (and
    hashed alike).

    jaxsal's factories (transforms, parameterizations, regularizers) return these, so that
    ``jaxsal.jitter(2)`` built afresh for every call is the same function as far as caches
    are concerned: :func:`jaxsal.maximize` finds its compiled program again instead of
    compiling another. Hyperparameters must be hashable (numbers, strings, tuples, other
    functions); numbers of different types (``2`` and ``2.0``) are kept apart."""

    fn: Callable
    hyper: tuple  # ((name, value), ...)

    def __call__(self, *args: Any) -> Any:
        # a big-endian NumPy image: JAX reads no other byte order (a compiled function, the
        # rotation's, read its bytes as native ones)
        return self.fn(*(native(a) for a in args), **dict(self.hyper))

    def _key(self) -> tuple:
        return (self.fn, tuple((k, typed(v)) for k, v in self.hyper))

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Closure) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyper)
        return f"{self.fn.__name__.lstrip('_')}({args})"


def closure(fn: Callable, **hyper: Any) -> Closure:
    """``fn`` with the keyword arguments ``hyper`` bound (see :class:`Closure`)."""
    return Closure(fn, tuple(hyper.items()))


def frozen(a: Any) -> Any:
    """A number or array as a :class:`Closure` hyperparameter: a float, or nested tuples of
    floats (hashable, compared by value); ``jnp.asarray`` gives the array back."""
    a = np.asarray(a, dtype=float)
    return float(a) if a.ndim == 0 else tuple(frozen(e) for e in a)


_NONFINITE = reals.NONFINITE


def check_real(v: Any, what: str, name: str, *, low: float | None = None,
               above: bool = False, high: float | None = None,
               kind: str = "a finite number") -> float:
    """``v`` as a finite float (``>= low``, or ``> low`` with ``above``; ``<= high``), or a
    ``ValueError`` naming ``what``'s argument ``name``: hyperparameters of the factories,
    checked when they are built (a NaN weight, angle or width traces into NaN images). The
    rule is :func:`jaxsal._src.reals.check_real`'s."""
    return reals.check_real(v, name, low=low, above=above, high=high, where=what, kind=kind)


def check_count(v: Any, what: str, name: str, *, low: int = 0) -> int:
    """``v`` as an int ``>= low`` by the one rule of integer counts
    (:func:`jaxsal._src.ints.check_int`: a float, even whole, is refused), or a
    ``ValueError``: pixel counts and step intervals."""
    return ints.check_int(v, name, low=low, where=what)


def check_finite_array(a: Any, what: str, name: str) -> np.ndarray:
    """``a`` as a float array with every entry finite, or a ``ValueError``."""
    arr = np.asarray(a, dtype=float)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what}: expected {name} with finite entries, got {a!r}"
                         + _NONFINITE)
    return arr


def _check_image(image: Array, what: str) -> None:
    if jnp.ndim(image) != 3:
        raise ValueError(f"{what}: expected one image (H, W, C), got shape "
                         f"{jnp.shape(image)}; map it over a batch (N, H, W, C) with jax.vmap, "
                         "and give a 2-D map a channel axis (m[..., None])")


def _identity(key: Array, image: Array) -> Array:
    del key
    return image


def identity() -> Transform:
    """The transform that does nothing (always the same function, so calls that use it share
    one compiled program)."""
    return _identity


def jitter(pixels: int, *, mode: str = "reflect") -> Transform:
    """Shift the image by a random integer offset in ``[-pixels, pixels]`` on each axis.

    The size is kept: the image is padded by ``pixels`` (``mode``: one of :func:`pad`'s,
    NumPy's names; the default ``"reflect"`` does not repeat the edge pixel) and a window of
    the original size is cut at the random offset.
    """
    pixels = check_count(pixels, "jitter", "pixels")
    if mode not in _PAD_MODES:
        raise ValueError(f"jitter: expected mode in {_PAD_MODES}, got {mode!r}")
    if pixels == 0:
        return identity()
    return closure(_jitter, pixels=pixels, mode=mode)


def _jitter(key: Array, image: Array, *, pixels: int, mode: str) -> Array:
    _check_image(image, "jitter")
    h, w, c = image.shape
    padded = jnp.pad(image, ((pixels, pixels), (pixels, pixels), (0, 0)), mode=mode)
    off = jax.random.randint(key, (2,), 0, 2 * pixels + 1)
    return jax.lax.dynamic_slice(padded, (off[0], off[1], 0), (h, w, c))


def pad(pixels: int, *, mode: str = "constant", value: float = 0.0) -> Transform:
    """Pad every side by ``pixels`` (deterministic; the key is unused): ``(H, W, C)`` ->
    ``(H + 2 pixels, W + 2 pixels, C)``.

    ``mode``, as ``jnp.pad``'s (NumPy's ``np.pad``) mode of the same name, on a row
    ``a b c d`` padded by 2:

    - ``"constant"`` (the default): ``value`` everywhere (``v v a b c d v v``); ``value`` is
      in the image's own units (e.g. the middle of ``input_range``);
    - ``"reflect"``: mirrored about the edge pixel, which is not repeated
      (``c b a b c d c b``): TensorFlow's ``tf.pad(mode="REFLECT")``, Lucid's padding,
      SciPy's ``"mirror"``;
    - ``"edge"``: the edge pixel repeated (``a a a b c d d d``): SciPy's ``"nearest"``;
    - ``"wrap"``: the image repeated (``c d a b c d a b``).

    These are NumPy's names: :func:`random_scale` and :func:`random_rotate` take SciPy's
    (``scipy.ndimage``), where ``"reflect"`` repeats the edge pixel (``b a a b c d d c``,
    NumPy's ``"symmetric"``, not offered here) and ``"mirror"`` is this ``"reflect"``.
    :func:`jitter` pads with these modes too."""
    pixels = check_count(pixels, "pad", "pixels")
    value = check_real(value, "pad", "value")
    if mode not in _PAD_MODES:
        raise ValueError(f"pad: expected mode in {_PAD_MODES}, got {mode!r}")
    if pixels == 0:
        return identity()
    return closure(_pad, pixels=pixels, mode=mode, value=value)


def _pad(key: Array, image: Array, *, pixels: int, mode: str, value: float) -> Array:
    del key
    _check_image(image, "pad")
    widths = ((pixels, pixels), (pixels, pixels), (0, 0))
    if mode == "constant":
        return jnp.pad(image, widths, mode="constant", constant_values=value)
    return jnp.pad(image, widths, mode=mode)


def _fold_index(i: Array, n: int, mode: str) -> tuple[Array, Array]:
    """Integer indices mapped into [0, n) per ``mode``; also a validity mask (for constant)."""
    if mode == "wrap":
        return jnp.mod(i, n), jnp.ones(i.shape, bool)
    if mode in ("reflect", "mirror"):
        # reflect: ... 1 0 | 0 1 2 ... (edge repeated); mirror: ... 2 1 | 0 1 2 ...
        if n == 1:
            return jnp.zeros_like(i), jnp.ones(i.shape, bool)
        period = 2 * n if mode == "reflect" else 2 * n - 2
        j = jnp.mod(i, period)
        j = jnp.where(j >= n, period - 1 - j if mode == "reflect" else period - j, j)
        return j, jnp.ones(i.shape, bool)
    valid = (i >= 0) & (i < n)
    return jnp.clip(i, 0, n - 1), valid if mode == "constant" else jnp.ones(i.shape, bool)


def _same_dtype(out: Array, image: Array) -> Array:
    """``out`` (computed with float32 weights) in a floating ``image``'s dtype: a bfloat16 or
    float16 image is not promoted to float32 by a transform (an integer image's result stays
    a float)."""
    return out.astype(image.dtype) if jnp.issubdtype(image.dtype, jnp.floating) else out


def _bilinear(image: Array, sy: Array, sx: Array, mode: str) -> Array:
    """Sample ``image (H, W, C)`` at float coordinates ``sy, sx (h, w)``, bilinearly, in
    float32 (or wider); the result has a floating image's dtype."""
    h, w, _ = image.shape
    y0, x0 = jnp.floor(sy), jnp.floor(sx)
    wy, wx = (sy - y0)[..., None], (sx - x0)[..., None]
    y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)
    out = 0.0
    for dy, fy in ((0, 1.0 - wy), (1, wy)):
        yi, vy = _fold_index(y0 + dy, h, mode)
        for dx, fx in ((0, 1.0 - wx), (1, wx)):
            xi, vx = _fold_index(x0 + dx, w, mode)
            v = image[yi, xi] * (vy & vx)[..., None]
            out = out + fy * fx * v
    return _same_dtype(out, image)


def _affine(image: Array, scale: Array, angle_rad: Array, mode: str) -> Array:
    """Zoom by ``scale`` and rotate by ``angle`` about the centre, bilinear, same size."""
    h, w, _ = image.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) - cy,
                          jnp.arange(w, dtype=jnp.float32) - cx, indexing="ij")
    cos, sin = jnp.cos(angle_rad), jnp.sin(angle_rad)
    # output pixel p samples the input at R(-angle) p / scale
    sy = (cos * yy - sin * xx) / scale + cy
    sx = (sin * yy + cos * xx) / scale + cx
    return _bilinear(image, sy, sx, mode)


#: how points outside the image are read (bilinear, as ``scipy.ndimage`` with ``order=1`` and
#: the mode of the same name, except two): ``"wrap"`` repeats the image with period ``n``,
#: SciPy's ``"grid-wrap"`` (SciPy's ``"wrap"`` has period ``n - 1``), and ``"constant"``
#: interpolates towards zeros beyond the edge, SciPy's ``"grid-constant"`` (SciPy's
#: ``"constant"`` reads 0 at once beyond the edge); the grid names are accepted as aliases
_SAMPLE_MODES = ("nearest", "reflect", "mirror", "wrap", "constant")
_SAMPLE_ALIASES = {"grid-wrap": "wrap", "grid-constant": "constant"}


def _sample_mode(mode: Any, what: str) -> str:
    """``mode`` checked against :data:`_SAMPLE_MODES` (or an alias), as its plain name."""
    if isinstance(mode, str) and mode in _SAMPLE_ALIASES:
        return _SAMPLE_ALIASES[mode]
    if not isinstance(mode, str) or mode not in _SAMPLE_MODES:
        raise ValueError(f"{what}: expected mode in {_SAMPLE_MODES + tuple(_SAMPLE_ALIASES)}, "
                         f"got {mode!r}")
    return mode


def random_scale(low: float, high: float, *, mode: str = "nearest") -> Transform:
    """Zoom about the centre by a factor drawn uniformly from ``[low, high]`` (size kept).
    ``mode``: how points outside the image are read, as ``scipy.ndimage``'s modes of the
    same name (``"nearest"``, ``"reflect"``, ``"mirror"``) or ``"wrap"`` (period ``n``:
    SciPy's ``"grid-wrap"``) or ``"constant"`` (zeros, interpolated across the edge: SciPy's
    ``"grid-constant"``); the two grid names are accepted too.
    """
    low = check_real(low, "random_scale", "low", low=0, above=True)
    high = check_real(high, "random_scale", "high", low=0, above=True)
    if not low <= high:
        raise ValueError(f"random_scale: expected 0 < low <= high, got ({low}, {high}); "
                         f"swap them: random_scale({high}, {low})")
    mode = _sample_mode(mode, "random_scale")
    return closure(_random_scale, low=low, high=high, mode=mode)


def _random_scale(key: Array, image: Array, *, low: float, high: float, mode: str) -> Array:
    _check_image(image, "random_scale")
    s = jax.random.uniform(key, (), minval=low, maxval=high)
    return _affine(image, s, jnp.zeros(()), mode)


def random_rotate(degrees: float, *, mode: str = "nearest") -> Transform:
    """Rotate about the centre by an angle drawn uniformly from ``[-degrees, degrees]``.
    ``mode``: how points outside the image are read, as ``scipy.ndimage``'s modes of the
    same name (``"nearest"``, ``"reflect"``, ``"mirror"``) or ``"wrap"`` (period ``n``:
    SciPy's ``"grid-wrap"``) or ``"constant"`` (zeros, interpolated across the edge: SciPy's
    ``"grid-constant"``); the two grid names are accepted too.
    """
    degrees = check_real(degrees, "random_rotate", "degrees", low=0)
    mode = _sample_mode(mode, "random_rotate")
    return closure(_random_rotate, degrees=degrees, mode=mode)


def _random_rotate(key: Array, image: Array, *, degrees: float, mode: str) -> Array:
    _check_image(image, "random_rotate")
    a = jax.random.uniform(key, (), minval=-degrees, maxval=degrees) * (math.pi / 180.0)
    return _affine(image, jnp.ones(()), a, mode)


def factory_name(f: Any) -> str:
    """The public name of a jaxsal factory given itself where what it builds is expected
    (``jaxsal.jitter``, not ``jaxsal.jitter(2)``, a :class:`Closure` without a name), else
    ``""`` (the functions it builds are private: ``_identity``, ``_jitter``)."""
    name = getattr(f, "__name__", "")
    if (callable(f) and name and not name.startswith("_")
            and getattr(f, "__module__", "").startswith("jaxsal.")):
        return name
    return ""


def compose(*transforms: Transform) -> Transform:
    """Apply ``transforms`` in order, each with its own key split from the given one."""
    ts = tuple(transforms)
    for t in ts:
        if not callable(t):
            raise TypeError(f"compose: expected transforms (key, image) -> image, got {t!r}")
        name = factory_name(t)
        if name:  # (it failed only while tracing: "jitter() takes 1 positional argument")
            raise TypeError(f"compose: expected transforms (key, image) -> image, got the "
                            f"factory jaxsal.{name}; call it: jaxsal.{name}(...)")
    return closure(_compose, transforms=ts)


def _compose(key: Array, image: Array, *, transforms: tuple) -> Array:
    if not transforms:
        return image
    for k, t in zip(jax.random.split(key, len(transforms)), transforms):
        image = t(k, image)
    return image


def standard_transforms(image_size: int = 224, *, pad_value: float | None = None) -> Transform:
    """A robustness stack after Lucid's ``standard_transforms`` (Olah et al. 2017), sized for
    ``image_size`` pixels; not Lucid's exactly.

    For a 224-pixel image: ``pad(12)`` on every side (by reflection with
    ``pad_value=None``, else with that constant, in the image's own units), ``jitter(8)`` (a
    shift by an integer in [-8, 8] per axis, size kept), ``random_scale(0.9, 1.1)`` (a zoom
    about the centre by a uniform factor, size kept), ``random_rotate(10.0)`` (a uniform
    angle in [-10, 10] degrees, size kept), ``jitter(4)``. The pixel amounts scale with
    ``image_size / 224`` (at least 1 pixel); the image comes out 2 x 12 pixels larger
    (``(h + 24, w + 24)`` at 224; a fixed-size model resizes it to its input).

    Lucid's stack pads with the constant 0.5 (``pad_value=0.5`` for images in [0, 1] gives
    that pad); its ``jitter(d)`` is a random crop d pixels smaller (offsets 0..d: shifts of
    +-d/2 about the centre, half of these); its scale picks one of 0.90, 0.92, ..., 1.10 and
    resizes the image (the size changes with it); its rotation picks a whole degree in
    [-10, 10], 0 six times as likely, reads the nearest pixel (here: bilinear) and fills the
    corners with 0 (here: the nearest edge pixel). Its output is about 12 pixels larger,
    times the scale. A random output size cannot be traced with static shapes, so that
    stack is not offered.
    """
    image_size = check_count(image_size, "standard_transforms", "image_size", low=1)
    if pad_value is not None:
        pad_value = check_real(pad_value, "standard_transforms", "pad_value")
    f = image_size / 224.0
    px = lambda n: max(1, int(round(n * f)))  # noqa: E731
    first = (pad(px(12), mode="reflect") if pad_value is None
             else pad(px(12), value=pad_value))
    return compose(first, jitter(px(8)), random_scale(0.9, 1.1), random_rotate(10.0),
                   jitter(px(4)))


# ------------------------------------------------------------------ filters used elsewhere
def gaussian_kernel(sigma: float) -> Array:
    """A normalized 1-D Gaussian of radius ``ceil(3 sigma)``."""
    r = max(1, int(math.ceil(3.0 * sigma)))
    t = jnp.arange(-r, r + 1, dtype=jnp.float32)
    k = jnp.exp(-0.5 * (t / sigma) ** 2)
    return k / jnp.sum(k)


def gaussian_blur(image: Array, sigma: float) -> Array:
    """Separable Gaussian blur of one image ``(H, W, C)``, differentiable; ``sigma`` in
    pixels, ``>= 0`` (``0`` returns the image unchanged).

    Borders are reflected about the edge pixel (``x[2], x[1] | x[0], x[1], x[2]``: NumPy's
    ``reflect``, SciPy's ``mirror``) where the kernel's radius ``ceil(3 sigma)`` is less than
    the image's height and width, else the edge pixels are repeated (SciPy's ``nearest``):
    such a reflection needs more pixels than the radius.
    For a batch, ``jax.vmap(lambda im: gaussian_blur(im, sigma))(images)``. The kernel is
    float32; a floating image (bfloat16, float16, ...) comes back in its own dtype.
    """
    _check_image(image, "gaussian_blur")
    image = native(image)  # a big-endian image: JAX reads no other byte order
    sigma = check_real(sigma, "gaussian_blur", "sigma", low=0,
                       kind="a finite width in pixels; 0: no blur")
    if sigma == 0:
        return image
    k = gaussian_kernel(sigma)
    r = (k.shape[0] - 1) // 2
    h, w, _ = image.shape
    mode = "reflect" if min(h, w) > r else "edge"
    x = jnp.pad(image, ((r, r), (r, r), (0, 0)), mode=mode)
    # blur rows then columns with 1-D convolutions expressed as weighted sums of shifts
    x = sum(k[i] * x[i:i + h] for i in range(k.shape[0]))
    x = sum(k[i] * x[:, i:i + w] for i in range(k.shape[0]))
    return _same_dtype(x, image)


def resize(image: Array, size: Sequence[int]) -> Array:
    """Bilinear resize of one image ``(H, W, C)`` to ``size = (h, w)`` (antialiased)."""
    h, w = int(size[0]), int(size[1])
    if image.shape[:2] == (h, w):
        return image
    return jax.image.resize(image, (h, w, image.shape[-1]), method="linear")
