"""Explanation infidelity (Yeh et al., 2019, "On the (In)fidelity and Sensitivity of
Explanations"; Captum's ``captum.metrics.infidelity``).

For a map ``a`` of a score ``S`` at ``x`` and random perturbations ``I`` of the input,
``INFD = E_I[(<a, I> - (S(x) - S(x - I)))^2]``: how far the map, read as a linear model of
the score's change, is from the model's own change. With ``normalize=True`` the map is first
scaled by the ``beta`` that minimizes the error, ``beta = E[<a, I> dS] / E[<a, I>^2]`` (the
paper's scale-invariant form; Captum's ``normalize``).

Every perturbation is drawn from the key, the sample's number and the input's global index
inside the compiled program; the perturbed inputs run as batched forward passes shared by
every target (one map per target, the same draws for all).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import base, reals
from jaxsal._src.base import ModelLike
from jaxsal._src.finite import check_scores, listed
from jaxsal._src.targets import Targets, resolve_predicted, run_model, score_matrix
from jaxsal._src.validate import (X64_FIX, check_flag, check_like, check_maps, input_rank,
                                  peak_exponent, prepare, spatial_shape, times_pow2)

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

_HIGHEST = jax.lax.Precision.HIGHEST


def _check_std(noise_std: Any) -> float:
    return reals.check_real(noise_std, "noise_std", low=0, above=True,
                            kind="a finite number: the perturbations' standard deviation, "
                            "in x's units")


def infidelity(model: ModelLike, x: ArrayLike, maps: ArrayLike, targets: Targets = None, *,
               key: jax.Array | int | None = None, n: int = 10, noise_std: float = 0.003,
               perturbation: Callable[[Array, Array], Array] | None = None,
               baseline: ArrayLike | None = None, normalize: bool = False,
               batch_size: int | None = None, head: str | None = None,
               memory_budget: int | None = None, precision: str | None = None,
               check_finite: bool = True, index_offset: int = 0) -> Array:
    """The infidelity of each map (Yeh et al., 2019): the mean over ``n`` random
    perturbations ``I`` of ``(<maps, I> - (S(x) - S(x - I)))^2``. Lower is better.

    Args:
      model, x, targets, head, memory_budget, precision, check_finite: as in
        :func:`jaxsal.saliency` (one floating input array). ``targets`` must be those the
        maps explain; its class axis decides the maps'. A score ``S(x)`` or ``S(x - I)``
        that is NaN/inf makes that value NaN: with ``check_finite`` (the default) such
        values raise :class:`jaxsal.NonFiniteMaps` naming the inputs, saying whether the
        clean input's score or some perturbed copies' are not finite (counted in the
        program: one small transfer). Nothing is checked under the caller's ``jax.jit``,
        nor with ``check_finite=False``: the values come back NaN.
      maps: ``(N, [T,] *x.shape[1:])`` (one value per scalar of ``x``), or ``(N, [T,] *S)``
        with ``S`` the spatial shape: one value per position, whose channels are perturbed
        together (by the same amount).
      key: a ``jax.random`` key or an int seed (required: the same key gives the same
        values).
      n: perturbations per input (10, Captum's default).
      noise_std: the standard deviation of the default perturbation, ``I ~ N(0,
        noise_std^2)`` per value of the maps' shape (0.003: the scale of Captum's
        documented example; in ``x``'s units).
      perturbation: instead of the Gaussian, ``perturbation(key, x_i) -> I_i`` for one
        input ``x_i`` (``x.shape[1:]``), an array of one map's shape (``x.shape[1:]`` or
        ``S``); ``x - I`` is evaluated. A pure function of its key (it is ``vmap``-ped).
      baseline: for maps that are multiplied by the input's distance to a baseline
        (integrated gradients, DeepLIFT, gradient x input with a zero baseline), the map is
        read against ``I / (x - baseline)`` (1 where ``x`` equals ``baseline``), as Captum's
        ``infidelity_perturb_func_decorator(multiply_by_inputs=True)``: with ``I = m (x -
        baseline)`` for a random 0/1 mask ``m``, the infidelity compares the masked
        positions' total attribution with the score's drop when they go to the baseline
        (sensitivity-n). Maps of ``x``'s own shape (or of pixels, with one channel).
      normalize: scale each map by its optimal ``beta`` first (Captum's ``normalize``):
        independent of the maps' scale (each is scaled by a power of two to a peak below 1
        first, so that maps huge but in float32's range do not overflow). Without it,
        values whose squared errors overflow float32 (maps of 1e30) are refused with
        ``check_finite``, naming the maps' peak.
      batch_size: perturbed inputs per forward pass (default: from ``memory_budget``).
      index_offset: the position of ``x[0]`` in a larger batch (its draws are keyed by it).
    Returns:
      ``(N,)`` / ``(N, T)`` with a class axis.
    """
    key = base.check_key(key, "infidelity")
    index_offset = base.check_index_offset(index_offset)
    n_samples = base.check_n(n, "perturbations")
    std = _check_std(noise_std)
    if perturbation is not None and not callable(perturbation):
        raise TypeError(f"expected perturbation as a function (key, x_i) -> I_i, got "
                        f"{type(perturbation).__name__}")
    normalize = check_flag(normalize, "normalize")
    p = prepare(model, x, targets, head=head, check_finite=check_finite,
                spatial=input_rank(x) != 2, method=infidelity)
    size = p.x.shape[1:] if p.x.ndim == 2 else spatial_shape(p.x.shape, p.channels_first)
    mp, whole = check_maps(
        maps, p, size, "infidelity", scale_to=0 if normalize else None,
        fix="without normalize the infidelity reads the maps' values (as the score's change "
            "per unit of input), not only their order, so they are not rescaled, and its "
            "squared errors of such maps would be beyond float32 too: pass normalize=True "
            "(each map scaled by its best beta first, so independent of the maps' scale; "
            "such maps are then scaled by a power of two to a peak below 1), ")
    whole = whole or tuple(size) == tuple(p.x.shape[1:])
    shape = tuple(mp.shape[2:])  # one map: x.shape[1:] or S
    channel = None if whole else (1 if p.channels_first else p.x.ndim - 1)
    if baseline is not None:
        if not whole and p.x.shape[channel] != 1:
            want = ((p.n,) + tuple(mp.shape[1:2] if p.spec.class_axis else ())
                    + tuple(p.x.shape[1:]))
            raise ValueError("infidelity: baseline= reads each value of the maps against its "
                             f"own input value, so it needs maps of x's shape {want}; got "
                             "maps with one value per position "
                             f"{shape} and {p.x.shape[channel]} channels. Pass maps that keep "
                             "the channels (reduce=None)")
        baseline = check_like(baseline, p.x, "baseline", channels_first=p.channels_first,
                              result="the infidelity")
    draw = perturbation or (lambda k, xi: std * jax.random.normal(k, shape, xi.dtype))
    got = jax.eval_shape(draw, jax.random.key(0), jax.ShapeDtypeStruct(p.x.shape[1:],
                                                                       p.x.dtype))
    if getattr(got, "shape", None) != shape:
        raise ValueError(f"infidelity: perturbation(key, x_i) must return one array of one "
                         f"map's shape {shape} for x_i of shape {tuple(p.x.shape[1:])}; got "
                         f"{jax.tree_util.tree_map(lambda s: s.shape, got)}")
    b0 = baseline if baseline is not None else jnp.zeros((), p.x.dtype)
    b0, batch_size, per_image, nb = base.masked_plan(p.model, p.x, b0, batch_size,
                                                     memory_budget)
    group = base.masked_chunk(n_samples, per_image, nb, batch_size, memory_budget)
    m, spec, info = p.model, p.spec, p.info
    relative = baseline is not None

    def build():
        def run(params, x, ids, maps, b0, key, index):
            if normalize:
                # scale-free: each map scaled by a power of two (exact) to a peak in
                # [0.5, 1), as its sums with the perturbations are squared (maps of 1e30,
                # in float32's range, made them inf and the values NaN)
                e = peak_exponent(maps, 2)
                maps = times_pow2(maps, -e.reshape(e.shape + (1,) * (maps.ndim - 2)))
            sp, ids_ = resolve_predicted(m, params, x, spec, info, ids)
            y, cap = run_model(m, params, x, sp.layers)
            s0 = score_matrix(sp, info, y, cap, ids_)  # (N, T)
            ids_rep = base.repeat_rows(ids_, group)  # (input-major: stack_rows)
            if relative:  # x - baseline: one channel (squeezed) if the maps have none
                gap = x - jnp.broadcast_to(b0, x.shape)
                gap = gap if channel is None else jnp.squeeze(gap, channel)

            def moments(ks, valid):
                def one(k, i, xi):
                    return draw(jax.random.fold_in(jax.random.fold_in(key, k), i), xi)

                pert = jax.vmap(lambda k: jax.vmap(lambda i, xi: one(k, i, xi))(index, x))(ks)
                full = pert if channel is None else jnp.expand_dims(pert, channel + 1)
                # (N G, ...) input-major: a batch sharded over its inputs stays sharded
                xp = base.stack_rows(x[None] - full)
                yp, cp = run_model(m, params, xp, sp.layers)
                ds = s0[None] - base.unstack_rows(score_matrix(sp, info, yp, cp, ids_rep),
                                                  group)  # (G, N, T)
                seen = jnp.where(gap == 0, pert, pert / jnp.where(gap == 0, 1, gap)) \
                    if relative else pert
                lin = jnp.einsum("gn...,nt...->gnt", seen, maps, precision=_HIGHEST)
                # padded samples and non-finite score changes are left out of the sums (a
                # NaN times a 0 weight is NaN) and the latter counted apart
                v = valid[:, None, None]
                ok = v & jnp.isfinite(ds)
                bad = jnp.sum(v & ~ok, axis=0, dtype=jnp.int32)  # (N, T)
                zero = jnp.zeros((), ds.dtype)
                lin, ds = jnp.where(ok, lin, zero), jnp.where(ok, ds, zero)
                if not normalize:
                    return ((lin - ds) ** 2).sum(0), bad
                return (lin * lin).sum(0), (lin * ds).sum(0), (ds * ds).sum(0), bad

            *out, bad = base.sum_groups(moments, n_samples, group)
            if normalize:  # beta * maps, beta = sum(lin ds) / sum(lin^2) (0 for a zero map)
                aa, ab, bb = out
                beta = ab / jnp.where(aa == 0, 1.0, aa)
                out = jnp.maximum(beta * beta * aa - 2 * beta * ab + bb, 0.0)  # rounding
            else:
                out = out[0]
            # a perturbed (or the clean) score NaN/inf: the value is NaN (refused with
            # check_finite), never a mix of inf and NaN
            out = jnp.where(bad > 0, jnp.nan, out / n_samples)
            clean = jnp.isfinite(s0).all(axis=1)  # (N,)
            return (out if spec.class_axis else out[:, 0]), clean, bad.sum(axis=1)

        return run

    ck = ("infidelity", p.key, spec, info, base.shape_key(p.x), shape, n_samples, std,
          perturbation, relative, normalize, group, nb, base.shape_key(b0))
    index = base.input_indices(index_offset, p.n)
    fn = base.compiled(ck, lambda: base.split_batch(build(), nb, (1, 2, 3, 6), (4,)),
                       precision, forward_only=True)
    out, clean, bad = fn(p.params, p.x, p.ids, mp, b0, key, index)
    if check_finite:  # (not under the caller's jit: tracers)
        of = (f"{n_samples * p.spec.num} scores ({n_samples} perturbations x "
              f"{p.spec.num} targets)" if p.spec.num > 1 else f"{n_samples} perturbations")
        check_scores("infidelity", clean, bad, result="infidelity values",
                     clean_what="S(x) in every term S(x) - S(x - I)",
                     copies="perturbed copies x - I",
                     count=lambda i: f"{int(np.asarray(bad)[i])} of {of} for input {i}",
                     fix="Check the model's outputs near these inputs; a smaller noise_std "
                         "(or another perturbation) may keep the copies where it is finite")
        if not normalize:
            _check_overflow(out, mp)
    return out


def _check_overflow(out: Array, maps: Array) -> None:
    """Values of finite scores that are not finite: their squared errors overflowed float32
    (maps huge but in its range, 1e30). Without ``normalize`` the values themselves count,
    so such maps are refused, naming the inputs, the maps' peak and the fixes (not under
    the caller's ``jax.jit``: no values)."""
    if isinstance(out, jax.core.Tracer):
        return
    over = ~np.isfinite(np.asarray(out)).reshape(len(out), -1).all(axis=1)
    if not over.any():
        return
    rows = np.flatnonzero(over).tolist()
    peak = float(jnp.abs(maps[np.asarray(rows)]).max())
    raise ValueError(
        f"infidelity: the values for {listed(rows)} are beyond float32's range "
        f"({float(np.finfo(np.float32).max):.3g}): the squared errors (<maps, I> - (S(x) - "
        f"S(x - I)))^2 overflow, with maps up to {peak:.3g} in magnitude. Without normalize "
        "the infidelity reads the maps' values (the score's change per unit of input), so "
        "they are not rescaled: pass normalize=True (each map scaled by its best beta, "
        "independent of the maps' scale), or divide the maps and the model's scores by one "
        "constant c (the infidelity is then divided by c**2), or compute in float64 (float64 "
        f"inputs and maps with x64: {X64_FIX})")


#: A model's several inputs are refused, saying why (see validate.one_input_error).
infidelity.one_input = "its perturbations, and their products with the map, are of one input"
