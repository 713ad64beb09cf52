"""Felzenszwalb & Huttenlocher's graph segmentation (2004, "Efficient Graph-Based Image
Segmentation"), the algorithm of ``skimage.segmentation.felzenszwalb``, which XRAI's authors
segment images with (:func:`xrai_segments`).

Each image is smoothed per channel by a Gaussian (scipy's ``gaussian_filter``: the kernel
truncated at 4 sigma, borders mirrored half-sample), its pixels joined to their 8 neighbours
by edges weighted by the Euclidean distance of their colours, and the edges visited by
increasing weight (NumPy's ``argsort``, as scikit-image sorts them): an edge joins its two
components when its weight is below both components' ``internal difference + scale / size``
(the largest edge inside, and ``scale / 255`` per pixel as scikit-image scales it). A second
pass over the same edges joins every component smaller than ``min_size`` to its neighbour
across its lightest edge. Labels are numbered in the order of each component's first pixel.

The visiting order is sequential: a union-find over the edges, one after the other. It runs
on the host, in float64 as scikit-image computes it (the smoothing, weights and thresholds
written as its C code evaluates them, so that equal inputs give equal partitions), as a
Python loop over the edges that prunes what cannot change the result: the second pass visits
only edges between two components of which one is small (see the README, "XRAI", for its
speed).

:func:`xrai_labels` segments images as PAIR saliency's XRAI does: scaled to [-1, 1],
resized to 224x224 where they are not (:func:`_resize_like_skimage`: scikit-image's cubic
spline resize, written in NumPy as scipy computes it), six scales, the labels resized back by
nearest neighbour (:func:`_nearest`, scipy's ``zoom`` indices).
"""

from __future__ import annotations

import math
import struct
from typing import Sequence

import jax
import numpy as np

from jaxsal._src import ints, reals
from jaxsal._src.base import int_sizes, not_sizes


Array = jax.Array
ArrayLike = jax.typing.ArrayLike

#: PAIR saliency's XRAI segmentation: its scales, sigma, minimum segment size, the size it
#: segments at and the value range it scales images to.
XRAI_SCALES = (50, 100, 150, 250, 500, 1200)
XRAI_SIGMA = 0.8
XRAI_MIN_SIZE = 150
XRAI_SIZE = (224, 224)
XRAI_VALUE_RANGE = (-1.0, 1.0)


# ---------------------------------------------------------------------- smoothing
def _gaussian_weights(sigma: float) -> np.ndarray:
    """scipy's 1-D Gaussian kernel: radius ``int(4 * sigma + 0.5)``, normalized to sum 1;
    ``w[j]`` the weight at offset ``j`` (symmetric)."""
    radius = int(4.0 * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (float(sigma) * float(sigma)) * x ** 2)
    return (phi / phi.sum())[radius:]


def _smooth_axis(img: np.ndarray, w: np.ndarray, axis: int, border: str = "mirror"
                 ) -> np.ndarray:
    """Correlate ``img`` with the symmetric kernel ``w`` (offsets ``0..r``) along ``axis``,
    in float64, summed in the order of scipy's C loop (the centre first, then the pairs from
    the outermost in) so that float64 results are scipy's, bit for bit. ``border``:
    ``"mirror"``, mirrored half-sample (``d c b a | a b c d``, scipy's ``"reflect"``), or
    ``"zero"``, zeros outside (scipy's ``"constant"`` and ``"grid-constant"``, cval 0)."""
    r = len(w) - 1
    n = img.shape[axis]
    if border == "zero":
        pad = [(0, 0)] * img.ndim
        pad[axis] = (r, r)
        padded = np.pad(img, pad)
    else:
        idx = np.arange(-r, n + r)
        period = 2 * n  # the half-sample mirror, repeated
        idx = np.mod(idx, period)
        idx = np.where(idx >= n, period - 1 - idx, idx)
        padded = np.take(img, idx, axis=axis)

    def shifted(j):  # the input at offset j of every output position
        return np.take(padded, np.arange(r + j, r + j + n), axis=axis)

    out = shifted(0) * w[0]
    for j in range(r, 0, -1):
        out = out + (shifted(-j) + shifted(j)) * w[j]
    return out


