"""Core layers: InputLayer, Dense, Flatten, Dropout-like (identity at inference)."""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from model_import._layers.registry import LayerImpl, accepts_bias, register_layer


def _identity(params, x, *args, rt, **kwargs):
    return x


@register_layer("InputLayer")
def _input(config, ctx):
    return LayerImpl(call=_identity)


# Regularization layers are the identity at inference, which is what attribution explains.
@register_layer("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
                "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization",
                "Identity")
def _inference_identity(config, ctx):
    return LayerImpl(call=_identity)


def _bias_weights(names):
    def convert(weights):
        return dict(zip(names, weights))
    return convert


@register_layer("Dense")
def _dense(config, ctx):
    units = int(config["units"])
    use_bias = bool(config.get("use_bias", True))
    module = nn.Dense(units, use_bias=use_bias)

    def call(params, x, *, rt):
        return module.apply({"params": params}, x)

    return LayerImpl(call=accepts_bias(call, use_bias), activation=config.get("activation"),
                     convert_weights=_bias_weights(("kernel", "bias") if use_bias else ("kernel",)),
                     n_weights=2 if use_bias else 1, affine=use_bias, relevance=True,
                     param_shapes={"kernel": (None, units), "bias": (units,)})


@register_layer("Flatten")
def _flatten(config, ctx):
    channels_first = config.get("data_format") == "channels_first"

    def call(params, x, *, rt):
        if channels_first and x.ndim > 2:
            x = jnp.moveaxis(x, 1, -1)  # Keras flattens channels_first inputs in channels_last order
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))

    return LayerImpl(call=call)
