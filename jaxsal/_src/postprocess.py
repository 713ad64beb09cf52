"""Post-processing of attribution maps: pure, jit-compiled functions that run on device.

The methods return raw maps; these turn them into pictures. Maps are ``(..., H, W)`` (the
last two axes spatial) unless an ``axis`` says otherwise.

- :func:`reduce_channels`: ``(..., C) -> (...)``: ``"max_abs"`` (keras-vis / tf-keras-vis),
  ``"abs_sum"``, ``"sum"`` (signed), ``"max"``, ``"mean"``, ``"l2"``.
- :func:`normalize`: ``(a - min) / (max - min + eps)`` (tf-keras-vis, eps 1e-7) over ``axis``:
  per 2-D map ``(H, W)`` by default (signal maps need ``axis=-1``, volume maps
  ``axis=(-3, -2, -1)``), or shared across a set of maps (include the class axis) so that maps
  stay comparable.
- :func:`clip_percentile`: clip each map to its ``[lower, upper]`` percentiles.
- :func:`resize`: bilinear with ``align_corners=True`` (what tf-keras-vis's
  ``scipy.ndimage.zoom(order=1)`` computes) or any ``jax.image.resize`` method.
"""

from __future__ import annotations

import functools
import math
import operator
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import reals
from jaxsal._src.base import int_sizes, native, not_sizes
from jaxsal._src.validate import X64_FIX, narrowed_dtype

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

REDUCTIONS = ("max_abs", "abs_sum", "sum", "signed", "max", "mean", "l2", None)


class _DefaultAxes(tuple):
    """:func:`normalize`'s and :func:`clip_percentile`'s default ``axis``, ``(-2, -1)``, told
    apart from the same axes passed: only the default has its layout checked
    (:func:`_check_map_layout`)."""


class _DefaultChannel(int):
    """:func:`reduce_channels`'s default ``axis``, ``-1``, told apart from ``axis=-1`` passed:
    only the default has its layout checked (:func:`_check_channel_layout`)."""


_MAP_AXES = _DefaultAxes((-2, -1))
_NO_SCALE = object()  # _host_maps: no scale_axis (the function is not scale-invariant)
_CHANNEL_AXIS = _DefaultChannel(-1)


def _each_input(fn: Callable) -> Callable:
    """``fn`` (a post-processing function of one array of maps) also taking the maps of a
    call on several inputs (``jaxsal.Maps``: a dict, or a list or tuple of arrays, one per
    input): each input's maps processed on their own (``axis=None`` spans one input's maps),
    returned in the same container. An error names the input. (A list of per-example maps is
    therefore several inputs' maps: stack a batch first, ``np.stack(maps)``.)"""
    @functools.wraps(fn)
    def f(maps, *args, **kwargs):
        if not _several_maps(maps):
            return fn(maps, *args, **kwargs)
        keys = list(maps) if isinstance(maps, dict) else range(len(maps))
        out = []
        for k in keys:
            try:
                out.append(fn(maps[k], *args, **kwargs))
            except (ValueError, TypeError) as e:
                why = str(e).removeprefix(f"{fn.__name__}: ")
                raise type(e)(f"{fn.__name__}: maps of input {k!r} (of {len(keys)}, each "
                              f"processed on its own): {why}") from e
        if isinstance(maps, dict):
            return dict(zip(keys, out))
        return out if isinstance(maps, list) else tuple(out)

    return f


def _several_maps(maps) -> bool:
    """Whether ``maps`` are the maps of several inputs: a dict, or a non-empty list or tuple
    of arrays (not nested Python lists of numbers, one array)."""
    return isinstance(maps, dict) or (isinstance(maps, (list, tuple)) and bool(maps)
                                      and all(hasattr(a, "shape") for a in maps))


def check_reduce(reduce) -> None:
    if reduce not in REDUCTIONS:
        raise ValueError(f"unknown channel reduction {reduce!r}; expected one of {REDUCTIONS}")


