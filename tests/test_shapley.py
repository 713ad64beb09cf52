"""Shapley values of feature groups, exact and sampled: analytic truths (linear, additive and
interaction models), efficiency, symmetry, the definition by brute force, exact vs sampled,
determinism, batching, explain_to_file, compilation, feature_mask forms and refusals. Captum
parity is in test_reference_torch.py."""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal

SHAPE = (6, 5, 2)


def _linear():
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(int(np.prod(SHAPE)), 3)), jnp.float32),
              "b": jnp.asarray(rng.normal(size=(3,)), jnp.float32)}

    def f(p, x):
        return x.reshape(x.shape[0], -1) @ p["w"] + p["b"]

    w = np.asarray(params["w"]).T.reshape((3,) + SHAPE)  # (classes, *SHAPE)
    return jaxsal.FunctionModel(f, params, input_shape=SHAPE), w


def _smooth(shape=SHAPE):
    """A nonlinear model with interactions between every pair of pixels."""
    rng = np.random.default_rng(3)
    params = {"w1": jnp.asarray(rng.normal(size=(int(np.prod(shape)), 16)) * 0.3, jnp.float32),
              "w2": jnp.asarray(rng.normal(size=(16, 4)), jnp.float32)}

    def f(p, x):
        return jnp.tanh(x.reshape(x.shape[0], -1) @ p["w1"]) @ p["w2"]

    return jaxsal.FunctionModel(f, params, input_shape=shape)


def _x(n=3, seed=1, shape=SHAPE):
    return np.random.default_rng(seed).normal(size=(n,) + shape).astype(np.float32)


