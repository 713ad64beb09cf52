"""Pooling: Max/Average 1D/2D/3D (TF padding semantics), global pooling, and Keras 3's
adaptive pooling (AdaptiveAveragePooling1D/2D/3D, AdaptiveMaxPooling1D/2D/3D).

Non-overlapping VALID max pooling (the common ``pool == stride``) is computed as a reshape
and a max: on XLA:CPU its backward pass is several times faster than ``reduce_window``'s
select-and-scatter, and its forward value is identical.

Adaptive pooling to ``output_size`` splits each spatial axis of length ``n`` into ``o`` bins,
bin ``j`` covering ``[floor(j * n / o), ceil((j + 1) * n / o))`` (PyTorch's rule, which
Keras 3 follows on every backend): bins may overlap by one element, and repeat elements
when ``o > n``. An axis that ``o`` divides is a reshape and a mean or max (all axes at once
where every axis divides); another axis is a ``(n, o)`` averaging matrix applied with
``tensordot``, or a gather of each bin's elements and a max.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from model_import._layers.registry import LayerImpl, register_layer


def _tuple(v, n):
    if isinstance(v, (list, tuple)):
        return tuple(int(i) for i in v)
    return (int(v),) * n


def _to_last(fn, channels_first):
    if not channels_first:
        return fn

    def wrapped(params, x, *, rt):
        return jnp.moveaxis(fn(params, jnp.moveaxis(x, 1, -1), rt=rt), -1, 1)

    return wrapped


def _windows(x, pool):
    """``(N, *spatial, C)`` -> ``(N, *out, C, prod(pool))``: the non-overlapping windows
    (the remainder cropped, as VALID pooling does)."""
    n, *spatial, c = x.shape
    out = [s // p for s, p in zip(spatial, pool)]
    x = x[(slice(None), *[slice(0, o * p) for o, p in zip(out, pool)], slice(None))]
    shape = [n]
    for o, p in zip(out, pool):
        shape += [o, p]
    x = x.reshape(*shape, c)
    r = len(pool)
    perm = [0, *[1 + 2 * i for i in range(r)], 1 + 2 * r, *[2 + 2 * i for i in range(r)]]
    return x.transpose(perm).reshape(n, *out, c, math.prod(pool))


def _unwindows(w, pool, full_shape):
    """Inverse of :func:`_windows`, zero-filling the cropped remainder."""
    n, *out, c, _ = w.shape
    r = len(pool)
    w = w.reshape(n, *out, c, *pool)
    perm = [0]
    for i in range(r):
        perm += [1 + i, 2 + r + i]
    perm.append(1 + r)
    x = w.transpose(perm).reshape(n, *[o * p for o, p in zip(out, pool)], c)
    pads = [(0, 0)] + [(0, s - o * p) for s, o, p in zip(full_shape[1:-1], out, pool)] + [(0, 0)]
    return jnp.pad(x, pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _blocked_max(x, pool):
    """Max over non-overlapping windows, by reshape: identical values to ``reduce_window``,
    several times faster to differentiate on XLA:CPU. The gradient goes to the *first*
    maximum of each window (row-major), as TensorFlow's and XLA's max-pool gradients do, not
    split between ties (``jnp.max``'s rule): ties are common where ReLU outputs are equal
    (blank image regions), and splitting them changes saliency maps."""
    return jnp.max(_windows(x, pool), axis=-1)


def _blocked_max_fwd(x, pool):
    w = _windows(x, pool)
    first = jnp.argmax(w, axis=-1)  # argmax returns the first maximal index
    return jnp.max(w, axis=-1), (first, x.shape)


def _blocked_max_bwd(pool, res, g):
    first, shape = res
    k = int(np.prod(pool))
    gw = jax.nn.one_hot(first, k, dtype=g.dtype) * g[..., None]
    return (_unwindows(gw, pool, shape),)


_blocked_max.defvjp(_blocked_max_fwd, _blocked_max_bwd)


def _same_pads(n: int, pool: int, stride: int) -> tuple[int, int]:
    """``(before, after)`` of "same" pooling along an axis of size ``n`` (the extra pixel of
    an odd total after), as TensorFlow, XLA and Keras's PyTorch backend compute it."""
    total = max(0, (-(-n // stride) - 1) * stride + pool - n)
    return total // 2, total - total // 2


def _make_pool(rank, kind):
    def convert(config, ctx):
        pool = _tuple(config.get("pool_size", 2), rank)
        strides = config.get("strides")
        strides = pool if strides is None else _tuple(strides, rank)
        padding = str(config.get("padding", "valid")).upper()

        def call(params, x, *, rt):
            if kind == "max":
                if padding == "VALID" and strides == pool:
                    return rt.pool(lambda v: _blocked_max(v, pool), x)
                return rt.pool(lambda v: nn.max_pool(v, pool, strides, padding), x)
            if padding == "SAME":
                pads = [_same_pads(n, p, s) for n, p, s in zip(x.shape[1:-1], pool, strides)]
                asymmetric = any(lo != hi for lo, hi in pads)
                if asymmetric and ctx.backend == "torch":
                    # Keras on PyTorch: asymmetric "same" padding repeats the edges of
                    # every axis, and the windows average over them
                    x = jnp.pad(x, [(0, 0), *pads, (0, 0)], mode="edge")
                    return nn.avg_pool(x, pool, strides, "VALID")
                if asymmetric:
                    ctx.backend_dependent(
                        f"average pooling with 'same' padding {pads} of an input of spatial "
                        f"shape {x.shape[1:-1]}: Keras on PyTorch pads by repeating the edges "
                        "and averages over them")
            return nn.avg_pool(x, pool, strides, padding, count_include_pad=False)

        cf = config.get("data_format") == "channels_first"
        return LayerImpl(call=_to_last(call, cf), relevance=True,
                         data_format="channels_first" if cf else "channels_last")
    return convert


for _rank in (1, 2, 3):
    register_layer(f"MaxPooling{_rank}D", f"MaxPool{_rank}D")(_make_pool(_rank, "max"))
    register_layer(f"AveragePooling{_rank}D", f"AvgPool{_rank}D")(_make_pool(_rank, "avg"))


def _make_global(rank, reduce):
    def convert(config, ctx):
        cf = config.get("data_format") == "channels_first"
        keepdims = bool(config.get("keepdims", False))
        axes = tuple(range(2, 2 + rank)) if cf else tuple(range(1, 1 + rank))

        def call(params, x, *, rt):
            if reduce is jnp.max:
                return rt.pool(lambda v: reduce(v, axis=axes, keepdims=keepdims), x)
            return reduce(x, axis=axes, keepdims=keepdims)

        return LayerImpl(call=call, relevance=True,
                         data_format="channels_first" if cf else "channels_last")
    return convert


for _rank in (1, 2, 3):
    register_layer(f"GlobalAveragePooling{_rank}D", f"GlobalAvgPool{_rank}D")(
        _make_global(_rank, jnp.mean))
    register_layer(f"GlobalMaxPooling{_rank}D", f"GlobalMaxPool{_rank}D")(
        _make_global(_rank, jnp.max))


# ---------------------------------------------------------------------- adaptive pooling
def adaptive_bins(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, ends)`` of the ``n_out`` adaptive-pooling bins of an axis of ``n_in``:
    ``[floor(j * n_in / n_out), ceil((j + 1) * n_in / n_out))``, in integers."""
    j = np.arange(n_out, dtype=np.int64)
    return (j * n_in) // n_out, -((-(j + 1) * n_in) // n_out)


def _adaptive_mean_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_in, n_out)`` float32: column ``j`` is ``1 / size`` over bin ``j``."""
    starts, ends = adaptive_bins(n_in, n_out)
    i = np.arange(n_in)[:, None]
    inside = (i >= starts[None, :]) & (i < ends[None, :])
    return (inside / (ends - starts)[None, :]).astype(np.float32)


def _adaptive_max_indices(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, widest bin)`` input indices of each bin, the shorter bins padded with their
    first index (a repeated element leaves a max unchanged)."""
    starts, ends = adaptive_bins(n_in, n_out)
    k = np.arange(int((ends - starts).max()))[None, :]
    return np.where(starts[:, None] + k < ends[:, None], starts[:, None] + k,
                    starts[:, None])


def _adaptive_axis(x, axis: int, n_out: int, kind: str):
    """Adaptive pooling of ``x`` along one axis."""
    n_in = x.shape[axis]
    if n_in == n_out:
        return x
    if n_in % n_out == 0:
        p = n_in // n_out
        x = x.reshape(x.shape[:axis] + (n_out, p) + x.shape[axis + 1:])
        return jnp.max(x, axis=axis + 1) if kind == "max" else jnp.mean(x, axis=axis + 1)
    if kind == "avg":
        w = jnp.asarray(_adaptive_mean_matrix(n_in, n_out), x.dtype)
        return jnp.moveaxis(jnp.tensordot(x, w, axes=(axis, 0)), -1, axis)
    idx = _adaptive_max_indices(n_in, n_out)
    g = jnp.take(x, idx.reshape(-1), axis=axis)
    g = g.reshape(x.shape[:axis] + idx.shape + x.shape[axis + 1:])
    return jnp.max(g, axis=axis + 1)


def adaptive_pool(x, output_size: tuple[int, ...], kind: str):
    """Keras 3's adaptive average (``kind="avg"``) or max pooling of a channels-last ``x``
    ``(N, *spatial, C)`` to ``output_size``."""
    spatial = x.shape[1:-1]
    if all(s % o == 0 for s, o in zip(spatial, output_size)):
        pool = tuple(s // o for s, o in zip(spatial, output_size))
        if kind == "max":
            return _blocked_max(x, pool)  # the max-pool gradient rule for ties
        shape = [x.shape[0]]
        for o, p in zip(output_size, pool):
            shape += [o, p]
        axes = tuple(2 + 2 * i for i in range(len(pool)))
        return jnp.mean(x.reshape(*shape, x.shape[-1]), axis=axes)
    for i, o in enumerate(output_size):
        x = _adaptive_axis(x, 1 + i, o, kind)
    return x


def _make_adaptive(rank, kind):
    def convert(config, ctx):
        size = config.get("output_size")
        if size is None:
            raise ctx.error("its config has no output_size")
        size = _tuple(size, rank)
        if len(size) != rank or min(size) < 1:
            raise ctx.error(f"output_size {config.get('output_size')!r}: expected {rank} "
                            "positive integer(s)")
        cf = config.get("data_format") == "channels_first"

        def call(params, x, *, rt):
            if x.ndim != rank + 2:
                raise ValueError(f"expected a rank-{rank + 2} input, got shape {x.shape}")
            if kind == "max":
                return rt.pool(lambda v: adaptive_pool(v, size, kind), x)
            return adaptive_pool(x, size, kind)

        return LayerImpl(call=_to_last(call, cf), relevance=True,
                         data_format="channels_first" if cf else "channels_last")
    return convert


for _rank in (1, 2, 3):
    register_layer(f"AdaptiveAveragePooling{_rank}D")(_make_adaptive(_rank, "avg"))
    register_layer(f"AdaptiveMaxPooling{_rank}D")(_make_adaptive(_rank, "max"))
