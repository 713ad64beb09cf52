"""Guided integrated gradients (Kapishnikov, Venugopalan, Avci, Wedin, Terry & Bolukbasi,
2021, "Guided Integrated Gradients: an Adaptive Path Method for Removing Noise").

An adaptive path from the baseline ``x'`` to the input ``x`` inside the box they span: at
each of ``steps`` steps, the features whose gradient is smallest in magnitude move first.
Step ``k`` (``alpha = k / steps``, ``k = 1 .. steps``) must bring the L1 distance to ``x``
down to ``(1 - alpha) * |x - x'|_1``. Every feature keeps its progress
``(z - x') / (x - x')`` within ``[alpha - max_dist, alpha + max_dist]`` (clipped to
``[0, 1]``): features left behind are first pulled up to the lower bound; then, repeatedly,
the ``fraction`` of features with the smallest ``|gradient|`` (features already at the upper
bound excluded) move to the upper bound, until the next such move would overshoot the L1
target, which the last one then meets exactly by moving part of the way. The attribution
accumulates ``(z_new - z_old) * gradient(z_old)``, so ``sum(map) ~= S(x) - S(x')`` (exact for
a linear model: the path ends at ``x``).

This is PAIR ``saliency``'s ``GuidedIG`` (v0.2.1, ``guided_ig_impl``) step for step: the
selection is ``|g| <= quantile(|g|, fraction, method="lower")`` over all features (excluded
ones counted as ``inf``), ties included. PAIR runs in float64 on the host and stops a step
when the L1 distance is within ``1e-9`` of its target; jaxsal runs float32 on device, so the
distance still to cover is summed per feature (``|z - x| - (1 - alpha) |x - x'|``, no
cancellation between two large sums) and a step stops within ``1e-6 * |x - x'|_1``.

The path depends on the target, so T targets are T paths: each path step is one forward and
one backward pass, the ``T * N`` paths of a chunk of targets stacked on the batch axis of
that one pass, the steps in a ``lax.fori_loop`` and each step's moves in a
``lax.while_loop`` (no host round trip).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import base, ints, reals
from jaxsal._src.base import ModelLike
from jaxsal._src.finite import refuses_non_finite_maps
from jaxsal._src.gradients import first_only
from jaxsal._src.integrated import check_baseline
from jaxsal._src.postprocess import _reduce_inputs, check_reduce
from jaxsal._src.precision import backward_dtype, low_precision
from jaxsal._src.targets import (OutputInfo, TargetSpec, Targets, nan_where_invalid,
                                 resolve_predicted, run_model, score_matrix)
from jaxsal._src.validate import prepare

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

#: A step is done when the L1 distance left is within this fraction of ``|x - x'|_1``.
L1_TOLERANCE = 1e-6


@jax.custom_jvp
def _nextafter(a: Array, b: Array) -> Array:
    """``jnp.nextafter(a, b)`` with a derivative (``nextafter`` has none): within one ulp of
    ``a``, 1 with respect to ``a`` and 0 with respect to ``b``. Differentiating a loss on the
    map with respect to ``x`` then reaches the path's ``while_loop``, whose refusal of
    reverse mode is the actual limit (``tests/test_double_backprop.py``)."""
    return jnp.nextafter(a, b)


@_nextafter.defjvp
def _nextafter_jvp(primals, tangents):
    (a, b), (ta, _) = primals, tangents
    return _nextafter(a, b), ta


def quantile_index(size: int, fraction: float) -> int:
    """The index into the sorted values that ``np.quantile(a, fraction, method="lower")``
    returns for ``size`` values: ``floor((size - 1) * fraction)`` in float64, as NumPy."""
    return int(np.floor((size - 1) * np.float64(fraction)))


def path_step(z: Array, g: Array, x: Array, x0: Array, l1_total: Array, step: Array,
              steps: int, k: int, max_dist: float) -> Array:
    """One step of the guided path for ONE example (all arrays flattened, ``(F,)``): the
    new point, from ``z`` and the gradient ``g`` there; ``step`` counts from 0."""
    alpha = (step + 1.0) / steps
    lo = jnp.maximum(alpha - max_dist, 0.0)
    hi = jnp.minimum(alpha + max_dist, 1.0)
    d = x - x0
    z_lo, z_hi = x0 + d * lo, x0 + d * hi
    moving = d != 0
    progress = jnp.where(moving, (z - x0) / jnp.where(moving, d, 1.0), hi)
    z = jnp.where(progress < lo, z_lo, z)  # features left behind join the lower bound
    remaining = jnp.abs(d) * (1.0 - alpha)  # each feature's share of the L1 target
    tol = L1_TOLERANCE * l1_total

    def gap(z):
        return jnp.sum(jnp.abs(z - x) - remaining)

    def cond(state):
        return ~state[1]

    def body(state):
        z, _ = state
        left = gap(z)
        g_sel = jnp.where(z == z_hi, jnp.inf, g)
        a = jnp.abs(g_sel)
        threshold = jnp.sort(a)[k]
        sel = (a <= threshold) & (g_sel != jnp.inf)
        l1_sel = jnp.sum(jnp.where(sel, jnp.abs(z - z_hi), 0.0))
        gamma = jnp.where(l1_sel > 0, left / jnp.where(l1_sel > 0, l1_sel, 1.0), jnp.inf)
        part = z + (z_hi - z) * gamma
        # a part-way move that rounds onto the bound stops one ulp short: a feature counts as
        # at the bound (and leaves the selection) only when moved there whole, as in float64
        part = jnp.where((part == z_hi) & (gamma < 1.0), _nextafter(z_hi, z), part)
        move = jnp.where(gamma > 1.0, z_hi, part)
        z_new = jnp.where(sel & (left > tol), move, z)
        # go on only after whole moves that left a gap: done when the target was met before
        # moving, a part-way move met it, nothing is left to select (only through rounding),
        # or a value is NaN (check_finite=False): every iteration moves a feature onto its
        # bound for good, so the loop ends
        return z_new, ~((left > tol) & (gamma > 1.0) & (l1_sel > 0))

    # (the flag varies over the mesh axes z varies over under jax.shard_map, as the body's
    # does: a plain False was refused there as a carry of another type)
    z, _ = jax.lax.while_loop(cond, body, (z, base.zeros_varying_as(z, (), bool)))
    return z


def row_gradients(model: Any, params: Any, z: Array, spec: TargetSpec, info: OutputInfo,
                  ids: Array | None, rows_t: Array) -> Array:
    """The gradient of row ``r``'s own target ``rows_t[r]`` at ``z[r]``, for every row: one
    forward and one backward pass over the ``(R, ...)`` rows (a one-hot cotangent per row).
    The backward pass runs in low precision under ``precision="bfloat16"``, as
    ``targets.target_pullback``'s."""
    def scores(zz):
        y, captured = run_model(model, params, zz, spec.layers)
        return score_matrix(spec, info, y, captured, ids)

    s, pullback = jax.vjp(scores, z)
    # (varying as the scores under jax.shard_map, which the pullback expects)
    ct = jax.nn.one_hot(rows_t, spec.num, dtype=s.dtype) + jnp.zeros_like(s)
    backward = lambda c: pullback(c)[0]  # noqa: E731
    dtype = backward_dtype()
    if dtype is not None:
        backward = low_precision(backward, dtype, pullback=True)
    g = backward(ct)
    if spec.checked or ids is None:
        return g
    # traced ids: a row whose target is out of range gets NaN (its score's gradient is 0)
    return nan_where_invalid(g, jnp.take_along_axis(ids, rows_t[:, None], axis=1)[:, 0], info)


