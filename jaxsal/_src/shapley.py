"""Shapley values of groups of input features: exact, and estimated from random permutations.

Shapley (1953), "A Value for n-Person Games"; Lundberg & Lee (2017), "A Unified Approach to
Interpreting Model Predictions" (SHAP: Shapley values of a model's inputs); Castro, Gómez &
Tejada (2009), "Polynomial calculation of the Shapley value based on sampling" (the
permutation estimate, Captum's ``ShapleyValueSampling``).

The players are ``M`` groups of input features: the patches of a grid over the spatial axes
(channels together), or the groups of a ``feature_mask``. A coalition ``S`` keeps the groups
in ``S`` and replaces the others by ``fill``; its value ``v(S)`` is the target's score on
that input. Group ``i``'s Shapley value is its mean marginal contribution over the orders in
which the groups can be added to the filled input::

    phi_i = sum_{S not containing i} |S|! (M - |S| - 1)! / M! * (v(S + i) - v(S))

and the values add up to ``v(all) - v(empty)`` (efficiency).

:func:`shapley_values` evaluates all ``2^M`` coalitions. Rather than storing ``v``, each
coalition's score is credited as it comes: ``S`` adds ``w(|S| - 1) v(S)`` to every group in
``S`` and subtracts ``w(|S|) v(S)`` from every group outside it (``w(s) = s! (M - s - 1)! /
M!``), which regroups the sum above term by term. :func:`shapley_value_sampling` walks ``n``
random orders per input instead: the ``j``-th prefix of an order is credited ``+v`` to the
group added last and ``-v`` to the group added next, so every evaluated prefix is a
contribution of its own and the prefixes can be batched in any grouping; where ``n`` covers
all ``M!`` orders it walks each once (numbered by their Lehmer codes), which is the exact
value. Both evaluate their
masked inputs as batched forward passes (groups of masked inputs in a ``fori_loop``, under
the memory budget), and every target's score comes from the same passes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

try:
    from jax.extend.random import threefry_2x32
except ImportError:  # a JAX without it in jax.extend
    from jax._src.prng import threefry_2x32

from jaxsal._src import base, ints
from jaxsal._src.base import ModelLike
from jaxsal._src.finite import check_scores
from jaxsal._src.occlusion import DEFAULT_PATCH, _sizes, grid_cells
from jaxsal._src.targets import Targets, resolve_predicted, run_model, score_matrix
from jaxsal._src.validate import (check_fill_ids, check_fill_score, check_flag,
                                  check_like, input_rank, is_channels_first, prepare)

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

#: The default ``max_groups`` of :func:`shapley_values`: ``2^20 - 1`` (about a million)
#: masked forward passes per input.
MAX_GROUPS = 20
#: ``max_groups`` may not exceed this (coalitions are enumerated as int32 bit sets).
_HARD_MAX_GROUPS = 30
_HIGHEST = jax.lax.Precision.HIGHEST  # the crediting sums stay float32 (no TF32, no bf16)


@dataclasses.dataclass(frozen=True)
class _Groups:
    """The players of one call: ``m`` groups, the group of every element, ``gid`` (int32
    in ``0..m-1``, in ``x``'s layout and rank with the batch and channel axes 1 or ``x``'s:
    ``(1|N, *S, 1|C)``), whether the maps keep the channel axis, and the group ids: group
    ``j`` is id ``ids[j]``, column ``ids[j]`` of the ``columns`` that ``return_groups=True``
    gives. ``gid`` and ``ids`` take no part in comparisons: the rest is part of a compiled
    program's key, they are arguments."""

    m: int
    columns: int
    shape: tuple
    channel_axis: int | None  # x's channel axis, None for (N, D) features
    channels: bool
    gid: np.ndarray = dataclasses.field(compare=False, hash=False, repr=False)
    ids: np.ndarray = dataclasses.field(compare=False, hash=False, repr=False)


def _layout(mshape: tuple, xshape: tuple, cf: bool) -> tuple:
    """The ``feature_mask`` shape ``mshape`` as a shape of ``x``'s rank that broadcasts to
    ``xshape`` (see :func:`shapley_values`), or a ``ValueError``."""
    n, one = xshape[0], tuple(xshape[1:])
    if len(xshape) == 2:  # (N, D) features
        forms = f"({one[0]},) (shared) or ({n}, {one[0]}) (one mask per input)"
        if mshape == one:
            return (1,) + one
        if len(mshape) == 2 and mshape[0] in (1, n) and mshape[1:] == one:
            return mshape
        raise ValueError(f"expected feature_mask of shape {forms}, got {mshape}")
    sp = one[1:] if cf else one[:-1]
    c = one[0] if cf else one[-1]
    full = f"(1 or {n}, {'1 or ' + str(c) + ', ' if cf else ''}" + ", ".join(map(str, sp)) + \
        ("" if cf else f", 1 or {c}") + ")"
    forms = (f"{sp} (one mask for every input, channels grouped together), "
             f"({n}, {', '.join(map(str, sp))}) (one per input), {one} (channels grouped "
             f"apart) or {full}")

    def with_channels(rows: int, ch: int) -> tuple:
        return (rows, ch) + sp if cf else (rows,) + sp + (ch,)

    if mshape == sp:
        return with_channels(1, 1)
    if len(mshape) == len(sp) + 1:
        per_input = mshape[0] in (1, n) and mshape[1:] == sp
        channels = mshape == one
        if per_input and channels:
            rows, chans = with_channels(n, 1), (1,) + one
            raise ValueError(f"feature_mask of shape {mshape} is ambiguous for x of shape "
                             f"{xshape}: one mask per input or one mask whose groups split "
                             f"the channels. Pass it with x's rank: {rows} for one per input "
                             f"(feature_mask[{':, None' if cf else '..., None'}]) or {chans} "
                             f"for one with channels (feature_mask[None])")
        if per_input:
            return with_channels(mshape[0], 1)
        if channels:
            return (1,) + one
    if len(mshape) == len(xshape) and all(d in (1, x) for d, x in zip(mshape, xshape)) \
            and all(d == s for d, s in zip(mshape[2:] if cf else mshape[1:-1], sp)):
        return mshape
    raise ValueError(f"expected feature_mask of shape {forms}; got {mshape} for x of shape "
                     f"{xshape}")