def extreme(a: Array, axes: tuple[int, ...], arg: Callable) -> Array:
    """``a``'s max (``arg=jnp.argmax``) or min (``jnp.argmin``) over ``axes`` (NaN if one
    is NaN), kept as axes of size 1, read at its arg-extreme: one of ``a``'s own elements,
    so that its derivative (a map differentiated again: a loss on it, an attack) goes to that
    one element. ``jnp.max``'s derivative compares ``a`` with a maximum computed apart and
    divides by the number of equal elements; XLA may compute ``a``'s producer twice with
    different roundings (XLA:CPU at ``--xla_backend_optimization_level=0`` does), and then
    no element equals the maximum and the derivative was 0 / 0 = NaN (VarGrad's maps and
    FullGrad's scaling, ``tests/test_double_backprop.py``)."""
    rest = [d for d in range(a.ndim) if d not in axes]
    # the reduced size spelled out: reshape's -1 cannot be solved for an empty batch
    # (a ZeroDivisionError for maps (0, H, W, C))
    n = math.prod(a.shape[d] for d in axes)
    flat = jnp.transpose(a, rest + list(axes)).reshape([a.shape[d] for d in rest] + [n])
    i = arg(flat, axis=-1)[..., None]
    return jnp.expand_dims(jnp.take_along_axis(flat, i, axis=-1)[..., 0], axes)


def _channel_max(g: Array, axis: int) -> Array:
    """``jnp.max(g, axis)``, read at its ``argmax`` (:func:`extreme`)."""
    axis %= g.ndim
    return jnp.squeeze(extreme(g, (axis,), jnp.argmax), axis)


def _reduce(g: Array, mode: str | None, axis: int = -1) -> Array:
    if mode is None:
        return g
    if mode == "max_abs":
        return _channel_max(jnp.abs(g), axis)
    if mode == "abs_sum":
        return jnp.sum(jnp.abs(g), axis=axis)
    if mode in ("sum", "signed"):
        return jnp.sum(g, axis=axis)
    if mode == "max":
        return _channel_max(g, axis)
    if mode == "mean":
        return jnp.mean(g, axis=axis)
    if mode == "l2":
        # sqrt's derivative is infinite at 0: where every channel is 0 the norm's gradient is
        # taken as 0 (its subgradient), not NaN (a map differentiated, e.g. an attack on it).
        # Only exact zeros are replaced: a NaN sum stays NaN (`s > 0` is False for NaN, and
        # the non-finite maps of check_finite and of traced ids out of range came out as 0)
        s = jnp.sum(g * g, axis=axis)
        zero = s == 0
        return jnp.where(zero, jnp.zeros((), s.dtype), jnp.sqrt(jnp.where(zero, 1, s)))
    raise ValueError(f"unknown channel reduction {mode!r}; expected one of {REDUCTIONS}")


def _reduce_inputs(g, mode: str | None, axes):
    """:func:`_reduce` on each array of ``g`` (one per model input, in leaf order) over its
    own channel axis in ``axes``. An input without one (``None``: ``(N, D)`` features) keeps
    every feature, each taken as one channel: ``"max_abs"``, ``"abs_sum"`` and ``"l2"`` give
    the absolute value, the signed reductions the value itself."""
    leaves, tree = jax.tree_util.tree_flatten(g)
    return tree.unflatten([_reduce(a[..., None], mode, -1) if ax is None and mode is not None
                           else _reduce(a, mode, ax) for a, ax in zip(leaves, axes)])


def _check_channel_layout(shape: tuple) -> None:
    """Refuse maps that look channels-first given to :func:`reduce_channels` with its default
    ``axis=-1``: a channel axis of 1, 3 or 4 before two spatial axes of more than 4, at axis
    ``-3`` of maps of rank 4 or 5 (``(N, C, H, W)``, ``(N, T, C, H, W)``) or at axis ``-4``
    of maps of rank 6 (``(N, T, C, D, H, W)``). Reduced over ``W``, such maps came back
    ``(N, C, H)``, which :func:`jaxsal.plot.grid` draws as ``N`` maps ``C x H``.
    Channels-last activations ``(N, 4, 4, 512)`` pass (their width is at most 4).

    A shape does not tell its layout: ``(N, T, C, L)`` (signals, targets) reads as
    ``(N, C, H, W)``, ``(N, C, D, H, W)`` (a volume, one target) as ``(N, T, C, H, W)``. The
    error names the channel axis of every channels-first layout of the maps' rank, each with
    its result, rather than one that may be wrong; maps it does not catch (a volume's
    ``(N, C, D, H, W)`` of ``D`` above 4, signals ``(N, T, C, L)`` of ``C`` above 4, ``C``
    of 2) are reduced over their last axis as asked."""
    ndim = len(shape)
    c = ndim - 4 if ndim == 6 else ndim - 3
    if ndim not in (4, 5, 6) or shape[c] not in (1, 3, 4) or min(shape[-2:]) <= 4:
        return
    readings = {4: (("(N, C, H, W) of images, one target", 1),
                    ("(N, T, C, L) of signals with targets", 2)),
                5: (("(N, T, C, H, W) of images with targets", 2),
                    ("(N, C, D, H, W) of volumes, one target", 1)),
                6: (("(N, T, C, D, H, W) of volumes with targets", 2),)}[ndim]
    fixes = "; ".join(f"maps {layout}: axis={a} (the result "
                      f"{tuple(shape[:a]) + tuple(shape[a + 1:])})" for layout, a in readings)
    raise ValueError(
        f"reduce_channels: maps of shape {tuple(shape)} look channels-first (a channel axis "
        f"of {shape[c]} at axis {c}), while the default axis=-1 reduces the last axis, their "
        f"width (the result {tuple(shape[:-1])}). Expected the channel axis last; the shape "
        f"does not tell the layout, so pass the channel axis of yours: for channels-first "
        f"{fixes}; or reduce in the method call (its reduce=, which knows the model's "
        "layout); for maps whose last axis is meant as the channels, pass axis=-1")


