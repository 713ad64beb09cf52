"""Convolutions: Conv1D/2D/3D (groups, dilation, TF-style SAME padding, causal, channels_first),
DepthwiseConv1D/2D, SeparableConv1D/2D."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from model_import._layers.registry import LayerImpl, register_layer


def _tuple(v, n):
    if isinstance(v, (list, tuple)):
        return tuple(int(i) for i in v)
    return (int(v),) * n


def _padding(config, rank):
    pad = str(config.get("padding", "valid")).upper()
    if pad not in ("VALID", "SAME", "CAUSAL"):
        raise ValueError(f"unknown padding {pad!r}")
    return pad


def _channels_first(config):
    return config.get("data_format") == "channels_first"


def _wrap_channels(fn, channels_first):
    """Flax convolutions are channels-last; move the channel axis around them if needed."""
    if not channels_first:
        return fn

    def wrapped(params, x, *, rt):
        y = fn(params, jnp.moveaxis(x, 1, -1), rt=rt)
        return jnp.moveaxis(y, -1, 1)

    return wrapped


def _conv_module(config, rank, features, groups, kernel_size=None, strides=None, use_bias=None):
    return nn.Conv(
        features=features,
        kernel_size=kernel_size or _tuple(config["kernel_size"], rank),
        strides=strides or _tuple(config.get("strides", 1), rank),
        padding=_padding(config, rank),
        kernel_dilation=_tuple(config.get("dilation_rate", 1), rank),
        feature_group_count=groups,
        use_bias=bool(config.get("use_bias", True)) if use_bias is None else use_bias,
    )


def _make_conv(rank):
    def convert(config, ctx):
        filters = int(config["filters"])
        groups = int(config.get("groups", 1) or 1)
        use_bias = bool(config.get("use_bias", True))
        module = _conv_module(config, rank, filters, groups)

        def call(params, x, *, rt):
            return module.apply({"params": params}, x)

        names = ("kernel", "bias") if use_bias else ("kernel",)
        return LayerImpl(call=_wrap_channels(call, _channels_first(config)),
                         activation=config.get("activation"),
                         convert_weights=lambda w: dict(zip(names, w)),
                         n_weights=len(names),
                         data_format="channels_first" if _channels_first(config) else "channels_last")
    return convert


register_layer("Conv1D", "Convolution1D")(_make_conv(1))
register_layer("Conv2D", "Convolution2D")(_make_conv(2))
register_layer("Conv3D", "Convolution3D")(_make_conv(3))


def _depthwise_kernel(k: np.ndarray) -> np.ndarray:
    # Keras (..., in, multiplier) -> Flax grouped conv (..., 1, in * multiplier); output
    # channel c * multiplier + m, as Keras orders it.
    *spatial, cin, mult = k.shape
    return np.reshape(k, (*spatial, 1, cin * mult))


def _depthwise_call(config, rank, kernel_key="depthwise_kernel", bias_key="bias",
                    use_bias=None, strides=None):
    def call(params, x, *, rt):
        k = params[kernel_key]
        cin = x.shape[-1]
        module = _conv_module(config, rank, k.shape[-1], cin, kernel_size=k.shape[:rank],
                              strides=strides, use_bias=False)
        y = module.apply({"params": {"kernel": k}}, x)
        if use_bias and bias_key in params:
            y = y + params[bias_key]
        return y
    return call


def _make_depthwise(rank):
    def convert(config, ctx):
        use_bias = bool(config.get("use_bias", True))

        def weights(w: Sequence[np.ndarray]):
            out = {"depthwise_kernel": _depthwise_kernel(np.asarray(w[0]))}
            if use_bias:
                out["bias"] = w[1]
            return out

        call = _depthwise_call(config, rank, use_bias=use_bias)
        return LayerImpl(call=_wrap_channels(call, _channels_first(config)),
                         activation=config.get("activation"), convert_weights=weights,
                         n_weights=2 if use_bias else 1,
                         data_format="channels_first" if _channels_first(config) else "channels_last")
    return convert


register_layer("DepthwiseConv1D")(_make_depthwise(1))
register_layer("DepthwiseConv2D")(_make_depthwise(2))


def _make_separable(rank):
    def convert(config, ctx):
        use_bias = bool(config.get("use_bias", True))
        depthwise = _depthwise_call(config, rank, use_bias=False)

        def call(params, x, *, rt):
            y = depthwise(params, x, rt=rt)
            pk = params["pointwise_kernel"]
            y = jnp.tensordot(y, pk.reshape(pk.shape[-2], pk.shape[-1]), axes=1)
            if use_bias:
                y = y + params["bias"]
            return y

        def weights(w):
            out = {"depthwise_kernel": _depthwise_kernel(np.asarray(w[0])),
                   "pointwise_kernel": np.asarray(w[1])}
            if use_bias:
                out["bias"] = w[2]
            return out

        return LayerImpl(call=_wrap_channels(call, _channels_first(config)),
                         activation=config.get("activation"), convert_weights=weights,
                         n_weights=3 if use_bias else 2,
                         data_format="channels_first" if _channels_first(config) else "channels_last")
    return convert


register_layer("SeparableConv1D", "SeparableConvolution1D")(_make_separable(1))
register_layer("SeparableConv2D", "SeparableConvolution2D")(_make_separable(2))
