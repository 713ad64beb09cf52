"""KernelSHAP and LIME: analytic truths (a linear model's exact Shapley values and
coefficients), efficiency, convergence to the exact Shapley values, the fit by a float64 NumPy
transcription on the same coalitions, the coalitions' distributions, determinism, batching,
explain_to_file, jit, compilation and refusals."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
from jaxsal._src import lime as lime_src
from test_shapley import SHAPE, _grid, _linear, _linear_values, _smooth, _x


def _scores(model, x, fill, z, gid, targets):
    """``(n, T)`` float64 scores of one input ``x`` ``(H, W, C)`` masked by the coalitions
    ``z`` ``(n, M)``."""
    keep = z[:, gid][..., None]  # (n, H, W, 1)
    xo = np.where(keep, x[None], np.broadcast_to(fill, x.shape)[None]).astype(np.float32)
    return np.asarray(model(xo), np.float64)[:, targets], xo


# ------------------------------------------------------------------ analytic truths
def test_linear_model_gives_the_exact_shapley_values_and_coefficients():
    m, w = _linear()
    x = _x()
    fill = np.array([0.5, -1.0], np.float32)  # one value per channel
    gid = _grid()
    want = _linear_values(w, x, fill, gid)
    exact = np.asarray(jaxsal.shapley_values(m, x, [0, 1, 2], patch=(3, 2), fill=fill,
                                             return_groups=True))
    np.testing.assert_allclose(exact, want, rtol=1e-5, atol=1e-5)
    # any coalitions that determine the fit give them: 12 draws of 6 groups (5 unknowns)
    for method, kw in ((jaxsal.kernel_shap, dict(key=0, n=12)),
                       (jaxsal.lime, dict(key=0, n=40, alpha=0.0)),
                       (jaxsal.lime, dict(key=1, n=40, alpha=0.0, distance="interpretable",
                                          kernel_width=0.25))):
        got = np.asarray(method(m, x, [0, 1, 2], patch=(3, 2), fill=fill, return_groups=True,
                                **kw))
        assert got.shape == (3, 3, 6)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
        maps = method(m, x, [0, 1, 2], patch=(3, 2), fill=fill, **kw)  # each pixel: its group's
        np.testing.assert_allclose(maps, got[..., gid], rtol=1e-6, atol=1e-6)


def test_efficiency_holds_for_every_estimate():
    """sum phi = S(x) - S(fill) exactly: a constraint of the fit, also when the draws leave
    it undetermined (2 coalitions of 6 groups: the solution closest to equal shares)."""
    m = _smooth()
    x = _x(2)
    fill = 0.3 * _x(2, seed=5)
    gain = (np.asarray(m(x), np.float64) - np.asarray(m(fill), np.float64))[:, [0, 3]]
    scale = np.abs(np.asarray(m(x))).max()
    for n in (2, 50):
        phi = np.asarray(jaxsal.kernel_shap(m, x, [0, 3], key=n, n=n, patch=(3, 2), fill=fill,
                                            return_groups=True))
        np.testing.assert_allclose(phi.sum(-1), gain, rtol=0, atol=1e-5 * scale)
    # one group: its value is the whole gain
    one = jaxsal.kernel_shap(m, x, [0, 3], key=0, n=3, patch=(6, 5), fill=fill,
                             return_groups=True)
    np.testing.assert_allclose(np.asarray(one)[..., 0], gain, rtol=1e-5, atol=1e-6 * scale)


def test_kernel_shap_converges_to_the_exact_shapley_values():
    # 15 groups: 32766 coalitions, more than n, so the coalitions are drawn (n >= 2^M - 2
    # enumerates them: the test below)
    m = _smooth()
    x = _x(2)
    exact = np.asarray(jaxsal.shapley_values(m, x, [1, 2], patch=(2, 1), return_groups=True))
    errors = [np.abs(np.asarray(jaxsal.kernel_shap(m, x, [1, 2], key=0, n=n, patch=(2, 1),
                                                   return_groups=True)) - exact).max()
              for n in (40, 4000)]
    # measured 0.89 and 0.060 for values up to 3.5 (the error falls about as 1/sqrt(n))
    scale = np.abs(exact).max()
    assert errors[1] < 0.03 * scale and errors[0] > 5 * errors[1], (errors, scale)


def test_every_coalition_when_n_covers_them_gives_the_exact_shapley_values():
    """With n >= 2^M - 2 draws (the default's 2M + 2048 does up to M = 11) every coalition is
    evaluated once, weighted by the Shapley kernel, as the shap package's KernelExplainer does
    for the sizes its budget covers: the fit is then the exact Shapley values of any model
    (Lundberg & Lee's theorem). Random draws left 2% errors on 3 features at the default n
    (measured 0.096 for values up to 4.5), and an input's values depended on the key. With
    one mask per input, each input enumerates its own groups (an id it lacks gets 0)."""
    f = jaxsal.FunctionModel(lambda p, v: jnp.stack([2 * v[:, 0] * v[:, 1] + v[:, 2],
                                                     jnp.sin(v.sum(1))], 1), {})
    v = _x(4, shape=(3,)) + 1
    exact = np.asarray(jaxsal.shapley_values(f, v, [0, 1]))
    scale = np.abs(exact).max()
    for key, n in ((0, None), (1, None), (0, 6)):
        got = np.asarray(jaxsal.kernel_shap(f, v, [0, 1], key=key, n=n))
        np.testing.assert_allclose(got, exact, rtol=0, atol=1e-5 * scale, err_msg=str(n))
    # one mask per input of 2, 3 and 4 groups (ids that differ between inputs)
    m = _smooth()
    x = _x(3)
    masks = np.stack([_grid((6, 3)), _grid((3, 5)) * 5, _grid((3, 3)) + 1])
    exact = np.asarray(jaxsal.shapley_values(m, x, [0, 2], feature_mask=masks,
                                             return_groups=True))
    got = np.asarray(jaxsal.kernel_shap(m, x, [0, 2], key=0, n=14, feature_mask=masks,
                                        return_groups=True))
    np.testing.assert_allclose(got, exact, rtol=0, atol=1e-5 * np.abs(exact).max())


# ------------------------------------------------------------------ the fit, by hand
def _kernel_shap_by_hand(m, x, fill, z, gid, targets):
    """The constrained least squares in float64: min |r - Z phi|^2 s.t. sum phi = gain, from
    the KKT system."""
    s, _ = _scores(m, x, fill, z, gid, targets)
    v_all = np.asarray(m(x[None]), np.float64)[0, targets]
    v_empty = np.asarray(m(np.broadcast_to(fill, x.shape)[None].astype(np.float32)),
                         np.float64)[0, targets]
    zf = z.astype(np.float64)
    k = zf.shape[1]
    kkt = np.block([[2 * zf.T @ zf, np.ones((k, 1))], [np.ones((1, k)), np.zeros((1, 1))]])
    rhs = np.concatenate([2 * zf.T @ (s - v_empty), (v_all - v_empty)[None]], 0)
    return np.linalg.solve(kkt, rhs)[:k].T  # (T, M)


def _lime_by_hand(m, x, fill, z, gid, targets, alpha, width, distance):
    """The weighted ridge with an unpenalized intercept in float64 (scikit-learn's Ridge
    with sample_weight), Captum's exponential kernel of a cosine distance."""
    s, xo = _scores(m, x, fill, z, gid, targets)
    zf = z.astype(np.float64)
    if distance == "input":
        a = xo.reshape(len(xo), -1).astype(np.float64)
        b = x.ravel().astype(np.float64)
        cos = a @ b / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b), 1e-8)
    else:
        cos = np.sqrt(zf.sum(1) / zf.shape[1])
    w = np.exp(-(1 - cos) ** 2 / (2 * width ** 2))
    design = np.concatenate([np.ones((len(zf), 1)), zf], 1)
    pen = alpha * np.diag([0.0] + [1.0] * zf.shape[1])
    beta = np.linalg.solve(design.T @ (w[:, None] * design) + pen, design.T @ (w[:, None] * s))
    return beta[1:].T  # (T, M)


