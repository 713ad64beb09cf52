"""Reshaping layers: ZeroPadding1D/2D/3D, Cropping1D/2D/3D, UpSampling1D/2D/3D, Reshape, Permute,
RepeatVector. Spatial layers honour ``data_format`` (channels_first moves the spatial axes)."""

from __future__ import annotations

import math

import jax.numpy as jnp

from model_import._layers.image import BICUBIC_BACKENDS, resize_axes
from model_import._layers.registry import LayerImpl, register_layer


def _pairs(v, rank):
    """Keras padding/cropping spec -> ((before, after),) * rank."""
    if isinstance(v, (int, float)):
        return ((int(v), int(v)),) * rank
    v = list(v)
    if rank == 1:
        if len(v) == 2 and all(isinstance(a, (int, float)) for a in v):
            return ((int(v[0]), int(v[1])),)
        if len(v) == 1:
            return _pairs(v[0], 1)
    out = []
    for a in v:
        if isinstance(a, (int, float)):
            out.append((int(a), int(a)))
        else:
            out.append((int(a[0]), int(a[1])))
    if len(out) != rank:
        raise ValueError(f"expected {rank} (before, after) pairs, got {v!r}")
    return tuple(out)


def _spatial_axes(config, rank, ndim=None):
    cf = config.get("data_format") == "channels_first"
    return tuple(range(2, 2 + rank)) if cf else tuple(range(1, 1 + rank)), cf


def _df(cf):
    return "channels_first" if cf else "channels_last"


def _make_zero_padding(rank):
    def convert(config, ctx):
        pads = _pairs(config.get("padding", 1), rank)
        axes, cf = _spatial_axes(config, rank)

        def call(params, x, *, rt):
            widths = [(0, 0)] * x.ndim
            for a, p in zip(axes, pads):
                widths[a] = p
            return jnp.pad(x, widths)

        return LayerImpl(call=call, data_format=_df(cf))
    return convert


def _make_cropping(rank):
    def convert(config, ctx):
        crops = _pairs(config.get("cropping", 0), rank)
        axes, cf = _spatial_axes(config, rank)

        def call(params, x, *, rt):
            idx = [slice(None)] * x.ndim
            for a, (b, e) in zip(axes, crops):
                if b + e >= x.shape[a]:  # as Keras 3 refuses it, not an empty output
                    raise ValueError(
                        f"{ctx.class_name} layer '{ctx.layer_name}' of an input of shape "
                        f"{tuple(x.shape)}: expected more than {b + e} positions on spatial "
                        f"axis {a} (it crops {b} before and {e} after), got {x.shape[a]}, "
                        "which leaves an empty output (size 0 on that spatial axis; Keras "
                        "refuses it too: 'cropping ... should be smaller than the "
                        "corresponding spatial dimension'); give the model a larger input")
                idx[a] = slice(b, x.shape[a] - e)
            return x[tuple(idx)]

        return LayerImpl(call=call, data_format=_df(cf))
    return convert


_RESIZE_METHODS = {"bilinear": "bilinear", "linear": "bilinear", "bicubic": "bicubic",
                   "cubic": "bicubic", "lanczos3": "lanczos3", "lanczos5": "lanczos5"}


def _make_upsampling(rank):
    def convert(config, ctx):
        size = config.get("size", 2)
        size = (tuple(int(s) for s in size) if isinstance(size, (list, tuple))
                else (int(size),) * rank)
        if rank == 1:
            axes, cf = (1,), False
        else:
            axes, cf = _spatial_axes(config, rank)
        method = str(config.get("interpolation", "nearest"))
        if method != "nearest" and method not in _RESIZE_METHODS:
            raise ctx.error(f"unsupported interpolation {method!r}")
        backend = ctx.backend
        if _RESIZE_METHODS.get(method) == "bicubic":
            ctx.backend_dependent(BICUBIC_BACKENDS)
        keras3 = ctx.keras_major >= 3  # integer images: rounded back (tf.keras 2: floats)

        def call(params, x, *, rt):
            if method == "nearest":
                for a, s in zip(axes, size):
                    x = jnp.repeat(x, s, axis=a)
                return x
            # Keras resizes with half-pixel centres and no antialiasing when upsampling
            return resize_axes(x, axes, [x.shape[a] * s for a, s in zip(axes, size)],
                               _RESIZE_METHODS[method], False, backend, keep_int=keras3)

        return LayerImpl(call=call, data_format=None if rank == 1 else _df(cf))
    return convert


for _rank in (1, 2, 3):
    register_layer(f"ZeroPadding{_rank}D")(_make_zero_padding(_rank))
    register_layer(f"Cropping{_rank}D")(_make_cropping(_rank))
    register_layer(f"UpSampling{_rank}D")(_make_upsampling(_rank))


@register_layer("Reshape")
def _reshape(config, ctx):
    target = tuple(int(-1 if d is None else d) for d in config["target_shape"])

    def call(params, x, *, rt):
        shape = target
        if -1 in target:  # resolved from the example size: an empty batch has no -1
            known = math.prod(d for d in target if d != -1)
            shape = tuple(math.prod(x.shape[1:]) // max(known, 1) if d == -1 else d
                          for d in target)
        return x.reshape(x.shape[0], *shape)

    return LayerImpl(call=call)


@register_layer("Permute")
def _permute(config, ctx):
    dims = tuple(int(d) for d in config["dims"])
    if sorted(dims) != list(range(1, len(dims) + 1)):
        raise ctx.error(f"Permute dims must be a permutation of 1..{len(dims)}, got {dims}")

    def call(params, x, *, rt):
        return jnp.transpose(x, (0, *dims))

    return LayerImpl(call=call)


@register_layer("RepeatVector")
def _repeat_vector(config, ctx):
    n = int(config["n"])

    def call(params, x, *, rt):
        return jnp.repeat(x[:, None, :], n, axis=1)

    return LayerImpl(call=call)