def _mask_groups(feature_mask: Any, x: Array, cf: bool, group_ids: Any = None) -> _Groups:
    """The players given by ``feature_mask``: its ids >= 0 that occur (or ``group_ids``, a
    superset of them), in increasing order, become groups ``0..M-1``. Either sharded over
    ``Explicit`` mesh axes is refused (:func:`jaxsal._src.base.refuse_explicit_tree`)."""
    base.refuse_explicit_tree(feature_mask, "feature_mask")
    base.refuse_explicit_tree(group_ids, "group_ids")
    if isinstance(feature_mask, jax.core.Tracer):
        raise TypeError("feature_mask must be a concrete array (its values fix the number of "
                        "groups, M, which sets the program's shapes); got a traced value. "
                        "Pass it from outside jax.jit")
    try:
        mask = np.asarray(feature_mask)
    except (TypeError, ValueError):
        raise TypeError(f"expected feature_mask as an integer array of group ids, got "
                        f"{type(feature_mask).__name__}") from None
    if not np.issubdtype(mask.dtype, np.integer):
        hint = (" convert it with .astype(int)"
                if np.issubdtype(mask.dtype, np.floating) and mask.size
                and np.all(np.mod(mask, 1) == 0) else
                " pass an int array (e.g. superpixel labels from skimage.segmentation.slic)")
        raise TypeError(f"expected feature_mask as an integer array of group ids, got dtype "
                        f"{mask.dtype}:{hint}")
    shape = _layout(tuple(mask.shape), tuple(x.shape), cf)
    if mask.size and mask.min() < 0:
        raise ValueError(f"expected feature_mask ids >= 0 (id j is column j of "
                         f"return_groups=True), got {int(mask.min())}; renumber them, e.g. "
                         f"np.unique(mask, return_inverse=True)[1].reshape(mask.shape)")
    if group_ids is None:
        ids, gid = np.unique(mask, return_inverse=True)  # the players: the ids that occur
    else:
        ids = _check_group_ids(group_ids, mask)
        gid = np.searchsorted(ids, mask)
    gid = gid.reshape(shape).astype(np.int32)
    axis = None if x.ndim == 2 else (1 if cf else x.ndim - 1)
    channels = axis is not None and shape[axis] > 1
    return _Groups(len(ids), int(ids[-1]) + 1, shape, axis, channels, gid,
                   ids.astype(np.int32))


def _check_group_ids(group_ids: Any, mask: np.ndarray) -> np.ndarray:
    ids = np.asarray(group_ids)
    if ids.ndim != 1 or not ids.size or not np.issubdtype(ids.dtype, np.integer) \
            or ids.min() < 0:
        raise ValueError(f"expected group_ids as a 1-D array of ids >= 0 (the groups: every id "
                         f"of feature_mask, and more), got {ids!r}")
    ids = np.unique(ids)
    missing = np.setdiff1d(np.unique(mask), ids)
    if missing.size:
        raise ValueError(f"feature_mask holds ids that group_ids lacks: {missing[:10].tolist()}"
                         f"; group_ids must list every id of the mask (and may list more)")
    return ids


def _patch_groups(patch: Any, x: Array, cf: bool) -> _Groups:
    """A non-overlapping grid of ``patch``-sized cells over the spatial axes (the features
    of an ``(N, D)`` input), numbered in row-major order; the last cell along an axis may be
    smaller."""
    features = x.ndim == 2
    size = tuple(x.shape[1:]) if features else (tuple(x.shape[2:]) if cf else
                                                tuple(x.shape[1:-1]))
    if patch is None:  # the default, at most the input's size
        patch = tuple(1 if features else min(DEFAULT_PATCH, d) for d in size)
    psize = _sizes(patch, "patch", len(size))
    for ax, (d, q) in enumerate(zip(size, psize)):
        if q > d:
            what = "the number of features" if features else f"spatial axis {ax}'s size"
            raise ValueError(f"patch {q} is larger than {what}, {d}: expected a patch of at "
                             f"most {d} along that axis (patch={d} makes the whole axis one "
                             f"group)")
    grid = grid_cells(size, psize)
    m = int(grid.max()) + 1
    if features:
        shape, axis = (1,) + size, None
    else:
        shape, axis = ((1, 1) + size, 1) if cf else ((1,) + size + (1,), x.ndim - 1)
    return _Groups(m, m, shape, axis, False, grid.reshape(shape), np.arange(m, dtype=np.int32))


def _groups(patch: Any, feature_mask: Any, x: Array, cf: bool, group_ids: Any = None
            ) -> _Groups:
    if patch is not None and feature_mask is not None:
        raise ValueError("expected patch= (a grid of cells) or feature_mask= (any groups), "
                         "got both; pass one")
    if feature_mask is not None:
        return _mask_groups(feature_mask, x, cf, group_ids)
    if group_ids is not None:
        raise ValueError("group_ids lists the ids of a feature_mask; pass it with feature_mask")
    return _patch_groups(patch, x, cf)


