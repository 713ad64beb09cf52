"""Deletion and insertion curves: how faithful a map is to the model (Petsiuk, Das & Saenko,
2018, "RISE", section 4.1; Samek et al., 2017, "Evaluating the visualization of what a deep
neural network has learned", MoRF/LeRF).

A map orders the input's positions (pixels, or single values for a map with ``x``'s shape).
*Deletion* replaces them by ``fill`` in that order, most relevant first, and follows the
target's score: a faithful map makes it fall fast (a low area under the curve). *Insertion*
starts from ``baseline`` and puts ``x``'s values back in the same order: a faithful map makes
it rise fast (a high area). ``steps + 1`` points, point ``k`` changing ``round(k P / steps)``
of the ``P`` positions (cells with ``patch=``); the areas are taken over those fractions.

Every (target, step) pair is one masked input; they run as batched forward passes (groups of
pairs ``vmap``-free, in the batch axis, in a ``fori_loop``), each target's curve following its
own map's order. Cost: ``T (steps + 1)`` forward passes per input.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import base
from jaxsal._src.base import ModelLike
from jaxsal._src.finite import check_scores
from jaxsal._src.occlusion import _sizes, grid_cells
from jaxsal._src.targets import Targets, resolve_predicted, run_model, score_matrix
from jaxsal._src.validate import (check_fill_ids, check_like, check_maps, input_rank,
                                  input_spatial_shape, peak_exponent, prepare, times_pow2)

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

ORDERS = ("most", "least")


class Curves(NamedTuple):
    """Perturbation curves (a pytree: ``jax.tree_util`` and ``np.savez(**c._asdict())`` work).

    Attributes:
      fractions: ``(steps + 1,)`` the fraction of positions (cells with ``patch=``)
        changed at each point, ``round(k P / steps) / P`` (``k / steps`` where ``steps``
        divides ``P``).
      scores: ``(N, steps + 1)``, or ``(N, T, steps + 1)`` with a class axis: the target's
        score at each point.
      auc: ``(N,)`` / ``(N, T)``: the area under each curve over the fractions (trapezoid
        rule; a constant score ``s`` has area ``s``).
    """

    fractions: Array
    scores: Array
    auc: Array


def curve_area(scores: Any, fractions: Any = None) -> Any:
    """The area under curves ``(..., steps + 1)`` over ``[0, 1]`` by the trapezoidal rule:
    ``Curves.auc``. ``fractions``: the points' abscissae (:func:`curve_fractions`); default
    equally spaced."""
    steps = scores.shape[-1] - 1
    if fractions is None:
        return (scores[..., 1:] + scores[..., :-1]).sum(-1) / (2 * steps)
    dx = np.diff(np.asarray(fractions, np.float64)).astype(np.float32)
    return ((scores[..., 1:] + scores[..., :-1]) * dx).sum(-1) / 2


def _counts(positions: int, steps: int) -> np.ndarray:
    """How many of the ``positions`` each of the ``steps + 1`` points changes."""
    return np.round(np.arange(steps + 1) * positions / steps).astype(np.int32)


def map_positions(map_shape: tuple, patch: Any = None) -> tuple[np.ndarray | None, int]:
    """``(cells, P)``: what a map of ``map_shape`` (one input's, one target's) orders, its
    values (``cells`` ``None``) or the cells of a ``patch`` grid (each value's cell number),
    and how many there are."""
    if patch is None:
        return None, int(np.prod(map_shape))
    psize = _sizes(patch, "patch", len(map_shape))
    for ax, (d, q) in enumerate(zip(map_shape, psize)):
        if q > d:  # as occlusion and the Shapley methods
            raise ValueError(f"patch {q} is larger than axis {ax} of the maps, {d}: expected a "
                             f"patch of at most {d} along that axis (patch={d} makes the whole "
                             "axis one cell)")
    cells = grid_cells(tuple(map_shape), psize)
    return cells, int(cells.max()) + 1


def curve_fractions(positions: int, steps: int) -> np.ndarray:
    """``(steps + 1,)``: the fraction of ``positions`` changed at each point of a deletion
    or insertion curve (``Curves.fractions``)."""
    return (_counts(positions, steps) / positions).astype(np.float32)


#: Points after the first by default (at most one per position).
DEFAULT_STEPS = 100


def _check_steps(steps: Any, positions: int, unit: str = "position") -> int:
    steps = base.check_count(steps, "steps")
    if steps is None:
        return min(DEFAULT_STEPS, positions)
    if steps > positions:
        raise ValueError(f"steps={steps} is more than the map's {positions} {unit}s; expected "
                         f"at most {positions} (steps={positions} changes one {unit} per "
                         "step)")
    return steps


def deletion(model: ModelLike, x: ArrayLike, maps: ArrayLike, targets: Targets = None, *,
             steps: int | None = None, fill: ArrayLike = 0.0, order: str = "most",
             patch: int | tuple | None = None,
             batch_size: int | None = None, head: str | None = None,
             memory_budget: int | None = None, precision: str | None = None,
             check_finite: bool = True) -> Curves:
    """The deletion curve of each map: the target's score as ``x``'s positions are replaced
    by ``fill``, most relevant first (RISE's deletion metric; Samek et al.'s MoRF curve).
    Lower areas are better.

    Args:
      model, x, targets, head, memory_budget, precision, check_finite: as in
        :func:`jaxsal.occlusion` (one input array: images, signals, volumes, ``(N, D)``
        features, or token ids with an id as ``fill``). ``targets`` must be those the maps
        explain: its class axis decides the maps' (``targets=None``: the predicted class).
        RISE's curves read probabilities: a ``softmax`` head. A score that is NaN/inf makes
        its curve's area not finite (NaN or +-inf: a score of -inf, the log of a deleted 0,
        gives -inf): with ``check_finite`` (the default) such curves raise
        :class:`jaxsal.NonFiniteMaps` naming the inputs, saying whether the clean input's
        score (``x`` itself, the first point) or some deleted copies' are not finite (the
        scores are counted in the program: one small transfer). Nothing is checked under
        the caller's ``jax.jit``, nor with ``check_finite=False``: the curves come back as
        computed.
      maps: ``(N, *S)`` or ``(N, T, *S)`` with a class axis: one value per position
        (``S``: the spatial shape ``(H, W)``; a position's channels change together), or
        ``x``'s own shape per map, ``(N, [T,] H, W, C)``: one value per scalar, each changed
        alone. ``jaxsal.resize`` brings a low-resolution CAM to the input's size.
      steps: points after the first (default 100, at most the ``P`` positions):
        ``round(k P / steps)`` positions are changed at point ``k``. Ties keep their
        raster order (first position first).
      fill: what a deleted position becomes, in ``x``'s layout (a scalar, ``(C,)``,
        ``(H, W, C)`` or ``(N, H, W, C)``, e.g. a blurred copy of ``x``); RISE: 0.
      order: ``"most"`` (most relevant first, the default) or ``"least"`` (least relevant
        first: Samek et al.'s LeRF; a faithful map keeps the score high).
      patch: change the input by cells of ``patch`` positions per spatial axis (an int or
        one per axis; a non-overlapping grid, the last cell of an axis may be smaller),
        ranked by the sum of the map over the cell (a grid form of Samek et al.'s 9 x 9
        regions, which are windows around the most relevant pixels in turn);
        the steps then count cells. Maps of positions only (not of ``x``'s own shape).
      batch_size: masked inputs per forward pass (default: from ``memory_budget``).
    Returns:
      :class:`Curves` ``(fractions, scores, auc)``.

    Example::

        maps = jaxsal.saliency(m, x, targets=[3, 5])          # (N, 2, H, W)
        c = jaxsal.deletion(m.with_head("softmax"), x, maps, targets=[3, 5])
        c.auc                                                  # (N, 2)
    """
    return _curves(model, x, maps, targets, steps, fill, order, patch, batch_size, head,
                   memory_budget, precision, check_finite, insert=False)


def insertion(model: ModelLike, x: ArrayLike, maps: ArrayLike, targets: Targets = None, *,
              steps: int | None = None, baseline: ArrayLike = 0.0, order: str = "most",
              patch: int | tuple | None = None,
              batch_size: int | None = None, head: str | None = None,
              memory_budget: int | None = None, precision: str | None = None,
              check_finite: bool = True) -> Curves:
    """The insertion curve of each map: the target's score as ``x``'s positions are put
    into ``baseline``, most relevant first (RISE's insertion metric, whose baseline is a
    blurred copy of ``x``). Higher areas are better.

    Args:
      baseline: the input the curve starts from, in ``x``'s layout (a scalar, ``(C,)``,
        ``(H, W, C)`` or ``(N, H, W, C)``), e.g. a blurred copy,
        ``jax.vmap(lambda im: jaxsal.gaussian_blur(im, 5.0))(x)`` (default 0).
      model, x, maps, targets, steps, order, patch, batch_size, head, memory_budget,
        precision, check_finite: as in :func:`jaxsal.deletion` (the clean input, ``x``
        itself, is the curve's last point).
    Returns:
      :class:`Curves` ``(fractions, scores, auc)``.
    """
    return _curves(model, x, maps, targets, steps, baseline, order, patch, batch_size, head,
                   memory_budget, precision, check_finite, insert=True)


def _curves(model, x, maps, targets, steps, other, order, patch, batch_size, head,
            memory_budget, precision, check_finite, *, insert: bool) -> Curves:
    what = "insertion" if insert else "deletion"
    name = "baseline" if insert else "fill"
    if order not in ORDERS:
        raise ValueError(f"{what}: unknown order {order!r}; expected one of {ORDERS}")
    p = prepare(model, x, targets, head=head, check_finite=check_finite,
                spatial=input_rank(x) != 2, allow_int=True,
                method=insertion if insert else deletion)
    if p.x.ndim not in (2, 3, 4, 5):
        raise ValueError(f"{what} needs x as (N, D) features, token ids (N, L) or with 1 to 3 "
                         f"spatial axes and a channel axis, got shape {tuple(p.x.shape)}")
    features = p.x.ndim == 2
    size = input_spatial_shape(p.x, p.channels_first) if not features else p.x.shape[1:]
    mp, whole = check_maps(maps, p, size, what, scale_to=100,  # (their order only)
                           keep_int=True)
    if patch is not None:
        if whole and tuple(mp.shape[2:]) != tuple(size):
            raise ValueError(f"{what}: patch= groups the positions of maps of shape "
                             f"{tuple(size)} (channels together); got maps of x's own shape "
                             f"{tuple(mp.shape[2:])}. Reduce the channels first (e.g. "
                             "jaxsal.reduce_channels(maps, 'sum'), or reduce='sum' on the "
                             "method that made them) or drop patch=")
    cells, positions = map_positions(tuple(mp.shape[2:]), patch)
    steps = _check_steps(steps, positions, "position" if cells is None else "cell")
    other = check_like(other, p.x, name, channels_first=p.channels_first,
                       result="the curves' scores")
    check_fill_ids(p.model, other, p.x, name)
    other, batch_size, per_image, nb = base.masked_plan(p.model, p.x, other, batch_size,
                                                        memory_budget)
    num = p.spec.num
    total = num * (steps + 1)
    group = base.masked_chunk(total, per_image, nb, batch_size, memory_budget)
    counts = _counts(positions, steps)
    m, spec, info, cf = p.model, p.spec, p.info, p.channels_first
    # where a position's mask goes in x's layout: the channel axis is 1 (added) unless the
    # maps have x's own shape (or x has no channel axis: features, token ids (N, L); raw
    # integer images (N, H, W, C) keep theirs)
    channel = None if whole or features else (1 if cf else p.x.ndim - 1)
    most = order == "most"

    def build():
        def run(params, x, ids, maps, other):
            n = x.shape[0]
            sp, ids_ = resolve_predicted(m, params, x, spec, info, ids)
            # float32, or float64 as given, or ints as given (check_maps): ranked exactly
            flat = maps.reshape(n, num, -1)
            if cells is not None and jnp.issubdtype(flat.dtype, jnp.integer):
                # their cell sums in the widest float: float64 under x64 (exact for int32
                # maps), float32 otherwise (exact below 2**24 only)
                flat = flat.astype(jax.dtypes.canonicalize_dtype(jnp.float64))
            if cells is not None:  # each cell's sum, (N, T, M)
                # maps huge but in float32's range (1e38): sums beyond it were inf (NaN
                # for inf - inf), ordered at random; such a map is scaled by a power of two
                # (exact) to a peak below 2**100 first, as check_maps scales float64 ones
                e = peak_exponent(flat, 2)[..., None]
                flat = times_pow2(flat, jnp.where(e > 100, 100 - e, 0))
                gid = jnp.asarray(cells.ravel())
                flat = jax.ops.segment_sum(jnp.moveaxis(flat, -1, 0), gid, positions)
                flat = jnp.moveaxis(flat, 0, -1)
            # each position's (cell's) place in the order: most relevant first, ties in
            # raster order (the first one first); "least" is that order reversed, ties
            # included, so that deletion with "least" is insertion backwards
            # (ints reversed by ~v = -v - 1: -v would wrap the smallest int onto itself)
            neg = ~flat if jnp.issubdtype(flat.dtype, jnp.integer) else -flat
            rank = jnp.argsort(jnp.argsort(neg, axis=-1, stable=True), axis=-1)
            if not most:
                rank = flat.shape[-1] - 1 - rank
            if cells is not None:  # back to the positions: each its cell's place
                rank = rank[..., jnp.asarray(cells.ravel())]
            rank = rank.reshape(maps.shape).astype(jnp.int32)
            other_b = jnp.broadcast_to(other, x.shape)
            first, then = (other_b, x) if not insert else (x, other_b)
            ids_rep = base.repeat_rows(ids_, group)
            cnt = jnp.asarray(counts)

            def point(ks):  # (G,) pair indices -> (N, G) scores
                t, k = ks // (steps + 1), ks % (steps + 1)
                r = rank[:, t]  # (N, G, *R)
                changed = r < cnt[k].reshape((1, -1) + (1,) * (r.ndim - 2))
                if channel is not None:
                    changed = jnp.expand_dims(changed, channel + 1)
                # (N G, ...) input-major (base.stack_rows' order): a batch sharded over its
                # inputs stays sharded
                xm = jnp.where(changed, first[:, None], then[:, None])
                y, cap = run_model(m, params, xm.reshape((-1,) + x.shape[1:]), sp.layers)
                s = score_matrix(sp, info, y, cap, ids_rep).reshape(n, group, num)
                return jnp.take_along_axis(s, t[None, :, None], axis=2)[..., 0]  # (N, G)

            curve = base.map_chunks(point, total, group)  # (N, T (steps + 1))
            curve = curve.reshape(n, num, steps + 1)
            # non-finite scores, counted here (the check is one small transfer): whether the
            # clean input's (x itself: deletion's first point, insertion's last) are finite,
            # how many are not, and the first point with one
            finite = jnp.isfinite(curve)
            clean = finite[..., steps if insert else 0].all(axis=1)
            bad = jnp.sum(~finite, axis=(1, 2), dtype=jnp.int32)
            first_bad = jnp.argmax(~finite.all(axis=1), axis=-1).astype(jnp.int32)
            return curve, clean, bad, first_bad

        return run

    key = (what, p.key, spec, info, base.shape_key(p.x), tuple(mp.shape[2:]), steps, order,
           group, nb, None if cells is None else cells.tobytes())
    scores, clean, bad, first_bad = base.compiled(
        key, lambda: base.split_batch(build(), nb, (1, 2, 3), (4,)), precision,
        forward_only=True)(p.params, p.x, p.ids, mp, other)
    fractions = curve_fractions(positions, steps)
    if check_finite:  # (not under the caller's jit: tracers)
        unit = "position" if cells is None else "cell"

        def count(i: int) -> str:
            k = int(np.asarray(first_bad)[i])
            done = (f"{counts[k]} of the {positions} {unit}s "
                    + (f"inserted into the {name}" if insert else f"replaced by the {name}"))
            of = (f"{num * (steps + 1)} scores ({num} targets x {steps + 1} points)"
                  if num > 1 else f"{steps + 1} points")
            return (f"{int(np.asarray(bad)[i])} of {of} for input {i}, the first at point "
                    f"{k}: {done}")

        check_scores(what, clean, bad, result="curves",
                     clean_what=f"x itself, the curve's {'last' if insert else 'first'} "
                                "point", copies=f"{'inserted' if insert else 'deleted'} copies",
                     count=count, fix=f"Check the model's outputs on such copies; another "
                                      f"{name} may avoid it")
    auc = curve_area(scores, fractions)
    fractions = jnp.asarray(fractions)
    if not spec.class_axis:
        scores, auc = scores[:, 0], auc[:, 0]
    return Curves(fractions, scores, auc)


#: A model's several inputs are refused, saying why (see validate.one_input_error).
deletion.one_input = "it removes the positions of one input in the order of its map"
insertion.one_input = "it inserts the positions of one input in the order of its map"
