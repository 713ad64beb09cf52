"""RISE: Randomized Input Sampling for Explanation (Petsiuk, Das & Saenko, 2018, "RISE:
Randomized Input Sampling for Explanation of Black-box Models").

The map is the score-weighted mean of random smooth masks,
``sum_k S(x * M_k + fill * (1 - M_k)) M_k / (n p)``: pixels that are kept when the score is
high get high values. A mask is a coarse ``grid x grid`` (per spatial axis) of Bernoulli(p)
cells, upsampled with bilinear interpolation to ``(grid + 1) * cell`` pixels
(``cell = ceil(size / grid)``) and cropped to the input at a random shift below ``cell``,
as the authors' code does (``skimage.transform.resize(order=1, mode="reflect")``).

Inputs without a spatial layout, ``(N, D)`` features and token ids ``(N, L)``, take binary
masks instead (a token is kept or replaced, there is no half of one): ``grid + 1`` Bernoulli(p)
cells of ``cell = ceil(D / grid)`` positions each, cropped at a random shift below ``cell``
(by default ``grid = D``: every position its own cell), and a masked position becomes
``fill`` (an id, for token ids).

Every mask is drawn from the key, the mask's number and the input's global index (not from
the batching), inside the compiled program: nothing of size ``n x H x W`` is stored. The
masked inputs run in batched forward passes, and every target's map comes from the same
passes.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import base, ints, reals
from jaxsal._src.base import ModelLike
from jaxsal._src.finite import NonFiniteMaps, listed
from jaxsal._src.postprocess import upsample_linear
from jaxsal._src.targets import Targets, resolve_predicted, run_model, score_matrix
from jaxsal._src.validate import (check_fill_ids, check_fill_score, check_flag, check_like,
                                  input_rank, prepare, spatial_shape)

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

_HIGHEST = jax.lax.Precision.HIGHEST
#: Cells per spatial axis by default (the authors' code: 8), at most the axis's size.
DEFAULT_GRID = 8


def _check_grid(grid: Any, size: tuple[int, ...], binary: bool = False) -> tuple[int, ...]:
    if grid is None:  # the default: 8 cells, at most the axis's size; binary: every position
        return tuple(size) if binary else tuple(min(DEFAULT_GRID, s) for s in size)
    g = tuple(grid) if ints.per_axis(grid) else (grid,) * len(size)
    if len(g) != len(size) or not all((ints.as_int(v) or 0) >= 1 for v in g):
        raise ValueError(f"expected grid as a positive int or {len(size)} of them (cells per "
                         f"spatial axis), got {grid!r}")
    g = tuple(ints.as_int(v) for v in g)
    bad = [(v, s) for v, s in zip(g, size) if v > s]
    if bad:
        raise ValueError(f"grid {g} has more cells than the input has pixels ({size}); expected "
                         f"at most the input's size per axis")
    return g


def _check_p(p: Any, below_one: bool = False) -> float:
    """``p`` as a float in (0, 1], or in (0, 1) with ``below_one`` (rise: p=1 keeps every
    pixel of every mask, see there)."""
    if below_one and reals.as_float(p) == 1.0:
        raise ValueError("rise: expected p in (0, 1) (the probability that a cell is kept), "
                         "got 1; with p=1 every mask keeps every pixel, every masked input is "
                         "x itself, and the map is the score S(x) at every pixel (no "
                         "attribution). Pass p in (0, 1) (the paper's is 0.5)")
    return reals.check_real(p, "p", low=0, above=True, high=1, below=below_one,
                            where="rise" if below_one else "",
                            kind="a finite number: the probability that a cell is kept")


class _Plan:
    """The static geometry of the masks of one input size: cells and upsampled size;
    ``binary``: masks of whole cells (features, token ids) instead of smooth ones."""

    def __init__(self, size: tuple[int, ...], grid: tuple[int, ...], p: float,
                 binary: bool = False):
        self.size, self.grid, self.p, self.binary = size, grid, p, binary
        self.cell = tuple(math.ceil(s / g) for s, g in zip(size, grid))
        self.up = tuple((g + 1) * c for g, c in zip(grid, self.cell))

    def mask(self, key: Array) -> Array:
        """One mask ``size`` from one key: the grid, then the shift."""
        kg, ks = jax.random.split(key)
        shape = tuple(g + 1 for g in self.grid) if self.binary else self.grid
        cells = jax.random.bernoulli(kg, self.p, shape).astype(jnp.float32)
        # one draw per axis, so that an extra axis of size 1 leaves the others' draws alone
        shift = jnp.stack([jax.random.randint(jax.random.fold_in(ks, a), (), 0, c)
                           for a, c in enumerate(self.cell)])
        return self.place(cells, shift)

    def place(self, cells: Array, shift: Array) -> Array:
        """The mask of a cell grid and a shift: upsampled axis by axis (binary: each cell
        repeated over its positions), then cropped."""
        if self.binary:
            up = cells
            for axis, c in enumerate(self.cell):
                up = jnp.repeat(up, c, axis=axis)
        else:
            up = upsample_linear(cells, self.up, range(cells.ndim), align_corners=False,
                                 mirror=True)
        return jax.lax.dynamic_slice(up, tuple(shift), self.size)

    def masks(self, key: Array, ks: Array, index: Array) -> Array:
        """``(G, N, *size)``: mask ``ks[g]`` of input ``index[n]``."""
        def one(k, i):
            return self.mask(jax.random.fold_in(jax.random.fold_in(key, k), i))

        return jax.vmap(lambda k: jax.vmap(lambda i: one(k, i))(index))(ks)


def rise_masks(key: jax.Array | int, n: int, size: tuple[int, ...], *, grid: Any = None,
               p: float = 0.5, index: int = 0, binary: bool = False) -> Array:
    """The ``n`` RISE masks that :func:`jaxsal.rise` draws for the input at global index
    ``index`` with this key: ``(n, *size)`` values in ``[0, 1]`` (``size`` the input's
    spatial size, e.g. ``(H, W)``). ``binary=True``: the 0/1 masks it draws for ``(N, D)``
    features and token ids ``(N, L)`` (``size`` then ``(D,)``). ``grid`` and ``p`` as in
    :func:`jaxsal.rise`. For inspecting or plotting them."""
    key = base.check_key(key, "rise_masks")
    n = base.check_n(n, "masks")
    sizes = base.int_sizes(size)
    if sizes is None or any(s < 1 for s in sizes):
        raise ValueError(f"rise_masks: expected size as positive ints (the spatial size, e.g. "
                         f"(28, 28)), got {size!r}"
                         f"{base.not_sizes(size, 'tuple(int(s) for s in size)')}")
    size = sizes
    binary = check_flag(binary, "binary")
    plan = _Plan(size, _check_grid(grid, size, binary), _check_p(p), binary)
    idx = jnp.asarray([base.check_index_offset(index, "index (the input's global index)")],
                      jnp.int32)
    return jax.jit(lambda k: plan.masks(k, jnp.arange(n, dtype=jnp.int32), idx)[:, 0])(key)


def rise(model: ModelLike, x: ArrayLike, targets: Targets = None, *,
         key: jax.Array | int | None = None, n: int = 2000, grid: int | tuple | None = None,
         p: float = 0.5, fill: ArrayLike = 0.0, batch_size: int | None = None,
         head: str | None = None, memory_budget: int | None = None, precision: str | None = None,
         check_finite: bool = True, index_offset: int = 0) -> Array:
    """RISE (Petsiuk, Das & Saenko, 2018): the mean of ``n`` random smooth masks weighted by
    the target's score on the masked input, ``sum_k S(x_k) M_k / (n p)`` with
    ``x_k = x * M_k + fill * (1 - M_k)``.

    Masks: a ``grid``-cell Bernoulli(``p``) grid per spatial axis, upsampled bilinearly to
    ``(grid + 1) * ceil(size / grid)`` pixels and cropped at a random shift, as the authors'
    code. ``(N, D)`` features and token ids ``(N, L)`` take binary masks (a token is kept
    or replaced by ``fill``, an id): ``grid + 1`` Bernoulli(``p``) cells of
    ``ceil(D / grid)`` positions, cropped at a random shift (default ``grid = D``: every
    position on its own). The score is whatever the head gives: the paper weighs by class
    probabilities (a ``softmax`` head); with ``logits`` negative scores subtract their masks.

    Cost: ``n`` masked forward passes per input, batched (``batch_size`` masked inputs per
    pass) and shared by every target; masks are drawn on device, never stored.

    Non-finite scores: every mask weighs every pixel, so one masked copy whose score is
    NaN/inf makes that input's map for that target NaN everywhere. With ``check_finite``
    (the default) such maps raise :class:`jaxsal.NonFiniteMaps` naming the inputs (after
    the program has run: nothing is checked under the caller's ``jax.jit``, where they come
    back NaN, as with ``check_finite=False``).

    Args:
      model, x, targets, head, memory_budget, precision, check_finite: as in
        :func:`jaxsal.saliency`; ``x`` with 1 to 3 spatial axes and a channel axis (images
        ``(N, H, W, C)``, channels-first ``(N, C, H, W)``, signals, volumes), or ``(N, D)``
        features, or token ids ``(N, L)`` (integers, for a model that embeds them).
      key: a ``jax.random`` key or an int seed (required: the same key gives the same maps).
      n: masks per input (2000; the paper's 4000 for ImageNet models).
      grid: cells per spatial axis, an int or one per axis (default 8, the authors', at
        most the axis's size; features and token ids: their length, one cell each).
      p: probability that a cell is kept (0.5, the paper's).
      fill: what a masked pixel becomes (0, the paper's: ``x * M``), a scalar or an array
        that broadcasts to ``x`` (e.g. a blurred copy); for token ids an id in the model's
        vocabulary (a padding or mask token).
      batch_size: masked inputs per forward pass (default: from ``memory_budget``).
      index_offset: the position of ``x[0]`` in a larger batch: input ``i``'s masks are
        keyed by ``index_offset + i``, so rows of one call equal a call on those rows with
        their offset (:func:`jaxsal.explain_to_file` passes it), whatever the batching.
    Returns:
      Maps ``(N, H, W)`` / ``(N, T, H, W)`` with a class axis (``(N, [T,] D)`` for features
      and token ids).

    Example::

        maps = jaxsal.rise(model, x, targets=range(10), key=0, n=4000)  # (N, 10, H, W)
        words = jaxsal.rise(text_model, ids, key=0, fill=pad_id)      # (N, L)
    """
    key = base.check_key(key, "rise")
    index_offset = base.check_index_offset(index_offset)
    n_masks = base.check_n(n, "masks")
    p_keep = _check_p(p, below_one=True)
    binary = input_rank(x) == 2  # features or token ids: no spatial layout
    pr = prepare(model, x, targets, head=head, check_finite=check_finite, spatial=not binary,
                 allow_int=binary, method=rise)
    if pr.x.ndim not in (2, 3, 4, 5):
        raise ValueError(f"rise needs x with 1 to 3 spatial axes and a channel axis, (N, D) "
                         f"features or token ids (N, L), got shape {tuple(pr.x.shape)}")
    cf = pr.channels_first
    size = tuple(pr.x.shape[1:]) if binary else spatial_shape(pr.x.shape, cf)
    plan = _Plan(size, _check_grid(grid, size, binary), p_keep, binary)
    fill = check_like(fill, pr.x, "fill", channels_first=cf)
    check_fill_ids(pr.model, fill, pr.x)
    fill, batch_size, per_image, nb = base.masked_plan(pr.model, pr.x, fill, batch_size,
                                                       memory_budget)
    group = base.masked_chunk(n_masks, per_image, nb, batch_size, memory_budget)
    m, spec, info = pr.model, pr.spec, pr.info
    cax = None if binary else (1 if cf else pr.x.ndim - 1)

    def build():
        def run(params, x, ids, fill, key, index):
            n_in = x.shape[0]
            sp, ids_ = resolve_predicted(m, params, x, spec, info, ids)
            fill_b = jnp.broadcast_to(fill, x.shape)
            ids_rep = base.repeat_rows(ids_, group)  # (input-major: stack_rows)

            def weigh(ks, valid):
                masks = plan.masks(key, ks, index)  # (G, N, *size)
                if binary:  # kept or replaced (ids stay ids)
                    xm = jnp.where(masks > 0, x[None], fill_b[None])
                else:
                    mx = jnp.expand_dims(masks, cax + 1)  # x's layout, channel axis of size 1
                    xm = fill_b[None] + (x[None] - fill_b[None]) * mx
                y, cap = run_model(m, params, base.stack_rows(xm), sp.layers)
                s = base.unstack_rows(score_matrix(sp, info, y, cap, ids_rep), group)
                # non-finite scores are counted apart and left out of the sum: in the product
                # with the masks one would make the whole map NaN (0 * NaN) or part inf
                v = valid[:, None, None]
                ok = jnp.isfinite(s)
                bad = jnp.sum(v & ~ok, axis=0, dtype=jnp.int32)  # (N, T)
                s = jnp.where(v & ok, s, jnp.zeros((), s.dtype))
                kept = jnp.sum(masks.reshape(group, n_in, -1), axis=(0, 2), where=v)
                return jnp.einsum("gnt,gn...->nt...", s, masks, precision=_HIGHEST), kept, bad

            sal, kept, bad = base.sum_groups(weigh, n_masks, group)
            sal = sal / (n_masks * p_keep)
            # no mask keeps anything (p tiny): the map is 0 whatever the model (see rise)
            sal = jnp.where((kept > 0).reshape((-1,) + (1,) * (sal.ndim - 1)), sal, jnp.nan)
            # a masked copy of NaN/inf score: the map is NaN (refused with check_finite)
            sal = jnp.where((bad > 0).reshape(bad.shape + (1,) * (sal.ndim - 2)), jnp.nan, sal)
            return (sal if spec.class_axis else sal[:, 0]), kept, bad.sum(axis=1)

        return run

    ck = ("rise", pr.key, spec, info, base.shape_key(pr.x), plan.size, plan.grid, p_keep,
          binary, n_masks, group, nb)
    index = base.input_indices(index_offset, pr.n)
    fn = base.compiled(ck, lambda: base.split_batch(build(), nb, (1, 2, 5), (3,)),
                       precision, forward_only=True)
    maps, kept, bad = fn(pr.params, pr.x, pr.ids, fill, key, index)
    if not isinstance(kept, jax.core.Tracer):  # under the caller's jit: NaN maps
        empty = np.flatnonzero(np.asarray(kept) <= 0)
        if empty.size:
            which = (f"input {index_offset + int(empty[0])}" if empty.size == 1 else
                     f"{empty.size} inputs (the first: {index_offset + int(empty[0])})")
            cells = int(np.prod([g + 1 for g in plan.grid] if binary else plan.grid))
            raise ValueError(
                f"rise: expected masks that keep some of the input; all n={n_masks} masks of "
                f"{which} keep nothing (each of their {cells} cells kept with probability "
                f"p={p_keep:g}: {p_keep * cells:.2g} cells a mask on average), so every "
                "masked input is the fill and the map would be 0 whatever the model. Pass a "
                "larger p (the paper's is 0.5) or a larger n")
    check_fill_score("rise", pr, fill, maps, check_finite)
    if check_finite and not isinstance(bad, jax.core.Tracer):
        _check_scores(np.asarray(bad), n_masks, pr.spec.num)
    return maps


def _check_scores(bad: np.ndarray, n_masks: int, num: int) -> None:
    """Raise :class:`NonFiniteMaps` for the inputs some of whose masked copies the model
    scores NaN/inf: ``bad`` ``(N,)`` counts those scores (of ``n_masks`` masks times ``num``
    targets per input)."""
    rows = np.flatnonzero(bad).tolist()
    if not rows:
        return
    worst = int(bad[rows[0]])
    of = f"{n_masks} masks" + (f" x {num} targets" if num > 1 else "")
    raise NonFiniteMaps(
        f"rise: the maps of {listed(rows)} are not finite: the model's score on some of "
        f"their masked copies is NaN or inf ({worst} of {of} for input {rows[0]}), and a "
        "RISE map is a score-weighted sum of every mask, so it would be NaN. Check the model's "
        "outputs on masked inputs (jaxsal.rise_masks(key, n, size, index=i) gives input i's "
        "masks, applied as x * M + fill * (1 - M)); another fill may avoid the NaN, or pass "
        "check_finite=False to get the NaN maps", rows)


#: explain_to_file refuses a job over several inputs before any work (see job_inputs.py).
rise.one_input = "its random masks cover one input"