@_each_input
def reduce_channels(maps: ArrayLike, mode: str | None = "max_abs",
                    axis: int = _CHANNEL_AXIS) -> Array:
    """Collapse the channel axis of ``maps``.

    Args:
      maps: e.g. input gradients ``(N, H, W, C)`` or ``(N, T, H, W, C)``.
      mode: ``"max_abs"`` (max of absolute values: keras-vis / tf-keras-vis saliency),
        ``"abs_sum"``, ``"sum"``/``"signed"``, ``"max"`` (signed max), ``"mean"``, ``"l2"``,
        or ``None`` (unchanged).
      axis: the channel axis. The default, the last, refuses some maps that look
        channels-first (``(N, C, H, W)``, ``(N, T, C, H, W)`` or ``(N, T, C, D, H, W)`` of
        ``C`` in 1, 3, 4 and ``H``, ``W`` above 4); ``axis=-1`` passed skips that check.
        A shape does not tell channels-first maps from channels-last ones (``(N, T, C, L)``
        signals and ``(N, H, W, C)`` images are both rank 4), so others are reduced over
        their last axis unchecked: for channels-first maps pass their channel axis,
        ``axis=1`` without targets (``(N, C, L)``, ``(N, C, H, W)``, ``(N, C, D, H, W)``)
        and ``axis=2`` with them (``(N, T, C, ...)``), or reduce in the method call
        (``reduce=``, the default), which knows the model's layout.
    Returns:
      ``maps`` without ``axis``.
    """
    check_reduce(mode)
    if isinstance(axis, _DefaultChannel) and mode is not None:
        _check_channel_layout(np.shape(maps))
    axis = _static_axis(axis)
    if not isinstance(axis, int):
        raise TypeError(f"reduce_channels: expected axis as one int (the channel axis), got "
                        f"{axis!r}")
    _check_axes(axis, np.ndim(maps), "reduce_channels", "the channel axis")
    if mode is not None:  # no channels to reduce is refused; an empty batch gives one
        _no_maps(np.shape(maps), axis, "reduce_channels")
    return _reduce_channels(_host_maps(maps, "reduce_channels"), mode, axis)


@functools.partial(jax.jit, static_argnames=("mode", "axis"))
def _reduce_channels(maps: ArrayLike, mode: str | None, axis: int) -> Array:
    return _reduce(_floating(maps), mode, axis)  # integer maps: |-128| and sums wrapped


def _norm(maps: Array, axis, eps: float) -> Array:
    return min_max(maps, jnp.min(maps, axis=axis, keepdims=True),
                   jnp.max(maps, axis=axis, keepdims=True), eps)


def min_max(a: Array, lo: Array, hi: Array, eps: float) -> Array:
    """``(a - lo) / (hi - lo + eps)``: ``a`` scaled by its minimum ``lo`` and maximum ``hi``
    (kept axes of size 1; :func:`normalize`, FullGrad's terms), also for huge values."""
    # maps of huge values are scaled down by 2**-100 first (exact: a power of two), so that
    # neither hi - lo overflows (a float32 map spanning +-3e38: inf / inf = NaN) nor its
    # reciprocal falls below float32's smallest normal number, which XLA:CPU divides by and
    # flushes to 0 (a map [0, 1e38] normalized to zeros). Other maps keep scale 1: the plain
    # formula bit for bit (one expression, so that a derivative meets no unused branch)
    big = jnp.maximum(jnp.abs(lo), jnp.abs(hi)) > 2.0 ** 100
    s = jnp.where(big, 2.0 ** -100, 1.0).astype(a.dtype)
    return (a * s - lo * s) / (hi * s - lo * s + eps * s)


