"""Occlusion sensitivity (Zeiler & Fergus, 2014, "Visualizing and Understanding Convolutional
Networks").

A ``patch`` is slid over the image with ``stride``; at each position the patch (all
channels) is replaced by ``fill`` and the model re-run. The map at a pixel is the mean, over
the patch positions covering it, of ``S(x) - S(x occluded)``: positive where hiding the
pixel lowers the score. All patch positions are evaluated as batched forward passes (groups
of positions ``vmap``-ed into one batch, groups in a ``fori_loop``), and every target's
score comes from the same forward passes.

``(N, D)`` feature inputs are occluded feature by feature (feature ablation); the inputs of
a multi-input model are occluded one at a time, the others unchanged, in the same program.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import base, ints
from jaxsal._src.base import Inputs, Maps, ModelLike
from jaxsal._src.finite import NonFiniteMaps, listed
from jaxsal._src.targets import Targets, resolve_predicted, run_model, score_matrix
from jaxsal._src.validate import (check_fill_ids, check_like, input_rank, prepare,
                                  spatial_shape)

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def _sizes(v, name: str, rank: int, what: str = "x") -> tuple[int, ...]:
    """``v`` as ``rank`` positive ints (an int is repeated; a tuple, list or 1-D integer
    array gives one per axis); ``what``: the input they are for, named in the error."""
    t = tuple(v) if ints.per_axis(v) else (v,) * rank
    if len(t) != rank or not all((ints.as_int(i) or 0) >= 1 for i in t):
        several = ("" if what == "x" else "; with several inputs a dict by input name or a "
                   "list in the model's input order (for x in any container) gives each "
                   "input its own, another value serves every input")
        raise ValueError(f"expected {name} for {what} as a positive int or {rank} of them "
                         f"(one per spatial axis), got {v!r}{several}")
    return tuple(ints.as_int(i) for i in t)


def _one_or_all(v: tuple[int, ...]) -> int | tuple[int, ...]:
    """Sizes per axis as an option is written: one int where they are equal, else the
    tuple."""
    return v[0] if len(set(v)) == 1 else tuple(v)


def grid_cells(size: tuple, psize: tuple) -> np.ndarray:
    """The cell of every position of ``size``: a non-overlapping grid of ``psize``-sized
    cells numbered in row-major order (the last cell along an axis may be smaller)."""
    idx = [np.arange(d) // q for d, q in zip(size, psize)]
    counts = [-(-d // q) for d, q in zip(size, psize)]
    return np.ravel_multi_index(np.meshgrid(*idx, indexing="ij"), counts).astype(np.int32)


def patch_positions(size: int, patch: int, stride: int) -> np.ndarray:
    """Start offsets along one axis; the last patch is aligned to the border so that every
    pixel is covered."""
    if patch > size:
        raise ValueError(f"patch {patch} is larger than the input's side {size}")
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return np.asarray(starts, np.int32)


#: The default ``patch`` of spatial inputs (pixels per side); ``(N, D)`` feature inputs
#: default to 1 (one feature at a time: feature ablation).
DEFAULT_PATCH = 8


@dataclasses.dataclass(frozen=True)
class _Plan:
    """The patches of one input: its positions' sizes (spatial axes, or the features of an
    ``(N, D)`` input), patch and stride, start offsets ``pos`` ``(P, rank)`` and how many
    patches cover each position (``count``); the last two follow from the others and take
    no part in comparisons (a plan is part of a compiled program's key)."""

    size: tuple
    psize: tuple
    step: tuple
    features: bool
    channels_first: bool
    pos: np.ndarray = dataclasses.field(compare=False, hash=False, repr=False)
    count: np.ndarray = dataclasses.field(compare=False, hash=False, repr=False)


def _plan(a: Array, cf: bool, patch: Any, stride: Any, what: str) -> _Plan:
    if a.ndim not in (2, 3, 4, 5):
        raise ValueError(f"occlusion needs {what} as (N, D) features or with 1 to 3 spatial "
                         f"axes and a channel axis ((N, L, C), (N, H, W, C), (N, D, H, W, C)), "
                         f"got shape {tuple(a.shape)}")
    features = a.ndim == 2  # (N, D): no channel axis, the features are the positions
    size = tuple(a.shape[1:]) if features else spatial_shape(a.shape, cf)
    rank = len(size)
    if patch is None:  # the default, at most the input's side (as the Shapley methods')
        patch = 1 if features else tuple(min(DEFAULT_PATCH, d) for d in size)
    psize = _sizes(patch, "patch", rank, what)
    for ax, (d, q) in enumerate(zip(size, psize)):
        if q > d:
            raise ValueError(f"patch {q} is larger than spatial axis {ax} of {what} (side "
                             f"{d}): expected a patch of at most {d} along that axis "
                             f"(patch={d} occludes the whole axis at once)")
    step = _sizes(stride if stride is not None else psize, "stride", rank, what)
    for ax, (d, q, t) in enumerate(zip(size, psize, step)):
        if t > q and q < d:  # Captum's Occlusion refuses the same
            # fixes that hold on every axis: the stride of the patch, or a patch of the
            # stride at most the side (a whole-side patch takes any stride)
            fit = tuple(min(s, n) for s, n in zip(step, size))
            # patches of the stride tile an axis only where its side is a multiple of the
            # stride; elsewhere the last one is aligned to the border (patch_positions)
            off = [k for k, (n, f) in enumerate(zip(size, fit)) if f < n and n % f]
            how = (" for non-overlapping patches" if not off else
                   f", as large as the stride (they overlap at the border of spatial axis "
                   f"{off[0]}: its side {size[off[0]]} is no multiple of {fit[off[0]]}, so "
                   f"the last patch is aligned to the border and overlaps the one before)")
            raise ValueError(f"stride {t} is larger than the patch {q} on spatial axis {ax} "
                             f"of {what} (side {d}): the pixels between patches would never be "
                             f"occluded and have no score drop. Use stride <= patch (e.g. "
                             f"stride={_one_or_all(psize)}, or patch={_one_or_all(fit)}{how})")
    starts = [patch_positions(d, q, t) for d, q, t in zip(size, psize, step)]
    pos = np.stack(np.meshgrid(*starts, indexing="ij"), -1).reshape(-1, rank)
    count = np.zeros(size, np.float32)
    for q in pos:
        count[tuple(slice(i, i + b) for i, b in zip(q, psize))] += 1
    return _Plan(size, psize, step, features, cf, pos.astype(np.int32), count)


def _each(v: Any, x: Any, k: int) -> list:
    """``v`` per input of ``x`` (``k`` inputs), in ``x``'s leaf order, as
    :meth:`~jaxsal._src.validate.Prepared.per_input` arranged it: a dict (``x`` a dict) or a
    list (``x`` a list or tuple) gives each input its own value; anything else serves every
    input."""
    if isinstance(x, dict) and isinstance(v, dict):
        return [v[n] for n in sorted(x)]
    if isinstance(x, (list, tuple)) and isinstance(v, list):
        return list(v)
    return [v] * k


def occlusion(model: ModelLike, x: Inputs, targets: Targets = None, *,
              patch: int | tuple | None = None,
              stride: int | tuple | None = None, fill: Inputs = 0.0,
              batch_size: int | None = None, head: str | None = None,
              memory_budget: int | None = None, precision: str | None = None,
              check_finite: bool = True) -> Maps:
    """Occlusion sensitivity maps (Zeiler & Fergus, 2014).

    Args:
      model, x, targets, head, memory_budget, precision, check_finite: as in
        :func:`jaxsal.saliency`; ``x`` is ``(N, H, W, C)`` (``(N, C, H, W)`` for a
        channels-first model; signals ``(N, L, C)`` and volumes ``(N, D, H, W, C)`` alike).
        ``targets=None`` uses the predicted class of the clean input. ``x`` may also be
        ``(N, D)`` features (a tabular model): feature ablation (Captum's
        ``FeatureAblation``), each feature (or run of ``patch`` features) replaced by
        ``fill`` in turn. For a multi-input model ``x`` is a list, tuple or dict of arrays:
        each input is occluded in turn, the others left as they are, and the maps come back
        in the same container.
      patch: patch size ``p`` or ``(ph, pw)`` (one size per spatial axis); default 8 (at
        most the input's side), or 1 for ``(N, D)`` features. With several inputs, a list in
        the model's input order or a dict keyed by its input names (for ``x`` in any
        container) gives each input its own; another value (a tuple too) serves every input.
      stride: step between patch positions (default: ``patch``, non-overlapping); at most
        ``patch`` along every axis the patch does not span, so that every pixel is occluded
        by some patch (a larger stride raises a ``ValueError``, as in Captum). Where it does
        not divide ``side - patch``, the last window along the axis is a whole patch ending
        at the border (side 5, patch 2, stride 2: starts 0, 2, 3; Captum's ``Occlusion``
        truncates a window at 4 to one pixel). Per input as ``patch``.
      fill: the occluding value, in ``x``'s layout: a scalar, ``(C,)`` (``(C, 1, 1)``
        channels-first), ``(H, W, C)`` or ``(N, H, W, C)`` (e.g. a blurred copy of ``x``);
        for features a scalar, ``(D,)`` (e.g. the training means) or ``(N, D)``. Per input
        as ``patch``.
      batch_size: occluded inputs per forward pass (default: from ``memory_budget``).
    Returns:
      Raw maps ``(N, H, W)`` / ``(N, T, H, W)`` (``(N, D)`` / ``(N, T, D)`` for features):
      mean score drop over the covering patches. An occluded copy whose score is NaN/inf
      marks the positions its patch covers (NaN, or inf for a drop of one sign), the others
      keep their values. A NaN/inf score on the clean input would make the whole map NaN or
      infinite: with ``check_finite`` (the default) it raises :class:`jaxsal.NonFiniteMaps`
      naming the inputs (nothing is checked under the caller's ``jax.jit``, nor with
      ``check_finite=False``: the maps come back as computed).
    """
    rank = input_rank(x)
    p = prepare(model, x, targets, head=head, check_finite=check_finite,
                spatial=rank is not None and rank != 2, allow_int=True, multi_input=True)
    leaves, tree = jax.tree_util.tree_flatten(p.x)
    k = len(leaves)
    if not p.multi:
        what = ["x"]
    else:  # in leaf order: a dict's sorted keys, else the model's input names or positions
        labels = (sorted(p.x) if isinstance(p.x, dict)
                  else getattr(p.model, "input_names", None) or range(k))
        what = [f"input {nm!r}" for nm in labels]
    plans = [_plan(a, cf, pa, st, w) for a, cf, pa, st, w in zip(
        leaves, p.formats, _each(p.per_input(patch, "patch"), p.x, k),
        _each(p.per_input(stride, "stride"), p.x, k), what)]
    fills = tree.unflatten([
        check_like(f, a, "fill", w, channels_first=cf) for a, cf, f, w in zip(
            leaves, p.formats, _each(p.per_input(fill, "fill"), p.x, k), what)])
    check_fill_ids(p.model, fills, p.x)
    fills, batch_size, per_image, nb = base.masked_plan(p.model, p.x, fills, batch_size,
                                                        memory_budget)
    groups = tuple(base.masked_chunk(len(q.pos), per_image, nb, batch_size, memory_budget)
                   for q in plans)
    m, spec, info = p.model, p.spec, p.info

    def build():
        def run(params, x, ids, fill):
            xs = jax.tree_util.tree_leaves(x)
            n = xs[0].shape[0]
            sp, ids_ = resolve_predicted(m, params, x, spec, info, ids)
            y, cap = run_model(m, params, x, spec.layers)
            s0 = score_matrix(sp, info, y, cap, ids_)  # (N, T)
            fl = jax.tree_util.tree_leaves(fill)  # in x's structure, one per input
            out = tree.unflatten([
                _occlude_input(m, params, xs, tree, j, plan, group, fl[j], s0, sp, info, ids_,
                               n, spec.num)
                for j, (plan, group) in enumerate(zip(plans, groups))])
            out = jax.tree_util.tree_map(lambda o: o if spec.class_axis else o[:, 0], out)
            return out, jnp.isfinite(s0).all(axis=1)  # (N,): a finite clean score

        return run

    key = ("occlusion", p.key, spec, info, base.shape_key(p.x), tuple(plans), groups, nb)
    maps, clean = base.compiled(key, lambda: base.split_batch(build(), nb, maybe=(3,)),
                                precision, forward_only=True)(p.params, p.x, p.ids, fills)
    if check_finite and not isinstance(clean, jax.core.Tracer):  # none under the user's jit
        _check_clean(np.asarray(clean))
    return maps


def _check_clean(clean: np.ndarray) -> None:
    """Raise :class:`NonFiniteMaps` for the inputs whose clean score (``clean`` ``(N,)``:
    finite for every target?) is NaN/inf: every score drop, and so the whole map, is then
    NaN or infinite."""
    rows = np.flatnonzero(~clean).tolist()
    if rows:
        raise NonFiniteMaps(
            f"occlusion: the maps of {listed(rows)} are not finite: the model's score on the "
            "clean input is NaN/inf for them, and every value of an occlusion map is that score "
            "minus an occluded copy's, so the whole map would be NaN or infinite. "
            "Check the model's outputs for these inputs (model(x[i:i+1])), or pass "
            "check_finite=False to get the maps as computed", rows)


def _occlude_input(m, params, xs, tree, j, plan: _Plan, group, fill, s0, sp, info, ids_, n,
                   num) -> Array:
    """The ``(N, T, *plan.size)`` mean score drops of occluding input ``j`` of ``xs`` (the
    others unchanged), ``group`` patch positions per batched forward pass."""
    x = xs[j]
    size, psize, rank = plan.size, plan.psize, len(plan.size)
    positions = jnp.asarray(plan.pos)
    n_pos = positions.shape[0]
    fill_b = jnp.broadcast_to(fill, x.shape)

    def mask_of(k):  # (*S): the patch at position k
        inside = jnp.ones(size, bool)
        for a, d in enumerate(size):
            i = jnp.arange(d).reshape((d,) + (1,) * (rank - 1 - a))
            inside = inside & (i >= positions[k, a]) & (i < positions[k, a] + psize[a])
        return inside

    def body(g, acc):
        ks = g * group + jnp.arange(group)
        valid = (ks < n_pos).astype(s0.dtype)
        masks = jax.vmap(mask_of)(jnp.minimum(ks, n_pos - 1))  # (G, *S)
        # (G, 1, *x.shape[1:]) with a channel axis of 1 where x has its channels
        if plan.features:
            mx = masks[:, None]
        else:
            mx = masks[:, None, None] if plan.channels_first else masks[:, None, ..., None]
        # input-major (base.stack_rows): a batch sharded over its inputs stays sharded
        xo = base.stack_rows(jnp.where(mx, fill_b[None], x[None]))
        inputs = [xo if i == j else base.repeat_rows(v, group) for i, v in enumerate(xs)]
        yo, co = run_model(m, params, tree.unflatten(inputs), sp.layers)
        yo = jax.tree_util.tree_map(lambda a: base.unstack_rows(a, group), yo)
        co = {k: base.unstack_rows(v, group) for k, v in co.items()}
        s = jax.vmap(lambda yy, cc: score_matrix(sp, info, yy, cc, ids_))(yo, co)
        drop = jnp.where(valid[:, None, None] > 0, s0[None] - s, 0)  # (G, N, T)
        return _add_drops(acc, drop, masks.astype(s0.dtype))

    # scores' dtype (x may hold ids), and their type: under jax.shard_map the sums vary
    # over the mesh axes the scores vary over (a loop's carry and a cond's branches keep
    # one type)
    zeros = jnp.zeros((n, num) + size, s0.dtype) + jnp.zeros_like(s0, shape=())
    total, pos_inf, neg_inf, nan = jax.lax.fori_loop(0, -(-n_pos // group), body, (zeros,) * 4)
    total = total / jnp.asarray(plan.count, s0.dtype)
    # a non-finite drop (a NaN or infinite occluded score) stays at the positions it covers
    return jnp.where((nan > 0) | ((pos_inf > 0) & (neg_inf > 0)), jnp.nan,
                     jnp.where(pos_inf > 0, jnp.inf, jnp.where(neg_inf > 0, -jnp.inf, total)))


def _add_drops(acc: tuple, drop: Array, masks: Array) -> tuple:
    """Add a group's score drops ``(G, N, T)`` to the patches ``masks`` ``(G, *S)`` cover.
    ``acc``: the finite drops' sums and the counts of +inf, -inf and NaN drops, each
    ``(N, T, *S)``: a product with a mask's zeros would spread a non-finite drop to every
    position (``nan * 0``); they are counted apart, only for a group that has any."""
    def finite(acc):
        return (acc[0] + jnp.tensordot(drop, masks, axes=[[0], [0]]),) + acc[1:]

    def counted(acc):
        def hits(cond):
            return jnp.tensordot(cond.astype(masks.dtype), masks, axes=[[0], [0]])
        ok = jnp.isfinite(drop)
        return (acc[0] + jnp.tensordot(jnp.where(ok, drop, 0), masks, axes=[[0], [0]]),
                acc[1] + hits(drop == jnp.inf), acc[2] + hits(drop == -jnp.inf),
                acc[3] + hits(jnp.isnan(drop)))

    return jax.lax.cond(jnp.all(jnp.isfinite(drop)), finite, counted, acc)


#: explain_to_file takes these one per input of a model of several inputs, by name or
#: position (a list; a tuple stays one size per spatial axis).
occlusion.several_input_options = ("patch", "stride", "fill")