def _key(groups: _Groups, return_groups: bool) -> _Groups:
    """``groups`` as part of a program's key: the number of columns only matters to
    ``return_groups`` (maps of masks with other ids reuse the program)."""
    return groups if return_groups else dataclasses.replace(groups, columns=0)


def _weights(m: int) -> np.ndarray:
    """``w(s) = s! (M - s - 1)! / M! = 1 / (M * C(M - 1, s))``, ``s = 0..M-1``, float64 (the
    program casts them to its dtype: float32 rounds them as before, float64 keeps them)."""
    return np.asarray([1.0 / (m * math.comb(m - 1, s)) for s in range(m)], np.float64)


def _setup(method: Callable, model: Any, x: ArrayLike, targets: Any, patch: Any, feature_mask: Any,
           fill: ArrayLike, batch_size: Any, head: str | None, memory_budget: Any,
           check_finite: bool, return_groups: Any, group_ids: Any = None):
    """Validation shared by both methods: the prepared call, its groups, the fill,
    ``batch_size``, the forward pass's bytes per input, inputs per sub-batch (``nb``) and
    ``return_groups``. ``method``: the public method called (named in errors)."""
    name = method.__name__
    columns = None
    if isinstance(return_groups, (int, np.integer)) and not isinstance(return_groups,
                                                                        (bool, np.bool_)):
        if return_groups < 1:
            raise ValueError(f"expected return_groups as True, False or a number of columns "
                             f">= 1, got {return_groups}")
        columns, return_groups = int(return_groups), True
    return_groups = check_flag(return_groups, "return_groups")
    rank = input_rank(x)
    p = prepare(model, x, targets, head=head, check_finite=check_finite,
                spatial=rank is not None and rank != 2, allow_int=True, method=method)
    if p.x.ndim not in (2, 3, 4, 5):
        raise ValueError(f"{name} needs x as (N, D) features or with 1 to 3 spatial axes and a "
                         f"channel axis, got shape {tuple(p.x.shape)}")
    groups = _groups(patch, feature_mask, p.x, p.channels_first, group_ids)
    if columns is not None:
        if columns < groups.columns:
            raise ValueError(f"return_groups={columns} columns, but the groups need "
                             f"{groups.columns} (ids up to {groups.columns - 1}); pass at "
                             f"least {groups.columns}, or True")
        groups = dataclasses.replace(groups, columns=columns)
    fill = check_like(fill, p.x, "fill", channels_first=p.channels_first)  # token ids: an id
    check_fill_ids(p.model, fill, p.x)
    fill, batch_size, per_image, nb = base.masked_plan(p.model, p.x, fill, batch_size,
                                                       memory_budget)
    return p, groups, fill, batch_size, per_image, nb, return_groups


def s_dtype(x: Array):
    """The float dtype of coalition weights for inputs ``x`` (float32 for token ids)."""
    return jnp.promote_types(x.dtype, jnp.float32)


def _scores(m, params, xg, sp, info, ids_rep, g):
    """``(G, N, T)`` scores of ``G`` masked copies ``(G, N, ...)`` of a batch, run as one
    batch stacked input-major (:func:`base.stack_rows`; ``ids_rep``:
    ``base.repeat_rows(ids, G)``): a batch sharded over its inputs stays sharded."""
    y, cap = run_model(m, params, base.stack_rows(xg), sp.layers)
    return base.unstack_rows(score_matrix(sp, info, y, cap, ids_rep), g)


def _finish(phi: Array, gid: Array, ids: Array, groups: _Groups, class_axis: bool,
            return_groups: bool):
    """``(N, T, M)`` group values -> the maps (every element its group's value; the channel
    axis only where the groups split it) or the values by id (``groups.columns`` of them, 0
    for an id that occurs nowhere), the class axis dropped for a single target given
    without one."""
    if return_groups and groups.columns != groups.m:
        phi = jnp.zeros(phi.shape[:2] + (groups.columns,), phi.dtype).at[:, :, ids].set(phi)
    elif not return_groups:
        if not groups.channels and groups.channel_axis is not None:
            gid = jnp.take(gid, 0, axis=groups.channel_axis)
        idx = jnp.broadcast_to(gid, (phi.shape[0],) + gid.shape[1:])
        phi = jax.vmap(lambda ph, g: ph[:, g])(phi, idx)  # (N, T, *map shape)
    return phi if class_axis else phi[:, 0]


def _present(gid: Array, keep: Array) -> Array:
    """``(G, N, *gid.shape[1:])``: whether each element is kept, from ``keep`` ``(G, N, M)``
    (per masked input, per group) and the group index ``gid`` ``(1|N, ...)``."""
    g, n, _ = keep.shape
    flat = jnp.broadcast_to(gid, (n,) + gid.shape[1:]).reshape(1, n, -1)
    got = jnp.take_along_axis(keep, jnp.broadcast_to(flat, (g, n, flat.shape[-1])), axis=2)
    return got.reshape((g, n) + gid.shape[1:])


