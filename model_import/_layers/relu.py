"""The ReLU every imported model computes: ``max(x, 0)`` whose derivative reads the output.

``jax.nn.relu`` differentiates through its input (``x > 0``), so a program that takes a
gradient keeps each pre-activation alive for the backward pass: XLA cannot then fuse the
ReLU into the convolution before it (on a GPU, cuDNN's convolution-bias-activation call)
and stores four bytes per unit. Reading the output instead (``y > 0``, true exactly where
``x > 0``, NaN included) leaves one boolean per unit as the only residual and the fused
convolution free to return ``y`` alone. Values and derivatives are ``jax.nn.relu``'s (zero
at ``x == 0``), forward and reverse mode alike.
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
