"""Permutation feature importance: the definition recomputed by hand with the same
permutations, closed forms on a linear model, the permutations' distribution, groups and
keys."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
from jaxsal._src.permutation import permutations


def _tabular(d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    w1 = jnp.asarray(rng.normal(size=(d, 8)), jnp.float32)
    w2 = jnp.asarray(rng.normal(size=(8, k)), jnp.float32)

    def f(p, x):
        return jnp.tanh(x @ p[0]) @ p[1]

    return jaxsal.FunctionModel(f, (w1, w2))


def test_values_are_the_score_drops_under_the_same_permutations():
    m = _tabular()
    x = np.random.default_rng(1).normal(size=(6, 5)).astype(np.float32)
    got = np.asarray(jaxsal.feature_permutation(m, x, [0, 2], key=3, n=4))
    assert got.shape == (6, 2, 5)
    s0 = np.asarray(m(x))[:, [0, 2]]
    want = np.zeros((6, 2, 5))
    rounds, groups = np.meshgrid(np.arange(4), np.arange(5), indexing="ij")
    perms = np.asarray(permutations(jax.random.key(3), jnp.asarray(rounds),
                                    jnp.asarray(groups), 6))  # (4, 5, 6)
    for r in range(4):
        for g in range(5):
            perm = perms[r, g]
            xs = x.copy()
            xs[:, g] = x[perm, g]
            want[:, :, g] += s0 - np.asarray(m(xs))[:, [0, 2]]
    np.testing.assert_allclose(got, want / 4, rtol=1e-5, atol=1e-6)
    # the same key gives the same values, another key others; batch_size changes nothing
    np.testing.assert_array_equal(jaxsal.feature_permutation(m, x, [0, 2], key=3, n=4), got)
    np.testing.assert_allclose(jaxsal.feature_permutation(m, x, [0, 2], key=3, n=4,
                                                          batch_size=6), got, rtol=1e-5, atol=1e-6)
    other = np.asarray(jaxsal.feature_permutation(m, x, [0, 2], key=4, n=4))
    assert np.abs(other - got).max() > 1e-3


def test_linear_model_closed_forms():
    """For a linear score, input i's drop is w_d (x_id - x_perm(i)d): with 2 inputs the only
    permutation is the swap, and over any batch the drops of a feature sum to 0."""
    w = np.asarray([[1.0, -2.0], [0.5, 3.0], [-1.5, 0.25]], np.float32)
    m = jaxsal.FunctionModel(lambda p, x: x @ p, jnp.asarray(w))
    x2 = np.asarray([[1.0, 2.0, 3.0], [-1.0, 0.5, 4.0]], np.float32)
    got = np.asarray(jaxsal.feature_permutation(m, x2, [0, 1], key=0, n=3))
    want = np.einsum("dk,nd->nkd", w, x2 - x2[::-1])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    x7 = np.random.default_rng(2).normal(size=(7, 3)).astype(np.float32)
    many = np.asarray(jaxsal.feature_permutation(m, x7, [0, 1], key=5, n=2))
    np.testing.assert_allclose(many.sum(0), 0.0, atol=1e-5)


def test_permutations_are_uniform_over_the_non_identity_ones():
    perms = np.asarray(permutations(jax.random.key(0), jnp.arange(6000) // 6,
                                    jnp.arange(6000) % 6, 3))
    assert perms.shape == (6000, 3)
    assert not (perms == np.arange(3)).all(1).any()
    codes, counts = np.unique(perms @ np.asarray([9, 3, 1]), return_counts=True)
    assert len(codes) == 5 and counts.min() > 1000 and counts.max() < 1400  # 1200 each
    assert (np.sort(perms, 1) == np.arange(3)).all()


def test_image_patches_feature_masks_and_return_groups(mnist, mnist_digits):
    x = mnist_digits[:4]
    maps = np.asarray(jaxsal.feature_permutation(mnist, x, 3, key=1, patch=14))
    assert maps.shape == (4, 28, 28)
    vals = np.asarray(jaxsal.feature_permutation(mnist, x, 3, key=1, patch=14,
                                                 return_groups=True))
    assert vals.shape == (4, 4)
    np.testing.assert_allclose(maps[:, 0, 0], vals[:, 0], rtol=1e-6)
    np.testing.assert_allclose(maps[:, 20, 20], vals[:, 3], rtol=1e-6)
    mask = (np.arange(28)[:, None] >= 14) * 2 + (np.arange(28)[None] >= 14)  # the same cells
    by_mask = np.asarray(jaxsal.feature_permutation(mnist, x, 3, key=1, feature_mask=mask))
    np.testing.assert_allclose(by_mask, maps, rtol=1e-6)
    # by hand for one cell
    s0 = np.asarray(mnist(x))[:, 3]
    perm = np.asarray(permutations(jax.random.key(1), jnp.int32(0), jnp.int32(2), 4))
    xs = x.copy()
    xs[:, 14:, :14] = x[perm, 14:, :14]
    np.testing.assert_allclose(vals[:, 2], s0 - np.asarray(mnist(xs))[:, 3], rtol=1e-4,
                               atol=1e-6)


def test_errors():
    m = _tabular()
    x = np.ones((1, 5), np.float32)
    with pytest.raises(ValueError, match="at least 2 inputs"):
        jaxsal.feature_permutation(m, x, 0, key=0)
    with pytest.raises(ValueError, match="explicit PRNG key"):
        jaxsal.feature_permutation(m, np.ones((3, 5), np.float32), 0)


def test_explain_to_file_refuses_it(tmp_path):
    """Its values depend on the batch: explain_to_file's chunks (the last one padded with
    copies of its last input, which joined the shuffles: a lone last input got 0) would not
    equal one call. Refused, saying why."""
    m = jaxsal.FunctionModel(lambda p, v: v @ p, jnp.ones((4, 2)))
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="feature_permutation shuffles each group's values "
                                         "across the batch.*Call it on the whole batch"):
        jaxsal.explain_to_file(jaxsal.feature_permutation, m, x, tmp_path / "p.npy",
                               targets=0, batch_size=4, key=0)
    assert not (tmp_path / "p.npy").exists()