def _places(kp: Array, k: Array, index: Array, m: int, counts: Array | None = None) -> Array:
    """``(G, N, M)``: order ``k[g]`` of input ``index[n]`` as the place of each of the ``m``
    groups in it, a uniform random permutation (its inverse, the order, is one too). The
    groups are sorted by 64 random bits each, threefry's encryption under ``kp`` of the
    counter ``(index, k * m + group)``: one counter-based draw, keyed by the order and the
    input's global index (not by the batching), and one sort (ties: about ``m^2 / 2^65``).

    With ``counts`` ``(N,)``, input ``n`` has ``counts[n]`` groups of its own, numbered
    ``0..counts[n]-1`` (:func:`_own_groups`): their places are a uniform permutation of
    ``0..counts[n]-1`` drawn from the counters ``(index, k * counts[n] + group)``, so an
    input's draws depend on its own groups only, not on the other inputs of the batch (the
    positions beyond its count keep their own places)."""
    shape = (k.shape[0], index.shape[0], m)
    mult = np.uint32(m) if counts is None else counts.astype(jnp.uint32)[None, :, None]
    c0 = jnp.broadcast_to(index.astype(jnp.uint32)[None, :, None], shape)
    c1 = jnp.broadcast_to(k.astype(jnp.uint32)[:, None, None] * mult
                          + jnp.arange(m, dtype=jnp.uint32), shape)
    hi, lo = jnp.split(threefry_2x32(kp, jnp.concatenate([c0.ravel(), c1.ravel()])), 2)
    groups = jnp.broadcast_to(jnp.arange(m, dtype=jnp.int32), shape)
    if counts is None:
        return jax.lax.sort((hi.reshape(shape), lo.reshape(shape), groups), num_keys=2)[2]
    beyond = (groups >= counts[None, :, None]).astype(jnp.uint32)  # its own groups first
    return jax.lax.sort((beyond, hi.reshape(shape), lo.reshape(shape), groups),
                        num_keys=3)[3]


