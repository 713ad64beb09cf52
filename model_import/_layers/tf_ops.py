"""tf.keras 2 ``TFOpLambda`` / ``SlicingOpLambda``: TensorFlow functions applied to symbolic
tensors (``x + 3.0`` -> ``__operators__.add``, ``tf.reduce_mean`` -> ``math.reduce_mean``,
``x[:, 0]`` -> ``__operators__.getitem``), as tf.keras's MobileNetV3 and many user models
contain. The config names the TF function; the node holds its arguments (the first tensor
positionally, the rest by TF's parameter names). Functions not listed here raise an
:class:`UnsupportedLayerError` naming the function.

Each translation takes exactly the TF keywords it implements (its signature says which;
``tf.matmul``'s ``a_is_sparse``-style hints are among them, as they do not change the result),
plus ``name``; ``_ACCEPTED`` lists the TF keywords it does not implement that are accepted at
TF's default value only. Any other keyword, or a value a translation does not implement,
raises an :class:`UnsupportedLayerError` naming the layer, the function and the argument. The
keywords come with the layer's call (the node), not its config, so that happens when the
graph is first traced: ``load_keras`` traces it once, abstractly, and reports the error as a
:class:`KerasImportError` (the file named) at load time.

A function with several results (``tf.split``, ``tf.unstack``, ``tf.math.top_k``) returns a
tuple, which later layers index by tensor position. ``tf.shape`` gives a NumPy array: shapes
are static in JAX (each batch size is traced apart), so sizes computed from it
(``tf.reshape(x, [tf.shape(x)[0], -1, d])``, ``tf.shape(x)[1] // 2``, a ``tf.stack`` of sizes)
stay static and a reshape takes them under ``jit`` and ``vmap``; a size computed from a
tensor's values is refused. tf.keras records ``tf.einsum`` without its operands and
``tf.nn.moments`` as the reductions it is made of (``reduce_mean``, ``stop_gradient``,
``squared_difference``). A constant kernel of ``tf.nn.conv2d`` and the other convolutions (a
NumPy array or ``tf.constant``) is recorded in the call as a nested list of its values.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from typing import Any

import flax.linen as flax_nn
import jax
import jax.numpy as jnp
import numpy as np

from model_import._layers.activations import act_on_first, elementwise_of_one, relu_family
from model_import._layers.conv import _DIMS
from model_import._layers.image import keys_cubic, resize_axes
from model_import._layers.normalization import l2_normalized
from model_import._layers.pooling import (_blocked_max, _reduced_axes, avg_pool, reduce_max,
                                         reduce_min)
from model_import._layers.registry import LayerImpl, register_layer


class _Refused(Exception):
    """A keyword value the translation does not implement (turned into ``ctx.error``)."""


def _axis(v):
    return tuple(v) if isinstance(v, list) else v


def _const(v, like=None):
    """A constant operand recorded as a (nested) Python list (``x * tf.constant([1., 2.])``)
    as an array: of the other operand's dtype, as TF converts it, else float32 (floats) or
    int32 (integers). Scalars stay Python numbers (weakly typed, as in TF)."""
    if not isinstance(v, (list, tuple)):
        return v
    if hasattr(like, "dtype"):
        return jnp.asarray(v, dtype=like.dtype)
    a = np.asarray(v)
    return jnp.asarray(a, dtype=jnp.float32 if a.dtype.kind == "f" else None)


def _operands(x, y):
    return _const(x, _const(y)), _const(y, _const(x))


def _is_static(v) -> bool:
    """A value known when the graph is traced: not a tensor (a constant, or a NumPy value
    computed from ``tf.shape``)."""
    return not isinstance(v, jax.Array)


def _binary(fn, pair=False, static=None):
    """The tf.keras call of a binary elementwise ``fn`` (see ``elementwise_of_one``).
    ``static``: the same function in NumPy, used where both operands are static and one is a
    NumPy value (``tf.shape(x)[1] // 2``: sizes, which must stay static under ``jit`` for a
    reshape to take them)."""
    f = elementwise_of_one(fn, _operands, pair)

    def g(rt, x, y):
        if static is not None and _is_static(x) and _is_static(y) and (
                isinstance(x, (np.ndarray, np.generic)) or isinstance(y, (np.ndarray,
                                                                          np.generic))):
            return static(np.asarray(x) if isinstance(x, list) else x,
                          np.asarray(y) if isinstance(y, list) else y)
        return f(rt, x, y)
    return g


def _floor_div(xp):
    """TF's ``FloorDiv`` in ``xp`` (``jnp``, or ``np`` for static operands): ``floor(x / y)``
    for floats, as TF computes it (NumPy's ``floor_divide`` is ``(x - fmod(x, y)) / y``, one
    less where ``x / y`` rounds to an integer: ``1.0 // 0.1`` is 9 there, 10 in TF), the
    floored integer division for integers."""
    def f(x, y):
        if xp.issubdtype(xp.result_type(x, y), xp.integer):
            return xp.floor_divide(x, y)
        return xp.floor(xp.true_divide(x, y))
    return f


def _static_truediv(x, y):
    """``x / y`` of static values (sizes from ``tf.shape``) in NumPy, with TF's ``truediv``
    dtypes: integers of up to 16 bits divided in float32, wider ones in float64 (``tf.shape(x)
    [1] / 2`` is float64 in TF), floats in their own type."""
    dt = np.result_type(x, y)
    if dt.kind in "iub":
        dt = np.dtype(np.float32 if dt.itemsize <= 2 else np.float64)
    return np.true_divide(np.asarray(x, dt), np.asarray(y, dt))


def _tf_maximum(x, y):
    """``tf.math.maximum``: ``jnp.maximum``'s values (NaN propagated) with TF's gradient,
    all of it to ``x`` where ``x >= y`` (``jnp.maximum`` splits a tie in halves: half the
    gradient of ``tf.maximum(x, 0.)`` at 0)."""
    return jnp.where((x >= y) | jnp.isnan(x), x, y)


def _tf_minimum(x, y):
    """``tf.math.minimum``: as :func:`_tf_maximum`, the gradient to ``x`` where ``x <= y``."""
    return jnp.where((x <= y) | jnp.isnan(x), x, y)


@jax.custom_jvp
def _abs_real(x):
    return jnp.abs(x)


@_abs_real.defjvp
def _abs_real_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return jnp.abs(x), jnp.sign(x) * t


def _tf_abs(rt, x):
    """``tf.math.abs``: of real floats with TF's gradient ``sign(x)``, 0 at 0 (``jnp.abs``'s
    is 1 there); of complex values the magnitude."""
    x = jnp.asarray(x)
    return _abs_real(x) if jnp.issubdtype(x.dtype, jnp.floating) else jnp.abs(x)


def _tf_leaky_relu(rt, features, alpha=0.2):
    """``tf.nn.leaky_relu``: TF's ``features > 0 ? features : alpha * features`` (its
    gradient ``alpha`` at 0, ``jax.nn.leaky_relu``'s 1); integers cast to float32 first, as
    TF does."""
    x = jnp.asarray(features)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.float32)
    return jnp.where(x > 0, x, alpha * x)


def _pairwise(fn):
    """``fn`` of two operands, a constant one taking the other's dtype (comparisons and
    logical functions: no gradient, so no attribution rule)."""
    def f(rt, x, y):
        return fn(*_operands(x, y))
    return f


def _where(condition, x, y):
    if x is None or y is None:  # tf.where(condition): the indices, a data-dependent shape
        raise _Refused("tf.where(condition) without x and y (the indices of the true "
                       "elements: their number depends on the data) is not supported")
    x, y = _operands(x, y)
    return jnp.where(condition, x, y)


def _cast_dtype(dtype) -> Any:
    """``tf.cast``'s target as the dtype computed here: floating types as float32 (jaxsal
    computes in float32, as it reads the weights), 64-bit integers as 32-bit ones (JAX's
    default), the others as named."""
    name = str(getattr(dtype, "name", dtype))
    if name.startswith(("float", "bfloat")):
        return jnp.float32
    if name in ("bool", "int8", "uint8", "int16", "uint16", "int32", "uint32"):
        return jnp.dtype(name)
    if name in ("int64", "uint64"):
        return jnp.int32 if name == "int64" else jnp.uint32
    raise _Refused(f"cast to {name!r} is not supported (supported: floating types, bool and "
                   f"integer types)")


def _squared_difference(x, y):
    return jnp.square(x - y)


def _reduce(fn):
    def f(rt, input_tensor, axis=None, keepdims=False):
        return fn(input_tensor, axis=_axis(axis), keepdims=bool(keepdims))
    return f


def _tf_mean(x, axis=None, keepdims=False):
    """``tf.math.reduce_mean``: ``jnp.mean``, and of integers TF's integer mean: the sum in
    the input's dtype divided by the count, rounded toward zero, of the same dtype
    (``tf.reduce_mean([1, 0, 1, 0])`` is 0)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.integer):
        return jnp.mean(x, axis=axis, keepdims=keepdims)
    total = jnp.sum(x, axis=axis, keepdims=keepdims, dtype=x.dtype)
    count = max(x.size // max(total.size, 1), 1)
    return jax.lax.div(total, jnp.full_like(total, count))


def _tf_extremum(kind: str):
    """``tf.math.reduce_max`` (``kind="max"``) / ``reduce_min``: :func:`reduce_max`
    (:func:`reduce_min`), and over an empty reduction (a reduced axis of size 0) TensorFlow's
    value instead of ``jnp.max``'s zero-size error: its ``Max`` kernel fills an empty
    reduction with Eigen's ``MaxReducer`` initial value (``FillIdentityEigenImpl``,
    tensorflow/core/kernels/reduction_ops.h; Eigen's ``MinMaxBottomValue``), ``-inf``
    (``reduce_min``: ``+inf``) for floats and the dtype's lowest (highest) value for
    integers; ``tf.reduce_max(tf.constant([]))`` is ``-inf``."""
    reduce = reduce_max if kind == "max" else reduce_min

    def f(rt, input_tensor, axis=None, keepdims=False):
        x, axis, keepdims = jnp.asarray(input_tensor), _axis(axis), bool(keepdims)
        dt, axes = x.dtype, _reduced_axes(axis, x.ndim)
        empty = bool(axes) and math.prod(x.shape[a] for a in axes) == 0
        if empty and jnp.issubdtype(dt, jnp.floating):
            start = -np.inf if kind == "max" else np.inf
        elif empty and jnp.issubdtype(dt, jnp.integer):
            start = jnp.iinfo(dt).min if kind == "max" else jnp.iinfo(dt).max
        else:
            return reduce(x, axis=axis, keepdims=keepdims)
        plain = jnp.max if kind == "max" else jnp.min  # nothing to differentiate
        return plain(x, axis=axes, keepdims=keepdims, initial=jnp.asarray(start, dt))
    return f


def _swap(a, conj):
    a = jnp.swapaxes(a, -1, -2)
    return jnp.conj(a) if conj and jnp.iscomplexobj(a) else a


def _matmul(rt, a, b, transpose_a=False, transpose_b=False, adjoint_a=False,
            adjoint_b=False, a_is_sparse=False, b_is_sparse=False, grad_a=False, grad_b=False):
    # a_is_sparse / b_is_sparse / grad_a / grad_b are hints for TF's kernels: same result
    a, b = _operands(a, b)
    if (transpose_a and adjoint_a) or (transpose_b and adjoint_b):
        raise _Refused("transpose and adjoint of the same operand (TF raises too)")
    if transpose_a or adjoint_a:
        a = _swap(a, adjoint_a)
    if transpose_b or adjoint_b:
        b = _swap(b, adjoint_b)
    return jnp.matmul(a, b)


def _softmax(fn):
    def f(rt, logits, axis=None):  # TF: axis=None is the last axis
        if fn is jax.nn.softmax:
            return rt.softmax_of(logits, -1 if axis is None else axis)
        return fn(logits, axis=-1 if axis is None else axis)
    return f


def _transpose(rt, a, perm=None, conjugate=False):
    y = jnp.transpose(a, None if perm is None else tuple(perm))
    return jnp.conj(y) if conjugate and jnp.iscomplexobj(y) else y


def _squeeze(rt, input, axis=None):
    return jnp.squeeze(input, _axis(axis))


def _squeeze_v1(rt, input, axis=None, squeeze_dims=None):
    return _squeeze(rt, input, axis if axis is not None else squeeze_dims)


def _nearest_tf(n_in: int, n_out: int) -> np.ndarray:
    """The input row of each output row of TF's nearest-neighbour resize (half-pixel
    centres): ``min(floor((j + 0.5) * (n_in / n_out)), n_in - 1)`` in float32, as TF's
    kernel computes it (the ties fall as there)."""
    scale = np.float32(n_in) / np.float32(n_out)
    j = np.arange(n_out, dtype=np.float32)
    return np.minimum(np.floor((j + np.float32(0.5)) * scale).astype(np.int64), n_in - 1)


def _aspect_size(ih: int, iw: int, h: int, w: int) -> tuple[int, int]:
    """TF's ``preserve_aspect_ratio``: the largest size within ``(h, w)`` with the image's
    aspect ratio, from one scale factor (float32, rounded half to even)."""
    scale = min(np.float32(h) / np.float32(ih), np.float32(w) / np.float32(iw))
    return (int(np.round(np.float32(scale) * np.float32(ih))),
            int(np.round(np.float32(scale) * np.float32(iw))))


def _resize(rt, images, size, method="bilinear", preserve_aspect_ratio=False,
            antialias=False):
    if method not in ("bilinear", "bicubic", "nearest", "area", "lanczos3", "lanczos5"):
        raise _Refused(f"method={method!r} is not supported (supported: 'bilinear', "
                       "'bicubic', 'nearest', 'area', 'lanczos3', 'lanczos5')")
    if images.ndim != 4:
        raise _Refused(f"images of rank {images.ndim} are not supported (batch, height, "
                       "width, channels only)")
    sizes = _static_ints(size, "size")
    if len(sizes) != 2:
        raise _Refused(f"size={_show(size)} is not [new_height, new_width] (TF refuses it "
                       "too)")
    h, w = sizes
    if preserve_aspect_ratio:
        h, w = _aspect_size(images.shape[1], images.shape[2], h, w)
    shape = (images.shape[0], h, w, images.shape[-1])
    if method == "nearest":  # TF: half-pixel centres, no antialiasing
        return images[:, _nearest_tf(images.shape[1], h)][:, :, _nearest_tf(images.shape[2],
                                                                            w)]
    if method == "area":  # TF's ResizeArea (no antialiasing either); floats out
        return resize_axes(images.astype(jnp.float32), (1, 2), (h, w), "area")
    if method.startswith("lanczos"):  # TF's ScaleAndTranslate; floats out
        return resize_axes(images.astype(jnp.float32), (1, 2), (h, w), method,
                           antialias=bool(antialias), backend="tensorflow")
    if method == "bicubic" and not antialias:  # TF's ResizeBicubic: see resize_matrix
        # floats out, at the image's own size too (TF 2's resize never returns early): an
        # integer image's overshoot below 0 and above its dtype's maximum is kept
        return resize_axes(images.astype(jnp.float32), (1, 2), (h, w), "bicubic",
                           backend="tensorflow")
    return jax.image.resize(images, shape, method="linear" if method == "bilinear" else "cubic",
                            antialias=bool(antialias))


def _add_n(rt, inputs):
    inputs = list(inputs)
    return sum(inputs[1:], inputs[0])


def _clip(rt, t, clip_value_min, clip_value_max):
    """``tf.clip_by_value``: as TF, ``maximum(minimum(t, max), min)``, so the gradient is 1 at
    both bounds (``jnp.clip``'s is 1/2 there: a pixel exactly on a bound)."""
    return _tf_maximum(_tf_minimum(t, _const(clip_value_max, t)), _const(clip_value_min, t))


# ------------------------------------------------------------- static sizes (tf.shape)
def _shape_of(rt, input, out_type=None):
    """``tf.shape``: the input's shape, static in JAX (each traced call has concrete
    shapes, every batch size its own trace), so a NumPy array: sizes computed from it
    (``tf.shape(x)[0]``, ``tf.shape(x)[1] // 2``) stay static and a reshape can take them."""
    name = str(getattr(out_type, "name", out_type))
    if out_type is not None and name not in ("int32", "int64"):
        raise _Refused(f"out_type={name!r} is not supported (supported: 'int32', 'int64', "
                       "computed as int32)")
    return np.asarray(jnp.shape(input), dtype=np.int32)


def _static_ints(v, what: str) -> tuple:
    """A shape-like argument (a list of sizes, some computed from ``tf.shape``; or the NumPy
    array of ``tf.stack``-ed sizes) as Python ints."""
    if isinstance(v, jax.Array) or (isinstance(v, (list, tuple))
                                    and any(isinstance(e, jax.Array) for e in v)):
        raise _Refused(f"{what}=<computed from a tensor> is not supported: it depends on "
                       "the values of a tensor, and JAX needs sizes when it traces the model "
                       "(sizes computed from tf.shape stay static through indexing, "
                       "tf.stack/concat, tf.cast, +, -, *, /, //, %, tf.maximum/minimum and "
                       f"tf.math.{'/'.join(sorted(n[5:] for n in _STATIC_UNARY))}: compute "
                       "the size with those)")
    return tuple(int(e) for e in np.asarray(v).reshape(-1))


def _static_int(v, what: str) -> int:
    """A size-like argument (``k``, ``depth``, ``maxlen``...) as a Python int: the first of
    :func:`_static_ints`."""
    return _static_ints(v, what)[0]


def _stack(rt, values, axis=0):
    values = list(values)
    if all(_is_static(v) for v in values):  # sizes: tf.stack([tf.shape(x)[0], -1, 8])
        return np.stack([np.asarray(v) for v in values], axis=axis).astype(
            np.result_type(*values))
    return jnp.stack(values, axis=axis)


def _concat(rt, values, axis):
    values = list(values)
    if all(_is_static(v) for v in values):  # sizes: tf.concat([tf.shape(x)[:1], [-1]], 0)
        known = [v for v in values if isinstance(v, (np.ndarray, np.generic))]
        dt = np.result_type(*known) if known else None
        return np.concatenate([np.asarray(v, dtype=dt) for v in values], axis=axis)
    like = next(v for v in values if isinstance(v, jax.Array))
    return jnp.concatenate([_const(v, like) for v in values], axis=axis)


def _range(rt, start, limit=None, delta=1, dtype=None):
    """``tf.range`` of sizes (``tf.range(tf.shape(x)[1])``): a static NumPy array, int32 for
    integer bounds and float32 if one is a float (TF's inference), else of ``dtype``."""
    for name, v in (("start", start), ("limit", limit), ("delta", delta)):
        if isinstance(v, jax.Array):
            raise _Refused(f"{name}=<computed from a tensor> is not supported: the length "
                           "would depend on the values of a tensor (bounds from tf.shape are "
                           "static)")
    if limit is None:
        start, limit = 0, start
    if dtype is not None:
        dt = _cast_dtype(dtype)
    elif any(np.asarray(v).dtype.kind == "f" for v in (start, limit, delta)):
        dt = np.float32
    else:
        dt = np.int32
    return np.arange(np.asarray(start, dt), np.asarray(limit, dt), np.asarray(delta, dt),
                     dtype=dt)


def _reshape(rt, tensor, shape):
    return jnp.reshape(tensor, _static_ints(shape, "shape"))


# ----------------------------------------------------------------- padding, slicing, order
_PAD_MODES = {"CONSTANT": "constant", "REFLECT": "reflect", "SYMMETRIC": "symmetric"}


def _pad(rt, tensor, paddings, mode="CONSTANT", constant_values=0):
    mode_name = str(mode).upper()  # TF reads the mode case-insensitively
    if mode_name not in _PAD_MODES:
        raise _Refused(f"mode={mode!r} is not supported (supported: 'CONSTANT', 'REFLECT', "
                       "'SYMMETRIC')")
    pads = np.asarray(_static_ints(paddings, "paddings")).reshape(-1, 2)
    if pads.shape[0] != tensor.ndim or (pads < 0).any():
        raise _Refused(f"paddings={paddings!r} is not one (before, after) pair of "
                       f"non-negative sizes per axis of the rank-{tensor.ndim} input")
    if mode_name != "CONSTANT":  # TF: at most size - 1 (REFLECT) or size (SYMMETRIC)
        limit = np.asarray(tensor.shape) - (mode_name == "REFLECT")
        if (pads > limit[:, None]).any():
            raise _Refused(f"paddings={paddings!r} exceed what mode={mode!r} allows for an "
                           f"input of shape {tuple(tensor.shape)} (TF refuses them too)")
        return jnp.pad(tensor, [tuple(p) for p in pads.tolist()], mode=_PAD_MODES[mode_name])
    if isinstance(constant_values, jax.Array) and constant_values.ndim:
        raise _Refused(f"constant_values={_show(constant_values)} is not supported (a "
                       "scalar)")
    return jnp.pad(tensor, [tuple(p) for p in pads.tolist()],
                   constant_values=jnp.asarray(constant_values, tensor.dtype))


def _pieces(spec, axis_size: int) -> list[int]:
    """``tf.split``'s sizes: ``n`` equal ones, or the listed ones (one ``-1``: the rest)."""
    if np.ndim(spec) == 0:  # a number (or a size computed from tf.shape)
        spec = int(spec)
        if spec <= 0 or axis_size % spec:
            raise _Refused(f"num_or_size_splits={spec} does not divide the axis of size "
                           f"{axis_size} (TF refuses it too)")
        return [axis_size // spec] * spec
    sizes = list(_static_ints(spec, "num_or_size_splits"))
    if sizes.count(-1) > 1 or any(s < -1 for s in sizes):
        raise _Refused(f"num_or_size_splits={spec!r}: sizes must be >= 0, one may be -1")
    if -1 in sizes:
        sizes[sizes.index(-1)] = axis_size - (sum(sizes) + 1)
    if sum(sizes) != axis_size or min(sizes) < 0:
        raise _Refused(f"num_or_size_splits={spec!r} does not sum to the axis size "
                       f"{axis_size} (TF refuses it too)")
    return sizes


def _split(rt, value, num_or_size_splits, axis=0, num=None):
    axis = int(axis)
    if isinstance(num_or_size_splits, jax.Array):
        raise _Refused("num_or_size_splits=<a tensor> is not supported (a number or a list "
                       "of sizes)")
    sizes = _pieces(num_or_size_splits, value.shape[axis])
    if num is not None and int(num) != len(sizes):
        raise _Refused(f"num={num!r} is not the number of pieces, {len(sizes)}")
    cuts = np.cumsum(sizes)[:-1].tolist()
    return tuple(jnp.split(value, cuts, axis=axis))


def _unstack(rt, value, num=None, axis=0):
    axis = int(axis)
    if num is not None and int(num) != value.shape[axis]:
        raise _Refused(f"num={num!r} is not the size {value.shape[axis]} of axis {axis} "
                       "(TF refuses it too)")
    if _is_static(value):  # sizes: `n, h, w, c = tf.unstack(tf.shape(x))` stay static
        return tuple(np.moveaxis(np.asarray(value), axis, 0))
    return tuple(jnp.moveaxis(value, axis, 0))


def _gather(rt, params, indices, axis=None, batch_dims=0):
    """``tf.gather``: ``params`` indexed along ``axis`` (``None``: ``batch_dims``) by
    ``indices``, the first ``batch_dims`` axes of both taken in step. Out-of-range constant
    indices are refused (TF raises on CPU); for tensor indices they are clamped. Static
    ``params`` and ``indices`` (sizes: ``tf.gather(tf.shape(x), [0, 2])``) give a static
    result."""
    if isinstance(params, (list, tuple)):  # a constant table: float32 or int32, as TF
        table = np.asarray(params)
        params = table.astype({"f": np.float32, "i": np.int32, "u": np.int32}.get(
            table.dtype.kind, table.dtype))
    if isinstance(indices, (list, tuple, int, np.integer, np.ndarray)):
        indices = np.asarray(indices)
        if indices.dtype.kind not in "iu":
            raise _Refused(f"indices={_show(indices.tolist())} are not integers")
    b = int(batch_dims)
    b = b + indices.ndim if b < 0 else b
    a = b if axis is None else int(axis)
    a = a + params.ndim if a < 0 else a
    if not 0 <= b <= min(a, indices.ndim):
        raise _Refused(f"batch_dims={batch_dims!r} must be at most axis={axis!r} and the "
                       "rank of indices (TF refuses it too)")
    if isinstance(indices, np.ndarray) and indices.size and (
            indices.min() < 0 or indices.max() >= params.shape[a]):
        raise _Refused(f"indices={indices.tolist()!r} are out of range for axis {a} of size "
                       f"{params.shape[a]} (TF raises on CPU)")

    if _is_static(params) and isinstance(indices, np.ndarray) and b == 0:
        return np.take(np.asarray(params), indices, axis=a)

    def take(p, i):
        return jnp.take(p, i, axis=a - b, mode="clip")

    for _ in range(b):
        take = jax.vmap(take)
    return take(params, jnp.asarray(indices))


def _reverse(rt, tensor, axis):
    return jnp.flip(tensor, tuple(int(a) for a in np.asarray(axis).reshape(-1)))


def _image_flip(height: bool):
    def f(rt, image):
        if image.ndim not in (3, 4):
            raise _Refused(f"an image of rank {image.ndim} is not supported (rank 3 or 4, "
                           "as in TF)")
        return jnp.flip(image, image.ndim - (3 if height else 2))
    return f


def _roll(rt, input, shift, axis):
    shift, axis = np.asarray(shift).reshape(-1), np.asarray(axis).reshape(-1)
    if shift.size != axis.size:
        raise _Refused(f"shift={shift.tolist()} and axis={axis.tolist()} differ in length")
    return jnp.roll(input, tuple(int(s) for s in shift), tuple(int(a) for a in axis))


def _repeat(rt, input, repeats, axis=None):
    reps = np.asarray(_static_ints(repeats, "repeats"))
    return jnp.repeat(input, reps[0] if reps.size == 1 else reps,
                      axis=None if axis is None else int(axis))


def _broadcast_to(rt, input, shape):
    return jnp.broadcast_to(input, _static_ints(shape, "shape"))


def _tile(rt, input, multiples):  # a constant input too (tf.image.sobel_edges' kernels)
    return jnp.tile(_const(input), _static_ints(multiples, "multiples"))


def _top_k(rt, input, k=1, sorted=True, index_type=None):
    if not sorted:
        raise _Refused("sorted=False (TF leaves the order to its kernel) is not supported")
    name = str(getattr(index_type, "name", index_type))
    if index_type is not None and name not in ("int32", "int64"):
        raise _Refused(f"index_type={name!r} is not supported (supported: 'int32', 'int64', "
                       "computed as int32)")
    values, indices = jax.lax.top_k(input, _static_int(k, "k"))
    return values, indices.astype(jnp.int32)


def _arg(fn):
    def f(rt, input, axis=None, output_type="int64"):  # TF: axis=None is axis 0
        name = str(getattr(output_type, "name", output_type))
        if name not in ("int32", "int64"):
            raise _Refused(f"output_type={name!r} is not supported (supported: 'int32', "
                           "'int64', computed as int32)")
        return fn(input, axis=0 if axis is None else int(axis)).astype(jnp.int32)
    return f


def _one_hot(rt, indices, depth, on_value=None, off_value=None, axis=None, dtype=None):
    """TF: ``on_value`` (1) where the index equals the position along the new axis (last by
    default), else ``off_value`` (0); an index outside ``[0, depth)`` gives a row of
    ``off_value``. The dtype: ``dtype``, else that of the values given, else float32."""
    if dtype is not None:
        dt = _cast_dtype(dtype)
    elif any(isinstance(v, (float, np.floating)) for v in (on_value, off_value)):
        dt = jnp.float32
    elif on_value is not None or off_value is not None:
        dt = jnp.int32
    else:
        dt = jnp.float32
    depth = _static_int(depth, "depth")
    hot = jnp.asarray(indices)[..., None] == jnp.arange(depth)
    y = jnp.where(hot, jnp.asarray(1 if on_value is None else on_value, dt),
                  jnp.asarray(0 if off_value is None else off_value, dt))
    return y if axis is None or int(axis) == -1 else jnp.moveaxis(y, -1, int(axis))


# ------------------------------------------------------------------ reductions and scans
def _cumulative(fn, unit):
    def f(rt, x, axis=0, exclusive=False, reverse=False):
        axis = int(axis) % x.ndim
        if reverse:
            x = jnp.flip(x, axis)
        y = fn(x, axis=axis)
        if exclusive:  # shifted by one: the first is the empty sum (product)
            first = jnp.full_like(jax.lax.slice_in_dim(y, 0, 1, axis=axis), unit)
            y = jnp.concatenate([first, jax.lax.slice_in_dim(y, 0, -1, axis=axis)], axis)
        return jnp.flip(y, axis) if reverse else y
    return f


def _logsumexp(x, axis=None, keepdims=False):
    return jax.scipy.special.logsumexp(x, axis=axis, keepdims=keepdims)


def _euclidean_norm(x, axis=None, keepdims=False):
    return jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=keepdims))


