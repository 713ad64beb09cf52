"""Keras 3 operations recorded in functional configs.

``x + 3.0``, ``x * y`` or ``keras.ops.mean(x, axis=...)`` on symbolic tensors become nodes
of class ``Add``/``Multiply``/``Mean`` from module ``keras.src.ops.*`` (MobileNetV3's
hard-sigmoid, ConvNeXt's residual sums). Their class names collide with layer classes, so
they are registered as ``"ops.<ClassName>"``; the config holds the operation's arguments
(``axis``, ``keepdims``, ``newshape``...), the node the operands (tensors and constants).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from model_import._layers.activations import _hard_sigmoid_k3, relu_family
from model_import._layers.registry import LayerImpl, register_layer


def _axis(v):
    if isinstance(v, list):
        return tuple(v)
    return v


def _op(*names: str, head_op: str | None = None):
    """Register ``make(config) -> f(rt, *args, **kwargs)`` for Keras op classes ``names``
    (``head_op``: see :class:`LayerImpl`)."""

    def deco(make: Callable[[dict], Callable[..., Any]]):
        def convert(config, ctx):
            f = make(dict(config))

            def call(params, *args, rt, **kwargs):
                return f(rt, *args, **kwargs)

            return LayerImpl(call=call, head_op=head_op)

        register_layer(*[f"ops.{n}" for n in names])(convert)
        return make

    return deco


def _simple(names, fn):
    _op(*names)(lambda cfg: (lambda rt, *a, **k: fn(*a, **k)))


for _names, _fn in [
    (("Add",), jnp.add), (("Subtract",), jnp.subtract), (("Multiply",), jnp.multiply),
    (("Divide", "TrueDivide"), jnp.true_divide), (("FloorDivide",), jnp.floor_divide),
    (("Power",), jnp.power), (("Maximum",), jnp.maximum), (("Minimum",), jnp.minimum),
    (("Mod",), jnp.mod), (("Matmul",), jnp.matmul), (("Negative",), jnp.negative),
    (("Absolute", "Abs"), jnp.abs), (("Square",), jnp.square), (("Sqrt",), jnp.sqrt),
    (("Exp",), jnp.exp), (("Log",), jnp.log), (("Log1p",), jnp.log1p),
    (("Expm1",), jnp.expm1), (("Tanh",), jnp.tanh), (("Sin",), jnp.sin), (("Cos",), jnp.cos),
    (("Sign",), jnp.sign), (("Reciprocal",), jnp.reciprocal), (("Floor",), jnp.floor),
    (("Ceil",), jnp.ceil), (("Erf",), jax.scipy.special.erf),
    (("Silu", "Swish"), jax.nn.silu),
    (("Softplus",), jax.nn.softplus), (("Softsign",), jax.nn.soft_sign),
    (("Selu",), jax.nn.selu), (("LogSigmoid",), jax.nn.log_sigmoid),
    (("HardSigmoid",), _hard_sigmoid_k3),
    (("HardSilu", "HardSwish"), lambda x: x * _hard_sigmoid_k3(x)),
]:
    _simple(_names, _fn)


@_op("Relu")
def _relu(cfg):
    return lambda rt, x: rt.relu(x)


@_op("Relu6")
def _relu6(cfg):
    return lambda rt, x: relu_family(x, rt, max_value=6.0)


@_op("LeakyRelu")
def _leaky_relu(cfg):
    slope = float(cfg.get("negative_slope", 0.2))
    return lambda rt, x: jax.nn.leaky_relu(x, slope)


@_op("Elu")
def _elu(cfg):
    alpha = float(cfg.get("alpha", 1.0))
    return lambda rt, x: jax.nn.elu(x, alpha)


@_op("Gelu")
def _gelu(cfg):
    approx = bool(cfg.get("approximate", True))
    return lambda rt, x: jax.nn.gelu(x, approximate=approx)


@_op("Sigmoid", head_op="sigmoid")
def _sigmoid(cfg):
    return lambda rt, x: jax.nn.sigmoid(x)


@_op("Softmax", head_op="softmax")
def _softmax(cfg):
    axis = _axis(cfg.get("axis", -1))
    return lambda rt, x: jax.nn.softmax(x, axis=axis)


@_op("LogSoftmax")
def _log_softmax(cfg):
    axis = _axis(cfg.get("axis", -1))
    return lambda rt, x: jax.nn.log_softmax(x, axis=axis)


def _reduction(fn):
    def make(cfg):
        axis = _axis(cfg.get("axis"))
        keepdims = bool(cfg.get("keepdims", False))
        return lambda rt, x: fn(x, axis=axis, keepdims=keepdims)
    return make


for _names, _fn in [(("Mean",), jnp.mean), (("Sum",), jnp.sum), (("Max", "Amax"), jnp.max),
                    (("Min", "Amin"), jnp.min), (("Prod",), jnp.prod), (("Var",), jnp.var),
                    (("Std",), jnp.std)]:
    _op(*_names)(_reduction(_fn))


@_op("Reshape")
def _reshape(cfg):
    shape = tuple(cfg.get("newshape", cfg.get("new_shape", ())))
    return lambda rt, x: jnp.reshape(x, tuple(-1 if d is None else d for d in shape))


@_op("Transpose")
def _transpose(cfg):
    axes = cfg.get("axes")
    return lambda rt, x: jnp.transpose(x, None if axes is None else tuple(axes))


@_op("ExpandDims")
def _expand_dims(cfg):
    axis = _axis(cfg.get("axis"))
    return lambda rt, x: jnp.expand_dims(x, axis)


@_op("Squeeze")
def _squeeze(cfg):
    axis = _axis(cfg.get("axis"))
    return lambda rt, x: jnp.squeeze(x, axis)


@_op("Concatenate")
def _concatenate(cfg):
    axis = int(cfg.get("axis", 0))
    return lambda rt, xs: jnp.concatenate(list(xs), axis=axis)


@_op("Stack")
def _stack(cfg):
    axis = int(cfg.get("axis", 0))
    return lambda rt, xs: jnp.stack(list(xs), axis=axis)


@_op("Clip")
def _clip(cfg):
    lo, hi = cfg.get("x_min"), cfg.get("x_max")
    return lambda rt, x: jnp.clip(x, lo, hi)


@_op("Flip")
def _flip(cfg):
    axis = _axis(cfg.get("axis"))
    return lambda rt, x: jnp.flip(x, axis)


@_op("Tile")
def _tile(cfg):
    reps = tuple(cfg.get("repeats", ()))
    return lambda rt, x, *a: jnp.tile(x, reps or a[0])


@_op("Repeat")
def _repeat(cfg):
    reps, axis = cfg.get("repeats"), cfg.get("axis")
    return lambda rt, x: jnp.repeat(x, reps, axis=axis)


@_op("Where")
def _where(cfg):
    return lambda rt, c, x=None, y=None: jnp.where(c, x, y)


@_op("GetItem")
def _get_item(cfg):
    return lambda rt, x, key: x[_index(key)]


def _index(key):
    """Keras-serialized index (``__slice__``/``__ellipsis__`` dicts, lists) -> Python index."""
    if isinstance(key, dict):
        cls = key.get("class_name")
        if cls == "__slice__":
            c = key["config"]
            return slice(c.get("start"), c.get("stop"), c.get("step"))
        if cls == "__ellipsis__":
            return Ellipsis
        raise ValueError(f"unsupported index {key!r}")
    if isinstance(key, (list, tuple)):
        return tuple(_index(k) for k in key)
    return key