def _static_axis(axis):
    """``axis`` as a hashable static argument: a list becomes a tuple (``jax.jit`` cannot
    hash a list)."""
    try:
        if isinstance(axis, (list, tuple)):
            return tuple(operator.index(a) for a in axis)
        return None if axis is None else operator.index(axis)
    except TypeError:
        raise TypeError(f"expected axis as an int, a tuple or list of ints, or None; got "
                        f"{axis!r}") from None


def _check_axes(axis, ndim: int, fn: str, what: str = "the axes of one map") -> None:
    """Refuse an ``axis`` (``None``, an int or a tuple) that ``maps`` of rank ``ndim`` do not
    have, or that names an axis twice."""
    axes = () if axis is None else axis if isinstance(axis, tuple) else (axis,)
    if any(not -ndim <= a < ndim for a in axes) or len({a % ndim for a in axes}) < len(axes):
        raise ValueError(f"{fn}: axis={axis} does not name distinct axes of maps of rank "
                         f"{ndim}; expected axis to select {what} among the maps' {ndim} axes "
                         "(e.g. axis=-1 for 1-D maps, (-2, -1) for 2-D maps)")


def _check_map_layout(shape: tuple, fn: str) -> None:
    """Refuse channels-last maps ``(N, H, W, C)`` (``(N, T, H, W, C)``) given to ``fn``
    (:func:`normalize`, :func:`clip_percentile`) with its default ``axis=(-2, -1)``: a last
    axis of at most 4 (a channel count) after two axes both above 4 and at least 4 times it.
    Each image row's ``(W, C)`` was scaled on its own (every row's maximum 1). Maps
    ``(N, H, W)`` and signals ``(N, L, C)`` (rank 3, scaled per map over ``(L, C)`` by the
    default) pass, as do grids of maps ``(N, T, h, w)`` of fewer than 5 targets or rows or
    of ``w`` above a quarter of ``h``."""
    if len(shape) < 4:
        return
    c = shape[-1]
    if c > 4 or min(shape[-3:-1]) < max(5, 4 * c):
        return
    lead = tuple(shape[:-3])
    per = tuple(range(len(lead), len(shape)))
    raise ValueError(
        f"{fn}: maps of shape {tuple(shape)} look channels-last (..., H={shape[-3]}, "
        f"W={shape[-2]}, C={c}) (a last axis of {c}), while the default axis=(-2, -1) takes "
        f"the last two axes as one map: each row (W, C) would be scaled on its own. Expected "
        f"maps (..., H, W); pass axis={per} to scale each image over its pixels and channels, "
        f"or reduce the channels first (jaxsal.reduce_channels(maps)); for maps "
        f"{tuple(shape[-2:])} that are meant, pass axis=(-2, -1)")


def _no_maps(shape: tuple, axis, fn: str, name: str = "axis") -> bool:
    """Whether ``maps`` of ``shape`` hold no map at all (an empty batch, ``(0, H, W)``):
    the caller returns them as they are (empty). A map of no values (``(N, 0, W)``, an axis
    of ``axis``, the axes it is reduced or resized over, empty) has no minimum, maximum,
    percentile or pixel to interpolate and is refused. ``axis=None`` takes all of ``maps``
    as one map."""
    ndim = len(shape)
    axes = range(ndim) if axis is None else [
        a % ndim for a in (axis if isinstance(axis, tuple) else (axis,))]
    if math.prod(shape[d] for d in range(ndim) if d not in axes) == 0:
        return True
    if math.prod(shape[d] for d in axes) == 0:
        raise ValueError(f"{fn}: expected at least one value over {name}={axis}, got maps of "
                         f"shape {tuple(shape)}, empty there; drop the empty maps, or check "
                         "the step that made them (an empty batch, (0, ...), is returned "
                         "empty)")
    return False