def _grid(patch=(3, 2)):
    """The group of every pixel of a SHAPE image under jaxsal's patch grid (row-major)."""
    h, w = SHAPE[:2]
    cols = -(-w // patch[1])
    return (np.arange(h)[:, None] // patch[0]) * cols + np.arange(w)[None] // patch[1]


def _brute_force(model, x, targets, gid, fill=0.0):
    """Shapley values by their definition, ``(N, T, M)``, and every marginal contribution's
    variance over the random orders (for the sampling tests); ``gid`` is ``(H, W)``."""
    m = int(gid.max()) + 1
    fill = np.broadcast_to(np.asarray(fill, np.float32), x.shape)
    subsets = list(itertools.product([0, 1], repeat=m))
    batch = np.stack([np.where(np.asarray(s)[gid][None, ..., None].astype(bool), x, fill)
                      for s in subsets])  # (2^M, N, ...)
    v = np.asarray(model(batch.reshape((-1,) + x.shape[1:])), np.float64)
    v = v.reshape(len(subsets), len(x), -1)[..., targets]  # (2^M, N, T)
    index = {s: k for k, s in enumerate(subsets)}
    phi = np.zeros(v.shape[1:] + (m,))
    second = np.zeros_like(phi)
    for s in subsets:
        size = sum(s)
        for i in range(m):
            if s[i]:
                continue
            w = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
            d = v[index[s[:i] + (1,) + s[i + 1:]]] - v[index[s]]
            phi[..., i] += w * d
            second[..., i] += w * d * d
    return phi, second - phi ** 2


def _linear_values(w, x, fill, gid):
    """``(N, T, M)``: the Shapley values of the linear model ``_linear`` (weights ``w``) on
    ``x`` against ``fill``, for the groups ``gid``: each group's ``w * (x - fill)``."""
    want = np.zeros((len(x), w.shape[0], gid.max() + 1))
    contrib = (w[None] * (x - fill)[:, None]).sum(-1)  # (N, T, H, W)
    for g in range(gid.max() + 1):
        want[..., g] = contrib[..., gid == g].sum(-1)
    return want


# ------------------------------------------------------------------ analytic truths
def test_linear_model_is_the_weights_times_the_difference_summed_over_each_group():
    m, w = _linear()
    x = _x()
    fill = np.array([0.5, -1.0], np.float32)  # one value per channel
    gid = _grid()
    want = _linear_values(w, x, fill, gid)
    for method, kw in ((jaxsal.shapley_values, {}),
                       (jaxsal.shapley_value_sampling, dict(key=0, n=2))):
        got = method(m, x, [0, 1, 2], patch=(3, 2), fill=fill, return_groups=True, **kw)
        assert got.shape == (3, 3, 6)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        maps = method(m, x, [0, 1, 2], patch=(3, 2), fill=fill, **kw)  # every pixel: its group's
        np.testing.assert_allclose(maps, want[..., gid], rtol=1e-5, atol=1e-5)


def test_additive_model_gives_each_group_its_own_change():
    groups = np.array([0, 0, 1, 1, 1, 2, 3, 3])
    a = np.array([1.0, -2.0, 0.5, 1.5, -1.0, 2.0, 0.7, -0.3], np.float32)

    def f(p, x):  # sum over the groups of nonlinear functions of each group alone
        z = jnp.stack([jnp.tanh((x * a)[:, groups == g].sum(1)) for g in range(4)], 1)
        return jnp.stack([(z * p[0]).sum(1), (z ** 2 * p[1]).sum(1)], 1)

    c = jnp.asarray([[1.0, 2.0, -1.0, 0.5], [0.3, -0.7, 1.1, 2.0]], jnp.float32)
    m = jaxsal.FunctionModel(f, c)
    x = _x(4, shape=(8,))
    fill = np.linspace(-0.5, 0.5, 8).astype(np.float32)
    zs = [np.tanh(np.stack([((v * a)[:, groups == g]).sum(1) for g in range(4)], 1))
          for v in (x, fill[None])]
    want = np.stack([(zs[0] - zs[1]) * np.asarray(c[0]),
                     (zs[0] ** 2 - zs[1] ** 2) * np.asarray(c[1])], 1)  # (N, T, M)
    got = jaxsal.shapley_values(m, x, [0, 1], feature_mask=groups, fill=fill,
                                return_groups=True)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    maps = jaxsal.shapley_values(m, x, [0, 1], feature_mask=groups, fill=fill)
    np.testing.assert_allclose(maps, want[..., groups], rtol=1e-5, atol=1e-6)
    # every order credits an additive group the same: sampling is exact too
    np.testing.assert_allclose(jaxsal.shapley_value_sampling(
        m, x, [0, 1], key=1, n=3, feature_mask=groups, fill=fill, return_groups=True), want,
        rtol=1e-5, atol=1e-6)


def test_a_pure_interaction_is_split_equally():
    def f(p, x):  # (sum of group A) * (sum of group B) + 2 * (group C)
        return jnp.stack([x[:, :2].sum(1) * x[:, 2:5].sum(1) + 2 * x[:, 5]], 1)

    m = jaxsal.FunctionModel(f, {})
    x = _x(3, shape=(6,))
    mask = np.array([0, 0, 1, 1, 1, 2])
    # one output unit: class 1 is the unit itself (class 0 its complement, -z)
    phi = np.asarray(jaxsal.shapley_values(m, x, 1, feature_mask=mask, return_groups=True))
    ab = x[:, :2].sum(1) * x[:, 2:5].sum(1)
    np.testing.assert_allclose(phi, np.stack([ab / 2, ab / 2, 2 * x[:, 5]], 1), rtol=1e-5,
                               atol=1e-6)


def test_definition_efficiency_and_symmetry():
    m = _smooth()
    x = _x(2)
    fill = 0.3 * _x(2, seed=5)  # one fill per input
    gid = _grid()
    want, _ = _brute_force(m, x, [0, 3], gid, fill)
    phi = np.asarray(jaxsal.shapley_values(m, x, [0, 3], patch=(3, 2), fill=fill,
                                           return_groups=True))
    np.testing.assert_allclose(phi, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    # efficiency: the values add up to the score of x minus the score of the fill
    gain = (np.asarray(m(x), np.float64) - np.asarray(m(fill), np.float64))[:, [0, 3]]
    scale = np.abs(np.asarray(m(x))).max()
    np.testing.assert_allclose(phi.sum(-1), gain, rtol=0, atol=2e-6 * scale)
    # and so does every sampled estimate, even from one order
    for n in (1, 3):
        est = np.asarray(jaxsal.shapley_value_sampling(m, x, [0, 3], key=n, n=n, patch=(3, 2),
                                                       fill=fill, return_groups=True))
        np.testing.assert_allclose(est.sum(-1), gain, rtol=0, atol=2e-6 * scale)
    # symmetry: two groups the model treats alike, holding the same values, get the same value
    sym = jaxsal.FunctionModel(lambda p, v: jnp.stack(
        [jnp.tanh(v[:, 0] + v[:, 1] + v[:, 0] * v[:, 1] * v[:, 2]) + v[:, 2] ** 2], 1), {})
    xs = np.array([[0.7, 0.7, -1.2], [-0.4, -0.4, 0.5]], np.float32)
    p2 = np.asarray(jaxsal.shapley_values(sym, xs, 1, return_groups=True))
    np.testing.assert_allclose(p2[:, 0], p2[:, 1], rtol=1e-6, atol=1e-7)
    assert np.all(np.abs(p2[:, 0] - p2[:, 2]) > 1e-3)


def test_twenty_groups_to_float_precision():
    """M = 20, the default limit: 2^20 - 1 coalitions per input credited as they come; the
    values stay within float32 rounding of the truth (measured 6.7e-6 and 2.9e-5 for values up
    to 8.9; efficiency 3.8e-5 for scores near 75)."""
    a = np.random.default_rng(0).normal(size=(20,)).astype(np.float32)

    def f(p, x):  # additive, plus one interaction split between features 0 and 1
        z = 3.0 * jnp.tanh(x * a)
        return jnp.stack([z.sum(1) + x[:, 0] * x[:, 1], (z ** 2).sum(1)], 1) + 10.0

    m = jaxsal.FunctionModel(f, {})
    x = _x(3, shape=(20,))
    phi = np.asarray(jaxsal.shapley_values(m, x, [0, 1], return_groups=True))
    z = 3.0 * np.tanh(x * a)
    want = np.stack([z, z ** 2], 1)
    want[:, 0, :2] += (x[:, 0] * x[:, 1] / 2)[:, None]
    np.testing.assert_allclose(phi, want, rtol=0, atol=1e-5 * np.abs(want).max())
    gain = np.asarray(m(x), np.float64) - np.asarray(m(np.zeros_like(x)), np.float64)
    np.testing.assert_allclose(phi.sum(-1), gain, rtol=0, atol=2e-6 * np.abs(gain).max())


def test_float64_values_are_float64_accurate_under_x64():
    """Under jax_enable_x64 float64 inputs gave float64 values, but shapley_values' and
    kernel_shap's coalition weights were float32 tables: 1.7e-7 and 8.2e-10 off the float64
    definition (6 features). Now within float64 rounding, as shapley_value_sampling."""
    x64 = getattr(jax, "enable_x64", None)
    if x64 is None:  # older JAX
        from jax.experimental import enable_x64 as x64
    rng = np.random.default_rng(2)
    w1, w2 = rng.normal(size=(6, 5)), rng.normal(size=(5, 2))
    x, fill = rng.normal(size=(2, 6)), 0.1
    with x64(True):
        m = jaxsal.FunctionModel(lambda p, v: jnp.tanh(v @ p[0]) @ p[1] + 1000.0, (w1, w2))
        got = [np.asarray(jaxsal.shapley_values(m, x, [0, 1], fill=fill)),
               np.asarray(jaxsal.kernel_shap(m, x, [0, 1], key=0, fill=fill))]  # enumerated
    # the definition in NumPy float64: every coalition of the 6 features
    subsets = list(itertools.product([0, 1], repeat=6))
    v = {s: np.tanh(np.where(np.asarray(s, bool), x, fill) @ w1) @ w2 + 1000.0
         for s in subsets}  # (N, T) each
    want = np.zeros((2, 2, 6))
    for s in subsets:
        for i in (i for i in range(6) if not s[i]):
            k = sum(s)
            w = math.factorial(k) * math.factorial(5 - k) / math.factorial(6)
            want[..., i] += w * (v[s[:i] + (1,) + s[i + 1:]] - v[s])
    for g in got:
        assert g.dtype == np.float64
        np.testing.assert_allclose(g, want, rtol=0, atol=1e-13)


def test_sampling_converges_to_the_exact_values():
    m = _smooth()
    x = _x(2)
    want, var = _brute_force(m, x, [1, 2], _grid())
    n = 700  # random orders: below the 6! = 720 that would be walked exactly
    est = np.asarray(jaxsal.shapley_value_sampling(m, x, [1, 2], key=0, n=n, patch=(3, 2),
                                                   return_groups=True))
    # each order's credit to a group is one draw of its marginal contribution (variance
    # `var`, from the definition): the mean of n within 5 standard errors
    se = np.sqrt(var / n)
    assert np.all(np.abs(est - want) <= 5 * se + 1e-5), np.max(np.abs(est - want) / se)
    few = np.asarray(jaxsal.shapley_value_sampling(m, x, [1, 2], key=0, n=2, patch=(3, 2),
                                                   return_groups=True))
    assert np.abs(few - want).max() > 10 * np.abs(est - want).max()


def test_n_covering_every_order_walks_each_once():
    """n >= M! (here n = M! = 24, 4 groups): every order is walked once, weighted 1/M!, so
    the estimate is the exact values, the same for every key (n random orders repeated some
    and missed others: a random estimate). With one mask per input, an input with M_i! <= n
    enumerates its own orders and the others still draw."""
    m = _smooth()
    x = _x(2)
    per = np.stack([_grid((3, 3)), _grid((3, 5))])  # input 0: 4 groups, input 1: 2
    want = np.asarray(jaxsal.shapley_values(m, x, [0, 3], feature_mask=per,
                                            return_groups=True))
    for n in (24, 3):  # 4! <= 24: both inputs exact; 4! > 3 >= 2!: input 1 alone
        a, b = (np.asarray(jaxsal.shapley_value_sampling(m, x, [0, 3], key=k, n=n,
                                                         feature_mask=per,
                                                         return_groups=True))
                for k in (0, 1))
        rows = slice(0, 2) if n == 24 else slice(1, 2)
        np.testing.assert_allclose(a[rows], want[rows], rtol=0, atol=1e-6)
        np.testing.assert_allclose(b[rows], want[rows], rtol=0, atol=1e-6)
    assert np.abs(a[0] - b[0]).max() > 1e-3  # 3 random orders of input 0's 4 groups


# ------------------------------------------------------------------ consistency
def test_t_classes_equal_single_calls():
    m = _smooth()
    x = _x(3)
    for method, kw in ((jaxsal.shapley_values, {}),
                       (jaxsal.shapley_value_sampling, dict(key=4, n=3))):
        many = np.asarray(method(m, x, [2, 0, 3], patch=3, **kw))
        assert many.shape == (3, 3, 6, 5)
        for j, c in enumerate([2, 0, 3]):
            np.testing.assert_allclose(many[:, j], method(m, x, c, patch=3, **kw), rtol=1e-5,
                                       atol=1e-6)
    # targets=None: the predicted class of the clean input
    pred = np.asarray(m(x)).argmax(1)
    np.testing.assert_allclose(jaxsal.shapley_values(m, x, patch=3), np.asarray(
        jaxsal.shapley_values(m, x, pred[:, None], patch=3))[:, 0], rtol=1e-5, atol=1e-6)


def test_same_key_same_values_and_batching_does_not_matter():
    m = _smooth()
    x = _x(5)
    kw = dict(patch=(2, 3), n=4)
    a = np.asarray(jaxsal.shapley_value_sampling(m, x, [1, 2], key=jax.random.key(7), **kw))
    np.testing.assert_array_equal(a, jaxsal.shapley_value_sampling(m, x, [1, 2], key=7, **kw))
    assert np.abs(a - np.asarray(jaxsal.shapley_value_sampling(m, x, [1, 2], key=8, **kw))
                  ).max() > 1e-3
    for opts in (dict(batch_size=3), dict(memory_budget=1)):  # one input per pass
        np.testing.assert_allclose(jaxsal.shapley_value_sampling(m, x, [1, 2], key=7, **kw,
                                                                 **opts), a, rtol=1e-5,
                                   atol=1e-6)
    # rows a:b explained alone with index_offset=a draw the same orders
    np.testing.assert_allclose(jaxsal.shapley_value_sampling(m, x[2:4], [1, 2], key=7,
                                                             index_offset=2, **kw), a[2:4],
                               rtol=1e-5, atol=1e-6)
    exact = np.asarray(jaxsal.shapley_values(m, x, [1, 2], patch=(2, 3)))
    for opts in (dict(batch_size=7), dict(memory_budget=1)):
        np.testing.assert_allclose(jaxsal.shapley_values(m, x, [1, 2], patch=(2, 3), **opts),
                                   exact, rtol=1e-5, atol=1e-6)
    loop = np.stack([np.asarray(jaxsal.shapley_values(m, x[i:i + 1], [1, 2],
                                                      patch=(2, 3)))[0] for i in range(5)])
    np.testing.assert_allclose(loop, exact, rtol=1e-5, atol=1e-6)


def test_explain_to_file_chunks_equal_one_call(tmp_path):
    m = _smooth()
    x = _x(5)
    masks = np.random.default_rng(2).integers(0, 4, size=(5,) + SHAPE[:2])  # one per input
    # an (N, H, W) mask is sliced with the inputs, an (H, W) one is not
    for method, kw, mask in ((jaxsal.shapley_values, {}, masks),
                             (jaxsal.shapley_value_sampling, dict(key=3, n=3), masks),
                             (jaxsal.shapley_value_sampling,
                              dict(key=3, n=3, return_groups=True), masks[0])):
        one = np.asarray(method(m, x, [0, 1], feature_mask=mask, **kw))
        path = str(tmp_path / f"{method.__name__}_{mask.ndim}.npy")
        jaxsal.explain_to_file(method, m, x, path, targets=[0, 1], batch_size=2,
                               feature_mask=mask, **kw)
        np.testing.assert_allclose(np.load(path), one, rtol=1e-5, atol=1e-6)


def test_explain_to_file_group_values_of_one_mask_per_input(tmp_path):
    """return_groups with one mask per input: the job's width is the largest id of all the
    masks plus one, also for chunks whose masks lack it (they used to be narrower)."""
    m = _smooth()
    x = _x(4)
    masks = np.random.default_rng(4).integers(0, 3, size=(4,) + SHAPE[:2])
    masks[3, 0, 0] = 6  # only the last input has id 6: the first chunk's ids stop at 2
    one = np.asarray(jaxsal.shapley_values(m, x, [0, 1], feature_mask=masks,
                                           return_groups=True))
    assert one.shape == (4, 2, 7)
    got = jaxsal.explain_to_file(jaxsal.shapley_values, m, x, str(tmp_path / "g.npy"),
                                 targets=[0, 1], batch_size=2, feature_mask=masks,
                                 return_groups=True)
    np.testing.assert_allclose(got, one, rtol=1e-5, atol=1e-6)
    # bound in a functools.partial, the options of the same job: return_groups=True bound was
    # left to each chunk (a chunk of one group wrote its value into every column)
    for name, bound, passed in (("p.npy", dict(return_groups=True), dict(feature_mask=masks)),
                                ("g.npy", dict(return_groups=True, feature_mask=masks), {})):
        chunks = []
        got = jaxsal.explain_to_file(functools.partial(jaxsal.shapley_values, **bound), m, x,
                                     str(tmp_path / name), targets=[0, 1], batch_size=2,
                                     on_chunk=lambda done, total: chunks.append(done),
                                     **passed)
        np.testing.assert_allclose(got, one, rtol=1e-5, atol=1e-6)
        assert chunks == ([] if name == "g.npy" else [1, 2])  # g.npy: the job above's
    # an int is the number of columns; fewer than the ids need is refused
    wide = np.asarray(jaxsal.shapley_values(m, x[:2], [0, 1], feature_mask=masks[:2],
                                            return_groups=9))
    np.testing.assert_allclose(wide[..., :7], one[:2], rtol=1e-5, atol=1e-6)
    assert wide.shape == (2, 2, 9) and not wide[..., 7:].any()
    with pytest.raises(ValueError, match=r"return_groups=3 columns.*need 7.*at least 7"):
        jaxsal.shapley_values(m, x, 0, feature_mask=masks, return_groups=3)
    with pytest.raises(ValueError, match="number of columns >= 1"):
        jaxsal.shapley_values(m, x, 0, feature_mask=masks, return_groups=0)


def test_no_recompile_on_second_call(compiles):
    m = _smooth()
    x = _x(2)
    mask = np.arange(30).reshape(6, 5) % 5
    calls = [lambda v, t, k, g: jaxsal.shapley_values(m, v, t, feature_mask=g),
             lambda v, t, k, g: jaxsal.shapley_value_sampling(m, v, t, key=k, n=2,
                                                              feature_mask=g)]
    for c in calls:
        jax.block_until_ready(c(x, [0, 1], 0, mask))
    first = compiles.n
    for c in calls:  # new values, class ids, key and a new mask with as many groups
        jax.block_until_ready(c(x + 1, [2, 3], 1, (mask + 1) % 5 + 10))
    assert compiles.n == first


# ------------------------------------------------------------------ feature groups
def test_feature_mask_forms():
    m = _smooth()
    x = _x(2)
    gid = _grid()
    ref = np.asarray(jaxsal.shapley_values(m, x, [0, 1], patch=(3, 2)))
    names = [3, 10, 42, 1, 7, 0]
    ids = np.array(names)[gid]  # not contiguous: the ids that occur are the groups
    for mask in (gid, gid[None, ..., None], np.stack([gid, gid]), ids):
        np.testing.assert_allclose(jaxsal.shapley_values(m, x, [0, 1], feature_mask=mask),
                                   ref, rtol=1e-5, atol=1e-6)
    # column j of return_groups is id j (0 for the ids that occur nowhere)
    vals = np.asarray(jaxsal.shapley_values(m, x, 0, feature_mask=ids, return_groups=True))
    assert vals.shape == (2, 43)
    for g, i in enumerate(names):
        np.testing.assert_allclose(vals[:, i], np.asarray(ref)[:, 0][:, gid == g][:, 0],
                                   rtol=1e-5, atol=1e-6)
    assert not np.any(np.delete(vals, names, axis=1))
    # one mask per input
    per = np.stack([gid, gid.T.reshape(6, 5) % 3])
    two = np.asarray(jaxsal.shapley_values(m, x, 0, feature_mask=per))
    np.testing.assert_allclose(two[1], np.asarray(jaxsal.shapley_values(
        m, x[1:], 0, feature_mask=per[1]))[0], rtol=1e-5, atol=1e-6)
    # channels grouped apart: maps keep the channel axis; the linear model by hand
    lin, w = _linear()
    ch = np.stack([gid, gid + 6], -1)  # (H, W, C): 12 groups
    maps = np.asarray(jaxsal.shapley_value_sampling(lin, x, 1, key=0, n=1, feature_mask=ch))
    assert maps.shape == (2,) + SHAPE
    contrib = w[1][None] * x
    want = np.zeros_like(contrib)
    for g in range(12):
        want[:, ch == g] = contrib[:, ch == g].sum(-1, keepdims=True)
    np.testing.assert_allclose(maps, want, rtol=1e-5, atol=1e-5)


def test_channels_first_and_features():
    m = _smooth()
    x = _x(3)  # not 2 = C: a (C, H, W) mask would also read as one mask per input
    cf = jaxsal.FunctionModel(lambda p, v: m.fn(p, jnp.moveaxis(v, 1, -1)), m.params,
                              data_format="channels_first")
    want = np.asarray(jaxsal.shapley_values(m, x, [0, 1], patch=(3, 2)))
    xc = np.moveaxis(x, -1, 1)
    np.testing.assert_allclose(jaxsal.shapley_values(cf, xc, [0, 1], patch=(3, 2)), want,
                               rtol=1e-5, atol=1e-6)
    ch = np.stack([_grid(), _grid() + 6], -1)
    np.testing.assert_allclose(
        jaxsal.shapley_values(cf, xc, [0, 1], feature_mask=np.moveaxis(ch, -1, 0)),
        np.moveaxis(np.asarray(jaxsal.shapley_values(m, x, [0, 1], feature_mask=ch)), -1, 2),
        rtol=1e-5, atol=1e-6)
    # (N, D): one group per feature by default, runs of `patch` features
    f = jaxsal.FunctionModel(lambda p, v: jnp.stack([jnp.tanh(v @ p), v[:, 0] * v[:, 1]], 1),
                             jnp.arange(5.0) - 2)
    v = _x(3, shape=(5,))
    one = np.asarray(jaxsal.shapley_values(f, v, [0, 1]))
    assert one.shape == (3, 2, 5)
    np.testing.assert_allclose(one[:, 1, :2], (v[:, 0] * v[:, 1] / 2)[:, None].repeat(2, 1),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jaxsal.shapley_values(f, v, [0, 1], patch=2),
                               jaxsal.shapley_values(f, v, [0, 1],
                                                     feature_mask=[0, 0, 1, 1, 2]),
                               rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize("kw, err, match", [
    (dict(patch=1), ValueError, r"30 feature groups is more than max_groups=20.*"
                                r"1,073,741,823 masked forward passes.*shapley_value_sampling"),
    (dict(patch=1, max_groups=31), ValueError, r"max_groups as an int in \[1, 30\]"),
    (dict(patch=7), ValueError, r"patch 7 is larger than spatial axis 0's size, 6"),
    (dict(patch=(2, 2, 2)), ValueError, "one per spatial axis"),
    (dict(patch=2, feature_mask=np.zeros((6, 5), int)), ValueError, "got both"),
    (dict(feature_mask=np.zeros((6, 5))), TypeError, r"integer.*astype\(int\)"),
    (dict(feature_mask=np.zeros((6, 5), bool)), TypeError, "integer array of group ids"),
    (dict(feature_mask=np.full((6, 5), -1)), ValueError, "ids >= 0"),
    (dict(feature_mask=np.zeros((5, 6), int)), ValueError,
     r"expected feature_mask of shape \(6, 5\).*\(3, 6, 5\).*\(6, 5, 2\).*got \(5, 6\)"),
    (dict(feature_mask=np.zeros((4, 6, 5), int)), ValueError, "got \\(4, 6, 5\\)"),
    (dict(fill=np.zeros((6, 5))), ValueError, "fill of shape"),
    (dict(return_groups="yes"), TypeError, "return_groups"),
    (dict(batch_size=0), ValueError, "batch_size"),
])
def test_refusals(kw, err, match):
    m = _smooth()
    with pytest.raises(err, match=match):
        jaxsal.shapley_values(m, _x(), 0, **kw)


@pytest.mark.parametrize("kw, err, match", [
    (dict(), ValueError, "needs an explicit PRNG key"),
    (dict(key=0, n=0), ValueError, "n"),
    (dict(key=0, index_offset=-1), ValueError, "index_offset"),
    (dict(key=0, patch=9), ValueError, "larger than"),
])
def test_sampling_refusals(kw, err, match):
    with pytest.raises(err, match=match):
        jaxsal.shapley_value_sampling(_smooth(), _x(), 0, **kw)


def test_ambiguous_mask_and_several_inputs_are_refused():
    m = jaxsal.FunctionModel(lambda p, v: v.reshape(len(v), -1)[:, :2], {})
    x = np.ones((3, 3, 3, 3), np.float32)  # (N, H, W) and (H, W, C) masks look alike
    with pytest.raises(ValueError, match=r"ambiguous.*\(3, 3, 3, 1\) for one per input "
                                         r"\(feature_mask\[\.\.\., None\]\) or \(1, 3, 3, 3\)"):
        jaxsal.shapley_values(m, x, 0, feature_mask=np.zeros((3, 3, 3), int))
    np.testing.assert_array_equal(jaxsal.shapley_values(
        m, x, 0, feature_mask=np.zeros((1, 3, 3, 3), int)).shape, (3, 3, 3, 3))
    two = jaxsal.FunctionModel(lambda p, v: v[0] + v[1], {})
    with pytest.raises(TypeError, match="one input array.*FunctionModel"):
        jaxsal.shapley_values(two, [np.ones((2, 3)), np.ones((2, 3))], 0)
