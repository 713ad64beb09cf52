"""Keras 3 operations recorded in functional configs.

``x + 3.0``, ``x * y`` or ``keras.ops.mean(x, axis=...)`` on symbolic tensors become nodes
of class ``Add``/``Multiply``/``Mean`` from module ``keras.src.ops.*`` (MobileNetV3's
hard-sigmoid, ConvNeXt's residual sums). Their class names collide with layer classes, so
they are registered as ``"ops.<ClassName>"``; the config holds the operation's arguments
(``axis``, ``keepdims``, ``newshape``...), the node the operands (tensors and constants).
Operations with several outputs (``split``, ``top_k``, ``moments``, ``unstack``) return a
tuple, which later nodes index by tensor position. A configuration whose Keras result the
converter does not reproduce exactly is refused at load time (:class:`_Refused`).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from model_import._layers.activations import (act_on_first, elementwise_of_one, glu,
                                              hard_shrink, relu_family, soft_shrink,
                                              sparse_plus, sparsemax, squareplus)
from model_import._layers.image import (BICUBIC_BACKENDS, aspect_crop_box, aspect_pads,
                                        resize_axes, round_saturate)
from model_import._layers.normalization import inverse_l2_norm
from model_import._layers.pooling import _reduced_axes, reduce_max, reduce_min
from model_import._layers.registry import BackendWarning, LayerImpl, register_layer


def _axis(v):
    if isinstance(v, list):
        return tuple(v)
    return v


class _Refused(ValueError):
    """A configuration of an operation whose Keras semantics the converter does not match:
    the importer refuses the node (an :class:`UnsupportedLayerError` naming it)."""


def _float32_constants(args, kwargs) -> tuple[tuple, dict]:
    """An operation's NumPy float64 constants (``x - np.array(mean)``, ``ops.matmul(x,
    np.eye(3))``: NumPy's default dtype) beside tensors: float32, as Keras 3 computes them
    on every backend but TensorFlow (``keras.backend.result_type("float32", "float64")`` is
    float32), or float64 beside a float64 tensor (``jax_enable_x64``). Kept float64, under
    x64 they made the result, and every layer after it, float64 for float32 inputs; without
    x64 JAX computes them in float32 anyway."""
    leaves = jax.tree_util.tree_leaves((args, kwargs))
    tensors = [a.dtype for a in leaves if isinstance(a, jax.Array)]
    if not tensors or not any(isinstance(a, (np.ndarray, np.generic)) and a.dtype == np.float64
                              for a in leaves):
        return args, kwargs
    dt = np.float64 if np.dtype(np.float64) in tensors else np.float32
    return jax.tree_util.tree_map(
        lambda a: np.asarray(a, dt) if isinstance(a, (np.ndarray, np.generic)) and (
            a.dtype == np.float64) else a, (args, kwargs))


def _op(*names: str, head_op: str | None = None, layout: bool = False, context: bool = False,
        act: bool = False, float64_constants: bool = False, **impl_kw):
    """Register ``make(config) -> f(rt, *args, **kwargs)`` for Keras op classes ``names``
    (``head_op`` and ``impl_kw``: see :class:`LayerImpl`; ``layout``: the operation has a
    ``data_format``, which the model's layout inference reads; ``context``: ``make`` takes
    the :class:`ConvertContext` too; ``act``: an elementwise activation of its first
    argument, computed through ``rt.act``; ``float64_constants``: ``f`` takes its float64
    NumPy constants as they are, else see :func:`_float32_constants`). ``make`` raises
    :class:`_Refused` for configurations it does not support."""

    def deco(make: Callable[..., Callable[..., Any]]):
        def convert(config, ctx):
            kw = dict(impl_kw)
            try:
                f = make(dict(config), ctx) if context else make(dict(config))
                if layout:
                    kw["data_format"] = _data_format(config)
            except _Refused as e:
                raise ctx.error(str(e)) from None

            if act:
                f = act_on_first(f)

            def call(params, *args, rt, **kwargs):
                if not float64_constants:
                    args, kwargs = _float32_constants(args, kwargs)
                return f(rt, *args, **kwargs)

            return LayerImpl(call=call, head_op=head_op, **kw)

        register_layer(*[f"ops.{n}" for n in names])(convert)
        return make

    return deco


#: Operations among the simple ones below that are elementwise functions of one tensor, with
#: a derivative that is not zero almost everywhere: activations and math functions, computed
#: through ``rt.act`` (DeepLIFT's rescale rule; LRP passes relevance through them, as through
#: ``x ** 2.0``). Not the piecewise constant ones (``Sign``, ``Floor``...) nor ``StopGradient``.
_ELEMENTWISE_OPS = frozenset({
    "Tanh", "Silu", "Softplus", "Softsign", "Selu", "LogSigmoid", "HardSigmoid", "HardSilu",
    "HardTanh", "TanhShrink", "SparsePlus", "SparseSigmoid",
    "Negative", "Absolute", "Square", "Sqrt", "Rsqrt", "Cbrt", "Reciprocal", "Exp", "Expm1",
    "Log", "Log1p", "Log2", "Log10", "Sin", "Cos", "Tan", "Sinh", "Cosh", "Arcsin", "Arccos",
    "Arctan", "Arcsinh", "Arccosh", "Arctanh", "Sinc", "Erf", "Erfc", "Erfinv", "Deg2rad",
    "Rad2deg"})

#: Elementwise functions of two tensors among them, through ``rt.pair`` (``rt.act`` with a
#: constant operand).
_PAIR_OPS = frozenset({"Arctan2", "Hypot", "Logaddexp", "Logaddexp2", "Fmax", "Fmin"})


def _simple(names, fn, **impl_kw):
    if names[0] in _PAIR_OPS:
        _op(*names, **impl_kw)(lambda cfg: elementwise_of_one(fn, pair=True))
        return
    _op(*names, act=names[0] in _ELEMENTWISE_OPS, **impl_kw)(
        lambda cfg: (lambda rt, *a, **k: fn(*a, **k)))


for _names, _fn, _kw in [
    (("Add",), jnp.add, {"merge": "sum"}), (("Subtract",), jnp.subtract, {"merge": "sum"}),
    (("Multiply",), jnp.multiply, {"merge": "product"}),
    (("Divide", "TrueDivide"), jnp.true_divide, {}), (("Power",), jnp.power, {}),
    (("Maximum",), jnp.maximum, {}), (("Minimum",), jnp.minimum, {}),
]:  # the ones that are not merges go through rt.pair on two tensors
    _op(*_names, relevance="merge" in _kw, **_kw)(
        lambda cfg, fn=_fn, pair="merge" not in _kw: elementwise_of_one(fn, pair=pair))

def _int8_accumulator(*operands) -> dict:
    """``preferred_element_type=int32`` where every operand is int8: Keras's JAX and NumPy
    backends compute ``matmul``/``einsum`` of int8 tensors in int32 and return int32 (int8
    wrapped around: 100 * 100 * 3 gave 48, Keras 30000); other dtypes as ``jax.numpy``."""
    if all(jnp.asarray(o).dtype == jnp.int8 for o in operands):
        return {"preferred_element_type": jnp.int32}
    return {}


def _matmul(x1, x2):
    return jnp.matmul(x1, x2, **_int8_accumulator(x1, x2))


_simple(("Matmul",), _matmul, relevance=True, merge="product")

for _names, _fn in [
    (("FloorDivide",), jnp.floor_divide), (("Mod",), jnp.mod), (("Negative",), jnp.negative),
    (("Absolute", "Abs"), jnp.abs), (("Square",), jnp.square), (("Sqrt",), jnp.sqrt),
    (("Exp",), jnp.exp), (("Log",), jnp.log), (("Log1p",), jnp.log1p),
    (("Expm1",), jnp.expm1), (("Tanh",), jnp.tanh), (("Sin",), jnp.sin), (("Cos",), jnp.cos),
    (("Sign",), jnp.sign), (("Reciprocal",), jnp.reciprocal),
    # Keras's floor/ceil cast integer and boolean tensors to float first (every backend)
    (("Floor",), lambda x: jnp.floor(_to_float(x))),
    (("Ceil",), lambda x: jnp.ceil(_to_float(x))), (("Erf",), jax.scipy.special.erf),
    (("Silu", "Swish"), jax.nn.silu),
    (("Softplus",), jax.nn.softplus), (("Softsign",), jax.nn.soft_sign),
    (("Selu",), jax.nn.selu), (("LogSigmoid",), jax.nn.log_sigmoid),
    (("HardSigmoid",), jax.nn.hard_sigmoid),  # relu6(x + 3) / 6: derivative 0 at +-3
    (("HardSilu", "HardSwish"), jax.nn.hard_silu),  # x * relu6(x + 3) / 6: 1 at 3, 0 at -3
]:
    _simple(_names, _fn)


@_op("Relu", act=True)
def _relu(cfg):
    return lambda rt, x: rt.relu(x)


@_op("Relu6", act=True)
def _relu6(cfg):
    return lambda rt, x: relu_family(x, rt, max_value=6.0)  # gradient 0 at 6, as Keras


@_op("LeakyRelu", act=True)
def _leaky_relu(cfg):
    slope = float(cfg.get("negative_slope", 0.2))
    return lambda rt, x: jax.nn.leaky_relu(x, slope)


@_op("Elu", act=True)
def _elu(cfg):
    alpha = float(cfg.get("alpha", 1.0))
    return lambda rt, x: jax.nn.elu(x, alpha)


@_op("Gelu", act=True)
def _gelu(cfg):
    approx = bool(cfg.get("approximate", True))
    return lambda rt, x: jax.nn.gelu(x, approximate=approx)


@_op("Sigmoid", head_op="sigmoid", act=True)
def _sigmoid(cfg):
    return lambda rt, x: jax.nn.sigmoid(x)


@_op("Softmax", head_op="softmax")
def _softmax(cfg):
    axis = _axis(cfg.get("axis", -1))
    return lambda rt, x: rt.softmax_of(x, axis)


@_op("LogSoftmax")
def _log_softmax(cfg):
    axis = _axis(cfg.get("axis", -1))
    return lambda rt, x: jax.nn.log_softmax(x, axis=axis)


def _reduction(fn, bound=None, plain=None):
    """``fn(x, axis, keepdims)``; ``bound``: ``ops.max``/``min``'s ``initial`` applied after
    the reduction (``jnp.maximum``/``jnp.minimum`` with it), as Keras on TensorFlow does
    (Keras on JAX passes it to ``jnp.max``, which does the same); an empty ``x`` (an empty
    reduction: ``initial`` everywhere, as Keras on every backend gives it, where ``fn``
    would raise) reduced by ``plain`` (``jnp.max``/``jnp.min``) with ``initial``."""
    def make(cfg):
        axis = _axis(cfg.get("axis"))
        keepdims = bool(cfg.get("keepdims", False))
        initial = cfg.get("initial") if bound is not None else None
        if initial is None and fn in (reduce_max, reduce_min):
            return lambda rt, x: fn(_nonempty(x, axis, fn is reduce_max), axis=axis,
                                    keepdims=keepdims)
        if initial is None:
            return lambda rt, x: fn(x, axis=axis, keepdims=keepdims)

        def call(rt, x):
            start = jnp.asarray(initial, jnp.result_type(x))
            if x.size == 0:  # nothing to differentiate
                return plain(x, axis=axis, keepdims=keepdims, initial=start)
            return bound(fn(x, axis=axis, keepdims=keepdims), start)
        return call
    return make


def _nonempty(x, axis, is_max: bool):
    """``x``, checked to have something to reduce over ``axis`` (``ops.max``/``min``/
    ``amax``/``amin`` without ``initial``): an empty reduction has no maximum, and Keras
    raises (NumPy's zero-size error on its NumPy and JAX backends, "Cannot compute the max of
    an empty tensor" on TensorFlow); a clear error here, not ``jnp.max``'s."""
    x = jnp.asarray(x)
    if any(x.shape[a] == 0 for a in _reduced_axes(axis, x.ndim)):
        what = "max" if is_max else "min"
        raise ValueError(
            f"keras.ops.{what} over axis={axis!r} of a tensor of shape {x.shape}: expected a "
            f"non-empty reduction, got a reduced axis of size 0, which has no {what}imum "
            f"(Keras raises too); give ops.{what} an `initial` value, which an empty "
            "reduction returns, or reduce a non-empty axis")
    return x


# max and min: jnp.max's value and derivative (ties split), plus the first maximum (minimum)
# by position, which a producer XLA computes twice with other roundings cannot drop
for _names, _fn, _extra in [
        (("Mean",), jnp.mean, ()), (("Sum",), jnp.sum, ()),
        (("Max",), reduce_max, (jnp.maximum, jnp.max)), (("Amax",), reduce_max, ()),
        (("Min",), reduce_min, (jnp.minimum, jnp.min)), (("Amin",), reduce_min, ()),
        (("Prod",), jnp.prod, ()), (("Var",), jnp.var, ()), (("Std",), jnp.std, ())]:
    _op(*_names)(_reduction(_fn, *_extra))


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
    reps = cfg.get("repeats", ())
    # one count (``ops.tile(x, 2)``) is saved as an int: the last axis, as np.tile takes it
    reps = (int(reps),) if isinstance(reps, (int, float)) else tuple(reps)
    return lambda rt, x, *a: jnp.tile(x, reps or a[0])


@_op("Repeat")
def _repeat(cfg):
    reps, axis = np.asarray(cfg.get("repeats")), cfg.get("axis")  # one count, or one per item
    if not np.issubdtype(reps.dtype, np.integer) or reps.ndim > 1:
        raise _Refused(f"expected repeats as an int or a list of ints, got {reps.tolist()!r}")
    total = None if reps.ndim == 0 else int(reps.sum())  # the output's length: static
    return lambda rt, x: jnp.repeat(x, reps, axis=axis, total_repeat_length=total)


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


# ---------------------------------------------------------------------------------------
# More of keras.ops, as Keras 3 records them in functional models. Each follows Keras's
# JAX backend (which the NumPy backend mirrors), with Keras's dtype rules where they differ
# from jax.numpy's; configurations whose Keras result is not pinned down are refused.

_FLOATX = jnp.float32  # Keras's default float type (keras.config.floatx())
_EPSILON = 1e-7  # keras.config.epsilon()


def _tuple(v):
    """Lists (JSON) -> tuples, recursively (axes, shapes, pad widths)."""
    if isinstance(v, list):
        return tuple(_tuple(b) for b in v)
    return v


def _float_dtype(dtype):
    """Keras's ``result_type(dtype, float)``: floating types stay, others become floatx."""
    return dtype if jnp.issubdtype(dtype, jnp.floating) else _FLOATX


def _to_float(x):
    x = jnp.asarray(x)
    return x.astype(_float_dtype(x.dtype))


def _is_int_or_bool(x):
    x = jnp.asarray(x)
    return jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == jnp.bool_


def _data_format(cfg):
    # an op's data_format=None is keras.config.image_data_format() when it runs: Keras's
    # default, channels_last
    fmt = cfg.get("data_format") or "channels_last"
    if fmt not in ("channels_last", "channels_first"):
        raise _Refused(f"unknown data_format {fmt!r}")
    return fmt


for _names, _fn in [
    (("Tan",), jnp.tan), (("Sinh",), jnp.sinh), (("Cosh",), jnp.cosh),
    (("Arcsin",), jnp.arcsin), (("Arccos",), jnp.arccos), (("Arctan",), jnp.arctan),
    (("Arctan2",), jnp.arctan2), (("Arcsinh",), jnp.arcsinh), (("Arccosh",), jnp.arccosh),
    (("Arctanh",), jnp.arctanh), (("Log2",), jnp.log2), (("Log10",), jnp.log10),
    (("Cbrt",), jnp.cbrt), (("Hypot",), jnp.hypot), (("Logaddexp",), jnp.logaddexp),
    (("Heaviside",), jnp.heaviside), (("Sinc",), jnp.sinc),
    (("Erfc",), jax.scipy.special.erfc), (("Erfinv",), jax.scipy.special.erfinv),
    (("Rsqrt",), jax.lax.rsqrt),
    (("Isnan",), jnp.isnan), (("Isinf",), jnp.isinf), (("Isfinite",), jnp.isfinite),
    (("Greater",), jnp.greater), (("GreaterEqual",), jnp.greater_equal),
    (("Less",), jnp.less), (("LessEqual",), jnp.less_equal),
    (("LogicalXor",), jnp.logical_xor), (("StopGradient",), jax.lax.stop_gradient),
    (("HardTanh",), jax.nn.hard_tanh),  # derivative 1 at +-1, as Keras 3's on JAX
    (("TanhShrink",), lambda x: x - jnp.tanh(x)),
    (("Ravel",), jnp.ravel), (("Fliplr",), jnp.fliplr), (("Flipud",), jnp.flipud),
    (("Dot",), jnp.dot), (("Outer",), jnp.outer), (("Inner",), jnp.inner),
    (("Kron",), jnp.kron),
    (("Hstack",), lambda xs: jnp.hstack(list(xs))),
    (("Vstack",), lambda xs: jnp.vstack(list(xs))),
    (("Dstack",), lambda xs: jnp.dstack(list(xs))),
]:
    _simple(_names, _fn)


@_op("Exp2")
def _exp2(cfg):
    return lambda rt, x: jnp.exp2(_to_float(x))


@_op("Fabs")
def _fabs(cfg):
    return lambda rt, x: jnp.fabs(_to_float(x))


@_op("Trunc")
def _trunc(cfg):
    return lambda rt, x: x if _is_int_or_bool(x) else jnp.trunc(x)


@_op("Fmod")
def _fmod(cfg):
    def f(rt, a, b):
        a, b = jnp.asarray(a), jnp.asarray(b)
        if a.dtype == jnp.bool_ and b.dtype == jnp.bool_:
            a, b = a.astype(jnp.int32), b.astype(jnp.int32)
        return jnp.fmod(a, b)
    return f


@_op("Round")
def _round(cfg):
    decimals = int(cfg.get("decimals", 0))

    def f(rt, x):
        x = jnp.asarray(x)
        if jnp.issubdtype(x.dtype, jnp.integer) and decimals < 0:  # as Keras's JAX backend
            factor = jnp.asarray(10.0 ** decimals, _FLOATX)
            return (jnp.round(x.astype(_FLOATX) * factor) / factor).astype(x.dtype)
        return jnp.round(x, decimals)
    return f


@_op("DivideNoNan")
def _divide_no_nan(cfg):
    def f(rt, a, b):
        a, b = jnp.asarray(a), jnp.asarray(b)
        dt = _float_dtype(jnp.result_type(a, b))
        a, b = a.astype(dt), b.astype(dt)
        zero = b == 0
        return jnp.where(zero, jnp.zeros((), dt), a / jnp.where(zero, jnp.ones((), dt), b))
    return f


@_op("NanToNum")
def _nan_to_num(cfg):
    nan, posinf, neginf = cfg.get("nan", 0.0), cfg.get("posinf"), cfg.get("neginf")
    return lambda rt, x: jnp.nan_to_num(x, nan=nan, posinf=posinf, neginf=neginf)


@_op("Cast")
def _cast(cfg):
    dtype = cfg.get("dtype")
    if isinstance(dtype, dict):
        dtype = (dtype.get("config") or {}).get("name")
    if not dtype:
        raise _Refused("a Cast without dtype")
    dt = jax.dtypes.canonicalize_dtype(jnp.dtype(str(dtype)))
    return lambda rt, x: jnp.asarray(x).astype(dt)


@_op("Celu", act=True)
def _celu(cfg):
    alpha = float(cfg.get("alpha", 1.0))
    return lambda rt, x: jax.nn.celu(x, alpha)


@_op("Glu")
def _glu(cfg):
    axis = int(cfg.get("axis", -1))

    def f(rt, x):
        if x.shape[axis] % 2:
            raise ValueError(f"glu: axis size must be even, got shape {x.shape}")
        return glu(x, axis)
    return f


def _float_on_jax(fn: Callable[[Any], Any], ctx) -> Callable[..., Any]:
    """An activation ``fn`` that Keras's JAX backend computes in float32 for integer and
    boolean tensors (``jax.nn.sparse_plus``'s and ``jnp.where``'s Python float constants
    promote them: ``sparse_plus(0)`` is 0.25) and its NumPy backend in the tensor's own
    dtype (0): ``fn`` of ``x`` made float, unless the backend is NumPy; a
    :class:`BackendWarning` when such a tensor reaches it and the backend is unknown."""
    backend, name, cls = ctx.backend, ctx.layer_name, ctx.class_name

    def f(rt, x):
        x = jnp.asarray(x)
        if _is_int_or_bool(x) and backend != "numpy":
            if backend is None:
                warnings.warn(
                    f"layer {name!r} ({cls}) of an integer or boolean tensor ({x.dtype}): "
                    "computed in float32 as on Keras's JAX backend; Keras's NumPy backend "
                    f"keeps {x.dtype} (0 for sparse_plus(0), 0.25 on JAX). Pass "
                    "load_keras(..., keras_backend='numpy') for a file written there, "
                    "keras_backend='jax' to silence this", BackendWarning, stacklevel=2)
            x = _to_float(x)
        return fn(x)
    return f


@_op("HardShrink", act=True, context=True)
def _hard_shrink(cfg, ctx):
    t = float(cfg.get("threshold", 0.5))

    def f(x):
        if x.dtype == jnp.bool_:  # NumPy's: the threshold cast to bool, |x| > True never
            return x & (t == 0)
        return hard_shrink(x, t)  # of integers as NumPy's threshold cast to their dtype
    return _float_on_jax(f, ctx)


@_op("SparsePlus", act=True, context=True)
def _sparse_plus(cfg, ctx):
    return _float_on_jax(sparse_plus, ctx)


@_op("SparseSigmoid", act=True, context=True)
def _sparse_sigmoid(cfg, ctx):
    return _float_on_jax(lambda x: jnp.clip(0.5 * (x + 1.0), 0.0, 1.0).astype(x.dtype), ctx)


@_op("SoftShrink", act=True)
def _soft_shrink(cfg):
    t = float(cfg.get("threshold", 0.5))
    return lambda rt, x: soft_shrink(x, t)


@_op("Threshold", act=True)
def _threshold(cfg):
    t, v = cfg["threshold"], cfg["default_value"]
    return lambda rt, x: jnp.where(x > t, x, jnp.asarray(v, x.dtype))


@_op("Squareplus", act=True)
def _squareplus(cfg):
    b = float(cfg.get("b", 4))
    return lambda rt, x: squareplus(x, b)


@_op("Sparsemax")
def _sparsemax(cfg):
    axis = int(cfg.get("axis", -1))
    return lambda rt, x: sparsemax(x, axis)


# ------------------------------------------------------------------ reductions, statistics
@_op("Logsumexp")
def _logsumexp(cfg):
    axis, keepdims = _tuple(cfg.get("axis")), bool(cfg.get("keepdims", False))
    return lambda rt, x: jax.scipy.special.logsumexp(x, axis=axis, keepdims=keepdims)


@_op("Average")
def _average(cfg):
    axis = _tuple(cfg.get("axis"))

    def f(rt, x, weights=None):
        x = jnp.asarray(x)
        if weights is None:
            return jnp.average(_to_float(x), axis=axis)
        w = jnp.asarray(weights)
        dt = _float_dtype(jnp.result_type(x.dtype, w.dtype))
        return jnp.average(x.astype(dt), axis=axis, weights=w.astype(dt))
    return f


@_op("Median")
def _median(cfg):
    axis, keepdims = _tuple(cfg.get("axis")), bool(cfg.get("keepdims", False))
    return lambda rt, x: jnp.median(_to_float(x), axis=axis, keepdims=keepdims)


_QUANTILE_METHODS = ("linear", "lower", "higher", "midpoint", "nearest")


def _quantile(x, q, axis, method, keepdims):
    """``numpy.quantile`` (Keras's reference semantics), with the positions computed from
    the constant ``q`` in float64 as NumPy does (``jnp.quantile`` rounds them in float32 and
    rounds ``nearest`` differently)."""
    try:
        q = np.asarray(q, np.float64)
    except Exception as e:  # a traced tensor
        raise ValueError("quantile/percentile: q must be a constant, not a tensor") from e
    if np.any((q < 0) | (q > 1)) or np.any(np.isnan(q)):
        raise ValueError(f"quantiles must be in [0, 1], got {q}")
    x = _to_float(x)
    nd = x.ndim
    axes = (tuple(range(nd)) if axis is None else
            tuple(sorted(a % nd for a in (axis if isinstance(axis, tuple) else (axis,)))))
    rest = [d for d in range(nd) if d not in axes]
    xt = jnp.transpose(x, rest + list(axes)).reshape(tuple(x.shape[d] for d in rest) + (-1,))
    n = xt.shape[-1]
    xs = jnp.sort(xt, axis=-1)
    vi = (n - 1) * q
    if method in ("lower", "higher", "nearest"):
        idx = {"lower": np.floor, "higher": np.ceil, "nearest": np.around}[method](vi)
        out = xs[..., idx.astype(np.intp)]
    else:
        if method == "midpoint":
            vi = 0.5 * (np.floor(vi) + np.ceil(vi))
        prev = np.floor(vi)
        gamma = vi - prev
        if method == "midpoint":
            gamma = np.where(vi % 1 == 0, 0.0, 0.5)
        prev = np.clip(prev, 0, n - 1).astype(np.intp)
        nxt = np.clip(prev + 1, 0, n - 1).astype(np.intp)
        a, b = xs[..., prev], xs[..., nxt]
        t = jnp.asarray(gamma, x.dtype)
        d = b - a
        out = jnp.where(t >= 0.5, b - d * (1 - t), a + d * t)  # numpy's _lerp
    has_nan = jnp.any(jnp.isnan(xt), axis=-1).reshape(xt.shape[:-1] + (1,) * q.ndim)
    out = jnp.where(has_nan, jnp.nan, out)
    k = len(rest)
    out = jnp.transpose(out, tuple(range(k, k + q.ndim)) + tuple(range(k)))
    if keepdims:
        out = out.reshape(q.shape + tuple(1 if d in axes else x.shape[d] for d in range(nd)))
    return out


@_op("Quantile", float64_constants=True)  # q exactly, as NumPy
def _quantile_op(cfg):
    # Keras's Quantile operation ignores its `method` (Quantile.call does not pass it on;
    # keras.ops.quantile honours it only on concrete tensors): a functional model computes
    # the linear method whatever its config says. Refused rather than guessed.
    method = cfg.get("method", "linear")
    if method != "linear":
        raise _Refused(f"quantile with method={method!r}: Keras's Quantile operation ignores "
                       "the method in a functional model (it computes 'linear'), so the "
                       "file's result depends on the Keras version")
    axis, keepdims = _tuple(cfg.get("axis")), bool(cfg.get("keepdims", False))
    return lambda rt, x, q: _quantile(x, q, axis, "linear", keepdims)


@_op("Percentile", float64_constants=True)  # q exactly, as NumPy
def _percentile(cfg):
    method = cfg.get("method", "linear")
    if method not in _QUANTILE_METHODS:
        raise _Refused(f"percentile method {method!r}; supported: {_QUANTILE_METHODS}")
    axis, keepdims = _tuple(cfg.get("axis")), bool(cfg.get("keepdims", False))

    def f(rt, x, q):
        try:
            q = np.true_divide(np.asarray(q, np.float64), 100)
        except Exception as e:
            raise ValueError("percentile: q must be a constant, not a tensor") from e
        return _quantile(x, q, axis, method, keepdims)
    return f


def _cumulative(fn):
    def make(cfg):
        axis, dtype = cfg.get("axis"), cfg.get("dtype")
        dt = None if dtype is None else jax.dtypes.canonicalize_dtype(jnp.dtype(str(dtype)))

        def f(rt, x):
            x = jnp.asarray(x)
            d = dt if dt is not None else (jnp.int32 if x.dtype == jnp.bool_ else None)
            return fn(x, axis=axis, dtype=d)
        return f
    return make


_op("Cumsum")(_cumulative(jnp.cumsum))
_op("Cumprod")(_cumulative(jnp.cumprod))


@_op("CountNonzero")
def _count_nonzero(cfg):
    axis = _tuple(cfg.get("axis"))
    return lambda rt, x: jnp.count_nonzero(x, axis=axis).astype(jnp.int32)


def _arg_extremum(fn):
    def make(cfg):
        axis, keepdims = cfg.get("axis"), bool(cfg.get("keepdims", False))

        def f(rt, x):
            x = jnp.asarray(x)
            if jnp.issubdtype(x.dtype, jnp.floating) and x.ndim:
                # Keras (NumPy backend; JAX backend on CPU) orders -0.0 below +0.0
                neg_zero = (x == 0.0) & jnp.signbit(x)
                x = jnp.where(neg_zero, -jnp.finfo(x.dtype).tiny, x)
            return fn(x, axis=axis, keepdims=keepdims).astype(jnp.int32)
        return f
    return make


_op("Argmax")(_arg_extremum(jnp.argmax))
_op("Argmin")(_arg_extremum(jnp.argmin))


@_op("TopK", context=True)
def _top_k(cfg, ctx):
    # sorted=False leaves the order to the backend; Keras's JAX backend (like this port)
    # returns the values sorted. Ties: the lower index first (JAX, TensorFlow).
    k = int(cfg["k"])
    if not cfg.get("sorted", True) and ctx.backend != "jax":
        warnings.warn(
            f"layer {ctx.layer_name!r} (ops.TopK): top_k(sorted=False) leaves the order of "
            "the k results to the backend. They are computed as on Keras's JAX backend, "
            "sorted descending (ties: the lower index first); Keras's NumPy backend gives "
            "np.argpartition's order, TensorFlow and PyTorch their own. The same k values "
            "and indices are found; results that read their order (v[:, 0]) can differ "
            "from this file's Keras model"
            + ("" if ctx.backend else "; pass load_keras(..., keras_backend='jax') where "
               "the file was written on JAX"), BackendWarning, stacklevel=2)
    elif cfg.get("sorted", True) and ctx.backend in ("numpy", "torch"):
        warnings.warn(
            f"layer {ctx.layer_name!r} (ops.TopK): this model ran on Keras's "
            f"{dict(numpy='NumPy', torch='PyTorch')[ctx.backend]} backend, whose top_k orders tied values differently (NumPy: the higher index "
            "first; PyTorch: unspecified) from the order computed here, Keras's JAX and "
            "TensorFlow backends' (the lower index first). Values agree; the indices of "
            "tied values may come in another order", BackendWarning, stacklevel=2)

    def f(rt, x):
        v, i = jax.lax.top_k(x, k)
        return v, i.astype(jnp.int32)
    return f


@_op("Sort")
def _sort(cfg):
    axis = cfg.get("axis", -1)
    return lambda rt, x: jnp.sort(x, axis=axis)


@_op("Argsort")
def _argsort(cfg):
    axis = cfg.get("axis", -1)
    return lambda rt, x: jnp.argsort(x, axis=axis if jnp.ndim(x) else None).astype(jnp.int32)


@_op("Argpartition", context=True)
def _argpartition(cfg, ctx):
    # Which elements fall before, at and after position kth is defined (for distinct
    # values); their order inside the two partitions is each backend's own. Keras's JAX
    # backend (jnp.argpartition, followed here) puts the kth + 1 smallest first in ascending
    # order (ties: the lower index first), then the others in index order.
    kth, axis = int(cfg["kth"]), cfg.get("axis", -1)
    if ctx.backend in ("tensorflow", "torch"):
        raise _Refused(f"argpartition on Keras's {ctx.backend} backend partitions x cast to "
                       "int32 (fractions dropped), which the importer does not reproduce; "
                       "it computes Keras's JAX backend's result, for keras_backend='jax'")
    if ctx.backend == "numpy":  # given, or recorded in the file: no other backend to name
        warnings.warn(
            f"layer {ctx.layer_name!r} (ops.Argpartition): this model ran on Keras's NumPy "
            "backend, whose order of the indices inside each partition (np.argpartition's) "
            "can differ from the one computed here, Keras's JAX backend's (the kth + 1 "
            "smallest ascending, then the others by index). The partitions are the same where "
            "the values are distinct: results that read only which indices fall in each "
            "partition (take_along_axis, then a sum or mean of the first kth) agree with this "
            "file's Keras model, the indices' order within the partitions may not",
            BackendWarning, stacklevel=2)
    elif ctx.backend != "jax":
        warnings.warn(
            f"layer {ctx.layer_name!r} (ops.Argpartition): the order of the indices inside "
            "each partition depends on the backend. It is computed as Keras's JAX backend "
            "orders them (the kth + 1 smallest ascending, then the others by index); Keras's "
            "NumPy backend gives np.argpartition's order (the same partitions where the "
            "values are distinct), TensorFlow and PyTorch partition x cast to int32. Results "
            "that read only which indices fall in each partition (take_along_axis, then a "
            "sum or mean of the first kth) agree; pass load_keras(..., keras_backend='jax') "
            "where the file was written on JAX", BackendWarning, stacklevel=2)

    def f(rt, x):
        x = jnp.asarray(x)
        if axis is None:  # as Keras: the flattened array
            return jnp.argpartition(x.reshape(-1), kth, axis=0).astype(jnp.int32)
        return jnp.argpartition(x, kth, axis=int(axis)).astype(jnp.int32)
    return f


@_op("Moments")
def _moments(cfg):
    axes, keepdims = _tuple(cfg.get("axes")), bool(cfg.get("keepdims", False))
    if cfg.get("synchronized"):
        raise _Refused("moments(synchronized=True) (a distributed-training statistic)")

    def f(rt, x):
        x = jnp.asarray(x)
        dt = x.dtype
        low = dt in (jnp.float16, jnp.bfloat16)
        if low:
            x = x.astype(jnp.float32)
        mean = jnp.mean(x, axis=axes, keepdims=keepdims)
        var = jnp.var(x, axis=axes, keepdims=keepdims)
        if low:
            lim = float(jnp.finfo(jnp.float16).max)
            mean = jnp.clip(mean, -lim, lim).astype(dt)
            var = jnp.clip(var, -lim, lim).astype(dt)
        return mean, var
    return f


@_op("Norm")
def _norm(cfg):
    ord_, axis = cfg.get("ord"), _tuple(cfg.get("axis"))
    keepdims = bool(cfg.get("keepdims", False))
    return lambda rt, x: _norm_of(_to_float(x), ord_, axis, keepdims)


def _norm_of(x: jax.Array, ord_, axis, keepdims: bool) -> jax.Array:
    """``jnp.linalg.norm(x, ord_, axis, keepdims)`` (Keras's ``norm`` on JAX; NumPy's
    ``linalg.norm`` on its NumPy backend), whose orders that are a maximum or a minimum -- a
    vector's ``inf``/``-inf`` (the largest/smallest ``|x|``), a matrix's ``1``/``-1`` (the
    largest/smallest column sum of ``|x|``), ``inf``/``-inf`` (row sums) and ``2``/``-2``
    (the largest/smallest singular value, of ``jnp.linalg.norm``'s SVD) -- take it with
    :func:`reduce_max`/:func:`reduce_min`: the same values (``jnp.linalg.norm``'s ``initial=0``
    of the maxima included) and ``jnp.max``'s derivative, ties split, whose term XLA computing
    ``x``'s producer twice cannot drop (``jnp.max``'s lost it for 3 of 12 slices of a vector
    ``inf`` norm, see ``tests/test_pooling.py``). Other orders, non-float ``x`` and an empty
    reduction (no derivative to keep): ``jnp.linalg.norm`` itself."""
    def plain():  # also jnp.linalg.norm's errors (axes out of range, repeated, too many)
        return jnp.linalg.norm(x, ord=ord_, axis=axis, keepdims=keepdims)

    if (not jnp.issubdtype(x.dtype, jnp.floating) or isinstance(ord_, str) or ord_ is None
            or x.size == 0):
        return plain()
    axes = tuple(range(x.ndim)) if axis is None else (
        tuple(axis) if isinstance(axis, tuple) else (axis,))
    if not all(isinstance(a, int) and -x.ndim <= a < x.ndim for a in axes):
        return plain()
    axes = tuple(a % x.ndim for a in axes)
    if len(axes) == 2 and axes[0] != axes[1] and ord_ in (2, -2):
        # the largest (smallest) singular value: jnp.linalg.norm's SVD, then its amax with
        # initial=0 (amin) by reduce_max (reduce_min)
        sv = jnp.linalg.svd(jnp.moveaxis(x, axes, (-2, -1)), compute_uv=False)
        if ord_ > 0:
            y = jnp.maximum(reduce_max(sv, -1), jnp.zeros((), sv.dtype))
        else:
            y = reduce_min(sv, -1)
        return jnp.expand_dims(y, axes) if keepdims else y
    if len(axes) == 1 and ord_ in (np.inf, -np.inf):
        y, reduced = jnp.abs(x), axes[0]
    elif len(axes) == 2 and axes[0] != axes[1] and ord_ in (1, -1, np.inf, -np.inf):
        summed, reduced = axes if ord_ in (1, -1) else axes[::-1]
        y = jnp.sum(jnp.abs(x), axis=summed, keepdims=True)
    else:
        return plain()
    if ord_ > 0:  # jnp.linalg.norm's maxima start from initial=0
        y = jnp.maximum(reduce_max(y, reduced, keepdims=True), jnp.zeros((), y.dtype))
    else:
        y = reduce_min(y, reduced, keepdims=True)
    return y if keepdims else jnp.squeeze(y, axes)


@_op("Normalize")
def _normalize(cfg):
    axis, order = _tuple(cfg.get("axis", -1)), cfg.get("order", 2)
    eps = cfg.get("epsilon")
    eps = _EPSILON if eps is None else float(eps)
    if not isinstance(order, int) or order < 1:
        raise _Refused(f"normalize order must be an int >= 1, got {order!r}")

    def f(rt, x):
        x = jnp.asarray(x)
        if x.ndim == 0:
            x = x[None]
        if order == 2:  # Keras: x * min(rsqrt(sum(x^2)), 1/epsilon)
            return x * inverse_l2_norm(jnp.sum(jnp.square(x), axis=axis, keepdims=True), eps)
        nrm = jnp.linalg.norm(x, ord=order, axis=axis, keepdims=True)
        return x / jnp.maximum(nrm, eps)
    return f


@_op("Ptp")
def _ptp(cfg):
    axis, keepdims = _tuple(cfg.get("axis")), bool(cfg.get("keepdims", False))

    def f(rt, x):  # jnp.ptp's operations, the max and min with reduce_max's derivative
        if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
            return jnp.ptp(x, axis=axis, keepdims=keepdims)
        return jax.lax.sub(reduce_max(x, axis, keepdims), reduce_min(x, axis, keepdims))
    return f


@_op("Trace")
def _trace(cfg):
    offset, a1, a2 = int(cfg.get("offset", 0)), int(cfg.get("axis1", 0)), int(cfg.get("axis2", 1))

    def f(rt, x):
        x = jnp.asarray(x)
        dt = jnp.int32 if x.dtype in (jnp.bool_, jnp.int8, jnp.int16) else None
        return jnp.trace(x, offset=offset, axis1=a1, axis2=a2, dtype=dt)
    return f


# ------------------------------------------------------------------ shapes and indexing
@_op("Moveaxis")
def _moveaxis(cfg):
    src, dst = _tuple(cfg["source"]), _tuple(cfg["destination"])
    return lambda rt, x: jnp.moveaxis(x, src, dst)


@_op("Swapaxes")
def _swapaxes(cfg):
    a1, a2 = int(cfg["axis1"]), int(cfg["axis2"])
    return lambda rt, x: jnp.swapaxes(x, a1, a2)


@_op("BroadcastTo")
def _broadcast_to(cfg):
    shape = _tuple(cfg["shape"])

    def f(rt, x):
        x = jnp.asarray(x)
        if (x.ndim == len(shape) and x.ndim and x.shape[0] not in (1, shape[0])
                and _broadcasts((1, *x.shape[1:]), shape)):
            raise ValueError(_batch_broadcast_error(x.shape, shape))
        return jnp.broadcast_to(x, shape)
    return f


def _broadcasts(shape: tuple[int, ...], to: tuple[int, ...]) -> bool:
    """Whether an array of ``shape`` broadcasts to ``to`` (NumPy's rule)."""
    try:
        return np.broadcast_shapes(shape, to) == tuple(to)
    except ValueError:
        return False


def _batch_broadcast_error(shape: tuple[int, ...], to: tuple[int, ...]) -> str:
    """What a ``broadcast_to`` of an input of ``shape`` to ``to`` that fails along axis 0
    alone means: a fixed extent along the batch axis (``keras.ops.broadcast_to(x, (8, 3))``
    on a model input), which Keras runs only on batches of 1 or ``to[0]`` examples."""
    n = to[0]
    return (f"it broadcasts axis 0, of {shape[0]} entries, to {n} (shape {tuple(shape)} to "
            f"{tuple(to)}; expected 1 or {n} entries). Where axis 0 is the batch axis (an "
            f"operation on a model input or on a layer's output), Keras runs broadcast_to only "
            f"on batches of 1 or {n} examples, and its output holds {n} examples whatever the "
            "batch; jaxsal runs every batch size and traces the model on a batch of one, then "
            "of two where an output's axis 0 is not 1. Broadcast the examples' axes only "
            "instead, by arithmetic with a constant that has no batch axis (x + "
            "keras.ops.zeros((4, 3)) takes (batch, 1, 3) to (batch, 4, 3)), save the model "
            "again and load that")


@_op("Take")
def _take(cfg):
    # out-of-range indices: Keras's JAX backend (jnp.take) fills with NaN, NumPy raises
    axis = cfg.get("axis")
    return lambda rt, x, indices: jnp.take(x, jnp.asarray(indices), axis=axis)


@_op("TakeAlongAxis")
def _take_along_axis(cfg):
    axis = cfg.get("axis")
    return lambda rt, x, indices: jnp.take_along_axis(x, jnp.asarray(indices), axis=axis)


def _start_indices(op: str, start_indices: Any, rank: int) -> tuple[int | jax.Array, ...]:
    """``slice``/``slice_update``'s ``start_indices``, one start per axis of a rank-``rank``
    input: a list of ints and scalar tensors (``[0, s - 2, 0]``) or a tensor of shape
    ``(rank,)``. Ints (and NumPy constants) stay ints; a tensor start becomes an int32 scalar
    (``lax.dynamic_slice`` and ``dynamic_update_slice`` take a mix). JAX counts a negative
    start from the end and clamps a start so that the window fits, as Keras's JAX backend
    does (its NumPy backend raises past the end and wraps the window of a negative start)."""
    if isinstance(start_indices, (list, tuple)):
        entries = list(start_indices)
    else:
        arr = start_indices if isinstance(start_indices, jax.Array) else np.asarray(
            start_indices)
        entries = [arr[i] for i in range(arr.shape[0])] if arr.ndim == 1 else None
    if entries is None or len(entries) != rank:
        got = (f"{len(entries)} of them" if entries is not None else
               f"shape {jnp.shape(start_indices)}")
        raise ValueError(f"{op}: expected one start index per axis of the input (rank {rank}), "
                         f"as a list of ints or scalar tensors or a tensor of shape ({rank},), "
                         f"got {got}")
    starts: list[int | jax.Array] = []
    for i, s in enumerate(entries):
        if isinstance(s, (np.ndarray, np.generic)) and s.ndim == 0 and np.issubdtype(
                s.dtype, np.integer):
            s = int(s)
        if isinstance(s, int) and not isinstance(s, bool):
            starts.append(s)
            continue
        s = jnp.asarray(s)
        if s.ndim or not jnp.issubdtype(s.dtype, jnp.integer):
            raise ValueError(f"{op}: expected an integer scalar start along axis {i}, got "
                             f"{s.dtype} of shape {s.shape}; cast it with "
                             f"keras.ops.cast(..., 'int32') and save the model again")
        starts.append(s.astype(jnp.int32))
    return tuple(starts)


@_op("Slice")
def _slice(cfg):
    # Keras's JAX backend: jax.lax.dynamic_slice, whose starts (ints or tensors) count from
    # the end where negative and are clamped so that the slice fits (_start_indices)
    shape = _tuple(cfg["shape"])

    def f(rt, x, start_indices):
        x = jnp.asarray(x)
        starts = _start_indices("slice", start_indices, x.ndim)
        if len(shape) != x.ndim:
            raise ValueError(f"slice: expected a shape of {x.ndim} entries (the input's "
                             f"rank), got {shape}")
        size = []
        for i, (s, n) in enumerate(zip(starts, shape)):
            if n == -1 and not isinstance(s, int):
                raise ValueError(f"slice: size -1 along axis {i} (to the end) needs a constant "
                                 "start there, got a tensor (Keras builds no such model: its "
                                 "output shape is unknown); give that axis's size and save the "
                                 "model again")
            size.append(x.shape[i] - s if n == -1 else n)
        if x.ndim and size[0] > x.shape[0]:
            raise ValueError(_batch_extent_error("slice", x.shape, starts, size))
        return jax.lax.dynamic_slice(x, starts, size)
    return f


def _batch_extent_error(op: str, shape: tuple[int, ...], starts: tuple[int | jax.Array, ...],
                        size: tuple[int, ...] | list[int]) -> str:
    """What a ``slice`` (``op``), or a ``slice_update`` with updates, of more entries along
    axis 0 than the input (of ``shape``) has means: a fixed extent along the batch axis
    (``keras.ops.slice(x, [0, 1, 2], [3, 2, 2])`` on a model input), which Keras runs only on
    batches that hold it. ``starts``: one per axis (ints, or tensors); ``size``: the slice's
    extent (the updates' shape) per axis. The indexing that works at every batch size is
    suggested only where every start is an int."""
    n, start = size[0], starts[0]
    need = start + n if isinstance(start, int) else n  # JAX clamps a tensor start
    fixed = all(isinstance(s, int) for s in starts)
    idx = ", ".join(":" if i == 0 else f"{s}:{s + k}"
                    for i, (s, k) in enumerate(zip(starts, size)))
    if op == "slice":
        does, keeps = (f"it takes {n} entries", f"its output keeps {n} of them whatever the "
                                                "batch")
        fix = (f"Index the examples' part instead, x[{idx}] (every batch size, every "
               "backend)" if fixed else
               "Slice every example instead (start 0 and size -1 along axis 0)")
    else:
        does, keeps = (f"its updates hold {n} entries",
                       f"it overwrites those {n} examples whatever the batch")
        fix = ("Give the updates axis 0 as long as the batch instead, computed from the model's "
               "input" + (f" (keras.ops.zeros_like(x[{idx}]) for zeros)" if fixed else ""))
    return (f"{does} along axis 0, which has {shape[0]}. Where axis 0 is the batch axis (an "
            f"operation on a model input or on a layer's output), Keras runs {op} only on "
            f"batches of at least {need} examples, and {keeps}; jaxsal runs every batch size "
            f"and traces the model on a batch of one. {fix}, save the model again and load "
            "that")


def _scatter_indices(op: str, indices: Any, rank: int, forms: str, ndims: tuple[int, ...] | None,
                     of: str) -> jax.Array:
    """``scatter``/``scatter_update``'s (``op``) integer ``indices``, each row of the last
    axis one index of ``k <= rank`` coordinates, checked: ``ndims`` the accepted numbers of
    axes (``None``: any, at least one), ``forms`` their shapes and ``of`` what ``rank`` is,
    for the message."""
    idx = jnp.asarray(indices)
    if not (jnp.issubdtype(idx.dtype, jnp.integer) and idx.ndim >= 1
            and (ndims is None or idx.ndim in ndims) and idx.shape[-1] <= rank):
        raise ValueError(f"{op}: expected integer indices of shape {forms} with k <= {rank} "
                         f"({of}), got {idx.dtype} {idx.shape}")
    return idx


_SCATTER_REDUCTIONS = {"add": "add", "max": "max", "min": "min", "mul": "multiply"}


@_op("ScatterUpdate")
def _scatter_update(cfg):
    # Keras's JAX backend: inputs.at[indices].set/add/max/min/multiply(updates); indices out
    # of range are dropped (Keras's NumPy backend raises), negative ones count from the end.
    # Without a reduction Keras documents "last write wins" for repeated indices, which
    # JAX's scatter leaves unspecified: the last update of each index is picked explicitly.
    reduction = cfg.get("reduction")
    if reduction is not None and str(reduction).lower() not in _SCATTER_REDUCTIONS:
        raise _Refused(f"scatter_update reduction {reduction!r}; supported: None, "
                       f"{sorted(_SCATTER_REDUCTIONS)}")
    method = None if reduction is None else _SCATTER_REDUCTIONS[str(reduction).lower()]

    def f(rt, inputs, indices, updates):
        x = jnp.asarray(inputs)
        idx = _scatter_indices("scatter_update", indices, x.ndim,
                               "(k,) (one index) or (N, k) (N of them)", (1, 2),
                               "the input's rank")
        k = idx.shape[-1]
        idx = idx.reshape(-1, k)  # Keras: (k,) is one index, (N, k) indices read by rows
        key, n = tuple(idx.T), idx.shape[0]
        upd = jnp.broadcast_to(jnp.asarray(updates).astype(x.dtype), (n,) + x.shape[k:])
        if method is not None:
            return getattr(x.at[key], method)(upd, mode="drop")
        last = jnp.full(x.shape[:k], -1, jnp.int32).at[key].max(
            jnp.arange(n, dtype=jnp.int32), mode="drop")  # the last update of each index
        hit = (last >= 0).reshape(last.shape + (1,) * (x.ndim - k))
        return jnp.where(hit, upd[jnp.maximum(last, 0)], x)
    return f


@_op("Scatter")
def _scatter(cfg):
    # Keras: zeros of `shape` (the values' dtype) with each value added at its index, so
    # repeated indices sum; indices (..., k), values (..., *shape[k:]). Values that broadcast
    # to that shape are broadcast, as on Keras's JAX backend (its NumPy backend raises);
    # values of that size in another shape are reshaped, as on the NumPy backend (JAX raises)
    shape = tuple(int(n) for n in cfg["shape"])

    def f(rt, indices, values):
        v = jnp.asarray(values)
        idx = _scatter_indices("scatter", indices, len(shape), "(..., k)", None,
                               f"the rank of shape={shape}")
        k = idx.shape[-1]
        want = idx.shape[:-1] + shape[k:]
        try:
            v = jnp.broadcast_to(v, want)
        except ValueError:
            if v.size != int(np.prod(want)):
                raise ValueError(f"scatter: expected values of shape {want} (the indices' "
                                 f"{idx.shape[:-1]}, then shape[{k}:]) or broadcastable to "
                                 f"it, got {v.shape}") from None
        idx, v = idx.reshape(-1, k), v.reshape((-1,) + shape[k:])
        return jnp.zeros(shape, v.dtype).at[tuple(idx.T)].add(v, mode="drop")
    return f


@_op("SliceUpdate")
def _slice_update(cfg):
    # Keras's JAX backend: jax.lax.dynamic_update_slice, whose start indices are clamped so
    # that the update fits (Keras's NumPy backend raises there, or wraps a negative start);
    # updates take the input's dtype, as NumPy's assignment casts them
    def f(rt, inputs, start_indices, updates):
        x = jnp.asarray(inputs)
        upd = jnp.asarray(updates).astype(x.dtype)
        starts = _start_indices("slice_update", start_indices, x.ndim)
        if upd.ndim != x.ndim or any(u > d for u, d in zip(upd.shape[1:], x.shape[1:])):
            raise ValueError(f"slice_update: expected updates of the input's rank {x.ndim} and "
                             f"no larger than its shape {x.shape} along any axis, got "
                             f"{upd.shape}")
        if x.ndim and upd.shape[0] > x.shape[0]:
            raise ValueError(_batch_extent_error("slice_update", x.shape, starts, upd.shape))
        return jax.lax.dynamic_update_slice(x, upd, starts)
    return f


def _sections(v):
    return list(v) if isinstance(v, (list, tuple)) else int(v)


@_op("Split")
def _split(cfg):
    ios, axis = _sections(cfg["indices_or_sections"]), int(cfg.get("axis", 0))
    return lambda rt, x: tuple(jnp.split(x, ios, axis=axis))


@_op("ArraySplit")
def _array_split(cfg):
    ios, axis = _sections(cfg["indices_or_sections"]), int(cfg.get("axis", 0))
    return lambda rt, x: tuple(jnp.array_split(x, ios, axis=axis))


for _name, _fn in [("Hsplit", jnp.hsplit), ("Vsplit", jnp.vsplit), ("Dsplit", jnp.dsplit)]:
    _op(_name)(lambda cfg, fn=_fn: (lambda rt, x, ios=_sections(cfg["indices_or_sections"]):
                                    tuple(fn(x, ios))))


@_op("Unstack")
def _unstack(cfg):
    axis = int(cfg.get("axis", 0))
    return lambda rt, x: tuple(jnp.moveaxis(x, axis, 0))


_PAD_MODES = ("constant", "edge", "reflect", "symmetric", "wrap")


@_op("Pad", context=True)
def _pad(cfg, ctx):
    pad_width, mode = _tuple(cfg["pad_width"]), cfg.get("mode", "constant")
    if mode not in _PAD_MODES:
        raise _Refused(f"pad mode {mode!r}; supported: {_PAD_MODES}")
    if mode == "symmetric" and max(np.ravel(pad_width), default=0) >= 2:
        if ctx.backend == "torch":  # Keras on PyTorch pads "symmetric" as "replicate"
            mode = "edge"
        else:
            ctx.backend_dependent("symmetric padding by 2 or more: Keras on PyTorch repeats "
                                  "the edge instead")

    def f(rt, x, constant_values=None):
        if constant_values is not None and mode != "constant":
            raise ValueError("constant_values needs mode='constant'")
        if len(pad_width) > 1 and len(pad_width) != x.ndim:
            raise ValueError(f"pad_width {pad_width} does not match the rank of {x.shape}")
        kw = {} if constant_values is None else {"constant_values": constant_values}
        return jnp.pad(x, pad_width, mode=mode, **kw)
    return f


@_op("Roll")
def _roll(cfg):
    shift, axis = _tuple(cfg["shift"]), _tuple(cfg.get("axis"))
    return lambda rt, x: jnp.roll(x, shift, axis=axis)


@_op("Tril")
def _tril(cfg):
    k = int(cfg.get("k", 0))
    return lambda rt, x: jnp.tril(x, k)


@_op("Triu")
def _triu(cfg):
    k = int(cfg.get("k", 0))
    return lambda rt, x: jnp.triu(x, k)


@_op("Diagonal")
def _diagonal(cfg):
    o, a1, a2 = int(cfg.get("offset", 0)), int(cfg.get("axis1", 0)), int(cfg.get("axis2", 1))
    return lambda rt, x: jnp.diagonal(x, offset=o, axis1=a1, axis2=a2)


@_op("Diag")
def _diag(cfg):
    k = int(cfg.get("k", 0))
    return lambda rt, x: jnp.diag(x, k)


@_op("Einsum")
def _einsum(cfg):
    sub = cfg["subscripts"]

    def f(rt, *operands, **kw):
        kw.pop("optimize", None)  # a contraction-order hint
        if kw:
            raise ValueError(f"einsum: unsupported arguments {sorted(kw)}")
        return jnp.einsum(sub, *operands, **_int8_accumulator(*operands))
    return f


@_op("Tensordot")
def _tensordot(cfg):
    axes = _tuple(cfg.get("axes", 2))
    return lambda rt, a, b: jnp.tensordot(a, b, axes=axes)


@_op("Cross")
def _cross(cfg):
    axis = cfg.get("axis")
    a, b, c = ((axis,) * 3 if axis is not None else
               (cfg.get("axisa", -1), cfg.get("axisb", -1), cfg.get("axisc", -1)))
    return lambda rt, x1, x2: jnp.cross(x1, x2, axisa=a, axisb=b, axisc=c)


@_op("Append")
def _append(cfg):
    axis = cfg.get("axis")
    return lambda rt, a, b: jnp.append(a, b, axis=axis)


@_op("Rot90")
def _rot90(cfg):
    k, axes = int(cfg.get("k", 1)), _tuple(cfg.get("axes", (0, 1)))
    return lambda rt, x: jnp.rot90(x, k, axes=axes)


def _dtype_of(cfg):
    dt = cfg.get("dtype")
    if isinstance(dt, dict):
        dt = (dt.get("config") or {}).get("name")
    return None if dt is None else jax.dtypes.canonicalize_dtype(jnp.dtype(str(dt)))


@_op("Full")
def _full(cfg):
    shape, dt = _tuple(cfg["shape"]), _dtype_of(cfg)
    return lambda rt, fill_value: jnp.full(shape, fill_value, dt or _FLOATX)


@_op("FullLike")
def _full_like(cfg):
    dt = _dtype_of(cfg)
    return lambda rt, x, fill_value: jnp.full_like(x, fill_value, dtype=dt)


@_op("Linspace")
def _linspace(cfg):
    if cfg.get("retstep"):
        raise _Refused("linspace(retstep=True)")
    num, endpoint = int(cfg.get("num", 50)), bool(cfg.get("endpoint", True))
    axis, dt = int(cfg.get("axis", 0)), _dtype_of(cfg)

    def f(rt, start, stop):
        if dt is None:
            d = _float_dtype(jnp.result_type(jnp.asarray(start), jnp.asarray(stop)))
        else:
            d = dt
        return jnp.linspace(start, stop, num, endpoint=endpoint, dtype=d, axis=axis)
    return f


# ------------------------------------------------------------------ nn
@_op("OneHot")
def _one_hot(cfg):
    if cfg.get("sparse"):
        raise _Refused("one_hot(sparse=True)")
    n, axis, dt = int(cfg["num_classes"]), int(cfg.get("axis", -1)), _dtype_of(cfg)
    return lambda rt, x: jax.nn.one_hot(x, n, axis=axis, dtype=dt or _FLOATX)


@_op("MultiHot")
def _multi_hot(cfg):
    if cfg.get("sparse"):
        raise _Refused("multi_hot(sparse=True)")
    if cfg.get("num_classes") is None:
        raise _Refused("multi_hot without num_classes (a data-dependent shape)")
    n, axis, dt = int(cfg["num_classes"]), int(cfg.get("axis", -1)), _dtype_of(cfg)

    def f(rt, x):
        oh = jax.nn.one_hot(jnp.asarray(x).astype(jnp.int32), n, axis=axis,
                            dtype=dt or _FLOATX)
        return jnp.max(oh, axis=1 if jnp.ndim(x) > 1 else 0)
    return f


@_op("DotProductAttention", mask_call=True, compute_mask="drop")
def _dot_product_attention(cfg):
    # query/key/value (B, T|S, heads, H); bias and mask broadcast to (B, heads, T, S).
    # Masked positions get -0.7 * finfo.max, as in Keras's backends: a row masked entirely
    # attends uniformly to every key.
    if cfg.get("attn_logits_soft_cap") is not None:
        raise _Refused("dot_product_attention(attn_logits_soft_cap=...): Keras's JAX and NumPy "
                       "backends ignore it off TPU, so the file's result depends on the backend")
    causal = bool(cfg.get("is_causal", False))

    def f(rt, query, key, value, bias=None, scale=None, mask=None):
        q, k, v = (jnp.asarray(t) for t in (query, key, value))
        if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
            raise ValueError("dot_product_attention takes 4D query, key and value")
        dt = jnp.result_type(q, k, v)
        q, k, v = q.astype(dt), k.astype(dt), v.astype(dt)
        n, kh = q.shape[2], k.shape[2]
        if n % kh:
            raise ValueError(f"{n} query heads cannot be grouped over {kh} key heads")
        if kh != n:  # grouped-query attention: query head h reads key/value head h // G
            k, v = jnp.repeat(k, n // kh, axis=2), jnp.repeat(v, n // kh, axis=2)
        s = 1.0 / np.sqrt(k.shape[-1]) if scale is None else scale
        ldt = jnp.promote_types(dt, jnp.float32)
        logits = rt.product_of(lambda a, b: jnp.einsum("BTNH,BSNH->BNTS", a, b,
                                                        preferred_element_type=ldt), q, k)
        logits = logits * jnp.asarray(s, ldt)
        if bias is not None:
            logits = (logits + jnp.asarray(bias, dt)).astype(ldt)
        if mask is not None or causal:
            keep = jnp.ones(logits.shape, bool)
            if mask is not None:
                keep = keep & (jnp.asarray(mask) != 0)
            if causal:
                t_, s_ = logits.shape[2], logits.shape[3]
                keep = keep & jnp.tril(jnp.ones((t_, s_), bool))[None, None]
            logits = jnp.where(keep, logits, jnp.asarray(-0.7 * jnp.finfo(ldt).max, ldt))
        probs = rt.softmax_of(logits.astype(jnp.float32), -1).astype(k.dtype)
        return rt.product_of(lambda a, b: jnp.einsum("BNTS,BSNH->BTNH", a, b), probs, v)
    return f


def _norm_axes(axis, ndim):
    axes = [axis] if isinstance(axis, int) else list(axis)
    return sorted(a % ndim for a in axes)


@_op("LayerNorm")
def _layer_norm(cfg):
    axis, rms = _tuple(cfg.get("axis", -1)), bool(cfg.get("rms_scaling", False))
    eps = cfg.get("epsilon")
    eps = _EPSILON if eps is None else float(eps)

    def f(rt, x, gamma=None, beta=None):
        x = jnp.asarray(x)
        dt = x.dtype
        x = x.astype(jnp.promote_types(dt, jnp.float32))
        axes = _norm_axes(axis, x.ndim)
        bshape = [1] * x.ndim
        for a in axes:
            bshape[a] = x.shape[a]

        def bc(p):
            if p is None:
                return None
            p = jnp.asarray(p, x.dtype)
            if p.ndim != x.ndim and axes != [x.ndim - 1]:
                p = p.reshape(bshape)
            return p

        if rms:
            y = x * jax.lax.rsqrt(jnp.var(x, axis=axes, keepdims=True) + eps)
            if gamma is not None:
                y = y * bc(gamma)
        else:
            mean = jnp.mean(x, axis=axes, keepdims=True)
            var = jnp.var(x, axis=axes, keepdims=True)
            inv = jax.lax.rsqrt(var + eps)
            if gamma is not None:
                inv = inv * bc(gamma)
            res = -mean * inv
            if beta is not None:
                res = res + bc(beta)
            y = x * inv + res
        return y.astype(dt)
    return f


@_op("RMSNorm")
def _rms_norm(cfg):
    axis = _tuple(cfg.get("axis", -1))
    eps = cfg.get("epsilon")
    eps = _EPSILON if eps is None else float(eps)

    def f(rt, x, scale=None):
        x = jnp.asarray(x)
        dt = x.dtype
        x = x.astype(jnp.promote_types(dt, jnp.float32))
        if x.ndim == 0:
            x = x[None]
        ax = tuple(sorted(axis)) if isinstance(axis, tuple) else axis
        y = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=ax, keepdims=True) + eps)
        if scale is not None:
            y = y * jnp.asarray(scale, x.dtype)
        return y.astype(dt)
    return f


