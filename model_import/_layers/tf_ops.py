"""tf.keras 2 ``TFOpLambda`` / ``SlicingOpLambda``: TensorFlow functions applied to symbolic
tensors (``x + 3.0`` -> ``__operators__.add``, ``tf.reduce_mean`` -> ``math.reduce_mean``,
``x[:, 0]`` -> ``__operators__.getitem``), as tf.keras's MobileNetV3 and many user models
contain. The config names the TF function; the node holds its arguments (the first tensor
positionally, the rest by TF's parameter names). Functions not listed here raise an
:class:`UnsupportedLayerError` naming the function.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from model_import._layers.activations import relu_family
from model_import._layers.registry import LayerImpl, register_layer


def _axis(v):
    return tuple(v) if isinstance(v, list) else v


def _binary(fn):
    return lambda rt, x, y=None, **k: fn(x, y)


def _reduce(fn):
    def f(rt, x, axis=None, keepdims=False, **k):
        return fn(x, axis=_axis(axis), keepdims=bool(keepdims))
    return f


def _transpose(rt, x, perm=None, conjugate=False, **k):
    return jnp.transpose(x, None if perm is None else tuple(perm))


def _squeeze(rt, x, axis=None, squeeze_dims=None, **k):
    axis = axis if axis is not None else squeeze_dims
    return jnp.squeeze(x, _axis(axis))


def _resize(rt, x, size, method="bilinear", antialias=False, **k):
    if method not in ("bilinear", "bicubic"):
        raise ValueError(f"tf.image.resize method {method!r} is not supported")
    shape = (x.shape[0], int(size[0]), int(size[1]), x.shape[-1])
    return jax.image.resize(x, shape, method="linear" if method == "bilinear" else "cubic",
                            antialias=bool(antialias))


_FUNCTIONS = {
    "__operators__.add": _binary(jnp.add), "math.add": _binary(jnp.add),
    "math.add_n": lambda rt, inputs, **k: sum(inputs[1:], inputs[0]),
    "math.subtract": _binary(jnp.subtract), "__operators__.sub": _binary(jnp.subtract),
    "math.multiply": _binary(jnp.multiply), "__operators__.mul": _binary(jnp.multiply),
    "math.truediv": _binary(jnp.true_divide), "math.divide": _binary(jnp.true_divide),
    "__operators__.truediv": _binary(jnp.true_divide),
    "math.floordiv": _binary(jnp.floor_divide), "math.pow": _binary(jnp.power),
    "math.maximum": _binary(jnp.maximum), "math.minimum": _binary(jnp.minimum),
    "math.squared_difference": _binary(lambda x, y: jnp.square(x - y)),
    "linalg.matmul": lambda rt, a, b=None, **k: jnp.matmul(a, b),
    "math.negative": lambda rt, x, **k: -x,
    "math.abs": lambda rt, x, **k: jnp.abs(x),
    "math.square": lambda rt, x, **k: jnp.square(x),
    "math.sqrt": lambda rt, x, **k: jnp.sqrt(x),
    "math.rsqrt": lambda rt, x, **k: jax.lax.rsqrt(x),
    "math.exp": lambda rt, x, **k: jnp.exp(x),
    "math.log": lambda rt, x, **k: jnp.log(x),
    "math.tanh": lambda rt, x, **k: jnp.tanh(x), "nn.tanh": lambda rt, x, **k: jnp.tanh(x),
    "math.sigmoid": lambda rt, x, **k: jax.nn.sigmoid(x),
    "nn.sigmoid": lambda rt, x, **k: jax.nn.sigmoid(x),
    "math.softplus": lambda rt, x, **k: jax.nn.softplus(x),
    "nn.relu": lambda rt, x, **k: rt.relu(x),
    "nn.relu6": lambda rt, x, **k: relu_family(x, rt, max_value=6.0),
    "nn.silu": lambda rt, x, beta=1.0, **k: x * jax.nn.sigmoid(beta * x),
    "nn.swish": lambda rt, x, beta=1.0, **k: x * jax.nn.sigmoid(beta * x),
    "nn.elu": lambda rt, x, **k: jax.nn.elu(x),
    "nn.selu": lambda rt, x, **k: jax.nn.selu(x),
    "nn.gelu": lambda rt, x, approximate=False, **k: jax.nn.gelu(x, approximate=approximate),
    "nn.leaky_relu": lambda rt, x, alpha=0.2, **k: jax.nn.leaky_relu(x, alpha),
    "nn.softmax": lambda rt, x, axis=-1, **k: jax.nn.softmax(x, axis=axis),
    "math.softmax": lambda rt, x, axis=-1, **k: jax.nn.softmax(x, axis=axis),
    "nn.log_softmax": lambda rt, x, axis=-1, **k: jax.nn.log_softmax(x, axis=axis),
    "math.reduce_mean": _reduce(jnp.mean), "math.reduce_sum": _reduce(jnp.sum),
    "math.reduce_max": _reduce(jnp.max), "math.reduce_min": _reduce(jnp.min),
    "math.reduce_prod": _reduce(jnp.prod),
    "reshape": lambda rt, x, shape, **k: jnp.reshape(x, tuple(shape)),
    "compat.v1.reshape": lambda rt, x, shape, **k: jnp.reshape(x, tuple(shape)),
    "concat": lambda rt, values, axis, **k: jnp.concatenate(list(values), axis=axis),
    "compat.v1.concat": lambda rt, values, axis, **k: jnp.concatenate(list(values), axis=axis),
    "stack": lambda rt, values, axis=0, **k: jnp.stack(list(values), axis=axis),
    "expand_dims": lambda rt, x, axis, **k: jnp.expand_dims(x, axis),
    "compat.v1.squeeze": _squeeze, "squeeze": _squeeze,
    "compat.v1.transpose": _transpose, "transpose": _transpose,
    "clip_by_value": lambda rt, x, clip_value_min, clip_value_max, **k: jnp.clip(
        x, clip_value_min, clip_value_max),
    "identity": lambda rt, x, **k: x,
    "image.resize": _resize,
}


#: The wrapped functions that are an output activation (``LayerImpl.head_op``).
_HEAD_OPS = {"nn.softmax": "softmax", "math.softmax": "softmax", "nn.sigmoid": "sigmoid",
             "math.sigmoid": "sigmoid"}


def supported_tf_functions() -> list[str]:
    """The TensorFlow function names a ``TFOpLambda`` may wrap."""
    return sorted(_FUNCTIONS)


@register_layer("TFOpLambda")
def _tf_op_lambda(config, ctx):
    fn_name = str(config.get("function", ""))
    fn = _FUNCTIONS.get(fn_name)
    if fn is None:
        raise ctx.error(f"it wraps the TensorFlow function tf.{fn_name}, which has no JAX "
                        f"translation here; supported: {', '.join(supported_tf_functions())}")

    def call(params, *args, rt, **kwargs):
        kwargs.pop("name", None)
        return fn(rt, *args, **kwargs)

    return LayerImpl(call=call, head_op=_HEAD_OPS.get(fn_name))


def _slice_spec(spec):
    if isinstance(spec, dict) and set(spec) <= {"start", "stop", "step"}:
        return slice(spec.get("start"), spec.get("stop"), spec.get("step"))
    if spec == "Ellipsis" or spec == "...":
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
        return x[_slice_spec(slice_spec)]

    return LayerImpl(call=call)