def _host_maps(maps: ArrayLike, fn: str, scale_axis: object = _NO_SCALE) -> ArrayLike:
    """``maps`` as given to ``fn``'s jitted function: in the machine's byte order
    (:func:`native`), and integer or boolean maps that are not JAX arrays (NumPy, lists) as
    float32 on the host, as :func:`_floating` would make them. JAX takes an int64 array as
    int32 (without ``jax_enable_x64``), wrapping values beyond 2**31 silently: a count map
    ``[0, 2**40]`` normalized to ``[0, 0]``. Complex maps are refused.

    Float64 maps (NumPy, lists) that JAX would cast to float32 (without ``jax_enable_x64``:
    :func:`~jaxsal._src.validate.narrowed_dtype`) and whose finite values exceed float32's
    range became inf (then NaN): with ``scale_axis`` (the axes of one map, ``None``: all;
    for a function that is scale-invariant per map, :func:`normalize`) each such map is
    scaled by a power of two (exact) to a maximum of about 2**100 first; otherwise they are
    refused, saying how to fix them."""
    maps = native(maps)
    if np.iscomplexobj(maps):  # (cast to real with a DeprecationWarning: the imaginary
        # part dropped, silently where such warnings are hidden)
        raise TypeError("expected real maps, got complex ones; "
                        "take the part to show first: jnp.abs(maps) or maps.real")
    if isinstance(maps, jax.Array):
        return maps
    a = np.asarray(maps)
    if np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_:
        return a.astype(np.float32)
    if (not np.issubdtype(a.dtype, np.floating) or not a.size
            or narrowed_dtype(a.dtype) is None):  # (float64, without x64)
        return maps
    big = float(np.finfo(np.float32).max)
    finite = np.where(np.isfinite(a), np.abs(a), 0)
    if not finite.max() > big:
        return maps
    if scale_axis is _NO_SCALE:
        raise ValueError(
            f"{fn}: expected maps within float32's range (|values| <= {big:.4g}), as JAX "
            f"computes {a.dtype} maps in float32 without jax_enable_x64; got values up to "
            f"{finite.max():.4g}, which would become inf. Scale the maps down first (e.g. "
            f"maps / np.abs(maps[np.isfinite(maps)]).max()), or {X64_FIX}")
    peak = np.max(finite, axis=scale_axis, keepdims=True)
    _, e = np.frexp(peak)  # peak < 2**e
    scale = np.where(peak > big, np.ldexp(1.0, np.minimum(100 - e, 0)), 1.0)
    return (a * scale).astype(a.dtype)


def _floating(maps: ArrayLike) -> Array:
    """``maps`` as a floating array of at least 32 bits: integer and boolean maps (counts,
    masks) and float16/bfloat16 ones (whose range ``max - min`` can overflow) as float32."""
    maps = jnp.asarray(maps)
    if jnp.issubdtype(maps.dtype, jnp.floating) and maps.dtype.itemsize >= 4:
        return maps
    return maps.astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("axis", "eps"))
def _normalize(maps: Array, axis, eps: float) -> Array:
    return _norm(_floating(maps), axis, eps)


@_each_input
def normalize(maps: ArrayLike, axis: int | Sequence[int] | None = _MAP_AXES,
              eps: float = 1e-7) -> Array:
    """Min-max normalize to ``[0, 1]``: ``(a - min) / (max - min + eps)`` over ``axis``.

    This is tf-keras-vis's ``normalize`` (``eps = 1e-7``, an all-zero map stays 0) when
    ``axis`` covers one map: the default ``(-2, -1)`` normalizes every ``(H, W)`` map on its
    own. To keep the classes of one input comparable, normalize them together: for maps
    ``(N, T, H, W)`` use ``axis=(1, 2, 3)`` (a list works too); ``axis=None`` shares one
    range across everything. For channel maps ``(N, H, W, C)`` as tf-keras-vis does:
    ``axis=(1, 2, 3)``. Maps of 1-D signals ``(N, L)`` or ``(N, T, L)`` need ``axis=-1``
    (the default would span the batch of ``(N, L)``), of volumes ``(N, D, H, W)``
    ``axis=(-3, -2, -1)``. Jit-compiled (once per shape, axis and eps). Maps of values
    beyond 2**100 are scaled by 2**-100 first (exact), so that ``max - min`` cannot
    overflow (a float32 map spanning +-3e38); float64 NumPy maps beyond float32's range are
    scaled per map by a power of two on the host first (exact), as they are cast to
    float32 (without ``jax_enable_x64``). An empty batch (``(0, H, W)``) is returned
    empty; maps of no values (``(N, 0, W)``) are refused. The default ``axis`` refuses
    maps that look channels-last (``(N, H, W, C)`` of ``C <= 4`` and ``H``, ``W`` of at
    least ``max(5, 4 C)``: pass ``axis=(1, 2, 3)`` or reduce the channels first);
    ``axis=(-2, -1)`` passed skips that check.
    """
    if isinstance(axis, _DefaultAxes):
        _check_map_layout(np.shape(maps), "normalize")
    axis = _static_axis(axis)
    _check_axes(axis, np.ndim(maps), "normalize")
    # a static argument, as a float: a NumPy or JAX scalar is not hashable
    eps = reals.check_real(eps, "eps", low=0, where="normalize")
    if _no_maps(np.shape(maps), axis, "normalize"):
        return _floating(_host_maps(maps, "normalize"))  # an empty batch: nothing to scale
    return _normalize(_host_maps(maps, "normalize", scale_axis=axis), axis, eps)