def test_the_fits_equal_a_float64_transcription_on_the_same_coalitions():
    m = _smooth()
    x = _x(2)
    fill = np.float32(0.25)
    gid = _grid()
    targets = [0, 3]
    n = 60
    key = jax.random.key(11)
    got = np.asarray(jaxsal.kernel_shap(m, x, targets, key=key, n=n, patch=(3, 2), fill=fill,
                                        return_groups=True, index_offset=4))
    for i in range(2):
        z = np.asarray(lime_src._coalitions("kernel_shap", key, n, 6, index=4 + i))
        want = _kernel_shap_by_hand(m, x[i], fill, z, gid, targets)
        np.testing.assert_allclose(got[i], want, rtol=0, atol=2e-5 * np.abs(want).max())
    for kw in (dict(alpha=1.0, kernel_width=1.0, distance="input"),
               dict(alpha=5.0, kernel_width=0.25, distance="interpretable"),
               dict(alpha=0.0, kernel_width=0.5, distance="input")):
        got = np.asarray(jaxsal.lime(m, x, targets, key=key, n=n, patch=(3, 2), fill=fill,
                                     return_groups=True, **kw))
        for i in range(2):
            z = np.asarray(lime_src._coalitions("lime", key, n, 6, index=i))
            want = _lime_by_hand(m, x[i], fill, z, gid, targets, kw["alpha"],
                                 kw["kernel_width"], kw["distance"])
            np.testing.assert_allclose(got[i], want, rtol=0, atol=2e-5 * np.abs(want).max(),
                                       err_msg=str(kw))


