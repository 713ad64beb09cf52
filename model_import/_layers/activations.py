"""Keras activation functions (by name) and the activation layers.

Every activation string Keras 2 and Keras 3 accept is resolved here. Where the two versions
disagree (``hard_sigmoid``: Keras 2 uses ``clip(0.2x + 0.5)``, Keras 3 ``relu6(x + 3) / 6``;
``gelu`` is exact, not tanh-approximated, in both) the file's Keras version decides.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from model_import._layers.registry import (ConvertContext, LayerImpl, Runtime,
                                          converter_for, lookup, own_class, register_layer,
                                          returned_layer_impl)

Array = jax.Array


def _hard_sigmoid_k2(x):
    return jnp.clip(0.2 * x + 0.5, 0.0, 1.0)


def relu_family(x: Array, rt: Runtime, *, negative_slope: float = 0.0,
                max_value: float | None = None, threshold: float = 0.0) -> Array:
    """Keras's general ReLU, built on ``rt.relu`` so that guided/deconvnet rules apply.

    ``f(x) = min(x, max_value) if x > threshold; negative_slope * (x - threshold)
    otherwise``: ``x == threshold`` gives 0, as Keras 3's ``ReLU``/``activations.relu`` and
    tf.keras 2's ``backend.relu`` compute it (``x > threshold``; Keras's docstring says
    ``threshold <= x``). With ``max_value`` Keras clips the part above the threshold to
    ``[0, max_value]`` before adding the negative part, so a negative threshold (allowed by
    ``activations.relu``, refused by the layer) gives 0 on ``threshold < x < 0``. With a
    ``negative_slope`` it is a leaky ReLU, as ``LeakyReLU`` and ``leaky_relu`` are, and like
    them not built on ``rt.relu``: the rules of ReLUs leave it its plain gradient (an equal
    ``LeakyReLU`` model gets the same maps, ``x == 0`` included). ``max_value=6`` with
    ``threshold=0`` is Keras's ``relu6``, with its gradient 0 at 6; another ``max_value``
    is a ``jnp.minimum`` (gradient 1/2 at ``max_value``, as ``jnp.clip`` gives Keras 3 on
    JAX). ``x``: any shape; returns the same shape.
    """
    if negative_slope:
        # at threshold 0 the branch taken at x == 0 is LeakyReLU's (same value, gradient 1)
        above = x > threshold if threshold else x >= threshold
        y = jnp.where(above, x, negative_slope * (x - threshold))
    elif threshold:
        y = rt.relu(x - threshold) + threshold * (x > threshold)
    else:
        y = rt.relu(x)
    if max_value == 6 and threshold == 0:
        # Keras computes relu6 here (tf.keras 2: tf.nn.relu6; Keras 3: its backend's
        # relu6, jax.nn.relu6 on JAX): gradient 0 at 6 (jnp.minimum's is 1/2 there); NaN
        # fails the test and stays NaN
        y = jnp.where(y >= max_value, jnp.asarray(max_value, y.dtype), y)
    elif max_value is not None:
        y = jnp.minimum(y, max_value)
        if threshold < 0:
            y = jnp.where((x > threshold) & (x < 0), jnp.zeros_like(y), y)
    return y


#: Activation strings that are not elementwise (they act along an axis): never given to
#: ``Runtime.elementwise``.
NOT_ELEMENTWISE = frozenset({"linear", "softmax", "log_softmax", "glu", "sparsemax"})


def elementwise(f: Callable[..., Array]) -> Callable[..., Array]:
    """``f(x, rt, *consts)`` as an activation that goes through ``rt.act`` (the runtime's
    ``elementwise`` rule, DeepLIFT's for instance). ``consts`` (a PReLU's slopes) are arrays
    the function depends on without being differentiated."""

    def act(x, rt, *consts):
        return rt.act(lambda v, *c: f(v, rt, *c), x, *consts)

    return act


def act_on_first(fn: Callable[..., Array]) -> Callable[..., Array]:
    """An operation ``fn(rt, x, *args, **kwargs)`` that is an elementwise activation of its
    first positional argument, computed through ``rt.act`` (Keras 3 ``keras.ops`` nodes and
    tf.keras ``TFOpLambda`` calls record the tensor first, by position). On a static value
    (a NumPy one: a size computed from ``tf.shape``), ``fn`` itself: an attribution's
    elementwise rule must not turn it into a tensor. (A Keras 3 operation node's first
    argument is its tensor, never a NumPy value.)"""

    def f(rt, *args, **kwargs):
        if not args or isinstance(args[0], (np.ndarray, np.generic)):
            return fn(rt, *args, **kwargs)
        return rt.act(lambda v: fn(rt, v, *args[1:], **kwargs), args[0])

    return f


def elementwise_of_one(fn: Callable[[Any, Any], Any],
                       constants: Callable[[Any, Any], tuple] | None = None,
                       pair: bool = False) -> Callable[..., Any]:
    """``f(rt, x, y) = fn(x, y)`` for a binary elementwise ``fn``; where one operand is a
    tensor and the other a constant of no larger shape (``x + 3.0``, ``x * (1 / 6)``,
    ``2.0 ** x``), an elementwise map of that tensor, computed through ``rt.act`` (for LRP
    and DeepLIFT, an activation). ``constants(x, y)``: the operands with recorded constants
    made arrays (tf.keras), after telling tensors from constants. ``pair``: ``fn`` is
    neither a sum nor a product, and on two tensors goes through ``rt.pair``."""

    def f(rt, x, y):
        tx, ty = isinstance(x, jax.Array), isinstance(y, jax.Array)
        if constants is not None:
            x, y = constants(x, y)
        if tx != ty:
            t = x if tx else y
            if jnp.broadcast_shapes(jnp.shape(x), jnp.shape(y)) == t.shape:
                return rt.act((lambda v: fn(v, y)) if tx else (lambda v: fn(x, v)), t)
        if pair and tx and ty:
            return rt.pair(fn, x, y)
        return fn(x, y)

    return f


def _named(keras_major: int) -> dict[str, Callable[[Array, Runtime], Array]]:
    table = _plain_named(keras_major)
    return {k: f if k in NOT_ELEMENTWISE else elementwise(f) for k, f in table.items()}


def _plain_named(keras_major: int) -> dict[str, Callable[[Array, Runtime], Array]]:
    # Keras 3's is relu6(x + 3) / 6 (jax.nn.hard_sigmoid on JAX; tf.nn.relu6 on TensorFlow):
    # derivative 0 at +-3, where jnp.clip's splits the tie (1/12)
    hs = _hard_sigmoid_k2 if keras_major < 3 else jax.nn.hard_sigmoid
    return {
        "linear": lambda x, rt: x,
        "relu": lambda x, rt: rt.relu(x),
        "relu6": lambda x, rt: relu_family(x, rt, max_value=6.0),
        "leaky_relu": lambda x, rt: jax.nn.leaky_relu(x, 0.2),
        "sigmoid": lambda x, rt: jax.nn.sigmoid(x),
        "hard_sigmoid": lambda x, rt: hs(x),
        "hard_silu": lambda x, rt: x * hs(x),
        "hard_swish": lambda x, rt: x * hs(x),
        "softmax": lambda x, rt: rt.softmax_of(x, -1),
        "log_softmax": lambda x, rt: jax.nn.log_softmax(x, axis=-1),
        "softplus": lambda x, rt: jax.nn.softplus(x),
        "softsign": lambda x, rt: x / (1.0 + jnp.abs(x)),
        "tanh": lambda x, rt: jnp.tanh(x),
        "elu": lambda x, rt: jax.nn.elu(x),
        "selu": lambda x, rt: jax.nn.selu(x),
        "celu": lambda x, rt: jax.nn.celu(x),
        "exponential": lambda x, rt: jnp.exp(x),
        "swish": lambda x, rt: jax.nn.silu(x),
        "silu": lambda x, rt: jax.nn.silu(x),
        "gelu": lambda x, rt: jax.nn.gelu(x, approximate=False),
        "mish": lambda x, rt: x * jnp.tanh(jax.nn.softplus(x)),
        "log_sigmoid": lambda x, rt: jax.nn.log_sigmoid(x),
        # Keras 3's (jax.nn.hard_tanh on JAX): derivative 1 at +-1, where jnp.clip's is 1/2
        "hard_tanh": lambda x, rt: jax.nn.hard_tanh(x),
        "tanh_shrink": lambda x, rt: x - jnp.tanh(x),
        "soft_shrink": lambda x, rt: soft_shrink(x),
        "hard_shrink": lambda x, rt: hard_shrink(x),
        "squareplus": lambda x, rt: squareplus(x),
        "sparse_plus": lambda x, rt: sparse_plus(x),
        "sparse_sigmoid": lambda x, rt: jnp.clip(0.5 * (x + 1.0), 0.0, 1.0),
        "glu": lambda x, rt: glu(x),
        "sparsemax": lambda x, rt: sparsemax(x),
    }


# Functions shared by the activation strings (default parameters) and the Keras operations
# of the same name (keras.ops.soft_shrink(x, threshold), ...: model_import._layers.ops).
def soft_shrink(x, t=0.5):
    return jnp.where(x > t, x - t, jnp.where(x < -t, x + t, jnp.zeros((), x.dtype)))


def hard_shrink(x, t=0.5):
    return jnp.where(jnp.abs(x) > t, x, jnp.zeros((), x.dtype))


def squareplus(x, b=4.0):
    return (x + jnp.sqrt(x * x + b)) / 2


def sparse_plus(x):
    return jnp.where(x <= -1, 0.0, jnp.where(x < 1, 0.25 * (x + 1) ** 2, x)).astype(x.dtype)


def glu(x, axis=-1):
    a, b = jnp.split(x, 2, axis)
    return a * jax.nn.sigmoid(b)


def sparsemax(x, axis=-1):
    # Keras's sparsemax (all backends): the support is the usual one, but the threshold is
    # (sum over the support of the cumulative sums - 1) / k, not (cumsum_k - 1) / k as in
    # Martins & Astudillo (2016). Models trained with Keras saw Keras's values: match them.
    x = jnp.moveaxis(x, axis, -1)
    # descending as Keras sorts, -sort(-x): tied logits keep the lower index first, which
    # decides the derivative there (a reversed ascending sort puts the higher one first)
    z = -jnp.sort(-x, axis=-1)
    k = jnp.arange(1, x.shape[-1] + 1, dtype=x.dtype)
    cums = jnp.cumsum(z, axis=-1)
    support = z - (cums - 1) / k > 0
    k_max = jnp.sum(support, axis=-1, keepdims=True)
    tau = (jnp.sum(jnp.where(support, cums, 0.0), axis=-1, keepdims=True) - 1) / k_max
    return jnp.moveaxis(jnp.maximum(x - tau, 0.0), -1, axis)


ACTIVATION_NAMES = tuple(sorted(_named(3)))

#: Custom activation functions by name (:func:`register_activation`).
_CUSTOM: dict[str, Callable[[Array], Array]] = {}


def register_activation(name: str, fn: Callable[[Array], Array] | None = None, *,
                        override: bool = False) -> Callable[..., Any]:
    """Register the JAX version of a custom elementwise Keras activation function, by the name
    the file records: a function passed as ``Dense(activation=my_act)`` is saved as
    ``"my_act"``, one registered with ``keras.saving.register_keras_serializable(package=
    "pkg")`` as ``"pkg>my_act"`` (either name finds it). ``fn(x) -> y`` acts elementwise; it
    is computed through ``rt.act``, so that DeepLIFT's and LRP's rules reach it.

    Use as ``register_activation("my_act", fn)`` or as a decorator,
    ``@register_activation("my_act")``. Registering a name twice raises unless
    ``override=True``; so does a name Keras itself defines (``"relu"``...), which the importer
    computes already.
    """
    if callable(name):
        raise TypeError(f"register_activation takes the activation's name first, got the "
                        f"function {getattr(name, '__name__', name)!r}: "
                        f"@register_activation('my_act'), not @register_activation")
    if not isinstance(name, str) or not name:
        raise TypeError(f"expected the activation's name as a non-empty str, got {name!r}")
    if name in ACTIVATION_NAMES or name in _ALIASES:
        raise ValueError(f"{name!r} is a Keras activation, which the importer computes "
                         "already; register custom functions under their own names")

    def deco(f: Callable[[Array], Array]) -> Callable[[Array], Array]:
        if not callable(f):
            raise TypeError(f"register_activation: expected a function of one array, got "
                            f"{type(f).__name__}")
        if name in _CUSTOM and not override:
            raise ValueError(f"an activation {name!r} is already registered; pass "
                             "override=True to replace it")
        _CUSTOM[name] = f
        return f

    return deco if fn is None else deco(fn)


def _custom(name: str) -> Callable[[Array, Runtime], Array] | None:
    fn = _CUSTOM.get(name, _CUSTOM.get(name.split(">")[-1]))
    return None if fn is None else elementwise(lambda x, rt: fn(x))

_LAMBDA = "<lambda>"  # tf.keras 2 saves a lambda's name so; Keras 3 its bytecode

#: Names some versions save for the same activation (tf.keras 2.12 writes "log_softmax_v2").
_ALIASES = {None: "linear", "": "linear", "none": "linear", "relu_": "relu",
            "log_softmax_v2": "log_softmax"}


def activation_name(spec: Any) -> str:
    """Normalize a serialized Keras activation (string or dict) to its name; an activation
    given as a layer is named by its class (``"LeakyReLU"``), except ``Softmax`` (``"softmax"``)
    and ``Activation`` (its own activation's name)."""
    if _is_layer_spec(spec):
        if own_class(spec):  # not Keras's layer of that name (a "ReLU" of the user's own)
            return _own_layer_name(spec)
        cls = str(spec["class_name"])
        if cls == "Activation":
            return activation_name(spec["config"].get("activation"))
        return "softmax" if cls == "Softmax" else cls
    # Keras 3 may serialize {"class_name": "function", "config": "relu"}
    if isinstance(spec, Mapping):
        cfg = spec.get("config")
        name = cfg if isinstance(cfg, str) else (cfg or {}).get("name", spec.get("class_name"))
        if name is None:  # no name: a Python lambda (Keras 3 stores its bytecode as "value")
            name = _LAMBDA if "value" in spec else str(dict(spec))[:200]
        spec = name
    name = _ALIASES.get(spec, spec)
    return str(name)


def get_activation(spec: Any, keras_major: int = 3,
                   ctx: ConvertContext | None = None) -> Callable[[Array, Runtime], Array]:
    """Return ``f(x, rt)`` for a Keras activation spec, or raise naming the unknown one."""
    if callable(spec):
        return spec
    if _is_layer_spec(spec):
        return _layer_activation(spec, keras_major, ctx)
    name = activation_name(spec)
    table = _named(keras_major)
    if name not in table and _custom(name) is not None:
        if ctx is not None and ctx.user_converted is not None:
            ctx.user_converted.append(name)  # the user's code: no program shared between loads
        return _custom(name)
    if name not in table:
        if name == _LAMBDA:
            detail = ("its activation is a Python lambda, stored as bytecode, which cannot be "
                      "ported. Define it as a named function, save the model again and "
                      "register a JAX version: model_import.register_activation(name, fn)")
        else:
            bare = name.split(">")[-1]
            # a function registered with a package under a Keras activation's name ("pkg>mish")
            # is the model's own: register_activation refuses the bare name, so give the full one
            keras_named = bare != name and (bare in table or bare in _ALIASES)
            detail = (f"unknown activation {name!r}; supported: {', '.join(sorted(table))}. "
                      f"A custom function: register a JAX version, model_import."
                      f"register_activation({name if keras_named else bare!r}, fn)"
                      + (f" (the model's own function, registered with its package under the "
                         f"name of Keras's {bare!r}, which the importer computes already)"
                         if keras_named else ""))
        if ctx is not None:
            raise ctx.error(detail)
        raise ValueError(detail)
    return table[name]


def _is_layer_spec(spec: Any) -> bool:
    # ``Dense(activation=layers.ELU(0.3))`` saves the layer's own config, whose `name` is the
    # layer's name (maybe "relu"), not an activation's: dispatch on the layer class instead.
    # A layer class of the model's own code (own_class) is one too, whatever its name.
    return (isinstance(spec, Mapping) and isinstance(spec.get("config"), Mapping)
            and spec.get("class_name") not in (None, "function")
            and (own_class(spec) or lookup(str(spec["class_name"])) is not None))


def _own_layer_name(spec: Mapping) -> str:
    """The name an activation layer of the model's own code is registered under: Keras 3's
    ``"package>Class"`` where it has one, else its class name."""
    raw = str(spec["class_name"])
    return raw if ">" in raw else str(spec.get("registered_name") or raw)


def _layer_activation(spec: Mapping, keras_major: int, ctx: ConvertContext | None):
    raw = str(spec["class_name"])
    own = own_class(spec)
    cls, conv = converter_for(raw.split(">")[-1], _own_layer_name(spec) if own else None,
                              own, ctx.custom_layers if ctx is not None else None)
    if conv is None:  # a layer of the model's own code, named like a Keras layer or not
        reg = _own_layer_name(spec)
        detail = (f"its activation is a layer of the model's own code, {reg!r} (Keras loads "
                  "it only from that code, never as a Keras layer of its name), which has no "
                  "converter")
        if ctx is not None:
            raise ctx.error(detail, needs=reg, own=own)
        raise ValueError(f"{detail}: pass one as load_keras(..., custom_layers={{{reg!r}: "
                         f"converter}}) or register it with model_import.register_layer({reg!r})")
    name = str(spec["config"].get("name", cls))
    sub = (ConvertContext(layer_name=name, class_name=cls, keras_version=str(keras_major))
           if ctx is None else dataclasses.replace(ctx, layer_name=name, class_name=cls,
                                                   build_subgraph=None))
    if ctx is not None:
        ctx.note_user_converter(cls, conv)
    impl = returned_layer_impl(conv(spec["config"], sub), conv, sub)
    if impl.subgraph is not None or impl.n_weights != 0:
        detail = (f"its activation is a {cls} layer with weights, which an activation "
                  "cannot carry; use the layer on its own (Dense(...) then a separate "
                  f"{cls}(...))")
        if ctx is not None:
            raise ctx.error(detail)
        raise ValueError(detail)
    after = None if impl.activation is None else get_activation(impl.activation, keras_major,
                                                                ctx)

    def act(x, rt):
        y = impl.call({}, x, rt=rt)
        return y if after is None else after(y, rt)

    return act


def with_own_activation(impl: LayerImpl, ctx: ConvertContext) -> LayerImpl:
    """``impl`` with a fused activation of the model's own code resolved now: one given as
    a layer of its own classes (``Dense(3, activation=MyReLU())``), while ``ctx`` holds the
    converters passed to ``load_keras(custom_layers=...)``, and a function registered with
    :func:`register_activation`, so that the model keeps the function registered when it
    was loaded (a later ``register_activation(..., override=True)`` changes later loads
    only). Keras's own activations are looked up when the layer runs."""
    act = impl.activation
    if isinstance(act, Mapping) and _is_layer_spec(act) and own_class(act):
        return dataclasses.replace(impl, activation=get_activation(act, ctx.keras_major, ctx))
    if act is None or callable(act) or _is_layer_spec(act):
        return impl
    name = activation_name(act)
    if name in _named(ctx.keras_major) or _custom(name) is None:
        return impl
    return dataclasses.replace(impl, activation=get_activation(act, ctx.keras_major, ctx))


def _identity(params, x, *, rt):
    return x


@register_layer("Activation")
def _activation(config, ctx):
    get_activation(config.get("activation"), ctx.keras_major, ctx)  # validate early
    return LayerImpl(call=_identity, activation=config.get("activation"))


@register_layer("ReLU")
def _relu(config, ctx):
    kw = dict(negative_slope=float(config.get("negative_slope", 0.0) or 0.0),
              max_value=None if config.get("max_value") is None else float(config["max_value"]),
              threshold=float(config.get("threshold", 0.0) or 0.0))
    return LayerImpl(call=_identity,
                     activation=elementwise(lambda x, rt: relu_family(x, rt, **kw)))


@register_layer("LeakyReLU")
def _leaky_relu(config, ctx):
    # Keras 2 calls it `alpha` (default 0.3); Keras 3 `negative_slope` (default 0.3).
    slope = config.get("negative_slope", config.get("alpha", 0.3))
    return LayerImpl(call=_identity,
                     activation=elementwise(lambda x, rt: jax.nn.leaky_relu(x, float(slope))))


@register_layer("ELU")
def _elu(config, ctx):
    alpha = float(config.get("alpha", 1.0))
    return LayerImpl(call=_identity, activation=elementwise(lambda x, rt: jax.nn.elu(x, alpha)))


@register_layer("ThresholdedReLU")
def _thresholded_relu(config, ctx):
    theta = float(config.get("theta", 1.0))
    return LayerImpl(call=_identity,
                     activation=elementwise(lambda x, rt: jnp.where(x > theta, x, 0.0)))


@register_layer("Softmax")
def _softmax(config, ctx):
    axis = config.get("axis", -1)
    axes = tuple(axis) if isinstance(axis, (list, tuple)) else (axis,)

    def act(x, rt):
        return rt.softmax_of(x, axes)

    return LayerImpl(call=_identity, activation=act)


_prelu_act = elementwise(lambda x, rt, alpha: jnp.maximum(x, 0.0) + alpha * jnp.minimum(x, 0.0))


@register_layer("PReLU")
def _prelu(config, ctx):
    # `shared_axes` needs nothing here: the stored alpha has size 1 along them
    def call(params, x, *, rt):
        return _prelu_act(x, rt, params["alpha"])

    return LayerImpl(call=call, convert_weights=lambda w: {"alpha": w[0]}, n_weights=1)
