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
"""

from __future__ import annotations

import dataclasses
import inspect

import jax
import jax.numpy as jnp
import numpy as np

from model_import._layers.activations import act_on_first, elementwise_of_one, relu_family
from model_import._layers.image import resize_axes
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


def _binary(fn, pair=False):
    return elementwise_of_one(fn, _operands, pair)


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


def _resize(rt, images, size, method="bilinear", preserve_aspect_ratio=False,
            antialias=False):
    if method not in ("bilinear", "bicubic"):
        raise _Refused(f"method={method!r} is not supported (supported: 'bilinear', "
                       "'bicubic')")
    if images.ndim != 4:
        raise _Refused(f"images of rank {images.ndim} are not supported (batch, height, "
                       "width, channels only)")
    h, w = int(size[0]), int(size[1])
    if preserve_aspect_ratio:
        # TF: the largest size within `size` with the image's aspect ratio, from one scale
        # factor (float32, rounded half to even)
        ih, iw = images.shape[1], images.shape[2]
        scale = min(np.float32(h) / np.float32(ih), np.float32(w) / np.float32(iw))
        h = int(np.round(np.float32(scale) * np.float32(ih)))
        w = int(np.round(np.float32(scale) * np.float32(iw)))
    shape = (images.shape[0], h, w, images.shape[-1])
    if method == "bicubic" and not antialias:  # TF's ResizeBicubic: see resize_matrix
        return resize_axes(images, (1, 2), (h, w), "bicubic", backend="tensorflow")
    return jax.image.resize(images, shape, method="linear" if method == "bilinear" else "cubic",
                            antialias=bool(antialias))


def _add_n(rt, inputs):
    inputs = list(inputs)
    return sum(inputs[1:], inputs[0])


def _clip(rt, t, clip_value_min, clip_value_max):
    return jnp.clip(t, _const(clip_value_min, t), _const(clip_value_max, t))


_FUNCTIONS = {
    "__operators__.add": _binary(jnp.add), "math.add": _binary(jnp.add),
    "math.add_n": _add_n,
    "math.subtract": _binary(jnp.subtract), "__operators__.sub": _binary(jnp.subtract),
    "math.multiply": _binary(jnp.multiply), "__operators__.mul": _binary(jnp.multiply),
    "math.truediv": _binary(jnp.true_divide, True),
    "math.divide": _binary(jnp.true_divide, True),
    "__operators__.truediv": _binary(jnp.true_divide, True),
    "math.floordiv": _binary(jnp.floor_divide),
    "compat.v1.floor_div": _binary(jnp.floor_divide),  # Python's `//` in tf.keras 2.12-2.21
    "math.pow": _binary(jnp.power, True),
    "math.maximum": _binary(jnp.maximum, True), "math.minimum": _binary(jnp.minimum, True),
    "math.squared_difference": _binary(_squared_difference, True),
    "linalg.matmul": _matmul,
    "math.negative": lambda rt, x: -x,
    "math.abs": lambda rt, x: jnp.abs(x),
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
    "nn.leaky_relu": lambda rt, features, alpha=0.2: jax.nn.leaky_relu(features, alpha),
    "nn.softmax": _softmax(jax.nn.softmax), "math.softmax": _softmax(jax.nn.softmax),
    "nn.log_softmax": _softmax(jax.nn.log_softmax),
    "math.reduce_mean": _reduce(jnp.mean), "math.reduce_sum": _reduce(jnp.sum),
    "math.reduce_max": _reduce(jnp.max), "math.reduce_min": _reduce(jnp.min),
    "math.reduce_prod": _reduce(jnp.prod),
    "reshape": lambda rt, tensor, shape: jnp.reshape(tensor, tuple(shape)),
    "compat.v1.reshape": lambda rt, tensor, shape: jnp.reshape(tensor, tuple(shape)),
    "concat": lambda rt, values, axis: jnp.concatenate(list(values), axis=axis),
    "compat.v1.concat": lambda rt, values, axis: jnp.concatenate(list(values), axis=axis),
    "stack": lambda rt, values, axis=0: jnp.stack(list(values), axis=axis),
    "expand_dims": lambda rt, input, axis: jnp.expand_dims(input, axis),
    "compat.v1.squeeze": _squeeze_v1, "squeeze": _squeeze,
    "compat.v1.transpose": _transpose, "transpose": _transpose,
    "clip_by_value": _clip,
    "identity": lambda rt, input: input,
    "cast": lambda rt, x, dtype: x.astype(_cast_dtype(dtype)),
    # comparisons (`x > 0`: boolean, no gradient) and selection: `tf.where(x > 0, x, a * x)`
    "math.greater": lambda rt, x, y: jnp.greater(*_operands(x, y)),
    "math.greater_equal": lambda rt, x, y: jnp.greater_equal(*_operands(x, y)),
    "math.less": lambda rt, x, y: jnp.less(*_operands(x, y)),
    "math.less_equal": lambda rt, x, y: jnp.less_equal(*_operands(x, y)),
    "math.equal": lambda rt, x, y: jnp.equal(*_operands(x, y)),
    "math.not_equal": lambda rt, x, y: jnp.not_equal(*_operands(x, y)),
    "where": lambda rt, condition, x=None, y=None: _where(condition, x, y),
    "tile": lambda rt, input, multiples: jnp.tile(input, tuple(int(m) for m in multiples)),
    "image.resize": _resize,
}

#: TF keywords a translation does not implement but accepts: at these values (TF's defaults).
_ACCEPTED = {"linalg.matmul": {"output_type": None}}


def _keywords(fn) -> frozenset:
    """The keywords a translation implements: its parameters after ``rt`` and the first
    (the tensor tf.keras records positionally)."""
    return frozenset(list(inspect.signature(fn).parameters)[2:])


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
                          "math.square", "math.sqrt", "math.rsqrt", "math.exp", "math.log"})


#: The wrapped functions that add or multiply tensors (``LayerImpl.merge``: LRP's rule layers
#: where they are called on two tensors).
_MERGES = {"__operators__.add": "sum", "math.add": "sum", "math.add_n": "sum",
           "math.subtract": "sum", "__operators__.sub": "sum",
           "math.multiply": "product", "__operators__.mul": "product",
           "linalg.matmul": "product"}


@register_layer("TFOpLambda")
def _tf_op_lambda(config, ctx):
    fn_name = str(config.get("function", ""))
    fn = _FUNCTIONS.get(fn_name)
    if fn is None:
        raise ctx.error(f"it wraps the TensorFlow function tf.{fn_name}, which has no JAX "
                        f"translation here; supported: {', '.join(supported_tf_functions())}")
    implemented, accepted = _KEYWORDS[fn_name], _ACCEPTED.get(fn_name, {})
    if fn_name in _ACTIVATIONS:
        fn = act_on_first(fn)

    def call(params, *args, rt, **kwargs):
        try:
            _check_keywords(kwargs, implemented, accepted)
            kwargs = {k: v for k, v in kwargs.items() if k in implemented}
            return fn(rt, *args, **kwargs)
        except _Refused as e:
            raise _refusal(ctx, fn_name, e) from None

    merge = _MERGES.get(fn_name)
    return LayerImpl(call=call, head_op=_HEAD_OPS.get(fn_name), relevance=merge is not None,
                     merge=merge)


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
    if fn_name != "__operators__.getitem":
        raise ctx.error(f"unsupported slicing function tf.{fn_name}")

    def call(params, x, *, rt, slice_spec=None, **kwargs):
        try:
            _check_keywords(kwargs, frozenset({"slice_spec"}), {"var": None})
        except _Refused as e:
            raise _refusal(ctx, fn_name, e) from None
        return x[_slice_spec(slice_spec)]

    return LayerImpl(call=call)
