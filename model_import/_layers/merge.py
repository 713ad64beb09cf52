"""Merge layers: Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate, Dot, and
InceptionResNetV2's CustomScaleLayer.

A merge layer is called with one list of tensors (as in Keras). Shapes broadcast as in
Keras 3 (a squeeze-excitation ``Multiply`` of ``(N,H,W,C)`` and ``(N,1,1,C)``). Sums
(``Add``, ``Subtract``, ``Average``, ``CustomScaleLayer``) and products (``Multiply``, an
unnormalized ``Dot``) are LRP's rule layers (``LayerImpl.merge``); ``Maximum`` and
``Minimum`` pass relevance to the winner by their gradient.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from model_import._layers.registry import LayerImpl, register_layer


def _as_list(xs):
    return list(xs) if isinstance(xs, (list, tuple)) else [xs]


def _reduce_merge(op, merge):
    def convert(config, ctx):
        def call(params, xs, *args, rt, **kwargs):
            xs = _as_list(xs) + list(args)
            return functools.reduce(op, xs)
        return LayerImpl(call=call, relevance=True, merge=merge)
    return convert


register_layer("Add")(_reduce_merge(jnp.add, "sum"))
register_layer("Multiply")(_reduce_merge(jnp.multiply, "product"))


def _pairwise_merge(op):
    """``op`` of two tensors, in order for more (``Maximum``, ``Minimum``), through
    ``rt.pair``."""
    def convert(config, ctx):
        def call(params, xs, *args, rt, **kwargs):
            return functools.reduce(lambda a, b: rt.pair(op, a, b), _as_list(xs) + list(args))
        return LayerImpl(call=call)
    return convert


register_layer("Maximum")(_pairwise_merge(jnp.maximum))
register_layer("Minimum")(_pairwise_merge(jnp.minimum))


@register_layer("Subtract")
def _subtract(config, ctx):
    def call(params, xs, *args, rt, **kwargs):
        xs = _as_list(xs) + list(args)
        if len(xs) != 2:
            raise ValueError(f"Subtract expects exactly 2 inputs, got {len(xs)}")
        return xs[0] - xs[1]
    return LayerImpl(call=call, relevance=True, merge="sum")


@register_layer("Average")
def _average(config, ctx):
    def call(params, xs, *args, rt, **kwargs):
        xs = _as_list(xs) + list(args)
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

    def call(params, xs, *args, rt, **kwargs):
        a, b = _as_list(xs) + list(args)
        ax = axes if isinstance(axes, (list, tuple)) else (axes, axes)
        ax = [int(v) % x.ndim for v, x in zip(ax, (a, b))]
        if normalize:
            a = a * jax.lax.rsqrt(jnp.maximum(jnp.sum(a * a, ax[0], keepdims=True), 1e-12))
            b = b * jax.lax.rsqrt(jnp.maximum(jnp.sum(b * b, ax[1], keepdims=True), 1e-12))
        y = jax.vmap(lambda u, v: jnp.tensordot(u, v, axes=(ax[0] - 1, ax[1] - 1)))(a, b)
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