def test_the_coalitions_follow_their_distributions():
    m, n = 10, 20000
    z = np.asarray(lime_src._coalitions("lime", 0, n, m))
    assert abs(z.mean() - 0.5) < 0.01 and np.all(np.abs(z.mean(0) - 0.5) < 0.02)
    z = np.asarray(lime_src._coalitions("kernel_shap", 0, n, m))
    sizes = z.sum(1)
    s = np.arange(1, m)
    p = (m - 1) / (s * (m - s))
    p /= p.sum()
    freq = np.bincount(sizes, minlength=m + 1)[1:m] / n
    assert sizes.min() >= 1 and sizes.max() <= m - 1
    np.testing.assert_allclose(freq, p, atol=4 * np.sqrt(p * (1 - p) / n).max())
    # within a size, every group is as likely (a uniform subset): within 4.5 standard errors
    three = z[sizes == 3]
    assert np.all(np.abs(three.mean(0) - 0.3) < 4.5 * np.sqrt(0.3 * 0.7 / len(three)))
    # other inputs, other coalitions
    assert not np.array_equal(z[:50], np.asarray(lime_src._coalitions("kernel_shap", 0, 50, m,
                                                                      index=1)))


# ------------------------------------------------------------------ consistency
@pytest.mark.parametrize("method, kw", [(jaxsal.kernel_shap, dict(n=30)),
                                        (jaxsal.lime, dict(n=30))])
def test_keys_targets_and_batching(method, kw):
    m = _smooth()
    x = _x(5)
    kw = dict(kw, patch=(2, 3))
    a = np.asarray(method(m, x, [1, 2], key=jax.random.key(7), **kw))
    assert a.shape == (5, 2, 6, 5) and np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, method(m, x, [1, 2], key=7, **kw))
    assert np.abs(a - np.asarray(method(m, x, [1, 2], key=8, **kw))).max() > 1e-3
    for j, c in enumerate([1, 2]):  # T targets from the same passes: as single calls
        np.testing.assert_allclose(method(m, x, c, key=7, **kw), a[:, j], rtol=1e-5,
                                   atol=1e-5 * np.abs(a).max())
    pred = np.asarray(m(x)).argmax(1)
    np.testing.assert_allclose(method(m, x, key=7, **kw), np.asarray(
        method(m, x, pred[:, None], key=7, **kw))[:, 0], rtol=1e-5, atol=1e-6)
    for opts in (dict(batch_size=3), dict(memory_budget=1)):  # one input per pass
        np.testing.assert_allclose(method(m, x, [1, 2], key=7, **kw, **opts), a, rtol=1e-4,
                                   atol=1e-5 * np.abs(a).max())
    # rows a:b explained alone with index_offset=a draw the same coalitions
    np.testing.assert_allclose(method(m, x[2:4], [1, 2], key=7, index_offset=2, **kw), a[2:4],
                               rtol=1e-4, atol=1e-5 * np.abs(a).max())
    # under the caller's jit, the same values
    jitted = jax.jit(lambda v: method(m, v, [1, 2], key=7, **kw))(jnp.asarray(x))
    np.testing.assert_allclose(jitted, a, rtol=1e-4, atol=1e-5 * np.abs(a).max())


