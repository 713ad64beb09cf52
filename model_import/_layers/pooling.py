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


def _window_view(x, pool):
    """``(N, *spatial, C)`` -> ``(N, o1, p1, o2, p2, ..., C)``: the non-overlapping windows
    (the remainder cropped, as VALID pooling does) by a reshape alone, window axis ``i`` at
    ``2 + 2 * i``. No transpose: the channels stay the minor axis, which a GPU's reductions
    and element-wise kernels read contiguously."""
    n, *spatial, c = x.shape
    out = [s // p for s, p in zip(spatial, pool)]
    x = x[(slice(None), *[slice(0, o * p) for o, p in zip(out, pool)], slice(None))]
    shape = [n]
    for o, p in zip(out, pool):
        shape += [o, p]
    return x.reshape(*shape, c)


def _window_axes(pool) -> tuple[int, ...]:
    return tuple(2 + 2 * i for i in range(len(pool)))


def _positions(pool):
    """Each window position's row-major index, shaped to broadcast against a window view."""
    shape = [1, 1]
    for p in pool:
        shape += [p, 1]
    return np.arange(math.prod(pool), dtype=_index_dtype(pool)).reshape(shape)


def _index_dtype(pool):
    return np.uint8 if math.prod(pool) <= 255 else np.int32


#: Windows of at most this many positions find their first maximum by a chain of
#: element-wise comparisons (one fused kernel); larger ones by a two-operand reduction.
_CHAIN_MAX = 16


def _first_max(v, pool):
    """``(max, first)`` of each window of a window view ``v``: the maximum (NaN if the
    window holds one, as ``jnp.max``) and the row-major position of its first occurrence.
    Both come from one pass over the same values; comparing ``v`` with a maximum computed
    apart is not safe: XLA may compute ``v``'s producer twice, in two fusions whose
    roundings differ (XLA:CPU at ``--xla_backend_optimization_level=0`` does), and a
    window whose maximum equals none of its elements would lose its gradient."""
    axes = _window_axes(pool)
    dtype = _index_dtype(pool)

    def better(a, b):  # does value a displace value b held so far (NaN displaces numbers)
        return (a > b) | (jnp.isnan(a) & ~jnp.isnan(b))

    if math.prod(pool) <= _CHAIN_MAX:
        best = first = None
        for k, at in enumerate(np.ndindex(*pool)):
            index = [slice(None)] * v.ndim
            for axis, i in zip(axes, at):
                index[axis] = i
            s = v[tuple(index)]
            if best is None:
                best, first = s, jnp.zeros(s.shape, dtype)
                continue
            take = better(s, best)  # strictly: a tie keeps the earlier position
            best, first = jnp.where(take, s, best), jnp.where(take, dtype(k), first)
        return best, first

    def pick(a, b):  # associative and commutative: larger value, then smaller position
        (va, ia), (vb, ib) = a, b
        same = (va == vb) | (jnp.isnan(va) & jnp.isnan(vb))
        take_a = better(va, vb) | (same & (ia < ib))
        return jnp.where(take_a, va, vb), jnp.where(take_a, ia, ib)

    pos = jnp.broadcast_to(_positions(pool), v.shape)
    low = -np.inf if jnp.issubdtype(v.dtype, jnp.inexact) else jnp.iinfo(v.dtype).min
    return jax.lax.reduce((v, pos), (np.array(low, v.dtype), np.array(np.iinfo(dtype).max,
                                                                     dtype)), pick, axes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _blocked_max(x, pool):
    """Max over non-overlapping windows, by a reshape and a max: identical values to
    ``reduce_window``, several times faster to differentiate on XLA:CPU, and on a GPU without
    ``reduce_window``'s select-and-scatter. The gradient goes to the *first* maximum of each
    window (row-major), as TensorFlow's and XLA's max-pool gradients do, not split between
    ties (``jnp.max``'s rule): ties are common where ReLU outputs are equal (blank image
    regions), and splitting them changes saliency maps."""
    # the windows moved last and reduced there, as before the gradient rule changed: with
    # the window axes reduced in place instead, VGG16's 10-class saliency took 4.7-4.9 s
    # against 4.2-4.6 s on a 2-core CPU (two A/B runs, output not kept); the GPU profile's
    # forward pass spent 0.6 of 6.5 ms in these reductions
    r = len(pool)
    v = jnp.moveaxis(_window_view(x, pool), _window_axes(pool), range(-r, 0))
    return jnp.max(v.reshape(*v.shape[:-r], math.prod(pool)), axis=-1)


def _blocked_max_fwd(x, pool):
    # the first maximum found in place (an argmax over a transposed window axis took 13 of
    # 30 ms of VGG16's top-1 input gradient on an H200)
    y, first = _first_max(_window_view(x, pool), pool)
    return y, (first, x.shape)


def _blocked_max_bwd(pool, res, g):
    first, shape = res
    axes = _window_axes(pool)
    # element-wise: each position takes its window's cotangent where it is the first maximum
    dv = jnp.where(_positions(pool) == jnp.expand_dims(first, axes), jnp.expand_dims(g, axes),
                   jnp.zeros((), g.dtype))
    n, *spatial, c = shape
    cropped = [o * p for o, p in zip(g.shape[1:-1], pool)]
    dx = dv.reshape(n, *cropped, c)
    return (jnp.pad(dx, [(0, 0)] + [(0, s - k) for s, k in zip(spatial, cropped)] + [(0, 0)]),)


_blocked_max.defvjp(_blocked_max_fwd, _blocked_max_bwd)


def avg_pool(x, pool: tuple, strides: tuple, padding) -> jax.Array:
    """Average pooling of a channels-last ``x`` whose windows average over the elements
    inside the input only (TensorFlow's and Keras's "same" average), in ``x``'s dtype.
    ``flax.linen.avg_pool(count_include_pad=False)`` counts the elements with a
    ``jnp.ones`` of the default dtype, float64 under ``jax_enable_x64``, which promoted
    float32 inputs (and every layer after) to float64 there."""
    if padding == "VALID":
        return nn.avg_pool(x, pool, strides, "VALID")  # every window is whole
    total = nn.pool(x, 0.0, jax.lax.add, pool, strides, padding)
    ones = jnp.ones((1, *x.shape[1:-1], 1), x.dtype)
    return total / nn.pool(ones, 0.0, jax.lax.add, pool, strides, padding)


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
            return avg_pool(x, pool, strides, padding)

        cf = config.get("data_format") == "channels_first"
        return LayerImpl(call=_to_last(call, cf), relevance=True,
                         data_format="channels_first" if cf else "channels_last")
    return convert


for _rank in (1, 2, 3):
    register_layer(f"MaxPooling{_rank}D", f"MaxPool{_rank}D")(_make_pool(_rank, "max"))
    register_layer(f"AveragePooling{_rank}D", f"AvgPool{_rank}D")(_make_pool(_rank, "avg"))


def reduce_max(x, axis=None, keepdims: bool = False) -> jax.Array:
    """``jnp.max(x, axis=axis, keepdims=keepdims)``, the same value (NaN propagated), with a
    derivative that XLA's roundings cannot lose. ``axis``: ``None`` (every axis), an int or a
    sequence of ints, negative ones from the end. The derivative is TensorFlow's
    ``reduce_max`` gradient (so Keras's) and ``jnp.max``'s: split equally among the elements
    equal to the maximum, ties included. Those elements are the ones equal to it *or* at the
    position of its first occurrence, found in one pass (an argmax over the reduced axes,
    moved last and flattened, which compares the values among themselves): XLA may compute
    ``x``'s producer twice, in fusions whose roundings differ, so that no element equals the
    maximum computed apart (``jnp.max``'s own derivative then lost the maximum's term, or was
    0/0 = NaN); the first maximum keeps it. A NaN's slice passes its cotangent to its first
    NaN. A ``jax.custom_jvp``: forward mode works, and reverse mode is its transpose.
    Non-float ``x`` (integers, booleans, complex): ``jnp.max`` itself."""
    return _extremum(x, axis, keepdims, "max")


def reduce_min(x, axis=None, keepdims: bool = False) -> jax.Array:
    """``jnp.min(x, axis=axis, keepdims=keepdims)``: :func:`reduce_max`'s twin (the first
    minimum by an argmin; a NaN slice's first NaN)."""
    return _extremum(x, axis, keepdims, "min")


def _extremum(x, axis, keepdims, kind):
    reduce = jnp.max if kind == "max" else jnp.min
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        return reduce(x, axis=axis, keepdims=keepdims)
    x = jnp.asarray(x)
    axes = _reduced_axes(axis, x.ndim)
    if not axes:  # nothing reduced: x itself, and its derivative the identity
        return reduce(x, axis=axes, keepdims=keepdims)
    return _robust_extremum(x, axes, bool(keepdims), kind)


def _reduced_axes(axis, ndim: int) -> tuple[int, ...]:
    """``axis`` (``None``: every axis; an int; a sequence) as sorted non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = [int(a) for a in (axis if isinstance(axis, (list, tuple)) else (axis,))]
    bad = [a for a in axes if not -ndim <= a < ndim]
    if bad:
        raise ValueError(f"axis {axis!r} of a rank-{ndim} array: expected axes from {-ndim} to "
                         f"{ndim - 1}, got {bad}; pass axes the input has")
    axes = sorted(a % ndim for a in axes)
    if len(set(axes)) != len(axes):
        raise ValueError(f"axis {axis!r}: expected each axis once, got one repeated; pass it "
                         "once")
    return tuple(axes)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def _robust_extremum(x, axes: tuple[int, ...], keepdims: bool, kind: str) -> jax.Array:
    """:func:`reduce_max` (``kind="max"``) or :func:`reduce_min` of a float ``x`` over
    ``axes``, sorted, non-negative and not empty."""
    reduce = jnp.max if kind == "max" else jnp.min
    return reduce(x, axis=axes, keepdims=keepdims)


@_robust_extremum.defjvp
def _robust_extremum_jvp(axes, keepdims, kind, primals, tangents):
    (x,), (t,) = primals, tangents
    y = _robust_extremum(x, axes, True, kind)  # higher orders through this rule too
    rest = [i for i in range(x.ndim) if i not in axes]
    shape = [x.shape[i] for i in rest]  # x with the reduced axes flattened into one, at `at`
    n = math.prod(x.shape[i] for i in axes)  # not -1: an empty batch cannot infer it
    if axes == tuple(range(axes[0], axes[-1] + 1)):  # consecutive: a reshape, no copy
        at = axes[0]
        shape.insert(at, n)
    else:  # the reduced axes moved last
        at = -1
        shape.append(n)
        x, t = jnp.transpose(x, rest + list(axes)), jnp.transpose(t, rest + list(axes))
    x, t = x.reshape(shape), t.reshape(shape)
    mask, count = _max_positions(x, jnp.expand_dims(jnp.squeeze(y, axes), at), at, kind)
    dy = jnp.sum(jnp.where(mask, t, jnp.zeros((), t.dtype)), axis=at) / count.astype(t.dtype)
    if keepdims:
        return y, jnp.expand_dims(dy, axes)
    return jnp.squeeze(y, axes), dy


def _max_positions(x, y, axis: int, kind: str = "max"):
    """``(mask, count)``: the elements of ``x`` that share in the derivative of their maximum
    (``kind="min"``: minimum) ``y`` along ``axis`` (``y`` kept as size 1 there) -- those
    equal to ``y`` and the first maximum that an argmax of ``x`` finds, whether or not it
    equals ``y`` bit for bit -- and how many they are (at least 1) per slice, ``axis``
    removed."""
    first = jnp.expand_dims((jnp.argmax if kind == "max" else jnp.argmin)(x, axis=axis), axis)
    mask = (x == y) | (jax.lax.broadcasted_iota(first.dtype, x.shape, axis % x.ndim) == first)
    return mask, jnp.sum(mask, axis=axis)


def empty_pooling_error(ctx, shape: tuple[int, ...], axes: tuple[int, ...]) -> ValueError:
    """The refusal of a Keras 3 max pooling layer (``GlobalMaxPooling``, adaptive max
    pooling) whose input of ``shape`` has size 0 on one of the pooled ``axes``: nothing to
    take the maximum of, and Keras 3 raises there too (NumPy's and JAX's zero-size error,
    "Cannot compute the max of an empty tensor" on TensorFlow); a clear error, not
    ``jnp.max``'s (or a ZeroDivisionError)."""
    empty = [a for a in axes if shape[a] == 0]
    return ValueError(
        f"{ctx.class_name} layer '{ctx.layer_name}' of an input of shape {tuple(shape)}: "
        f"expected a non-empty axis to pool over, got size 0 on axis {empty[0]}, which has no "
        "maximum (Keras 3 raises too: 'zero-size array to reduction operation maximum'); give "
        "the model at least one step (pixel) there, e.g. pad an empty sequence to length 1")


def _make_global(rank, reduce):
    def convert(config, ctx):
        cf = config.get("data_format") == "channels_first"
        keepdims = bool(config.get("keepdims", False))
        axes = tuple(range(2, 2 + rank)) if cf else tuple(range(1, 1 + rank))

        def call(params, x, *, rt):
            if reduce is jnp.max and any(x.shape[a] == 0 for a in axes):
                if ctx.keras_major >= 3:
                    raise empty_pooling_error(ctx, x.shape, axes)
                # tf.keras 2: backend.max, tf.reduce_max: an empty reduction is the identity
                # of Eigen's MaxReducer (-inf; the lowest integer), as tf.math.reduce_max's
                dt = jnp.result_type(x)
                low = (jnp.iinfo(dt).min if jnp.issubdtype(dt, jnp.integer) else -jnp.inf)
                return jnp.max(x, axis=axes, keepdims=keepdims, initial=jnp.asarray(low, dt))
            if reduce is jnp.max:
                return rt.pool(lambda v: reduce_max(v, axes, keepdims), x)
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
        return reduce_max(x, axis + 1) if kind == "max" else jnp.mean(x, axis=axis + 1)
    if kind == "avg":
        w = jnp.asarray(_adaptive_mean_matrix(n_in, n_out), x.dtype)
        return jnp.moveaxis(jnp.tensordot(x, w, axes=(axis, 0)), -1, axis)
    idx = _adaptive_max_indices(n_in, n_out)
    g = jnp.take(x, idx.reshape(-1), axis=axis)
    g = g.reshape(x.shape[:axis] + idx.shape + x.shape[axis + 1:])
    return reduce_max(g, axis + 1)


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

        last = _to_last(call, cf)
        axes = tuple(range(2, 2 + rank)) if cf else tuple(range(1, 1 + rank))

        def checked(params, x, *, rt):
            if kind == "max" and x.ndim == rank + 2 and any(x.shape[a] == 0 for a in axes):
                raise empty_pooling_error(ctx, x.shape, axes)
            return last(params, x, rt=rt)

        return LayerImpl(call=checked, relevance=True,
                         data_format="channels_first" if cf else "channels_last")
    return convert


for _rank in (1, 2, 3):
    register_layer(f"AdaptiveAveragePooling{_rank}D")(_make_adaptive(_rank, "avg"))
    register_layer(f"AdaptiveMaxPooling{_rank}D")(_make_adaptive(_rank, "max"))
