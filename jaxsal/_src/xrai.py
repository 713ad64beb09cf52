"""XRAI (Kapishnikov, Bolukbasi, Viegas & Terry, 2019, "XRAI: Better Attributions Through
Regions").

XRAI ranks image regions instead of pixels. Its attributions are integrated gradients from
two baselines, the image's darkest and brightest value everywhere, averaged and reduced over
channels by their (signed) maximum. Given overlapping candidate regions (segments of the image
at several scales, each dilated), it then grows a selection greedily: at each step it adds the
region whose *new* pixels (those not selected yet) have the highest mean attribution, and
gives those pixels that mean. Regions that would add fewer than ``min_pixel_diff`` new pixels
are dropped; selection stops when the selected area exceeds ``area_threshold`` or no region is
left, and the pixels never selected get the mean attribution over them. The ``"fast"`` variant
ranks the regions once by their own mean attribution and adds them in that order.

The selection (:func:`xrai_regions`) runs compiled, one ``lax.while_loop`` of matrix-vector
products over the regions, ``vmap``-ed over inputs and targets; both variants on atoms, the
sets of pixels in exactly the same regions (:func:`_atom_bits`), unless the masks are traced.
The regions are the caller's or, by default, the authors': Felzenszwalb & Huttenlocher's
segmentation at six scales (:func:`xrai_segments`, a sequential graph algorithm run on the host:
``jaxsal._src.segmentation``); :func:`segment_masks` turns label images from any segmenter
into dilated region masks as the authors' code does (see the README, "XRAI").
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src.base import ModelLike
from jaxsal._src.integrated import RULES, integrated_gradients
from jaxsal._src.postprocess import reduce_channels
from jaxsal._src import base, ints, reals
from jaxsal._src.segmentation import (XRAI_MIN_SIZE, XRAI_SCALES, XRAI_SIGMA, XRAI_SIZE,
                                      XRAI_VALUE_RANGE, TracedImagesError, xrai_labels)
from jaxsal._src.targets import Targets
from jaxsal._src.validate import all_finite, check_not_per_channel, prepare

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

_HIGHEST = jax.lax.Precision.HIGHEST
ALGORITHMS = ("full", "fast")
#: The most bytes of region masks :func:`segment_masks` makes in one call.
_MAX_MASK_BYTES = 2**31


# ---------------------------------------------------------------------- regions
def segment_masks(labels: ArrayLike, dilation: int | None = 5) -> np.ndarray:
    """Region masks for :func:`xrai` from integer label images, as the XRAI authors' code
    makes them: every label of every segmentation a mask (the labels present, in increasing
    order; the authors' code also lists absent ones, as empty masks, which change nothing),
    each dilated by a disk of radius ``dilation`` pixels (``x**2 + y**2 <= r**2``).

    Args:
      labels: ``(N, H, W)`` or ``(N, S, H, W)`` integer label images, ``S`` segmentations of
        each input (e.g. Felzenszwalb's at several scales: ``skimage.segmentation.felzenszwalb``).
      dilation: the disk's radius (the authors' default: 5); ``0`` or ``None``: no dilation.
    Returns:
      ``(N, M, H, W)`` boolean masks, ``M`` the largest count of any input; an input with fewer
      gets empty masks, which :func:`xrai_regions` drops. A NumPy array: the masks are made on
      the host and :func:`xrai_regions` finds its atoms there, so they never travel to a device
      and back (``jnp.asarray`` places them on one).
    """
    lab = np.asarray(labels)
    if lab.ndim == 3:
        lab = lab[:, None]
    if lab.ndim != 4 or not np.issubdtype(lab.dtype, np.integer) or not lab.size:
        raise ValueError(f"expected labels as (N, H, W) or (N, S, H, W) integer label images "
                         f"(S segmentations per input, N >= 1), got shape {np.shape(labels)} "
                         f"dtype {lab.dtype}")
    dilation = ints.check_int(dilation, "dilation", low=0, kind="a radius in pixels",
                              allow_none=True)
    present = [[np.unique(s) for s in segs] for segs in lab]
    m = max(sum(len(u) for u in us) for us in present)
    size = len(lab) * m * lab.shape[2] * lab.shape[3]
    if size > _MAX_MASK_BYTES:
        raise ValueError(f"{len(lab)} inputs x {m} regions x {lab.shape[2]}x{lab.shape[3]} "
                         f"pixels would take {size / 2**30:.1f} GiB of masks; expected "
                         "segmentations of fewer regions (XRAI's: tens to hundreds per image), "
                         "or fewer inputs per call")
    out = np.zeros((len(lab), m, *lab.shape[2:]), bool)
    for i, (segs, us) in enumerate(zip(lab, present)):
        k = 0
        for s, u in zip(segs, us):  # the masks of one segmentation, label by label
            if dilation:
                _dilated_labels(s, u, int(dilation), out[i, k:k + len(u)])
            else:
                out[i, k:k + len(u)] = s[None] == u[:, None, None]
            k += len(u)
    return out


def _dilated_labels(s: np.ndarray, u: np.ndarray, r: int, out: np.ndarray) -> None:
    """Write into ``out`` ``(len(u), H, W)`` the mask of each label ``u[j]`` of the label
    image ``s`` ``(H, W)`` dilated by a disk of radius ``r``: each within its bounding box
    widened by ``r`` (nothing outside it can be set), so that the work is the boxes' area,
    not labels x pixels (most segments of a fine segmentation are small)."""
    h, w = s.shape
    ids = np.searchsorted(u, s)  # (every value of s is in u)
    rows, cols = np.broadcast_to(np.arange(h)[:, None], s.shape), np.arange(w)[None]
    cols = np.broadcast_to(cols, s.shape)
    lo_r = np.full(len(u), h)
    np.minimum.at(lo_r, ids, rows)
    hi_r = np.zeros(len(u), np.int64)
    np.maximum.at(hi_r, ids, rows)
    lo_c = np.full(len(u), w)
    np.minimum.at(lo_c, ids, cols)
    hi_c = np.zeros(len(u), np.int64)
    np.maximum.at(hi_c, ids, cols)
    for j in range(len(u)):
        y0, y1 = max(lo_r[j] - r, 0), min(hi_r[j] + r + 1, h)
        x0, x1 = max(lo_c[j] - r, 0), min(hi_c[j] + r + 1, w)
        out[j, y0:y1, x0:x1] = _dilate((ids[y0:y1, x0:x1] == j)[None], r)[0]


def _dilate(masks: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation of ``(M, H, W)`` masks by a disk of radius ``r`` (outside the image:
    nothing): for each row offset ``dy`` of the disk, the masks dilated along the row by the
    disk's half-width there (window sums of a running count), shifted by ``dy`` and or-ed in.
    A few passes over the masks, no array larger than a few copies of them."""
    m, h, w = masks.shape
    # counts[..., r + 1 + x]: the set pixels of a row left of x (constant beyond either end)
    counts = np.zeros((m, h, w + 1 + 2 * r), np.int32)
    np.cumsum(masks, axis=2, out=counts[:, :, r + 1:r + 1 + w])
    counts[:, :, r + 1 + w:] = counts[:, :, r + w:r + 1 + w]
    out = np.zeros_like(masks)
    for half in sorted({math.isqrt(r * r - dy * dy) for dy in range(-r, r + 1)}):
        # set pixels in x - half .. x + half
        along = (counts[:, :, r + 1 + half:r + 1 + half + w]
                 - counts[:, :, r - half:r - half + w]) > 0
        for dy in range(-r, r + 1):
            if math.isqrt(r * r - dy * dy) != half or abs(dy) >= h:
                continue
            if dy >= 0:  # output row y takes row y + dy
                out[:, :h - dy] |= along[:, dy:]
            else:
                out[:, -dy:] |= along[:, :h + dy]
    return out


def xrai_segments(images: ArrayLike, *, scales: Sequence[float] = XRAI_SCALES,
                  sigma: float = XRAI_SIGMA, min_size: int = XRAI_MIN_SIZE,
                  size: tuple[int, int] | None = XRAI_SIZE,
                  value_range: tuple[float, float] = XRAI_VALUE_RANGE,
                  dilation: int | None = 5) -> np.ndarray:
    """XRAI's default regions, as its authors' code (PAIR saliency) makes them:
    :func:`jaxsal.xrai_labels` of each image (Felzenszwalb at six scales, at 224x224 in the
    value range [-1, 1]), each label a mask dilated by a disk of radius ``dilation``
    (:func:`segment_masks`). What :func:`xrai` uses when no ``segments`` are given.

    Args:
      images: ``(N, H, W, C)`` images, channels last.
      scales, sigma, min_size, size, value_range: as in :func:`jaxsal.xrai_labels`.
      dilation: as in :func:`segment_masks` (default 5, the authors').
    Returns:
      ``(N, M, H, W)`` boolean masks, a NumPy array.

    Example::

      masks = jaxsal.xrai_segments(images)             # (N, M, H, W)
      maps = jaxsal.xrai(model, images, targets, segments=masks)
    """
    return segment_masks(xrai_labels(images, scales=scales, sigma=sigma, min_size=min_size,
                                     size=size, value_range=value_range), dilation=dilation)


def _area_limit(area_threshold: float, pixels: int) -> int:
    """The largest selected pixel count ``k`` with ``k / pixels <= area_threshold`` (the
    authors' loop goes on while the selected fraction is at most the threshold)."""
    k = min(pixels, math.floor(area_threshold * pixels))
    while k + 1 <= pixels and (k + 1) / pixels <= area_threshold:
        k += 1
    while k > 0 and k / pixels > area_threshold:
        k -= 1
    return k


def _atom_bits(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The atoms of ``(M, P)`` region masks, pixels in exactly the same regions: ``(P,)``
    ids, one an atom, and each atom's regions ``(A, ceil(M / 8))`` (``A``, the count of
    atoms). Every region and every union of regions is a union of atoms, so the greedy
    selection runs on atoms (a few thousand) instead of pixels, exactly. Each pixel's
    regions are a row of bits (``np.packbits(masks, axis=0)``'s bytes: region ``8 g + j`` the
    bit ``7 - j`` of byte ``g``), the distinct rows numbered in the order of their bytes.

    The bytes are made by 8 passes over the masks, each or-ing in every 8th region's rows
    whole: packbits along the regions axis strides across the rows, and took most of the
    time (see the README, "XRAI"); the same bytes, so the same atoms in the same order."""
    m, p = masks.shape
    bits = masks.view(np.uint8)  # (NumPy's bools are the bytes 0 and 1)
    packed = np.zeros((-(-m // 8), p), np.uint8)
    for j in range(8):
        part = bits[j::8]  # regions j, j + 8, ...: bit 7 - j of bytes 0, 1, ...
        packed[:len(part)] |= part << np.uint8(7 - j)
    rows = np.ascontiguousarray(packed.T)  # (P, ceil(M / 8))
    unique, ids = np.unique(rows.view(np.dtype((np.void, rows.shape[1]))).reshape(-1),
                            return_inverse=True)
    return ids.reshape(-1), unique.view(np.uint8).reshape(len(unique), rows.shape[1])


def _partition(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids (N, P), members (N, M, A), sizes (N, A))``: each input's atoms
    (:func:`_atom_bits`), which regions hold each (the bits it numbered them by, unpacked)
    and how many pixels it has. ``A`` is the largest count rounded up to a power of two (at least
    256, at most ``P``), so that calls with other regions mostly reuse a compiled program;
    the atoms past an input's own are empty, of no region."""
    n, m, p = masks.shape
    parts = [_atom_bits(x) for x in masks]
    a = min(p, max(256, 1 << (max(len(bits) for _, bits in parts) - 1).bit_length()))
    ids = np.stack([i for i, _ in parts])
    members = np.zeros((n, m, a), bool)
    sizes = np.zeros((n, a), np.float32)
    for k, (i, bits) in enumerate(parts):
        count = len(bits)
        members[k, :, :count] = np.unpackbits(bits, axis=1, count=m).T
        sizes[k, :count] = np.bincount(i, minlength=count)
    return ids, members, sizes


def _zero_as(*refs: Array) -> Array:
    """A float32 zero ``()`` that varies over every mesh axis one of ``refs`` varies over
    under ``jax.shard_map`` (elsewhere a plain zero): what a loop's initial carry is built
    from, since its body's values (of ``refs``) vary over those axes."""
    return sum(base.zeros_varying_as(r, (), jnp.float32) for r in refs)


def _full(sums: Array, members: Array, sizes: Array, min_new: int, limit: int) -> Array:
    """Greedy XRAI over one map's atoms: ``sums`` ``(A,)`` their attributions' sums,
    ``members`` ``(M, A)`` the regions, ``sizes`` ``(A,)`` their pixel counts; selection goes
    on while at most ``limit`` pixels are selected and a region is left."""
    mf = members.astype(jnp.float32)

    def cond(s):
        current, _, alive = s
        return (jnp.sum(jnp.where(current, sizes, 0.0)) <= limit) & alive.any()

    def body(s):
        current, out, alive = s
        rest = (~current).astype(jnp.float32)
        # the pixels each region would add and their attributions' sum: one pass over mf
        new, total = jnp.dot(mf, jnp.stack([rest * sizes, rest * sums], 1),
                             precision=_HIGHEST).T
        alive = alive & (new >= min_new)
        gain = total / jnp.maximum(new, 1.0)
        # the first of equal gains, always a live region: a NaN or -inf gain (sums beyond
        # float32's range, traced maps with NaN) ranks lowest among the live ones; argmax
        # could pick a dropped region there, and the loop then never ended
        key = jnp.where(jnp.isnan(gain), -jnp.inf, gain)
        key = jnp.maximum(key, jnp.finfo(jnp.float32).min)
        best = jnp.argmax(jnp.where(alive, key, -jnp.inf))
        added = members[best] & ~current & alive.any()  # (none where every region is dropped)
        out = jnp.where(added, gain[best], out)
        return current | added, out, alive.at[best].set(False)

    # (varying over the mesh axes the sums and regions vary over under jax.shard_map, as the
    # body's: plain arrays were refused there as a carry of another type)
    a, like = sums.shape[0], _zero_as(sums, members, sizes)
    init = (base.zeros_varying_as(like, (a,), bool),
            jnp.full(a, -jnp.inf, jnp.float32) + base.zeros_varying_as(like, (), jnp.float32),
            ~base.zeros_varying_as(like, (members.shape[0],), bool))
    return jax.lax.while_loop(cond, body, init)[1]


def _fast(sums: Array, members: Array, sizes: Array, min_new: int) -> Array:
    """XRAI's fast variant over one map's atoms (as :func:`_full`): the regions ranked once by
    their mean attribution (stable: equal means keep their order), added in that order."""
    mf = members.astype(jnp.float32)
    both = jnp.dot(mf, jnp.stack([sizes, sums], 1), precision=_HIGHEST)
    mean = jnp.where(both[:, 0] > 0, both[:, 1] / jnp.maximum(both[:, 0], 1.0), -jnp.inf)
    order = jnp.argsort(-mean, stable=True)

    def step(i, s):
        current, out = s
        region = members[order[i]]
        added = region & ~current
        count = jnp.sum(jnp.where(added, sizes, 0.0))
        take = count >= min_new
        gain = jnp.sum(jnp.where(added, sums, 0.0)) / jnp.maximum(count, 1.0)
        out = jnp.where(added & take, gain, out)
        return jnp.where(take, current | region, current), out

    # (varying as the sums and regions under jax.shard_map: see _full)
    a, like = sums.shape[0], _zero_as(sums, members, sizes)
    init = (base.zeros_varying_as(like, (a,), bool),
            jnp.full(a, -jnp.inf, jnp.float32) + base.zeros_varying_as(like, (), jnp.float32))
    return jax.lax.fori_loop(0, members.shape[0], step, init)[1]


@functools.partial(jax.jit, static_argnums=(4, 5, 6))
def _regions(maps: Array, ids: Array | None, members: Array, sizes: Array, min_new: int,
             limit: int, algorithm: str) -> Array:
    """``maps`` ``(N, T, P)``; the atoms of each input, or of every input where they have no
    batch axis: ``ids`` ``(N, P)`` or ``(P,)`` (``None``: every pixel an atom), ``members``
    ``(N, M, A)`` or ``(M, A)``, ``sizes`` ``(N, A)`` or ``(A,)`` -> ``(N, T, P)`` region
    gains, the pixels never selected given the mean attribution over them."""
    def one(attr, i, m, size):
        sums = attr if i is None else jax.ops.segment_sum(attr, i, num_segments=m.shape[-1])
        out = (_full(sums, m, size, min_new, limit) if algorithm == "full"
               else _fast(sums, m, size, min_new))
        rest = out == -jnp.inf
        fill = jnp.sum(jnp.where(rest, sums, 0.0)) / jnp.maximum(
            jnp.sum(jnp.where(rest, size, 0.0)), 1.0)
        out = jnp.where(rest, fill, out)
        return out if i is None else out[i]

    per_target = jax.vmap(one, in_axes=(0, None, None, None))
    shared = members.ndim == 2  # one set of regions for every input: not copied per input
    return jax.vmap(per_target, in_axes=(0, None, None, None) if shared else 0)(
        maps, ids, members, sizes)


def _check_maps(a: Array) -> None:
    """Refuse maps ``a`` that are not ``(N, H, W)`` or ``(N, T, H, W)`` floating-point
    attributions, naming what they look like (a dtype to convert, channels to reduce)."""
    if a.ndim == 5:
        raise ValueError(f"expected maps as (N, H, W) or (N, T, H, W) attributions reduced over "
                         f"channels, got shape {a.shape}: they look un-reduced, (N, T, H, W, C); "
                         "reduce them first: jaxsal.reduce_channels(maps, \"max\") (what xrai "
                         "does; axis=2 for channels-first maps)")
    if a.ndim not in (3, 4):
        raise ValueError(f"expected maps as (N, H, W) or (N, T, H, W) floating-point "
                         f"attributions (reduced over channels), got shape {a.shape}")
    if not jnp.issubdtype(a.dtype, jnp.floating):
        raise ValueError(f"expected floating-point maps, got dtype {a.dtype} (shape {a.shape}); "
                         "convert them: maps.astype(np.float32)")


def _wide_peak(maps: Any) -> float | None:
    """The largest finite magnitude of ``maps`` of a float type wider than float32 (64-bit:
    NumPy, lists, JAX arrays under ``jax_enable_x64``; not traced ones), else ``None``. Found
    on the host's values before any cast: above float32's range, JAX (without x64) or the cast
    to float32 would make them inf, and they were then refused as not finite. Within it, the
    float32 maps' peak is this one rounded to float32 (rounding keeps the order), which
    :func:`xrai_regions` reuses for the regions' sums instead of finding it again."""
    if isinstance(maps, jax.core.Tracer):
        return None
    try:
        v = maps if isinstance(maps, jax.Array) else np.asarray(maps)
    except (TypeError, ValueError):
        return None  # (refused by the checks that follow)
    if getattr(v.dtype, "kind", None) != "f" or v.dtype.itemsize <= 4 or not v.size:
        return None
    with jax.ensure_compile_time_eval():  # (concrete maps inside the caller's jit too)
        return float(jnp.max(jnp.where(jnp.isfinite(v), jnp.abs(v), 0))
                     if isinstance(v, jax.Array)
                     else np.max(np.where(np.isfinite(v), np.abs(v), 0.0)))


def _not_finite() -> ValueError:
    """The error for maps holding NaN or infinite values."""
    return ValueError("maps contain NaN or infinite values; their regions' means would be "
                      "NaN. Pass finite maps (np.nan_to_num(maps))")


def _too_large(peak: float, why: str) -> ValueError:
    """The error for maps of finite values too large for float32, which the regions' sums
    and gains are computed and returned in (``why``: how they exceed it)."""
    return ValueError(
        f"xrai_regions: the maps hold finite values up to {peak:.3g} in magnitude, {why} "
        f"({float(np.finfo(np.float32).max):.3g}), which the regions' sums and mean "
        "attributions are computed and returned in (they would become inf, under "
        "jax_enable_x64 too, and the selection never ended). Scale them to a peak near 1 by a "
        "power of two first, maps * 2.0 ** -np.ceil(np.log2(np.abs(maps).max())): the "
        "regions are chosen as before (their order is the same, exactly) and the returned "
        "gains are scaled alike")


def _check_options(min_pixel_diff: Any, area_threshold: Any, algorithm: Any
                   ) -> tuple[int, float]:
    """Check :func:`xrai_regions`' options (:func:`xrai`: before any work, once). Returns
    ``min_pixel_diff`` and ``area_threshold`` checked."""
    min_pixel_diff = ints.check_int(min_pixel_diff, "min_pixel_diff",
                                    kind="new pixels a region must add")
    area_threshold = reals.check_real(area_threshold, "area_threshold", low=0, above=True,
                                      high=1, kind="a finite number: the fraction of the "
                                      "image to select regions for")
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {ALGORITHMS}")
    return int(min_pixel_diff), float(area_threshold)


def _check_segments(segments: ArrayLike, n: int, hw: tuple[int, ...], what: str,
                    channels_last_hw: tuple[int, ...] | None = None) -> Array | np.ndarray:
    """Check :func:`xrai_regions`' ``segments`` for ``n`` inputs of ``hw`` pixels (``what``:
    the maps or images they go with, for the message; :func:`xrai` checks given ones against
    its images, before segmenting or integrating anything, and only once). Where the segments
    fit ``channels_last_hw`` instead (maps ``(N, H, W, C)`` still holding channels), the
    message says so. Returns the segments (a NumPy array stays one: masks on the host stay
    there). Segments sharded over ``Explicit`` mesh axes are refused
    (:func:`jaxsal._src.base.refuse_explicit_tree`)."""
    base.refuse_explicit_tree(segments, "segments")
    s = segments if isinstance(segments, np.ndarray) else jnp.asarray(segments)
    if s.dtype != np.bool_:
        raise ValueError(f"expected segments as boolean region masks (N, M, H, W) or "
                         f"(M, H, W), got dtype {s.dtype}; integer label images become masks "
                         "through jaxsal.segment_masks(labels)")
    shared = s.ndim == 3
    if s.ndim not in (3, 4) or s.shape[-2:] != tuple(hw) or (not shared and s.shape[0] != n):
        if s.ndim in (3, 4) and channels_last_hw is not None and (
                s.shape[-2:] == tuple(channels_last_hw)):
            raise ValueError(f"{what} look un-reduced, (N, H, W, C) with C = "
                             f"{hw[-1]} channels, for segments of shape {s.shape}; "
                             "reduce them over channels first: "
                             "jaxsal.reduce_channels(maps, \"max\") (what xrai does)")
        raise ValueError(f"expected segments of shape ({n}, M, {hw[0]}, {hw[1]}) or (M, "
                         f"{hw[0]}, {hw[1]}) for {what}, got {s.shape}")
    if s.shape[-3] == 0:
        raise ValueError("segments holds no region (M = 0); pass at least one mask per input")
    return s


def xrai_regions(maps: ArrayLike, segments: ArrayLike, *, min_pixel_diff: int = 50,
                 area_threshold: float = 1.0, algorithm: str = "full") -> Array:
    """XRAI's region selection over given attribution maps (any method's, reduced over
    channels): each pixel gets the mean attribution of the new pixels of the region it was
    selected with (see the module docstring).

    Args:
      maps: ``(N, H, W)`` or ``(N, T, H, W)`` attributions (``jaxsal.xrai`` passes integrated
        gradients from two baselines, channel-maxed).
      segments: ``(N, M, H, W)`` boolean region masks per input (:func:`segment_masks`), or
        ``(M, H, W)`` for every input. Order matters where two regions tie: the first wins.
      min_pixel_diff: a region that would add fewer new pixels is dropped (default 50, the
        authors'; their setting for 224x224 images: scale it for other sizes).
      area_threshold: stop once the selected fraction of the image exceeds this (``1.0``:
        select until no region is left); the rest gets its mean attribution. ``"full"`` only.
      algorithm: ``"full"`` (greedy: the best gain over the pixels not yet selected, at every
        step) or ``"fast"`` (the regions ranked once by their own mean attribution).
    Returns:
      ``(N, H, W)`` or ``(N, T, H, W)`` float32 maps: each pixel its region's gain.
    """
    a = _float32_maps(maps)
    min_pixel_diff, area_threshold = _check_options(min_pixel_diff, area_threshold, algorithm)
    return _select(a, segments, min_pixel_diff, area_threshold, algorithm)


def _float32_maps(maps: ArrayLike) -> Array:
    """:func:`xrai_regions`' ``maps`` ``(N, H, W)`` or ``(N, T, H, W)`` checked (their shape
    and dtype, finite values, a peak whose regions' sums float32 holds: found once, see
    :func:`_wide_peak`) -> the same maps as float32. :func:`xrai` checks its maps here too.
    Maps sharded over ``Explicit`` mesh axes are refused (JAX raised in a reshape)."""
    base.refuse_explicit_tree(maps, "maps")
    peak = _wide_peak(maps)  # (None for float32 maps and narrower: found on the device below)
    if peak is not None and peak > float(np.finfo(np.float32).max):
        # (maps that also hold NaN or inf are refused as such first: _too_large's scaling
        # divides by their largest magnitude, inf there, and would make every value 0 or NaN)
        wide = maps if isinstance(maps, jax.Array) else np.asarray(maps)
        finite = all_finite(wide) if isinstance(wide, jax.Array) else np.isfinite(wide).all()
        if not finite:
            raise _not_finite()
        raise _too_large(peak, "beyond float32's range")
    a = jnp.asarray(maps)
    _check_maps(a)
    if not all_finite(a):
        raise _not_finite()
    a = a.astype(jnp.float32)
    pixels = a.shape[-2] * a.shape[-1]
    if not isinstance(a, jax.core.Tracer) and a.size:  # (a region's sum: up to every pixel)
        if peak is None:
            with jax.ensure_compile_time_eval():  # (concrete maps inside the caller's jit too)
                peak = float(jnp.max(jnp.abs(a)))
        else:  # the wide maps' peak, found once: rounded as the cast to float32 rounds them
            peak = float(np.float32(peak))
        if peak * pixels > float(np.finfo(np.float32).max):
            raise _too_large(peak, f"whose sums over up to {pixels} pixels would exceed "
                                   "float32's range")
    return a


def _select(a: Array, segments: ArrayLike, min_pixel_diff: int, area_threshold: float,
            algorithm: str, checked: bool = False) -> Array:
    """:func:`xrai_regions` of checked float32 maps ``a`` ``(N, H, W)`` or ``(N, T, H, W)``
    (:func:`_float32_maps`) and checked options (:func:`_check_options`) -> ``a``'s shape.
    The ``segments`` ``(N, M, H, W)`` or ``(M, H, W)`` are checked against the maps here
    unless ``checked`` (:func:`xrai`'s given ones, checked against its images before any
    work: the maps' ``N, H, W``), so that each check runs once per call."""
    n, pixels = a.shape[0], a.shape[-2] * a.shape[-1]
    s = segments if checked else _check_segments(
        segments, n, a.shape[-2:], f"maps of shape {a.shape}",
        channels_last_hw=a.shape[1:3] if a.ndim == 4 else None)
    shared = s.ndim == 3  # the same regions for every input: their atoms found once
    flat = s.reshape(*s.shape[:-2], pixels)  # (N, M, P), or (M, P) for every input
    if not isinstance(flat, jax.core.Tracer):
        # both algorithms on atoms, exactly (a region's pixels, and its new ones, are unions
        # of atoms): the (N, M, A) members go to the device, not the (N, M, P) pixel masks
        ids, members, sizes = _partition(np.asarray(flat[None] if shared else flat))
        if shared:
            ids, members, sizes = ids[0], members[0], sizes[0]
    else:  # masks traced by the caller's jax.jit: every pixel an atom
        ids, members = None, flat
        sizes = jnp.ones((pixels,) if shared else (n, pixels), jnp.float32)
    out = _regions(a.reshape(n, -1, pixels), ids, members, sizes, int(min_pixel_diff),
                   _area_limit(float(area_threshold), pixels), algorithm)
    return out.reshape(a.shape)


# ---------------------------------------------------------------------- the method
def _baselines(baselines: Sequence[Any] | None, x: Array, channels_first: bool) -> list[Array]:
    """The IG baselines, each ``x``'s shape: by default each input's minimum and maximum
    value everywhere (the authors' defaults). For a ``channels_first`` ``x``, a 1-D baseline
    that could be one value per channel or one per column is refused
    (:func:`~jaxsal._src.validate.check_not_per_channel`); baselines sharded over
    ``Explicit`` mesh axes are refused (:func:`jaxsal._src.base.refuse_explicit_tree`)."""
    base.refuse_explicit_tree(baselines, "baselines")
    if baselines is None:
        axes = tuple(range(1, x.ndim))
        return [jnp.broadcast_to(x.min(axis=axes, keepdims=True), x.shape),
                jnp.broadcast_to(x.max(axis=axes, keepdims=True), x.shape)]
    if not isinstance(baselines, (list, tuple)) or not baselines:
        raise ValueError(f"expected baselines as a list of baselines (each a scalar, one "
                         f"input's shape {x.shape[1:]} or the batch's {x.shape}), got "
                         f"{type(baselines).__name__}")
    out = []
    for i, b in enumerate(baselines):
        b = jnp.asarray(b, x.dtype)
        if channels_first:
            check_not_per_channel(tuple(b.shape), tuple(x.shape), f"baselines[{i}]")
        try:
            out.append(jnp.broadcast_to(b, x.shape))
        except ValueError:
            raise ValueError(f"baselines[{i}] has shape {b.shape}; expected a scalar, one "
                             f"input's shape {x.shape[1:]} or the batch's {x.shape}") from None
    return out


def _stacked(targets: Any, k: int) -> Any:
    """``targets`` for ``k`` copies of the inputs stacked input-major (each input's copies in
    a row, :func:`jaxsal._src.base.repeat_rows`): per-input ids ``(N, T)`` each repeated
    ``k`` times, anything else (one id, ids for every input, score functions, ``None``) as
    it is."""
    if targets is None or callable(targets) or isinstance(targets, (int, np.integer)) or (
            isinstance(targets, (list, tuple)) and any(callable(t) for t in targets)):
        return targets
    xp = jnp if any(isinstance(t, jax.core.Tracer)  # ids traced under the caller's jit
                    for t in jax.tree_util.tree_leaves(targets)) else np
    ids = xp.asarray(targets)
    return xp.repeat(ids, k, axis=0) if ids.ndim == 2 else targets


def xrai(model: ModelLike, x: ArrayLike, targets: Targets = None, *,
         segments: ArrayLike | None = None,
         baselines: Sequence[ArrayLike] | None = None, steps: int = 100,
         rule: str = "trapezoid", min_pixel_diff: int = 50, area_threshold: float = 1.0,
         algorithm: str = "full", batch_steps: int | None = None, head: str | None = None,
         chunk_size: int | None = None, memory_budget: int | None = None,
         precision: str | None = None, check_finite: bool = True) -> Array:
    """XRAI (Kapishnikov et al., 2019): integrated gradients ranked by image regions.

    Integrated gradients from each baseline (by default each image's minimum and maximum value
    everywhere), averaged and reduced over channels by their signed maximum, then
    :func:`xrai_regions` over ``segments``. Every baseline's path runs in one call (the
    inputs stacked), every target from one forward pass per path point.

    Args:
      model, x, targets, head, chunk_size, memory_budget, precision, check_finite: as in
        :func:`jaxsal.saliency`; ``x`` images ``(N, H, W, C)`` (or channels-first).
      segments: ``(N, M, H, W)`` boolean region masks (:func:`segment_masks` of label
        images from a segmenter), or ``(M, H, W)`` for every input; ``None`` (the default):
        :func:`xrai_segments` of ``x``, the authors' Felzenszwalb regions (made on the host,
        so not under ``jax.jit``).
      baselines: a list of IG baselines (each a scalar, ``(H, W, C)`` or ``(N, H, W, C)``);
        default: each input's minimum and its maximum, the authors' two.
      steps: gradient evaluations along each baseline's path (default 100, the authors').
      rule, batch_steps: as in :func:`jaxsal.integrated_gradients`.
      min_pixel_diff, area_threshold, algorithm: as in :func:`xrai_regions`.
    Returns:
      ``(N, H, W)`` or ``(N, T, H, W)`` maps: each pixel its region's mean attribution.
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; expected one of {RULES}")
    min_pixel_diff, area_threshold = _check_options(  # before any work
        min_pixel_diff, area_threshold, algorithm)
    p = prepare(model, x, targets, head=head, check_finite=check_finite, spatial=True,
                method=xrai)
    xs = p.x
    if xs.ndim != 4:
        raise ValueError(f"xrai explains images: expected x of shape (N, H, W, C) (or "
                         f"channels-first), got {xs.shape}; its regions are 2-D")
    bs = _baselines(baselines, xs, p.channels_first)
    given = segments is not None
    if given:  # refused before integrated gradients run
        segments = _check_segments(
            segments, len(xs), tuple(xs.shape[2:] if p.channels_first else xs.shape[1:3]),
            f"images of shape {xs.shape}")
    else:  # the authors' regions, made on the host from the images
        if isinstance(xs, jax.core.Tracer):
            raise TracedImagesError(
                "xrai without segments= segments the images on the host, which it cannot do "
                "for images traced by jax.jit: pass segments=jaxsal.xrai_segments(x) "
                "(channels last), made outside jax.jit")
        segments = xrai_segments(np.moveaxis(np.asarray(xs), 1, -1) if p.channels_first
                                 else np.asarray(xs))
    n, k = len(xs), len(bs)
    # the baselines' copies stacked input-major (row i k + j: input i from baseline j), so a
    # batch sharded over its inputs stays sharded, each device's rows copies of its own
    # inputs; copy-major (concatenated), the maps came back replicated and every device
    # selected the regions of the whole batch
    ig = integrated_gradients(model, base.repeat_rows(xs, k), _stacked(targets, k),
                              baseline=base.stack_rows(jnp.stack(bs)), steps=steps, rule=rule,
                              batch_steps=batch_steps, reduce=None, head=head,
                              chunk_size=chunk_size, memory_budget=memory_budget,
                              precision=precision, check_finite=check_finite)
    attr = ig.reshape(n, k, *ig.shape[1:]).mean(1)
    per_target = attr.ndim == xs.ndim + 1
    axis = (2 if per_target else 1) if p.channels_first else -1
    # (the authors' regions, not checked yet, are checked against the maps there, as
    # xrai_regions checks them; given ones were checked above)
    return _select(_float32_maps(reduce_channels(attr, "max", axis=axis)), segments,
                   min_pixel_diff, area_threshold, algorithm, checked=given)


#: explain_to_file refuses a job over several inputs before any work (see job_inputs.py).
xrai.one_input = "its regions segment one image input"
