"""Functions whose backward pass is a rule's instead of their gradient.

LRP's layer rules and DeepLIFT's rules (installed in a model's :class:`model_import.Runtime`)
keep a layer's or an activation's forward values and replace what its backward pass sends to
its inputs. :func:`with_backward` is the one ``jax.custom_vjp`` they are written with.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def with_backward(forward: Callable[..., Any], backward: Callable[..., Sequence[Any]],
                  params: Any, args: Sequence[Any]) -> Any:
    """``forward(params, *args)`` whose backward pass is ``backward(params, args, out,
    cotangent)`` (a sequence: one cotangent per argument) instead of its gradient; ``params``
    get zero cotangents. They are an argument, not closed over: a rule inside a scan (an RNN
    cell's) must not capture the scan's outer values."""

    @jax.custom_vjp
    def call(p, *a):
        return forward(p, *a)

    def fwd(p, *a):
        z = forward(p, *a)
        return z, (p, a, z)

    def bwd(res, g):
        p, a, z = res
        return (jax.tree_util.tree_map(no_cotangent, p), *backward(p, a, z, g))

    call.defvjp(fwd, bwd)
    return call(params, *args)


def no_cotangent(v: Any) -> Any:
    """The zero cotangent of ``v`` (``float0`` for integers): what a rule's ``custom_vjp``
    returns for the params it takes as an argument."""
    if jnp.issubdtype(jnp.result_type(v), jnp.inexact):
        return jnp.zeros_like(v)
    return np.zeros(np.shape(v), jax.dtypes.float0)