# --------------------------------------------------------------- normalization and bias
def _l2_normalize(rt, x, axis=None, epsilon=1e-12, dim=None):
    """``x * rsqrt(max(sum(x ** 2, axis), epsilon))`` (TF's formula: ``epsilon`` bounds the
    squared norm), over every axis for ``axis=None``; ``dim`` is TF's old name of ``axis``.
    Computed as ``UnitNormalization`` is: the values times their held inverse norm."""
    if dim is not None and axis is not None:
        raise _Refused(f"axis={axis!r} and dim={dim!r} are both given (TF refuses it too)")
    axis = _axis(dim if axis is None else axis)
    eps = float(epsilon)
    return l2_normalized(rt, x, axis, lambda v: jax.lax.rsqrt(jnp.maximum(v, eps)))


def _bias_add(rt, value, bias, data_format=None):
    """``value + bias`` along the channels: the last axis (``data_format`` ``None`` or
    ``N...C``), or axis 1 (``NC...``)."""
    fmt = "NHWC" if data_format is None else str(data_format)
    if not (fmt.startswith("NC") or (fmt.startswith("N") and fmt.endswith("C"))):
        raise _Refused(f"data_format={data_format!r} is not supported ('N...C' or 'NC...', "
                       "as in TF)")
    bias = _const(bias, value)
    channels = value.shape[1 if fmt.startswith("NC") else -1]
    if jnp.ndim(bias) != 1 or jnp.shape(bias)[0] != channels:
        raise _Refused(f"bias={_show(bias)} is not one value per channel ({channels}; TF "
                       "refuses it too)")
    if fmt.startswith("NC") and value.ndim > 2:
        bias = jnp.reshape(bias, (-1,) + (1,) * (value.ndim - 2))
    return _binary(jnp.add)(rt, value, bias)


# ---------------------------------------------------------------------------- images
#: The channels-last layouts of TF's poolings of 1, 2 and 3 spatial axes (``None``: the same).
_POOL_FORMATS = {1: "NWC", 2: "NHWC", 3: "NDHWC"}


def _window(v: list[int], n: int, what: str, why: str) -> tuple[int, ...]:
    """A window's sizes over ``n`` spatial axes (channels last) from TF's form: an int,
    ``n`` ints, or ``n + 2`` with ones at the batch and channel positions; ``why`` ends the
    refusal of other forms."""
    if len(v) == n + 2 and v[0] == v[-1] == 1:
        return tuple(v[1:-1])
    if len(v) == 1:
        return (v[0],) * n
    if len(v) == n:
        return tuple(v)
    raise _Refused(f"{what}={v} is not supported (an int, {n} ints, or {n + 2} with ones "
                   f"first and last{why})")


def _pool_window(v, n: int, what: str) -> tuple[int, ...]:
    """TF's ``ksize``/``strides`` of an ``n``-D pooling (see :func:`_window`)."""
    return _window([int(e) for e in np.asarray(v).reshape(-1)], n, what,
                   "; TF does not pool over the batch or channels on CPU")


def _pool(kind: str, n: int | None):
    """``tf.nn.max_pool{n}d`` / ``avg_pool{n}d`` (``n=None``: ``tf.nn.avg_pool``, ``n``
    from the input's rank), channels last, ``VALID`` or ``SAME``: a ``SAME`` window is
    padded with -inf (max) or averaged over its elements inside the input only (TF's
    average)."""
    def f(rt, input, ksize, strides, padding, data_format=None):
        rank = input.ndim - 2 if n is None else n
        if rank not in _POOL_FORMATS or input.ndim != rank + 2:
            raise _Refused(f"an input of rank {input.ndim} is not supported")
        if data_format not in (None, _POOL_FORMATS[rank]):  # TF's CPU kernels refuse NC..
            raise _Refused(f"data_format={data_format!r} is not supported "
                           f"({_POOL_FORMATS[rank]!r} only)")
        if padding not in ("VALID", "SAME"):
            raise _Refused(f"padding={_show(padding)} is not supported ('VALID', 'SAME')")
        pool = _pool_window(ksize, rank, "ksize")
        strides = _pool_window(strides, rank, "strides")
        if kind == "max":
            if padding == "VALID" and strides == pool:
                return rt.pool(lambda v: _blocked_max(v, pool), input)
            return rt.pool(lambda v: flax_nn.max_pool(v, pool, strides, padding), input)
        return avg_pool(input, pool, strides, padding)
    return f


def _local_response_normalization(rt, input, depth_radius=5, bias=1.0, alpha=1.0,
                                  beta=0.5):
    """``tf.nn.local_response_normalization`` over the last axis of a 4-D input:
    ``x / (bias + alpha * s) ** beta``, ``s`` the sum of squares of the channels within
    ``depth_radius`` of each channel (fewer at the ends)."""
    if input.ndim != 4:
        raise _Refused(f"an input of rank {input.ndim} is not supported (rank 4, as in TF)")
    r = int(depth_radius)
    if r < 0:
        raise _Refused(f"depth_radius={depth_radius!r} must be >= 0 (TF refuses it too)")
    c = input.shape[-1]
    r = min(r, c - 1)  # channels further away are outside the input
    sq = jnp.pad(jnp.square(input), [(0, 0), (0, 0), (0, 0), (r, r)])
    window = sum(sq[..., k:k + c] for k in range(2 * r + 1))
    return input / jnp.power(float(bias) + float(alpha) * window, float(beta))


def _block_format(block_size, data_format):
    if data_format != "NHWC":
        raise _Refused(f"data_format={data_format!r} is not supported ('NHWC' only)")
    b = int(block_size)
    if b < 2:
        raise _Refused(f"block_size={block_size!r} must be at least 2 (TF refuses it too)")
    return b


