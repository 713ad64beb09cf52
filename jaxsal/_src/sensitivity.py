"""Maximum sensitivity of an explanation (Yeh et al., 2019, "On the (In)fidelity and
Sensitivity of Explanations"; Captum's ``captum.metrics.sensitivity_max``).

``SENS_max = max_{|d|_inf <= r} |e(x + d) - e(x)| / |e(x)|``, estimated by Monte Carlo: the
largest relative change of the explanation over ``n`` perturbations drawn uniformly from the
L-infinity ball of radius ``r``. That is Captum's relative form; Yeh et al.'s ``SENS_max`` is
the change itself, ``max |e(x + d) - e(x)|``: the value times ``|e(x)|`` for the same draws.
The explanation is any function of the inputs (a jaxsal method with its options closed over);
it is called ``n + 1`` times on batches of ``x``'s shape, so a jaxsal method compiles once and
reuses its program.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import base, reals
from jaxsal._src.finite import NonFiniteMaps, listed, non_finite_rows
from jaxsal._src.validate import (_maps_in_float32, all_finite, given_inputs, map_peaks,
                                  narrowed_dtype, one_input_error, peak_exponent,
                                  several_arrays, times_pow2)

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

NORMS = (1, 2, np.inf)


@functools.partial(jax.jit, static_argnames=("radius", "perturbation"))
def _perturbed(key: Array, j: Array, index: Array, x: Array, radius: float,
               perturbation: Callable | None) -> Array:
    """``x`` perturbed: input ``i``'s ``j``-th draw is keyed by ``(key, j, index[i])``."""
    def one(i, xi):
        k = jax.random.fold_in(jax.random.fold_in(key, j), i)
        if perturbation is not None:
            return perturbation(k, xi)
        return xi + jax.random.uniform(k, xi.shape, xi.dtype, -radius, radius)

    return jax.vmap(one)(index, x)


def _scaled_norm(a: Array, ord: float, batch_dims: int) -> tuple[Array, Array]:
    """The ``ord``-norm of each map (the axes after ``batch_dims``) as ``(m, e)``, the norm
    ``m * 2**e``: ``m`` is the norm of the map scaled by ``2**-e`` (exact) to a largest
    magnitude in ``[0.5, 1)``, so that its sums (of squares) neither overflow nor underflow
    in float32 (maps of 1e30 came out inf, of 1e-30 0)."""
    a = a.reshape(a.shape[:batch_dims] + (-1,))
    e = peak_exponent(a, batch_dims)
    a = jnp.abs(times_pow2(a, -e[..., None]))
    if ord == np.inf:
        return a.max(-1, initial=0), e
    if ord == 1:
        return a.sum(-1), e
    return jnp.sqrt((a * a).sum(-1)), e


@functools.partial(jax.jit, static_argnames=("ord", "batch_dims"))
def _norm(a: Array, ord: float, batch_dims: int) -> tuple[Array, Array]:
    """:func:`_scaled_norm`, in float32 at least: a float16 sum of squares overflows above
    65504 (the sensitivity then came out 0)."""
    return _scaled_norm(a.astype(jnp.promote_types(a.dtype, jnp.float32)), ord, batch_dims)


@functools.partial(jax.jit, static_argnames=("ord", "batch_dims"))
def _relative_change(e: Array, e0: Array, m0: Array, x0: Array, ord: float,
                     batch_dims: int) -> tuple[Array, Array]:
    """``(|e - e0| / |e0|, peak)`` per map, ``|e0| = m0 * 2**x0`` (:func:`_norm`; a map
    whose norm is 0 is compared by its absolute change), and each map's largest magnitude
    of ``e``. Both maps are scaled by one power of two first (exact): values of opposite
    signs near float32's largest have a difference beyond it."""
    k = jnp.maximum(peak_exponent(e, batch_dims), peak_exponent(e0, batch_dims))
    kk = -k.reshape(k.shape + (1,) * (e.ndim - batch_dims))
    m, x = _scaled_norm(times_pow2(e, kk) - times_pow2(e0, kk), ord, batch_dims)
    zero = m0 == 0
    ratio = m / jnp.where(zero, 1.0, m0)
    return times_pow2(ratio, x + k - jnp.where(zero, 0, x0)), map_peaks(e, batch_dims)