def _own_groups(groups: _Groups, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The groups each input has, for the sampled methods (one mask per input may lack some
    of the batch's ids): ``counts`` ``(N,)`` (``M_i``), ``local`` ``(N, M)`` (a group's
    number among the input's own, in the order of the ids) and ``present`` ``(N, M)``."""
    gid = groups.gid.reshape(groups.gid.shape[0], -1)
    present = np.zeros((gid.shape[0], groups.m), bool)
    present[np.arange(gid.shape[0])[:, None], gid] = True
    present = np.broadcast_to(present, (n, groups.m))
    local = np.maximum(np.cumsum(present, axis=1) - 1, 0).astype(np.int32)
    return present.sum(axis=1).astype(np.int32), local, np.ascontiguousarray(present)


def _to_groups(own: Array, local: Array, present: Array, absent: Any) -> Array:
    """``(G, N, M)`` values of the inputs' own groups (at their numbers ``local``) as values
    of the batch's groups, ``absent`` for the groups an input does not have."""
    got = jnp.take_along_axis(own, jnp.broadcast_to(local[None], own.shape), axis=2)
    return jnp.where(present[None], got, absent)


def _walked(counts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Which inputs :func:`shapley_value_sampling` walks every order of: ``exact`` ``(N,)``
    where the ``M_i!`` orders of an input's ``counts[i]`` own groups fit in ``n``; ``orders``
    ``(N,)`` int32, the orders each input averages over (``M_i!`` there, ``n`` elsewhere);
    and ``cap``, the most groups whose orders ``n`` covers (``cap! <= n``; at most 12, as
    ``n`` is below ``2^32``)."""
    cap = 1
    while math.factorial(cap + 1) <= n:
        cap += 1
    counts = np.asarray(counts)
    exact = counts <= cap
    table = np.asarray([math.factorial(c) for c in range(cap + 1)], np.int64)
    orders = np.where(exact, table[np.minimum(counts, cap)], min(n, 2 ** 31 - 1))
    return exact, orders.astype(np.int32), cap


def _nth_places(k: Array, counts: Array, m: int, cap: int) -> Array:
    """``(G, N, M)``: order ``k[g]`` (``0 <= k < counts[n]!``) of input ``n``'s own groups
    ``0..counts[n]-1``, in the lexicographic numbering (its Lehmer code: place ``p`` takes
    the ``d_p``-th group not yet placed, ``d_p`` the ``(counts - 1 - p)!`` digit of ``k``),
    as the place of each group, as :func:`_places` gives them (positions beyond an input's
    count keep their own places). Valid for inputs of at most ``cap`` groups (their orders
    are enumerated); ``k`` from ``0`` to ``counts! - 1`` gives every order once."""
    fact = jnp.asarray([math.factorial(i) for i in range(max(cap, 1))], jnp.int32)
    shape = (k.shape[0], counts.shape[0], m)
    pos = jnp.arange(m, dtype=jnp.int32)
    places = jnp.broadcast_to(pos, shape)
    free = jnp.broadcast_to(pos < counts[:, None], shape)  # the groups not yet placed
    rem = jnp.broadcast_to(k[:, None], shape[:2])
    for p in range(min(cap, m)):
        f = fact[jnp.clip(counts - 1 - p, 0, fact.shape[0] - 1)][None]  # (1, N)
        digit, rem = rem // f, rem % f
        pick = free & (jnp.cumsum(free, axis=2, dtype=jnp.int32) == (digit + 1)[..., None])
        places = jnp.where(pick, p, places)
        free = free & ~pick
    return places


def _endpoints(m, params, x, fill, spec, info, ids, *, empty: bool):
    """What every coalition method starts from, inside its program: the resolved targets
    ``(sp, ids)``, ``fill`` broadcast to ``x``, the scores on ``x`` (``v(all)``, ``(N, T)``)
    and, with ``empty``, those on the input filled everywhere (``v(empty)``; else ``None``)."""
    sp, ids_ = resolve_predicted(m, params, x, spec, info, ids)
    fill_b = jnp.broadcast_to(fill, x.shape)
    y, cap = run_model(m, params, x, sp.layers)
    s_full = score_matrix(sp, info, y, cap, ids_)
    if not empty:
        return sp, ids_, fill_b, s_full, None
    y, cap = run_model(m, params, fill_b, sp.layers)
    return sp, ids_, fill_b, s_full, score_matrix(sp, info, y, cap, ids_)


def _finite_rows(s: Array) -> Array:
    """``(N,)`` bool: whether each input's scores ``s`` ``(N, T)`` are all finite."""
    return jnp.isfinite(s).all(axis=1)


def _bad_scores(s: Array, valid: Array) -> Array:
    """``(N,)`` int32: how many of the scores ``s`` ``(G, N, T)`` of the valid masked copies
    (``valid`` ``(G,)``) are NaN/inf; summed over the groups inside the program (one
    reduction: the check costs one small transfer, not a pass over the maps)."""
    return jnp.sum(valid[:, None, None] & ~jnp.isfinite(s), axis=(0, 2), dtype=jnp.int32)


#: What a coalition is, in the errors of the methods that score them.
COALITIONS = "coalitions (x with the groups outside them replaced by fill)"


def check_coalitions(name: str, clean: Any, bad: Any, check_finite: bool, *, copies: int,
                     num: int, what: str = COALITIONS,
                     clean_what: str = "v(all), the score on x itself",
                     fix: str = "Check the model's outputs on such copies; another fill may "
                                "avoid them") -> None:
    """Raise :class:`jaxsal.NonFiniteMaps` for the inputs whose maps a NaN/inf score made
    NaN or infinite, as occlusion and RISE do: the score on the clean input (``clean``
    ``(N,)``: finite for every target?) or on ``bad[i]`` (``(N,)``) of input ``i``'s
    ``copies`` masked copies x ``num`` targets (``what``: their name in the error). Nothing
    with ``check_finite=False`` or under the caller's ``jax.jit`` (tracers)."""
    if not check_finite:
        return

    def count(i: int) -> str:
        of = f"{copies} {what.split(' (')[0]}" + (f" x {num} targets" if num > 1 else "")
        return f"{int(np.asarray(bad)[i])} of {of} for input {i}"

    check_scores(name, clean, bad, result="maps", clean_what=clean_what, copies=what,
                 count=count, fix=fix)


def shapley_values(model: ModelLike, x: ArrayLike, targets: Targets = None, *,
                   patch: int | tuple | None = None, feature_mask: ArrayLike | None = None,
                   fill: ArrayLike = 0.0, batch_size: int | None = None,
                   head: str | None = None, memory_budget: int | None = None,
                   precision: str | None = None, check_finite: bool = True,
                   return_groups: bool = False, max_groups: int = MAX_GROUPS) -> Array:
    """Exact Shapley values of groups of input features (Shapley, 1953; Lundberg & Lee,
    2017; Captum's ``ShapleyValues`` and ``feature_mask``).

    The players are ``M`` feature groups (``patch`` or ``feature_mask``). The value of a
    coalition ``S`` is the target's score on ``x`` with the groups outside ``S`` replaced by
    ``fill``; group ``i`` gets ``sum_{S not containing i} |S|! (M-|S|-1)! / M! * (v(S + i)
    - v(S))``, and the values add up to ``v(all) - v(empty)``, the score of ``x`` minus that
    of ``fill`` (efficiency). All ``2^M`` coalitions are evaluated: ``(2^M - 1) * N`` masked
    forward passes (and one over ``x``), batched and shared by every target, so ``T`` classes cost
    no more forward passes than one; no table of ``v`` is kept (each coalition's score is
    credited to the groups as it comes). Exact values are practical for a few to about 20
    groups (2^16 = 65,536 masked passes per input at 16); beyond, use
    :func:`jaxsal.shapley_value_sampling`.

    Args:
      model, x, targets, head, memory_budget, precision, check_finite: as in
        :func:`jaxsal.saliency`; ``x`` is ``(N, H, W, C)`` (``(N, C, H, W)`` for a
        channels-first model; signals ``(N, L, C)`` and volumes ``(N, D, H, W, C)`` alike)
        or ``(N, D)`` features. ``targets=None`` uses the predicted class of the clean input.
        One input array: for a multi-input model, wrap it with the other inputs fixed.
      patch: the groups as a non-overlapping grid of ``p`` or ``(ph, pw)`` pixels (one size
        per spatial axis; the last cell along an axis may be smaller), every channel of a
        cell together, numbered in row-major order; default 8 (at most the input's size), or
        1 for ``(N, D)`` features (one group per feature; ``patch=k``: runs of ``k``
        features). At most the input's size along every axis.
      feature_mask: the groups as an integer array of group ids, instead of ``patch``:
        ``(H, W)`` one mask for every input (each pixel's channels together, e.g. superpixel
        labels), ``(N, H, W)`` one per input, ``(H, W, C)`` to group channels apart (in
        ``x``'s layout: ``(C, H, W)`` channels-first), or with ``x``'s rank, its batch and
        channel axes 1 or ``x``'s (Captum's form, e.g. ``(1, H, W, 1)``; where ``(N, H, W)``
        and ``(H, W, C)`` are the same shape it is required); for ``(N, D)`` features
        ``(D,)`` or ``(N, D)``. Ids are integers >= 0 (id ``j`` is column ``j`` of
        ``return_groups``, as in Captum), not necessarily contiguous: the ``M`` ids that
        occur are the groups (an id that occurs nowhere costs nothing and gets the value 0;
        an id absent from one input's mask, of a mask per input, is a group that changes
        nothing there: its value is 0 too). Elements with the same id form one group
        wherever they are.
      fill: what an absent group is replaced by, in ``x``'s layout: a scalar, ``(C,)``,
        ``(H, W, C)`` or ``(N, H, W, C)`` (e.g. a blurred copy of ``x``; Captum's
        ``baselines``); for features a scalar, ``(D,)`` (e.g. the training means) or
        ``(N, D)``.
      batch_size: masked inputs per forward pass (default: from ``memory_budget``).
      return_groups: ``False`` (default): maps, every element carrying its group's value
        (Captum's convention); ``True``: the group values themselves, ``(N, T, K)``
        (``(N, K)``), column ``j`` for id ``j`` of ``feature_mask`` (``K`` its largest id
        plus one) or the ``j``-th cell of the ``patch`` grid in row-major order
        (``K = M``); an int ``K`` (at least that): that many columns, 0 for ids that do not
        occur (:func:`jaxsal.explain_to_file` passes the largest id of all the inputs'
        masks plus one, so that every chunk of one mask per input has the same width).
      max_groups: refuse more groups than this (default 20): the cost doubles with every
        group. At most 30.
    Returns:
      Raw maps ``(N, H, W)`` or ``(N, T, H, W)`` (``(N, D)`` / ``(N, T, D)`` for features;
      with channels, in ``x``'s layout, when ``feature_mask`` groups them apart), or the
      group values ``(N, K)`` / ``(N, T, K)`` (``return_groups=True``).

    Example::

        phi = jaxsal.shapley_values(model, x, [3, 5], patch=7)  # 28x28: 16 groups
        sp = jaxsal.shapley_values(model, x, 3, feature_mask=superpixels, fill=blurred,
                                   return_groups=True)  # (N, K)
    """
    max_groups = ints.check_int(max_groups, "max_groups", high=_HARD_MAX_GROUPS,
                                kind="groups played out exactly, 2^M coalitions")
    p, groups, fill, batch_size, per_image, nb, return_groups = _setup(
        shapley_values, model, x, targets, patch, feature_mask, fill, batch_size, head,
        memory_budget, check_finite, return_groups)
    m_groups = groups.m
    if m_groups > max_groups:
        more = (f", or pass max_groups={m_groups} if that many passes is what you want"
                if m_groups <= _HARD_MAX_GROUPS else "")
        raise ValueError(
            f"shapley_values: {m_groups} feature groups is more than max_groups={max_groups}: "
            f"the exact values cost 2^M - 1 = {2 ** m_groups - 1:,} masked forward passes per "
            f"input. Use jaxsal.shapley_value_sampling (n random orders, n * (M - 1) passes "
            f"per input) or fewer groups (a larger patch, a coarser feature_mask){more}")
    total = 2 ** m_groups - 1  # every coalition but the full one, whose score is x's own
    group = base.masked_chunk(total, per_image, nb, batch_size, memory_budget)
    m, spec, info = p.model, p.spec, p.info
    weights = _weights(m_groups)

    def build():
        def run(params, x, ids, fill, gid, cols):
            sp, ids_, fill_b, s_full, _ = _endpoints(m, params, x, fill, spec, info, ids,
                                                     empty=False)  # s_full: (N, T)
            w = jnp.asarray(weights, s_dtype(x))  # (M,) float64 -> the compute dtype
            ids_rep = base.repeat_rows(ids_, group)
            bit = jnp.arange(m_groups, dtype=jnp.int32)

            def credit(ks, valid):  # coalitions ks (G,), as bit sets of the groups kept
                keep = ((ks[:, None] >> bit) & 1).astype(bool)  # (G, M)
                size = keep.sum(axis=1, dtype=jnp.int32)[:, None]
                coef = jnp.where(keep, w[jnp.maximum(size - 1, 0)],
                                 -w[jnp.minimum(size, m_groups - 1)])
                coef = jnp.where(valid[:, None], coef, 0.0).astype(s_dtype(x))
                present = jnp.take(keep, gid, axis=1)  # (G, 1|N, ...)
                xo = jnp.where(present, x[None], fill_b[None])
                s = _scores(m, params, xo, sp, info, ids_rep, group)
                # v(S) - v(all): the credits of a constant cancel; centred, the sums keep
                # the differences' digits
                return (jnp.einsum("gnt,gm->ntm", s - s_full[None], coef, precision=_HIGHEST),
                        _bad_scores(s, valid))

            phi, bad = base.sum_groups(credit, total, group)
            return (_finish(phi, gid, cols, groups, spec.class_axis, return_groups),
                    _finite_rows(s_full), bad)

        return run

    key = ("shapley_values", p.key, spec, info, base.shape_key(p.x), _key(groups, return_groups),
           group, nb, return_groups)
    maps, clean, bad = base.compiled(key, lambda: base.split_batch(build(), nb, maybe=(3, 4)),
                                     precision, forward_only=True)(
        p.params, p.x, p.ids, fill, jnp.asarray(groups.gid), jnp.asarray(groups.ids))
    check_fill_score("shapley_values", p, fill, maps, check_finite)
    check_coalitions("shapley_values", clean, bad, check_finite, copies=total, num=spec.num)
    return maps


def shapley_value_sampling(model: ModelLike, x: ArrayLike, targets: Targets = None, *,
                           key: jax.Array | int | None = None, n: int = 25,
                           patch: int | tuple | None = None,
                           feature_mask: ArrayLike | None = None, fill: ArrayLike = 0.0,
                           batch_size: int | None = None, head: str | None = None,
                           memory_budget: int | None = None, precision: str | None = None,
                           check_finite: bool = True, return_groups: bool = False,
                           index_offset: int = 0, group_ids: ArrayLike | None = None) -> Array:
    """Shapley values of groups of input features estimated from random orders (Castro, Gómez
    & Tejada, 2009; Shapley, 1953; Captum's ``ShapleyValueSampling``).

    The players, coalitions and values are those of :func:`jaxsal.shapley_values`. For each
    of ``n`` random orders of the ``M`` groups, drawn per input, the groups are put back one
    at a time into the filled input, in that order, and each is credited with the change of
    the score it brings; the estimate is the mean over the orders. Every order's credits add
    up to ``v(all) - v(empty)`` (efficiency holds for every estimate, not only on average),
    and the estimate converges to the exact values, its error falling as ``1/sqrt(n)``.
    Where ``n >= M!`` nothing is drawn: each of the ``M!`` orders is walked once (weight
    ``1/M!``), which gives the exact values of :func:`jaxsal.shapley_values`, the same for
    every key (``n`` random orders would repeat some and miss others), in ``M! * (M - 1)``
    passes per input. With one ``feature_mask`` per input this holds input by input: an
    input whose ``M_i!`` orders of its own groups fit in ``n`` walks them, the others draw
    ``n``. Costs ``n * (M - 1) * N`` masked forward passes (and one over ``x``, one over the
    fill), batched and shared by every target: any number of groups, e.g. one per pixel or
    superpixels.

    Args:
      model, x, targets, patch, feature_mask, fill, batch_size, head, memory_budget,
        precision, check_finite, return_groups: as in :func:`jaxsal.shapley_values`.
      key: a ``jax.random`` key or an int seed (required: the same key gives the same
        values).
      n: random orders per input (Captum's ``n_samples``, default 25); at least ``M!``:
        every order, once (above).
      index_offset: the position of ``x[0]`` in a larger batch: order ``k`` of input ``i``
        is keyed by ``(k, index_offset + i)``, so rows ``a:b`` of one call over all of ``x``
        equal a call on ``x[a:b]`` with ``index_offset=a`` (:func:`jaxsal.explain_to_file`
        passes it), whatever the batching.
      group_ids: with one ``feature_mask`` per input, the ids that are groups (every id of
        the masks, and possibly more, which get 0): each input draws over its own ids
        whatever they are, so the values do not change, but the number of groups ``M``
        shapes the program; :func:`jaxsal.explain_to_file` passes the ids of all the job's
        masks, so that chunks whose masks hold fewer ids reuse one compiled program.
    Returns:
      Raw maps ``(N, H, W)`` or ``(N, T, H, W)`` (``(N, D)`` / ``(N, T, D)`` for features;
      with channels when ``feature_mask`` groups them apart), or the group values
      ``(N, K)`` / ``(N, T, K)`` (``return_groups=True``).

    Example::

        phi = jaxsal.shapley_value_sampling(model, x, 3, key=0, n=50, patch=4)
    """
    key = base.check_key(key, "shapley_value_sampling")
    index_offset = base.check_index_offset(index_offset)
    n_orders = base.check_n(n, "random orders")
    p, groups, fill, batch_size, per_image, nb, return_groups = _setup(
        shapley_value_sampling, model, x, targets, patch, feature_mask, fill, batch_size,
        head, memory_budget, check_finite, return_groups, group_ids)
    m_groups = groups.m
    if n_orders * m_groups >= 2 ** 32:
        raise ValueError(f"expected n * M below 2^32 (the orders are drawn from the counters "
                         f"order * M + group), got n = {n_orders} orders of M = {m_groups} "
                         f"groups; pass a smaller n (or fewer groups)")
    steps = m_groups - 1  # prefixes evaluated per order: 1 .. M-1 groups put back
    own = _own_groups(groups, p.n)
    # (N,) the inputs whose M_i! orders fit in n walk each once (known here: passed, not
    # closed over, split with the inputs); where every input's do (M! <= n), M! orders in all
    exact, orders, cap = _walked(own[0], n_orders)
    every = m_groups <= cap
    # only inputs with fewer own groups than M can walk where not every one does: one mask
    # per input, or group_ids beyond the mask's ids (keyed: the program is shared otherwise)
    walk = cap > 1 and (every or groups.shape[0] > 1 or group_ids is not None)
    walks = math.factorial(m_groups) if every else n_orders
    total = walks * steps
    group = base.masked_chunk(max(total, 1), per_image, nb, batch_size, memory_budget)
    m, spec, info = p.model, p.spec, p.info

    def build():
        def run(params, x, ids, fill, gid, key, index, cols, counts, local, has, exact,
                orders):
            sp, ids_, fill_b, s_full, s_empty = _endpoints(  # v(all) (N, T), v(empty)
                m, params, x, fill, spec, info, ids, empty=True)
            gain = s_full - s_empty
            clean = _finite_rows(s_full)
            bad_empty = jnp.sum(~jnp.isfinite(s_empty), axis=1, dtype=jnp.int32)  # (N,)
            if steps == 0:  # one group: every order credits it with v(all) - v(empty)
                phi = gain[:, :, None]
                return (_finish(phi, gid, cols, groups, spec.class_axis, return_groups),
                        clean, bad_empty)
            ids_rep = base.repeat_rows(ids_, group)

            kp = jax.random.bits(key, (2,), jnp.uint32)  # the orders' threefry key

            def credit(ts, valid):  # items ts (G,): order k, its prefix of j groups
                k, j = ts // steps, ts % steps + 1
                # an input's own groups in a random order, or its k-th where its orders are
                # walked (orders k beyond its M_i! weigh 0); the batch's groups it lacks
                # come after every prefix (place M): their credits are 0
                places = _nth_places(k, counts, m_groups, cap) if walk else None
                if not every:
                    drawn = _places(kp, k, index, m_groups, counts)
                    places = drawn if places is None else \
                        jnp.where(exact[None, :, None], places, drawn)
                rank = _to_groups(places, local, has, m_groups)
                j = j[:, None, None]
                present = _present(gid, rank < j)  # (G, N, ...): the first j groups kept
                xo = jnp.where(present, x[None], fill_b[None])
                s = _scores(m, params, xo, sp, info, ids_rep, group) - s_empty[None]
                # the prefix's score, v - v(empty), goes to the group put back last (+) and to
                # the next one (-); the last prefix also credits v(all) - v(empty) to the
                # last group: every order's credits telescope to v(all) - v(empty)
                ok = (valid[:, None, None] & (k[:, None] < orders[None])[..., None]
                      ).astype(s_dtype(x))
                nxt = (rank == j).astype(ok.dtype) * ok  # (G, N, M) one-hot
                step = (rank == j - 1).astype(ok.dtype) * ok - nxt
                out = jnp.einsum("gnt,gnm->ntm", s, step, precision=_HIGHEST)
                end = jnp.where(j == steps, nxt, 0.0).sum(axis=0)  # (N, M)
                return out + gain[:, :, None] * end[:, None, :], _bad_scores(s, valid)

            phi, bad = base.sum_groups(credit, total, group)
            phi = phi / orders[:, None, None].astype(s_dtype(x))
            return (_finish(phi, gid, cols, groups, spec.class_axis, return_groups), clean,
                    bad + bad_empty)

        return run

    ck = ("shapley_value_sampling", p.key, spec, info, base.shape_key(p.x),
          _key(groups, return_groups), n_orders, walk, group, nb, return_groups)
    maps, clean, bad = base.compiled(ck, lambda: base.split_batch(
        build(), nb, (1, 2, 6, 8, 9, 10, 11, 12), (3, 4)), precision, forward_only=True)(
        p.params, p.x, p.ids, fill, jnp.asarray(groups.gid), key,
        base.input_indices(index_offset, p.n), jnp.asarray(groups.ids),
        *map(jnp.asarray, own + (exact, orders)))
    check_fill_score("shapley_value_sampling", p, fill, maps, check_finite)
    check_coalitions("shapley_value_sampling", clean, bad, check_finite, copies=total + 1,
                     num=spec.num)  # (the orders' prefixes and the empty coalition)
    return maps


def _per_input_mask(model: Any, shape: tuple, options: dict) -> tuple[str, ...]:
    """For :func:`jaxsal.explain_to_file`: ``("feature_mask",)`` when it holds one mask per
    input in the ``(N, *spatial)`` form, which has one axis fewer than the inputs (a mask of
    the inputs' rank with ``N`` rows is sliced by the general rule)."""
    mask = options.get("feature_mask")
    if mask is None or not hasattr(mask, "shape") and not isinstance(mask, (list, tuple)):
        return ()
    mshape = tuple(np.shape(mask))
    if len(mshape) != len(shape) - 1 or len(shape) < 3:
        return ()
    cf = is_channels_first(base.as_model(model), len(shape))
    try:
        canon = _layout(mshape, tuple(shape), cf)
    except ValueError:
        return ()  # the method refuses it, naming the chunk
    return ("feature_mask",) if canon[0] == shape[0] > 1 else ()


def _job_mask(model: Any, shape: tuple, options: dict) -> np.ndarray | None:
    """The job's masks when they are one per input and valid ids (integers >= 0), else
    ``None`` (a shared mask needs nothing fixed; the method refuses invalid ones)."""
    if not _per_input_mask(model, shape, options):
        return None
    mask = np.asarray(options["feature_mask"])
    ok = mask.size and np.issubdtype(mask.dtype, np.integer) and mask.min() >= 0
    return mask if ok else None


def _sampled_job_options(model: Any, shape: tuple, options: dict) -> dict:
    """:func:`_job_options`, and for the sampled methods (each input draws over its own
    groups) with one mask per input the ids of the whole job as ``group_ids``: every chunk
    then has the job's number of groups and one program serves them all."""
    options = _job_options(model, shape, options)
    mask = _job_mask(model, shape, options) if options.get("group_ids") is None else None
    return options if mask is None else {**options, "group_ids": np.unique(mask)}


def _job_options(model: Any, shape: tuple, options: dict) -> dict:
    """For :func:`jaxsal.explain_to_file`: with one mask per input and
    ``return_groups=True``, the number of columns of the whole job (a chunk whose masks lack
    the largest id would give fewer)."""
    mask = _job_mask(model, shape, options) if options.get("return_groups") is True else None
    return options if mask is None else {**options, "return_groups": int(mask.max()) + 1}


#: explain_to_file slices an ``(N, H, W)`` feature_mask with the inputs (see job_inputs.py) and,
#: for ``return_groups=True``, fixes the number of columns of the whole job; it refuses a job
#: over several inputs before any work (``one_input``).
for _f in (shapley_values, shapley_value_sampling):
    _f.per_input_options = _per_input_mask
    _f.one_input = "its feature groups would need a rule across inputs"
    _f.job_options = _job_options
shapley_value_sampling.job_options = _sampled_job_options
