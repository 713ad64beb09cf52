"""GradientSHAP (expected gradients): analytic cases on linear models, its expectation (the
mean over baselines of integrated gradients), determinism, batch splitting, refusals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
from small_models import smooth_model

SHAPE = (5, 4, 2)


def _linear(bias=True):
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(int(np.prod(SHAPE)), 3)), jnp.float32),
              "b": jnp.asarray(rng.normal(size=(3,)) if bias else np.zeros(3), jnp.float32)}

    def f(p, x):
        return x.reshape(x.shape[0], -1) @ p["w"] + p["b"]

    w = np.asarray(params["w"]).T.reshape((3,) + SHAPE)  # (classes, *SHAPE)
    return jaxsal.FunctionModel(f, params, input_shape=SHAPE), w


def _x(n=3, seed=1):
    return np.random.default_rng(seed).normal(size=(n,) + SHAPE).astype(np.float32)


@pytest.fixture(scope="module")
def refs():
    return np.random.default_rng(3).normal(size=(4,) + SHAPE).astype(np.float32)


def test_one_baseline_of_a_linear_model_is_exact():
    m, w = _linear()
    x = _x()
    b = np.full(SHAPE, 0.5, np.float32)
    for key in (0, 1):  # any draw of the path point gives w * (x - b)
        g = jaxsal.gradient_shap(m, x, [0, 2], key=key, baselines=b, n=3, reduce=None)
        np.testing.assert_allclose(g, w[[0, 2]][None] * (x - b)[:, None], rtol=1e-5, atol=1e-5)
    zero = jaxsal.gradient_shap(m, x, 1, key=0, n=2, reduce=None)  # baselines=None: zeros
    np.testing.assert_allclose(zero, w[1][None] * x, rtol=1e-5, atol=1e-6)
    local = jaxsal.gradient_shap(m, x, 1, key=0, n=2, multiply_by_inputs=False, reduce=None)
    np.testing.assert_allclose(local, np.broadcast_to(w[1], x.shape), rtol=1e-6)


def test_baselines_with_size_one_axes_broadcast(refs):
    """Per-channel values (1, 1, C) as one reference, and (B, 1, 1, C) as B of them, were
    refused ('expected baselines of shape (B, *(5, 4, 2))') where integrated_gradients'
    baseline broadcasts; they now give the maps of the same baselines written out whole.
    Shapes that do not broadcast are still refused."""
    m, _ = _linear()
    x = _x()
    one = np.array([0.3, -0.2], np.float32).reshape(1, 1, 2)
    dist = refs[:, :1, :1, :]  # (4, 1, 1, 2)
    for small in (one, dist):
        got = jaxsal.gradient_shap(m, x, [0, 2], key=3, baselines=small, n=4, reduce=None)
        whole = np.broadcast_to(small, small.shape[:small.ndim - 3] + SHAPE)
        want = jaxsal.gradient_shap(m, x, [0, 2], key=3, baselines=whole, n=4, reduce=None)
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match=r"expected baselines of shape .* got shape "
                                         r"\(4, 1, 3, 2\)"):
        jaxsal.gradient_shap(m, x, 0, key=0, baselines=np.zeros((4, 1, 3, 2)))


def test_linear_model_converges_to_the_mean_baseline(refs):
    m, w = _linear()
    x = _x()
    n = 4096
    g = np.asarray(jaxsal.gradient_shap(m, x, [0, 1, 2], key=0, baselines=refs, n=n,
                                        reduce=None))
    want = w[None] * (x[:, None] - refs.mean(0))
    # each sample is w * (x - b) for a uniformly drawn b: its standard error is
    # |w| * std(b) / sqrt(n); every value within 5 of them
    se = np.abs(w)[None] * refs.std(0) / np.sqrt(n)
    assert np.all(np.abs(g - want) <= 5 * se + 1e-5)
    # but it is an estimate: a few samples do not give the mean
    few = np.asarray(jaxsal.gradient_shap(m, x, [0, 1, 2], key=0, baselines=refs, n=2,
                                          reduce=None))
    assert np.abs(few - want).max() > 10 * np.abs(g - want).max()


def test_expectation_is_integrated_gradients_averaged_over_baselines(refs):
    m = smooth_model()
    x = _x(2)
    base = refs[:2] * 0.5
    ig = np.mean([np.asarray(jaxsal.integrated_gradients(m, x, [0, 3], baseline=b, steps=64))
                  for b in base], axis=0)
    # 16 independent estimates of 512 samples: their mean and its standard error
    runs = np.stack([np.asarray(jaxsal.gradient_shap(m, x, [0, 3], key=k, baselines=base,
                                                     n=512)) for k in range(16)])
    est, se = runs.mean(0), runs.std(0, ddof=1) / 4.0
    # completeness in expectation: the maps sum to S(x) - mean_b S(b)
    y, yb = np.asarray(m(x)), np.asarray(m(base)).mean(0)
    np.testing.assert_allclose(ig.sum(axis=(2, 3)), (y - yb)[:, [0, 3]], rtol=1e-3, atol=1e-3)
    sums = runs.sum(axis=(3, 4))
    assert np.all(np.abs(sums.mean(0) - (y - yb)[:, [0, 3]]) <= 6 * sums.std(0, ddof=1) / 4.0)
    assert np.all(np.abs(est - ig) <= 8 * se + 1e-6)  # 320 values, 15 degrees of freedom
    r = np.corrcoef(est.ravel(), ig.ravel())[0, 1]
    assert r > 0.99, r


def test_same_key_same_map_and_splits_do_not_matter(refs):
    m = smooth_model()
    x = _x(5)
    kw = dict(baselines=refs, n=6, noise_std=0.2)
    a = np.asarray(jaxsal.gradient_shap(m, x, [1, 2], key=jax.random.key(7), **kw))
    np.testing.assert_array_equal(a, jaxsal.gradient_shap(m, x, [1, 2], key=7, **kw))
    assert np.abs(a - np.asarray(jaxsal.gradient_shap(m, x, [1, 2], key=8, **kw))).max() > 1e-3
    for opts in (dict(batch_samples=1), dict(batch_samples=4), dict(chunk_size=1),
                 dict(memory_budget=1)):  # a budget of one byte: one input per pass
        np.testing.assert_allclose(jaxsal.gradient_shap(m, x, [1, 2], key=7, **kw, **opts), a,
                                   rtol=1e-5, atol=1e-6)
    # rows a:b of the batch, explained alone with index_offset=a, get the same draws
    np.testing.assert_allclose(
        jaxsal.gradient_shap(m, x[2:4], [1, 2], key=7, index_offset=2, **kw), a[2:4],
        rtol=1e-5, atol=1e-6)
    # a class axis or not: the same maps
    np.testing.assert_allclose(jaxsal.gradient_shap(m, x, 2, key=7, **kw), a[:, 1],
                               rtol=1e-5, atol=1e-6)


def test_noise_is_added_to_the_input(refs):
    m, w = _linear()
    x = _x()
    b = refs[:1]
    clean = np.asarray(jaxsal.gradient_shap(m, x, 0, key=0, baselines=b, n=8, reduce=None))
    noisy = np.asarray(jaxsal.gradient_shap(m, x, 0, key=0, baselines=b, n=8, noise_std=0.5,
                                            reduce=None))
    # a linear model's sample is w * (x + e - b): noise changes the map by w * mean(e)
    e = (noisy - clean) / w[0][None]
    assert 0.05 < np.abs(e).mean() < 0.5  # mean of 8 draws of N(0, 0.25): std 0.18


def test_several_inputs_share_the_draw():
    wa = np.array([[1.0, -2.0], [0.5, 3.0], [-1.5, 0.25]], np.float32)
    wb = np.array([[2.0, 1.0], [-0.5, 4.0]], np.float32)
    m = jaxsal.FunctionModel(lambda p, x: x["a"] @ p["a"] + x["b"] @ p["b"],
                             {"a": jnp.asarray(wa), "b": jnp.asarray(wb)})
    rng = np.random.default_rng(0)
    x = {"a": rng.normal(size=(4, 3)).astype(np.float32),
         "b": rng.normal(size=(4, 2)).astype(np.float32)}
    b = {"a": np.ones((1, 3), np.float32), "b": np.full((1, 2), -1.0, np.float32)}
    g = jaxsal.gradient_shap(m, x, [0, 1], key=0, baselines=b, n=3)
    np.testing.assert_allclose(g["a"], wa.T[None] * (x["a"] - 1.0)[:, None], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(g["b"], wb.T[None] * (x["b"] + 1.0)[:, None], rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(ValueError, match="same number of reference examples"):
        jaxsal.gradient_shap(m, x, 0, key=0, n=2, baselines={"a": np.ones((2, 3)),
                                                             "b": np.ones((3, 2))})


def test_no_recompile_on_second_call(refs, compiles):
    m = smooth_model()
    x = _x(2)
    jax.block_until_ready(jaxsal.gradient_shap(m, x, [0, 1], key=0, baselines=refs, n=3))
    first = compiles.n
    jax.block_until_ready(jaxsal.gradient_shap(m, x + 1, [2, 3], key=1, baselines=refs + 1,
                                               n=3))
    assert compiles.n == first


def test_explain_to_file_chunks_equal_one_call(refs, tmp_path):
    m = smooth_model()
    x = _x(4)  # as many inputs as baselines: the baselines must still not be sliced
    one = np.asarray(jaxsal.gradient_shap(m, x, [0, 1], key=3, baselines=refs, n=4))
    path = str(tmp_path / "gs.npy")
    jaxsal.explain_to_file(jaxsal.gradient_shap, m, x, path, targets=[0, 1], batch_size=3,
                           key=3, baselines=refs, n=4)
    np.testing.assert_allclose(np.load(path), one, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kw, err, match", [
    (dict(), ValueError, "needs an explicit PRNG key"),
    (dict(key=0, n=0), ValueError, "n"),
    (dict(key=0, noise_std=-1.0), ValueError, "noise_std"),
    (dict(key=0, baselines=np.zeros((2, 3))), ValueError, r"expected baselines of shape"),
    (dict(key=0, baselines=np.full((1,) + SHAPE, np.nan)), ValueError, "NaN"),
    (dict(key=0, multiply_by_inputs="no"), TypeError, "multiply_by_inputs"),
    (dict(key=0, index_offset=-1), ValueError, "index_offset"),
])
def test_refusals(kw, err, match):
    m, _ = _linear()
    with pytest.raises(err, match=match):
        jaxsal.gradient_shap(m, _x(), 0, **kw)


# ------------------------------------------------------------------ layer=
def _token_model():
    """Token ids -> embedding (the layer) -> tanh of a projection of the mean -> 3 logits."""
    rng = np.random.default_rng(5)
    params = {"emb": jnp.asarray(rng.normal(size=(12, 4)), jnp.float32),
              "w1": jnp.asarray(rng.normal(size=(4, 6)), jnp.float32),
              "w2": jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)}

    def features(p, ids):
        return p["emb"][ids]  # (N, L, E)

    def head_fn(p, a):
        return jnp.tanh(a.mean(1) @ p["w1"] * 2.0) @ p["w2"]

    return jaxsal.FunctionModel(features=features, head_fn=head_fn, layer="embedding",
                                params=params), params


def test_at_a_layer_is_the_definition_with_the_same_draws():
    """Sample k of input i: the baseline index and the path point come from fold_in(key, k),
    fold_in(i) (the draws of the input version); the point is on the straight line between
    the layer's outputs, the attribution (A(x) - A(b)) * dS/dA there."""
    m, params = _token_model()
    ids = jnp.asarray([[1, 4, 7, 2, 0], [3, 3, 9, 11, 5]], jnp.int32)
    refs_ids = jnp.asarray([[0, 0, 0, 0, 0], [2, 2, 2, 2, 2], [6, 1, 6, 1, 6]], jnp.int32)
    n, key = 6, jax.random.key(7)
    got = np.asarray(jaxsal.gradient_shap(m, ids, [0, 2], key=key, baselines=refs_ids, n=n,
                                          layer="embedding", reduce=None, batch_samples=4))
    assert got.shape == (2, 2, 5, 4)
    A, A_ref = params["emb"][ids], params["emb"][refs_ids]
    want = np.zeros_like(got)
    grad = jax.jit(jax.grad(lambda v, c: m.head_fn(params, v[None])[0, c]))  # compiled once
    for k in range(n):
        for i in range(2):
            kb, ka, _ = jax.random.split(jax.random.fold_in(jax.random.fold_in(key, k), i), 3)
            b = int(jax.random.randint(kb, (), 0, 3))
            a = float(jax.random.uniform(ka))
            z = A_ref[b] + a * (A[i] - A_ref[b])
            for t, c in enumerate([0, 2]):
                g = grad(z, c)
                want[i, t] += np.asarray(g * (A[i] - A_ref[b])) / n
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    # multiply_by_inputs=False: the mean gradient; reduce="sum": one value per token
    mean_g = np.asarray(jaxsal.gradient_shap(m, ids, [0, 2], key=key, baselines=refs_ids, n=n,
                                             layer="embedding", reduce="sum"))
    np.testing.assert_allclose(mean_g, want.sum(-1), rtol=1e-4, atol=1e-6)