def test_explain_to_file_chunks_equal_one_call(tmp_path):
    m = _smooth()
    x = _x(5)
    masks = np.random.default_rng(2).integers(0, 4, size=(5,) + SHAPE[:2])  # one per input
    # then masks whose ids differ between inputs (chunks of 2 hold fewer ids than the call):
    # the draws are each input's own, and kernel_shap's default n is the whole job's
    own = masks % (np.arange(5)[:, None, None] % 3 + 2)  # inputs with 2, 3 or 4 ids
    assert len({len(np.unique(mk)) for mk in own}) == 3
    cases = [(masks, jaxsal.kernel_shap, dict(key=3, n=20)),
             (masks, jaxsal.lime, dict(key=3, n=20, return_groups=True)),
             (own, jaxsal.kernel_shap, dict(key=3)),
             (own, jaxsal.lime, dict(key=3, n=20, return_groups=True))]
    for i, (mk, method, kw) in enumerate(cases):
        one = np.asarray(method(m, x, [0, 1], feature_mask=mk, **kw))
        path = str(tmp_path / f"{i}.npy")
        jaxsal.explain_to_file(method, m, x, path, targets=[0, 1], batch_size=2,
                               feature_mask=mk, **kw)
        np.testing.assert_allclose(np.load(path), one, rtol=1e-4,
                                   atol=1e-5 * np.abs(one).max())