def _explained(explain: Callable, x: Array, what: str, like: Array | None = None) -> Array:
    e = explain(x)
    if several_arrays(e):
        # several inputs' maps: stacked, the list's axis would be taken for the batch's
        raise ValueError(
            f"sensitivity_max: explain returned a {type(e).__name__} of {len(e)} maps (for "
            f"{what}; a method's maps for a model of several inputs), where it compares one "
            "array of maps (N, ...) per input; return one input's maps, e.g. explain=lambda "
            "v: jaxsal.saliency(m, [v, other], t)[0]")
    e = base.native(e)
    if isinstance(e, np.ndarray):
        # float64 maps (x64 off) that JAX would make inf: refused as such, not as not finite
        # (each call's maps scaled apart would change their relative change)
        e = _maps_in_float32(
            e, 1, f"sensitivity_max: explain returned maps (for {what})", None,
            fix="the relative sensitivity |e(x + d) - e(x)| / |e(x)| does not change when "
                "every call's maps are divided by one constant (maps of norm 0 aside, "
                "compared by their absolute change): divide them in explain by one that "
                "brings them within float32's range, the same for every call (their norms "
                "are then taken without overflow), e.g. explain=lambda v: f(v) / 2.0 ** 130 "
                "for maps up to 1e39; ")
        if e.dtype.kind in "iu" and narrowed_dtype(e.dtype) is not None:
            # int64 (uint64) maps without x64, which JAX would wrap around to int32 beyond
            # its range (2**32 + 1 read as 1): made the float32 they are compared in here
            e = e.astype(np.float32)
    try:
        e = jnp.asarray(e)
    except (TypeError, ValueError):
        raise TypeError(f"sensitivity_max: explain(x) must return one array of maps, got "
                        f"{type(e).__name__} ({what})") from None
    # integer (uint8 images of maps), bool (thresholded masks) and half precision maps are
    # compared in float32 at least: e(x + d) - e(x) in uint8 wrapped around (255 for -1),
    # and in bool JAX refuses the subtraction
    e = e.astype(jnp.promote_types(e.dtype, jnp.float32))
    if like is not None and e.shape != like.shape:
        raise ValueError(f"sensitivity_max: explain returned maps of shape {e.shape} for "
                         f"{what}, but {like.shape} for x itself; expected the same shape "
                         "(fix the targets as class ids: targets=None follows the prediction, "
                         "which may change with the input, but keeps its shape)")
    rows = non_finite_rows(e)  # (not checked under the caller's jit: no values)
    if rows:
        # a NonFiniteMaps naming the inputs, as the methods and the other evaluations raise
        raise NonFiniteMaps(
            f"sensitivity_max: explain returned maps that are not finite (NaN or inf) for "
            f"{listed(rows)} (on {what}), so their sensitivity would be NaN. Check the method "
            "on these inputs (explain(x[i:i+1])); a jaxsal method's own check_finite=True "
            "names the cause", rows)
    return e


