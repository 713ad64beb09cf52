"""Image priors for activation maximization, each a weighted term.

A :class:`Regularizer` is either a penalty ``penalty(image) -> scalar`` added to the loss
(already multiplied by its weight) or a step operation ``step(image) -> image`` applied to the
image every ``every`` optimizer steps (Yosinski et al. 2015, "Understanding Neural Networks
Through Deep Visualization": L2 decay and Gaussian blur every few steps), or both.

Penalties see the image rescaled to the unit range, ``(x - lo) / (hi - lo)``, and are means
over pixels, so a weight means the same for a 28x28 image in [0, 1] and a 224x224x3 image in
[0, 255].

The factories return regularizers that are equal when built with equal hyperparameters
(``total_variation(0.5) == total_variation(0.5)``), so calls that build them inline share a
compiled program.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxsal._src.transforms import (check_count, check_finite_array, check_real, closure,
                                    frozen, gaussian_blur)

Array = jax.Array

#: Smoothing of ``|d|^q`` for exponents ``q < 1``, whose slope is infinite at ``d = 0``
#: (flat regions, clipped pixels: NaN gradients): ``(d^2 + SUBUNIT_EPS)^(q/2)``, which has a
#: zero gradient at 0, is ``SUBUNIT_EPS^(q/2)`` there (``1e-3^q``: 0.03 for ``q = 0.5``)
#: instead of 0, and is within 0.5% of ``|d|^q`` for ``|d| >= 0.01`` (of the unit range).
#: Exponents ``>= 1`` are computed exactly.
SUBUNIT_EPS = 1e-6


class Regularizer(NamedTuple):
    """``penalty(unit_image) -> scalar`` (weighted) and/or ``step(unit_image) -> unit_image``
    applied after every ``every``-th update. Either function may be ``None``; ``name`` labels
    it (in its ``repr`` and in messages)."""

    penalty: Callable[[Array], Array] | None = None
    step: Callable[[Array], Array] | None = None
    every: int = 1
    name: str = "custom"


def _check_weight(weight: float, what: str) -> float:
    return check_real(weight, what, "weight", low=0)


def _abs_pow(d: Array, q: float) -> Array:
    """``|d|^q``; for ``q < 1`` smoothed at 0 (see :data:`SUBUNIT_EPS`) so that its
    gradient stays finite where ``d = 0`` (flat regions, clipped pixels). For ``q = 1`` the
    gradient at ``d = 0`` is ``sign(0) = 0``, as TensorFlow's ``abs`` (``jnp.abs`` has slope 1
    there: a flat image would be pushed off the penalty's minimum, a symmetric one
    asymmetrically); for ``q > 1`` it is 0 anyway."""
    if q == 1.0:
        return d * jax.lax.stop_gradient(jnp.sign(d))
    if q > 1.0:
        return jnp.abs(d) ** q
    return (d * d + SUBUNIT_EPS) ** (q / 2)


def _check_exponent(q: float, what: str, name: str) -> float:
    return check_real(q, what, name, low=0, above=True, kind="an exponent")


def total_variation(weight: float = 1.0, *, beta: float = 1.0) -> Regularizer:
    """``weight * (mean |dx|^beta + mean |dy|^beta)`` over neighbouring pixels (anisotropic
    total variation; Mahendran & Vedaldi 2015, "Understanding Deep Image Representations by
    Inverting Them"). ``beta=1`` favours flat regions with sharp edges, ``beta=2`` smoothness.
    ``beta < 1`` (sparser edges) is smoothed where neighbours are equal, so that gradients stay
    finite (:data:`SUBUNIT_EPS`).
    """
    w = _check_weight(weight, "total_variation")
    beta = _check_exponent(beta, "total_variation", "beta")
    name = f"total_variation({w})" if beta == 1.0 else f"total_variation({w}, beta={beta})"
    return Regularizer(penalty=closure(_total_variation, w=w, beta=beta), name=name)


def _total_variation(x: Array, *, w: float, beta: float) -> Array:
    # an axis of one pixel has no neighbours along it: its term is 0 (not a mean of nothing)
    terms = [jnp.mean(_abs_pow(jnp.diff(x, axis=ax), beta)) for ax in (0, 1) if x.shape[ax] > 1]
    return w * sum(terms, jnp.zeros((), x.dtype))


def lp_norm(weight: float = 1.0, *, p: float = 1.0, center: float = 0.0) -> Regularizer:
    """``weight * mean |x - center|^p`` (``center`` as a fraction of the range: 0 = ``lo``).
    ``p=1`` makes images sparse around ``center`` (a dark background for MNIST-like data);
    ``p < 1`` is smoothed at ``center`` so that gradients stay finite (:data:`SUBUNIT_EPS`)."""
    w = _check_weight(weight, "lp_norm")
    p = _check_exponent(p, "lp_norm", "p")
    # a number, or an array such as one value per channel
    center = _check_center(center, "lp_norm")
    return Regularizer(penalty=closure(_lp_norm, w=w, p=p, center=center),
                       name=f"lp_norm({w}, p={p}, center={center})")


def _check_center(center: Any, what: str) -> Any:
    c = check_finite_array(center, what, "center")
    if c.ndim > 1:
        raise ValueError(f"{what}: expected center as a number or one value per channel "
                         f"(C,), got shape {c.shape}")
    return frozen(c)


def _center(center: Any, x: Array, what: str) -> Array:
    """``center`` as an array for the image ``x``: a scalar, or one value per channel."""
    c = jnp.asarray(center, x.dtype)
    if c.ndim == 1 and c.shape[0] != x.shape[-1]:  # (C,) would broadcast to more channels
        raise ValueError(f"{what}: center has {c.shape[0]} values (one per channel) but the "
                         f"images have {x.shape[-1]} channel(s) (shape {x.shape}); pass "
                         f"{x.shape[-1]} values or one number")
    return c


def _lp_norm(x: Array, *, w: float, p: float, center: Any) -> Array:
    return w * jnp.mean(_abs_pow(x - _center(center, x, "lp_norm"), p))


def l2_decay(weight: float = 1.0, *, center: float = 0.0) -> Regularizer:
    """``weight * mean (x - center)^2``: its gradient shrinks every pixel towards ``center``
    (a fraction of the range), the L2 decay of Yosinski et al. 2015."""
    w = _check_weight(weight, "l2_decay")
    # a number, or an array such as one value per channel
    center = _check_center(center, "l2_decay")
    return Regularizer(penalty=closure(_l2_decay, w=w, center=center),
                       name=f"l2_decay({w}, center={center})")


def _l2_decay(x: Array, *, w: float, center: Any) -> Array:
    return w * jnp.mean((x - _center(center, x, "l2_decay")) ** 2)


def blur_every(every: int, sigma: float = 0.5, *, weight: float = 1.0) -> Regularizer:
    """Blur the image with a Gaussian of width ``sigma`` after every ``every``-th update;
    ``weight`` in [0, 1] mixes the blurred image in (``1`` replaces the image)."""
    every = check_count(every, "blur_every", "every", low=1)
    sigma = check_real(sigma, "blur_every", "sigma", low=0, above=True,
                       kind="a finite width in pixels")
    weight = check_real(weight, "blur_every", "weight", low=0, high=1)
    return Regularizer(step=closure(_blur, sigma=sigma, weight=weight), every=every,
                       name=f"blur_every({every}, {sigma})")


def _blur(x: Array, *, sigma: float, weight: float) -> Array:
    return (1.0 - weight) * x + weight * gaussian_blur(x, sigma)
