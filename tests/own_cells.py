"""JAX converters (``model_import.CellImpl``) of the recurrent cells of the user's own that
tests/test_import_rnn_own_cells.py (Keras 3) and tests/test_import_keras2_custom.py
(tf_keras 2.21 fixtures) build: ``MinimalRNNCell`` (keras.io's, with a tanh: ``h = tanh(x W
+ h U)``) and ``TwoStateCell`` (``h = tanh(x W + h U + b)``, ``c = c + h``, output ``h *
sigmoid(c)``). Pure JAX: no Keras needed."""

import jax
import jax.numpy as jnp

from model_import import CellImpl


def _projection(p, x, h):  # x W + h U (+ b): affine, through rt.rule
    y = x @ p["kernel"] + h @ p["recurrent_kernel"]
    return y + p["bias"] if "bias" in p else y


def _sum(p, a, b):
    return a + b


def _gated(p, v, gate):  # a held gate times a value: degree 2
    return v * gate


def minimal_cell(config, ctx):
    def step(params, x, states, *, rt):
        h = rt.act(jnp.tanh, rt.rule(_projection, params, x, states[0]))
        return h, [h]

    u = int(config["units"])
    return CellImpl(step=step, state_size=u, n_weights=2,
                    convert_weights=lambda w: {"kernel": w[0], "recurrent_kernel": w[1]},
                    param_shapes={"kernel": (None, u), "recurrent_kernel": (u, u)})


def two_state_cell(config, ctx, *, plain=False):
    """``plain``: the same values computed without ``rt`` (the rules cannot reach them)."""
    def step(params, x, states, *, rt):
        h, c = states
        if plain:
            h = jnp.tanh(_projection(params, x, h))
            c = c + h
            return h * jax.nn.sigmoid(c), (h, c)
        h = rt.act(jnp.tanh, rt.rule(_projection, params, x, h))
        c = rt.rule(_sum, {}, c, h)
        return rt.rule(_gated, {}, h, rt.held(rt.act(jax.nn.sigmoid, c))), (h, c)

    u = int(config["units"])
    return CellImpl(step=step, state_size=[u, u], n_weights=3,
                    convert_weights=lambda w: dict(zip(("kernel", "recurrent_kernel", "bias"),
                                                       w)))


CELLS = {"MinimalRNNCell": minimal_cell, "TwoStateCell": two_state_cell}
