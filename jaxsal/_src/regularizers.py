"""Image priors for activation maximization, each a weighted term.

A :class:`Regularizer` is either a penalty ``penalty(image) -> scalar`` added to the loss
(already multiplied by its weight) or a step operation ``step(image) -> image`` applied to the
image every ``every`` optimizer steps (Yosinski et al. 2015, "Understanding Neural Networks
Through Deep Visualization": L2 decay and Gaussian blur every few steps), or both.

Penalties see the image rescaled to the unit range, ``(x - lo) / (hi - lo)``, and are means
over pixels, so a weight means the same for a 28x28 image in [0, 1] and a 224x224x3 image in
[0, 255].
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxsal._src.transforms import gaussian_blur

Array = jax.Array


class Regularizer(NamedTuple):
    """``penalty(unit_image) -> scalar`` (weighted) and/or ``step(unit_image) -> unit_image``
    applied after every ``every``-th update. Either function may be ``None``."""

    penalty: Callable[[Array], Array] | None = None
    step: Callable[[Array], Array] | None = None
    every: int = 1
    name: str = "custom"


def _check_weight(weight: float, what: str) -> float:
    w = float(weight)
    if w < 0:
        raise ValueError(f"{what}: expected a weight >= 0, got {weight}")
    return w


def total_variation(weight: float = 1.0, *, beta: float = 1.0) -> Regularizer:
    """``weight * (mean |dx|^beta + mean |dy|^beta)`` over neighbouring pixels (anisotropic
    total variation; Mahendran & Vedaldi 2015, "Understanding Deep Image Representations by
    Inverting Them"). ``beta=1`` favours flat regions with sharp edges, ``beta=2`` smoothness.
    """
    w = _check_weight(weight, "total_variation")
    if beta <= 0:
        raise ValueError(f"total_variation: expected beta > 0, got {beta}")

    def penalty(x: Array) -> Array:
        dy = x[1:, :, :] - x[:-1, :, :]
        dx = x[:, 1:, :] - x[:, :-1, :]
        return w * (jnp.mean(jnp.abs(dy) ** beta) + jnp.mean(jnp.abs(dx) ** beta))

    return Regularizer(penalty=penalty, name=f"total_variation({weight})")


def lp_norm(weight: float = 1.0, *, p: float = 1.0, center: float = 0.0) -> Regularizer:
    """``weight * mean |x - center|^p`` (``center`` as a fraction of the range: 0 = ``lo``).
    ``p=1`` makes images sparse around ``center`` (a dark background for MNIST-like data)."""
    w = _check_weight(weight, "lp_norm")
    if p <= 0:
        raise ValueError(f"lp_norm: expected p > 0, got {p}")

    def penalty(x: Array) -> Array:
        return w * jnp.mean(jnp.abs(x - center) ** p)

    return Regularizer(penalty=penalty, name=f"lp_norm({weight}, p={p})")


def l2_decay(weight: float = 1.0, *, center: float = 0.0) -> Regularizer:
    """``weight * mean (x - center)^2``: its gradient shrinks every pixel towards ``center``
    (a fraction of the range), the L2 decay of Yosinski et al. 2015."""
    w = _check_weight(weight, "l2_decay")

    def penalty(x: Array) -> Array:
        return w * jnp.mean((x - center) ** 2)

    return Regularizer(penalty=penalty, name=f"l2_decay({weight})")


def blur_every(every: int, sigma: float = 0.5, *, weight: float = 1.0) -> Regularizer:
    """Blur the image with a Gaussian of width ``sigma`` after every ``every``-th update;
    ``weight`` in [0, 1] mixes the blurred image in (``1`` replaces the image)."""
    every = int(every)
    if every < 1:
        raise ValueError(f"blur_every: expected every >= 1, got {every}")
    if sigma <= 0:
        raise ValueError(f"blur_every: expected sigma > 0, got {sigma}")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"blur_every: expected 0 <= weight <= 1, got {weight}")

    def step(x: Array) -> Array:
        return (1.0 - weight) * x + weight * gaussian_blur(x, sigma)

    return Regularizer(step=step, every=every, name=f"blur_every({every}, {sigma})")