@functools.partial(jax.jit, static_argnames=("lower", "upper", "axis"))
def _clip_percentile(maps: Array, lower: float, upper: float, axis) -> Array:
    maps = _floating(maps)
    lo = jnp.percentile(maps, lower, axis=axis, keepdims=True)
    hi = jnp.percentile(maps, upper, axis=axis, keepdims=True)
    return jnp.clip(maps, lo, hi)


@_each_input
def clip_percentile(maps: ArrayLike, lower: float = 0.0, upper: float = 99.0,
                    axis: int | Sequence[int] | None = _MAP_AXES) -> Array:
    """Clip every map of ``maps`` (over ``axis``, a tuple or list of axes) to its
    ``[lower, upper]`` percentiles (0-100).

    A common step before display: a few extreme pixels would otherwise squash the colour
    range (PAIR saliency clips at the 99th percentile). The default ``axis``, ``(-2, -1)``,
    takes one 2-D map: for maps of 1-D signals ``(N, L)`` or ``(N, T, L)`` pass ``axis=-1``
    (the default would take one percentile over the batch of ``(N, L)``), for volumes
    ``(N, D, H, W)`` ``axis=(-3, -2, -1)`` (the default clips each depth slice on its own).
    It refuses maps that look channels-last, as :func:`normalize`'s does (pass
    ``axis=(1, 2, 3)``, or ``axis=(-2, -1)`` to skip that check).
    """
    lower, upper = (reals.check_real(v, name, low=0, high=100, where="clip_percentile",
                                     kind="a finite number: a percentile")
                    for v, name in ((lower, "lower"), (upper, "upper")))
    if not lower <= upper:
        raise ValueError(f"clip_percentile: expected lower <= upper, got lower={lower!r}, "
                         f"upper={upper!r}; swap them")
    if isinstance(axis, _DefaultAxes):
        _check_map_layout(np.shape(maps), "clip_percentile")
    axis = _static_axis(axis)
    _check_axes(axis, np.ndim(maps), "clip_percentile")
    if _no_maps(np.shape(maps), axis, "clip_percentile"):
        return _floating(_host_maps(maps, "clip_percentile"))
    return _clip_percentile(_host_maps(maps, "clip_percentile"), float(lower), float(upper),
                            axis)


def interp_matrix(n_in: int, n_out: int, align_corners: bool = True,
                  mirror: bool = False) -> np.ndarray:
    """``(n_out, n_in)`` linear interpolation. ``align_corners=True``: output index ``i``
    samples input coordinate ``i * (n_in - 1) / (n_out - 1)`` (``scipy.ndimage.zoom``,
    ``order=1``). ``False``: half-pixel centres, ``(i + 0.5) * n_in / n_out - 0.5``, the
    input clamped beyond its edges (OpenCV's ``INTER_LINEAR``, without antialiasing when
    shrinking) or, with ``mirror=True``, mirrored about its edge samples (``d c b | a b c d``:
    scikit-image's ``mode="reflect"``)."""
    if not align_corners:
        coords = (np.arange(n_out, dtype=np.float64) + 0.5) * n_in / n_out - 0.5
    elif n_out == 1 or n_in == 1:
        coords = np.zeros(n_out)
    else:
        coords = np.arange(n_out, dtype=np.float64) * (n_in - 1) / (n_out - 1)
    lo = np.floor(coords).astype(np.int64)
    frac = coords - lo

    def inside(i):  # an input index for every sample position
        if n_in == 1:
            return np.zeros_like(i)
        if mirror:
            period = 2 * (n_in - 1)
            i = np.mod(i, period)
            return np.where(i >= n_in, period - i, i)
        return np.clip(i, 0, n_in - 1)

    m = np.zeros((n_out, n_in), np.float64)
    np.add.at(m, (np.arange(n_out), inside(lo)), 1.0 - frac)
    np.add.at(m, (np.arange(n_out), inside(lo + 1)), frac)
    return m.astype(np.float32)