def sensitivity_max(explain: Callable[[Array], ArrayLike], x: ArrayLike, *,
                    key: jax.Array | int | None = None, n: int = 10, radius: float = 0.02,
                    ord: float = 2, batch_dims: int = 1,
                    perturbation: Callable[[Array, Array], Array] | None = None,
                    index_offset: int = 0) -> Array:
    """The maximum sensitivity of an explanation (Yeh et al., 2019): over ``n`` random
    perturbations ``d`` with ``|d|_inf <= radius``, the largest ``|e(x + d) - e(x)| /
    |e(x)|`` per input (Captum's relative form: times ``|e(x)|``, Yeh et al.'s change
    itself). Lower is more robust.

    Args:
      explain: ``explain(x) -> maps`` with the batch axis first, e.g.
        ``lambda x: jaxsal.saliency(model, x, targets=3)``; maps of any dtype (uint8,
        bool masks) are compared in float32 at least. Targets that follow the
        prediction (``targets=None``) may explain another class for a perturbed input; fix
        them as ids to measure the map's own change.
      x: ``(N, ...)``: the inputs ``explain`` takes (one floating array). float16 and
        bfloat16 inputs are widened to float32 (exactly) and perturbed in float32:
        ``explain`` gets float32 inputs.
      key: a ``jax.random`` key or an int seed (required).
      n: perturbations per input (10, Captum's default).
      radius: the L-infinity radius of the uniform perturbations (0.02, Captum's), in
        ``x``'s units.
      ord: the norm over each map's values: 2 (Frobenius, Captum's default), 1 or
        ``np.inf``. A map whose norm is 0 is compared by its absolute change (Captum).
      batch_dims: leading axes of the maps kept apart (1: one value per input; 2 with maps
        ``(N, T, ...)``: one per input and target).
      perturbation: instead of the uniform draw, ``perturbation(key, x_i) -> x_i'`` (the
        perturbed input itself, ``x_i``'s shape), a pure function of its key.
      index_offset: the position of ``x[0]`` in a larger batch (its draws are keyed by it);
        an int, or an integer traced by the caller's ``jax.jit``.
    Returns:
      ``(N,)``, or the maps' first ``batch_dims`` axes.
    Raises:
      jaxsal.NonFiniteMaps: ``explain`` returned maps holding NaN/inf for some inputs, of
        ``x`` or of a perturbed copy (their sensitivity would be NaN); ``.rows`` lists those
        inputs. Not checked under the caller's ``jax.jit`` (no values there).
      ValueError: a map of norm 0 at ``x`` whose absolute change is beyond float32's range
        (not scale-free, unlike the relative change, which is computed on maps scaled by
        powers of two: maps of 1e38 or 1e-30 give the value of maps near 1); not under the
        caller's ``jax.jit``.
    """
    key = base.check_key(key, "sensitivity_max")
    index_offset = base.check_index_offset(index_offset)
    n_samples = base.check_n(n, "perturbations")
    if not callable(explain):
        raise TypeError(f"sensitivity_max: expected explain as a function x -> maps, got "
                        f"{type(explain).__name__}")
    if perturbation is not None and not callable(perturbation):
        raise TypeError(f"expected perturbation as a function (key, x_i) -> x_i', got "
                        f"{type(perturbation).__name__}")
    radius = reals.check_real(radius, "radius", low=0, above=True,
                              kind="a finite number: the perturbations' largest norm")
    if ord not in NORMS or isinstance(ord, bool):
        raise ValueError(f"expected ord as one of 1, 2, np.inf, got {ord!r}")
    batch_dims = base.check_count(batch_dims, "batch_dims", required=True)
    if several_arrays(x):
        # several inputs: no one noise radius over them
        raise one_input_error(sensitivity_max, given_inputs(None, x))
    try:
        xa = jnp.asarray(base.native(x))
    except (TypeError, ValueError) as e:  # (ragged lists)
        raise TypeError(f"sensitivity_max: expected x as one floating array (N, ...), got a "
                        f"{type(x).__name__} that is no array ({e}); pass np.asarray(x) of "
                        "the inputs explain takes") from None
    if xa.ndim < 1 or not jnp.issubdtype(xa.dtype, jnp.floating):
        raise TypeError(f"sensitivity_max: expected x as a floating array (N, ...), got dtype "
                        f"{xa.dtype} and shape {xa.shape}; inputs of ids cannot be perturbed "
                        "by noise")
    if not all_finite(xa):
        raise ValueError("sensitivity_max: x contains NaN or infinite values")
    if xa.dtype.itemsize < 4:
        # float16 / bfloat16: widened exactly (as the methods widen half inputs), then
        # perturbed; in half precision the draws and sums were rounded to the input's grid
        # (bfloat16's spacing 2^-8 on [0.5, 1)): most values unchanged, others moved by up to
        # twice the radius
        xa = xa.astype(jnp.float32)
    e0 = _explained(explain, xa, "x")
    if e0.ndim <= batch_dims or e0.shape[0] != xa.shape[0]:
        raise ValueError(f"sensitivity_max: expected explain(x) of shape (N={xa.shape[0]}, ...) "
                         f"with more than batch_dims={batch_dims} axes, got {e0.shape}")
    ord = float(ord)
    m0, x0 = _norm(e0, ord, batch_dims)
    index = base.input_indices(index_offset, xa.shape[0])
    worst = peak = None
    for j in range(n_samples):
        xj = _perturbed(key, jnp.int32(j), index, xa, float(radius), perturbation)
        if xj.shape != xa.shape:
            raise ValueError(f"sensitivity_max: perturbation must return x_i's shape "
                             f"{xa.shape[1:]}, got {xj.shape[1:]}")
        s, pj = _relative_change(_explained(explain, xj, f"perturbation {j}", e0), e0, m0,
                                 x0, ord, batch_dims)
        worst = s if worst is None else jnp.maximum(worst, s)
        peak = pj if peak is None else jnp.maximum(peak, pj)
    _check_absolute(worst, m0, peak, ord)
    return worst


def _check_absolute(worst: Array, m0: Array, peak: Array, ord: float) -> None:
    """Maps of norm 0 at ``x`` are compared by their absolute change, which is not
    scale-free: one beyond float32's range (inf) is refused, naming the inputs and the
    perturbed maps' peak (not under the caller's ``jax.jit``: no values)."""
    if isinstance(worst, jax.core.Tracer):
        return
    over = (np.isinf(np.asarray(worst)) & (np.asarray(m0) == 0)).reshape(len(worst), -1)
    over = over.any(axis=1)  # (on the host: no program compiled per shape)
    if over.any():
        rows = np.flatnonzero(over).tolist()
        top = float(np.max(np.asarray(peak)[over]))
        raise ValueError(
            f"sensitivity_max: explain returned maps of norm 0 for x at {listed(rows)}, whose "
            f"sensitivity is then the {ord:g}-norm of the change itself (Captum's), beyond "
            f"float32's range ({float(np.finfo(np.float32).max):.3g}) here: the perturbed "
            f"inputs' maps reach {top:.3g} in magnitude. Divide every call's maps in explain "
            f"by one constant that brings them near 1, e.g. explain=lambda v: f(v) / 2.0 ** "
            f"{max(int(np.frexp(top)[1]), 0)} (the change is then measured in units of that "
            "constant)")


#: Several inputs are refused, saying why (see validate.one_input_error).
sensitivity_max.one_input = "it perturbs one input array within one radius"