def test_channels_first_features_and_channel_groups():
    m = _smooth()
    x = _x(3)
    cf = jaxsal.FunctionModel(lambda p, v: m.fn(p, jnp.moveaxis(v, 1, -1)), m.params,
                              data_format="channels_first")
    for method in (jaxsal.kernel_shap, jaxsal.lime):
        want = np.asarray(method(m, x, [0, 1], key=0, n=20, patch=(3, 2)))
        np.testing.assert_allclose(method(cf, np.moveaxis(x, -1, 1), [0, 1], key=0, n=20,
                                          patch=(3, 2)), want, rtol=1e-4,
                                   atol=1e-5 * np.abs(want).max())
    # channels grouped apart: maps keep the channel axis; the linear model by hand
    lin, w = _linear()
    ch = np.stack([_grid(), _grid() + 6], -1)  # (H, W, C): 12 groups
    maps = np.asarray(jaxsal.kernel_shap(lin, x, 1, key=0, n=40, feature_mask=ch))
    assert maps.shape == (3,) + SHAPE
    contrib = w[1][None] * x
    want = np.zeros_like(contrib)
    for g in range(12):
        want[:, ch == g] = contrib[:, ch == g].sum(-1, keepdims=True)
    np.testing.assert_allclose(maps, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # (N, D) features: one group per feature by default
    f = jaxsal.FunctionModel(lambda p, v: jnp.stack([v @ p, v[:, 0] * v[:, 1]], 1),
                             jnp.arange(5.0) - 2)
    v = _x(3, shape=(5,))
    got = np.asarray(jaxsal.kernel_shap(f, v, 0, key=0, n=30))
    assert got.shape == (3, 5)
    np.testing.assert_allclose(got, v * (np.arange(5.0) - 2), rtol=1e-4, atol=1e-5)


def test_no_recompile_on_second_call(compiles):
    m = _smooth()
    x = _x(2)
    mask = np.arange(30).reshape(6, 5) % 5
    calls = [lambda v, t, k, g: jaxsal.kernel_shap(m, v, t, key=k, n=8, feature_mask=g),
             lambda v, t, k, g: jaxsal.lime(m, v, t, key=k, n=8, feature_mask=g)]
    for c in calls:
        jax.block_until_ready(c(x, [0, 1], 0, mask))
    first = compiles.n
    for c in calls:  # new values, class ids, key and a new mask with as many groups
        jax.block_until_ready(c(x + 1, [2, 3], jax.random.key(1), (mask + 1) % 5 + 10))
    assert compiles.n == first


def test_lime_input_distance_on_raw_uint8_images():
    """A model of raw uint8 images (it scales them itself) gets LIME's default cosine
    distance between x and the masked input, computed in float (the same weights as on the
    float pixels: uint8 squares wrapped around). It was refused as meaningless for token
    ids; token ids (N, L) still are."""
    w = np.random.default_rng(0).normal(size=(6 * 5 * 2, 2)).astype(np.float32)

    def f(p, v):  # not linear, so that the fit depends on the weights
        return jnp.tanh(v.reshape(len(v), -1).astype(jnp.float32) / 255.0 @ p)

    u8 = np.random.default_rng(1).integers(0, 256, size=(2, 6, 5, 2)).astype(np.uint8)
    kw = dict(key=0, n=30, patch=(3, 5), alpha=0.0)
    got = jaxsal.lime(jaxsal.FunctionModel(f, jnp.asarray(w)), u8, [0, 1], **kw)
    want = jaxsal.lime(jaxsal.FunctionModel(f, jnp.asarray(w)), u8.astype(np.float32),
                       [0, 1], **kw)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    ids = jaxsal.FunctionModel(lambda p, v: jnp.take(p, v).sum(1, keepdims=True),
                               jnp.arange(10.0))
    with pytest.raises(ValueError, match="token ids"):
        jaxsal.lime(ids, np.asarray([[1, 2, 3]]), 0, key=0, n=4)


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize("method, kw, err, match", [
    (jaxsal.kernel_shap, dict(), ValueError, "needs an explicit PRNG key"),
    (jaxsal.lime, dict(), ValueError, "needs an explicit PRNG key"),
    (jaxsal.kernel_shap, dict(key=0, n=0), ValueError,
     r"n as an int >= 1 \(coalitions per input\), got 0"),
    (jaxsal.lime, dict(key=0, n=2.5), ValueError,
     r"n as an int >= 1 \(coalitions per input\), got 2.5"),
    (jaxsal.lime, dict(key=0, n=None), ValueError, "n as an int >= 1"),
    (jaxsal.lime, dict(key=0, alpha=-1.0), ValueError,
     r"expected alpha >= 0 \(a finite number: the L2 penalty"),
    (jaxsal.lime, dict(key=0, alpha=True), ValueError, "alpha"),
    (jaxsal.lime, dict(key=0, kernel_width=0), ValueError, "expected kernel_width > 0"),
    (jaxsal.lime, dict(key=0, kernel_width=float("inf")), ValueError, "kernel_width"),
    (jaxsal.lime, dict(key=0, distance="euclidean"), ValueError,
     r"distance as one of \('input', 'interpretable'\)"),
    (jaxsal.kernel_shap, dict(key=0, index_offset=-1), ValueError, "index_offset"),
    (jaxsal.lime, dict(key=0, patch=9), ValueError, "larger than"),
    (jaxsal.kernel_shap, dict(key=0, return_groups="yes"), TypeError, "return_groups"),
])
def test_refusals(method, kw, err, match):
    with pytest.raises(err, match=match):
        method(_smooth(), _x(), 0, **kw)


def test_too_many_groups_and_several_inputs_are_refused():
    f = jaxsal.FunctionModel(lambda p, v: v[:, :2], {})
    for method in (jaxsal.kernel_shap, jaxsal.lime):
        with pytest.raises(ValueError, match=r"5000 feature groups is more than 4096.*larger "
                                             r"patch.*shapley_value_sampling"):
            method(f, np.ones((1, 5000), np.float32), 0, key=0)
        two = jaxsal.FunctionModel(lambda p, v: v[0] + v[1], {})
        with pytest.raises(TypeError, match="one input array.*FunctionModel"):
            method(two, [np.ones((2, 3)), np.ones((2, 3))], 0, key=0)
    assert math.isclose(lime_src._size_cdf(7)[-1], 1.0, rel_tol=1e-6)


@pytest.mark.parametrize("method", ["kernel_shap", "lime", "shapley_value_sampling"])
def test_masks_per_input_with_other_ids_draw_over_each_inputs_own_groups(method):
    """One mask per input, input 0 with 3 of the batch's 6 ids: its absent ids get 0, its
    values do not depend on the other inputs (the draws were over the batch's 6 groups:
    absent ids got values, KernelSHAP's efficiency over the input's own groups failed and
    the same input gave other values alone), and KernelSHAP's sum over its own groups is
    S(x) - S(fill)."""
    rng = np.random.default_rng(0)
    params = {"a": jnp.asarray(rng.normal(size=(6, 8)), jnp.float32),
              "b": jnp.asarray(rng.normal(size=(8, 2)), jnp.float32)}
    m = jaxsal.FunctionModel(lambda p, x: jnp.tanh(x @ p["a"]) @ p["b"], params)
    x = rng.normal(size=(3, 6)).astype(np.float32)
    mask = np.array([[0, 0, 1, 1, 2, 2], [0, 1, 2, 3, 4, 5], [5, 5, 3, 3, 3, 0]])
    fn = getattr(jaxsal, method)
    kw = dict(key=0, n=30 if method != "shapley_value_sampling" else 5, return_groups=6)
    full = np.asarray(fn(m, x, 0, feature_mask=mask, **kw))
    np.testing.assert_array_equal(full[0, 3:], 0.0)
    np.testing.assert_array_equal(full[2, [1, 2, 4]], 0.0)
    assert np.all(full[1] != 0)
    for i in range(3):
        alone = np.asarray(fn(m, x[i:i + 1], 0, feature_mask=mask[i:i + 1], index_offset=i,
                              **kw))
        np.testing.assert_allclose(alone[0], full[i], rtol=1e-5, atol=1e-6)
    if method == "kernel_shap":
        gain = np.asarray(m(x))[:, 0] - np.asarray(m(np.zeros_like(x)))[:, 0]
        np.testing.assert_allclose(full.sum(-1), gain, rtol=1e-5, atol=1e-5)
        # with every id in every input, the draws are the batch's as before
        same = np.asarray(fn(m, x, 0, feature_mask=np.tile(mask[1], (3, 1)), **kw))
        shared = np.asarray(fn(m, x, 0, feature_mask=mask[1], **kw))
        np.testing.assert_array_equal(same, shared)


def test_chunks_with_fewer_ids_reuse_one_program(tmp_path, compiles):
    """explain_to_file with one mask per input: chunks whose masks hold 2, 3 or 4 ids ran
    with that many groups, one compilation each; the job's ids go in as group_ids (the
    values do not change: each input draws over its own groups)."""
    m = _smooth()
    x = _x(6)
    masks = np.random.default_rng(2).integers(0, 4, size=(6,) + SHAPE[:2])
    masks = masks % np.array([2, 2, 3, 3, 4, 4])[:, None, None]  # chunks of 2: 2, 3, 4 ids
    for method, kw in ((jaxsal.kernel_shap, dict(key=3, n=30)),
                       (jaxsal.lime, dict(key=3, n=30)),
                       (jaxsal.shapley_value_sampling, dict(key=3, n=3))):
        one = np.asarray(method(m, x, [0, 1], feature_mask=masks, **kw))
        chunks = []
        jaxsal.explain_to_file(method, m, x, str(tmp_path / f"{method.__name__}.npy"),
                               targets=[0, 1], batch_size=2, feature_mask=masks,
                               on_chunk=lambda done, total: chunks.append(compiles.n), **kw)
        assert chunks[1] == chunks[2] == chunks[0], (method.__name__, chunks)
        np.testing.assert_allclose(np.load(tmp_path / f"{method.__name__}.npy"), one,
                                   rtol=1e-4, atol=1e-5 * np.abs(one).max())
    with pytest.raises(ValueError, match=r"ids that group_ids lacks: \[3\]"):
        jaxsal.lime(m, x, 0, key=0, feature_mask=masks, group_ids=[0, 1, 2])
    with pytest.raises(ValueError, match="pass it with feature_mask"):
        jaxsal.lime(m, x, 0, key=0, patch=2, group_ids=[0, 1])


# ------------------------------------------------------------------ degenerate fits
def test_a_kernel_too_narrow_for_the_fit_is_refused():
    """kernel_width=0.01 left the weight on the coalitions that keep every group: LIME
    returned near-zero maps (the ridge penalty's), and NaN where every weight underflowed
    (30 groups: no draw keeps them all). Both are refused naming a kernel_width that works,
    and with it the fit is the linear model's exact coefficients."""
    m, w = _linear()
    x = _x(2)
    kw = dict(key=0, n=400, patch=(3, 2), return_groups=True)
    with pytest.raises(ValueError, match=r"rest on at least 3\.5 effective coalitions.*has "
                                         r"0(\.0\d+)? for group id \d.*kernel_width=0\.01 gives.*"
                                         r"Pass kernel_width=0\.\d+ or more") as e:
        jaxsal.lime(m, x, [0, 1], kernel_width=0.01, **kw)
    wide = float(str(e.value).split("Pass kernel_width=")[1].split()[0])
    got = np.asarray(jaxsal.lime(m, x, [0, 1], kernel_width=wide, alpha=0.0, **kw))
    want = _linear_values(w, x, 0.0, _grid())[:, :2]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    with pytest.raises(ValueError, match="NaN where every weight is 0.*kernel_width=0.001"):
        jaxsal.lime(m, x, 0, key=0, n=50, patch=1, kernel_width=1e-3)
    # the group named by its feature_mask id, not its position among the ids
    ids = np.array([10, 20, 30, 40, 50, 60])
    with pytest.raises(ValueError, match=r"for group id (10|20|30|40|50|60), so the ridge"):
        jaxsal.lime(m, x, [0, 1], key=0, n=400, kernel_width=0.01,
                    feature_mask=ids[_grid()])
    # under the caller's jit nothing can be raised: the refused fits' maps are NaN
    traced = jax.jit(lambda v: jaxsal.lime(m, v, 0, key=0, n=50, patch=1,
                                           kernel_width=1e-3))(jnp.asarray(x))
    assert np.isnan(np.asarray(traced)).all()


def test_one_draw_is_refused():
    """n=1: a single coalition varies no group; the coefficients came back 0."""
    with pytest.raises(ValueError, match=r"the n=1 draw\(s\) for input 0 \(and 2 more.*keep "
                                         r"each of its 6 groups in every draw or in none.*"
                                         r"Pass a larger n: at least 7"):
        jaxsal.lime(_smooth(), _x(), 0, key=0, n=1, patch=(3, 2))


def test_a_penalty_outweighing_the_weighted_draws_is_refused():
    """Weights even but tiny (every draw far from x): each group keeps its effective
    coalitions, but its weighted data fall below alpha, which then sets the coefficients;
    the same draws with alpha=0, or unweighted, are not refused."""
    z = np.asarray(lime_src._coalitions("lime", 0, 400, 4)).astype(np.float32)
    c = z - 0.5

    run = jax.jit(lime_src._lime_stats, static_argnums=1)  # one compile for the three calls

    def stats(w, alpha):
        wc = w[:, None] * c
        totals = (w.sum()[None], wc.sum(0)[None], 0, 0, 0, (w * w).sum()[None],
                  c.sum(0)[None], np.full(1, 400 * 0.3 ** 2, np.float32))
        return jax.tree_util.tree_map(np.asarray, run(totals, 400, np.array([4]),
                                                      np.ones((1, 4), bool), np.float32(alpha)))

    tiny = np.full(400, 1e-5, np.float32)
    assert stats(tiny, 1.0)["refused"][0]
    assert not stats(tiny, 0.0)["refused"][0] and not stats(tiny * 1e5, 1.0)["refused"][0]
    with pytest.raises(ValueError, match=r"expected the ridge penalty alpha=1 below every "
                                         r"group's weighted data.*leaves group id \d with "
                                         r"0\.000\d+.*"
                                         r"shrunk by 100%.*Pass kernel_width=0\.3 or more"):
        lime_src._check_lime_fit(stats(tiny, 1.0), 400, np.array([4]), np.ones((1, 4), bool),
                                 0.05, "input", 1.0, 0, np.arange(4))