def raw_guided_integrated(model: Any, spec: TargetSpec, info: OutputInfo, steps: int,
                          fraction: float, max_dist: float):
    """``f(params, x, ids, ts, baseline) -> (N, len(ts), *x.shape[1:])``: un-reduced Guided
    IG of the targets ``ts``, one path per (target, input)."""

    def f(params, x, ids, ts, baseline):
        n, tc = x.shape[0], ts.shape[0]
        feat = int(np.prod(x.shape[1:]))
        k = quantile_index(feat, fraction)
        # (varying as x under jax.shard_map: the path starts there, and a loop's carry keeps
        # its type; a baseline given as a number or one input's shape did not vary)
        x0 = jnp.broadcast_to(baseline, x.shape).astype(x.dtype) + base.zeros_varying_as(
            x, (), x.dtype)
        # rows ordered (input, target), input-major (base.repeat_rows): a batch sharded
        # over its inputs stays sharded, each device's paths those of its own inputs
        xr = jnp.repeat(x.reshape(n, feat), tc, axis=0)
        x0r = jnp.repeat(x0.reshape(n, feat), tc, axis=0)
        ids_r = base.repeat_rows(ids, tc)
        rows_t = jnp.tile(ts, n)
        l1 = jnp.sum(jnp.abs(xr - x0r), axis=1)
        shape = (tc * n,) + x.shape[1:]

        def body(step, carry):
            z, attr = carry
            g = row_gradients(model, params, z.reshape(shape), spec, info, ids_r, rows_t)
            g = g.reshape(tc * n, feat)
            z_new = jax.vmap(path_step, in_axes=(0, 0, 0, 0, 0, None, None, None, None))(
                z, g, xr, x0r, l1, step, steps, k, max_dist)
            return z_new, attr + (z_new - z) * g

        _, attr = jax.lax.fori_loop(0, steps, body, (x0r, jnp.zeros_like(xr)))
        return attr.reshape((n, tc) + x.shape[1:])

    return f


