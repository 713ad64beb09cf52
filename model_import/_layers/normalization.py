"""Normalization layers: BatchNormalization (inference: moving statistics), LayerNormalization,
Normalization (incl. ``invert``), Rescaling, UnitNormalization, GroupNormalization,
RMSNormalization.

BatchNormalization computes ``x * inv + (beta - mean * inv)`` with
``inv = gamma / sqrt(moving_variance + epsilon)``, the Keras 3 formula, along ``axis`` (an int
or a list; ``axis=1`` for channels_first models).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from model_import._layers.registry import LayerImpl, register_layer, scale_values
from model_import._version import parse_version

_KERAS_EPSILON = 1e-7  # keras.backend.epsilon(), the floor of Normalization's std


def _axes(axis) -> tuple[int, ...]:
    if axis is None:
        return ()
    if isinstance(axis, (list, tuple)):
        return tuple(int(a) for a in axis)
    return (int(axis),)


def _normalized_axes(axes: Sequence[int], ndim: int, ctx, what: str) -> tuple[int, ...]:
    """The axes a layer normalizes over. Keras on PyTorch hands a contiguous set (one axis
    included) to ``F.layer_norm``/``F.rms_norm``, which normalize the *last* ``len(axes)``
    axes whichever were asked (torch raises unless their sizes agree): that is followed for
    ``keras_backend="torch"``, and warned about when the backend is unknown."""
    ax = tuple(sorted(a % ndim for a in axes))
    raw = sorted(axes)
    contiguous = all(b - a == 1 for a, b in zip(raw, raw[1:]))
    trailing = tuple(range(ndim - len(ax), ndim))
    if not contiguous or ax == trailing or not ax:
        return ax
    if ctx.backend == "torch":
        return trailing
    ctx.backend_dependent(f"{what} over axes {list(axes)} of a rank-{ndim} input: Keras on "
                          "PyTorch normalizes over the last axes instead")
    return ax


def _broadcast(v, axes: Sequence[int], ndim: int):
    """Reshape a parameter of shape ``x.shape[axes]`` (Keras 3) to broadcast against ``x``.

    tf.keras 2 stores the parameters of a multi-axis BatchNormalization already broadcast,
    with ``x``'s rank (``(1, H, 1, C)`` for ``axis=[1, 3]``); those are used as they are.
    """
    axes = sorted(a % ndim for a in axes)
    if v.ndim == 0:
        return v
    if axes == [ndim - 1] and v.ndim == 1:
        return v
    if v.ndim == ndim and len(axes) != ndim:
        return v
    shape = [1] * ndim
    for a, n in zip(axes, v.shape if v.ndim == len(axes) else [v.size]):
        shape[a] = n
    return v.reshape(shape)


def _same_shapes(w: Sequence[np.ndarray], names: Sequence[str]) -> Sequence[np.ndarray]:
    """``w``, checked: a normalization's parameters all have the shape of the normalized
    axes (one array of another shape, or a scalar, would broadcast into a different layer)."""
    shapes = [np.shape(a) for a in w]
    if len(set(shapes)) > 1 or () in shapes:
        raise ValueError(f"expected {list(names)} of one shape (the normalized axes), got "
                         f"shapes {shapes}")
    return w


@register_layer("BatchNormalization", "SyncBatchNormalization")
def _batch_norm(config, ctx):
    # tf.keras 2's batch renormalization changes training only: at inference the layer
    # normalizes with its moving statistics as usual; its three more arrays (moving_stddev,
    # renorm_mean, renorm_stddev, saved after the others) are read and left unused
    renorm = bool(config.get("renorm"))
    axes = _axes(config.get("axis", -1))
    eps = float(config.get("epsilon", 1e-3))
    center = bool(config.get("center", True))
    scale = bool(config.get("scale", True))
    names = (["gamma"] if scale else []) + (["beta"] if center else []) + [
        "moving_mean", "moving_variance"]
    virtual = config.get("virtual_batch_size") is not None
    if virtual:
        # tf.keras 2's ghost batch norm (training only; inference uses the moving statistics
        # as usual) computes in a rank-(n+1) view (virtual batch, rest of the batch, ...): a
        # built layer's config records the axes of that view (axis -1 of a 4-D input is
        # saved as [4]) and its parameters have its shape, (1, 1, ..., C)
        if any(a == 0 or a == 1 for a in axes):
            raise ctx.error(f"BatchNormalization(virtual_batch_size=...) with axis={axes}: "
                            "expected the axes of a built tf.keras layer (> 1)")
        axes = tuple(a - 1 if a > 0 else a for a in axes)

    def call(params, x, *, rt):
        nd = x.ndim
        # another axis (a damaged config) would broadcast the statistics into the batch axis
        if not all(0 < a % nd and -nd <= a < nd for a in axes) or math.prod(
                x.shape[a % nd] for a in axes) != np.size(params["moving_variance"]):
            raise ValueError(f"axis {list(axes)} of an input of shape {x.shape}: expected the "
                             f"axes of the {np.size(params['moving_variance'])} statistics (not "
                             "the batch axis)")
        inv = jax.lax.rsqrt(_broadcast(params["moving_variance"], axes, nd) + eps)
        if scale:
            inv = inv * _broadcast(params["gamma"], axes, nd)
        res = -_broadcast(params["moving_mean"], axes, nd) * inv
        if center:
            res = res + _broadcast(params["beta"], axes, nd)
        return x * inv + res

    def convert(w):
        w = list(w)[:len(names)]  # without renorm's training statistics
        _same_shapes(w, names)
        if virtual:  # drop the virtual-batch axis: (1, 1, ..., C) -> (1, ..., C)
            w = [np.asarray(a).reshape(np.asarray(a).shape[:1] + np.asarray(a).shape[2:])
                 if np.ndim(a) >= 2 else a for a in w]
        return dict(zip(names, w))

    df = "channels_first" if axes in ((1,), [1]) else None
    return LayerImpl(call=call, convert_weights=convert, n_weights=len(names) + 3 * renorm,
                     n_non_trainable=2 + 3 * renorm,  # the moving (and renorm) statistics
                     data_format=df, affine=True, relevance=True)


def _inverse_scale(rt, v: jax.Array, ax, eps: float) -> jax.Array:
    """``1 / sqrt(mean(v**2) + eps)`` over ``ax`` (keepdims), its square and reciprocal root
    as activations (``rt.act``: DeepLIFT's rescale rule), held (``rt.held``: LRP keeps it
    constant)."""
    ms = jnp.mean(rt.act(jnp.square, v), axis=ax, keepdims=True)
    return rt.held(rt.act(lambda m: jax.lax.rsqrt(m + eps), ms))


def _scaled(rt, v: jax.Array, inv: jax.Array) -> jax.Array:
    """``v * inv``, a normalization's values times their (held) inverse scale, as a function
    of two tensors (``rt.pair``: DeepLIFT's two-player split, exact where ``inv`` varies)."""
    return rt.pair(scale_values, v, inv)


def l2_normalized(rt, x: jax.Array, axes, inverse) -> jax.Array:
    """``x`` over its L2 norm along ``axes``, ``x * inverse(sum(x ** 2))`` with the Keras
    formula ``inverse`` gives, computed as ``UnitNormalization`` is: the values times their
    held inverse norm (``rt.act``, ``rt.held``, :func:`_scaled`). Also a normalized ``Dot``'s
    inputs and tf.keras's ``tf.math.l2_normalize``."""
    ss = jnp.sum(rt.act(jnp.square, x), axis=axes, keepdims=True)
    return _scaled(rt, x, rt.held(rt.act(inverse, ss)))


@register_layer("LayerNormalization")
def _layer_norm(config, ctx):
    axes = _axes(config.get("axis", -1))
    eps = float(config.get("epsilon", 1e-3))
    center = bool(config.get("center", True))
    scale = bool(config.get("scale", True))
    rms = bool(config.get("rms_scaling", False))
    if rms:  # Keras 3 creates gamma whatever `scale` says, and never beta
        scale, center = True, False
    names = (["gamma"] if scale else []) + (["beta"] if center else [])

    def call(params, x, *, rt):
        nd = x.ndim
        ax = tuple(sorted(a % nd for a in axes))
        if rms:  # Keras 3's (deprecated) rms_scaling: x / sqrt(var + eps) * gamma, no beta
            centered = x - jnp.mean(x, axis=ax, keepdims=True)
            y = _scaled(rt, x, _inverse_scale(rt, centered, ax, eps))
            return y * _broadcast(params["gamma"], ax, nd)
        ax = _normalized_axes(axes, nd, ctx, "LayerNormalization")
        centered = x - jnp.mean(x, axis=ax, keepdims=True)
        y = _scaled(rt, centered, _inverse_scale(rt, centered, ax, eps))
        if scale:
            y = y * _broadcast(params["gamma"], ax, nd)
        if center:
            y = y + _broadcast(params["beta"], ax, nd)
        return y

    return LayerImpl(call=call,
                     convert_weights=lambda w: dict(zip(names, _same_shapes(w, names))),
                     n_weights=len(names), relevance=True)


@register_layer("RMSNormalization")
def _rms_norm(config, ctx):
    """Keras 3's ``RMSNormalization``: ``x * rsqrt(mean(x**2) + epsilon) * scale`` (unlike
    LayerNormalization's ``rms_scaling``, which divides by the variance).

    ``scale`` has the shape of ``x``'s normalized axes but Keras multiplies it with plain
    broadcasting, that is along ``x``'s *last* axes whatever ``axis`` says
    (``ops.rms_normalization``): ``axis=1`` on ``(N, 4, 4)`` scales the last axis. The port
    does the same, so that it computes what the Keras model computes (for the default
    ``axis=-1``, or trailing axes, the two readings agree)."""
    axes = _axes(config.get("axis", -1))
    eps = float(config.get("epsilon", 1e-6))

    def call(params, x, *, rt):
        nd = x.ndim
        ax = _normalized_axes(axes, nd, ctx, "RMSNormalization")
        y = _scaled(rt, x, _inverse_scale(rt, x, ax, eps))
        scale = params["scale"]
        try:
            np.broadcast_shapes(x.shape, scale.shape)
        except ValueError:
            raise ValueError(
                f"RMSNormalization(axis={list(axes)}): Keras multiplies its scale of shape "
                f"{tuple(scale.shape)} along the last axes of the input, which do not fit the "
                f"input shape {tuple(x.shape)}; Keras itself cannot run this layer (use "
                "axis=-1, or axes that end with the last one)") from None
        return y * scale

    return LayerImpl(call=call, convert_weights=lambda w: {"scale": w[0]}, n_weights=1,
                     relevance=True)


@register_layer("GroupNormalization")
def _group_norm(config, ctx):
    groups = int(config.get("groups", 32))
    axis = int(config.get("axis", -1))
    eps = float(config.get("epsilon", 1e-3))
    center = bool(config.get("center", True))
    scale = bool(config.get("scale", True))
    names = (["gamma"] if scale else []) + (["beta"] if center else [])

    def call(params, x, *, rt):
        nd = x.ndim
        a = axis % nd
        xm = jnp.moveaxis(x, a, -1)
        c = xm.shape[-1]
        n_groups = c if groups == -1 else groups  # -1: one group per channel, as Keras builds
        if n_groups <= 0 or c % n_groups:
            raise ValueError(
                f"GroupNormalization(groups={groups}, axis={axis}): expected a number of groups "
                f"that divides the {c} channels of axis {a} of the input {tuple(x.shape)}, got "
                f"{n_groups}; Keras refuses this layer on this input too (give groups a divisor "
                f"of {c}, or -1 for one group per channel)")
        g = xm.reshape(*xm.shape[:-1], n_groups, c // n_groups)
        red = tuple(range(1, g.ndim - 2)) + (g.ndim - 1,)
        centered = g - jnp.mean(g, axis=red, keepdims=True)
        y = _scaled(rt, centered, _inverse_scale(rt, centered, red, eps)).reshape(xm.shape)
        if scale:
            y = y * params["gamma"]
        if center:
            y = y + params["beta"]
        return jnp.moveaxis(y, -1, a)

    return LayerImpl(call=call, convert_weights=lambda w: dict(zip(names, w)),
                     n_weights=len(names), relevance=True)


def inverse_l2_norm(ss: jax.Array, eps: float) -> jax.Array:
    """Keras 3's L2 ``ops.normalize`` scale ``min(rsqrt(ss), 1 / eps)`` of the sums of
    squares ``ss``, with ``rsqrt`` taken only where ``ss > eps^2`` (elsewhere the minimum is
    ``1 / eps``): the same values, but a zero sum no longer gives ``rsqrt = inf`` and a
    gradient of ``0 * inf = NaN`` (the true derivative of ``x / eps`` near 0 is
    ``1 / eps``)."""
    above = ss > eps * eps
    inv = jax.lax.rsqrt(jnp.where(above, ss, 1.0))  # never rsqrt(0) (its derivative is inf)
    return jnp.where(above, jnp.minimum(inv, 1.0 / eps), 1.0 / eps)


@register_layer("UnitNormalization")
def _unit_norm(config, ctx):
    """``x`` times its inverse L2 norm, held (LRP, DeepLIFT): Keras 3.6 and later compute it
    with ``ops.normalize(epsilon=1e-12)``, ``min(rsqrt(ss), 1e12)``; Keras 3.0-3.5 and
    tf.keras (``tf.math.l2_normalize``) with ``rsqrt(max(ss, 1e-12))``, which differs for
    norms between 1e-12 and 1e-6 (Keras 3.6 gives them norm 1)."""
    axes = _axes(config.get("axis", -1))
    if parse_version(ctx.keras_version).before(3, 6, unrecorded=False):
        def inverse(v):
            return jax.lax.rsqrt(jnp.maximum(v, 1e-12))
    else:
        def inverse(v):
            return inverse_l2_norm(v, 1e-12)

    def call(params, x, *, rt):
        return l2_normalized(rt, x, axes, inverse)

    return LayerImpl(call=call, relevance=True)


@register_layer("Rescaling")
def _rescaling(config, ctx):
    scale = np.asarray(config.get("scale", 1.0), dtype=np.float32)
    offset = np.asarray(config.get("offset", 0.0), dtype=np.float32)

    def call(params, x, *, rt):
        return x * scale + offset

    return LayerImpl(call=call, relevance=True)


@register_layer("Normalization")
def _normalization(config, ctx):
    """``(x - mean) / max(sqrt(variance), 1e-7)``; ``invert``: ``mean + x * max(...)``.

    The statistics come from the config (``mean=``/``variance=`` given at construction) or
    from the weights ``mean, variance, count`` written by ``adapt``.
    """
    axes = _axes(config.get("axis", -1))
    invert = bool(config.get("invert", False))
    cfg_mean, cfg_var = config.get("mean"), config.get("variance")
    from_config = cfg_mean is not None

    def convert(w):
        return {"mean": np.asarray(w[0], np.float32), "variance": np.asarray(w[1], np.float32)}

    def stats(params, nd):
        if from_config:
            mean = jnp.asarray(np.asarray(cfg_mean, np.float32))
            var = jnp.asarray(np.asarray(cfg_var, np.float32))
        else:
            mean, var = params["mean"], params["variance"]
        if mean.ndim == 0 or not axes:
            return mean, var
        keep = sorted(a % nd for a in axes)
        shape = [1] * nd
        # Align the statistics to the kept axes from the right, as Keras does.
        src = list(mean.shape)
        for a, n in zip(keep[len(keep) - len(src):], src):
            shape[a] = n
        return mean.reshape(shape), var.reshape(shape)

    def call(params, x, *, rt):
        mean, var = stats(params, x.ndim)
        std = jnp.maximum(jnp.sqrt(var), _KERAS_EPSILON)
        if invert:
            return mean + x * std
        return (x - mean) / std

    if from_config:
        return LayerImpl(call=call, relevance=True)
    return LayerImpl(call=call, convert_weights=convert, n_weights=3, n_non_trainable=3,
                     relevance=True)
