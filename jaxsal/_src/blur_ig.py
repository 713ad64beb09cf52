"""Blur integrated gradients (Xu, Venugopalan & Sundararajan, 2020, "Attribution in Scale
and Space", CVPR).

The path runs through Gaussian blurs of the input, ``z(s) = G_s * x``, from ``s = max_sigma``
(almost all detail gone) down to ``s = 0`` (the input itself); the attribution is the path
integral of the gradient along it,

``BlurIG(x) = -sum_k (s_{k+1} - s_k) * (G_{s_k + h} * x - G_{s_k} * x) / h * dS/dx(G_{s_k} * x)``

over ``steps`` sigmas ``s_k = k * max_sigma / steps`` (``sqrt(k * max_sigma / steps)`` with
``sqrt=True``), ``k = 0 .. steps - 1``, the blur's change along the path taken as a forward
difference with step ``h = grad_step``. This is PAIR ``saliency``'s ``BlurIG`` (v0.2.1) term
for term: completeness holds approximately, ``sum(map) ~= S(x) - S(G_max_sigma * x)``.

The blur is scipy's ``ndimage.gaussian_filter`` exactly as PAIR calls it: on the spatial axes
only, ``mode="constant"`` (zeros outside the image; note: not scipy's default ``"reflect"``),
kernel radius ``int(4 * sigma + 0.5)``, normalized over its full support, so a blur wider
than the image darkens it. It runs on device as one small matrix per spatial axis: a
Gaussian with zero padding is a banded Toeplitz matrix ``M[i, j] = g(j - i)``, whatever the
radius, so sigmas far larger than the image need no special case. The taps are computed once
on the host in float64 (cached per image size and knobs), the blur's finite difference is
formed from differences of taps rather than of blurred float32 images (no cancellation), and
the matrices are built on device from the ``(steps, 2 n - 1)`` tap tables, passed to the
compiled program as arguments. The matmuls run at ``Precision.HIGHEST``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import base, ints, reals
from jaxsal._src.base import ModelLike
from jaxsal._src.finite import refuses_non_finite_maps
from jaxsal._src.gradients import first_only, raw_gradients
from jaxsal._src.postprocess import _reduce_inputs, check_reduce
from jaxsal._src.targets import OutputInfo, TargetSpec, Targets, resolve_predicted
from jaxsal._src.validate import check_flag, prepare

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

#: scipy's ``gaussian_filter`` default: the kernel reaches ``truncate`` sigmas.
TRUNCATE = 4.0


def gaussian_taps(n: int, sigma: float) -> np.ndarray:
    """The taps ``g(t)``, ``t = -(n-1) .. n-1``, of scipy's 1-D Gaussian filter of ``sigma``
    (``truncate=4``, ``mode="constant"``) on an axis of ``n`` samples, float64 ``(2 n - 1,)``:
    ``out[i] = sum_j g(j - i) in[j]``. Taps beyond the image never meet a sample and are left
    out; the kernel is normalized over its whole radius, as scipy's. ``sigma <= 1e-15`` is the
    identity (scipy skips such an axis)."""
    v = np.zeros(2 * n - 1)
    if sigma <= 1e-15:
        v[n - 1] = 1.0
        return v
    r = int(TRUNCATE * float(sigma) + 0.5)
    t = np.arange(-r, r + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * t ** 2)
    phi = phi / phi.sum()
    inside = np.abs(t) <= n - 1
    v[t[inside] + n - 1] = phi[inside]
    return v


def sigmas(max_sigma: float, steps: int, sqrt: bool) -> np.ndarray:
    """The ``steps + 1`` sigmas of the blur path, float64, increasing from 0 (PAIR's
    schedule: ``k * max_sigma / steps``, or its square root with ``sqrt``)."""
    s = np.arange(steps + 1, dtype=np.float64) * max_sigma / steps
    return np.sqrt(s) if sqrt else s


@functools.lru_cache(maxsize=32)
def path_tables(sizes: tuple[int, ...], max_sigma: float, steps: int, grad_step: float,
                sqrt: bool) -> tuple:
    """``(weights (steps,), ((P, D, Q) per spatial axis))``, float64 (cast to the inputs'
    dtype where used): the tap tables
    ``(steps, 2 n - 1)`` of the blur at ``s_k`` (``P``), at ``s_k + grad_step`` (``Q``) and
    their difference ``D = Q - P`` (taken in float64), and the path weights
    ``-(s_{k+1} - s_k) / grad_step``."""
    s = sigmas(max_sigma, steps, sqrt)
    weights = -(s[1:] - s[:-1]) / grad_step
    axes = []
    for n in sizes:
        p = np.stack([gaussian_taps(n, sk) for sk in s[:-1]])
        q = np.stack([gaussian_taps(n, sk + grad_step) for sk in s[:-1]])
        axes.append((p, q - p, q))
    return weights, tuple(axes)


def _check_blur_changes(tables: tuple, max_sigma: float, steps: int, grad_step: float,
                        sqrt: bool) -> None:
    """Refuse a path along which no blur differs from the next (every table ``D = Q - P`` of
    :func:`path_tables` zero): the map would be 0 everywhere, whatever the model. scipy's
    Gaussian below sigma 0.125 has a kernel of one tap (radius ``int(4 sigma + 0.5)`` = 0),
    the identity; with ``steps=1`` the only path point is the input itself (sigma 0)."""
    if any(np.any(t[1] != 0) for t in tables):
        return
    top = float(sigmas(max_sigma, steps, sqrt)[-2]) + grad_step
    fix = ("pass steps >= 2 (PAIR's default is 100): with steps=1 the only path point is the "
           "input itself, sigma 0" if steps == 1 else
           f"pass a larger max_sigma (the path's largest blur is sigma {top:.3g})")
    raise ValueError(f"blur_integrated_gradients: expected a path along which the blur "
                     f"changes the input; with steps={steps}, max_sigma={max_sigma:g} and "
                     f"grad_step={grad_step:g} every blur on it and its step of grad_step are "
                     "Gaussians below sigma 0.125, whose kernel is one tap (scipy's radius "
                     "int(4 sigma + 0.5) = 0) and leaves the input as it is, so the map "
                     f"would be 0 everywhere. {fix[0].upper()}{fix[1:]}, or a grad_step of "
                     "at least 0.125")


def _toeplitz(taps: Array, n: int) -> Array:
    """``(b, 2 n - 1)`` tap rows -> ``(b, n, n)`` matrices ``M[i, j] = taps[j - i + n - 1]``."""
    idx = np.arange(n)[None, :] - np.arange(n)[:, None] + n - 1
    return taps[:, idx]


def _along(z: Array, m: Array, axis: int) -> Array:
    """``z (b, ...)`` with axis ``axis`` multiplied by the per-row matrices ``m (b, n, n)``."""
    z = jnp.moveaxis(z, axis, -1)
    z = jnp.einsum("k...j,kij->k...i", z, m, precision=jax.lax.Precision.HIGHEST)
    return jnp.moveaxis(z, -1, axis)


def blur_points(x: Array, tables: tuple, ks: Array, channels_first: bool) -> tuple[Array, Array]:
    """The path points ``G_{s_k} * x`` and the blur differences ``G_{s_k + h} * x -
    G_{s_k} * x`` for the path indices ``ks (b,)``: two ``(b, *x.shape)`` arrays.

    With one Toeplitz matrix per spatial axis, ``G = P_1 (x) ... (x) P_d`` and the difference
    ``Q_1 (x) .. (x) Q_d - P_1 (x) .. (x) P_d`` is the telescoping sum over axes ``a`` of
    ``P_<a (x) (Q_a - P_a) (x) Q_>a``: every term from precise taps."""
    d = x.ndim - 2  # spatial axes of (N, *spatial, C) / (N, C, *spatial)
    first = 3 if channels_first else 2  # their positions in (b, N, ...)
    mats = [tuple(_toeplitz(t[ks], x.shape[first - 1 + a]) for t in tab)
            for a, tab in enumerate(tables)]
    xb = jnp.broadcast_to(x[None], (ks.shape[0],) + x.shape)
    point = xb
    for a in range(d):
        point = _along(point, mats[a][0], first + a)
    diff = None
    for a in range(d):
        term = xb
        for b in range(d):
            term = _along(term, mats[b][0 if b < a else 1 if b == a else 2], first + b)
        diff = term if diff is None else diff + term
    return point, diff


def raw_blur_integrated(model: Any, spec: TargetSpec, info: OutputInfo, steps: int,
                        batch_steps: int, channels_first: bool):
    """``f(params, x, ids, ts, weights, tables) -> (N, len(ts), *x.shape[1:])``: un-reduced
    Blur IG, ``batch_steps`` path points per batched forward pass (every target's pullback
    shares it)."""
    grads = raw_gradients(model, spec, info)

    def f(params, x, ids, ts, weights, tables):
        def group(ks, valid):
            b = ks.shape[0]
            z, dz = blur_points(x, tables, ks, channels_first)
            # input-major (base.stack_rows): a batch sharded over its inputs stays sharded
            g = grads(params, base.stack_rows(z), base.repeat_rows(ids, b), ts)
            g = base.unstack_rows(g, b)  # (b, N, Tc, ...)
            w = jnp.where(valid, weights[ks], 0.0).reshape((b,) + (1,) * (dz.ndim - 1))
            return jnp.sum((w * dz)[:, :, None] * g, axis=0)

        return base.sum_groups(group, steps, batch_steps)

    return f


@refuses_non_finite_maps
def blur_integrated_gradients(model: ModelLike, x: ArrayLike, targets: Targets = None, *,
                              max_sigma: float = 50.0, steps: int = 100,
                              grad_step: float = 0.01, sqrt: bool = False,
                              batch_steps: int | None = None, reduce: str | None = "sum",
                              head: str | None = None, chunk_size: int | None = None,
                              memory_budget: int | None = None, precision: str | None = None,
                              check_finite: bool = True) -> Array:
    """Blur integrated gradients (Xu et al., 2020, "Attribution in Scale and Space").

    Integrated gradients along the path of Gaussian blurs from ``G_max_sigma * x`` to ``x``
    (see the module docstring for the sum), as PAIR ``saliency``'s ``BlurIG``: no baseline
    to choose, the reference is the blurred input itself. Every target's gradient shares the
    path's forward passes: ``steps`` forward and ``steps * T`` backward passes in all.

    Args:
      model, x, targets, head, chunk_size, memory_budget, precision, check_finite: as in
        :func:`jaxsal.saliency`; ``x`` has 1 to 3 spatial axes (``(N, H, W, C)`` images,
        ``(N, L, C)`` signals, ``(N, D, H, W, C)`` volumes; channels first for a
        channels-first model), all of them blurred, the channel axis not. ``targets=None``
        fixes each input's predicted class on ``x``.
      max_sigma: the blur of the path's start, in pixels (PAIR's default 50).
      steps: path points, one gradient each (PAIR's default 100).
      grad_step: the sigma step of the forward difference that gives the blur's change.
      sqrt: PAIR's ``sqrt`` schedule, sigmas ``sqrt(k * max_sigma / steps)``: the path then
        ends at ``sqrt(max_sigma)``, not ``max_sigma``.
      batch_steps: path points in one batched forward/backward pass (default: as many as fit
        in ``memory_budget``; 1 = a loop).
      reduce: channel reduction; the default signed ``"sum"`` keeps completeness; ``None``
        keeps channels (PAIR's output).
    Returns:
      Raw maps ``(N, *spatial)`` or ``(N, T, *spatial)`` (channels kept when ``reduce=None``).

    Example::

        maps = jaxsal.blur_integrated_gradients(model.with_head("logits"), x, [3, 7],
                                                steps=50)            # (N, 2, H, W)
    """
    check_reduce(reduce)
    max_sigma = reals.check_real(max_sigma, "max_sigma", low=0, above=True, example="50",
                                 kind="a finite number: the largest blur, in pixels")
    grad_step = reals.check_real(grad_step, "grad_step", low=0, above=True, example="0.01",
                                 kind="a finite number: the finite difference's step in sigma")
    steps = ints.check_int(steps, "steps", kind="gradient evaluations along the path",
                           example="100")
    sqrt = check_flag(sqrt, "sqrt")
    p = prepare(model, x, targets, head=head, check_finite=check_finite, spatial=True,
                method=blur_integrated_gradients)
    cf = p.channels_first
    sizes = p.spatial_shape
    weights, tables = path_tables(tuple(int(s) for s in sizes), max_sigma, steps, grad_step,
                                  sqrt)
    _check_blur_changes(tables, max_sigma, steps, grad_step, sqrt)
    nb, batch_steps, chunk = base.sampling_plan(p.model, p.x, p.n, p.spec.num, steps,
                                                batch_steps, "batch_steps", chunk_size,
                                                memory_budget)
    m, spec, info = p.model, p.spec, p.info
    axes = p.map_channel_axes

    def build():
        def run(params, x, ids, weights, tables):
            sp, ids_ = resolve_predicted(m, params, x, spec, info, ids)
            f = raw_blur_integrated(m, sp, info, steps, batch_steps, cf)
            out = base.map_chunks(
                lambda ts: _reduce_inputs(f(params, x, ids_, ts, weights, tables), reduce,
                                          axes),
                spec.num, chunk)
            return first_only(out, spec.class_axis)

        return run

    key = ("blur_integrated_gradients", p.key, spec, info, steps, batch_steps, reduce, chunk,
           nb, cf)
    return base.compiled(key, lambda: base.split_batch(build(), nb), precision)(
        p.params, p.x, p.ids, jnp.asarray(weights, p.x.dtype),
        jax.tree_util.tree_map(lambda t: jnp.asarray(t, p.x.dtype), tables))


#: explain_to_file refuses a job over several inputs before any work (see job_inputs.py).
blur_integrated_gradients.one_input = "its path blurs one image"
