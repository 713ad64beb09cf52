"""Occlusion sensitivity (Zeiler & Fergus, 2014, "Visualizing and Understanding Convolutional
Networks").

A ``patch`` is slid over the image with ``stride``; at each position the patch (all
channels) is replaced by ``fill`` and the model re-run. The map at a pixel is the mean, over
the patch positions covering it, of ``S(x) - S(x occluded)``: positive where hiding the
pixel lowers the score. All patch positions are evaluated as batched forward passes (groups
of positions ``vmap``-ed into one batch, groups in a ``fori_loop``), and every target's
score comes from the same forward passes.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import base
from jaxsal._src.targets import resolve_predicted, run_model, score_matrix
from jaxsal._src.validate import prepare

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def _sizes(v, name: str, rank: int) -> tuple[int, ...]:
    """``v`` as ``rank`` positive ints (an int is repeated)."""
    t = tuple(v) if isinstance(v, (tuple, list)) else (v,) * rank
    if len(t) != rank or not all(isinstance(i, (int, np.integer))
                                 and not isinstance(i, (bool, np.bool_)) and i >= 1 for i in t):
        raise ValueError(f"expected {name} as a positive int or {rank} of them (one per "
                         f"spatial axis), got {v!r}")
    return tuple(int(i) for i in t)


def patch_positions(size: int, patch: int, stride: int) -> np.ndarray:
    """Start offsets along one axis; the last patch is aligned to the border so that every
    pixel is covered."""
    if patch > size:
        raise ValueError(f"patch {patch} is larger than the input's side {size}")
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return np.asarray(starts, np.int32)


def _rank(x: Any) -> int | None:
    """The number of axes of one input array (``None`` for a structure of arrays, which
    :func:`prepare` refuses with its own message)."""
    if hasattr(x, "ndim"):
        return int(x.ndim)
    try:
        return int(np.ndim(x))
    except ValueError:  # ragged: a list of input arrays
        return None


#: The default ``patch`` of spatial inputs (pixels per side); ``(N, D)`` feature inputs
#: default to 1 (one feature at a time: feature ablation).
DEFAULT_PATCH = 8


def occlusion(model: Any, x: ArrayLike, targets: Any = None, *,
              patch: int | tuple | None = None,
              stride: int | tuple | None = None, fill: ArrayLike = 0.0,
              batch_size: int | None = None, head: str | None = None,
              memory_budget: int | None = None, precision: str | None = None,
              check_finite: bool = True) -> Array:
    """Occlusion sensitivity maps (Zeiler & Fergus, 2014).

    Args:
      model, x, targets, head, memory_budget, precision, check_finite: as in
        :func:`jaxsal.saliency`; ``x`` is ``(N, H, W, C)`` (``(N, C, H, W)`` for a
        channels-first model; signals ``(N, L, C)`` and volumes ``(N, D, H, W, C)`` alike).
        ``targets=None`` uses the predicted class of the clean input. ``x`` may also be
        ``(N, D)`` features (a tabular model): feature ablation (Captum's
        ``FeatureAblation``), each feature (or run of ``patch`` features) replaced by
        ``fill`` in turn.
      patch: patch size ``p`` or ``(ph, pw)`` (one size per spatial axis); default 8, or 1
        for ``(N, D)`` features.
      stride: step between patch positions (default: ``patch``, non-overlapping); at most
        ``patch`` along every axis the patch does not span, so that every pixel is occluded
        by some patch (a larger stride raises a ``ValueError``, as in Captum).
      fill: the occluding value, in ``x``'s layout: a scalar, ``(C,)`` (``(C, 1, 1)``
        channels-first), ``(H, W, C)`` or ``(N, H, W, C)`` (e.g. a blurred copy of ``x``);
        for features a scalar, ``(D,)`` (e.g. the training means) or ``(N, D)``.
      batch_size: occluded inputs per forward pass (default: from ``memory_budget``).
    Returns:
      Raw maps ``(N, H, W)`` / ``(N, T, H, W)`` (``(N, D)`` / ``(N, T, D)`` for features):
      mean score drop over the covering patches.
    """
    p = prepare(model, x, targets, head=head, check_finite=check_finite,
                spatial=_rank(x) != 2)
    features = p.x.ndim == 2  # (N, D): no channel axis, the features are the positions
    n, cf = p.n, p.channels_first
    size = tuple(p.x.shape[1:]) if features else p.spatial_shape
    rank = len(size)
    if patch is None:
        patch = 1 if features else DEFAULT_PATCH
    psize = _sizes(patch, "patch", rank)
    step = _sizes(stride if stride is not None else psize, "stride", rank)
    for ax, (d, q, t) in enumerate(zip(size, psize, step)):
        if t > q and q < d:  # Captum's Occlusion refuses the same
            raise ValueError(f"stride {t} is larger than the patch {q} on spatial axis {ax} "
                             f"(input side {d}): the pixels between patches would never be "
                             f"occluded and have no score drop. Use stride <= patch (e.g. "
                             f"stride={q}, or patch={t} for non-overlapping patches)")
    starts = [patch_positions(d, q, t) for d, q, t in zip(size, psize, step)]
    pos = np.stack(np.meshgrid(*starts, indexing="ij"), -1).reshape(-1, rank)
    n_pos = len(pos)
    fill_arr = jnp.asarray(fill, p.x.dtype)
    try:
        np.broadcast_shapes(fill_arr.shape, p.x.shape)
    except ValueError:
        raise ValueError(f"fill of shape {fill_arr.shape} does not broadcast to x of shape "
                         f"{tuple(p.x.shape)}") from None
    batch_size = base.check_count(batch_size, "batch_size")
    per_image = base.forward_bytes(p.model, p.x) // n
    nb = base.batch_chunk(n, per_image, memory_budget)
    group = base.chunk_for(n_pos, per_image * nb, None if batch_size is None
                           else max(1, batch_size // nb), memory_budget, cap=max(1, 1024 // nb))
    count = np.zeros(size, np.float32)
    for q in pos:
        count[tuple(slice(a, a + b) for a, b in zip(q, psize))] += 1
    m, spec, info = p.model, p.spec, p.info

    def build():
        def run(params, x, ids, fill):
            n = x.shape[0]
            sp, ids_ = resolve_predicted(m, params, x, spec, info, ids)
            y, cap = run_model(m, params, x, spec.layers)
            s0 = score_matrix(sp, info, y, cap, ids_)  # (N, T)
            positions = jnp.asarray(pos)
            fill_b = jnp.broadcast_to(fill, x.shape)

            def mask_of(k):  # (*S): the patch at position k
                inside = jnp.ones(size, bool)
                for a, d in enumerate(size):
                    i = jnp.arange(d).reshape((d,) + (1,) * (rank - 1 - a))
                    inside = inside & (i >= positions[k, a]) & (i < positions[k, a] + psize[a])
                return inside

            def body(g, acc):
                ks = g * group + jnp.arange(group)
                valid = (ks < n_pos).astype(x.dtype)
                masks = jax.vmap(mask_of)(jnp.minimum(ks, n_pos - 1))  # (G, *S)
                # (G, 1, *x.shape[1:]) with a channel axis of 1 where x has its channels
                if features:
                    mx = masks[:, None]
                else:
                    mx = masks[:, None, None] if cf else masks[:, None, ..., None]
                xo = jnp.where(mx, fill_b[None], x[None])
                yo, co = run_model(m, params, xo.reshape((-1,) + x.shape[1:]), spec.layers)
                yo = jax.tree_util.tree_map(lambda a: a.reshape((group, n) + a.shape[1:]), yo)
                co = {k: v.reshape((group, n) + v.shape[1:]) for k, v in co.items()}
                s = jax.vmap(lambda yy, cc: score_matrix(sp, info, yy, cc, ids_))(yo, co)
                drop = (s0[None] - s) * valid[:, None, None]  # (G, N, T)
                return acc + jnp.tensordot(drop, masks.astype(x.dtype), axes=[[0], [0]])

            total = jax.lax.fori_loop(0, -(-n_pos // group), body,
                                      jnp.zeros((n, spec.num) + size, x.dtype))
            out = total / jnp.asarray(count)
            return out if spec.class_axis else out[:, 0]

        return run

    key = ("occlusion", p.key, spec, info, tuple(p.x.shape), psize, step, group, nb)
    return base.compiled(key, lambda: base.split_batch(build(), n, nb, maybe=(3,)),
                         precision, forward_only=True)(p.params, p.x, p.ids, fill_arr)
