"""Surrogate linear models fitted on masked forward passes: LIME and KernelSHAP.

Ribeiro, Singh & Guestrin (2016), "Why Should I Trust You?": Explaining the Predictions of Any
Classifier (LIME); Lundberg & Lee (2017), "A Unified Approach to Interpreting Model
Predictions" (KernelSHAP: LIME with the Shapley kernel and no regularization).

The interpretable features are the ``M`` groups of :func:`jaxsal.shapley_values` (a ``patch``
grid over the spatial axes, channels together, or a ``feature_mask``). A coalition is a binary
vector ``z`` in ``{0, 1}^M``; its masked input keeps the groups with ``z_i = 1`` and replaces
the others by ``fill``, and ``v(z)`` is the target's score on it. Each method draws ``n``
coalitions per input, weighs them, and fits a linear model ``g(z) = b + z . phi`` to the
scores by weighted least squares; ``phi`` is the explanation.

- :func:`lime`: every group kept with probability 1/2 (Captum's ``Lime``), weights
  ``exp(-d^2 / (2 width^2))`` of a cosine distance ``d`` to ``x``, an intercept, and an L2
  penalty ``alpha |phi|^2`` (ridge).
- :func:`kernel_shap`: a coalition size ``s`` in ``1..M-1`` drawn with probability
  proportional to ``(M - 1) / (s (M - s))``, then a uniform subset of that size (the Shapley
  kernel as a sampling distribution, every draw weighted alike, as Captum's ``KernelShap``);
  the intercept is ``v(empty)`` and the values are constrained to add up to
  ``v(all) - v(empty)`` (the kernel's infinite weights on the empty and the full coalition,
  honoured exactly rather than by a large finite weight); where ``n`` covers all ``2^M - 2``
  coalitions, each is evaluated once, weighted by the kernel (the exact values). The
  constrained problem is solved in an orthonormal basis of the vectors summing to 0
  (Helmert's), so that ``phi = (v(all) - v(empty)) / M + N u`` with ``u`` unconstrained.
  On a linear model any draws that determine the fit give the exact Shapley values, and as
  ``n`` grows the estimate converges to them.

Nothing of size ``n`` is stored: the draws are counter-based (keyed by the coalition's number
and the input's global index), the masked inputs run in batched forward passes (groups of
coalitions in a ``fori_loop``, under the memory budget), and the passes accumulate the
weighted normal equations, ``sum w z z^T`` (``M x M`` per input) and ``sum w z v^T`` (``M x T``).
Every target's scores come from the same passes and share one factorization per input: a
symmetric eigendecomposition whose pseudo-inverse gives the minimum-norm solution where the
draws leave the fit undetermined (fewer coalitions than unknowns).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

try:
    from jax.extend.random import threefry_2x32
except ImportError:  # a JAX without it in jax.extend
    from jax._src.prng import threefry_2x32

from jaxsal._src import base, reals
from jaxsal._src.base import ModelLike
from jaxsal._src.targets import Targets
from jaxsal._src.shapley import (_bad_scores, _endpoints, _finish, _finite_rows, _key,
                                 _own_groups, _per_input_mask, _places, _present,
                                 _sampled_job_options, _scores, _setup, _to_groups,
                                 check_coalitions, s_dtype)
from jaxsal._src.validate import check_fill_score

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

_HIGHEST = jax.lax.Precision.HIGHEST  # the normal equations stay float32 (no TF32, no bf16)
#: :func:`lime`'s default number of coalitions per input (the ``lime`` package's
#: ``num_samples`` for images).
LIME_SAMPLES = 1000
#: :func:`kernel_shap` draws ``2 M + KERNEL_SHAP_SAMPLES`` coalitions per input by default
#: (the ``shap`` package's ``nsamples="auto"``).
KERNEL_SHAP_SAMPLES = 2048
#: The most groups either method takes: the normal equations hold ``M^2`` floats per input
#: and their solution costs ``O(M^3)`` (4096 groups: 64 MiB per input).
MAX_GROUPS = 4096
DISTANCES = ("input", "interpretable")


# ------------------------------------------------------------------ options
def _check_n(n: Any, m: int, name: str) -> int:
    n = base.check_n(n, "coalitions per input")
    if n * m >= 2 ** 32:
        raise ValueError(f"{name}: expected n * M below 2^32 (the coalitions are drawn from "
                         f"the counters coalition * M + group), got n = {n} coalitions of "
                         f"M = {m} groups; pass a smaller n (or fewer groups)")
    return n


def _check_groups(m: int, name: str) -> None:
    if m > MAX_GROUPS:
        raise ValueError(
            f"{name}: {m} feature groups is more than {MAX_GROUPS}: the surrogate's normal "
            f"equations hold M^2 = {m * m:,} numbers per input and need many more than M "
            f"coalitions. Pass a larger patch or a coarser feature_mask (e.g. superpixels), "
            f"or use jaxsal.shapley_value_sampling, whose cost grows with M only")


# ------------------------------------------------------------------ draws
def _words(kp: Array, c0: Array, c1: Array) -> tuple[Array, Array]:
    """Threefry's encryption under ``kp`` of the counters ``(c0, c1)`` (same shapes): two
    uint32 words each."""
    hi, lo = jnp.split(threefry_2x32(kp, jnp.concatenate([c0.ravel(), c1.ravel()])), 2)
    return hi.reshape(c0.shape), lo.reshape(c0.shape)


def _bernoulli(kp: Array, k: Array, index: Array, m: int, counts: Array | None = None
               ) -> Array:
    """``(G, N, M)`` bool: coalition ``k[g]`` of input ``index[n]``, each group kept with
    probability 1/2 (the top bit of the counter ``(index, k * m + group)``'s word; with
    ``counts``, of ``(index, k * counts[n] + group)`` for the input's own groups, as
    :func:`jaxsal._src.shapley._places`)."""
    shape = (k.shape[0], index.shape[0], m)
    mult = np.uint32(m) if counts is None else counts.astype(jnp.uint32)[None, :, None]
    c0 = jnp.broadcast_to(index.astype(jnp.uint32)[None, :, None], shape)
    c1 = jnp.broadcast_to(k.astype(jnp.uint32)[:, None, None] * mult
                          + jnp.arange(m, dtype=jnp.uint32), shape)
    return (_words(kp, c0, c1)[0] >> 31).astype(bool)


def _size_cdf(m: int, width: int | None = None) -> np.ndarray:
    """The Shapley kernel over coalition sizes ``s = 1..M-1``, ``p(s) ~ (M - 1) / (s (M -
    s))``, as a cumulative distribution (``M - 1`` values, the last 1; padded with 1s to
    ``width`` values)."""
    s = np.arange(1, m, dtype=np.float64)
    p = 1.0 / (s * (m - s))
    cdf = (np.cumsum(p) / p.sum()).astype(np.float32) if m > 1 else np.zeros(0, np.float32)
    width = m - 1 if width is None else width
    return np.concatenate([cdf, np.ones(width - cdf.size, np.float32)])


def _size_cdfs(counts: np.ndarray, m: int) -> np.ndarray:
    """``(N, M - 1)``: each input's size distribution (:func:`_size_cdf` of its own number
    of groups), one row per input."""
    table = {int(c): _size_cdf(int(c), m - 1) for c in np.unique(counts)}
    return np.stack([table[int(c)] for c in counts]) if len(counts) else \
        np.zeros((0, m - 1), np.float32)


#: An input's coalitions are enumerated (:func:`kernel_shap`) when there are at most this many
#: groups (and ``n`` covers them): the coalitions are int32 bit sets.
_MAX_ENUMERATED = 30


def _enumerated(counts: Any, n: int) -> Any:
    """Whether :func:`kernel_shap` evaluates every coalition of an input with ``counts``
    groups (of its own) instead of drawing ``n``: its ``2^M_i - 2`` proper non-empty
    coalitions fit in ``n`` (``counts`` an int, or an ``(N,)`` NumPy array)."""
    c = np.minimum(counts, _MAX_ENUMERATED)
    return (counts <= _MAX_ENUMERATED) & ((np.left_shift(1, c) - 2) <= n)


def _kernel_weights(counts: np.ndarray, m: int) -> np.ndarray:
    """``(N, max(M - 1, 1))``: the Shapley kernel's weight of a coalition of ``s = 1..M-1``
    of each input's own ``M_i`` groups, ``(M_i - 1) / (C(M_i, s) s (M_i - s))`` (0 for
    ``s >= M_i``), for the coalitions :func:`kernel_shap` enumerates; float64 (cast to the
    compute dtype before they are passed: float32 rounds them as before)."""
    out = np.zeros((len(counts), max(m - 1, 1)), np.float64)
    for i, c in enumerate(int(c) for c in counts):
        for s in range(1, min(c, _MAX_ENUMERATED + 1)):
            out[i, s - 1] = (c - 1) / (math.comb(c, s) * s * (c - s))
    return out


def _kernel_coalitions(kp: Array, ks: Array, cdf: Array, k: Array, index: Array,
                       m: int, counts: Array | None = None) -> Array:
    """``(G, N, M)`` bool: coalition ``k[g]`` of input ``index[n]``, a size drawn from the
    Shapley kernel (one word of the counter ``(index, k)`` under ``ks``) and the groups in
    the first ``s`` places of a uniform random order (:func:`jaxsal._src.shapley._places`
    under ``kp``): a uniform subset of that size. With ``counts`` ``(N,)``, input ``n``
    draws from its own ``counts[n]`` groups (numbered first), its size from row ``n`` of
    ``cdf`` ``(N, M - 1)``."""
    shape = (k.shape[0], index.shape[0])
    c0 = jnp.broadcast_to(index.astype(jnp.uint32)[None, :], shape)
    c1 = jnp.broadcast_to(k.astype(jnp.uint32)[:, None], shape)
    u = (_words(ks, c0, c1)[0] >> 8).astype(jnp.float32) * np.float32(2.0 ** -24)  # [0, 1)
    if counts is None:
        size = jnp.minimum(jnp.searchsorted(cdf, u, side="right"), m - 2) + 1  # 1..M-1
        return _places(kp, k, index, m) < size[..., None]
    found = jax.vmap(lambda c, v: jnp.searchsorted(c, v, side="right"), in_axes=(0, 1),
                     out_axes=1)(cdf, u)
    size = jnp.minimum(found, counts[None, :] - 2) + 1  # 1..M_i-1 (0 for one group)
    return _places(kp, k, index, m, counts) < size[..., None]


def _keys(key: Array) -> tuple[Array, Array]:
    """The threefry keys of the draws: the groups' words (orders or bits), and the sizes'."""
    return (jax.random.bits(key, (2,), jnp.uint32),
            jax.random.bits(jax.random.fold_in(key, 1), (2,), jnp.uint32))


def _coalitions(method: str, key: jax.Array | int, n: int, m: int, *, index: int = 0) -> Array:
    """The ``n`` coalitions ``(n, M)`` (bool: group kept) that :func:`jaxsal.lime`
    (``method="lime"``) or :func:`jaxsal.kernel_shap` (``"kernel_shap"``) draws with this
    key for ``M`` groups and the input at global index ``index``. For tests and inspection;
    ``kernel_shap``'s empty and full coalitions are not among them (they are always
    evaluated), and where ``n >= 2^M - 2`` it enumerates every coalition instead."""
    kp, kz = _keys(base.check_key(key, "coalitions"))
    ks = jnp.arange(n, dtype=jnp.int32)
    idx = jnp.asarray([index], jnp.int32)
    if method == "lime":
        return _bernoulli(kp, ks, idx, m)[:, 0]
    return _kernel_coalitions(kp, kz, jnp.asarray(_size_cdf(m)), ks, idx, m)[:, 0]


# ------------------------------------------------------------------ solvers
def _solve_psd(a: Array, b: Array, alpha: float) -> Array:
    """``(a + alpha I)^+ b`` for symmetric positive semi-definite ``a`` ``(..., K, K)`` and
    ``b`` ``(..., K, T)``, from one eigendecomposition: eigenvalues below ``10 K eps`` of the
    largest count as 0 (the minimum-norm least-squares solution of a fit the draws leave
    undetermined)."""
    k = a.shape[-1]
    a = 0.5 * (a + jnp.swapaxes(a, -1, -2))
    if alpha:
        a = a + alpha * jnp.eye(k, dtype=a.dtype)
    lam, v = jnp.linalg.eigh(a)
    cut = 10 * k * float(np.finfo(np.float32).eps) * jnp.max(lam, axis=-1, keepdims=True)
    inv = jnp.where(lam > cut, 1.0 / jnp.where(lam > cut, lam, 1.0), 0.0)
    vb = jnp.einsum("...kj,...kt->...jt", v, b, precision=_HIGHEST)
    return jnp.einsum("...kj,...jt->...kt", v, inv[..., None] * vb, precision=_HIGHEST)


def _helmert_t(a: Array, axis: int) -> Array:
    """``H^T a`` along ``axis`` (length ``M`` -> ``M - 1``), ``H`` the ``M x (M - 1)``
    Helmert basis of the vectors summing to 0: column ``j = 1..M-1`` is ``(1, ..., 1, -j,
    0, ..., 0) / sqrt(j (j + 1))`` (``j`` ones). Orthonormal; ``O(M)`` per vector."""
    a = jnp.moveaxis(a, axis, -1)
    m = a.shape[-1]
    j = jnp.arange(1, m, dtype=a.dtype)
    out = (jnp.cumsum(a, axis=-1)[..., :-1] - j * a[..., 1:]) / jnp.sqrt(j * (j + 1))
    return jnp.moveaxis(out, -1, axis)


def _helmert(u: Array, axis: int) -> Array:
    """``H u`` along ``axis`` (length ``M - 1`` -> ``M``): row ``i`` is ``sum_{j > i} q_j -
    i q_i`` with ``q_j = u_j / sqrt(j (j + 1))`` (``q_0 = 0``)."""
    u = jnp.moveaxis(u, axis, -1)
    j = jnp.arange(1, u.shape[-1] + 1, dtype=u.dtype)
    q = jnp.concatenate([jnp.zeros(u.shape[:-1] + (1,), u.dtype), u / jnp.sqrt(j * (j + 1))],
                        axis=-1)
    after = jnp.sum(q, axis=-1, keepdims=True) - jnp.cumsum(q, axis=-1)
    i = jnp.arange(q.shape[-1], dtype=u.dtype)
    return jnp.moveaxis(after - i * q, -1, axis)


def _shap_solve(gram: Array, zv: Array, gain: Array, counts: Array, order: Array,
                inverse: Array) -> Array:
    """KernelSHAP's values ``(N, T, M)``: the least-squares fit of ``v(z) - v(empty)`` by
    ``z . phi`` subject to ``sum phi = gain`` (``(N, T)``), from ``gram = sum z z^T``
    ``(N, M, M)`` and ``zv = sum z (v(z) - v(empty))^T`` ``(N, M, T)``, over each input's
    own groups: input ``n`` has ``counts[n]`` of them, the first in ``order[n]`` (``(N, M)``:
    the group at each position; ``inverse`` its inverse), and the groups it lacks get 0.

    In that order, ``phi = gain / M_n`` on the first ``M_n`` positions ``+ H u``, ``H`` the
    Helmert basis of the vectors summing to 0, whose first ``M_n - 1`` columns span those of
    the first ``M_n`` positions (``u``'s other components are 0): ``(H^T G H) u = H^T (zv - G
    1_own gain^T / M_n)``."""
    m = gram.shape[-1]
    gram = jnp.take_along_axis(jnp.take_along_axis(gram, order[:, :, None], axis=1),
                               order[:, None, :], axis=2)
    zv = jnp.take_along_axis(zv, order[:, :, None], axis=1)
    own = (jnp.arange(m)[None, :] < counts[:, None])[..., None]  # (N, M, 1)
    free = (jnp.arange(m - 1)[None, :] < (counts - 1)[:, None])[..., None]  # (N, M-1, 1)
    share = jnp.where(own, (gain / counts[:, None].astype(gain.dtype))[:, None, :], 0.0)
    rhs = zv - jnp.sum(jnp.where(own[..., 0][:, None, :], gram, 0.0), axis=-1)[..., None] \
        * share[:, :1]  # zv - G 1_own gain^T / M_n (N, M, T)
    g_r = _helmert_t(_helmert_t(gram, 1), 2)  # (N, M-1, M-1)
    g_r = jnp.where(free & jnp.swapaxes(free, 1, 2), g_r, 0.0)
    u = _solve_psd(g_r, jnp.where(free, _helmert_t(rhs, 1), 0.0), 0.0)  # (N, M-1, T)
    # the masked components exactly 0 (the eigenvectors mix the blocks by rounding, and
    # Helmert's sums leave rounding at the positions beyond M_n)
    phi = jnp.where(own, share + _helmert(jnp.where(free, u, 0.0), 1), 0.0)  # (N, M, T)
    return jnp.swapaxes(jnp.take_along_axis(phi, inverse[:, :, None], axis=1), 1, 2)


#: :func:`lime` refuses a fit whose kernel leaves a group less than this fraction of what the
#: draws offered it unweighted (its effective coalitions, capped at the fit's unknowns; or
#: its weighted data where the ridge penalty then outweighs them). See :func:`_lime_stats`.
MIN_KEPT_FRACTION = 0.5


def _lime_stats(totals: tuple, n: int, counts: Array, has: Array, alpha: float) -> dict:
    """What :func:`lime` checks its fits by, per input (``(N,)``) and group (``(N, M)``):

    - ``"n"``: each group's effective number of coalitions: Kish's effective sample size of
      the weights, ``(sum w)^2 / sum w^2``, times the weighted variance of ``z_j`` over its
      variance under unweighted draws (1/4). A kernel that puts the weight on a handful of
      coalitions leaves few; one that puts it on the coalitions keeping (nearly) every group
      (a tiny ``kernel_width``) leaves the groups no variance.
    - ``"u"``: the same with every weight 1 (``n`` times the draws' own variance of ``z_j``
      over 1/4): what the draws offer the group; 0 where every draw keeps it, or none does.
    - ``"g"``, ``"g_u"``: the group's weighted variance summed over the draws, ``sum w (z_j -
      mean)^2``, and the same unweighted: the ridge penalty ``alpha`` shrinks the group's
      coefficient by about ``alpha / (alpha + g)``.
    - ``"share"``: the mean weight ``sum w / n``; ``"d"``: the root mean square of the draws'
      distances to ``x``.
    - ``"refused"``: the draws vary no group at all (``n=1``), or the weights leave some
      group that the draws do vary fewer than :data:`MIN_KEPT_FRACTION` of ``min(u_j, M +
      1)`` effective coalitions (a fit of ``M + 1`` unknowns), or leave it less than that
      fraction of its unweighted data ``g_u`` and less than ``alpha`` (more than half of its
      coefficient the penalty's). The penalty and rounding, not the model, then set the
      coefficients (near 0; NaN where every weight is 0). What the draws themselves lack
      (``n`` near ``M``: a group kept in every draw, a penalty that outweighs few draws) is
      the caller's choice, not refused.
    """
    sw, sc, _, _, _, sww, su, sdd = totals
    ess = jnp.where(sww > 0, sw * sw / jnp.where(sww > 0, sww, 1.0), 0.0)
    mean_c = sc / jnp.where(sw > 0, sw, 1.0)[:, None]
    var = jnp.clip(0.25 - mean_c * mean_c, 0.0, 0.25)  # (N, M)
    var_u = jnp.clip(0.25 - (su / n) ** 2, 0.0, 0.25)
    n_j, u_j = 4.0 * ess[:, None] * var, 4.0 * n * var_u
    g_j, g_u = sw[:, None] * var, n * var_u
    varied = has & (u_j >= 1.0)
    short = n_j < MIN_KEPT_FRACTION * jnp.minimum(u_j, counts[:, None].astype(sw.dtype) + 1.0)
    penalized = (g_j < alpha) & (g_j < MIN_KEPT_FRACTION * g_u)
    refused = (jnp.any(varied & (short | penalized), axis=-1) | ~jnp.any(varied, axis=-1)
               | ~jnp.all(jnp.isfinite(n_j) | ~has, axis=-1))
    return {"n": n_j, "u": u_j, "g": g_j, "g_u": g_u, "share": sw / n,
            "d": jnp.sqrt(sdd / n), "refused": refused}


def _check_lime_fit(stats: dict, n: int, counts: np.ndarray, has: np.ndarray,
                    width: float, distance: str, alpha: float, index_offset: int,
                    ids: np.ndarray) -> None:
    """Raise the ``ValueError`` of :func:`lime` for the inputs whose fit :func:`_lime_stats`
    refused: which group lacks what, and the fix (a wider kernel, or more draws). ``ids``
    ``(M,)``: each group's id (its ``feature_mask`` value, or patch number), the name the
    message gives it."""
    bad = np.flatnonzero(stats["refused"])
    if not bad.size:
        return
    i = int(bad[0])
    m = int(counts[i])
    n_j, u_j, g_j, g_u = (stats[k][i] for k in ("n", "u", "g", "g_u"))
    varied = has[i] & (u_j >= 1.0)
    others = "" if bad.size == 1 else f" (and {bad.size - 1} more input(s) like it)"
    where = f"the fit of input {index_offset + i}{others}"
    if not varied.any():
        raise ValueError(
            f"lime: expected coalitions that vary the groups; the n={n} draw(s) for input "
            f"{index_offset + i}{others} keep each of its {m} groups in every draw or in "
            f"none, so no coefficient can be fitted (they would be 0). Pass a larger n: at "
            f"least {m + 1}, better many more (the default is {LIME_SAMPLES})")
    need = MIN_KEPT_FRACTION * np.minimum(u_j, m + 1)
    ratio = np.where(varied, n_j / np.maximum(need, 1e-30), np.inf)
    j = int(np.argmin(ratio))
    if ratio[j] < 1.0:
        got = (f"expected every group's coefficient to rest on at least {need[j]:.3g} "
               f"effective coalitions (half of the fit's {m + 1} unknowns, or of the "
               f"{u_j[j]:.4g} the n={n} draws offer the group unweighted); {where} has "
               f"{n_j[j]:.3g} for group id {ids[j]}, so the ridge penalty and rounding, not "
               "the model, would set the coefficients (near 0, or NaN where every weight is "
               "0)")
    else:
        j = int(np.argmin(np.where(varied, g_j - alpha, np.inf)))
        got = (f"expected the ridge penalty alpha={alpha:g} below every group's weighted data "
               f"(its weighted variance summed over the draws: {g_u[j]:.3g} for group id "
               f"{ids[j]} unweighted); {where} leaves group id {ids[j]} with {g_j[j]:.3g}, so "
               f"the penalty, not the model, would set its coefficient (shrunk by "
               f"{alpha / (alpha + g_j[j]):.0%})")
    d_rms, share = float(stats["d"][i]), float(stats["share"][i])
    step = 10.0 ** (math.floor(math.log10(d_rms)) - 1) if d_rms > 0 else 0.01
    suggest = float(f"{math.ceil(d_rms / step * (1 - 1e-6)) * step:.2g}")  # d_rms rounded up
    raise ValueError(
        f"lime: {got}. kernel_width={width:g} gives the weights exp(-d^2 / (2 "
        f"kernel_width^2)) (mean {share:.2g}) of distances d to x of about {d_rms:.3g} (the "
        f"draws' root mean square, distance={distance!r}) to only the coalitions closest to "
        f"x, those that keep (nearly) every group. Pass kernel_width={suggest:g} or more "
        "(about the draws' typical distance to x)")


def _lime_solve(moments: tuple, alpha: float) -> Array:
    """LIME's coefficients ``(N, T, M)``: the weighted ridge fit with an (unpenalized)
    intercept, from the weighted moments of ``c = z - 1/2`` and of the scores (centring the
    coalitions first keeps the digits of the centred Gram matrix; the fit's slopes do not
    depend on it)."""
    sw, sc, cc, sv, cv = moments  # (N,), (N, M), (N, M, M), (N, T), (N, M, T)
    mean_c = sc / sw[:, None]
    gram = cc - sc[:, :, None] * mean_c[:, None, :]
    rhs = cv - mean_c[:, :, None] * sv[:, None, :]
    return jnp.swapaxes(_solve_psd(gram, rhs, alpha), 1, 2)


# ------------------------------------------------------------------ the methods
#: The per-input arrays of :func:`kernel_shap`'s program (its own groups, their size
#: distributions and order), split with the inputs.
_OWN = (8, 9, 10, 11, 12, 13, 14, 15)

def _plan(p, groups, fill, nb, memory_budget):
    """Inputs per sub-batch: also bound by the normal equations, ``M^2`` floats per input
    (``fill`` broadcast to ``x`` where that splits the batch)."""
    m = groups.m
    nb2 = base.batch_chunk(p.n, 4 * (m * m + 2 * m), memory_budget, factor=3)
    if nb2 < nb:
        nb = nb2
        fill = jnp.broadcast_to(fill, p.x.shape)
    return fill, nb


def kernel_shap(model: ModelLike, x: ArrayLike, targets: Targets = None, *,
                key: jax.Array | int | None = None, n: int | None = None,
                patch: int | tuple | None = None, feature_mask: ArrayLike | None = None,
                fill: ArrayLike = 0.0, batch_size: int | None = None,
                head: str | None = None, memory_budget: int | None = None,
                precision: str | None = None, check_finite: bool = True,
                return_groups: bool = False, index_offset: int = 0,
                group_ids: ArrayLike | None = None) -> Array:
    """KernelSHAP (Lundberg & Lee, 2017; Captum's ``KernelShap``): Shapley values of groups
    of input features estimated by a linear regression on random coalitions.

    The players, coalitions and values are those of :func:`jaxsal.shapley_values`. For each
    input, ``n`` coalitions are drawn from the Shapley kernel: a size ``s`` in ``1..M-1``
    with probability proportional to ``(M - 1) / (s (M - s))``, then a uniform subset of
    ``s`` groups (every draw weighted alike, as Captum). The estimate is the least-squares
    fit of their scores by ``v(empty) + z . phi`` subject to ``sum phi = v(all) -
    v(empty)``: the kernel's infinite weights on the empty and the full coalition are
    constraints, so efficiency holds exactly for every estimate (Captum approximates them
    with a weight of 1e6). On a linear model the estimate is exact once the draws determine
    the fit; otherwise it converges to the exact values as ``n`` grows. Where the draws
    leave the fit undetermined (fewer distinct coalitions than ``M - 1``), the estimate is
    the solution closest to equal shares. Where ``n`` covers all ``2^M - 2`` coalitions
    (with the default ``n``, up to ``M = 11``), each is evaluated once instead, weighted by
    the Shapley kernel ``(M - 1) / (C(M, s) s (M - s))``, as the ``shap`` package does for
    the sizes its budget covers: the fit is then the exact Shapley values of any model, the
    same for every key (one mask per input: per input, by its own ``M_i``). Captum's
    ``KernelShap`` draws at random whatever ``n``.

    Costs ``n * N`` masked forward passes (``(2^M - 2) * N`` where they are enumerated;
    and one over ``x``, one over the fill), batched and shared by every target, and one
    ``M x M`` eigendecomposition per input; at most 4096 groups.

    Args:
      model, x, targets, patch, feature_mask, fill, batch_size, head, memory_budget,
        precision, check_finite, return_groups: as in :func:`jaxsal.shapley_values`.
      key: a ``jax.random`` key or an int seed (required: the same key gives the same
        values).
      n: coalitions per input (Captum's ``n_samples``, whose default, 25, counts the empty
        and the full one); default ``2 M + 2048`` (the ``shap`` package's ``"auto"``). At
        least ``2^M - 2``: every coalition, enumerated (above).
      index_offset: the position of ``x[0]`` in a larger batch: coalition ``k`` of input
        ``i`` is keyed by ``(k, index_offset + i)``, so rows ``a:b`` of one call equal a
        call on ``x[a:b]`` with ``index_offset=a`` (:func:`jaxsal.explain_to_file` passes
        it), whatever the batching.
      group_ids: as in :func:`jaxsal.shapley_value_sampling` (the ids that are groups, for
        one mask per input; :func:`jaxsal.explain_to_file` passes the job's).
    Returns:
      Raw maps ``(N, H, W)`` or ``(N, T, H, W)`` (``(N, D)`` / ``(N, T, D)`` for features;
      with channels when ``feature_mask`` groups them apart), or the group values
      ``(N, K)`` / ``(N, T, K)`` (``return_groups=True``).

    Example::

        phi = jaxsal.kernel_shap(model, x, [3, 5], key=0, feature_mask=superpixels)
    """
    key = base.check_key(key, "kernel_shap")
    index_offset = base.check_index_offset(index_offset)
    p, groups, fill, batch_size, per_image, nb, return_groups = _setup(
        kernel_shap, model, x, targets, patch, feature_mask, fill, batch_size, head,
        memory_budget, check_finite, return_groups, group_ids)
    m_groups = groups.m
    _check_groups(m_groups, "kernel_shap")
    n_draws = _check_n(2 * m_groups + KERNEL_SHAP_SAMPLES if n is None else n, m_groups,
                       "kernel_shap")
    # every input of the call enumerates its coalitions where those of all the call's
    # groups fit in n: 2^M - 2 passes are enough (fewer than n)
    items = 2 ** m_groups - 2 if m_groups > 1 and _enumerated(m_groups, n_draws) else n_draws
    fill, nb = _plan(p, groups, fill, nb, memory_budget)
    group = base.masked_chunk(items, per_image, nb, batch_size, memory_budget)
    m, spec, info = p.model, p.spec, p.info
    counts, local, has = _own_groups(groups, p.n)
    order = np.argsort(~has, axis=1, kind="stable").astype(np.int32)  # own groups first
    # (N,) the inputs whose coalitions fit in n, known here: passed, not closed over (the
    # program serves other masks and batch sizes), split with the inputs
    exact = _enumerated(counts, n_draws)
    per_input = (counts, local, has, _size_cdfs(counts, m_groups), order,
                 np.argsort(order, axis=1).astype(np.int32),
                 _kernel_weights(counts, m_groups).astype(s_dtype(p.x)), exact)

    def build():
        def run(params, x, ids, fill, gid, key, index, cols, counts, local, has, cdf, order,
                inverse, weights, exact):
            sp, ids_, fill_b, s_full, s_empty = _endpoints(  # v(all) (N, T), v(empty)
                m, params, x, fill, spec, info, ids, empty=True)
            gain = s_full - s_empty
            clean = _finite_rows(s_full)
            bad_empty = jnp.sum(~jnp.isfinite(s_empty), axis=1, dtype=jnp.int32)  # (N,)
            if m_groups == 1:  # the constraint alone: phi = v(all) - v(empty)
                return (_finish(gain[:, :, None], gid, cols, groups, spec.class_axis,
                                return_groups), clean, bad_empty)
            ids_rep = base.repeat_rows(ids_, group)
            kp, kz = _keys(key)
            need = jnp.where(exact, jnp.left_shift(1, jnp.minimum(counts, _MAX_ENUMERATED))
                             - 2, 0)  # (N,) their number
            bit = jnp.minimum(jnp.arange(m_groups, dtype=jnp.int32), 31)

            def normal_equations(ks, valid):  # coalitions ks (G,)
                own = _kernel_coalitions(kp, kz, cdf, ks, index, m_groups, counts)
                # an enumerating input's coalition k is the bit set k + 1 of its own groups,
                # weighted by the Shapley kernel; the others' draws weigh 1
                sets = jnp.right_shift((ks + 1)[:, None], bit[None]) & 1  # (G, M)
                own = jnp.where(exact[None, :, None], sets[:, None, :].astype(bool), own)
                size = jnp.clip(sets.sum(axis=1) - 1, 0, weights.shape[1] - 1)  # (G,)
                w = jnp.where(exact[None], jnp.where((ks + 1)[:, None] <= need[None],
                                                     weights[:, size].T, 0.0), 1.0)
                w = w.astype(s_dtype(x)) * valid[:, None].astype(s_dtype(x))  # (G, N)
                keep = _to_groups(own, local, has, False)  # (G, N, M)
                present = _present(gid, keep)
                xo = jnp.where(present, x[None], fill_b[None])
                scores = _scores(m, params, xo, sp, info, ids_rep, group)
                s = scores - s_empty[None]
                z = keep.astype(s_dtype(x))
                wz = w[..., None] * z
                return (jnp.einsum("gnm,gnk->nmk", wz, z, precision=_HIGHEST),
                        jnp.einsum("gnm,gnt->nmt", wz, s, precision=_HIGHEST),
                        _bad_scores(scores, valid))

            gram, zv, bad = base.sum_groups(normal_equations, items, group)
            phi = _shap_solve(gram, zv, gain, counts, order, inverse)
            return (_finish(phi, gid, cols, groups, spec.class_axis, return_groups), clean,
                    bad + bad_empty)

        return run

    ck = ("kernel_shap", p.key, spec, info, base.shape_key(p.x), _key(groups, return_groups),
          n_draws, items, group, nb, return_groups)
    maps, clean, bad = base.compiled(
        ck, lambda: base.split_batch(build(), nb, (1, 2, 6) + _OWN, (3, 4)), precision,
        forward_only=True)(
        p.params, p.x, p.ids, fill, jnp.asarray(groups.gid), key,
        base.input_indices(index_offset, p.n), jnp.asarray(groups.ids),
        *map(jnp.asarray, per_input))
    check_fill_score("kernel_shap", p, fill, maps, check_finite)
    check_coalitions("kernel_shap", clean, bad, check_finite,
                     copies=(items if m_groups > 1 else 0) + 1, num=spec.num)  # (and v(empty))
    return maps


def lime(model: ModelLike, x: ArrayLike, targets: Targets = None, *,
         key: jax.Array | int | None = None, n: int = LIME_SAMPLES, alpha: float = 1.0,
         kernel_width: float = 1.0, distance: str = "input",
         patch: int | tuple | None = None, feature_mask: ArrayLike | None = None,
         fill: ArrayLike = 0.0, batch_size: int | None = None, head: str | None = None,
         memory_budget: int | None = None, precision: str | None = None,
         check_finite: bool = True, return_groups: bool = False,
         index_offset: int = 0, group_ids: ArrayLike | None = None) -> Array:
    """LIME (Ribeiro, Singh & Guestrin, 2016; Captum's ``Lime``): the coefficients of a
    linear model of the target's score in the presence of groups of input features, fitted
    to random masked inputs weighted by their closeness to ``x``.

    The groups and the masked inputs are those of :func:`jaxsal.shapley_values`. For each
    input, ``n`` coalitions ``z`` are drawn, every group kept with probability 1/2 (as
    Captum), and weighted ``w = exp(-d^2 / (2 kernel_width^2))`` (Captum's exponential
    kernel), ``d`` the cosine distance between ``x`` and the masked input
    (``distance="input"``, Captum's) or between the all-ones vector and ``z``
    (``"interpretable"``, the ``lime`` package's: ``d = 1 - sqrt(|z| / M)``). The surrogate
    minimizes ``sum_k w_k (v(z_k) - b - z_k . phi)^2 + alpha |phi|^2`` (scikit-learn's
    ``Ridge(alpha)`` with ``sample_weight``; the intercept ``b`` is not penalized), solved
    in closed form; ``alpha=0`` is weighted least squares (the minimum-norm solution where
    the draws leave it undetermined). Captum's default surrogate is a lasso
    (``Lasso(alpha=0.01)``, fitted iteratively, sparse); this ridge is the ``lime``
    package's default surrogate, ``Ridge(alpha=1)``.

    Costs ``n * N`` masked forward passes (and one over ``x``), batched and shared by every
    target, and one ``M x M`` eigendecomposition per input; at most 4096 groups.

    Args:
      model, x, targets, patch, feature_mask, fill, batch_size, head, memory_budget,
        precision, check_finite, return_groups: as in :func:`jaxsal.shapley_values`.
      key: a ``jax.random`` key or an int seed (required: the same key gives the same
        values).
      n: coalitions per input (Captum's ``n_samples``, default 25 there; here 1000, the
        ``lime`` package's for images: a fit of ``M + 1`` unknowns wants many more than
        ``M`` draws).
      alpha: the L2 penalty (>= 0), in scikit-learn's ``Ridge`` scale: the weighted sum of
        squares is not divided by ``n``, so its effect fades as ``n`` grows.
      kernel_width: the width of the exponential kernel (> 0; Captum's default, 1.0; the
        ``lime`` package uses 0.25 with ``distance="interpretable"``).
      distance: ``"input"`` (default) or ``"interpretable"``, as above.
      index_offset, group_ids: as in :func:`jaxsal.kernel_shap`.
    Raises:
      ValueError: where the weights leave the fit without data (a ``kernel_width`` far
        below the draws' distances to ``x`` puts the weight on the few coalitions that keep
        nearly every group; the coefficients would be near 0, or NaN where every weight is
        0): some group keeps fewer than half of ``min(its unweighted count, M + 1)``
        effective coalitions, or less than half of its unweighted data and less than
        ``alpha``; or the draws vary no group (``n=1``). The message
        names a ``kernel_width`` (the draws' root-mean-square distance to ``x``) or an ``n``
        that works. Under a ``jax.jit`` of the caller's, nothing can be raised: those
        inputs' maps are NaN.
      jaxsal.NonFiniteMaps: with ``check_finite``, for the inputs whose score on ``x`` or
        on some coalition is NaN/inf (their maps would be); not under the caller's jit.
    Returns:
      Raw maps ``(N, H, W)`` or ``(N, T, H, W)`` (``(N, D)`` / ``(N, T, D)`` for features;
      with channels when ``feature_mask`` groups them apart), or the coefficients
      ``(N, K)`` / ``(N, T, K)`` (``return_groups=True``).

    Example::

        coef = jaxsal.lime(model, x, 3, key=0, feature_mask=superpixels, fill=blurred)
    """
    key = base.check_key(key, "lime")
    index_offset = base.check_index_offset(index_offset)
    alpha = reals.check_real(alpha, "alpha", low=0,
                             kind="a finite number: the L2 penalty; 0 for none")
    width = reals.check_real(kernel_width, "kernel_width", low=0, above=True, example="1.0",
                             kind="a finite number: the exponential kernel's width")
    if not isinstance(distance, str) or distance not in DISTANCES:
        raise ValueError(f"expected distance as one of {DISTANCES} (the cosine distance "
                         f"between x and the masked input, Captum's, or between the all-ones "
                         f"vector and the coalition, the lime package's), got {distance!r}")
    p, groups, fill, batch_size, per_image, nb, return_groups = _setup(
        lime, model, x, targets, patch, feature_mask, fill, batch_size, head,
        memory_budget, check_finite, return_groups, group_ids)
    if distance == "input" and jnp.issubdtype(p.x.dtype, jnp.integer) and p.x.ndim == 2:
        # (raw integer images, (N, H, W, C) of a model that scales them, are pixel values:
        # their cosine is computed in float below)
        raise ValueError("lime: distance='input' is the cosine between x and the masked "
                         "input, which is meaningless for integer ids (token ids); pass "
                         "distance='interpretable' (the lime package's)")
    m_groups = groups.m
    _check_groups(m_groups, "lime")
    n_draws = _check_n(n, m_groups, "lime")
    fill, nb = _plan(p, groups, fill, nb, memory_budget)
    group = base.masked_chunk(n_draws, per_image, nb, batch_size, memory_budget)
    m, spec, info = p.model, p.spec, p.info
    own_groups = _own_groups(groups, p.n)

    def build():
        def run(params, x, ids, fill, gid, key, index, cols, counts, local, has):
            sp, ids_, fill_b, s_full, _ = _endpoints(  # s_full (N, T): the scores' centre
                m, params, x, fill, spec, info, ids, empty=False)
            ids_rep = base.repeat_rows(ids_, group)
            kp = _keys(key)[0]
            axes = tuple(range(1, x.ndim))
            xf = x.astype(s_dtype(x))  # raw integer images: in float (uint8 squares wrap)
            norm_x = jnp.sqrt(jnp.sum(xf * xf, axis=axes))  # (N,)

            def moments(ks, valid):  # coalitions ks (G,)
                # each input's own groups (a mask per input may lack some of the batch's
                # ids: never kept, their coefficients 0)
                keep = _to_groups(_bernoulli(kp, ks, index, m_groups, counts), local, has,
                                  False)  # (G, N, M)
                present = _present(gid, keep)
                xo = jnp.where(present, x[None], fill_b[None])  # (G, N, ...)
                if distance == "input":  # 1 - cos(x, x_z); 0/0 counts as cos 0, as torch
                    xof = xo.astype(xf.dtype)
                    dot = jnp.sum(xof * xf[None], axis=tuple(a + 1 for a in axes))
                    norms = jnp.sqrt(jnp.sum(xof * xof, axis=tuple(a + 1 for a in axes)))
                    d = 1.0 - dot / jnp.maximum(norms * norm_x[None], 1e-8)
                else:  # 1 - cos(ones, z) = 1 - sqrt(|z| / M), over the input's own groups
                    d = 1.0 - jnp.sqrt(keep.sum(axis=-1).astype(s_dtype(x))
                                       / counts[None, :].astype(s_dtype(x)))
                w = jnp.exp(-d * d / (2.0 * width * width)) * valid[:, None].astype(d.dtype)
                scores = _scores(m, params, xo, sp, info, ids_rep, group)
                s = scores - s_full[None]
                c = keep.astype(w.dtype) - 0.5
                wc = w[..., None] * c  # (G, N, M)
                on = valid[:, None].astype(w.dtype)
                return (w.sum(axis=0), wc.sum(axis=0),
                        jnp.einsum("gnm,gnk->nmk", wc, c, precision=_HIGHEST),
                        jnp.einsum("gn,gnt->nt", w, s, precision=_HIGHEST),
                        jnp.einsum("gnm,gnt->nmt", wc, s, precision=_HIGHEST),
                        # for _lime_stats: sum w^2, the unweighted sum of c, sum d^2
                        (w * w).sum(axis=0), (on[..., None] * c).sum(axis=0),
                        (on * d * d).sum(axis=0), _bad_scores(scores, valid))

            out = base.sum_groups(moments, n_draws, group)
            totals, bad = out[:-1], out[-1]
            stats = _lime_stats(totals, n_draws, counts, has, alpha)
            phi = _lime_solve(totals[:5], alpha)
            phi = jnp.where(has[:, None, :], phi, 0.0)  # (0 but for the solver's rounding)
            phi = jnp.where(stats["refused"][:, None, None], jnp.nan, phi)  # see lime
            return (_finish(phi, gid, cols, groups, spec.class_axis, return_groups), stats,
                    _finite_rows(s_full), bad)

        return run

    ck = ("lime", p.key, spec, info, base.shape_key(p.x), _key(groups, return_groups),
          n_draws, alpha, width, distance, group, nb, return_groups)
    maps, stats, clean, bad = base.compiled(
        ck, lambda: base.split_batch(build(), nb, (1, 2, 6, 8, 9, 10), (3, 4)), precision,
        forward_only=True)(
        p.params, p.x, p.ids, fill, jnp.asarray(groups.gid), key,
        base.input_indices(index_offset, p.n), jnp.asarray(groups.ids),
        *map(jnp.asarray, own_groups))
    # under a jit, or a jax.grad with respect to x (whose traced stats have no values): NaN
    # maps (see above)
    if not any(isinstance(v, jax.core.Tracer) for v in jax.tree_util.tree_leaves(stats)):
        _check_lime_fit(jax.tree_util.tree_map(np.asarray, stats), n_draws, own_groups[0],
                        own_groups[2], width, distance, alpha, index_offset,
                        np.asarray(groups.ids))
    check_fill_score("lime", p, fill, maps, check_finite)
    check_coalitions("lime", clean, bad, check_finite, copies=n_draws, num=spec.num,
                     clean_what="the score on x itself, which the fit is centred on")
    return maps


def _kernel_shap_job_options(model: Any, shape: tuple, options: dict) -> dict:
    """As the sampled Shapley methods' (:func:`jaxsal._src.shapley._sampled_job_options`:
    the ids of all the masks as ``group_ids``), and the default ``n`` of the whole job
    (``2 M + 2048`` for those ids: a chunk's own would give its chunks other draws)."""
    options = _sampled_job_options(model, shape, options)
    ids = options.get("group_ids")
    if options.get("n") is None and ids is not None and np.size(ids) <= MAX_GROUPS:
        options = {**options, "n": 2 * int(np.unique(np.asarray(ids)).size)
                   + KERNEL_SHAP_SAMPLES}
    return options


#: explain_to_file slices an ``(N, H, W)`` feature_mask with the inputs and, for
#: ``return_groups=True``, fixes the number of columns of the whole job (as the Shapley
#: methods); kernel_shap's default n too. It refuses a job over several inputs before any
#: work (``one_input``).
for _f in (kernel_shap, lime):
    _f.per_input_options = _per_input_mask
    _f.one_input = "its feature groups would need a rule across inputs"
lime.job_options = _sampled_job_options
kernel_shap.job_options = _kernel_shap_job_options