def upsample_linear(maps: Array, size: Sequence[int], axes: Sequence[int],
                    align_corners: bool = True, mirror: bool = False) -> Array:
    """Linear resize of ``axes`` to ``size`` (one small matrix product per axis, on
    device): bilinear on two axes, trilinear on three. ``align_corners=True`` as
    tf-keras-vis's ``scipy.ndimage.zoom(order=1)``; ``False`` as OpenCV's ``INTER_LINEAR``,
    or with ``mirror`` as scikit-image's ``resize(order=1, mode="reflect")``
    (:func:`interp_matrix`)."""
    hp = jax.lax.Precision.HIGHEST
    out = maps
    for ax, n_out in zip(axes, size):
        ax = ax % maps.ndim
        n_in = out.shape[ax]
        if n_in == n_out:
            continue
        m = jnp.asarray(interp_matrix(n_in, int(n_out), align_corners, mirror),
                        maps.dtype)
        out = jnp.moveaxis(jnp.tensordot(out, m, axes=[[ax], [1]], precision=hp), -1, ax)
    return out


RESIZE_METHODS = ("align_corners", "linear", "bilinear", "nearest", "cubic", "lanczos3",
                  "lanczos5")


def _size_of(size) -> tuple[int, int]:
    """``resize``'s ``size``: two positive integers by the one rule of counts
    (:func:`jaxsal._src.base.int_sizes`: Python, NumPy or JAX integers, 0-d arrays too), or
    an integer array of two (``np.array(x.shape[1:3])``, a ``jnp`` array); anything else
    (floats, bools, a traced size) is a ``ValueError`` that says why."""
    dims = int_sizes(size)
    if dims is not None and len(dims) == 2 and min(dims) >= 1:
        return dims
    raise ValueError(f"resize: expected size=(H, W) as two positive ints (Python, NumPy or "
                     f"JAX integers), got {size!r}{not_sizes(size, '(int(H), int(W))')}"
                     + ("; for the size of images x (N, H, W, C) pass x.shape[1:3]"
                        if dims is not None and len(dims) == 3 else ""))


def _check_layout(shape: tuple, size: tuple[int, int]) -> None:
    """Refuse channels-last arrays ``(..., H, W, C)`` given to :func:`resize` with its default
    axes: a last axis of at most 4 (a channel count), a second-to-last of more than 4, and a
    ``size`` that would widen the ``(h, w)`` maps' width-to-height ratio 2-fold or more.
    Resized as maps, images ``(N, 224, 224, 3)`` -> ``(224, 224)`` came back
    ``(N, 224, 224, 224)``: their width and channels interpolated. Maps ``(N, h, w)`` of at
    most 4 columns pass when they keep about their shape (a 2x2 or 4x4 CAM to 32x32, a 7x3
    one to 224x96)."""
    if len(shape) < 3:
        return
    h, w = shape[-2:]
    H, W = size
    if w > 4 or h <= 4 or W * h < 2 * H * w:
        return
    raise ValueError(
        f"resize: maps of shape {tuple(shape)} look like channels-last images or maps "
        f"(..., H={shape[-3]}, W={h}, C={w}) (a last axis of {w}), while resize takes maps "
        f"(..., h, w) with the spatial axes last: to size {(H, W)} their (h, w) = {(h, w)} "
        f"maps would be stretched {W * h / (H * w):.3g}-fold in width, their width and "
        f"channels interpolated (the result of shape {tuple(shape[:-2]) + (H, W)}). "
        f"Expected the spatial axes last; for channels-last arrays pass axes=(-3, -2) (the "
        f"result {tuple(shape[:-3]) + (H, W, w)}), or reduce the channels first "
        f"(jaxsal.reduce_channels); for maps {(h, w)} that are meant, pass axes=(-2, -1)")