def _smooth(img: np.ndarray, sigma: float) -> np.ndarray:
    """``(H, W, C)`` float64 smoothed along rows then columns (scipy's ``gaussian_filter``
    with sigma ``(sigma, sigma, 0)``); ``sigma == 0``: unchanged."""
    if sigma <= 1e-15:  # scipy skips such axes
        return img
    w = _gaussian_weights(sigma)
    return _smooth_axis(_smooth_axis(img, w, 0), w, 1)


# ---------------------------------------------------------------------- the graph
def _graph(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 8-neighbour edges of an ``(H, W, C)`` float64 image in scikit-image's order
    (right, down, down-right, up-right neighbours): ``(a, b, weight)``, ``a``/``b`` flat
    pixel indices, the weight the Euclidean distance of their colours."""
    h, w = img.shape[:2]
    ids = np.arange(h * w).reshape(h, w)

    def dist(p, q):
        d = p - q
        return np.sqrt(np.sum(d * d, axis=-1))

    pairs = [(ids[:, 1:], ids[:, :-1], dist(img[:, 1:], img[:, :-1])),
             (ids[1:, :], ids[:-1, :], dist(img[1:, :], img[:-1, :])),
             (ids[1:, 1:], ids[:-1, :-1], dist(img[1:, 1:], img[:-1, :-1])),
             (ids[:-1, 1:], ids[1:, :-1], dist(img[1:, :-1], img[:-1, 1:]))]
    a = np.concatenate([p.ravel() for p, _, _ in pairs])
    b = np.concatenate([q.ravel() for _, q, _ in pairs])
    cost = np.concatenate([c.ravel() for _, _, c in pairs]).astype(np.float64)
    return a, b, cost


def _edges(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_graph`'s edges sorted by weight with NumPy's default ``argsort``, as
    scikit-image sorts them (not stable: edges of equal weight come in the order NumPy's
    sort leaves them, which decides which neighbour a small segment joins)."""
    a, b, cost = _graph(img)
    order = np.argsort(cost)
    return a[order], b[order], cost[order]


def _f32(x: float) -> float:
    """``x`` rounded to float32 (scikit-image holds the thresholds in float32): inf beyond
    its range, as C's cast (some Pythons' ``struct`` refuse it: OverflowError)."""
    try:
        return struct.unpack("f", struct.pack("f", x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


def _segment(a: list, b: list, cost: list, n: int, k: float, min_size: int,
             pairs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """One segmentation of ``n`` pixels over the sorted edges (lists ``a``, ``b``, ``cost``;
    ``pairs`` the same ``a`` and ``b`` as arrays): ``(n,)`` labels, the components numbered
    by their first pixel. ``k``: the scale divided by 255."""
    parent = list(range(n))
    size = [1] * n
    limit = [k] * n  # each root's internal difference + k / size (unrounded)
    # c < float32(t), as scikit-image compares: rounding to float32 moves a t in its normal
    # range by at most 2**-24 of it, so only weights within 2.5e-7 of it need the rounding.
    # Every t lies in [k / n, max(cost) + k]; where that leaves the normal range (a t below
    # 2**-126 rounds to a subnormal or 0, one above float32's largest to inf) every weight
    # is compared with t rounded (below = 0, above = inf: the shortcut never taken)
    below, above = 1.0 - 2.5e-7, 1.0 + 2.5e-7
    f32 = np.finfo(np.float32)
    if not (k / n >= 2 * float(f32.smallest_normal)
            and max(cost, default=0.0) + k <= float(f32.max) / 2):
        below, above = 0.0, math.inf
    for p, q, c in zip(a, b, cost):  # the hot loop: written out, no calls
        while parent[p] != p:  # path halving
            parent[p] = p = parent[parent[p]]
        while parent[q] != q:
            parent[q] = q = parent[parent[q]]
        if p == q:
            continue
        # (float32 rounding is monotone: the smaller threshold rounded is the smaller one)
        t = limit[p] if limit[p] < limit[q] else limit[q]
        if c < t * below or (c < t * above and c < _f32(t)):
            if p > q:  # scikit-image's root: the smaller index
                p, q = q, p
            parent[q] = p
            size[p] += size[q]
            limit[p] = c + k / size[p]
    labels = _flatten(np.asarray(parent))
    if min_size > 1:
        labels = _merge_small(labels, *pairs, min_size)
    return labels


def _flatten(parent: np.ndarray) -> np.ndarray:
    """Every pixel's root, numbered from 0 in the order of the roots (each component's
    smallest pixel index)."""
    while True:
        up = parent[parent]
        if np.array_equal(up, parent):
            break
        parent = up
    return np.unique(parent, return_inverse=True)[1].reshape(-1)


def _merge_small(labels: np.ndarray, a: np.ndarray, b: np.ndarray, min_size: int
                 ) -> np.ndarray:
    """scikit-image's second pass: the sorted edges again, each joining its components when
    either is smaller than ``min_size``. Only edges between two components of which one is
    small can join (components only grow), so only those are visited."""
    la, lb = labels[a], labels[b]
    size0 = np.bincount(labels)
    keep = (la != lb) & ((size0[la] < min_size) | (size0[lb] < min_size))
    if not keep.any():
        return labels
    m = len(size0)
    parent = list(range(m))
    size = size0.tolist()

    for p, q in zip(la[keep].tolist(), lb[keep].tolist()):
        while parent[p] != p:  # (path halving, written out as in _segment)
            parent[p] = p = parent[parent[p]]
        while parent[q] != q:
            parent[q] = q = parent[parent[q]]
        if p != q and (size[p] < min_size or size[q] < min_size):
            if p > q:
                p, q = q, p
            parent[q] = p
            size[p] += size[q]
    return _flatten(np.asarray(parent))[labels]


# ---------------------------------------------------------------------- public
class TracedImagesError(jax.errors.JAXTypeError):
    """Images traced by ``jax.jit`` (or ``jax.eval_shape``) where a segmentation, which runs
    on the host, needs their values. A ``jax.errors.JAXTypeError``, as JAX's own errors for
    a tracer read on the host are: ``explain_to_file``'s dry run leaves such a call to the
    real one."""

    def __init__(self, message: str):
        TypeError.__init__(self, message)  # (without the JAX error page link: none is ours)


def _check_images(images: ArrayLike, name: str, allow_int: bool = False) -> np.ndarray:
    """``images`` as ``(N, H, W, C)`` finite floats on the host (their own dtype; integer
    ones as float64 with ``allow_int``; bfloat16 ones, which NumPy does not count as floats,
    as float32), or a clear error."""
    if isinstance(images, jax.core.Tracer):
        raise TracedImagesError(
            f"{name} segments concrete images on the host (a sequential graph algorithm), "
            "not images traced by jax.jit: call it outside jax.jit (for xrai under jax.jit "
            "pass segments=jaxsal.xrai_segments(x), made outside)")
    x = np.asarray(images)
    if x.ndim != 4 or not x.size:
        raise ValueError(f"{name}: expected images of shape (N, H, W, C), channels last "
                         f"(C = 1 for grayscale, 3 for RGB; N, H, W >= 1), got shape "
                         f"{x.shape}; add a channel axis to (N, H, W) images (x[..., None]) "
                         "and move it last for channels-first ones")
    if x.shape[1] in (1, 3, 4) and x.shape[-1] > 4 and x.shape[2] > 4:
        # (N, C, H, W): read as channels last it would be segmented along the wrong axes
        raise ValueError(f"{name}: expected images of shape (N, H, W, C), channels last, got "
                         f"shape {x.shape}, which looks channels-first ({x.shape[1]} channels "
                         f"of {x.shape[2]}x{x.shape[3]}): pass np.moveaxis(images, 1, -1)")
    if allow_int and (np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_):
        x = x.astype(np.float64)
    if not np.issubdtype(x.dtype, np.floating) and jax.dtypes.issubdtype(x.dtype,
                                                                          np.floating):
        x = x.astype(np.float32)  # bfloat16 and the float8s (ml_dtypes): not NumPy's floats
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name}: expected floating-point images, got dtype {x.dtype}; "
                         "scale integer images to floats first (images / 255.0, as "
                         "scikit-image's img_as_float does for uint8)")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: images contain NaN or infinite values; their edges' "
                         "weights would be NaN. Pass finite images (np.nan_to_num(images))")
    return x


def _check_number(value, name: str, low: float = 0.0) -> float:
    return reals.check_real(value, name, low=low)


def _check_min_size(min_size) -> int:
    return ints.check_int(min_size, "min_size", low=0, kind="pixels")


def _labels(img: np.ndarray, scales: Sequence[float], sigma: float, min_size: int
            ) -> np.ndarray:
    """``(S, H, W)`` int32 labels of one ``(H, W, C)`` float64 image at each scale (the
    smoothing, the edges and their order shared by the scales)."""
    h, w = img.shape[:2]
    ia, ib, cost = _edges(_smooth(img, sigma))
    a, b, cost = ia.tolist(), ib.tolist(), cost.tolist()
    return np.stack([_segment(a, b, cost, h * w, s / 255.0, min_size, (ia, ib)).reshape(h, w)
                     for s in scales]).astype(np.int32)


def felzenszwalb(images: ArrayLike, scale: float | Sequence[float] = 1.0, sigma: float = 0.8,
                 min_size: int = 20) -> np.ndarray:
    """Felzenszwalb & Huttenlocher's graph segmentation (2004), as
    ``skimage.segmentation.felzenszwalb`` computes it (see the module docstring), of each
    image at each scale.

    Args:
      images: ``(N, H, W, C)`` floating-point images (bfloat16 too), channels last
        (``C = 1``: grayscale, ``3``: RGB; any ``C``: the Euclidean distance over the
        channels), finite.
      scale: a number >= 0 or a sequence of them (higher: larger segments; scikit-image's
        default 1). Every scale shares the smoothing and the sorted edges of an image.
      sigma: the Gaussian smoothing's standard deviation in pixels (0: none; default 0.8).
      min_size: components smaller than this many pixels are joined to a neighbour (default
        20).
    Returns:
      ``(N, H, W)`` int32 label images for one scale, ``(N, S, H, W)`` for ``S`` scales: the
      segments numbered ``0, 1, ...`` in the order of their first pixel (row by row), as
      scikit-image numbers them. A NumPy array (the segmentation runs on the host);
      :func:`jaxsal.segment_masks` turns the labels into XRAI's region masks.

    Example::

      labels = jaxsal.felzenszwalb(images, scale=(100, 500), sigma=0.8, min_size=50)
    """
    x = _check_images(images, "felzenszwalb")
    several = np.ndim(scale) == 1
    scales = [_check_number(s, "scale") for s in (scale if several else [scale])]
    if several and not scales:
        raise ValueError("expected scale as a number or a non-empty sequence of numbers, "
                         "got an empty sequence")
    sigma = _check_number(sigma, "sigma")
    min_size = _check_min_size(min_size)
    out = np.stack([_labels(img.astype(np.float64), scales, sigma, min_size) for img in x])
    return out if several else out[:, 0]


def _nearest(n_in: int, n_out: int) -> np.ndarray:
    """The source index of each of ``n_out`` pixels resized from ``n_in`` by nearest
    neighbour, pixel centres aligned, as scikit-image's ``resize(order=0)`` (scipy's
    ``zoom(grid_mode=True)``) computes it."""
    z = n_in / n_out
    return np.floor(((np.arange(n_out) + 0.5) * z - 0.5) + 0.5).astype(np.int64)


#: scipy's pole of the cubic B-spline prefilter, ``sqrt(3) - 2``, as its C code writes it.
_CUBIC_POLE = -0.267949192431122706472553658494127633
#: the zeros scipy's ``zoom`` pads every axis with before the prefilter (``grid-constant``).
_SPLINE_PAD = 12


def _cubic_prefilter(c: np.ndarray, axis: int) -> np.ndarray:
    """The cubic B-spline coefficients of float64 ``c`` along ``axis`` (scipy's
    ``spline_filter1d(order=3)``: the gain, then a causal and an anticausal recursion whose
    first values assume the line mirrored, each operation in the order of its C loop)."""
    c = np.ascontiguousarray(np.moveaxis(c, axis, 0))  # the lines' pixels side by side
    n, z = c.shape[0], _CUBIC_POLE
    if n < 2:
        return np.moveaxis(c, 0, axis)
    c *= (1.0 - z) * (1.0 - 1.0 / z)
    z_n_1 = z ** (n - 1)  # C's pow, as Python's float power calls it
    c0 = c[0] + z_n_1 * c[n - 1]
    z_i = z
    for i in range(1, n - 1):
        c0 += z_i * (c[i] + z_n_1 * c[n - 1 - i])
        z_i *= z
    c[0] = c0 / (1 - z_n_1 * z_n_1)
    for i in range(1, n):
        c[i] += z * c[i - 1]
    c[n - 1] = (z * c[n - 2] + c[n - 1]) * z / (z * z - 1)
    for i in range(n - 2, -1, -1):
        c[i] = z * (c[i + 1] - c[i])
    return np.moveaxis(c, 0, axis)


def _cubic_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """The first of the 4 coefficients (in the padded array) each of ``n_out`` output
    pixels reads along an axis of ``n_in`` pixels, and their ``(n_out, 4)`` weights: pixel
    centres aligned (scipy's ``zoom(grid_mode=True)``), written as scipy's C code computes
    them."""
    cc = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5 + _SPLINE_PAD
    start = np.floor(cc)
    x = cc - start
    y, z = x, 1.0 - x
    w1 = (y * y * (y - 2.0) * 3.0 + 4.0) / 6.0
    w2 = (z * z * (z - 2.0) * 3.0 + 4.0) / 6.0
    w0 = z * z * z / 6.0
    w3 = 1.0 - w0 - w1 - w2
    return start.astype(np.int64) - 1, np.stack([w0, w1, w2, w3], axis=1)


def _resize_like_skimage(img: np.ndarray, dims: tuple[int, int]) -> np.ndarray:
    """``(H, W, C)`` -> ``(h, w, C)``: what PAIR's XRAI segments, scikit-image's
    ``resize(img, dims, order=3, mode="constant", preserve_range=True,
    anti_aliasing=True)``, computed as scikit-image and scipy compute it (float64, or
    float32 for float16/float32 images as scikit-image keeps them):

    - when a side shrinks, scipy's ``gaussian_filter`` of sigma ``max(0, (H / h - 1) / 2)``
      per side (zeros outside the image, truncated at 4 sigma; none on the channel axis);
    - scipy's ``zoom(order=3, mode="grid-constant", grid_mode=True)`` to ``(h, w, C)``: every
      axis (the channel axis too, at zoom 1) padded with 12 zeros, prefiltered into cubic
      B-spline coefficients, and each output pixel the sum of its 4x4x4 coefficients times
      their weights, in scipy's order;
    - clipped to the image's range (widened to 0 where the image's range excludes 0 and
      the output's includes it).
    """
    if img.dtype in (np.float16, np.float32):
        img = img.astype(np.float32)
    else:
        img = img.astype(np.float64)
    shape_in = img.shape
    shape_out = (*dims, shape_in[2])
    if shape_out == shape_in:
        return img.copy()
    factors = [a / b for a, b in zip(shape_in, shape_out)]
    filtered = img
    if any(b < a for a, b in zip(shape_in, shape_out)):
        for axis, f in enumerate(factors):
            sigma = max(0.0, (f - 1) / 2)
            if sigma > 1e-15:  # scipy skips the others
                filtered = _smooth_axis(filtered, _gaussian_weights(sigma), axis,
                                        border="zero").astype(img.dtype)
    coef = np.pad(filtered.astype(np.float64), _SPLINE_PAD)
    for axis in range(coef.ndim):
        coef = _cubic_prefilter(coef, axis)
    (r0, w0), (r1, w1), (r2, w2) = (_cubic_taps(a, b) for a, b in zip(shape_in, shape_out))
    # only the coefficients some output pixel reads (along the channels: C + 3 of C + 24)
    coef = coef[r0.min():r0.max() + 4, r1.min():r1.max() + 4, r2.min():r2.max() + 4]
    r0, r1, r2 = r0 - r0.min(), r1 - r1.min(), r2 - r2.min()
    w0, w1, w2 = w0[:, :, None, None], w1[None, :, :, None], w2[None, None, :, :]
    out = np.zeros(shape_out, np.float64)
    for a in range(4):  # the 4x4x4 terms in the order scipy sums them (the last axis fastest)
        rows = coef[r0 + a]
        for b in range(4):
            block = rows[:, r1 + b]
            for c in range(4):
                out += block[:, :, r2 + c] * w0[:, a] * w1[:, :, b] * w2[..., c]
    out = out.astype(img.dtype)
    lo, hi = img.min(), img.max()
    if not lo <= 0 <= hi and out.min() <= 0 <= out.max():
        lo, hi = min(lo, img.dtype.type(0)), max(hi, img.dtype.type(0))
    return np.clip(out, lo, hi)


def xrai_labels(images: ArrayLike, *, scales: Sequence[float] = XRAI_SCALES,
                sigma: float = XRAI_SIGMA, min_size: int = XRAI_MIN_SIZE,
                size: tuple[int, int] | None = XRAI_SIZE,
                value_range: tuple[float, float] = XRAI_VALUE_RANGE) -> np.ndarray:
    """The label images XRAI's authors segment each image into (PAIR saliency's
    ``_get_segments_felzenszwalb``): each image scaled to ``value_range`` (its minimum to
    the lower end, its maximum to the upper; a constant image to the lower end), resized to
    ``size`` (``None``: not resized), segmented by :func:`felzenszwalb` at each of
    ``scales``, the labels resized back by nearest neighbour.

    Args:
      images: ``(N, H, W, C)`` images, channels last (integer ones too: the scaling to
        ``value_range`` makes them floats, as in PAIR's code; bfloat16 ones are scaled as
        float32).
      scales, sigma, min_size: :func:`felzenszwalb`'s (PAIR's: 50, 100, 150, 250, 500,
        1200; 0.8; 150).
      size: ``(h, w)`` to segment at (PAIR's 224x224, the scale its parameters are set for).
        Images of another size are resized as PAIR resizes them (scikit-image's
        ``resize(order=3, mode="constant", anti_aliasing=True)``: a Gaussian when
        shrinking, then a cubic spline with zeros outside the image; written in NumPy as
        scipy computes it, see the README, "XRAI").
      value_range: ``(low, high)`` (PAIR's ``(-1, 1)``).
    Returns:
      ``(N, S, H, W)`` int32 label images, a NumPy array.
    """
    x = _check_images(images, "xrai_labels", allow_int=True)
    dims = None if size is None else int_sizes(size)
    if size is not None and (dims is None or len(dims) != 2 or min(dims) < 1):
        raise ValueError(f"xrai_labels: expected size=(h, w) as two positive ints or None, got "
                         f"{size!r}{not_sizes(size, '(int(h), int(w))')}")
    value_range = reals.check_interval(value_range, "value_range", where="xrai_labels",
                                       kind="what each image's minimum and maximum become",
                                       example="(-1, 1)")
    if np.ndim(scales) != 1 or not len(scales):
        raise ValueError(f"expected scales as a non-empty sequence of numbers, got {scales!r}")
    scales = [_check_number(s, "scale") for s in scales]
    sigma = _check_number(sigma, "sigma")
    min_size = _check_min_size(min_size)
    low, high = value_range
    n, h, w = x.shape[:3]
    out = np.empty((n, len(scales), h, w), np.int32)
    for i, img in enumerate(x):
        # PAIR's normalization, in the image's dtype and PAIR's order of operations
        lo, hi = np.min(img), np.max(img)
        with np.errstate(over="ignore", invalid="ignore"):
            img = ((img - lo) / (hi - lo) * (high - low) + low if hi > lo
                   else np.full_like(img, low))
        if not np.isfinite(img).all():  # hi - lo overflows the dtype: NaN labels otherwise
            raise ValueError(
                f"xrai_labels: image {i} spans {lo} to {hi}, a range that overflows "
                f"{img.dtype} when scaled to value_range {value_range}; expected a range "
                "finite in the images' dtype: " + (
                    "scale the images down" if img.dtype == np.float64 else
                    "pass the images as float64 (images.astype(np.float64))"))
        if dims is not None and dims != (h, w):
            img = _resize_like_skimage(img, dims)
        labels = _labels(img.astype(np.float64), scales, sigma, min_size)
        if labels.shape[1:] != (h, w):
            labels = labels[:, _nearest(labels.shape[1], h)][:, :, _nearest(labels.shape[2], w)]
        out[i] = labels
    return out

