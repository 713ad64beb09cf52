"""A ``fori_loop`` that writes each iteration's arrays in place into results made once: the
bounded-memory loop of :func:`jaxsal._src.base.map_chunks` (the chunks of the class axis)
and :func:`jaxsal._src.base.split_batch` (the passes over a batch), which stack no
``(iterations, ...)`` copy of their outputs to move afterwards."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

Array = jax.Array


def zeros_of(s: jax.ShapeDtypeStruct, shape: tuple | None = None) -> Array:
    """Zeros of the abstract value ``s`` (of ``shape`` where given), varying over the mesh
    axes ``s`` varies over under ``jax.shard_map`` (a loop's carry keeps its type: zeros that
    do not vary were refused as the initial sum, or result, of values that do)."""
    z = jnp.zeros(s.shape if shape is None else shape, s.dtype)
    manual = getattr(s, "manual_axis_type", None)
    axes = tuple(sorted(getattr(manual, "varying", None) or getattr(s, "vma", None) or ()))
    if not axes:
        return z
    cast = getattr(jax.lax, "pcast", None)
    return cast(z, axes, to="varying") if cast is not None else jax.lax.pvary(z, axes)


def fill_axis1(piece: Callable[..., tuple[Array, Any]], count: int, total: int,
               *args: Any) -> Any:
    """The arrays ``(N, total, ...)`` that ``count`` iterations of ``piece`` fill along axis 1.

    ``piece(i, *args)`` (``i`` a traced int32 scalar, ``0 .. count - 1``) returns
    ``(start, out)``: ``out`` arrays (a structure of them) ``(N, c, ...)``, written at
    ``[:, start:start + c]`` of zeros made once (:func:`zeros_of`, shaped from ``out``'s
    shapes with axis 1 of ``total``), in a ``fori_loop``: one iteration's arrays alive at a
    time. ``args`` (the arrays ``piece`` reads, passed rather than closed over) give
    ``out``'s shapes to ``jax.eval_shape`` abstractly. What ``piece`` leaves unwritten stays
    zero.
    """
    shapes = jax.eval_shape(lambda i, *a: piece(i, *a)[1],
                            jax.ShapeDtypeStruct((), jnp.int32), *args)
    init = jax.tree_util.tree_map(
        lambda s: zeros_of(s, (s.shape[0], total) + tuple(s.shape[2:])), shapes)

    def body(i, acc):
        start, out = piece(i, *args)
        return jax.tree_util.tree_map(
            lambda a, o: jax.lax.dynamic_update_slice_in_dim(a, o, start, axis=1), acc, out)

    return jax.lax.fori_loop(0, count, body, init)
