"""The custom layers of ``keras.applications.ConvNeXt*`` (Keras 3 and tf.keras):
``LayerScale`` (a learned per-channel scale ``x * gamma``) and ``StochasticDepth`` (drops the
residual branch in training, the identity at inference). ``LayerScale`` is a rule layer of
LRP (its gradient would scale the relevance by ``gamma``; the epsilon rule passes it on)."""

from __future__ import annotations

from model_import._layers.registry import LayerImpl, register_layer


@register_layer("LayerScale")
def _layer_scale(config, ctx):
    def call(params, x, *, rt):
        return x * params["gamma"]

    return LayerImpl(call=call, convert_weights=lambda w: {"gamma": w[0]}, n_weights=1,
                     relevance=True)


@register_layer("StochasticDepth")
def _stochastic_depth(config, ctx):
    def call(params, x, *, rt):
        return x

    return LayerImpl(call=call)
