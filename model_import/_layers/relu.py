"""The ReLU every imported model computes: ``max(x, 0)`` whose derivative reads the output.

``jax.nn.relu`` computes its derivative's mask from its input (``x > 0``), so a program that
takes a gradient has to produce each pre-activation beside the ReLU's output: XLA then
computes the convolution before it and the ReLU apart, where a forward pass alone fuses them
into one call (on a GPU, cuDNN's convolution-bias-activation; the first GPU profile shows
the separate ReLU kernels in gradient programs only). Reading the output instead
(``y > 0``, true exactly where ``x > 0``, NaN included) leaves the fused call free to return
``y`` alone; the backward pass keeps the same boolean mask either way. Values and
derivatives are ``jax.nn.relu``'s (zero at ``x == 0``), forward and reverse mode alike.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


@jax.custom_jvp
def relu(x: Array) -> Array:
    """``max(x, 0)``; its derivative is ``1`` where the output is positive, else ``0``."""
    return jnp.maximum(x, 0)


@relu.defjvp
def _relu_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    y = relu(x)
    return y, jnp.where(y > 0, t, jnp.zeros_like(t))