@_each_input
def resize(maps: ArrayLike, size: tuple[int, int], method: str = "align_corners",
           antialias: bool | None = None, *, axes: Sequence[int] | None = None) -> Array:
    """Resize maps ``(..., h, w) -> (..., H, W)``, or any two axes named by ``axes``.

    Args:
      maps: maps with the spatial axes last (unless ``axes`` names them). Integer or boolean
        maps (counts, masks) are resized in float32 and returned as float32: interpolated
        values are fractions. An empty batch (``(0, h, w)``) gives an empty one
        ``(0, H, W)``; maps of no pixels (``h = 0``) are refused.
      size: ``(H, W)``: two positive integers (Python, NumPy or JAX ints, or an integer
        array of two such as ``np.array(x.shape[1:3])``); floats are refused.
      method: ``"align_corners"`` (bilinear, corner pixels aligned: tf-keras-vis's CAM
        upsampling) or a ``jax.image.resize`` method (``"linear"``/``"bilinear"``,
        ``"nearest"``, ``"cubic"``, ...: half-pixel centred, like ``tf.image.resize``).
      antialias: for the ``jax.image.resize`` methods, whether shrinking a map low-pass
        filters it first (``None``: ``jax.image.resize``'s default, ``True``, as
        ``tf.image.resize(antialias=True)``; ``False``: plain interpolation, as
        ``tf.image.resize``'s default and OpenCV's ``INTER_LINEAR``). Growing is the same
        either way. ``"align_corners"`` never filters (``antialias=True`` is refused there).
      axes: the two spatial axes ``(height, width)``, e.g. ``(-3, -2)`` (or ``(1, 2)``) for
        channels-last images or maps ``(N, H, W, C)``; the other axes are kept. ``None``
        (default): the last two, ``(-2, -1)``, refusing arrays that look channels-last (a
        last axis of at most 4 that ``size`` would widen 2-fold or more relative to the
        height: ``(N, 224, 224, 3)`` to ``(224, 224)``); ``axes=(-2, -1)`` resizes the last
        two axes without that check.
    Returns:
      Floating-point maps (the input's dtype when it is floating), ``axes`` resized to
      ``size``.

    Example::

      cam = jaxsal.resize(cam, x.shape[1:3])                 # (N, 7, 7) -> (N, 224, 224)
      small = jaxsal.resize(x, (56, 56), axes=(1, 2))        # (N, 224, 224, 3) -> (N, 56, 56, 3)
    """
    dims = _size_of(size)
    ndim = np.ndim(maps)
    if ndim < 2:
        raise ValueError(f"resize: expected maps (..., h, w) with the spatial axes last, got "
                         f"maps of shape {np.shape(maps)}; for 1-D maps (..., L) resize "
                         "them as one-row maps: resize(maps[..., None, :], (1, L))[..., 0, :]")
    if axes is None:
        _check_layout(np.shape(maps), dims)
        axes = (-2, -1)
    given = axes
    axes = _static_axis(axes)
    if not isinstance(axes, tuple) or len(axes) != 2:
        raise ValueError(f"resize: expected axes=(height axis, width axis), two ints, got "
                         f"{given!r}; e.g. axes=(-3, -2) for channels-last maps (N, H, W, C)")
    _check_axes(axes, ndim, "resize", "the two spatial axes")
    axes = tuple(a % ndim for a in axes)
    if antialias is not None and not isinstance(antialias, (bool, np.bool_)):
        raise TypeError(f"resize: expected antialias as True, False or None, got {antialias!r}")
    if antialias and method == "align_corners":
        raise ValueError("resize: method='align_corners' interpolates without antialiasing "
                         "(tf-keras-vis's scipy.ndimage.zoom); got antialias=True. For "
                         "antialiased shrinking pass method='bilinear' (antialias=True is "
                         "its default)")
    if method not in RESIZE_METHODS:
        raise ValueError(f"unknown resize method {method!r}; expected one of {RESIZE_METHODS}")
    antialias = True if antialias is None else bool(antialias)
    if _no_maps(np.shape(maps), axes, "resize", "axes"):  # an empty batch: an empty result
        m = jnp.asarray(_host_maps(maps, "resize"))
        out = list(m.shape)
        out[axes[0]], out[axes[1]] = dims
        return jnp.zeros(out, m.dtype if jnp.issubdtype(m.dtype, jnp.floating) else jnp.float32)
    return _resize(_host_maps(maps, "resize"), dims, method, antialias, axes)


@functools.partial(jax.jit, static_argnames=("size", "method", "antialias", "axes"))
def _resize(maps: ArrayLike, size: tuple[int, ...], method: str, antialias: bool = True,
            axes: tuple[int, int] = (-2, -1)) -> Array:
    maps = jnp.asarray(maps)
    if not jnp.issubdtype(maps.dtype, jnp.floating):
        maps = maps.astype(jnp.float32)
    if len(size) != 2:
        raise ValueError(f"expected size=(H, W), got {size}")
    if maps.ndim < 2:
        raise ValueError(f"expected maps (..., h, w), got shape {maps.shape}")
    if method == "align_corners":
        return upsample_linear(maps, size, axes)
    shape = list(maps.shape)  # (method: one of RESIZE_METHODS, checked by resize)
    shape[axes[0]], shape[axes[1]] = size
    return jax.image.resize(maps, tuple(shape), method=method, antialias=antialias)