@refuses_non_finite_maps
def guided_integrated_gradients(model: ModelLike, x: ArrayLike, targets: Targets = None, *,
                                baseline: ArrayLike | None = None, steps: int = 200,
                                fraction: float = 0.25, max_dist: float = 0.02,
                                reduce: str | None = "sum", head: str | None = None,
                                chunk_size: int | None = None,
                                memory_budget: int | None = None, precision: str | None = None,
                                check_finite: bool = True) -> Array:
    """Guided integrated gradients (Kapishnikov et al., 2021).

    An adaptive path from ``baseline`` to ``x`` that moves the features of smallest
    gradient magnitude first, at most ``max_dist`` (in path progress) away from the straight
    line (see the module docstring); PAIR ``saliency``'s ``GuidedIG``. The path depends on
    the target: T targets cost ``T * steps`` forward and backward passes (``T * N`` paths of a
    chunk run together in each pass).

    Args:
      model, x, targets, head, chunk_size, memory_budget, precision, check_finite: as in
        :func:`jaxsal.saliency` (one input array). ``targets=None`` fixes each input's
        predicted class on ``x``.
      baseline: the path's start ``x'`` (PAIR's ``x_baseline``): ``None`` (zeros), a scalar,
        ``(H, W, C)`` or ``(N, H, W, C)``.
      steps: path steps, one gradient each (PAIR's ``x_steps``, default 200).
      fraction: the fraction of all features that each move takes, those of smallest
        ``|gradient|`` (PAIR's default 0.25).
      max_dist: how far, in path progress ``[0, 1]``, a feature may lead or lag the straight
        line: 0 is integrated gradients (left Riemann sum), 1 the unbounded guided path
        (PAIR's default 0.02).
      reduce: channel reduction; the default signed ``"sum"`` keeps completeness
        (``maps.sum(...) ~= S(x) - S(baseline)``); ``None`` keeps channels (PAIR's output).
    Returns:
      Raw maps ``(N, H, W)`` or ``(N, T, H, W)`` (channels kept when ``reduce=None``).

    Example::

        maps = jaxsal.guided_integrated_gradients(model.with_head("logits"), x, 3,
                                                  steps=100)           # (N, H, W)
    """
    check_reduce(reduce)
    steps = ints.check_int(steps, "steps", kind="moves along the path", example="200")
    fraction = reals.check_real(fraction, "fraction", low=0, high=1, example="0.25",
                                kind="a finite number: the share of features each move takes")
    max_dist = reals.check_real(max_dist, "max_dist", low=0, high=1, example="0.02",
                                kind="a finite number: the largest lead or lag of a feature "
                                "along the path")
    p = prepare(model, x, targets, head=head, check_finite=check_finite,
                method=guided_integrated_gradients)
    b = check_baseline(baseline, p.x, formats=p.formats)
    fb = base.forward_bytes(p.model, p.x)
    nb = base.batch_chunk(p.n, fb // p.n, memory_budget)
    fb = fb * nb // p.n
    chunk = base.chunk_for(p.spec.num, fb, chunk_size, memory_budget)
    m, spec, info = p.model, p.spec, p.info
    axes = p.map_channel_axes

    def build():
        def run(params, x, ids, baseline):
            sp, ids_ = resolve_predicted(m, params, x, spec, info, ids)
            f = raw_guided_integrated(m, sp, info, steps, fraction, max_dist)
            out = base.map_chunks(
                lambda ts: _reduce_inputs(f(params, x, ids_, ts, baseline), reduce, axes),
                spec.num, chunk)
            return first_only(out, spec.class_axis)

        return run

    key = ("guided_integrated_gradients", p.key, spec, info, steps, fraction, max_dist, reduce,
           chunk, nb)
    return base.compiled(key, lambda: base.split_batch(build(), nb, maybe=(3,)),
                         precision)(p.params, p.x, p.ids, b)


#: explain_to_file refuses a job over several inputs before any work (see job_inputs.py).
guided_integrated_gradients.one_input = "its path moves the features of one input"
