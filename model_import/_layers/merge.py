"""Merge layers: Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate, Dot, and
InceptionResNetV2's CustomScaleLayer.

A merge layer is called with one list of tensors (as in Keras). Shapes broadcast as in
Keras 3 (a squeeze-excitation ``Multiply`` of ``(N,H,W,C)`` and ``(N,1,1,C)``); an input of
lower rank is first expanded at axis 1 until the ranks match, as Keras 3 and tf.keras 2 do
(:func:`keras_ranks`: ``Add()([(N,T,C), (N,C)])`` adds the ``(N,C)`` input at every step). Sums
(``Add``, ``Subtract``, ``Average``, ``CustomScaleLayer``) and products (``Multiply``, an
unnormalized ``Dot``) are LRP's rule layers (``LayerImpl.merge``); ``Maximum`` and
``Minimum`` pass relevance to the winner by their gradient (equal shares among tied
inputs). A normalized ``Dot`` is computed
through the runtime's hooks instead (each input as ``UnitNormalization`` computes it, then
``Runtime.product_of``): DeepLIFT's rules then reach every step.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from model_import._layers.normalization import inverse_l2_norm, l2_normalized
from model_import._layers.pooling import reduce_max, reduce_min
from model_import._layers.registry import LayerImpl, register_layer


def _as_list(xs):
    return list(xs) if isinstance(xs, (list, tuple)) else [xs]


def keras_ranks(xs: list) -> list:
    """The inputs of an elementwise merge (``Add``, ``Subtract``, ``Multiply``, ``Average``,
    ``Maximum``, ``Minimum``) aligned as Keras 3 and tf.keras 2 align them
    (``Merge.call``): each input of lower rank expanded at axis 1 until it has the highest
    rank, ``(N, C)`` -> ``(N, 1, C)`` beside ``(N, T, C)``; they then broadcast as usual.
    (NumPy's broadcasting from the last axis would line the batch axis of ``(N, C)`` up with
    ``T``: a broadcasting error, or wrong values where ``N == T``.)"""
    rank = max(jnp.ndim(x) for x in xs)
    return [jnp.reshape(x, jnp.shape(x)[:1] + (1,) * (rank - jnp.ndim(x)) + jnp.shape(x)[1:])
            if 1 <= jnp.ndim(x) < rank else x for x in xs]


def _reduce_merge(op, merge):
    def convert(config, ctx):
        def call(params, xs, *args, rt, **kwargs):
            xs = keras_ranks(_as_list(xs) + list(args))
            return functools.reduce(op, xs)
        return LayerImpl(call=call, relevance=True, merge=merge)
    return convert


register_layer("Add")(_reduce_merge(jnp.add, "sum"))
register_layer("Multiply")(_reduce_merge(jnp.multiply, "product"))


def extremum_of(xs: list, kind: str, rt) -> jax.Array:
    """The elementwise maximum (``kind="max"``) or minimum of ``xs`` (of one rank,
    broadcasting). With a ``pairwise`` rule (DeepLIFT's two-player split) it is ``op`` of
    two tensors through ``rt.pair``, in order for more. Without one, the reduction over the
    stacked inputs by :func:`~model_import._layers.pooling.reduce_max` (``reduce_min``),
    whose derivative splits equally among the inputs equal to the result, as for a max
    reduction: three tied inputs get 1/3 each (the pairwise fold gave ``[1/4, 1/4, 1/2]``,
    by position)."""
    op = jnp.maximum if kind == "max" else jnp.minimum
    if rt.pairwise is not None or len(xs) < 2:
        return functools.reduce(lambda a, b: rt.pair(op, a, b), xs)
    reduce = reduce_max if kind == "max" else reduce_min
    return reduce(jnp.stack(jnp.broadcast_arrays(*xs)), axis=0)


def _extremum_merge(kind):
    """``Maximum`` (``kind="max"``) or ``Minimum``: :func:`extremum_of` its inputs."""
    def convert(config, ctx):
        def call(params, xs, *args, rt, **kwargs):
            return extremum_of(keras_ranks(_as_list(xs) + list(args)), kind, rt)
        return LayerImpl(call=call)
    return convert


register_layer("Maximum")(_extremum_merge("max"))
register_layer("Minimum")(_extremum_merge("min"))


@register_layer("Subtract")
def _subtract(config, ctx):
    def call(params, xs, *args, rt, **kwargs):
        xs = keras_ranks(_as_list(xs) + list(args))
        if len(xs) != 2:
            raise ValueError(f"Subtract expects exactly 2 inputs, got {len(xs)}")
        return xs[0] - xs[1]
    return LayerImpl(call=call, relevance=True, merge="sum")


@register_layer("Average")
def _average(config, ctx):
    def call(params, xs, *args, rt, **kwargs):
        xs = keras_ranks(_as_list(xs) + list(args))
        return functools.reduce(jnp.add, xs) / len(xs)
    return LayerImpl(call=call, relevance=True, merge="sum")


@register_layer("Concatenate")
def _concatenate(config, ctx):
    axis = int(config.get("axis", -1))

    def call(params, xs, *args, rt, **kwargs):
        return jnp.concatenate(_as_list(xs) + list(args), axis=axis)
    return LayerImpl(call=call)


@register_layer("Dot")
def _dot(config, ctx):
    axes = config.get("axes", -1)
    normalize = bool(config.get("normalize", False))

    if ctx.keras_major < 3:  # tf.keras 2: tf.math.l2_normalize, epsilon 1e-12 on ss
        def inverse(ss):
            return jax.lax.rsqrt(jnp.maximum(ss, 1e-12))
    elif ctx.backend == "numpy":  # numerical_utils.normalize of NumPy arrays: x / norm
        def inverse(ss):  # a zero norm counts as 1; rsqrt(0) never taken (inf derivative)
            return jnp.where(ss > 0, jax.lax.rsqrt(jnp.where(ss > 0, ss, 1.0)), 1.0)
    else:  # ops.nn.normalize on JAX, TensorFlow, PyTorch: epsilon = backend.epsilon()
        def inverse(ss):
            return inverse_l2_norm(ss, 1e-7)

    def call(params, xs, *args, rt, **kwargs):
        a, b = _as_list(xs) + list(args)
        ax = axes if isinstance(axes, (list, tuple)) else (axes, axes)
        ax = [int(v) % x.ndim for v, x in zip(ax, (a, b))]

        def dot(u, v):
            return jax.vmap(lambda p, q: jnp.tensordot(p, q, axes=(ax[0] - 1, ax[1] - 1)))(u, v)

        if normalize:  # not a rule layer: its steps go through the runtime's hooks
            y = rt.product_of(dot, l2_normalized(rt, a, ax[0], inverse),
                              l2_normalized(rt, b, ax[1], inverse))
        else:
            y = dot(a, b)
        return y[:, None] if y.ndim == 1 else y
    return LayerImpl(call=call, relevance=not normalize, merge="product")


@register_layer("CustomScaleLayer")
def _custom_scale(config, ctx):
    """``keras.applications.InceptionResNetV2``'s residual merge (Keras 3; tf.keras wrote a
    Lambda there): ``[x, r] -> x + scale * r``."""
    scale = config.get("scale")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise ctx.error(f"expected InceptionResNetV2's CustomScaleLayer with a numeric 'scale' "
                        f"in its config, got {scale!r}; register a converter for this class")
    scale = float(scale)

    def call(params, xs, *args, rt, **kwargs):
        xs = _as_list(xs) + list(args)
        if len(xs) != 2:
            raise ValueError(f"CustomScaleLayer expects 2 inputs [x, residual], got {len(xs)}")
        return xs[0] + xs[1] * scale
    return LayerImpl(call=call, relevance=True, merge="sum")