@_op("DepthToSpace", layout=True)
def _depth_to_space(cfg):
    b, fmt = int(cfg["block_size"]), _data_format(cfg)

    def f(rt, x):
        if fmt == "channels_last":
            n, h, w, c = x.shape
            x = x.reshape(n, h, w, b, b, c // (b * b)).transpose(0, 1, 3, 2, 4, 5)
            return x.reshape(n, h * b, w * b, c // (b * b))
        n, c, h, w = x.shape
        x = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
        return x.reshape(n, c // (b * b), h * b, w * b)
    return f


@_op("SpaceToDepth", layout=True)
def _space_to_depth(cfg):
    b, fmt = int(cfg["block_size"]), _data_format(cfg)

    def f(rt, x):
        if fmt == "channels_last":
            n, h, w, c = x.shape
            x = x.reshape(n, h // b, b, w // b, b, c).transpose(0, 1, 3, 2, 4, 5)
            return x.reshape(n, h // b, w // b, c * b * b)
        n, c, h, w = x.shape
        x = x.reshape(n, c, h // b, b, w // b, b).transpose(0, 1, 3, 5, 2, 4)
        return x.reshape(n, c * b * b, h // b, w // b)
    return f


# ------------------------------------------------------------------ image
_RESIZE_METHODS = ("bilinear", "nearest", "bicubic", "lanczos3", "lanczos5", "area")


@_op("Resize", layout=True, context=True)
def _resize(cfg, ctx):
    # Keras's JAX backend is jax.image.resize, and its NumPy backend a port of it: those
    # are the semantics here, but for bicubic without antialiasing on TensorFlow/PyTorch
    size = tuple(int(s) for s in cfg["size"])
    method = cfg.get("interpolation", "bilinear")
    antialias = bool(cfg.get("antialias", False))
    crop, pad = bool(cfg.get("crop_to_aspect_ratio")), bool(cfg.get("pad_to_aspect_ratio"))
    fill_value = float(cfg.get("fill_value", 0.0) or 0.0)
    fmt = _data_format(cfg)
    if method not in _RESIZE_METHODS:
        raise _Refused(f"resize interpolation {method!r}; supported: {_RESIZE_METHODS}")
    if cfg.get("fill_mode", "constant") != "constant":
        raise _Refused(f"resize fill_mode {cfg.get('fill_mode')!r} (Keras supports 'constant')")
    if crop and pad:
        raise _Refused("resize with both crop_to_aspect_ratio and pad_to_aspect_ratio")
    th, tw = size
    backend = None
    if method == "bicubic" and not antialias:
        ctx.backend_dependent(BICUBIC_BACKENDS)
        backend = ctx.backend if ctx.backend in ("tensorflow", "torch") else None

    def f(rt, images):
        x = jnp.asarray(images)
        dt = x.dtype
        hax = x.ndim - 3 if fmt == "channels_last" else x.ndim - 2
        h, w = x.shape[hax], x.shape[hax + 1]
        if crop:
            h0, w0, ch, cw = aspect_crop_box(h, w, th, tw)
            x = jax.lax.slice_in_dim(x, h0, h0 + ch, axis=hax)
            x = jax.lax.slice_in_dim(x, w0, w0 + cw, axis=hax + 1)
        elif pad:  # as Keras: one axis, the same amount on both sides
            if not jnp.issubdtype(x.dtype, jnp.floating):  # Keras pads it in float, then
                x = x.astype(jnp.float32)  # rounds and saturates back (below)
            hs, ws = aspect_pads(h, w, th, tw)
            widths = [(0, 0)] * x.ndim
            widths[hax], widths[hax + 1] = (hs, hs), (ws, ws)
            x = jnp.pad(x, widths, constant_values=fill_value)
        if backend is not None or method == "area":  # "area": TensorFlow's (the only one)
            y = resize_axes(x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(
                jnp.float32), (hax, hax + 1), (th, tw), method, False, backend)
        else:
            shape = list(x.shape)
            shape[hax], shape[hax + 1] = th, tw
            y = jax.image.resize(x, tuple(shape), method=method, antialias=antialias)
        if y.dtype != dt:  # Keras: integers rounded, then saturate_cast
            y = round_saturate(y, dt) if jnp.issubdtype(dt, jnp.integer) else y.astype(dt)
        return y
    return f


@_op("ExtractPatches", layout=True)
def _extract_patches(cfg):
    size = cfg["size"]
    size = (size,) * 2 if isinstance(size, int) else tuple(size)
    nd = len(size)
    if nd not in (2, 3):
        raise _Refused(f"extract_patches size {size!r}")
    strides = cfg.get("strides") or size
    strides = (strides,) * nd if isinstance(strides, int) else tuple(strides)
    dil = cfg.get("dilation_rate", 1)
    dil = (dil,) * nd if isinstance(dil, int) else tuple(dil)
    padding = str(cfg.get("padding", "valid")).upper()
    if padding not in ("VALID", "SAME"):
        raise _Refused(f"extract_patches padding {padding!r}")
    fmt = _data_format(cfg)
    sp = "DHW"[-nd:]

    def f(rt, images):
        x = jnp.asarray(images)
        unbatched = x.ndim == nd + 1
        if unbatched:
            x = x[None]
        c = x.shape[-1] if fmt == "channels_last" else x.shape[1]
        out = int(np.prod(size)) * c
        # Keras convolves with an identity kernel (patch order: rows, columns, channels)
        kernel = jnp.eye(out, dtype=x.dtype).reshape(size + (c, out))
        dn = (("N" + sp + "C") if fmt == "channels_last" else ("NC" + sp), sp + "IO",
              ("N" + sp + "C") if fmt == "channels_last" else ("NC" + sp))
        y = jax.lax.conv_general_dilated(x, kernel, strides, padding, rhs_dilation=dil,
                                         dimension_numbers=dn,
                                         precision=jax.lax.Precision.HIGHEST)
        return y[0] if unbatched else y
    return f


@_op("RGBToGrayscale", layout=True)
def _rgb_to_grayscale(cfg):
    fmt = _data_format(cfg)

    def f(rt, images):
        x = jnp.asarray(images)
        cax = -1 if fmt == "channels_last" else -3
        if x.shape[cax] == 1:
            return x
        if x.shape[cax] != 3:
            raise ValueError(f"rgb_to_grayscale takes 1 or 3 channels, got {x.shape}")
        dt = x.dtype
        xf = _to_float(x)
        w = jnp.asarray([0.2989, 0.5870, 0.1140], xf.dtype)
        y = jnp.tensordot(xf, w, axes=((x.ndim + cax,), (0,)))
        return jnp.expand_dims(y, cax).astype(dt)
    return f


def _image_hw(x, fmt):
    return (x.shape[-3], x.shape[-2]) if fmt == "channels_last" else (x.shape[-2], x.shape[-1])


@_op("PadImages", layout=True)
def _pad_images(cfg):
    fmt = _data_format(cfg)
    top, left, bottom, right = (cfg.get(k) for k in ("top_padding", "left_padding",
                                                     "bottom_padding", "right_padding"))
    th, tw = cfg.get("target_height"), cfg.get("target_width")

    def f(rt, images):
        x = jnp.asarray(images)
        h, w = _image_hw(x, fmt)
        t = th - bottom - h if top is None else top
        b = th - t - h if bottom is None else bottom
        lft = tw - right - w if left is None else left
        r = tw - lft - w if right is None else right
        if min(t, b, lft, r) < 0:
            raise ValueError(f"pad_images: negative padding for an image of shape {x.shape}")
        widths = [(t, b), (lft, r)]
        widths = widths + [(0, 0)] if fmt == "channels_last" else [(0, 0)] + widths
        widths = [(0, 0)] * (x.ndim - 3) + widths
        return jnp.pad(x, widths)
    return f


@_op("CropImages", layout=True)
def _crop_images(cfg):
    fmt = _data_format(cfg)
    top, left, bottom, right = (cfg.get(k) for k in ("top_cropping", "left_cropping",
                                                     "bottom_cropping", "right_cropping"))
    th, tw = cfg.get("target_height"), cfg.get("target_width")

    def f(rt, images):
        x = jnp.asarray(images)
        h, w = _image_hw(x, fmt)
        t = h - th - bottom if top is None else top
        hh = h - bottom - t if th is None else th
        lft = w - tw - right if left is None else left
        ww = w - right - lft if tw is None else tw
        if min(t, hh, lft, ww) < 0 or t + hh > h or lft + ww > w:
            raise ValueError(f"crop_images: the crop does not fit an image of shape {x.shape}")
        hax = x.ndim - 3 if fmt == "channels_last" else x.ndim - 2
        x = jax.lax.slice_in_dim(x, t, t + hh, axis=hax)
        return jax.lax.slice_in_dim(x, lft, lft + ww, axis=hax + 1)
    return f


# ------------------------------------------------------------------ a few more
for _names, _fn in [
    (("Deg2rad",), jnp.deg2rad), (("Rad2deg",), jnp.rad2deg),
    (("Logaddexp2",), jnp.logaddexp2), (("Signbit",), jnp.signbit),
    (("Isneginf",), jnp.isneginf), (("Isposinf",), jnp.isposinf),
    (("Copy",), jnp.asarray), (("Fmax",), jnp.fmax), (("Fmin",), jnp.fmin),
]:
    _simple(_names, _fn)


@_op("Diff")
def _diff(cfg):
    n, axis = int(cfg.get("n", 1)), int(cfg.get("axis", -1))
    return lambda rt, a: jnp.diff(a, n=n, axis=axis)


@_op("Isclose")
def _isclose(cfg):
    equal_nan = bool(cfg.get("equal_nan", False))
    return lambda rt, a, b, rtol=1e-5, atol=1e-8: jnp.isclose(a, b, rtol, atol, equal_nan)


@_op("Select")
def _select(cfg):
    return lambda rt, condlist, choicelist, default=0: jnp.select(
        list(condlist), list(choicelist), default)


def _nan_reduction(fn, int_sum=False):
    def make(cfg):
        axis, keepdims = _tuple(cfg.get("axis")), bool(cfg.get("keepdims", False))

        def f(rt, x):
            x = jnp.asarray(x)
            if fn is jnp.nanmean:
                x = _to_float(x)
            dt = (jnp.int32 if int_sum and x.dtype in (jnp.bool_, jnp.int8, jnp.int16)
                  else None)
            kw = {"dtype": dt} if int_sum else {}
            return fn(x, axis=axis, keepdims=keepdims, **kw)
        return f
    return make


_op("Nansum")(_nan_reduction(jnp.nansum, int_sum=True))
_op("Nanmean")(_nan_reduction(jnp.nanmean))


def _nan_extremum(kind: str):
    """``ops.nanmax`` (``kind="max"``) / ``ops.nanmin`` of a float ``x``: ``jnp.nanmax``'s
    operations, so its values -- NaNs replaced by ``-inf`` (``+inf``), the maximum, NaN for a
    slice of NaNs only (NumPy's ``nanmax``, which Keras's NumPy backend calls, gives NaN
    there too, with a RuntimeWarning) -- with the maximum taken by :func:`reduce_max`
    (:func:`reduce_min`): ``jnp.max``'s derivative, ties split, which XLA computing ``x``'s
    producer twice cannot drop. Protective: no dropped term of ``jnp.nanmax`` was found (see
    README). An all-NaN slice passes no gradient, as with ``jnp.nanmax``. Other dtypes:
    ``jnp.nanmax`` (``jnp.nanmin``) itself."""
    reduce, plain = (reduce_max, jnp.nanmax) if kind == "max" else (reduce_min, jnp.nanmin)
    fill = -np.inf if kind == "max" else np.inf

    def make(cfg):
        axis, keepdims = _tuple(cfg.get("axis")), bool(cfg.get("keepdims", False))

        def f(rt, x):
            x = jnp.asarray(x)
            if not jnp.issubdtype(x.dtype, jnp.floating):
                return plain(x, axis=axis, keepdims=keepdims)
            nan = jnp.isnan(x)
            y = reduce(jnp.where(nan, jnp.asarray(fill, x.dtype), x), axis, keepdims)
            return jnp.where(jnp.all(nan, axis=axis, keepdims=keepdims),
                             jnp.asarray(np.nan, x.dtype), y)
        return f
    return make


_op("Nanmax")(_nan_extremum("max"))
_op("Nanmin")(_nan_extremum("min"))


@_op("SaturateCast")
def _saturate_cast(cfg):
    dt = _dtype_of(cfg)
    if dt is None:
        raise _Refused("a saturate_cast without dtype")

    def limits(d):
        d = np.dtype(d)
        if d == np.bool_:
            return 0, 1
        info = jnp.iinfo(d) if jnp.issubdtype(d, jnp.integer) else jnp.finfo(d)
        return info.min, info.max

    def f(rt, x):  # Keras's _saturate_cast: clip to limits representable in x's dtype
        x = jnp.asarray(x)
        ind = np.dtype(x.dtype)
        (in_min, in_max), (out_min, out_max) = limits(ind), limits(dt)
        lo = np.asarray(np.maximum(in_min, out_min)).astype(ind)
        if lo < out_min:
            lo = np.nextafter(lo, 0, dtype=ind)
        hi = np.asarray(np.minimum(in_max, out_max)).astype(ind)
        if hi > out_max:
            hi = np.nextafter(hi, 0, dtype=ind)
        return jnp.clip(x, lo, hi).astype(dt)
    return f
