"""Permutation feature importance (Breiman, 2001, "Random Forests"; Fisher, Rudin & Dominici,
2019, "All Models are Wrong, but Many are Useful"; Captum's ``FeaturePermutation``).

A group of input features (a patch of a grid, a ``feature_mask`` group, one feature of an
``(N, D)`` input) is shuffled across the batch: input ``i`` gets input ``perm(i)``'s values
there, the rest of it unchanged, and its attribution is the score's drop,
``S(x_i) - S(x_i with the group from x_perm(i))``. Each group gets its own random
permutation (never the identity, as Captum), ``n`` of them averaged. The values depend on the
batch: it stands for the data distribution the features are drawn from.

Every (permutation, group) pair is one shuffled copy of the batch; the copies run as batched
forward passes (groups of copies in a ``fori_loop``, under the memory budget), and every
target's score comes from the same passes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsal._src import base
from jaxsal._src.base import ModelLike
from jaxsal._src.targets import Targets
from jaxsal._src.shapley import (_bad_scores, _endpoints, _finish, _finite_rows, _key,
                                 _scores, _setup, check_coalitions, s_dtype)

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

_HIGHEST = jax.lax.Precision.HIGHEST


def permutations(key: Array, r: Array, g: Array, n: int) -> Array:
    """The permutation of ``n`` inputs that shuffles group ``g`` in round ``r``: uniform over
    the ``n! - 1`` permutations other than the identity (drawn again from the next key until
    it is not), keyed by ``(key, r, g)``; ``r`` and ``g`` may be arrays of one shape (one
    permutation each: ``(*r.shape, n)``)."""
    ident = jnp.arange(n, dtype=jnp.int32)

    def one(r, g):
        k = jax.random.fold_in(jax.random.fold_in(key, r), g)

        def draw(c):
            return jax.random.permutation(jax.random.fold_in(k, c), n).astype(jnp.int32)

        def again(state):
            return (state[1] == ident).all() & (n > 1)

        return jax.lax.while_loop(again, lambda s: (s[0] + 1, draw(s[0] + 1)),
                                  (jnp.int32(0), draw(jnp.int32(0))))[1]

    flat = jax.vmap(one)(jnp.ravel(r), jnp.ravel(g))
    return flat.reshape(jnp.shape(r) + (n,))


def feature_permutation(model: ModelLike, x: ArrayLike, targets: Targets = None, *,
                        key: jax.Array | int | None = None, n: int = 1,
                        patch: int | tuple | None = None,
                        feature_mask: ArrayLike | None = None,
                        batch_size: int | None = None, head: str | None = None,
                        memory_budget: int | None = None, precision: str | None = None,
                        check_finite: bool = True, return_groups: bool = False) -> Array:
    """Permutation feature importance (Breiman, 2001; Fisher, Rudin & Dominici, 2019;
    Captum's ``FeaturePermutation``): each group's values shuffled across the batch, the
    attribution of input ``i`` the score's drop ``S(x_i) - S(x_i with the group of
    x_perm(i))``, averaged over ``n`` permutations per group (never the identity).

    The batch is the sample the shuffled values come from: use a batch drawn from the data
    (at least 2 inputs; the values change with it). ``n * M`` shuffled copies of the batch
    (``M`` groups) run as batched forward passes shared by every target.

    Args:
      model, x, targets, patch, feature_mask, batch_size, head, memory_budget, precision,
        check_finite, return_groups: as in :func:`jaxsal.shapley_values` (groups: a grid of
        ``patch`` cells, channels together, or a ``feature_mask``; ``(N, D)`` features
        default to one group per feature, Captum's default; token ids may be shuffled
        too). ``batch_size`` and ``memory_budget`` bound how many shuffled copies of the
        batch one forward pass holds (``batch_size // N`` copies, at least one), not its
        rows: every copy holds all ``N`` inputs (each takes another input's values), so a
        pass holds at least ``N`` rows whatever either says; pass a smaller batch to bound
        them.
      key: a ``jax.random`` key or an int seed (required: the same key and batch give the
        same values).
      n: permutations per group, averaged (1, Captum's one per call).
    Returns:
      Raw maps ``(N, H, W)`` / ``(N, T, H, W)`` (``(N, D)`` / ``(N, T, D)`` for features;
      with channels when ``feature_mask`` groups them apart), or the group values
      ``(N, K)`` / ``(N, T, K)`` (``return_groups=True``).

    Example::

        imp = jaxsal.feature_permutation(model, table, targets=1, key=0, n=20)  # (N, D)
        imp.mean(0)                                                             # (D,)
    """
    key = base.check_key(key, "feature_permutation")
    n_rounds = base.check_n(n, "permutations per group")
    p, groups, _, batch_size, per_image, _, return_groups = _setup(
        feature_permutation, model, x, targets, patch, feature_mask, 0, batch_size, head,
        memory_budget, check_finite, return_groups)
    if p.n < 2:
        raise ValueError(f"feature_permutation shuffles each group across the batch, so it "
                         f"needs at least 2 inputs, got {p.n}; pass a batch drawn from the "
                         "data (its values stand for the feature's distribution)")
    m_groups, n_in = groups.m, p.n
    total = n_rounds * m_groups
    # every shuffled copy holds the whole batch (inputs trade values): no sub-batches
    group = base.masked_chunk(total, per_image, n_in, batch_size, memory_budget)
    m, spec, info = p.model, p.spec, p.info

    def build():
        def run(params, x, ids, gid, key, cols):
            sp, ids_, _, s_full, _ = _endpoints(m, params, x, 0, spec, info, ids, empty=False)
            ids_rep = base.repeat_rows(ids_, group)
            gid_b = jnp.broadcast_to(gid, (n_in,) + gid.shape[1:])

            def drop(ts, valid):  # items ts (G,): round r, group g
                r, g = ts // m_groups, ts % m_groups
                perm = permutations(key, r, g, n_in)  # (G, N)
                inside = gid_b[None] == g.reshape((-1,) + (1,) * gid_b.ndim)  # (G, N, ...)
                xs = jnp.where(inside, x[perm], x[None])  # (G, N, ...)
                scores = _scores(m, params, xs, sp, info, ids_rep, group)
                d = s_full[None] - scores
                onehot = jax.nn.one_hot(g, m_groups, dtype=s_dtype(x)) * valid[:, None]
                return (jnp.einsum("gnt,gm->ntm", d, onehot, precision=_HIGHEST),
                        _bad_scores(scores, valid))

            phi, bad = base.sum_groups(drop, total, group)
            return (_finish(phi / n_rounds, gid, cols, groups, spec.class_axis, return_groups),
                    _finite_rows(s_full), bad)

        return run

    ck = ("feature_permutation", p.key, spec, info, base.shape_key(p.x), n_in,
          _key(groups, return_groups), n_rounds, group, return_groups)
    maps, clean, bad = base.compiled(ck, build, precision, forward_only=True)(
        p.params, p.x, p.ids, jnp.asarray(groups.gid), key, jnp.asarray(groups.ids))
    check_coalitions("feature_permutation", clean, bad, check_finite, copies=total,
                     num=spec.num, what="shuffled copies (a group's values taken from "
                     "another input of the batch)",
                     clean_what="the score on x itself, which every drop is measured from",
                     fix="Check the model's outputs on inputs that mix the batch's features")
    return maps


#: explain_to_file refuses it: each group's values are shuffled across the batch, so a chunk's
#: values depend on the chunk (its padded copies of the last input join the shuffles).
feature_permutation.whole_batch = "shuffles each group's values across the batch"
#: A model's several inputs are refused, saying why (as the Shapley methods').
feature_permutation.one_input = "its feature groups would need a rule across inputs"
