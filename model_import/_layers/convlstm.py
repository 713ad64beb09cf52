"""Convolutional LSTMs: ``ConvLSTM1D``, ``ConvLSTM2D``, ``ConvLSTM3D`` (Keras 3; tf.keras 2's
``ConvLSTM1D/2D/3D`` have the same config, weights and equations).

An LSTM whose gates are convolutions: at every step ``z = conv(x_t, kernel) + bias +
conv(h, recurrent_kernel)`` with the gates ``i, f, c, o`` along the last axis of the
weights, then ``c = ract(f) * c + ract(i) * act(g)``, ``h = ract(o) * act(c)``. The input
convolution has the layer's ``strides``, ``padding`` (``valid``/``same``, TF-style: the
extra padding of an odd total on the end) and ``dilation_rate``; the recurrent one always
runs with stride 1, ``same`` padding and no dilation (as in Keras), so ``h`` and ``c`` have
the input convolution's output shape. The input convolution of every step is one
convolution before the recurrence; the recurrence is one ``jax.lax.scan`` (run by
:func:`model_import._layers.sequence.run_rnn`).

Weights, in ``layer.weights`` order: ``kernel (*window, in, 4 * filters)``,
``recurrent_kernel (*window, filters, 4 * filters)``, ``bias (4 * filters,)`` (absent with
``use_bias=False``); legacy ``.h5`` names them ``<layer>/conv_lstm_cell/kernel`` and a
``.keras`` file keeps them under the layer's ``cell`` group.

Keras masks are refused: Keras 3 on JAX/NumPy broadcasts a ``(batch, time)`` mask against
the wrong axes of the ``(batch, *space, filters)`` states, so there is no consistent
reference to follow.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp
from jax import lax

from model_import._layers.activations import get_activation
from model_import._layers.conv import conv_canonical_vjp
from model_import._layers.registry import LayerImpl, register_layer
from model_import._layers.sequence import (_refuse_stateful, _split_inputs, _state_list,
                                           lstm_update, run_rnn)


def _tuple(v, n: int, what: str, ctx) -> tuple[int, ...]:
    if isinstance(v, (list, tuple)):
        if len(v) != n:
            raise ctx.error(f"{what} {list(v)} has {len(v)} entries, expected {n} (one per "
                            "spatial axis)")
        return tuple(int(i) for i in v)
    return (int(v),) * n


def _same_pads(size, window, stride, dilation):
    k_eff = [(w - 1) * d + 1 for w, d in zip(window, dilation)]
    return tuple(tuple(int(v) for v in p)
                 for p in lax.padtype_to_pads(size, k_eff, stride, "SAME"))


def _conv(x, k, strides, padding, dilation):
    """Channels-last ``x (B, *space, in)`` with ``k (*window, in, out)``."""
    rank = k.ndim - 2
    if padding == "same":
        pads = _same_pads(x.shape[1:1 + rank], k.shape[:rank], strides, dilation)
    else:
        pads = ((0, 0),) * rank
    return conv_canonical_vjp(x, k, strides, pads, dilation)


def _make_convlstm(rank: int):
    def convert(config: Mapping[str, Any], ctx):
        _refuse_stateful(config, ctx)
        filters = int(config["filters"])
        window = _tuple(config["kernel_size"], rank, "kernel_size", ctx)
        strides = _tuple(config.get("strides", 1), rank, "strides", ctx)
        dilation = _tuple(config.get("dilation_rate", 1), rank, "dilation_rate", ctx)
        padding = str(config.get("padding", "valid")).lower()
        if padding not in ("valid", "same"):
            raise ctx.error(f"padding {padding!r} is not supported; expected 'valid' or "
                            "'same' (what Keras accepts for ConvLSTM layers)")
        channels_first = config.get("data_format") == "channels_first"
        act = get_activation(config.get("activation", "tanh"), ctx.keras_major, ctx)
        ract = get_activation(config.get("recurrent_activation", "sigmoid"), ctx.keras_major,
                              ctx)
        use_bias = bool(config.get("use_bias", True))
        return_sequences = bool(config.get("return_sequences", False))
        return_state = bool(config.get("return_state", False))
        go_backwards = bool(config.get("go_backwards", False))
        ones = (1,) * rank

        def to_last(a, lead):  # channels_first (..., C, *space) -> channels_last
            return jnp.moveaxis(a, lead, -1) if channels_first else a

        def to_first(a, lead):
            return jnp.moveaxis(a, -1, lead) if channels_first else a

        def input_conv(p, v):
            y = _conv(v, p["kernel"], strides, padding, dilation)
            return y + p["bias"] if "bias" in p else y

        def recurrent_conv(p, z_x, h):
            return z_x + _conv(h, p["recurrent_kernel"], ones, "same", ones)

        def call(params, x, *args, rt, mask=None, initial_state=None, **kwargs):
            if args:
                initial_state = args[0]
            x, mask, initial_state = _split_inputs(x, mask, initial_state)
            if mask is not None:
                raise ValueError(
                    f"{ctx.class_name} received a Keras mask, which is not supported (Keras 3 "
                    "on JAX/NumPy broadcasts a (batch, time) mask against the wrong axes of "
                    "the states); expected no mask. Remove the Masking/mask_zero before it")
            n, t = x.shape[:2]
            x = to_last(x, 2)
            proj = {"kernel": params["kernel"]}
            if use_bias:
                proj["bias"] = params["bias"]
            xw = rt.rule(input_conv, proj, x.reshape((n * t,) + x.shape[2:]))
            xw = xw.reshape((n, t) + xw.shape[1:])
            rk = {"recurrent_kernel": params["recurrent_kernel"]}
            state_shape = (n,) + xw.shape[2:-1] + (filters,)
            states = _state_list(initial_state)
            if states is None:
                states = [jnp.zeros(state_shape, xw.dtype)] * 2
            if len(states) != 2:
                raise ValueError(f"{ctx.class_name} expects 2 initial states (h, c), got "
                                 f"{len(states)}")
            if initial_state is not None:
                states = [to_last(s, 1) for s in states]
            for s in states:
                if tuple(s.shape) != state_shape:
                    raise ValueError(f"{ctx.class_name}'s initial states must have the "
                                     f"shape {state_shape} (channels-last), got {s.shape}")

            def step(z_x, st):  # as an LSTM cell's, for LRP (sequence._Cell.step)
                h, c = st
                z = rt.rule(recurrent_conv, rk, z_x, h)
                h, c = lstm_update(rt, act, ract, c, *jnp.split(z, 4, axis=-1))
                return h, (h, c)

            outs, final = run_rnn(step, xw, tuple(states), None, go_backwards=go_backwards)
            y = to_first(outs, 2) if return_sequences else to_first(outs[:, -1], 1)
            if return_state:
                return (y, *(to_first(s, 1) for s in final))
            return y

        def compute_mask(mask, *args, **kwargs):
            return [None] * 3 if return_state else None

        shapes = {"kernel": window + (None, 4 * filters),
                  "recurrent_kernel": window + (filters, 4 * filters),
                  "bias": (4 * filters,)}
        names = ("kernel", "recurrent_kernel", "bias") if use_bias else \
            ("kernel", "recurrent_kernel")
        return LayerImpl(call=call, convert_weights=lambda w: dict(zip(names, w)),
                         n_weights=len(names), mask_call=True, compute_mask=compute_mask,
                         weight_groups=("cell",), param_shapes=shapes,
                         # (N, T, C, *space) has its channels on axis 2: a channels-first
                         # model's channels_last() view moves axis 1, so none is declared
                         data_format=None if channels_first else "channels_last")

    return convert


register_layer("ConvLSTM1D")(_make_convlstm(1))
register_layer("ConvLSTM2D")(_make_convlstm(2))
register_layer("ConvLSTM3D")(_make_convlstm(3))