def test_at_a_layer_sums_to_the_expected_score_difference():
    """In expectation the layer attributions sum to S(x) - mean_b S(b) (integrated gradients
    at the layer averaged over the baselines)."""
    m, params = _token_model()
    ids = jnp.asarray([[1, 4, 7, 2, 0], [3, 3, 9, 11, 5]], jnp.int32)
    refs_ids = jnp.asarray([[0, 0, 0, 0, 0], [2, 2, 2, 2, 2]], jnp.int32)
    got = np.asarray(jaxsal.gradient_shap(m, ids, [0, 1, 2], key=0, baselines=refs_ids,
                                          n=40000, layer="embedding"))
    ig = np.mean([np.asarray(jaxsal.integrated_gradients(m, ids, [0, 1, 2], baseline=b,
                                                         layer="embedding", steps=64))
                  for b in np.asarray(refs_ids)], axis=0)
    np.testing.assert_allclose(got, ig, atol=0.05 * np.abs(ig).max())
    delta = np.asarray(m(ids)) - np.asarray(m(refs_ids)).mean(0)
    np.testing.assert_allclose(got.sum(-1), delta, atol=0.05 * np.abs(delta).max())


def test_at_a_layer_of_a_keras_model_and_refusals(mnist, mnist_digits):
    x = mnist_digits[:2]
    maps = np.asarray(jaxsal.gradient_shap(mnist, x, [1, 3], key=0, n=3, layer="conv2d_2",
                                           baselines=mnist_digits[2:4]))
    assert maps.shape == (2, 2, 24, 24) and np.isfinite(maps).all()
    with pytest.raises(ValueError, match="noise_std=0 with layer="):
        jaxsal.gradient_shap(mnist, x, 1, key=0, layer="conv2d_2", noise_std=0.1)
    m, _ = _token_model()
    ids = jnp.asarray([[1, 4, 7, 2, 0]], jnp.int32)
    with pytest.raises(ValueError, match="whole numbers"):
        jaxsal.gradient_shap(m, ids, 0, key=0, layer="embedding", baselines=0.5)
    with pytest.raises(TypeError, match="integer dtype"):
        jaxsal.gradient_shap(m, ids, 0, key=0)
