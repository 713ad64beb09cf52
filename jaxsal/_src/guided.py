"""Modified ReLU backward passes as ``jax.custom_vjp`` functions.

- Guided backpropagation (Springenberg et al., 2015, "Striving for Simplicity: The All
  Convolutional Net"): ``dx = dy * [dy > 0] * [x > 0]``.
- Deconvnet (Zeiler & Fergus, 2014, "Visualizing and Understanding Convolutional
  Networks"): ``dx = dy * [dy > 0]`` (the ReLU applied to the backward signal).

The forward value is the ordinary ReLU in both. A model built with one of these
(``model.with_backprop("guided")``) is otherwise unchanged.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from model_import._layers.relu import relu as standard_relu

Array = jax.Array


@jax.custom_vjp
def guided_relu(x: Array) -> Array:
    """ReLU of ``x`` whose VJP passes only positive gradients at positive inputs."""
    return jnp.maximum(x, 0.0)


def _guided_fwd(x):
    y = jnp.maximum(x, 0.0)
    return y, y > 0  # a boolean residual (was the float32 input), read off the output


def _guided_bwd(positive, g):
    return (jnp.where((g > 0) & positive, g, jnp.zeros_like(g)),)


guided_relu.defvjp(_guided_fwd, _guided_bwd)


@jax.custom_vjp
def deconvnet_relu(x: Array) -> Array:
    """ReLU of ``x`` whose VJP is the ReLU of the incoming gradient (input sign ignored)."""
    return jnp.maximum(x, 0.0)


def _deconv_fwd(x):
    return jnp.maximum(x, 0.0), None


def _deconv_bwd(_, g):
    return (jnp.maximum(g, 0.0),)


deconvnet_relu.defvjp(_deconv_fwd, _deconv_bwd)

RELU_MODES = ("standard", "guided", "deconvnet")


def relu_for_mode(mode: str) -> Callable[[Array], Array]:
    """The ReLU of backward rule ``mode``: ``"standard"`` -> the importer's ReLU
    (``jax.nn.relu``'s values and derivatives); ``"guided"`` -> :func:`guided_relu`;
    ``"deconvnet"`` -> :func:`deconvnet_relu`."""
    if mode == "standard":
        return standard_relu
    if mode == "guided":
        return guided_relu
    if mode == "deconvnet":
        return deconvnet_relu
    raise ValueError(f"unknown backprop mode {mode!r}; expected one of {RELU_MODES}")