def _depth_to_space(rt, input, block_size, data_format="NHWC"):
    """TF's order: output pixel ``(h * b + i, w * b + j)``, channel ``c`` is input channel
    ``(i * b + j) * C + c`` of pixel ``(h, w)``."""
    b = _block_format(block_size, data_format)
    n, h, w, c = input.shape
    if c % (b * b):
        raise _Refused(f"block_size={b}: {c} channels are not divisible by {b * b} (TF "
                       "refuses it too)")
    y = input.reshape(n, h, w, b, b, c // (b * b)).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(n, h * b, w * b, c // (b * b))


def _space_to_depth(rt, input, block_size, data_format="NHWC"):
    b = _block_format(block_size, data_format)
    n, h, w, c = input.shape
    if h % b or w % b:
        raise _Refused(f"block_size={b} does not divide the height {h} and width {w} (TF "
                       "refuses it too)")
    y = input.reshape(n, h // b, b, w // b, b, c).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(n, h // b, w // b, b * b * c)


def _extract_patches(rt, images, sizes, strides, rates, padding):
    """``tf.image.extract_patches``: the ``(kh, kw)`` patches (every ``rates``-th pixel)
    at every ``strides`` step, each flattened in (row, column, channel) order into the
    last axis; "SAME" pads with zeros, the extra pixel of an odd total after."""
    if images.ndim != 4:
        raise _Refused(f"images of rank {images.ndim} are not supported (rank 4, as in TF)")
    four = []
    for name, v in (("sizes", sizes), ("strides", strides), ("rates", rates)):
        v = [int(e) for e in np.asarray(v).reshape(-1)]
        if len(v) != 4 or v[0] != 1 or v[3] != 1:
            raise _Refused(f"{name}={v} must be [1, rows, cols, 1] (TF refuses it too)")
        four.append(v[1:3])
    (kh, kw), (sh, sw), (rh, rw) = four
    pad = str(padding).upper()
    if pad not in ("VALID", "SAME"):
        raise _Refused(f"padding={padding!r} is not supported ('VALID', 'SAME')")
    n, h, w, c = images.shape
    eh, ew = (kh - 1) * rh + 1, (kw - 1) * rw + 1  # the patch's extent
    if pad == "VALID":
        oh, ow = (h - eh) // sh + 1, (w - ew) // sw + 1
        x = images
    else:
        oh, ow = -(-h // sh), -(-w // sw)
        th, tw = max(0, (oh - 1) * sh + eh - h), max(0, (ow - 1) * sw + ew - w)
        x = jnp.pad(images, [(0, 0), (th // 2, th - th // 2), (tw // 2, tw - tw // 2),
                             (0, 0)])
    if oh <= 0 or ow <= 0:
        raise _Refused(f"sizes={sizes!r} with rates={rates!r}: patches of extent {(eh, ew)} "
                       f"do not fit images of size {(h, w)}")
    cells = [x[:, i * rh: i * rh + (oh - 1) * sh + 1: sh,
               j * rw: j * rw + (ow - 1) * sw + 1: sw, :]
             for i in range(kh) for j in range(kw)]
    return jnp.stack(cells, axis=3).reshape(n, oh, ow, kh * kw * c)


def _filled_like(value):
    def f(rt, input, dtype=None):
        dt = input.dtype if dtype is None else _cast_dtype(dtype)
        return jnp.full(input.shape, value, dt)
    return f


# ------------------------------------------------------------------ norms, bands, slices
def _norm(rt, tensor, ord="euclidean", axis=None, keepdims=None, keep_dims=None):
    """``tf.norm``: a vector norm over ``axis`` (an int; ``None``: every element) of order
    ``'euclidean'`` (2), 1, ``inf`` or any positive number, or a matrix norm over two axes
    (``'euclidean'``/``'fro'``, 1: the largest column sum, ``inf``: the largest row sum);
    ``keep_dims`` is TF's old name of ``keepdims``."""
    if keepdims is not None and keep_dims is not None:
        raise _Refused(f"keepdims={keepdims!r} and keep_dims={keep_dims!r} are both given "
                       "(TF refuses it too)")
    keep = bool(keepdims if keepdims is not None else keep_dims)
    matrix = isinstance(axis, (list, tuple)) and len(axis) == 2
    if matrix:
        axes = tuple(int(a) % tensor.ndim for a in axis)
        if axes[0] == axes[1] or ord not in ("euclidean", "fro", 1, np.inf):
            raise _Refused(f"ord={ord!r} over axis={axis!r} is not supported (matrix norms: "
                           "'euclidean', 'fro', 1, inf; TF's 2, a singular value, is not)")
    elif axis is not None and not isinstance(axis, int):
        raise _Refused(f"axis={axis!r} is not supported (None, an int or two ints, as in TF)")
    elif not (ord in ("euclidean", 1, 2, np.inf) or (isinstance(ord, (int, float))
                                                     and ord > 0)):
        raise _Refused(f"ord={ord!r} is not supported for a vector norm ('euclidean', 1, 2, "
                       "inf or a positive number, as in TF)")
    else:
        axes = None if axis is None else (int(axis),)
    if ord in ("euclidean", "fro", 2):
        y = jnp.sqrt(jnp.sum(jnp.square(tensor), axis=axes, keepdims=True))
    elif ord == 1:
        y = jnp.sum(jnp.abs(tensor), axis=None if axes is None else axes[0], keepdims=True)
        if matrix:
            y = reduce_max(y, axes[1], keepdims=True)
    elif ord == np.inf:
        y = jnp.abs(tensor)
        if matrix:
            y = jnp.sum(y, axis=axes[1], keepdims=True)
        y = reduce_max(y, None if axes is None else axes[0], keepdims=True)
    else:
        p = float(ord)
        y = jnp.power(jnp.sum(jnp.power(jnp.abs(tensor), p), axis=axes, keepdims=True), 1 / p)
    return y if keep else jnp.squeeze(y, axes)


def _band_part(rt, input, num_lower, num_upper):
    """``tf.linalg.band_part``: each innermost matrix with the entries more than
    ``num_lower`` below or ``num_upper`` above the diagonal set to zero (negative: none)."""
    lo, up = _static_int(num_lower, "num_lower"), _static_int(num_upper, "num_upper")
    m, n = input.shape[-2:]
    below = np.arange(m)[:, None] - np.arange(n)[None, :]  # i - j
    keep = ((lo < 0) | (below <= lo)) & ((up < 0) | (-below <= up))
    return jnp.where(keep, input, jnp.zeros((), input.dtype))


def _slice(rt, input_, begin, size):
    """``tf.slice``: ``size[i]`` elements from ``begin[i]`` along each axis (``-1``: the
    rest)."""
    b, s = _static_ints(begin, "begin"), _static_ints(size, "size")
    if len(b) != input_.ndim or len(s) != input_.ndim:
        raise _Refused(f"begin={list(b)} and size={list(s)} need one entry per axis of the "
                       f"rank-{input_.ndim} input")
    index = []
    for n, i, k in zip(input_.shape, b, s):
        k = n - i if k == -1 else k
        if i < 0 or k < 0 or i + k > n:
            raise _Refused(f"begin={list(b)}, size={list(s)} are out of range for an input "
                           f"of shape {tuple(input_.shape)} (TF refuses them too)")
        index.append(slice(i, i + k))
    return input_[tuple(index)]


def _sort(rt, values, axis=-1, direction="ASCENDING"):
    if direction not in ("ASCENDING", "DESCENDING"):
        raise _Refused(f"direction={direction!r} is not supported ('ASCENDING', "
                       "'DESCENDING', as in TF)")
    y = jnp.sort(values, axis=int(axis))
    return y if direction == "ASCENDING" else jnp.flip(y, int(axis))


def _divide_no_nan(x, y):
    """``x / y``, and 0 where ``y`` is 0 (its gradient there too)."""
    zero = y == 0
    return jnp.where(zero, jnp.zeros((), jnp.result_type(x, y)),
                     x / jnp.where(zero, jnp.ones((), jnp.result_type(y)), y))


# ------------------------------------------- order, normalization, strided slices (more)
def _argsort(rt, values, axis=-1, direction="ASCENDING", stable=False):
    """``tf.argsort``: TF takes ``top_k`` of the values (of their negation for
    ``ASCENDING``), which puts equal values in their input order both ways: a stable sort
    (``stable`` only asks for that). int32 indices, piecewise constant (no gradient), as
    ``tf.sort`` and ``tf.math.top_k``'s."""
    if direction not in ("ASCENDING", "DESCENDING"):
        raise _Refused(f"direction={direction!r} is not supported ('ASCENDING', "
                       "'DESCENDING', as in TF)")
    return jnp.argsort(values, axis=int(axis), stable=True,
                       descending=direction == "DESCENDING").astype(jnp.int32)


def _normalize(rt, tensor, ord="euclidean", axis=None):
    """``tf.linalg.normalize``: ``(tensor / norm, norm)``, the norm of ``tf.norm`` kept
    over its axes (two results, as in TF)."""
    norm = _norm(rt, tensor, ord=ord, axis=axis, keepdims=True)
    return tensor / norm, norm


def _clip_by_norm(rt, t, clip_norm, axes=None):
    """``tf.clip_by_norm``: ``t * clip_norm / max(norm, clip_norm)``, the L2 norm over
    ``axes`` (``None``: every element, the batch too, as in TF); TF's formula, whose
    gradient is finite where the norm is 0."""
    if isinstance(clip_norm, jax.Array) and clip_norm.ndim:
        raise _Refused(f"clip_norm={_show(clip_norm)} is not supported (a scalar, as TF "
                       "requires)")
    l2sum = jnp.sum(t * t, axis=None if axes is None else _static_ints(axes, "axes"),
                    keepdims=True)
    positive = l2sum > 0
    l2norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, l2sum, 1.0)), l2sum)
    clip = jnp.asarray(clip_norm, t.dtype)
    return t * clip / jnp.maximum(l2norm, clip)


def _strided_slice(rt, input_, begin, end, strides=None, begin_mask=0, end_mask=0,
                   ellipsis_mask=0, new_axis_mask=0, shrink_axis_mask=0):
    """``tf.strided_slice`` called directly: entry ``i`` of ``begin``/``end``/``strides``
    is ``begin[i]:end[i]:strides[i]``, an ``Ellipsis`` (bit ``i`` of ``ellipsis_mask``), a
    new axis (``new_axis_mask``) or the index ``begin[i]`` (``shrink_axis_mask``: the axis
    is dropped); bit ``i`` of ``begin_mask`` (``end_mask``) leaves that bound out. TF's
    bounds are Python's (negative from the end, clamped), so this is NumPy indexing."""
    b, e = _static_ints(begin, "begin"), _static_ints(end, "end")
    s = (1,) * len(b) if strides is None else _static_ints(strides, "strides")
    if not len(b) == len(e) == len(s):
        raise _Refused(f"begin={list(b)}, end={list(e)} and strides={list(s)} differ in "
                       "length (TF refuses them too)")
    masks = [int(m) for m in (begin_mask, end_mask, ellipsis_mask, new_axis_mask,
                              shrink_axis_mask)]
    begin_mask, end_mask, ellipsis_mask, new_axis_mask, shrink_axis_mask = masks
    if ellipsis_mask & (ellipsis_mask - 1):
        raise _Refused(f"ellipsis_mask={ellipsis_mask} sets more than one ellipsis (TF "
                       "refuses it too)")
    index = []
    for i in range(len(b)):
        bit = 1 << i
        if ellipsis_mask & bit:
            index.append(Ellipsis)
        elif new_axis_mask & bit:
            index.append(None)
        elif s[i] == 0:
            raise _Refused(f"strides={list(s)} has a zero stride (TF refuses it too)")
        elif shrink_axis_mask & bit:
            index.append((0 if s[i] > 0 else -1) if begin_mask & bit else b[i])
        else:
            index.append(slice(None if begin_mask & bit else b[i],
                               None if end_mask & bit else e[i], s[i]))
    shape = np.shape(input_)
    used = sum(1 for v in index if v is not None and v is not Ellipsis)
    if used > len(shape):
        raise _Refused(f"begin={list(b)} with new_axis_mask={new_axis_mask}, ellipsis_mask="
                       f"{ellipsis_mask} indexes {used} axes of a rank-{len(shape)} input (TF "
                       "refuses it too)")
    axis = 0  # the integer indices must be in range (JAX would clamp them)
    for v in index:
        if v is Ellipsis:
            axis += len(shape) - used
        elif isinstance(v, int):
            if not -shape[axis] <= v < shape[axis]:
                raise _Refused(f"begin={list(b)} with shrink_axis_mask={shrink_axis_mask}: "
                               f"index {v} is out of range for axis {axis} of size "
                               f"{shape[axis]} (TF refuses it too)")
            axis += 1
        elif v is not None:
            axis += 1
    return input_[tuple(index)]


# -------------------------------------------------------- convolutions (constant kernels)
_CONV_FORMATS = {1: ("NWC", "NHWC"), 2: ("NHWC",), 3: ("NDHWC",)}


def _conv_window(v, n: int, what: str) -> tuple[int, ...]:
    """A convolution's ``strides``/``dilations``: an int, ``n`` ints, or ``n + 2`` with
    ones at the batch and channel positions (``None``: ones)."""
    if v is None:
        return (1,) * n
    return _window(list(_static_ints(v, what)), n, what, ", as TF requires")


def _conv_padding(padding, n: int):
    if isinstance(padding, str) and padding.upper() in ("VALID", "SAME"):
        return padding.upper()
    try:
        pads = np.asarray(_static_ints(padding, "padding")).reshape(-1, 2)
    except (ValueError, TypeError):
        pads = None
    if pads is None or len(pads) != n + 2 or pads[0].any() or pads[-1].any() or (
            pads < 0).any():
        raise _Refused(f"padding={_show(padding)} is not supported ('VALID', 'SAME', or "
                       f"{n + 2} (before, after) pairs, zero for the batch and channels)")
    return [tuple(p) for p in pads[1:-1].tolist()]


def _conv_args(input, filters, n, data_format, what="filters"):
    """The input and the kernel (a constant recorded as a nested list, or a tensor) of an
    ``n``-D channels-last convolution, checked."""
    if data_format is not None and str(data_format) not in _CONV_FORMATS[n]:
        raise _Refused(f"data_format={data_format!r} is not supported (channels last: "
                       f"{' or '.join(map(repr, _CONV_FORMATS[n]))})")
    if filters is None:
        raise _Refused(f"no {what} given")
    k = _const(filters, input)
    if input.ndim != n + 2 or jnp.ndim(k) != n + 2:
        raise _Refused(f"an input of rank {input.ndim} and {what} of rank {jnp.ndim(k)} "
                       f"are not a {n}-D convolution's ({n + 2} and {n + 2})")
    return input, jnp.asarray(k, input.dtype)


def _conv_core(x, k, strides, padding, dilations, groups=1):
    return jax.lax.conv_general_dilated(x, k, strides, padding, rhs_dilation=dilations,
                                        dimension_numbers=_DIMS[k.ndim - 2],
                                        feature_group_count=groups)


def _conv(x, k, n, strides, padding, dilations, groups=1, what="filters"):
    if x.shape[-1] != k.shape[-2] * groups:
        raise _Refused(f"{what}=<a kernel of shape {tuple(k.shape)}> takes "
                       f"{k.shape[-2] * groups} input channels, the input has {x.shape[-1]} "
                       "(TF refuses it too)")
    strides, dilations = _conv_window(strides, n, "strides"), _conv_window(dilations, n,
                                                                          "dilations")
    return _conv_core(x, k, strides, _conv_padding(padding, n), dilations, groups)


def _conv_nd(n: int | None):
    """``tf.nn.conv{n}d`` / ``tf.nn.convolution`` (``n=None``: from the kernel's rank):
    channels last, ``VALID``, ``SAME`` or explicit padding."""
    def f(rt, input, filters, strides=None, padding="VALID", data_format=None,
          dilations=None):
        rank = n or jnp.ndim(_const(filters)) - 2
        if rank not in _CONV_FORMATS:
            raise _Refused(f"filters of rank {rank + 2} are not supported (1-D to 3-D)")
        x, k = _conv_args(input, filters, rank, data_format)
        return _conv(x, k, rank, strides, padding, dilations)
    return f


def _conv2d_v1(rt, input, filter=None, strides=None, padding=None, use_cudnn_on_gpu=True,
               data_format="NHWC", dilations=None, filters=None):
    """``tf.compat.v1.nn.conv2d``, which ``tf.nn.conv2d`` is recorded as (``filter`` or
    ``filters``; ``use_cudnn_on_gpu`` is a hint: same result)."""
    if filter is not None and filters is not None:
        raise _Refused("filter and filters are both given (TF refuses it too)")
    what = "filter" if filters is None else "filters"
    x, k = _conv_args(input, filter if filters is None else filters, 2, data_format, what)
    return _conv(x, k, 2, strides, padding, dilations, what=what)


def _conv1d_v1(rt, value=None, filters=None, stride=None, padding=None,
               use_cudnn_on_gpu=None, data_format=None, input=None, dilations=None):
    """``tf.compat.v1.nn.conv1d``, which ``tf.nn.conv1d`` is recorded as."""
    if value is not None and input is not None:
        raise _Refused("value and input are both given (TF refuses it too)")
    x, k = _conv_args(value if input is None else input, filters, 1, data_format)
    return _conv(x, k, 1, stride, padding, dilations)


def _depthwise(input, filter, strides, padding, rate, data_format, dilations, what):
    if rate is not None and dilations is not None:
        raise _Refused(f"rate={rate!r} and dilations={dilations!r} are both given (TF "
                       "refuses it too)")
    x, k = _conv_args(input, filter, 2, data_format, what)
    kh, kw, c, m = k.shape
    if x.shape[-1] != c:
        raise _Refused(f"{what}=<a kernel of shape {tuple(k.shape)}> takes {c} input "
                       f"channels, the input has {x.shape[-1]} (TF refuses it too)")
    dilations = dilations if rate is None else rate
    if max(_conv_window(strides, 2, "strides")) > 1 and max(_conv_window(dilations, 2,
                                                                          "dilations")) > 1:
        raise _Refused(f"strides={strides!r} with a dilation rate of {dilations!r}: TF "
                       "documents strides of 1 where the rate is above 1 (it computes "
                       "another sampling than a strided dilated convolution, without an "
                       "error)")
    return _conv(x, k.reshape(kh, kw, 1, c * m), 2, strides, padding, dilations, groups=c,
                 what=what)


def _depthwise_conv2d(rt, input, filter, strides, padding, rate=None, data_format=None,
                      dilations=None):
    """``tf.nn.depthwise_conv2d`` (recorded as ``compat.v1.nn.depthwise_conv2d``): the
    kernel ``(kh, kw, C, M)`` gives channel ``c * M + m``; ``rate`` is TF's old name of
    ``dilations``."""
    return _depthwise(input, filter, strides, padding, rate, data_format, dilations,
                      "filter")


def _conv_transpose(n: int):
    """``tf.nn.conv{n}d_transpose``: the transpose (input gradient) of the ``n``-D
    convolution with these ``filters`` (``(..., out_channels, in_channels)``) that maps
    ``output_shape`` to the input's shape, as TF defines it."""
    def f(rt, input, filters, output_shape, strides, padding="SAME", data_format=None,
          dilations=None):
        x, k = _conv_args(input, filters, n, data_format)
        shape = _static_ints(output_shape, "output_shape")
        if len(shape) != n + 2 or shape[-1] != k.shape[-2]:
            raise _Refused(f"output_shape={list(shape)} is not (batch, {n} sizes, "
                           f"{k.shape[-2]} channels of the filters) (TF refuses it too)")
        # the batch size is the input's: a constant one (TF runs only that batch size) is
        # that of the calls TF can make, where the results are the same
        shape = (x.shape[0], *shape[1:])
        if x.shape[-1] != k.shape[-1]:
            raise _Refused(f"filters=<a kernel of shape {tuple(k.shape)}> take "
                           f"{k.shape[-1]} input channels, the input has {x.shape[-1]} (TF "
                           "refuses it too)")

        def forward(z):
            return _conv(z, k, n, strides, padding, dilations)

        fwd = jax.eval_shape(forward, jax.ShapeDtypeStruct(shape, x.dtype))
        if fwd.shape != x.shape:
            raise _Refused(f"output_shape={list(shape)}: the convolution maps it to shape "
                           f"{fwd.shape}, not the input's {tuple(x.shape)} (TF refuses it "
                           "too)")
        return jax.vjp(forward, jnp.zeros(shape, x.dtype))[1](x)[0]
    return f


# ---------------------------------------------------------------- more image functions
def _rgb_to_grayscale(rt, images):
    """TF's weights (0.2989, 0.5870, 0.1140) over the last axis, kept as an axis of 1. An
    integer image is converted as TF converts it: to floats in [0, 1] (times ``1 / max``),
    and the gray back to its dtype (times ``max + 0.5``, truncated: ``convert_image_dtype``
    without saturation)."""
    if images.shape[-1] != 3:
        raise _Refused(f"images with {images.shape[-1]} channels are not supported (3, as "
                       "TF requires)")
    w = jnp.asarray([0.2989, 0.5870, 0.1140], jnp.float32)
    if not jnp.issubdtype(images.dtype, jnp.integer):
        return jnp.tensordot(images.astype(jnp.float32), w, axes=([-1], [0]))[..., None]
    top = jnp.iinfo(images.dtype).max
    gray = jnp.tensordot(images.astype(jnp.float32) * np.float32(1.0 / top), w,
                         axes=([-1], [0]))[..., None]
    return (gray * np.float32(top + 0.5)).astype(images.dtype)


def _image_hw(image, what):
    if image.ndim not in (3, 4):
        raise _Refused(f"an image of rank {image.ndim} is not supported (rank 3 or 4, as in "
                       f"TF's {what})")
    return image.shape[-3], image.shape[-2]


def _crop(image, top, left, height, width):
    return image[..., top:top + height, left:left + width, :]


def _central_crop(rt, image, central_fraction):
    """TF: the centred ``h - 2 * top`` rows, ``top = int((h - h * fraction) / 2)`` (the
    same for the columns)."""
    f = float(central_fraction)
    if not 0.0 < f <= 1.0:
        raise _Refused(f"central_fraction={central_fraction!r} must be in (0, 1] (TF "
                       "refuses it too)")
    h, w = _image_hw(image, "central_crop")
    top, left = int((h - h * f) / 2), int((w - w * f) / 2)
    return image if f == 1.0 else _crop(image, top, left, h - 2 * top, w - 2 * left)


def _box(offset_height, offset_width, target_height, target_width) -> tuple[int, ...]:
    """A bounding box's four static ints (``tf.image.crop_to_bounding_box`` and
    ``pad_to_bounding_box``)."""
    return (_static_int(offset_height, "offset_height"), _static_int(offset_width,
                                                                     "offset_width"),
            _static_int(target_height, "target_height"), _static_int(target_width,
                                                                     "target_width"))


def _crop_to_bounding_box(rt, image, offset_height, offset_width, target_height,
                          target_width):
    h, w = _image_hw(image, "crop_to_bounding_box")
    t, l_, th, tw = _box(offset_height, offset_width, target_height, target_width)
    if t < 0 or l_ < 0 or th <= 0 or tw <= 0 or t + th > h or l_ + tw > w:
        raise _Refused(f"offset_height={t}, offset_width={l_}, target_height={th}, "
                       f"target_width={tw}: the box is not inside the {h}x{w} image (TF "
                       "refuses it too)")
    return _crop(image, t, l_, th, tw)


# ------------------------------------------------------------------ filled tensors
def _fill_dtype(dtype, value=None):
    if dtype is not None:
        return _cast_dtype(dtype)
    if isinstance(value, (bool, np.bool_)):
        return jnp.bool_
    if isinstance(value, (int, np.integer)):
        return jnp.int32
    return jnp.float32


def _filled(value):
    def f(rt, shape, dtype="float32"):
        return jnp.full(_static_ints(shape, "shape"), value, _fill_dtype(dtype))
    return f


def _fill(rt, dims, value):
    if isinstance(value, jax.Array):
        return jnp.full(_static_ints(dims, "dims"), value)
    return jnp.full(_static_ints(dims, "dims"), value, _fill_dtype(None, value))


def _crelu(rt, features, axis=-1):
    """``tf.nn.crelu``: ``concat([relu(x), relu(-x)], axis)``."""
    return jnp.concatenate([rt.relu(features), rt.relu(-features)], axis=int(axis))


def _reciprocal_no_nan(rt, x):
    return _divide_no_nan(jnp.ones((), x.dtype), x)


# -------------------------------------------------------- image preprocessing functions
def _float_image(image, what):
    if not jnp.issubdtype(image.dtype, jnp.floating):
        raise _Refused(f"an image of dtype {image.dtype} is not supported (floats; TF "
                       f"converts integer images in {what} and back with saturation)")
    return image


def _per_image_standardization(rt, image):
    """TF: ``(x - mean) / max(std, 1 / sqrt(N))`` over each image's ``N`` values (rows,
    columns and channels)."""
    _image_hw(image, "per_image_standardization")
    x = image.astype(jnp.float32)
    axes = (-3, -2, -1)
    n = np.prod(image.shape[-3:])
    mean = jnp.mean(x, axis=axes, keepdims=True)
    std = jnp.std(x, axis=axes, keepdims=True)
    return (x - mean) / jnp.maximum(std, np.float32(1.0 / np.sqrt(np.float32(n))))


def _pad_image(image, top, left, height, width):
    h, w = _image_hw(image, "pad_to_bounding_box")
    bottom, right = height - top - h, width - left - w
    if min(top, left, bottom, right) < 0:
        raise _Refused(f"offset_height={top}, offset_width={left}, target_height={height}, "
                       f"target_width={width}: the {h}x{w} image does not fit in the box (TF "
                       "refuses it too)")
    pads = [(0, 0)] * (image.ndim - 3) + [(top, bottom), (left, right), (0, 0)]
    return jnp.pad(image, pads)


def _pad_to_bounding_box(rt, image, offset_height, offset_width, target_height,
                         target_width):
    t, l_, th, tw = _box(offset_height, offset_width, target_height, target_width)
    return _pad_image(image, t, l_, th, tw)


def _resize_with_crop_or_pad(rt, image, target_height, target_width):
    """TF: the centred crop of each too long axis, then the centred zero padding of each
    too short one (the odd row or column at the end)."""
    h, w = _image_hw(image, "resize_with_crop_or_pad")
    th, tw = _static_int(target_height, "target_height"), _static_int(target_width,
                                                                         "target_width")
    if th <= 0 or tw <= 0:
        raise _Refused(f"target_height={th}, target_width={tw} must be positive (TF refuses "
                       "them too)")
    cropped = _crop(image, max(-(th - h) // 2, 0), max(-(tw - w) // 2, 0), min(th, h),
                    min(tw, w))
    return _pad_image(cropped, max((th - h) // 2, 0), max((tw - w) // 2, 0), th, tw)


def _rot90(rt, image, k=1):
    """``tf.image.rot90``: ``k`` quarter turns counter-clockwise of the rows and columns."""
    _image_hw(image, "rot90")
    return jnp.rot90(image, _static_int(k, "k") % 4, axes=(-3, -2))


def _image_transpose(rt, image):
    _image_hw(image, "transpose")
    return jnp.swapaxes(image, -3, -2)


def _grayscale_to_rgb(rt, images):
    if images.shape[-1] != 1:
        raise _Refused(f"images with {images.shape[-1]} channels are not supported (1, as "
                       "TF requires)")
    return jnp.concatenate([images] * 3, axis=-1)


def _adjust_brightness(rt, image, delta):
    return _float_image(image, "adjust_brightness") + jnp.asarray(delta, image.dtype)


def _adjust_contrast(rt, images, contrast_factor):
    """TF: ``(x - mean) * contrast_factor + mean``, the mean over the rows and columns of
    each channel of each image."""
    x = _float_image(images, "adjust_contrast")
    _image_hw(images, "adjust_contrast")
    mean = jnp.mean(x, axis=(-3, -2), keepdims=True)
    return (x - mean) * jnp.asarray(contrast_factor, x.dtype) + mean


def _convert_image_dtype(rt, image, dtype, saturate=False):
    """Floats stay floats (float32 here); integers become floats scaled by ``1 / max``
    of their type, as TF converts them. Conversions to integers are refused."""
    target = _cast_dtype(dtype)
    if not jnp.issubdtype(target, jnp.floating):
        raise _Refused(f"dtype={dtype!r} is not supported (floating types; conversions to "
                       "integers round and saturate)")
    if jnp.issubdtype(image.dtype, jnp.floating):
        return image.astype(target)
    return image.astype(target) * np.float32(1.0 / jnp.iinfo(image.dtype).max)


# --------------------------------------------------------------------- gathers, masks
def _gather_nd(rt, params, indices, batch_dims=0):
    """``tf.gather_nd``: ``params[tuple(index)]`` for each index in the last axis of
    ``indices``, the first ``batch_dims`` axes of both taken in step. Constant indices out
    of range are refused (TF raises on CPU); tensor indices are clamped."""
    params = _const(params)
    b = int(batch_dims)
    if isinstance(indices, (list, tuple, np.ndarray)):
        indices = np.asarray(indices)
        if indices.dtype.kind not in "iu" or indices.ndim < 1:
            raise _Refused(f"indices={_show(indices.tolist())} are not integer index "
                           "vectors")
        m = indices.shape[-1]
        if b + m > params.ndim:
            raise _Refused(f"indices={_show(indices.tolist())} index {m} axes after "
                           f"{b} batch axes of a rank-{params.ndim} tensor (TF refuses it too)")
        _check_in_range(indices, params.shape[b:b + m])
    if not 0 <= b < min(params.ndim, jnp.ndim(indices)):
        raise _Refused(f"batch_dims={batch_dims!r} must be below the ranks of params and "
                       "indices (TF refuses it too)")

    def take(p, i):
        i = jnp.asarray(i)
        return p[tuple(jnp.moveaxis(i, -1, 0))]

    for _ in range(b):
        take = jax.vmap(take)
    return take(params, indices)


def _sequence_mask(rt, lengths, maxlen=None, dtype="bool"):
    """``tf.sequence_mask``: ``range(maxlen) < lengths[..., None]``; ``maxlen`` must be
    given (else it is the largest length: a shape that depends on the data)."""
    if maxlen is None:
        raise _Refused("maxlen=None (the largest of the lengths: a shape that depends on the "
                       "data) is not supported; give maxlen")
    n = _static_int(maxlen, "maxlen")
    mask = jnp.arange(n) < jnp.asarray(lengths)[..., None]
    return mask if str(getattr(dtype, "name", dtype)) == "bool" else mask.astype(
        _cast_dtype(dtype))


def _count_nonzero(rt, input, axis=None, keepdims=None, dtype="int64"):
    y = jnp.sum(jnp.asarray(input) != 0, axis=_axis(axis), keepdims=bool(keepdims))
    return y.astype(_cast_dtype(dtype))


def _diag(rt, diagonal):
    """``tf.linalg.diag``: square matrices with ``diagonal`` on their diagonal (zeros
    elsewhere, also where a diagonal entry is infinite)."""
    n = diagonal.shape[-1]
    return jnp.where(jnp.eye(n, dtype=bool), diagonal[..., None], jnp.zeros((), diagonal.dtype))


def _linspace(rt, start, stop, num, axis=0):
    n = _static_int(num, "num")
    start, stop = (jnp.asarray(v, jnp.float32) if not isinstance(v, jax.Array) else v
                   for v in (start, stop))
    return jnp.linspace(start, stop, n, axis=int(axis))


def _truncatediv(x, y):
    dt = jnp.result_type(x, y)  # a Python int takes the tensor's dtype (int32 under x64 too)
    if jnp.issubdtype(dt, jnp.integer):
        return jax.lax.div(*jnp.broadcast_arrays(jnp.asarray(x, dt), jnp.asarray(y, dt)))
    return jnp.trunc(x / y)


def _multiply_no_nan(x, y):
    """``x * y``, and 0 where ``y`` is 0 (even where ``x`` is infinite or NaN)."""
    return jnp.where(y == 0, jnp.zeros((), jnp.result_type(x, y)), x * y)


def _separable_conv2d(rt, input, depthwise_filter, pointwise_filter, strides, padding,
                      rate=None, data_format=None, dilations=None):
    """``tf.nn.separable_conv2d`` (recorded as ``compat.v1.nn.separable_conv2d``): the
    depthwise convolution, then the pointwise (1x1) one."""
    y = _depthwise(input, depthwise_filter, strides, padding, rate, data_format, dilations,
                   "depthwise_filter")
    y, k = _conv_args(y, pointwise_filter, 2, None, "pointwise_filter")
    if k.shape[:2] != (1, 1):
        raise _Refused(f"pointwise_filter=<a kernel of shape {tuple(k.shape)}> is not 1x1 "
                       "(TF refuses it too)")
    return _conv(y, k, 2, 1, "VALID", None, what="pointwise_filter")


# ------------------------------------------------- blocks of the batch, pools, linear algebra
def _space_to_batch_nd(rt, input, block_shape, paddings):
    """``tf.space_to_batch_nd`` (``tf.nn.atrous_conv2d`` is recorded as it, a convolution
    and :func:`_batch_to_space_nd`): the ``M`` padded axes after the batch cut in blocks,
    the positions within a block moved to the batch axis, in TF's order (position
    ``(i_1, ..., i_M)`` of the block, then the example)."""
    block = _static_ints(block_shape, "block_shape")
    m = len(block)
    pads = np.asarray(_static_ints(paddings, "paddings")).reshape(-1, 2)
    if len(pads) != m or (pads < 0).any() or input.ndim < m + 1 or min(block) < 1:
        raise _Refused(f"block_shape={list(block)} and paddings={pads.tolist()} need one "
                       f"positive block and one pair of non-negative pads per axis (TF "
                       "refuses them too)")
    x = jnp.pad(input, [(0, 0)] + [tuple(p) for p in pads.tolist()]
                + [(0, 0)] * (input.ndim - m - 1))
    sizes = x.shape[1:m + 1]
    if any(s % b for s, b in zip(sizes, block)):
        raise _Refused(f"paddings={pads.tolist()} leave sizes {list(sizes)} that "
                       f"block_shape={list(block)} does not divide (TF refuses them too)")
    n, rest = x.shape[0], x.shape[m + 1:]
    x = x.reshape((n,) + sum(((s // b, b) for s, b in zip(sizes, block)), ()) + rest)
    order = [2 + 2 * i for i in range(m)] + [0] + [1 + 2 * i for i in range(m)]
    x = x.transpose(order + list(range(2 * m + 1, x.ndim)))
    return x.reshape((n * int(np.prod(block)),) + tuple(s // b for s, b in zip(sizes, block))
                     + rest)


def _batch_to_space_nd(rt, input, block_shape, crops):
    """``tf.batch_to_space_nd``: the inverse of :func:`_space_to_batch_nd`, then the
    ``crops`` cut from each spatial axis."""
    block = _static_ints(block_shape, "block_shape")
    m = len(block)
    crop = np.asarray(_static_ints(crops, "crops")).reshape(-1, 2)
    prod = int(np.prod(block))
    if len(crop) != m or (crop < 0).any() or input.ndim < m + 1 or min(block) < 1 or (
            input.shape[0] % prod):
        raise _Refused(f"block_shape={list(block)} and crops={crop.tolist()} do not fit an "
                       f"input of shape {tuple(input.shape)} (TF refuses them too)")
    n, sizes, rest = input.shape[0] // prod, input.shape[1:m + 1], input.shape[m + 1:]
    x = input.reshape(tuple(block) + (n,) + sizes + rest)
    order = [m] + sum(([m + 1 + i, i] for i in range(m)), [])
    x = x.transpose(order + list(range(2 * m + 1, x.ndim)))
    full = tuple(s * b for s, b in zip(sizes, block))
    if any(lo + hi > f for (lo, hi), f in zip(crop.tolist(), full)):
        raise _Refused(f"crops={crop.tolist()} exceed the sizes {list(full)} (TF refuses "
                       "them too)")
    x = x.reshape((n,) + full + rest)
    return x[(slice(None),) + tuple(slice(lo, f - hi) for (lo, hi), f in
                                    zip(crop.tolist(), full))]


def _nn_pool(rt, input, window_shape, pooling_type, padding, dilation_rate=None,
             strides=None, data_format=None, dilations=None):
    """``tf.nn.pool`` (recorded as ``compat.v1.nn.pool``): ``MAX`` or ``AVG`` pooling as
    ``tf.nn.max_pool`` / ``avg_pool``; dilated windows are refused."""
    for what, rate in (("dilation_rate", dilation_rate), ("dilations", dilations)):
        if rate is not None and max(_static_ints(rate, what)) > 1:
            raise _Refused(f"{what}={rate!r} is not supported (windows without gaps)")
    kind = {"MAX": "max", "AVG": "avg"}.get(str(pooling_type))
    if kind is None:
        raise _Refused(f"pooling_type={pooling_type!r} is not supported ('MAX', 'AVG', as "
                       "in TF)")
    return _pool(kind, None)(rt, input, window_shape, 1 if strides is None else strides,
                             padding, data_format)


def _resize_with_pad(rt, image, target_height, target_width, method="bilinear",
                     antialias=False):
    """``tf.image.resize_with_pad``: resized by one ratio (TF's float32 arithmetic) to fit
    the target, then padded with zeros to it (centred, the odd row at the end)."""
    def resize(im, size):
        return _resize(rt, im, size, method=method, antialias=antialias)
    return _pad_resized(image, target_height, target_width, resize)


def _pad_resized(image, target_height, target_width, resize):
    """TF's ``_resize_image_with_pad_common``: ``resize(image, [h, w])`` to the largest size
    with the image's aspect ratio within the target, then zeros around it."""
    h, w = _image_hw(image, "resize_with_pad")
    if image.ndim != 4:
        raise _Refused(f"images of rank {image.ndim} are not supported (batch, height, "
                       "width, channels only)")
    th, tw = _static_int(target_height, "target_height"), _static_int(target_width,
                                                                         "target_width")
    if th <= 0 or tw <= 0:
        raise _Refused(f"target_height={th}, target_width={tw} must be positive (TF refuses "
                       "them too)")
    f32 = np.float32
    ratio = max(f32(w) / f32(tw), f32(h) / f32(th))
    rh, rw = f32(h) / ratio, f32(w) / ratio
    resized = resize(image, [int(np.floor(rh)), int(np.floor(rw))])
    top = max(0, int(np.floor((f32(th) - rh) / f32(2))))
    left = max(0, int(np.floor((f32(tw) - rw) / f32(2))))
    return _pad_image(resized, top, left, th, tw)



# ------------------------------------------------------------- scans, moments, frames
def _cumulative_logsumexp(rt, x, axis=0, exclusive=False, reverse=False):
    """``tf.math.cumulative_logsumexp``: ``log(cumsum(exp(x)))`` computed stably; the
    exclusive scan starts at ``-inf`` (the log of an empty sum)."""
    axis = int(axis) % x.ndim
    y = jax.lax.cumlogsumexp(x, axis=axis, reverse=bool(reverse))
    if exclusive:
        first = jnp.full_like(jax.lax.slice_in_dim(y, 0, 1, axis=axis), -jnp.inf)
        if reverse:
            y = jnp.concatenate([jax.lax.slice_in_dim(y, 1, None, axis=axis), first], axis)
        else:
            y = jnp.concatenate([first, jax.lax.slice_in_dim(y, 0, -1, axis=axis)], axis)
    return y


def _weighted_moments(rt, x, axes, frequency_weights, keep_dims=None, keepdims=None):
    """``tf.nn.weighted_moments`` (recorded as ``compat.v1.nn.weighted_moments``): the
    weighted mean and variance over ``axes`` (TF's formula: sums divided with
    ``divide_no_nan``, the variance about the mean held constant for the gradient); two
    results."""
    if keepdims is not None and keep_dims is not None:
        raise _Refused(f"keepdims={keepdims!r} and keep_dims={keep_dims!r} are both given "
                       "(TF refuses it too)")
    keep = bool(keepdims if keepdims is not None else keep_dims)
    axes = _static_ints(axes, "axes")
    w = _const(frequency_weights, x)
    total = jnp.sum(w + jnp.zeros_like(x), axis=axes, keepdims=True)
    mean = _divide_no_nan(jnp.sum(w * x, axis=axes, keepdims=True), total)
    dist = jnp.sum(w * jnp.square(x - jax.lax.stop_gradient(mean)), axis=axes, keepdims=True)
    var = _divide_no_nan(dist, total)
    if not keep:
        mean, var = jnp.squeeze(mean, axes), jnp.squeeze(var, axes)
    return mean, var


def _frame(rt, signal, frame_length, frame_step, pad_end=False, pad_value=0, axis=-1):
    """``tf.signal.frame``: windows of ``frame_length`` every ``frame_step`` along
    ``axis``, which becomes (frames, frame_length); ``pad_end`` pads with ``pad_value`` so
    that every step starts a frame."""
    n_len, step = _static_int(frame_length, "frame_length"), _static_int(frame_step,
                                                                         "frame_step")
    if n_len <= 0 or step <= 0:
        raise _Refused(f"frame_length={n_len}, frame_step={step} must be positive (TF "
                       "refuses them too)")
    axis = int(axis) % signal.ndim
    size = signal.shape[axis]
    if pad_end:
        frames = -(-size // step)
        extra = max(0, (frames - 1) * step + n_len - size)
        pads = [(0, 0)] * signal.ndim
        pads[axis] = (0, extra)
        signal = jnp.pad(signal, pads, constant_values=jnp.asarray(pad_value, signal.dtype))
    else:
        frames = max(0, 1 + (size - n_len) // step)
    index = np.arange(frames)[:, None] * step + np.arange(n_len)[None, :]
    return jnp.take(signal, index, axis=axis)


# ------------------------------------------------------ products, transforms, colours
def _tensordot(rt, a, b, axes):
    """``tf.tensordot``: ``axes`` an int (the last ``axes`` of ``a`` with the first of
    ``b``) or two lists of axes."""
    a, b = _operands(a, b)
    if not isinstance(axes, (list, tuple)) and np.ndim(axes) == 0:
        return jnp.tensordot(a, b, axes=int(axes))
    pair = [list(_static_ints(v, "axes")) for v in axes]
    if len(pair) != 2 or len(pair[0]) != len(pair[1]):
        raise _Refused(f"axes={axes!r} is not an int or two lists of axes of one length (TF "
                       "refuses it too)")
    return jnp.tensordot(a, b, axes=pair)


#: TF's colour-space matrices (image_ops_impl), applied to the last axis
_RGB_TO_YUV = [[0.299, -0.14714119, 0.61497538], [0.587, -0.28886916, -0.51496512],
               [0.114, 0.43601035, -0.10001026]]
_YUV_TO_RGB = [[1, 1, 1], [0, -0.394642334, 2.03206185], [1.13988303, -0.58062185, 0]]


def _colour_matrix(kernel, what):
    def f(rt, images):
        if images.shape[-1] != 3:
            raise _Refused(f"images with {images.shape[-1]} channels are not supported (3, "
                           f"as TF's {what} requires)")
        return jnp.tensordot(images, jnp.asarray(kernel, images.dtype), axes=([-1], [0]))
    return f


def _adjust_gamma(rt, image, gamma=1, gain=1):
    """``gain * image ** gamma`` (float images, as TF computes them)."""
    x = _float_image(image, "adjust_gamma")
    if float(gamma) < 0:
        raise _Refused(f"gamma={gamma!r} must be non-negative (TF refuses it too)")
    return jnp.asarray(gain, x.dtype) * x ** jnp.asarray(gamma, x.dtype)


def _rgb_to_hsv(rt, images):
    """TF's ``RGBToHSV``: ``v = max``, ``s = (max - min) / v`` (0 where ``v`` is 0), the hue
    in [0, 1) from the largest channel (0 for greys): red's formula where red equals ``v``,
    else green's where green does, else blue's. The largest channel is the first maximum an
    argmax finds (the same choice), and ``v`` and the minimum are :func:`reduce_max` /
    :func:`reduce_min` (``jnp.max``'s values and derivative, ties split): XLA may compute
    ``images``' producer twice with other roundings, and comparing the channels with a
    maximum computed apart chose blue's formula for pixels whose largest channel was red or
    green (a wrong hue, see ``tests/test_import_tfops_rest.py``)."""
    if images.shape[-1] != 3:
        raise _Refused(f"images with {images.shape[-1]} channels are not supported (3, as "
                       "TF's rgb_to_hsv requires)")
    r, g, b = (images[..., i] for i in range(3))
    v = reduce_max(images, axis=-1)
    spread = v - reduce_min(images, axis=-1)
    s = jnp.where(v > 0, spread / jnp.where(v > 0, v, 1.0), 0.0)
    norm = 1.0 / (6.0 * jnp.where(spread > 0, spread, 1.0))
    largest = jnp.argmax(images, axis=-1)
    h = jnp.where(largest == 0, norm * (g - b),
                  jnp.where(largest == 1, norm * (b - r) + 2.0 / 6.0,
                            norm * (r - g) + 4.0 / 6.0))
    h = jnp.where(spread > 0, h, 0.0)
    return jnp.stack([jnp.where(h < 0, h + 1.0, h), s, v], axis=-1)


def _hsv_to_rgb(rt, images):
    """TF's ``HSVToRGB``: each channel ``(1 - s + s * d) * v``, ``d`` a clipped triangle
    of ``6 h``."""
    if images.shape[-1] != 3:
        raise _Refused(f"images with {images.shape[-1]} channels are not supported (3, as "
                       "TF's hsv_to_rgb requires)")
    h, s, v = (images[..., i] for i in range(3))
    dh = h * 6.0
    d = [jnp.clip(jnp.abs(dh - 3.0) - 1.0, 0.0, 1.0),
         jnp.clip(2.0 - jnp.abs(dh - 2.0), 0.0, 1.0),
         jnp.clip(2.0 - jnp.abs(dh - 4.0), 0.0, 1.0)]
    return jnp.stack([(1.0 - s + s * di) * v for di in d], axis=-1)


def _hsv_sectors(h, s, v):
    """The RGB of TF's ``AdjustHue`` / ``AdjustSaturation`` kernels: chroma ``c = s v``
    spread over the hue's sixth of the circle (sector ``int(6 h)``), plus ``v - c``."""
    c = s * v
    dh = h * 6.0
    x = c * (1.0 - jnp.abs(jnp.mod(dh, 2.0) - 1.0))
    sector = jnp.floor(dh).astype(jnp.int32)
    zero = jnp.zeros_like(c)
    table = [(c, x, zero), (x, c, zero), (zero, c, x), (zero, x, c), (x, zero, c),
             (c, zero, x)]
    rgb = [jnp.select([sector == k for k in range(6)], [t[i] for t in table], zero)
           for i in range(3)]
    return jnp.stack(rgb, axis=-1) + (v - c)[..., None]


def _adjust_hsv(kind):
    """``tf.image.adjust_hue`` (``delta`` added to the hue, wrapped into [0, 1)) or
    ``adjust_saturation`` (the saturation times ``saturation_factor``, clipped to
    [0, 1]), as TF's kernels compute them: RGB to HSV and back."""
    def f(rt, image, value):
        x = _float_image(image, f"adjust_{kind}")
        h, s, v = (_rgb_to_hsv(rt, x)[..., i] for i in range(3))
        if kind == "hue":
            h = jnp.mod(h + jnp.asarray(value, x.dtype), 1.0)
        else:
            s = jnp.clip(s * jnp.asarray(value, x.dtype), 0.0, 1.0)
        return _hsv_sectors(h, s, v)
    return f


# -------------------------------------------------------- segment reductions, scatters
def _int_array(v, what: str) -> np.ndarray:
    """A constant integer argument (segment ids, scatter indices, box indices) as a NumPy
    array of its shape; a tensor is the caller's to handle."""
    try:
        a = np.asarray(v)
    except ValueError:  # ragged lists
        raise _Refused(f"{what}={_show(v)} are not a regular array of integers (TF refuses "
                       "them too)") from None
    if a.dtype.kind not in "iu":
        if a.size or a.dtype.kind not in "f":
            raise _Refused(f"{what}={_show(v)} are not integers (TF refuses them too)")
        a = a.astype(np.int32)  # an empty list
    return a.astype(np.int64)


def _segment_reduce(kind: str, data, ids, num: int, unsorted: bool):
    """``data`` reduced over its first ``ids.ndim`` axes into ``num`` segments, ids (a NumPy
    array, or a tensor) of shape ``data.shape[:ids.ndim]``; ids outside ``[0, num)`` are
    dropped (TF drops negative ones). An empty segment is 0 (1 for ``prod``), as in TF;
    an empty ``max`` / ``min`` is the dtype's lowest / highest value in TF's unsorted
    functions, 0 in its sorted ones."""
    if kind in ("mean", "sqrt_n") and not jnp.issubdtype(data.dtype, jnp.floating):
        raise _Refused(f"data of dtype {data.dtype} is not supported (floats, for the "
                       f"{kind} of each segment)")
    k = np.ndim(ids)
    flat = jnp.asarray(ids).reshape(-1).astype(jnp.int32)
    x = data.reshape((-1,) + data.shape[k:])
    count = jax.ops.segment_sum(jnp.ones(flat.shape, jnp.int32), flat, num)
    count = count.reshape((num,) + (1,) * (x.ndim - 1))
    if kind in ("sum", "mean", "sqrt_n"):
        y = jax.ops.segment_sum(x, flat, num)
        n = jnp.maximum(count, 1).astype(x.dtype)
        return y if kind == "sum" else y / (n if kind == "mean" else jnp.sqrt(n))
    if kind == "prod":  # (JAX's segment_prod has no gradient for repeated ids)
        member = (flat[None, :] == jnp.arange(num)[:, None]).reshape(
            (num, flat.shape[0]) + (1,) * (x.ndim - 1))
        return jnp.prod(jnp.where(member, x[None], jnp.ones((), x.dtype)), axis=1)
    y = (jax.ops.segment_max if kind == "max" else jax.ops.segment_min)(x, flat, num)
    if not unsorted:
        fill = 0
    elif jnp.issubdtype(x.dtype, jnp.floating):
        fill = jnp.finfo(x.dtype).min if kind == "max" else jnp.finfo(x.dtype).max
    else:
        fill = jnp.iinfo(x.dtype).min if kind == "max" else jnp.iinfo(x.dtype).max
    return jnp.where(count > 0, y, jnp.asarray(fill, x.dtype))


def _segment(kind: str):
    """``tf.math.segment_<kind>``: sorted, non-negative ids, one per row of ``data`` (its
    first axis), constant or computed from ``tf.shape``; the result has ``ids[-1] + 1``
    rows."""
    def f(rt, data, segment_ids):
        data = jnp.asarray(_const(data))
        if not _is_static(segment_ids):
            raise _Refused(f"segment_ids=<computed from a tensor> is not supported: the "
                           "number of segments (the largest id + 1) would depend on the "
                           "values of a tensor, and JAX needs every shape when it traces "
                           "the model. Give constant ids, or use tf.math.unsorted_segment_"
                           f"{kind}(data, segment_ids, num_segments), whose number of "
                           "segments is given")
        ids = _int_array(segment_ids, "segment_ids")
        if ids.ndim != 1 or data.ndim < 1 or len(ids) != data.shape[0]:
            raise _Refused(f"segment_ids={_show(ids.tolist())} of shape {ids.shape} is not "
                           f"one id per row of data of shape {tuple(data.shape)} (TF refuses "
                           "it too; constant ids over a batch axis fit one batch size only, "
                           "and the importer traces the model on a batch of one)")
        if ids.size and (ids[0] < 0 or (np.diff(ids) < 0).any()):
            raise _Refused(f"segment_ids={_show(ids.tolist())} are not sorted non-negative "
                           f"ids (TF refuses them too; tf.math.unsorted_segment_{kind} takes "
                           "ids in any order)")
        return _segment_reduce(kind, data, ids, int(ids[-1]) + 1 if ids.size else 0, False)
    return f


def _unsorted_segment(kind: str):
    """``tf.math.unsorted_segment_<kind>``: ids of the shape of the leading axes of
    ``data`` (constant, from ``tf.shape``, or a tensor), ``num_segments`` static; negative
    ids are dropped. Constant ids at or above ``num_segments`` are refused (TF raises on
    CPU); a tensor's are dropped."""
    def f(rt, data, segment_ids, num_segments):
        data = jnp.asarray(_const(data))
        num = _static_int(num_segments, "num_segments")
        if num < 0:
            raise _Refused(f"num_segments={num} must be non-negative (TF refuses it too)")
        if _is_static(segment_ids):
            ids = _int_array(segment_ids, "segment_ids")
            if ids.size and ids.max() >= num:
                raise _Refused(f"segment_ids={_show(ids.tolist())} has ids at or above "
                               f"num_segments={num} (TF raises on CPU)")
        else:
            ids = segment_ids
            if not jnp.issubdtype(ids.dtype, jnp.integer):
                raise _Refused(f"segment_ids={_show(ids)} of dtype {ids.dtype} are not "
                               "integers (TF refuses them too)")
        if tuple(np.shape(ids)) != tuple(data.shape[:np.ndim(ids)]):
            shown = _show(ids if isinstance(ids, jax.Array) else ids.tolist())
            raise _Refused(f"segment_ids={shown} of shape {tuple(np.shape(ids))} are not of "
                           "the shape of the leading axes of data of shape "
                           f"{tuple(data.shape)} (TF refuses them too; constant ids over a "
                           "batch axis fit one batch size only, and the importer traces the "
                           "model on a batch of one)")
        return _segment_reduce(kind, data, ids, num, True)
    return f


def _scatter_indices(indices, shape: tuple) -> np.ndarray:
    """Constant scatter indices ``(..., m)``: integers in range for the first ``m`` axes
    of ``shape``, as TF's CPU kernels require."""
    if not _is_static(indices):
        raise _Refused("indices=<computed from a tensor> is not supported (constant indices "
                       "only: their range, and for tensor_scatter_nd_update that no index "
                       "repeats, are checked when the model is loaded)")
    idx = _int_array(indices, "indices")
    m = idx.shape[-1] if idx.ndim else 0
    if idx.ndim < 1 or not 1 <= m <= len(shape):
        raise _Refused(f"indices={_show(idx.tolist())} are not index vectors of 1 to "
                       f"{len(shape)} entries (the rank of the tensor of shape {shape})")
    _check_in_range(idx, shape[:m])
    return idx


def _check_in_range(idx: np.ndarray, sizes: tuple) -> None:
    """Refuse constant index vectors ``idx`` ``(..., m)`` outside axes of ``sizes`` (``m``
    of them), as TF's CPU kernels do (gather_nd, the scatters)."""
    sizes = np.asarray(sizes)
    if idx.size and ((idx < 0).any() or (idx >= sizes).any()):
        raise _Refused(f"indices={_show(idx.tolist())} are out of range for axes of sizes "
                       f"{sizes.tolist()} (TF raises on CPU)")


def _scatter(tensor, idx: np.ndarray, updates, kind: str):
    m = idx.shape[-1]
    want = idx.shape[:-1] + tuple(tensor.shape[m:])
    if tuple(updates.shape) != want:
        raise _Refused(f"indices={_show(idx.tolist())} take updates of shape {want} (the "
                       "indices' shape without its last axis, then the tensor's axes after "
                       f"the {m} indexed), not {tuple(updates.shape)} (TF refuses them too)")
    updates = updates.astype(tensor.dtype)
    at = tensor.at[tuple(idx[..., j] for j in range(m))]
    if kind == "update":
        return at.set(updates)
    if kind == "max":
        return at.max(updates)
    if kind == "min":
        return at.min(updates)
    return at.add(-updates if kind == "sub" else updates)


def _tensor_scatter(kind: str):
    """``tf.tensor_scatter_nd_<kind>``: ``tensor`` with ``updates`` written, added,
    subtracted, or maxed / mined in at constant ``indices`` (repeated ones accumulate);
    the tensor and the updates constants or tensors. For ``update``, TF leaves which of
    repeated indices' updates is kept unspecified: refused."""
    def f(rt, tensor, indices, updates):
        tensor, updates = (jnp.asarray(v) for v in _operands(tensor, updates))
        idx = _scatter_indices(indices, tuple(tensor.shape))
        if kind == "update":
            rows = idx.reshape(-1, idx.shape[-1])
            if len(np.unique(rows, axis=0)) < len(rows):
                raise _Refused(f"indices={_show(idx.tolist())} repeat an index: TF leaves "
                               "which of its updates is kept unspecified (its CPU kernel "
                               "happens to keep the last); give each index once, or use "
                               "tf.tensor_scatter_nd_add / max / min, whose results do not "
                               "depend on the order")
        return _scatter(tensor, idx, updates, kind)
    return f


def _scatter_nd(rt, indices, updates, shape):
    """``tf.scatter_nd``: zeros of ``shape`` with ``updates`` added at constant
    ``indices`` (repeated ones summed, as TF documents)."""
    dims = _static_ints(shape, "shape")
    updates = jnp.asarray(_const(updates))
    return _scatter(jnp.zeros(dims, updates.dtype), _scatter_indices(indices, dims), updates,
                    "add")


# ------------------------------------------------- crops, pooling with argmax, transforms
def _crop_and_resize(rt, image, boxes, box_indices, crop_size, method="bilinear",
                     extrapolation_value=0.0):
    """``tf.image.crop_and_resize``: box ``[y1, x1, y2, x2]`` (normalized: 0 and 1 are the
    first and last pixel centres) of image ``box_indices[b]`` sampled on a
    ``crop_size`` grid, bilinearly or at the nearest pixel (rounding halves up), in
    float32; a sample outside the image is ``extrapolation_value``. Boxes and box indices
    may be constants, sizes from ``tf.shape`` (``tf.range(tf.shape(x)[0])``) or tensors
    (their box indices are clamped to the batch; constant ones out of range are
    refused)."""
    if method not in ("bilinear", "nearest"):
        raise _Refused(f"method={method!r} is not supported ('bilinear', 'nearest', as in TF)")
    if image.ndim != 4:
        raise _Refused(f"an image of rank {image.ndim} is not supported (rank 4, as TF "
                       "requires)")
    size = _static_ints(crop_size, "crop_size")
    if len(size) != 2 or min(size) < 1:
        raise _Refused(f"crop_size={list(size)} is not two positive sizes (TF refuses it "
                       "too)")
    ch, cw = size
    given = boxes
    try:
        boxes = jnp.asarray(_const(boxes), jnp.float32)
    except (ValueError, TypeError):  # ragged lists
        boxes = np.zeros((0,))
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise _Refused(f"boxes={_show(given)} are not of shape (boxes, 4) (TF refuses them "
                       "too)")
    n, h, w, _ = image.shape
    if _is_static(box_indices):
        which = _int_array(box_indices, "box_indices").reshape(-1)
        if which.size and (which.min() < 0 or which.max() >= n):
            raise _Refused(f"box_indices={_show(which.tolist())} are out of range for a "
                           f"batch of {n} (TF refuses them too; the importer traces the "
                           "model on a batch of one: tf.range(tf.shape(images)[0]) names "
                           "each example)")
        which = jnp.asarray(which, jnp.int32)
    else:
        which = jnp.clip(jnp.asarray(box_indices).reshape(-1).astype(jnp.int32), 0, n - 1)
    if which.shape[0] != boxes.shape[0]:
        raise _Refused(f"box_indices has {which.shape[0]} entries for {boxes.shape[0]} boxes "
                       "(TF refuses it too)")
    f32 = np.float32

    def grid(lo, hi, size, count):  # TF's sampling points, in float32
        if count > 1:
            step = (hi - lo) * f32(size - 1) / f32(count - 1)
            return lo[:, None] * f32(size - 1) + jnp.arange(count, dtype=jnp.float32) * step[
                :, None]
        return (f32(0.5) * (lo + hi) * f32(size - 1))[:, None]

    ys, xs = grid(boxes[:, 0], boxes[:, 2], h, ch), grid(boxes[:, 1], boxes[:, 3], w, cw)
    inside = ((ys >= 0) & (ys <= h - 1))[:, :, None] & ((xs >= 0) & (xs <= w - 1))[:, None]
    images = jnp.take(image.astype(jnp.float32), which, axis=0)  # one image per box

    def rows(v, size):
        return jnp.clip(v, 0, size - 1).astype(jnp.int32)

    def pick(r, c):  # images[b, r[b, i], c[b, j]]
        b = jnp.arange(boxes.shape[0])[:, None, None]
        return images[b, r[:, :, None], c[:, None, :]]

    if method == "nearest":  # halves rounded away from zero (up: the points are >= 0)
        ry = jnp.where(ys - jnp.floor(ys) >= 0.5, jnp.ceil(ys), jnp.floor(ys))
        rx = jnp.where(xs - jnp.floor(xs) >= 0.5, jnp.ceil(xs), jnp.floor(xs))
        out = pick(rows(ry, h), rows(rx, w))
    else:
        top, bottom = rows(jnp.floor(ys), h), rows(jnp.ceil(ys), h)
        left, right = rows(jnp.floor(xs), w), rows(jnp.ceil(xs), w)
        dy = (ys - jnp.floor(ys))[:, :, None, None]
        dx = (xs - jnp.floor(xs))[:, None, :, None]
        upper = pick(top, left) + (pick(top, right) - pick(top, left)) * dx
        lower = pick(bottom, left) + (pick(bottom, right) - pick(bottom, left)) * dx
        out = upper + (lower - upper) * dy
    return jnp.where(inside[..., None], out, jnp.asarray(extrapolation_value, jnp.float32))


def _max_pool_with_argmax(rt, input, ksize, strides, padding, data_format="NHWC",
                          output_dtype="int64", include_batch_in_index=False):
    """``tf.nn.max_pool_with_argmax``: the max pooling (as ``tf.nn.max_pool2d``) and the
    flat index of each maximum, ``(y * width + x) * channels + c`` (plus ``b * height *
    width * channels`` with ``include_batch_in_index``), the first in row-major order
    among equal values, as TF's CPU kernel picks it; int32 indices (int64 in TF). The
    indices are integers: no gradient flows through them."""
    if input.ndim != 4:
        raise _Refused(f"an input of rank {input.ndim} is not supported (rank 4, as TF "
                       "requires)")
    if data_format != "NHWC":
        raise _Refused(f"data_format={data_format!r} is not supported ('NHWC', as TF "
                       "requires)")
    name = str(getattr(output_dtype, "name", output_dtype))
    if name not in ("int32", "int64"):
        raise _Refused(f"output_dtype={name!r} is not supported ('int32', 'int64', computed "
                       "as int32)")
    values = _pool("max", 2)(rt, input, ksize, strides, padding)
    (kh, kw), (sh, sw) = _pool_window(ksize, 2, "ksize"), _pool_window(strides, 2, "strides")
    n, h, w, c = input.shape
    oh, ow = values.shape[1:3]
    if padding == "SAME":
        top, left = max((oh - 1) * sh + kh - h, 0) // 2, max((ow - 1) * sw + kw - w, 0) // 2
    else:
        top = left = 0
    r = (np.arange(oh) * sh - top)[:, None] + np.arange(kh)  # (oh, kh): the window's rows
    q = (np.arange(ow) * sw - left)[:, None] + np.arange(kw)  # (ow, kw)
    x = jax.lax.stop_gradient(input)
    win = x[:, np.clip(r, 0, h - 1)][:, :, :, np.clip(q, 0, w - 1)]  # (n, oh, kh, ow, kw, c)
    valid = ((r >= 0) & (r < h))[:, :, None, None] & ((q >= 0) & (q < w))[None, None]
    low = -jnp.inf if jnp.issubdtype(x.dtype, jnp.floating) else jnp.iinfo(x.dtype).min
    win = jnp.where(valid[None, ..., None], win, jnp.asarray(low, x.dtype))  # the padding
    win = win.transpose(0, 1, 3, 2, 4, 5).reshape(n, oh, ow, kh * kw, c)
    k = jnp.argmax(win, axis=3)  # the first of equal maxima in the window's row-major order
    row = jnp.asarray(r)[jnp.arange(oh)[None, :, None, None], k // kw]
    col = jnp.asarray(q)[jnp.arange(ow)[None, None, :, None], k % kw]
    index = (row * w + col) * c + jnp.arange(c)
    if include_batch_in_index:
        index = index + (jnp.arange(n) * (h * w * c))[:, None, None, None]
    return values, index.astype(jnp.int32)


def _dct_matrix(kind: int, n: int, norm) -> np.ndarray:
    """The ``n x n`` matrix of TF's (SciPy's) DCT of type ``kind``, ``y = C x``."""
    k, m = np.arange(n)[:, None], np.arange(n)[None, :]
    if kind == 1:
        c = 2.0 * np.cos(np.pi * k * m / (n - 1))
        c[:, 0], c[:, -1] = 1.0, (-1.0) ** np.arange(n)
    elif kind == 2:
        c = 2.0 * np.cos(np.pi * k * (2 * m + 1) / (2 * n))
        if norm == "ortho":
            c *= np.where(k == 0, np.sqrt(1.0 / (4 * n)), np.sqrt(1.0 / (2 * n)))
    elif kind == 3:
        c = 2.0 * np.cos(np.pi * m * (2 * k + 1) / (2 * n))
        c[:, 0] = 1.0
        if norm == "ortho":
            c *= np.where(m == 0, np.sqrt(1.0 / n), np.sqrt(1.0 / (2 * n)))
    else:
        c = 2.0 * np.cos(np.pi * (2 * k + 1) * (2 * m + 1) / (4 * n))
        if norm == "ortho":
            c *= np.sqrt(1.0 / (2 * n))
    return c.astype(np.float32)


def _dct(rt, input, type=2, n=None, axis=-1, norm=None):
    """``tf.signal.dct`` of types 1 to 4 along the last axis (SciPy's definitions, as TF
    documents), unnormalized or ``ortho`` (not for type 1, as in TF); ``n``: the input
    truncated or zero-padded to that length first."""
    kind = int(type)
    if kind not in (1, 2, 3, 4):
        raise _Refused(f"type={type!r} is not supported (1, 2, 3 or 4, as in TF)")
    if int(axis) not in (-1, input.ndim - 1):
        raise _Refused(f"axis={axis!r} is not supported (-1, as TF requires)")
    if norm not in (None, "ortho"):
        raise _Refused(f"norm={norm!r} is not supported (None or 'ortho', as in TF)")
    if kind == 1 and norm == "ortho":
        raise _Refused("norm='ortho' is not supported for type=1 (TF refuses it too)")
    size = input.shape[-1] if n is None else _static_int(n, "n")
    if size < 1 or (kind == 1 and size < 2):
        raise _Refused(f"n={size} is too short for a DCT of type {kind} (TF refuses it too)")
    if kind == 2:  # (JAX's own, as before types 1, 3 and 4 were translated)
        return jax.scipy.fft.dct(input, type=2, n=size, axis=-1, norm=norm)
    x = input[..., :size]
    if x.shape[-1] < size:
        x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, size - x.shape[-1])])
    return jnp.matmul(x, jnp.asarray(_dct_matrix(kind, size, norm).T, x.dtype),
                      precision=jax.lax.Precision.HIGHEST)


def _idct(rt, input, type=2, n=None, axis=-1, norm=None):
    """``tf.signal.idct``: TF's, the DCT of the inverse type (1 <-> 1, 2 <-> 3, 4 <-> 4)
    with the same ``norm``: unnormalized, it is the inverse times ``2 N`` (``2 (N - 1)``
    for type 1), as SciPy's ``fftpack.idct``."""
    inverse = {1: 1, 2: 3, 3: 2, 4: 4}.get(int(type))
    if inverse is None:
        raise _Refused(f"type={type!r} is not supported (1, 2, 3 or 4, as in TF)")
    return _dct(rt, input, inverse, n, axis, norm)


def _mfccs(rt, log_mel_spectrograms):
    """``tf.signal.mfccs_from_log_mel_spectrograms``: the DCT-II of the last axis over
    ``sqrt(2 N)`` (TF's scaling)."""
    x = log_mel_spectrograms
    if not jnp.issubdtype(x.dtype, jnp.floating) or x.shape[-1] < 1:
        raise _Refused(f"log_mel_spectrograms={_show(x)} of dtype {x.dtype} are not "
                       "supported (floats with a non-empty last axis)")
    return jax.scipy.fft.dct(x, type=2, axis=-1) * jax.lax.rsqrt(
        jnp.asarray(2.0 * x.shape[-1], x.dtype))


def _overlap_and_add(rt, signal, frame_step):
    """``tf.signal.overlap_and_add``: frames ``(..., frames, frame_length)`` added at every
    ``frame_step``, into ``(frames - 1) * frame_step + frame_length`` samples."""
    step = _static_int(frame_step, "frame_step")
    if signal.ndim < 2 or step < 1:
        raise _Refused(f"frame_step={step} with a signal of shape {tuple(signal.shape)}: a "
                       "positive step and at least two axes (TF refuses others too)")
    frames, length = signal.shape[-2:]
    index = np.arange(frames)[:, None] * step + np.arange(length)
    out = jnp.zeros(signal.shape[:-2] + (max(frames - 1, 0) * step + length,), signal.dtype)
    return out.at[..., index].add(signal)


def _ensure_shape(rt, x, shape):
    """``tf.ensure_shape``: ``x``, its shape checked against ``shape`` (``None``: any size;
    the batch axis is traced with one example)."""
    want = list(shape) if isinstance(shape, (list, tuple)) else shape
    if want is not None and (len(want) != x.ndim or any(
            d is not None and int(d) not in (-1, s) for d, s in zip(want, x.shape))):
        raise _Refused(f"shape={want!r} does not fit the input's {tuple(x.shape)} (TF "
                       "raises when it runs; the importer traces the model on a batch of "
                       "one)")
    return x


def _polyval(rt, coeffs, x):
    """``tf.math.polyval``: ``coeffs[0] * x ** (n - 1) + ... + coeffs[-1]`` by Horner's
    rule, as TF computes it."""
    coeffs = list(coeffs) if isinstance(coeffs, (list, tuple)) else [coeffs]
    if not coeffs:
        return jnp.zeros_like(x)
    y = jnp.asarray(_const(coeffs[0], x), x.dtype) + jnp.zeros_like(x)
    for c in coeffs[1:]:
        y = _const(c, x) + y * x
    return y


# ------------------------------------ search, counts, legacy resizes, spectrograms, YIQ
def _index_type(v, what: str) -> None:
    """An ``out_type``-like argument: int32 or int64 (computed as int32, as JAX does)."""
    name = str(getattr(v, "name", v))
    if name not in ("int32", "int64"):
        raise _Refused(f"{what}={name!r} is not supported (supported: 'int32', 'int64', "
                       "computed as int32)")


def _searchsorted(rt, sorted_sequence, values, side="left", out_type="int32"):
    """``tf.searchsorted``: for each value, the number of entries of its row of
    ``sorted_sequence`` below it (``side='left'``, TF's lower bound) or at most it
    (``'right'``, the upper bound); rows are the innermost axis, the leading axes of each
    flattened, and both must have as many rows (TF's rule). Written as counts of
    comparisons, which are the bounds of a sorted row (a NaN value: 0 on the left, the
    row's length on the right, as TF's binary search gives); ``sorted_sequence`` must be
    sorted, TF's result being unspecified otherwise. int32 indices (int64 computed as
    int32), piecewise constant: no gradient, as ``tf.argsort``'s."""
    if side not in ("left", "right"):
        raise _Refused(f"side={side!r} is not supported ('left' or 'right', as in TF)")
    _index_type(out_type, "out_type")
    seq, val = (jnp.asarray(v) for v in _operands(sorted_sequence, values))
    if seq.ndim < 1 or val.ndim < 1:
        raise _Refused(f"sorted_sequence of shape {tuple(seq.shape)} and values of shape "
                       f"{tuple(val.shape)} must both have at least one axis (TF refuses "
                       "scalars too)")
    s2, v2 = seq.reshape(-1, seq.shape[-1]), val.reshape(-1, val.shape[-1])
    if s2.shape[0] != v2.shape[0]:
        raise _Refused(f"sorted_sequence of shape {tuple(seq.shape)} and values="
                       f"{_show(values)} of shape {tuple(val.shape)} have {s2.shape[0]} and "
                       f"{v2.shape[0]} rows (the product of the leading axes of each): TF "
                       "requires as many; give the sequence the values' leading axes "
                       "(tf.broadcast_to, or tf.tile by tf.shape(values)[0] for a batch)")
    s, v = s2[:, None, :], v2[:, :, None]
    if side == "left":
        idx = jnp.sum(s < v, axis=-1)
    else:
        idx = s2.shape[-1] - jnp.sum(v < s, axis=-1)
    return idx.astype(jnp.int32).reshape(val.shape)


def _bincount(rt, arr, weights=None, minlength=None, maxlength=None, dtype="int32",
              axis=None, binary_output=False):
    """``tf.math.bincount`` with a static number of bins: ``minlength`` at least
    ``maxlength`` (both given), which makes it ``maxlength`` (TF: the largest value + 1,
    raised to ``minlength``, cut to ``maxlength``). Counts (or sums of ``weights``, or
    ``binary_output``'s 1 where a value occurs) of the values in ``[0, maxlength)``; the
    others are dropped (TF drops those above; it raises on negative ones, which only a
    tensor's values can be here). ``axis`` ``None`` or 0: of every value; -1: of each row
    of a 2-D ``arr``. Floats are truncated to integers first, as TF casts them. The
    dtype: the weights' (float32), else ``dtype``'s. The counts are piecewise constant
    (no gradient); sums of weights have the weights' gradient."""
    if minlength is None or maxlength is None or _static_int(minlength, "minlength") < \
            _static_int(maxlength, "maxlength"):
        raise _Refused(f"minlength={_show(minlength)}, maxlength={_show(maxlength)}: the "
                       "number of bins (the largest value + 1, between minlength and "
                       "maxlength) would depend on the values of a tensor, and JAX needs "
                       "every shape when it traces the model; give minlength and maxlength "
                       "equal (tf.math.bincount(x, minlength=n, maxlength=n)) for n bins")
    n = _static_int(maxlength, "maxlength")
    if n < 0:
        raise _Refused(f"maxlength={n} must be non-negative (TF refuses it too)")
    if weights is not None and binary_output:
        raise _Refused(f"weights={_show(weights)} with binary_output=True is not supported "
                       "(TF refuses the two together too: give one)")
    if axis not in (None, 0, -1):
        raise _Refused(f"axis={axis!r} is not supported (None, 0 or -1, as in TF)")
    arr = jnp.asarray(_const(arr))
    if not jnp.issubdtype(arr.dtype, jnp.integer):
        arr = arr.astype(jnp.int32)
    if axis == -1 and arr.ndim not in (1, 2):
        raise _Refused(f"axis=-1 with arr of rank {arr.ndim} is not supported (rank 1 or 2, "
                       "as TF's kernel takes)")
    if weights is not None:
        shown, weights = _show(weights), jnp.asarray(_const(weights))
        if weights.shape != arr.shape:
            raise _Refused(f"weights={shown} of shape {tuple(weights.shape)} do not have the "
                           f"shape of arr, {tuple(arr.shape)} (TF refuses them too)")
        out = weights.dtype
    else:
        out = _cast_dtype(dtype)
    rows = (arr.reshape(1, -1) if axis != -1 or arr.ndim == 1 else arr)
    w = (jnp.ones(rows.shape, out) if weights is None else weights.reshape(rows.shape))
    ids = rows.astype(jnp.int32)  # outside [0, n): dropped by segment_sum
    counts = jax.vmap(lambda wi, i: jax.ops.segment_sum(wi, i, n))(w, ids)
    if binary_output:
        counts = (counts > 0).astype(out)
    return counts[0] if axis != -1 or arr.ndim == 1 else counts


def _legacy_scale(n_in: int, n_out: int, align_corners: bool) -> np.float32:
    """TF 1's resize scale (``CalculateResizeScale``), in float32."""
    if align_corners and n_out > 1:
        return np.float32(n_in - 1) / np.float32(n_out - 1)
    return np.float32(n_in) / np.float32(n_out)


def _legacy_positions(n_in: int, n_out: int, align_corners: bool, half_pixel: bool,
                      shift: bool = True) -> np.ndarray:
    """The input coordinate of each output position of TF 1's resize kernels, in float32:
    ``j * scale``, or ``(j + 0.5) * scale - 0.5`` with half-pixel centres (``shift``
    False: without the ``- 0.5``, as the nearest-neighbour kernel)."""
    scale, j = _legacy_scale(n_in, n_out, align_corners), np.arange(n_out, dtype=np.float32)
    if not half_pixel:
        return j * scale
    pos = (j + np.float32(0.5)) * scale
    return pos - np.float32(0.5) if shift else pos


def _legacy_nearest(n_in: int, n_out: int, align_corners: bool, half_pixel: bool):
    """TF 1's ``ResizeNearestNeighbor``: the position rounded (half away from zero) with
    ``align_corners``, else floored; within the image."""
    pos = _legacy_positions(n_in, n_out, align_corners, half_pixel, shift=False)
    idx = (np.sign(pos) * np.floor(np.abs(pos) + np.float32(0.5)) if align_corners
           else np.floor(pos))
    return np.clip(idx.astype(np.int64), 0, n_in - 1)


def _legacy_matrix(n_in: int, n_out: int, kind: str, align_corners: bool,
                   half_pixel: bool) -> np.ndarray:
    """``(n_in, n_out)`` weights of TF 1's ``ResizeBilinear`` or ``ResizeBicubic``.
    Bilinear: the two neighbours of the position ``p`` (floor and ceil, kept within the
    image) weighted ``1 - (p - floor p)`` and ``p - floor p``. Bicubic: four taps
    ``floor p - 1 .. floor p + 2`` of Keys' kernel read from TF's table of 1024 steps
    (the fractional part rounded to a multiple of 1/1024); ``a = -0.75`` with taps outside
    the image reading the border pixel (the legacy kernel), or with half-pixel centres
    ``a = -0.5``, taps outside the image weighing 0 and the four renormalized."""
    pos = _legacy_positions(n_in, n_out, align_corners, half_pixel)
    base = np.floor(pos)
    frac = pos - base
    cols = np.arange(n_out)
    w = np.zeros((n_in, n_out), np.float64)
    if kind == "bilinear":
        lo = np.maximum(base, 0).astype(np.int64)
        hi = np.minimum(np.ceil(pos), n_in - 1).astype(np.int64)
        np.add.at(w, (lo, cols), 1.0 - frac.astype(np.float64))
        np.add.at(w, (hi, cols), frac.astype(np.float64))
        return w.astype(np.float32)
    t = np.rint(frac * np.float32(1024)).astype(np.float64) / 1024
    a = -0.5 if half_pixel else -0.75
    taps = []
    for k in (-1, 0, 1, 2):
        rows = base.astype(np.int64) + k
        weight = np.float32(keys_cubic(np.abs(t - k), a))
        if half_pixel:
            weight = np.where((rows >= 0) & (rows < n_in), weight, np.float32(0))
        taps.append((np.clip(rows, 0, n_in - 1), weight.astype(np.float64)))
    total = sum(wk for _, wk in taps)
    for rows, wk in taps:
        if half_pixel:
            wk = np.where(np.abs(total) >= 1000.0 * np.finfo(np.float32).tiny,
                          wk / np.where(total == 0, 1.0, total), wk)
        np.add.at(w, (rows, cols), wk)
    return w.astype(np.float32)


_V1_METHODS = {0: "bilinear", 1: "nearest", 2: "bicubic", 3: "area", "bilinear": "bilinear",
               "nearest": "nearest", "bicubic": "bicubic", "area": "area"}


def _resize_v1(images, size, kind: str, align_corners, half_pixel_centers):
    """TF 1's resize kernels on 4-D images: floats out, except nearest, which keeps the
    dtype."""
    if images.ndim != 4:
        raise _Refused(f"images of rank {images.ndim} are not supported (batch, height, "
                       "width, channels only)")
    align, half = bool(align_corners), bool(half_pixel_centers)
    if align and half:
        raise _Refused("align_corners=True with half_pixel_centers=True is not supported "
                       "(TF refuses it too: give one)")
    sizes = _static_ints(size, "size")
    if len(sizes) != 2 or min(sizes) <= 0:
        raise _Refused(f"size={list(sizes)} is not two positive sizes (TF refuses it too)")
    if kind == "area":
        if align:
            raise _Refused("align_corners=True is not supported with area resizing (TF's "
                           "ResizeArea without it only)")
        return resize_axes(images.astype(jnp.float32), (1, 2), sizes, "area")
    x = images if kind == "nearest" else images.astype(jnp.float32)
    for axis, n_out in zip((1, 2), sizes):
        n_in = x.shape[axis]
        if kind == "nearest":
            x = jnp.take(x, _legacy_nearest(n_in, n_out, align, half), axis=axis)
        else:
            w = jnp.asarray(_legacy_matrix(n_in, n_out, kind, align, half))
            x = jnp.moveaxis(jnp.tensordot(x, w, axes=(axis, 0)), -1, axis)
    return x


def _resize_kernel_v1(kind: str):
    """``tf.compat.v1.image.resize_bilinear`` / ``resize_nearest_neighbor`` /
    ``resize_bicubic`` / ``resize_area`` (TF 1's kernels: ``align_corners``,
    ``half_pixel_centers``)."""
    if kind == "area":
        def f(rt, images, size, align_corners=False):
            return _resize_v1(images, size, kind, align_corners, False)
    else:
        def f(rt, images, size, align_corners=False, half_pixel_centers=False):
            return _resize_v1(images, size, kind, align_corners, half_pixel_centers)
    return f


def _resize_images_v1(rt, images, size, method=0, align_corners=False,
                      preserve_aspect_ratio=False):
    """``tf.compat.v1.image.resize_images`` (``tf.compat.v1.image.resize``): TF 1's kernels
    chosen by ``method`` (0 to 3 or its name), without half-pixel centres; a size equal to
    the image's returns the image as it is."""
    kind = _V1_METHODS.get(method if isinstance(method, (int, str)) else None)
    if kind is None:
        raise _Refused(f"method={method!r} is not supported (0 bilinear, 1 nearest, 2 "
                       "bicubic, 3 area, or their names, as TF 1)")
    if images.ndim != 4:
        raise _Refused(f"images of rank {images.ndim} are not supported (batch, height, "
                       "width, channels only)")
    sizes = _static_ints(size, "size")
    if preserve_aspect_ratio and len(sizes) == 2:
        sizes = _aspect_size(images.shape[1], images.shape[2], *sizes)
    if tuple(sizes) == tuple(images.shape[1:3]):
        return images
    return _resize_v1(images, sizes, kind, align_corners, False)


def _cosine_window(kind: str, n: int) -> np.ndarray:
    """TF's periodic ``hann_window`` / ``hamming_window`` of ``n`` samples, in float32."""
    if kind is None:
        return np.ones(n, np.float32)
    if n == 1:
        return np.ones(1, np.float32)
    a, b = (0.5, 0.5) if kind == "hann_window" else (0.54, 0.46)
    denom = np.float32(n + (1 - n % 2) - 1)
    arg = np.float32(2 * np.pi) * np.arange(n, dtype=np.float32) / denom
    return (np.float32(a) - np.float32(b) * np.cos(arg)).astype(np.float32)


def _stft(rt, signals, frame_length, frame_step, fft_length=None, window_fn="hann_window",
          pad_end=False):
    """``tf.signal.stft``: frames of the last axis (:func:`_frame`), times TF's periodic
    Hann window (``window_fn``: the default; ``None``, no window; tf.keras writes a window
    function given explicitly as its name, ``'hann_window'`` or ``'hamming_window'`` read
    here), then the real FFT of ``fft_length`` points (the frame cut or zero-padded to it;
    default the smallest power of 2 at least ``frame_length``): complex64 of shape
    ``(..., frames, fft_length // 2 + 1)``."""
    if window_fn not in (None, "hann_window", "hamming_window"):
        raise _Refused(f"window_fn={window_fn!r} is not supported (the default Hann window, "
                       "'hann_window', 'hamming_window' or None)")
    if not jnp.issubdtype(signals.dtype, jnp.floating):
        raise _Refused(f"signals of dtype {signals.dtype} are not supported (floats, as TF "
                       "requires)")
    n = _static_int(frame_length, "frame_length")
    frames = _frame(rt, signals, n, frame_step, pad_end=pad_end)
    size = (1 << max(0, int(np.ceil(np.log2(n)))) if fft_length is None
            else _static_int(fft_length, "fft_length"))
    if size <= 0:
        raise _Refused(f"fft_length={size} must be positive (TF refuses it too)")
    windowed = frames * jnp.asarray(_cosine_window(window_fn, n), frames.dtype)
    return jnp.fft.rfft(windowed, n=size, axis=-1).astype(jnp.complex64)


_RGB_TO_YIQ = [[0.299, 0.59590059, 0.2115], [0.587, -0.27455667, -0.52273617],
               [0.114, -0.32134392, 0.31119955]]
_YIQ_TO_RGB = [[1, 1, 1], [0.95598634, -0.27201283, -1.10674021],
               [0.6208248, -0.64720424, 1.70423049]]


# ------------------ fake quantization, fused batch norm, complex parts, morphology, linalg
def _kept(value, source):
    """``value``, except ``source`` (NaN) where ``source`` is NaN: the same values wherever
    a NaN ``source`` makes the result NaN either way (``a / _kept(c, a)``: a quotient of
    ``a``; ``_kept(a * b, a)``: a product). Under ``jax.jit`` XLA rewrites a division by a
    constant into a product by its reciprocal and ``a / (b / c)`` into ``(a * c) / b``, and
    fuses a product with the addition after it into one FMA, each one float32 rounding off
    the quotient or product TF's kernels round (a whole level off at a half step);
    ``lax.optimization_barrier`` did not stop it (jax 0.10.2: no barrier was left in the
    rewritten programs), a select on the operand's NaN does."""
    return jnp.where(jnp.isnan(source), source, value)


def _fq_nudge(lo, hi, bits: int, narrow: bool):
    """TF's ``Nudge`` (fake_quant_ops_functor.h) in float32, each operation rounded once as
    in TF's kernel: the range moved so that 0 is a level (the zero point rounded half away
    from zero, within the levels); the nudged ends, the step, its inverse and the nudged
    zero point ``floor(-nudged_min / step + 1/2)``, each of ``lo``'s shape. A range known
    when traced (not a tracer) is nudged here in NumPy: under ``jit`` XLA would fold it
    with its own rewrites; a traced one in JAX, its quotients and nudged minimum kept
    (:func:`_kept`)."""
    traced = isinstance(lo, jax.core.Tracer) or isinstance(hi, jax.core.Tracer)
    xp, keep = (jnp, _kept) if traced else (np, lambda v, source: v)
    lo, hi = (xp.asarray(v, xp.float32) for v in (lo, hi))
    qmin, qmax = np.float32(1.0 if narrow else 0.0), np.float32((1 << bits) - 1)
    width = hi - lo
    with np.errstate(divide="ignore", invalid="ignore"):  # an empty range: NaN, infinities
        scale = width / keep(qmax - qmin, width)
        inv = (qmax - qmin) / width
        z = qmin - lo / keep(scale, lo)
        below = xp.floor(z)
        rounded = xp.where(z - below == 0.5, below + 1, xp.round(z))
        zero = xp.where(z < qmin, qmin, xp.where(z > qmax, qmax, rounded))
        # nmin is subtracted from the clamped input (_fake_quant_levels): kept, so that XLA
        # cannot fuse its product into that difference (nmax is only compared)
        nmin, nmax = keep((qmin - zero) * scale, scale), (qmax - zero) * scale
        # within 0.02 of an integer, far from a tie: no rounding to keep
        quant_zero = xp.floor(-nmin * inv + np.float32(0.5))
    return tuple(xp.asarray(v, xp.float32) for v in (nmin, nmax, scale, inv, quant_zero))


def _fake_quant(x, lo, hi, bits: int, narrow: bool, divide: bool):
    """TF's fake quantization of ``x`` on ``[lo, hi]`` (scalars, or one range per channel
    of the last axis): clamped to the nudged range (:func:`_fq_nudge`), rounded to its
    levels as TF's kernels compute it, ``floor(shifted / step - quant_zero + 1/2) * step``
    (``divide``: TF's kernel for ``_vars``) or ``floor(shifted * (1 / step) - ...)`` (its
    kernels for ``_args`` and ``_vars_per_channel``), each quotient, product and difference
    rounded before the next operation (:func:`_kept`), so that compiled equals eager
    equals TF."""
    nudged = (jax.lax.stop_gradient(v) for v in _fq_nudge(lo, hi, bits, narrow))
    return _fake_quant_levels(x, lo, hi, *nudged, divide)


@functools.partial(jax.custom_vjp, nondiff_argnums=(8,))
def _fake_quant_levels(x, lo, hi, nmin, nmax, scale, inv, quant_zero, divide: bool):
    shifted = jnp.clip(x, nmin, nmax) - nmin
    levels = shifted / _kept(scale, shifted) if divide else _kept(shifted * inv, shifted)
    return jnp.floor(_kept(levels - quant_zero, levels) + np.float32(0.5)) * scale


def _fake_quant_fwd(x, lo, hi, nmin, nmax, scale, inv, quant_zero, divide):
    return (_fake_quant_levels(x, lo, hi, nmin, nmax, scale, inv, quant_zero, divide),
            (x, lo, hi, nmin, nmax, scale, inv, quant_zero))


def _fake_quant_bwd(divide, res, g):
    """TF's gradient (``FakeQuantWithMinMax*Gradient``): straight through inside the nudged
    range, ends included, 0 outside; the range's ends get the sums of the gradients below
    and above it (per channel for a range per channel); none through the nudged values
    (their gradients are the range's)."""
    x, lo, hi, nmin, nmax = res[:5]
    zero = jnp.zeros_like(g)

    def total(v, like):
        return jnp.sum(v) if like.ndim == 0 else jnp.sum(v.reshape(-1, like.shape[-1]), 0)

    return (jnp.where((x >= nmin) & (x <= nmax), g, zero),
            total(jnp.where(x < nmin, g, zero), lo), total(jnp.where(x > nmax, g, zero), hi),
            *(jnp.zeros_like(v) for v in res[3:]))


_fake_quant_levels.defvjp(_fake_quant_fwd, _fake_quant_bwd)


def _fake_quant_call(per_channel: bool, divide: bool = False):
    """``tf.quantization.fake_quant_with_min_max_args`` / ``_vars`` (``per_channel``
    False: one range; ``divide``: by the step, as TF's kernel for ``_vars`` does) /
    ``_vars_per_channel`` (one per channel of the last axis): ``min`` and ``max`` constants
    (as recorded) or tensors, ``num_bits`` 2 to 16; float32."""
    def f(rt, inputs, min=-6.0, max=6.0, num_bits=8, narrow_range=False):
        bits = _static_int(num_bits, "num_bits")
        if not 2 <= bits <= 16:
            raise _Refused(f"num_bits={bits} is not supported (2 to 16, as TF requires)")
        if not jnp.issubdtype(inputs.dtype, jnp.floating):
            raise _Refused(f"inputs of dtype {inputs.dtype} are not supported (float32, as "
                           "TF requires)")
        # a constant range stays NumPy, nudged when traced (jnp.asarray would stage it)
        lo, hi = (np.asarray(v, np.float32) if _is_static(v) else jnp.asarray(v, jnp.float32)
                  for v in (min, max))
        want = (inputs.shape[-1],) if per_channel else ()
        kind = "one value per channel of the last axis" if per_channel else "a scalar"
        for what, v, given in (("min", lo, min), ("max", hi, max)):
            if v.shape != want:
                raise _Refused(f"{what}={_show(given)} of shape {tuple(v.shape)}: expected "
                               f"shape {want} ({kind}, as TF requires)")
        if _is_static(min) and _is_static(max) and not bool(np.all(
                np.asarray(min, np.float32) < np.asarray(max, np.float32))):
            raise _Refused(f"min={_show(min)}, max={_show(max)}: min must be below max "
                           "(TF refuses it for fake_quant_with_min_max_args; an empty "
                           "range has no levels)")
        return _fake_quant(inputs.astype(jnp.float32), lo, hi, bits, bool(narrow_range),
                           divide)
    return f


def _fused_batch_norm(rt, x, scale, offset, mean=None, variance=None, epsilon=0.001,
                      data_format="NHWC", is_training=True, exponential_avg_factor=1.0):
    """``tf.compat.v1.nn.fused_batch_norm`` at inference (``is_training=False``):
    ``(x - mean) * (rsqrt(variance + epsilon) * scale) + offset`` over the last axis, as
    TF's kernel orders it (``epsilon`` as given: a variance and epsilon of 0 give
    infinities and NaN, as in TF); three results, the
    normalized tensor, ``mean`` and ``variance`` (TF's outputs at inference;
    ``exponential_avg_factor`` only matters in training)."""
    if is_training:
        raise _Refused("is_training=True (TF's default) is not supported: it normalizes "
                       "by the statistics of the batch it is given, so each example's "
                       "output depends on the others in its batch; pass is_training=False "
                       "with mean= and variance= (the moving averages), or use "
                       "tf.keras.layers.BatchNormalization, which the importer reads")
    if mean is None or variance is None:
        raise _Refused("is_training=False without mean= and variance= (TF refuses it too: "
                       "give the moving averages)")
    if data_format != "NHWC":
        raise _Refused(f"data_format={data_format!r} is not supported ('NHWC', 'NCHW', "
                       "'NDHWC', 'NCDHW' of inputs of rank 4 or 5)")
    vecs = [jnp.asarray(_const(v, x), jnp.float32) for v in (scale, offset, mean, variance)]
    for what, v in zip(("scale", "offset", "mean", "variance"), vecs):
        if v.shape != (x.shape[-1],):
            raise _Refused(f"{what} of shape {tuple(v.shape)}: expected ({x.shape[-1]},), "
                           "one value per channel (TF refuses others too)")
    s, o, m, v = vecs
    eps = np.float32(epsilon)
    y = (x.astype(jnp.float32) - m) * (jax.lax.rsqrt(v + eps) * s) + o
    return y, m, v


_FLT_MAX = np.float32(np.finfo(np.float32).max)


def _qdq_forward(x, lo, hi, bits: int, signed: bool, narrow: bool, range_given: bool,
                 half_up: bool, axis):
    """TF's ``QuantizeAndDequantizeV2``/``V4`` kernels' formula in float32: the integer grid
    ``[qmin, qmax]`` (``[-2^(b-1) (+1 narrow), 2^(b-1) - 1]`` signed, ``[0, 2^b - 1]``
    unsigned), the range ``[lo, hi]`` (given, or the tensor's min and max, per slice of
    ``axis``), the scale the smaller of ``qmin / lo`` and ``qmax / hi`` where positive (the
    side that gives it keeps its end, the other end moves to the grid's); the values
    clamped to that range when it is given, scaled, rounded (half to even, or half up) and
    scaled back."""
    qmin = (-(1 << (bits - 1)) + int(narrow)) if signed else 0
    qmax = ((1 << (bits - 1)) - 1) if signed else (1 << bits) - 1
    qmin, qmax = np.float32(qmin), np.float32(qmax)
    shape = [1] * x.ndim
    if axis is not None:
        shape[axis] = x.shape[axis]
    if range_given:
        lo, hi = (jnp.broadcast_to(v, shape[axis:axis + 1] if axis is not None else ())
                  for v in (lo, hi))
    else:  # the tensor's range (the whole tensor: the batch too, as in TF)
        others = tuple(a for a in range(x.ndim) if a != axis)
        lo, hi = jnp.min(x, axis=others), jnp.max(x, axis=others)
    from_min = jnp.where(qmin * lo > 0, qmin / jnp.where(lo == 0, 1, lo), _FLT_MAX)
    from_max = jnp.where(qmax * hi > 0, qmax / jnp.where(hi == 0, 1, hi), _FLT_MAX)
    by_min = from_min < from_max
    scale = jnp.where(by_min, from_min, from_max)
    # divided by the grid's ends as TF divides (:func:`_kept`: compiled, XLA would multiply
    # by a constant's reciprocal, one float32 rounding off TF's quotient)
    inv = jnp.where(by_min, lo / _kept(qmin or 1, lo), hi / _kept(qmax, hi))
    lo2, hi2 = jnp.where(by_min, lo, qmin * inv), jnp.where(by_min, qmax * inv, hi)
    scale, inv, lo2, hi2 = (v.reshape(shape) for v in (scale, inv, lo2, hi2))
    v = jnp.maximum(jnp.minimum(x, hi2), lo2) if range_given else x
    v = _kept(v * scale, v)  # rounded before the half is added (XLA would fuse an FMA)
    v = jnp.floor(v + np.float32(0.5)) if half_up else jnp.round(v)
    return v * inv


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6, 7, 8, 9))
def _qdq(x, lo, hi, bits, signed, narrow, range_given, half_up, axis, through):
    return _qdq_forward(x, lo, hi, bits, signed, narrow, range_given, half_up, axis)


def _qdq_fwd(x, lo, hi, bits, signed, narrow, range_given, half_up, axis, through):
    return _qdq(x, lo, hi, bits, signed, narrow, range_given, half_up, axis, through), (
        x, lo, hi)


def _qdq_bwd(bits, signed, narrow, range_given, half_up, axis, through, res, g):
    """TF's registered gradients: ``quantize_and_dequantize_v2`` (the ``V4`` op) passes the
    gradient where ``input_min <= x <= input_max`` (the range as given, even with
    ``range_given=False``; per slice of ``axis``) and 0 elsewhere; the deprecated
    ``quantize_and_dequantize`` (``through``) passes it everywhere. The range's ends get 0."""
    x, lo, hi = res
    if through:
        return g, jnp.zeros_like(lo), jnp.zeros_like(hi)
    shape = [1] * x.ndim
    if axis is not None:
        shape[axis] = x.shape[axis]
    ends = [jnp.broadcast_to(v, shape[axis:axis + 1] if axis is not None else ()).reshape(shape)
            for v in (lo, hi)]
    inside = (x >= ends[0]) & (x <= ends[1])
    return jnp.where(inside, g, jnp.zeros_like(g)), jnp.zeros_like(lo), jnp.zeros_like(hi)


_qdq.defvjp(_qdq_fwd, _qdq_bwd)


def _quantize_and_dequantize(through: bool):
    """``tf.quantization.quantize_and_dequantize_v2`` (``through`` False) and the deprecated
    ``quantize_and_dequantize`` (``through``: its gradient is the identity): see
    :func:`_qdq_forward`. ``input_min`` / ``input_max`` constants or tensors (scalars, or
    one value per slice of ``axis``); with ``range_given=False`` the range is the tensor's
    minimum and maximum over every axis but ``axis`` (the batch axis too: each example's
    output depends on the others in its batch, as in TF)."""
    def f(rt, input, input_min, input_max, signed_input=True, num_bits=8, range_given=False,
          round_mode="HALF_TO_EVEN", narrow_range=False, axis=None):
        bits, signed = _static_int(num_bits, "num_bits"), bool(signed_input)
        top = 61 if signed else 62
        if not 1 <= bits <= top:
            raise _Refused(f"num_bits={bits} is not supported (1 to {top} with "
                           f"signed_input={signed}, as TF requires)")
        if round_mode not in ("HALF_TO_EVEN", "HALF_UP"):
            raise _Refused(f"round_mode={round_mode!r} is not supported ('HALF_TO_EVEN', "
                           "'HALF_UP', as in TF)")
        if not jnp.issubdtype(input.dtype, jnp.floating):
            raise _Refused(f"an input of dtype {input.dtype} is not supported (floats, as TF "
                           "requires)")
        if axis is not None:
            ax = _static_int(axis, "axis")
            if not -input.ndim <= ax < input.ndim:
                raise _Refused(f"axis={ax} is out of range for an input of rank {input.ndim}")
            ax %= input.ndim
        else:
            ax = None
        lo, hi = (jnp.asarray(_const(v), jnp.float32) for v in (input_min, input_max))
        want = ((), (input.shape[ax],)) if ax is not None else ((),)
        for what, v, given in (("input_min", lo, input_min), ("input_max", hi, input_max)):
            if v.shape not in want:
                raise _Refused(f"{what}={_show(given)} of shape {tuple(v.shape)}: expected "
                               f"{' or '.join(map(str, want))} (a scalar, or one value per "
                               "slice of axis)")
        if range_given and _is_static(input_min) and _is_static(input_max) and not bool(
                np.all(np.asarray(input_min, np.float32) <= np.asarray(input_max,
                                                                       np.float32))):
            raise _Refused(f"input_min={_show(input_min)}, input_max={_show(input_max)}: "
                           "input_min must not be above input_max (TF refuses it too)")
        x = input.astype(jnp.float32)

        def q(v, lo, hi):
            return _qdq(v, lo, hi, bits, signed, bool(narrow_range), bool(range_given),
                        round_mode == "HALF_UP", ax, through)
        # a given range: an elementwise map (an activation for the attribution rules; the
        # range's ends passed as its constants: they may be tensors of the model)
        return rt.act(q, x, lo, hi) if range_given else q(x, lo, hi)
    return f


def _fused_batch_norm_any(rt, x, scale, offset, mean=None, variance=None, epsilon=0.001,
                          data_format="NHWC", is_training=True, exponential_avg_factor=1.0):
    """``tf.compat.v1.nn.fused_batch_norm`` at inference, channels last (``NHWC``,
    ``NDHWC``: :func:`_fused_batch_norm`) or first (``NCHW``, ``NCDHW``: the channel axis
    moved last and back)."""
    if data_format in ("NCHW", "NCDHW") and x.ndim == len(data_format) and not is_training:
        moved = jnp.moveaxis(x, 1, -1)
        y, m, v = _fused_batch_norm(rt, moved, scale, offset, mean, variance, epsilon,
                                    "NHWC", is_training)
        return jnp.moveaxis(y, -1, 1), m, v
    if data_format == "NDHWC" and x.ndim == 5:
        data_format = "NHWC"
    return _fused_batch_norm(rt, x, scale, offset, mean, variance, epsilon, data_format,
                             is_training, exponential_avg_factor)


def _real_part(rt, input):
    return jnp.real(input) if jnp.iscomplexobj(input) else input


def _imag_part(rt, input):
    return jnp.imag(input) if jnp.iscomplexobj(input) else jnp.zeros_like(input)


def _angle(rt, input):
    """``tf.math.angle``: ``atan2(imag, real)`` of complex values (-pi for -1 - 0j); of real
    ones, pi where negative, else 0 (TF's ``where(x < 0, pi, 0)``: 0 for -0.0)."""
    if jnp.iscomplexobj(input):
        return jnp.arctan2(jnp.imag(input), jnp.real(input))
    return jnp.where(input < 0, jnp.asarray(np.pi, input.dtype), jnp.zeros_like(input))


def _conj(rt, x):
    return jnp.conj(x) if jnp.iscomplexobj(x) else x


def _inverse_stft(rt, stfts, frame_length, frame_step, fft_length=None,
                  window_fn="hann_window"):
    """``tf.signal.inverse_stft``: the inverse real FFT of ``fft_length`` points of each
    frame (default the smallest power of 2 at least ``frame_length``; the bins cut or
    zero-padded to ``fft_length // 2 + 1``), cut or zero-padded to ``frame_length``, times
    the window (as :func:`_stft`'s ``window_fn``), overlapped and added every
    ``frame_step``. tf.keras writes ``tf.signal.inverse_stft_window_fn(...)`` as the name
    of its inner function only, without its arguments: refused."""
    if window_fn not in (None, "hann_window", "hamming_window"):
        why = (" (tf.keras wrote the window of tf.signal.inverse_stft_window_fn without its "
               "frame_step and forward window, and cannot reload it either)"
               if window_fn == "inverse_stft_window_fn_inner" else "")
        raise _Refused(f"window_fn={window_fn!r} is not supported (the default Hann window, "
                       f"'hann_window', 'hamming_window' or None){why}")
    if not jnp.iscomplexobj(stfts):
        raise _Refused(f"stfts of dtype {stfts.dtype} are not supported (complex, as TF "
                       "requires)")
    n = _static_int(frame_length, "frame_length")
    size = (1 << max(0, int(np.ceil(np.log2(n)))) if fft_length is None
            else _static_int(fft_length, "fft_length"))
    if n <= 0 or size <= 0:
        raise _Refused(f"frame_length={n}, fft_length={size} must be positive (TF refuses "
                       "them too)")
    frames = jnp.fft.irfft(stfts.astype(jnp.complex64), n=size, axis=-1).astype(jnp.float32)
    if size >= n:
        frames = frames[..., :n]
    else:
        frames = jnp.pad(frames, [(0, 0)] * (frames.ndim - 1) + [(0, n - size)])
    frames = frames * jnp.asarray(_cosine_window(window_fn, n))
    return _overlap_and_add(rt, frames, frame_step)


def _morphology(erode: bool):
    """``tf.nn.dilation2d`` (``erode`` False): ``max`` over the filter's taps of
    ``input[y * sh + i * rh, x * sw + j * rw] + filters[i, j]`` per channel, padded with
    -inf (SAME padding as a convolution's); ``tf.nn.erosion2d``: TF's
    ``-dilation2d(-input, filters reversed)``, the minimum of ``input - filters`` reflected.
    NHWC, strides and dilations ``[1, h, w, 1]``."""
    def f(rt, input, filters, strides, padding, data_format="NHWC", dilations=None):
        if data_format != "NHWC":
            raise _Refused(f"data_format={data_format!r} is not supported ('NHWC', as TF's "
                           "kernel requires)")
        if input.ndim != 4:
            raise _Refused(f"an input of rank {input.ndim} is not supported (rank 4, as TF "
                           "requires)")
        k = jnp.asarray(_const(filters, input))
        if k.ndim != 3 or k.shape[-1] != input.shape[-1]:
            raise _Refused(f"filters={_show(filters)} of shape {tuple(k.shape)}: expected "
                           f"(height, width, "
                           f"{input.shape[-1]}), one filter per channel (TF refuses others "
                           "too)")
        st = _static_ints(strides, "strides")
        rates = (1, 1, 1, 1) if dilations is None else _static_ints(dilations, "dilations")
        for what, v in (("strides", st), ("dilations", rates)):
            if len(v) != 4 or v[0] != 1 or v[3] != 1 or min(v) < 1:
                raise _Refused(f"{what}={list(v)} is not supported ([1, height, width, 1], "
                               "as TF requires)")
        if padding not in ("SAME", "VALID"):
            raise _Refused(f"padding={padding!r} is not supported ('SAME', 'VALID')")
        x = -input if erode else input
        if erode:
            k = k[::-1, ::-1]
        x = x.astype(jnp.result_type(x.dtype, k.dtype))
        pads, outs = [], []
        for axis, size, s, r in ((1, x.shape[1], st[1], rates[1]), (2, x.shape[2], st[2],
                                                                     rates[2])):
            eff = (k.shape[axis - 1] - 1) * r + 1
            if padding == "SAME":
                out = -(-size // s)
                total = max((out - 1) * s + eff - size, 0)
                pads.append((total // 2, total - total // 2))
            else:
                out = max(0, -(-(size - eff + 1) // s))
                pads.append((0, 0))
            outs.append(out)
        xp = jnp.pad(x, [(0, 0), pads[0], pads[1], (0, 0)], constant_values=-jnp.inf)
        y = None
        for i in range(k.shape[0]):
            for j in range(k.shape[1]):
                tap = jax.lax.slice(xp, (0, i * rates[1], j * rates[2], 0),
                                    (xp.shape[0], i * rates[1] + (outs[0] - 1) * st[1] + 1,
                                     j * rates[2] + (outs[1] - 1) * st[2] + 1, xp.shape[3]),
                                    (1, st[1], st[2], 1)) + k[i, j]
                y = tap if y is None else jnp.maximum(y, tap)
        return -y if erode else y
    return f


def _float32_key(v: float) -> int:
    """An integer in the order of the float32 values (adjacent floats: adjacent keys)."""
    bits = int(np.asarray(v, np.float32).view(np.uint32))
    return bits if bits < 0x80000000 else -(bits & 0x7FFFFFFF)


def _float32_of_key(k: int) -> np.float32:
    bits = k if k >= 0 else (-k) | 0x80000000
    return np.asarray(bits, np.uint32).view(np.float32)[()]


def _histogram_edges(lo: np.float32, hi: np.float32, nbins: int) -> np.ndarray:
    """The least float32 value of each bin 1 .. nbins - 1 of TF's ``HistogramFixedWidth``
    kernel, which computes ``(x - lo) / step`` in double (``step = (hi - lo) / nbins``)
    and truncates it: a bisection over the float32 values in ``[lo, hi]``."""
    step = (float(hi) - float(lo)) / nbins
    edges = []
    for i in range(1, nbins):
        low, high = _float32_key(lo), _float32_key(hi)  # not in bin i; in bin i or above
        while high - low > 1:
            mid = (low + high) // 2
            if (float(_float32_of_key(mid)) - float(lo)) / step >= i:
                high = mid
            else:
                low = mid
        edges.append(_float32_of_key(high))
    return np.asarray(edges, np.float32)


def _value_range(value_range, what="value_range"):
    """``[lo, hi]`` as float32: NumPy scalars for a constant (checked ``lo < hi``), else
    float32 scalar arrays (a tensor computed in the model; TF checks it at run time)."""
    if not _is_static(value_range):
        r = jnp.asarray(value_range)
        if r.shape != (2,):
            raise _Refused(f"{what}={_show(value_range)} is not two values [lo, hi] (TF "
                           "refuses it too)")
        r = r.astype(jnp.float32)
        return r[0], r[1]
    lo, hi = (np.float32(v) for v in np.asarray(value_range, np.float32).reshape(-1)[:2])
    if np.asarray(value_range).size != 2 or not lo < hi:
        raise _Refused(f"{what}={_show(value_range)} is not two values lo < hi (TF refuses "
                       "it too)")
    return lo, hi


def _split12(a):
    """``a`` (float32) as ``hi + lo``, each of at most 12 significant bits (Veltkamp's
    split), so that either times an integer below 2^12 is exact in float32."""
    c = jax.lax.optimization_barrier(a * np.float32(4097.0))
    hi = c - jax.lax.optimization_barrier(c - a)
    return hi, a - hi


def _sum_sign(terms):
    """The sign of the exact sum of float32 ``terms``: repeated error-free sums (Knuth's
    TwoSum) move the sum into the last term, rounded once, and the errors into the
    others, until the last term is the correctly rounded sum (its sign the sum's) or 0 with
    the rest."""
    ts = list(terms)
    for _ in range(len(ts)):
        for j in range(len(ts) - 1):
            a, b = ts[j], ts[j + 1]
            s = jax.lax.optimization_barrier(a + b)
            bb = jax.lax.optimization_barrier(s - a)
            ts[j], ts[j + 1] = (a - (s - bb)) + (b - bb), s
    sign = jnp.zeros_like(ts[0])
    for t in ts:  # the most significant non-zero term last
        sign = jnp.where(t != 0, jnp.sign(t), sign)
    return sign


def _tensor_range_bins(v, lo, hi, n: int):
    """Each value's bin of ``tf.histogram_fixed_width`` for a range ``[lo, hi]`` computed in
    the model (float32 scalars). TF's kernel computes ``(x - lo) / ((hi - lo) / nbins)`` in
    double and truncates it (clipped to ``[0, nbins - 1]``); below 2^12 bins that is the
    largest ``i`` with ``nbins x - i hi - (nbins - i) lo >= 0`` (a quotient within double
    rounding of an integer from float32 operands is that integer), decided here exactly
    with float32 terms (:func:`_split12`, :func:`_sum_sign`) around the float32 estimate.
    On an edge exactly (the sum 0) the value is in the upper bin, as in TF where the step
    is exact in double (an edge ``i`` whose step ``(hi - lo) / nbins`` is not may put it
    below, as double rounding goes)."""
    step = (hi - lo) / jax.lax.optimization_barrier(jnp.float32(n))
    guess = jnp.clip(jnp.floor((v - lo) / step), 0, n - 1)
    xs, los, his = _split12(v), _split12(lo), _split12(hi)

    def at_or_above(i):  # nbins x - i hi - (nbins - i) lo >= 0, exactly
        terms = [t * np.float32(n) for t in xs]
        terms += [-(t * i) for t in his] + [-(t * (np.float32(n) - i)) for t in los]
        return _sum_sign(terms) >= 0

    below = (guess > 0) & ~at_or_above(guess)
    above = (guess < n - 1) & at_or_above(guess + 1)
    return jnp.where(below, guess - 1, jnp.where(above, guess + 1, guess))


def _histogram_fixed_width(rt, values, value_range, nbins=100, dtype="int32"):
    """``tf.histogram_fixed_width``: counts of every value in ``nbins`` equal bins of
    ``value_range`` (values below it in the first, above in the last); int32 (int64
    computed as int32); NaN values, which TF refuses at run time, are not counted. A
    constant range: the bin edges as TF's kernel computes them in double
    (:func:`_histogram_edges`). A range computed in the model: each value's bin by exact
    comparisons with the edges (:func:`_tensor_range_bins`). Counts have no gradient (in TF
    neither)."""
    _index_type(dtype, "dtype")
    lo, hi = _value_range(value_range)
    n = _static_int(nbins, "nbins")
    if n < 1:
        raise _Refused(f"nbins={n} must be positive (TF refuses it too)")
    v = jax.lax.stop_gradient(jnp.asarray(values).astype(jnp.float32).reshape(-1))
    if _is_static(lo):
        bins = jnp.sum(v[:, None] >= jnp.asarray(_histogram_edges(lo, hi, n))[None], axis=1)
    else:
        bins = _tensor_range_bins(v, jax.lax.stop_gradient(lo), jax.lax.stop_gradient(hi), n)
    counted = (~jnp.isnan(v)).astype(jnp.int32)
    return jax.ops.segment_sum(counted, jnp.nan_to_num(bins).astype(jnp.int32), n)


def _histogram_fixed_width_bins(rt, values, value_range, nbins=100, dtype="int32"):
    """``tf.histogram_fixed_width_bins``: each value's bin, ``floor(nbins * (x - lo) / (hi
    - lo))`` in float32 clipped to ``[0, nbins - 1]``, as TF computes it (in Python, float32
    ops: the same for a constant range and one computed in the model); int32, no
    gradient."""
    _index_type(dtype, "dtype")
    lo, hi = _value_range(value_range)
    n = _static_int(nbins, "nbins")
    if n < 1:
        raise _Refused(f"nbins={n} must be positive (TF refuses it too)")
    scaled = (jnp.asarray(values).astype(jnp.float32) - lo) / (hi - lo)
    return jax.lax.stop_gradient(
        jnp.clip(jnp.floor(np.float32(n) * scaled), 0, n - 1).astype(jnp.int32))


def _in_top_k(rt, predictions, targets, k):
    """``tf.math.in_top_k`` (recorded as ``compat.v1.math.in_top_k(predictions, targets,
    k)``): whether fewer than ``k`` predictions of the row are above the target's (ties
    all in), False where the target is out of range or the row has a non-finite value,
    as TF's kernel."""
    if predictions.ndim != 2:
        raise _Refused(f"predictions of rank {predictions.ndim} are not supported (batch, "
                       "classes, as TF requires)")
    kk = _static_int(k, "k")
    t = jnp.asarray(_const(targets)).astype(jnp.int32).reshape(-1)
    if t.shape[0] != predictions.shape[0]:
        raise _Refused(f"targets={_show(targets)} has {t.shape[0]} entries for "
                       f"{predictions.shape[0]} rows of predictions (TF refuses it too)")
    n = predictions.shape[-1]
    valid = (t >= 0) & (t < n)
    mine = jnp.take_along_axis(predictions, jnp.clip(t, 0, n - 1)[:, None], axis=1)
    above = jnp.sum(predictions > mine, axis=1)
    finite = jnp.all(jnp.isfinite(predictions), axis=1)
    return valid & finite & (above < kk)


def _set_diag(rt, input, diagonal, k=0, align="RIGHT_LEFT"):
    """``tf.linalg.set_diag`` of the main diagonal (``k=0``; ``align`` then changes
    nothing): ``input`` with its ``[..., i, i]`` entries replaced by ``diagonal``."""
    if not (isinstance(k, int) and k == 0):
        raise _Refused(f"k={k!r} is not supported (0, the main diagonal)")
    d = jnp.asarray(_const(diagonal, input))
    m = min(input.shape[-2:])
    if d.shape[-1:] != (m,):
        raise _Refused(f"diagonal of shape {tuple(d.shape)} does not end with the input's "
                       f"diagonal length {m} (TF refuses it too)")
    idx = np.arange(m)
    return input.at[..., idx, idx].set(jnp.broadcast_to(d, input.shape[:-2] + (m,)))


def _cholesky(rt, input):
    """``tf.linalg.cholesky``: the lower Cholesky factor, read from the lower triangle as
    TF's; NaN where the matrix is not positive definite (TF raises there)."""
    return jax.lax.linalg.cholesky(input, symmetrize_input=False)


def _solve(rt, matrix, rhs, adjoint=False):
    """``tf.linalg.solve``: ``x`` with ``matrix @ x = rhs`` (``adjoint``: ``matrix``'s
    conjugate transpose); inf or NaN where the matrix is singular (TF raises there)."""
    a, b = _operands(matrix, rhs)
    return jnp.linalg.solve(_swap(a, True) if adjoint else a, b)


def _eigvalsh(rt, tensor):
    """``tf.linalg.eigvalsh``: the eigenvalues, ascending, of the self-adjoint matrix read
    from its lower triangle, as TF's."""
    return jax.lax.linalg.eigh(tensor, lower=True, symmetrize_input=False)[1]


def _svd(rt, tensor, full_matrices=False, compute_uv=True):
    """``tf.linalg.svd(compute_uv=False)``: the singular values, descending. The singular
    vectors are refused: their signs are each library's choice, and JAX's differ from
    TF's."""
    if compute_uv:
        raise _Refused("compute_uv=True (TF's default) is not supported: each singular "
                       "vector's sign is the SVD routine's choice and JAX's differ from "
                       "TF's, so the model would compute something else; pass "
                       "compute_uv=False for the singular values")
    return jnp.linalg.svd(tensor, compute_uv=False)


def _softmax_xent(rt, labels, logits, axis=-1, dim=None):
    """``tf.nn.softmax_cross_entropy_with_logits`` (recorded as ``compat.v1.nn.
    softmax_cross_entropy_with_logits_v2``): ``-sum(labels * log_softmax(logits))`` over
    ``axis``; gradients reach both."""
    if dim is not None and axis not in (None, -1, dim):
        raise _Refused(f"axis={axis!r} and dim={dim!r} are both given (TF refuses it too)")
    ax = -1 if (axis if axis is not None else dim) is None else int(
        axis if axis is not None else dim)
    labels, logits = _operands(labels, logits)
    return -jnp.sum(labels * jax.nn.log_softmax(logits, axis=ax), axis=ax)


def _stable_logistic(x):
    """``(max(x, 0), -|x|)`` for the stable forms of the logistic losses, each picked by
    ``x >= 0`` as TF's ``sigmoid_cross_entropy_with_logits`` picks them, so that autodiff
    gives the losses their analytic gradient at ``x == 0`` too (``jnp.maximum`` and
    ``jnp.abs`` differentiate there as 1/2 and 1: ``-z`` for the sigmoid loss, not
    ``1/2 - z``)."""
    c = x >= 0
    return jnp.where(c, x, jnp.zeros_like(x)), jnp.where(c, -x, x)


def _sigmoid_xent(rt, labels, logits):
    """``tf.nn.sigmoid_cross_entropy_with_logits``: TF's stable ``max(x, 0) - x z +
    log1p(exp(-|x|))``, with TF's masks (:func:`_stable_logistic`)."""
    z, x = _operands(labels, logits)
    relu, neg_abs = _stable_logistic(x)
    return relu - x * z + jnp.log1p(jnp.exp(neg_abs))


def _sparse_softmax_xent(rt, labels, logits):
    """``tf.nn.sparse_softmax_cross_entropy_with_logits``: ``logsumexp(logits) -
    logits[label]`` per row; NaN for labels out of range (TF's CPU kernel raises, its GPU
    kernel gives NaN)."""
    logits = jnp.asarray(_const(logits))
    t = jnp.asarray(_const(labels)).astype(jnp.int32)
    n = logits.shape[-1]
    if t.shape != logits.shape[:-1]:
        raise _Refused(f"labels of shape {tuple(t.shape)}: expected {logits.shape[:-1]}, "
                       "the logits' without the last axis (TF refuses others too)")
    picked = jnp.take_along_axis(logits, jnp.clip(t, 0, n - 1)[..., None], axis=-1)[..., 0]
    loss = jax.nn.logsumexp(logits, axis=-1) - picked
    return jnp.where((t >= 0) & (t < n), loss, jnp.nan)


def _crop_and_resize_v1(rt, image, boxes, box_ind=None, crop_size=None, method="bilinear",
                        extrapolation_value=0.0, box_indices=None):
    """``tf.compat.v1.image.crop_and_resize``: :func:`_crop_and_resize`, the box indices
    given as ``box_ind`` (TF 1's name) or ``box_indices``."""
    if (box_ind is None) == (box_indices is None):
        raise _Refused(f"box_ind={_show(box_ind)}, box_indices={_show(box_indices)}: give "
                       "exactly one of box_ind and box_indices (TF refuses both or neither "
                       "too)")
    if crop_size is None:
        raise _Refused("crop_size is missing (TF requires it)")
    return _crop_and_resize(rt, image, boxes, box_ind if box_indices is None else box_indices,
                            crop_size, method, extrapolation_value)


def _resize_image_with_pad_v1(rt, image, target_height, target_width, method=0,
                              align_corners=False):
    """``tf.compat.v1.image.resize_image_with_pad``: as ``tf.image.resize_with_pad``, the
    image resized by TF 1's kernels (``tf.compat.v1.image.resize_images``: ``method`` 0
    to 3, ``align_corners``)."""
    def resize(im, size):
        return _resize_images_v1(rt, im, size, method=method, align_corners=align_corners)
    return _pad_resized(image, target_height, target_width, resize)


# ------------------------------------------- functions the survey of tf.* calls found missing
def _convert_to_tensor(rt, value, dtype=None, dtype_hint=None):
    """``tf.convert_to_tensor`` (which ``tf.experimental.numpy`` functions record): the
    value, cast to ``dtype`` where given; a recorded constant as an array of ``dtype`` or
    ``dtype_hint``."""
    if dtype is not None:
        return jnp.asarray(_const(value)).astype(_cast_dtype(dtype))
    if isinstance(value, (list, tuple, int, float)) and dtype_hint is not None:
        return jnp.asarray(value, _cast_dtype(dtype_hint))
    return _const(value)


def _xdivy_fn(x, y):
    """``tf.math.xdivy``: 0 where ``x`` is 0 (its gradient too, as TF's), else ``x / y``."""
    return jnp.where(x == 0, jnp.zeros_like(x), x / jnp.where(x == 0, 1, y))


def _zero_fraction(rt, value):
    """``tf.math.zero_fraction``: the fraction of zeros among every element (the batch's
    too, as in TF), float32."""
    return jnp.mean((jnp.asarray(value) == 0).astype(jnp.float32))


def _weighted_xent(rt, labels, logits, pos_weight):
    """``tf.nn.weighted_cross_entropy_with_logits``: TF's stable ``(1 - z) x + (1 + (q - 1)
    z) (log1p(exp(-|x|)) + max(-x, 0))``, written ``... + (max(x, 0) - x)`` with
    :func:`_stable_logistic`'s masks: the analytic gradient at ``x == 0`` too (TF's own
    ``abs`` and ``relu(-x)`` give ``1 - z`` there, the analytic value is ``(1 - z) - (1 +
    (q - 1) z) / 2``)."""
    z, x = _operands(labels, logits)
    q = _const(pos_weight, x)
    relu, neg_abs = _stable_logistic(x)
    return (1 - z) * x + (1 + (q - 1) * z) * (jnp.log1p(jnp.exp(neg_abs)) + (relu - x))


def _log_poisson_loss(rt, targets, log_input, compute_full_loss=False):
    """``tf.nn.log_poisson_loss``: ``exp(c) - c z``; with ``compute_full_loss`` plus
    Stirling's ``z log z - z + log(2 pi z) / 2`` where ``z > 1``."""
    z, c = _operands(targets, log_input)
    loss = jnp.exp(c) - c * z
    if compute_full_loss:
        safe = jnp.where(z > 1, z, 2)
        stirling = safe * jnp.log(safe) - safe + 0.5 * jnp.log(2 * np.pi * safe)
        loss = loss + jnp.where((z >= 0) & (z <= 1), 0, stirling)
    return loss


def _batched_pair(a, b):
    """``a`` (..., n, n) and ``b`` (..., n, k) with their batch axes broadcast together."""
    batch = jnp.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return (jnp.broadcast_to(a, batch + a.shape[-2:]),
            jnp.broadcast_to(b, batch + b.shape[-2:]))


def _triangular_solve(rt, matrix, rhs, lower=True, adjoint=False):
    """``tf.linalg.triangular_solve``: ``x`` with ``A x = rhs`` for the lower (or upper)
    triangle of ``matrix`` (the other ignored, as in TF); ``adjoint``: its conjugate
    transpose."""
    a, b = _batched_pair(*_operands(matrix, rhs))
    return jax.lax.linalg.triangular_solve(a, b, left_side=True, lower=bool(lower),
                                           transpose_a=bool(adjoint),
                                           conjugate_a=bool(adjoint))


def _cholesky_solve(rt, chol, rhs):
    """``tf.linalg.cholesky_solve``: ``x`` with ``L L^H x = rhs`` for the lower triangular
    ``chol``, by two triangular solves (as TF)."""
    a, b = _batched_pair(*_operands(chol, rhs))
    y = jax.lax.linalg.triangular_solve(a, b, left_side=True, lower=True)
    return jax.lax.linalg.triangular_solve(a, y, left_side=True, lower=True,
                                           transpose_a=True, conjugate_a=True)


def _tensor_diag(rt, diagonal):
    """``tf.linalg.tensor_diag``: of shape ``s + s`` for a diagonal of shape ``s`` (every
    axis, the batch's too, as in TF), ``diagonal[i] `` at ``[i, i]``."""
    d = jnp.asarray(_const(diagonal))
    return jnp.diag(d.reshape(-1)).reshape(d.shape + d.shape)


def _fft_shift(inverse: bool):
    def f(rt, x, axes=None):
        """``tf.signal.fftshift`` / ``ifftshift``: every axis (the batch's too, as in TF)
        by default."""
        ax = None if axes is None else (tuple(_static_ints(axes, "axes"))
                                        if isinstance(axes, (list, tuple, np.ndarray))
                                        else _static_int(axes, "axes"))
        return (jnp.fft.ifftshift if inverse else jnp.fft.fftshift)(x, axes=ax)
    return f


def _reverse_sequence(rt, input, seq_lengths, seq_axis=None, batch_axis=None):
    """``tf.reverse_sequence``: along ``seq_axis``, the first ``seq_lengths[b]`` elements of
    slice ``b`` of ``batch_axis`` (0 by default) reversed, the others kept; lengths
    constant or a tensor (TF raises on lengths beyond the axis: here they are clipped)."""
    if seq_axis is None:
        raise _Refused("seq_axis=None is not supported (TF requires it)")
    n = input.ndim
    s_ax, b_ax = _static_int(seq_axis, "seq_axis") % n, _static_int(
        0 if batch_axis is None else batch_axis, "batch_axis") % n
    if s_ax == b_ax:
        raise _Refused(f"seq_axis={seq_axis} is batch_axis (TF refuses it too)")
    lengths = jnp.asarray(_const(seq_lengths)).astype(jnp.int32).reshape(-1)
    steps = input.shape[s_ax]
    i = jnp.arange(steps)
    length = jnp.clip(lengths, 0, steps)[:, None]
    idx = jnp.where(i[None] < length, length - 1 - i[None], i[None])  # (batch, steps)
    shape = [1] * n
    shape[b_ax], shape[s_ax] = idx.shape[0], steps
    if b_ax > s_ax:
        idx = idx.T
    full = list(input.shape)
    return jnp.take_along_axis(input, jnp.broadcast_to(idx.reshape(shape), full), axis=s_ax)


def _identity_n(rt, input):
    """``tf.identity_n``: the tensors as given."""
    return tuple(input) if isinstance(input, (list, tuple)) else (input,)


_FUNCTIONS = {
    "__operators__.add": _binary(jnp.add, static=np.add),
    "math.add": _binary(jnp.add, static=np.add),
    "math.add_n": _add_n,
    "math.subtract": _binary(jnp.subtract, static=np.subtract),
    "__operators__.sub": _binary(jnp.subtract, static=np.subtract),
    "math.multiply": _binary(jnp.multiply, static=np.multiply),
    "__operators__.mul": _binary(jnp.multiply, static=np.multiply),
    "math.truediv": _binary(jnp.true_divide, True, static=_static_truediv),
    "math.divide": _binary(jnp.true_divide, True, static=_static_truediv),
    "__operators__.truediv": _binary(jnp.true_divide, True, static=_static_truediv),
    "math.floordiv": _binary(_floor_div(jnp), static=_floor_div(np)),
    # Python's `//` in tf.keras 2.12-2.21
    "compat.v1.floor_div": _binary(_floor_div(jnp), static=_floor_div(np)),
    "math.pow": _binary(jnp.power, True),
    "math.maximum": _binary(_tf_maximum, True, static=np.maximum),
    "math.minimum": _binary(_tf_minimum, True, static=np.minimum),
    "math.squared_difference": _binary(_squared_difference, True),
    "linalg.matmul": _matmul,
    "math.negative": lambda rt, x: -x,
    "math.abs": _tf_abs,
    "math.square": lambda rt, x: jnp.square(x),
    "math.sqrt": lambda rt, x: jnp.sqrt(x),
    "math.rsqrt": lambda rt, x: jax.lax.rsqrt(x),
    "math.exp": lambda rt, x: jnp.exp(x),
    "math.log": lambda rt, x: jnp.log(x),
    "math.tanh": lambda rt, x: jnp.tanh(x), "nn.tanh": lambda rt, x: jnp.tanh(x),
    "math.sigmoid": lambda rt, x: jax.nn.sigmoid(x),
    "nn.sigmoid": lambda rt, x: jax.nn.sigmoid(x),
    "math.softplus": lambda rt, features: jax.nn.softplus(features),
    "nn.relu": lambda rt, features: rt.relu(features),
    "nn.relu6": lambda rt, features: relu_family(features, rt, max_value=6.0),
    "nn.silu": lambda rt, features, beta=1.0: features * jax.nn.sigmoid(beta * features),
    "nn.swish": lambda rt, features, beta=1.0: features * jax.nn.sigmoid(beta * features),
    "nn.elu": lambda rt, features: jax.nn.elu(features),
    "nn.selu": lambda rt, features: jax.nn.selu(features),
    "nn.gelu": lambda rt, features, approximate=False: jax.nn.gelu(
        features, approximate=bool(approximate)),
    "nn.leaky_relu": _tf_leaky_relu,
    "nn.softmax": _softmax(jax.nn.softmax), "math.softmax": _softmax(jax.nn.softmax),
    "nn.log_softmax": _softmax(jax.nn.log_softmax),
    "math.reduce_mean": _reduce(_tf_mean), "math.reduce_sum": _reduce(jnp.sum),
    "math.reduce_max": _tf_extremum("max"), "math.reduce_min": _tf_extremum("min"),
    "math.reduce_prod": _reduce(jnp.prod),
    "reshape": _reshape, "compat.v1.reshape": _reshape,
    "concat": _concat, "compat.v1.concat": _concat,
    "stack": _stack,
    "expand_dims": lambda rt, input, axis: jnp.expand_dims(input, axis),
    "compat.v1.squeeze": _squeeze_v1, "squeeze": _squeeze,
    "compat.v1.transpose": _transpose, "transpose": _transpose,
    "clip_by_value": _clip,
    "identity": lambda rt, input: input,
    "cast": lambda rt, x, dtype: x.astype(_cast_dtype(dtype)),
    # comparisons (`x > 0`: boolean, no gradient) and selection: `tf.where(x > 0, x, a * x)`
    "math.greater": _pairwise(jnp.greater),
    "math.greater_equal": _pairwise(jnp.greater_equal),
    "math.less": _pairwise(jnp.less),
    "math.less_equal": _pairwise(jnp.less_equal),
    "math.equal": _pairwise(jnp.equal),
    "math.not_equal": _pairwise(jnp.not_equal),
    "where": lambda rt, condition, x=None, y=None: _where(condition, x, y),
    "tile": _tile,
    "image.resize": _resize,
    # sizes: tf.shape (static, see _shape_of)
    "compat.v1.shape": _shape_of,
    # elementwise functions of one tensor (piecewise constant ones: not activations)
    "math.sin": lambda rt, x: jnp.sin(x), "math.cos": lambda rt, x: jnp.cos(x),
    "math.erf": lambda rt, x: jax.scipy.special.erf(x),
    "math.erfc": lambda rt, x: jax.scipy.special.erfc(x),
    "math.reciprocal": lambda rt, x: jnp.reciprocal(x),
    "math.log1p": lambda rt, x: jnp.log1p(x), "math.expm1": lambda rt, x: jnp.expm1(x),
    "math.log_sigmoid": lambda rt, x: jax.nn.log_sigmoid(x),
    "nn.softsign": lambda rt, features: jax.nn.soft_sign(features),
    "math.floor": lambda rt, x: jnp.floor(x), "math.ceil": lambda rt, x: jnp.ceil(x),
    "math.round": lambda rt, x: jnp.round(x),  # half to even, as TF
    "math.sign": lambda rt, x: jnp.sign(x),
    "stop_gradient": lambda rt, input: jax.lax.stop_gradient(input),  # tf.nn.moments uses it
    "zeros_like": _filled_like(0), "ones_like": _filled_like(1),
    # reductions and scans (axis=None: every axis)
    "math.reduce_std": _reduce(jnp.std), "math.reduce_variance": _reduce(jnp.var),
    "math.reduce_logsumexp": _reduce(_logsumexp),
    "math.reduce_euclidean_norm": _reduce(_euclidean_norm),
    "math.reduce_any": _reduce(jnp.any), "math.reduce_all": _reduce(jnp.all),
    "math.cumsum": _cumulative(jnp.cumsum, 0), "math.cumprod": _cumulative(jnp.cumprod, 1),
    "math.argmax": _arg(jnp.argmax), "math.argmin": _arg(jnp.argmin),
    "math.top_k": _top_k,
    # shapes, order and selection
    "compat.v1.pad": _pad,
    "split": _split, "unstack": _unstack,
    "compat.v1.gather": _gather,
    "reverse": _reverse,
    "image.flip_left_right": _image_flip(False), "image.flip_up_down": _image_flip(True),
    "roll": _roll, "repeat": _repeat, "broadcast_to": _broadcast_to,
    "one_hot": _one_hot,
    # normalization, bias, pooling, image blocks and patches
    "math.l2_normalize": _l2_normalize,
    "nn.bias_add": _bias_add,
    "nn.max_pool1d": _pool("max", 1), "nn.max_pool2d": _pool("max", 2),
    "nn.max_pool3d": _pool("max", 3), "nn.avg_pool1d": _pool("avg", 1),
    "nn.avg_pool2d": _pool("avg", 2), "nn.avg_pool3d": _pool("avg", 3),
    "nn.avg_pool": _pool("avg", None),  # (tf.nn.max_pool is recorded as max_pool{n}d)
    "nn.depth_to_space": _depth_to_space, "nn.space_to_depth": _space_to_depth,
    "image.extract_patches": _extract_patches,
    "range": _range,
    "nn.local_response_normalization": _local_response_normalization,
    "compat.v1.norm": _norm, "linalg.band_part": _band_part, "slice": _slice, "sort": _sort,
    "math.floormod": _binary(jnp.mod, True, static=np.mod),  # also Python's `%`
    "math.divide_no_nan": _binary(_divide_no_nan, True),
    "compat.v1.math.scalar_mul": lambda rt, scalar, x: _binary(jnp.multiply)(rt, scalar, x),
    "math.logical_and": _pairwise(jnp.logical_and),
    "math.logical_or": _pairwise(jnp.logical_or),
    "math.logical_not": lambda rt, x: jnp.logical_not(x),
    "math.atan": lambda rt, x: jnp.arctan(x), "math.asinh": lambda rt, x: jnp.arcsinh(x),
    "math.sinh": lambda rt, x: jnp.sinh(x), "math.cosh": lambda rt, x: jnp.cosh(x),
    "math.rint": lambda rt, x: jnp.round(x),  # half to even
    "math.asin": lambda rt, x: jnp.arcsin(x), "math.acos": lambda rt, x: jnp.arccos(x),
    "math.atanh": lambda rt, x: jnp.arctanh(x), "math.acosh": lambda rt, x: jnp.arccosh(x),
    "math.tan": lambda rt, x: jnp.tan(x),
    "math.atan2": lambda rt, y, x: _binary(jnp.arctan2, True)(rt, y, x),
    "math.is_nan": lambda rt, x: jnp.isnan(x), "math.is_finite": lambda rt, x: jnp.isfinite(x),
    "math.reciprocal_no_nan": _reciprocal_no_nan,
    "compat.v1.nn.crelu": _crelu,
    "argsort": _argsort, "linalg.normalize": _normalize, "clip_by_norm": _clip_by_norm,
    "strided_slice": _strided_slice,
    "linalg.diag_part": lambda rt, input: jnp.diagonal(input, axis1=-2, axis2=-1),
    "linalg.trace": lambda rt, x: jnp.trace(x, axis1=-2, axis2=-1),
    "zeros": _filled(0), "ones": _filled(1), "fill": _fill,
    # convolutions, the kernel a constant (recorded as a nested list) or a tensor
    # (tf.nn.conv2d and tf.nn.conv1d are recorded as their compat.v1 forms)
    "compat.v1.nn.conv2d": _conv2d_v1, "compat.v1.nn.conv1d": _conv1d_v1,
    "nn.conv3d": _conv_nd(3), "nn.convolution": _conv_nd(None),
    "compat.v1.nn.depthwise_conv2d": _depthwise_conv2d,
    "nn.conv1d_transpose": _conv_transpose(1), "nn.conv2d_transpose": _conv_transpose(2),
    "nn.conv3d_transpose": _conv_transpose(3),
    "image.rgb_to_grayscale": _rgb_to_grayscale, "image.central_crop": _central_crop,
    "image.crop_to_bounding_box": _crop_to_bounding_box,
    "compat.v1.nn.separable_conv2d": _separable_conv2d,
    "image.per_image_standardization": _per_image_standardization,
    "image.pad_to_bounding_box": _pad_to_bounding_box,
    "image.resize_with_crop_or_pad": _resize_with_crop_or_pad,
    "image.rot90": _rot90, "image.transpose": _image_transpose,
    "image.grayscale_to_rgb": _grayscale_to_rgb,
    "image.adjust_brightness": _adjust_brightness, "image.adjust_contrast": _adjust_contrast,
    "image.convert_image_dtype": _convert_image_dtype,
    "compat.v1.gather_nd": _gather_nd,
    "sequence_mask": _sequence_mask,
    "math.count_nonzero": _count_nonzero,
    "nn.l2_loss": lambda rt, t: jnp.sum(jnp.square(t)) / 2,
    "linalg.diag": _diag, "linspace": _linspace,
    "linalg.cross": lambda rt, a, b: jnp.cross(*_operands(a, b)),
    "math.xlogy": _binary(jax.scipy.special.xlogy, True),
    "math.multiply_no_nan": _binary(_multiply_no_nan, True),
    "truncatediv": _binary(_truncatediv, True), "truncatemod": _binary(jnp.fmod, True),
    "math.erfinv": lambda rt, x: jax.scipy.special.erfinv(x),
    "math.lgamma": lambda rt, x: jax.scipy.special.gammaln(x),
    "math.digamma": lambda rt, x: jax.scipy.special.digamma(x),
    "space_to_batch_nd": _space_to_batch_nd, "compat.v1.batch_to_space_nd": _batch_to_space_nd,
    "compat.v1.nn.pool": _nn_pool, "image.resize_with_pad": _resize_with_pad,
    "linalg.inv": lambda rt, input, adjoint=False: jnp.linalg.inv(_swap(input, True)
                                                                  if adjoint else input),
    "linalg.det": lambda rt, input: jnp.linalg.det(input),
    "math.bessel_i0e": lambda rt, x: jax.scipy.special.i0e(x),
    "math.bessel_i1e": lambda rt, x: jax.scipy.special.i1e(x),
    "math.cumulative_logsumexp": _cumulative_logsumexp,
    "compat.v1.nn.weighted_moments": _weighted_moments, "signal.frame": _frame,
    "tensordot": _tensordot,
    "keras.backend.batch_flatten": lambda rt, x: jnp.reshape(x, (x.shape[0], -1)),
    "signal.dct": _dct, "signal.idct": _idct,
    "image.rgb_to_yuv": _colour_matrix(_RGB_TO_YUV, "rgb_to_yuv"),
    "image.yuv_to_rgb": _colour_matrix(_YUV_TO_RGB, "yuv_to_rgb"),
    "image.adjust_gamma": _adjust_gamma,
    "image.rgb_to_hsv": _rgb_to_hsv, "image.hsv_to_rgb": _hsv_to_rgb,
    "image.adjust_hue": lambda rt, image, delta: _adjust_hsv("hue")(rt, image, delta),
    "image.adjust_saturation": lambda rt, image, saturation_factor: _adjust_hsv(
        "saturation")(rt, image, saturation_factor),
    # segment reductions (constant ids; tensor ones for the unsorted functions), scatters
    # at constant indices
    **{f"math.segment_{k}": _segment(k) for k in ("sum", "mean", "max", "min", "prod")},
    **{f"math.unsorted_segment_{k}": _unsorted_segment(k)
       for k in ("sum", "mean", "max", "min", "prod", "sqrt_n")},
    **{f"tensor_scatter_nd_{k}": _tensor_scatter(k)
       for k in ("update", "add", "sub", "max", "min")},
    "scatter_nd": _scatter_nd,
    "image.crop_and_resize": _crop_and_resize,
    "nn.max_pool_with_argmax": _max_pool_with_argmax,
    "signal.mfccs_from_log_mel_spectrograms": _mfccs,
    "signal.overlap_and_add": _overlap_and_add,
    "linalg.matrix_transpose": lambda rt, a, conjugate=False: _swap(a, conjugate),
    "math.is_inf": lambda rt, x: jnp.isinf(x),
    "math.polyval": _polyval,
    "math.xlog1py": _binary(jax.scipy.special.xlog1py, True),
    "math.ndtri": lambda rt, x: jax.scipy.special.ndtri(x),
    "math.erfcinv": lambda rt, x: -jax.scipy.special.ndtri(0.5 * x) * np.float32(
        np.sqrt(0.5)),
    "ensure_shape": _ensure_shape,
    "searchsorted": _searchsorted, "math.bincount": _bincount,
    "compat.v1.image.resize_bilinear": _resize_kernel_v1("bilinear"),
    "compat.v1.image.resize_nearest_neighbor": _resize_kernel_v1("nearest"),
    "compat.v1.image.resize_bicubic": _resize_kernel_v1("bicubic"),
    "compat.v1.image.resize_area": _resize_kernel_v1("area"),
    "compat.v1.image.resize_images": _resize_images_v1,
    "signal.stft": _stft,
    "image.rgb_to_yiq": _colour_matrix(_RGB_TO_YIQ, "rgb_to_yiq"),
    "image.yiq_to_rgb": _colour_matrix(_YIQ_TO_RGB, "yiq_to_rgb"),
    "quantization.fake_quant_with_min_max_args": _fake_quant_call(False),
    "quantization.fake_quant_with_min_max_vars": _fake_quant_call(False, divide=True),
    "quantization.fake_quant_with_min_max_vars_per_channel": _fake_quant_call(True),
    "compat.v1.nn.fused_batch_norm": _fused_batch_norm_any,
    "convert_to_tensor": _convert_to_tensor, "identity_n": _identity_n,
    "math.accumulate_n": lambda rt, inputs, shape=None, tensor_dtype=None: _add_n(rt, inputs),
    "math.xdivy": _binary(_xdivy_fn, True), "math.zero_fraction": _zero_fraction,
    "math.bessel_i0": lambda rt, x: jax.scipy.special.i0(x),
    "math.bessel_i1": lambda rt, x: jax.scipy.special.i1(x),
    "nn.weighted_cross_entropy_with_logits": _weighted_xent,
    "nn.log_poisson_loss": _log_poisson_loss,
    "linalg.adjoint": lambda rt, matrix: _swap(matrix, True),
    "linalg.triangular_solve": _triangular_solve, "linalg.cholesky_solve": _cholesky_solve,
    "linalg.tensor_diag": _tensor_diag,
    "signal.fftshift": _fft_shift(False), "signal.ifftshift": _fft_shift(True),
    "reverse_sequence": _reverse_sequence,
    "quantization.quantize_and_dequantize_v2": _quantize_and_dequantize(False),
    "quantization.quantize_and_dequantize": _quantize_and_dequantize(True),
    "math.real": _real_part, "math.imag": _imag_part, "math.angle": _angle,
    "math.conj": _conj, "signal.inverse_stft": _inverse_stft,
    "nn.dilation2d": _morphology(False), "nn.erosion2d": _morphology(True),
    "histogram_fixed_width": _histogram_fixed_width,
    "histogram_fixed_width_bins": _histogram_fixed_width_bins,
    "compat.v1.math.in_top_k": _in_top_k, "linalg.set_diag": _set_diag,
    "linalg.cholesky": _cholesky, "linalg.solve": _solve, "linalg.eigvalsh": _eigvalsh,
    "linalg.svd": _svd,
    "compat.v1.nn.softmax_cross_entropy_with_logits_v2": _softmax_xent,
    "compat.v1.nn.sigmoid_cross_entropy_with_logits": _sigmoid_xent,
    "compat.v1.nn.sparse_softmax_cross_entropy_with_logits": _sparse_softmax_xent,
    "compat.v1.image.crop_and_resize": _crop_and_resize_v1,
    "compat.v1.image.resize_image_with_pad": _resize_image_with_pad_v1,
}

#: TF keywords a translation does not implement but accepts: at these values (TF's defaults).
_ACCEPTED = {"linalg.matmul": {"output_type": None},
             "compat.v1.gather": {"validate_indices": None},  # TF ignores it
             "zeros_like": {"layout": None}, "ones_like": {"layout": None},
             "zeros": {"layout": None}, "ones": {"layout": None}, "fill": {"layout": None},
             "strided_slice": {"var": None},
             "linalg.diag_part": {"k": 0, "padding_value": 0, "align": "RIGHT_LEFT"},
             "linalg.diag": {"k": 0, "num_rows": -1, "num_cols": -1, "padding_value": 0,
                             "align": "RIGHT_LEFT"},
             "compat.v1.gather_nd": {"bad_indices_policy": ""},
             **{f"tensor_scatter_nd_{k}": {"bad_indices_policy": ""}
                for k in ("update", "add", "sub", "max", "min")},
             "scatter_nd": {"bad_indices_policy": ""}}


def _keywords(fn) -> frozenset:
    """The keywords a translation implements: its parameters after ``rt`` and the first
    (the tensor tf.keras records positionally)."""
    return frozenset(list(inspect.signature(fn).parameters)[2:])


#: NumPy forms of elementwise functions of one tensor, used on static values (sizes
#: computed from ``tf.shape``, which must stay static for a reshape or resize to take them).
_STATIC_UNARY = {"math.sqrt": np.sqrt, "math.square": np.square, "math.abs": np.abs,
                 "math.negative": np.negative, "math.exp": np.exp, "math.log": np.log,
                 "math.floor": np.floor, "math.ceil": np.ceil,
                 "math.round": np.round, "math.rint": np.rint,  # half to even, as TF
                 "math.sign": np.sign, "math.reciprocal": np.reciprocal,
                 "math.rsqrt": lambda v: 1 / np.sqrt(v)}


def _static_or(fn, static):
    """``fn``, or ``static`` (NumPy) where its tensor is a static value (a NumPy one)."""
    @functools.wraps(fn)
    def f(rt, x, *args, **kwargs):
        if isinstance(x, (np.ndarray, np.generic)):
            return static(x)
        return fn(rt, x, *args, **kwargs)
    return f


for _name, _static in _STATIC_UNARY.items():
    _FUNCTIONS[_name] = _static_or(_FUNCTIONS[_name], _static)
del _name, _static

_KEYWORDS = {name: _keywords(fn) for name, fn in _FUNCTIONS.items()}


#: The wrapped functions that are an output activation (``LayerImpl.head_op``).
_HEAD_OPS = {"nn.softmax": "softmax", "math.softmax": "softmax", "nn.sigmoid": "sigmoid",
             "math.sigmoid": "sigmoid"}


def supported_tf_functions() -> list[str]:
    """The TensorFlow function names a ``TFOpLambda`` may wrap."""
    return sorted(_FUNCTIONS)


def _show(v) -> str:
    if hasattr(v, "shape") and hasattr(v, "dtype"):
        return f"a tensor of shape {tuple(v.shape)}"
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


def _same(v, default) -> bool:
    return (v is default or (type(v) is type(default) and not hasattr(v, "shape")
                             and v == default))


def _check_keywords(kwargs: dict, implemented: frozenset, accepted: dict) -> None:
    for k, v in kwargs.items():
        if k == "name" or k in implemented:
            continue
        if k in accepted and _same(v, accepted[k]):
            continue
        known = ", ".join(sorted(implemented)) or "none"
        also = "".join(f"; {a} only at {d!r}" for a, d in sorted(accepted.items()))
        raise _Refused(f"its keyword argument {k}={_show(v)} is not supported (keywords "
                       f"translated: {known}{also})")


def _refusal(ctx, fn_name: str, e: _Refused) -> Exception:
    # raised while tracing: the layer-call wrapper adds the file name, so leave it out here
    return dataclasses.replace(ctx, path=None).error(f"it calls tf.{fn_name}: {e}")


#: The elementwise activations and math functions of one tensor among the functions above:
#: computed through ``rt.act``.
_ACTIVATIONS = frozenset({"math.tanh", "nn.tanh", "math.sigmoid", "nn.sigmoid", "math.softplus",
                          "nn.relu", "nn.relu6", "nn.silu", "nn.swish", "nn.elu", "nn.selu",
                          "nn.gelu", "nn.leaky_relu", "math.negative", "math.abs",
                          "math.square", "math.sqrt", "math.rsqrt", "math.exp", "math.log",
                          "math.sin", "math.cos", "math.erf", "math.erfc", "math.reciprocal",
                          "math.log1p", "math.expm1", "math.log_sigmoid", "nn.softsign",
                          "math.atan", "math.asinh", "math.sinh", "math.cosh",
                          "math.asin", "math.acos", "math.atanh", "math.acosh", "math.tan",
                          "math.erfinv", "math.lgamma", "math.digamma", "math.bessel_i0e",
                          "math.bessel_i1e", "math.ndtri", "math.erfcinv",
                          "math.bessel_i0", "math.bessel_i1",
                          "quantization.fake_quant_with_min_max_args",
                          "quantization.fake_quant_with_min_max_vars",
                          "quantization.fake_quant_with_min_max_vars_per_channel"})


#: The wrapped functions that add or multiply tensors (``LayerImpl.merge``: LRP's rule layers
#: where they are called on two tensors).
_MERGES = {"__operators__.add": "sum", "math.add": "sum", "math.add_n": "sum",
           "math.subtract": "sum", "__operators__.sub": "sum",
           "math.multiply": "product", "__operators__.mul": "product",
           "linalg.matmul": "product", "tensordot": "product", "nn.bias_add": "sum"}

#: Other wrapped functions that LRP gives its rule (``LayerImpl.relevance``), as it does the
#: layers computing the same (``UnitNormalization``, ``MaxPooling2D``, ``AveragePooling2D``...).
_RULE_FUNCTIONS = frozenset({"math.l2_normalize", "nn.max_pool1d", "nn.max_pool2d",
                             "nn.max_pool3d", "nn.avg_pool1d", "nn.avg_pool2d",
                             "nn.avg_pool3d", "nn.avg_pool", "compat.v1.nn.conv2d",
                             "compat.v1.nn.conv1d", "nn.conv3d",
                             "nn.convolution", "compat.v1.nn.depthwise_conv2d",
                             "nn.conv1d_transpose", "nn.conv2d_transpose",
                             "nn.conv3d_transpose", "compat.v1.nn.separable_conv2d",
                             "compat.v1.nn.pool"})

#: Functions refused with the reason, not as unknown: tf.keras's record lacks arguments, or
#: the function is random at inference.
_UNRECORDED = {
    "einsum": "tf.keras records only its equation, not the tensors it is applied to (they "
              "are extra positional arguments, which its config drops: tf.keras cannot reload "
              "the file either); use tf.keras.layers.EinsumDense, or tf.linalg.matmul and "
              "tf.transpose",
    "compat.v1.nn.embedding_lookup": "tf.keras writes a constant table as a nested list and "
                                     "reads each row back as a shard of a partitioned table: "
                                     "its own reload computes another function (one value "
                                     "per id); use tf.gather(table, ids)",
    **{f: "it draws random numbers on every call, at inference too: the model's outputs are "
          "random (sample outside the model, or use a layer that is the identity at inference: "
          "GaussianNoise, RandomFlip...)"
       for f in ("random.normal", "random.uniform", "random.truncated_normal",
                 "random.categorical", "random.shuffle", "image.random_flip_left_right",
                 "image.random_flip_up_down", "image.random_brightness",
                 "image.random_contrast", "image.random_crop")},
    **{f: "its output's shape depends on the data (the number of distinct values), and JAX "
          "needs every shape when it traces the model; tf.math.bincount(x, minlength=n, "
          "maxlength=n) counts n known values in a shape of its own"
       for f in ("unique", "unique_with_counts")},
    "meshgrid": "tf.keras records only its first tensor, not the others it is applied to "
                "(extra positional arguments, which its config drops: tf.keras's own reload "
                "computes another function); build the grids with tf.broadcast_to or "
                "tf.tile",
    "linalg.eigh": "each eigenvector's sign is the eigensolver's choice and JAX's differ "
                   "from TF's, so the model would compute something else; "
                   "tf.linalg.eigvalsh gives the eigenvalues, which are translated",
    "nn.dropout": "it drops a random part of its input on every call, at inference too (it "
                  "is not the Dropout layer): the model's outputs are random; use "
                  "tf.keras.layers.Dropout, which is the identity at inference",
}


@register_layer("TFOpLambda")
def _tf_op_lambda(config, ctx):
    fn_name = str(config.get("function", ""))
    fn = _FUNCTIONS.get(fn_name)
    if fn_name in _UNRECORDED:
        raise ctx.error(f"it wraps tf.{fn_name}, which cannot be imported: "
                        f"{_UNRECORDED[fn_name]}")
    if fn is None:
        raise ctx.error(f"it wraps the TensorFlow function tf.{fn_name}, which has no JAX "
                        f"translation here; supported: {', '.join(supported_tf_functions())}")
    implemented, accepted = _KEYWORDS[fn_name], _ACCEPTED.get(fn_name, {})
    if fn_name in _ACTIVATIONS:
        fn = act_on_first(fn)  # (a static value, a size from tf.shape, as it is)

    def call(params, *args, rt, **kwargs):
        try:
            _check_keywords(kwargs, implemented, accepted)
            kwargs = {k: v for k, v in kwargs.items() if k in implemented}
            return fn(rt, *args, **kwargs)
        except _Refused as e:
            raise _refusal(ctx, fn_name, e) from None

    merge = _MERGES.get(fn_name)
    return LayerImpl(call=call, head_op=_HEAD_OPS.get(fn_name),
                     relevance=merge is not None or fn_name in _RULE_FUNCTIONS, merge=merge)


def _slice_spec(spec):
    if isinstance(spec, dict) and set(spec) <= {"start", "stop", "step"}:
        return slice(spec.get("start"), spec.get("stop"), spec.get("step"))
    # tf.keras's JSON encoder writes Ellipsis as {"class_name": "__ellipsis__"}
    if spec == "Ellipsis" or spec == "..." or spec == {"class_name": "__ellipsis__"}:
        return Ellipsis
    if isinstance(spec, (list, tuple)):
        return tuple(_slice_spec(s) for s in spec)
    return spec


@register_layer("SlicingOpLambda")
def _slicing_op_lambda(config, ctx):
    fn_name = str(config.get("function", ""))
    if fn_name == "compat.v1.boolean_mask":
        raise ctx.error("it calls tf.boolean_mask, which is not supported: its output keeps "
                        "the elements where the mask is true, so its shape depends on the "
                        "data (JAX needs shapes when it traces the model); use tf.where(mask, "
                        "x, 0.0) to zero the others instead")
    if fn_name != "__operators__.getitem":
        raise ctx.error(f"unsupported slicing function tf.{fn_name}")

    def call(params, x, *, rt, slice_spec=None, **kwargs):
        try:
            _check_keywords(kwargs, frozenset({"slice_spec"}), {"var": None})
        except _Refused as e:
            raise _refusal(ctx, fn_name, e) from None
        return x[_slice_spec(slice_spec)]

    return LayerImpl(call=call)
