"""The model parameter randomization test (Adebayo et al., 2018) and the rank correlation it
reports: Spearman's definition (scipy's, ties included), the layers randomized in cascade or
alone, and maps that do or do not depend on the parameters."""

import os
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import jaxsal
from jaxsal._src import randomization


def test_rank_correlation_is_scipys_spearman_with_ties():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 2, 6, 5)).astype(np.float32)
    b = a + rng.normal(size=a.shape).astype(np.float32)
    a[0, 0, :3] = 0.0  # ties
    b[1, 1] = np.round(b[1, 1])
    got = np.asarray(jaxsal.rank_correlation(a, b, batch_dims=2))
    want = np.array([[stats.spearmanr(a[i, j].ravel(), b[i, j].ravel())[0] for j in range(2)]
                     for i in range(3)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jaxsal.rank_correlation(a[:, 0], a[:, 0]), 1.0, rtol=1e-6)
    np.testing.assert_allclose(jaxsal.rank_correlation(a[:, 0], -a[:, 0]), -1.0, rtol=1e-6)
    assert np.isnan(np.asarray(jaxsal.rank_correlation(np.ones((1, 4)), a[:1, 0, 0, :4])))[0]
    with pytest.raises(ValueError, match="same shape"):
        jaxsal.rank_correlation(a, b[:, 0])
    # maps with NaN or inf: NaN, as scipy's (NaN values were ranked as distinct values)
    bad = b[:, 0].copy()
    bad[0, 0, 0], bad[1] = np.nan, np.nan
    bad[2, 0, 0] = np.inf
    got = np.asarray(jaxsal.rank_correlation(a[:, 0], bad))
    assert np.isnan(got).all()
    assert np.isnan(stats.spearmanr(a[0, 0].ravel(), bad[0].ravel())[0])


def test_rank_correlation_of_maps_of_millions_of_values_does_not_overflow():
    """The correlation's denominator multiplied the two sums of squared centred ranks (about
    P**3 / 12 each) before the square root: beyond P of about 6.1 million (one 2600 x 2600
    map) the product overflowed float32, and every correlation read 0 ("the maps changed").
    Ranking 7 million values takes seconds, so the ranks' correlation is checked on its own,
    against Spearman's formula for ranks without ties, 1 - 6 sum(d**2) / (P (P**2 - 1))."""
    p, h = 7_000_000, 3_500_000
    ra = np.arange(p, dtype=np.float32)
    half = ra.copy()
    half[:h] = half[:h][::-1]  # the first half's ranks reversed: sum(d**2) = h (h**2 - 1) / 3
    # jitted, one map at a time, as rank_correlation runs it: XLA turned (ssa * s) * (ssb * s),
    # the sums scaled after summing, into (ssa * ssb) * s**2, which overflowed again
    corr = jax.jit(randomization._ranks_correlation)
    got = [float(corr(jnp.asarray(ra)[None], jnp.asarray(r)[None], jnp.ones(1, bool))[0])
           for r in (ra, ra[::-1], half)]
    want = [1.0, -1.0, 1 - 2 * h * (h * h - 1) / (p * (p * p - 1))]  # (Python ints: exact)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_rank_correlation_stays_within_minus_one_and_one():
    """The sums of the numerator and the denominator are reduced apart, rounding apart: maps
    of 50000 values read 1.0000001 against themselves (or -1.0000001 against their
    negation). A correlation lies in [-1, 1] by definition (Cauchy-Schwarz)."""
    a = np.random.default_rng(0).random((2, 50_000), dtype=np.float32)
    got = np.asarray(jaxsal.rank_correlation(np.concatenate([a, a]), np.concatenate([a, -a])))
    assert np.abs(got).max() <= 1.0
    np.testing.assert_allclose(got, [1.0, 1.0, -1.0, -1.0], rtol=1e-6)


@pytest.mark.parametrize("scale", [1e-39, 1e-50])
def test_rank_correlation_of_tiny_maps_is_scipys(scale):
    """Maps below float32's smallest normal number read as constant (NaN): XLA:CPU flushes
    float32 subnormals (1e-39) to 0 where it compares them, and NumPy float64 maps below
    float32's range (1e-50) became zeros when made float32. Rank correlation is scale-free:
    float maps are ranked by their bits' order, and such float64 maps scaled by a power of
    two per map first (exact)."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(1, 6, 6))
    b = a + rng.normal(size=(1, 6, 6))
    want = stats.spearmanr(a.ravel(), b.ravel())[0]
    got = [jaxsal.rank_correlation(a * scale, b * scale)]  # float64
    if scale > np.finfo(np.float32).smallest_subnormal:
        got.append(jaxsal.rank_correlation((a * scale).astype(np.float32),
                                           jnp.asarray(b * scale, jnp.float32)))
    np.testing.assert_allclose(np.ravel(got), want, rtol=1e-6)


@pytest.mark.parametrize("x64", [False, True])
def test_rank_correlation_ranks_integer_and_huge_float_maps_exactly(x64):
    """rank_correlation cast both maps to float32 (float64 under x64) before ranking: ints 1
    apart beyond 2**24 tied (int64 ones under x64 made float32 too: NaN), int64 maps beyond
    int32 wrapped around without x64 (a wrong correlation), and float64 maps beyond float32's
    range became inf (NaN). Ints are ranked as ints, huge float64 maps scaled by a power of
    two per map (exact, as deletion's), and int64 beyond int32 without x64 refused."""
    x64_ctx = getattr(jax, "enable_x64", None)
    if x64_ctx is None:  # older JAX
        from jax.experimental import enable_x64 as x64_ctx
    b = np.array([[4, 1, 3, 2], [1, 2, 4, 3]], np.int32)
    ints = np.array([[2**25 + 1, 2**25, 2**25 + 3, 2**25 + 2], [7, 2**30, 2**30 + 1, 9]],
                    np.int32)
    huge = np.array([[4e39, 1e39, 3e39, 2e39], [1.0, 2.0, 4.0, 3.0]])  # float64
    wide = np.array([[0, 2**31 + 5, 2**32 + 1, 7], [2**40 + 1, 2**40, 2**40 + 3, 2**40 + 2]],
                    np.int64)
    with x64_ctx(x64):
        got = [np.asarray(jaxsal.rank_correlation(m, b)) for m in (ints, huge)]
        if x64:
            got.append(np.asarray(jaxsal.rank_correlation(wide, b)))
        else:
            with pytest.raises(ValueError, match=r"rank_correlation: the maps a hold \d+, "
                                                  r"beyond int32's range.*astype\(np.float64\)"):
                jaxsal.rank_correlation(wide, b)
            # the fix the message offers (the first map's values are distinct in float32)
            got.append(np.asarray(jaxsal.rank_correlation(wide[:1].astype(np.float64),
                                                          b[:1])))
            wide = wide[:1]
    for g, m in zip(got, (ints, huge, wide)):
        want = [stats.spearmanr(m[i], b[i])[0] for i in range(len(m))]
        np.testing.assert_allclose(g, want, rtol=1e-6)
    if not x64:  # randomization_test made explain's NumPy maps JAX arrays first: inf, NaN
        mlp, xs = _mlp(), np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4, 1)
        corr = [jaxsal.randomization_test(
            lambda mm: np.asarray(jaxsal.saliency(mm, xs, 0), np.float64) * scale, mlp,
            key=0, layers=["d2"])["d2"] for scale in (1.0, 1e39)]
        assert np.isfinite(corr[0]).all()
        np.testing.assert_array_equal(corr[1], corr[0])
        # its refusal names randomization_test and explain, not rank_correlation's `a`
        with pytest.raises(ValueError, match=r"^randomization_test: the maps explain returned "
                                             r"hold \d+, beyond int32's range.*from explain"):
            jaxsal.randomization_test(lambda mm: np.full((2, 3, 4), 2**40, np.int64), mlp,
                                      key=0, layers=["d2"])
        # float8 maps: past the type check, JAX refused to promote them with float32
        f8 = jnp.asarray(ints[:1] % 200, jnp.float8_e4m3fn)
        np.testing.assert_allclose(jaxsal.rank_correlation(f8, b[:1]),
                                   jaxsal.rank_correlation(f8.astype(jnp.float32), b[:1]))


def test_gaussian_draws_keep_variances_non_negative():
    """``mode="gaussian"`` on a batch-norm-like layer: its variance, drawn with the array's
    mean and std, went negative (sqrt of a negative: every map NaN, and the NaN maps got a
    correlation near 0, a pass); arrays without negative values get |draw|."""
    rng = np.random.default_rng(0)
    params = {"bn": {"gamma": jnp.ones(6), "var": jnp.asarray(rng.uniform(0.001, 0.05, 6),
                                                                jnp.float32)},
              "d": {"kernel": jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)}}

    def f(p, x):
        h = x.reshape(len(x), -1) / jnp.sqrt(p["bn"]["var"] + 1e-3) * p["bn"]["gamma"]
        return jnp.tanh(h) @ p["d"]["kernel"]

    m = jaxsal.FunctionModel(f, params)
    x = rng.normal(size=(4, 6)).astype(np.float32)
    seen = []

    def explain(mm):
        seen.append(mm.params)
        return jaxsal.saliency(mm, x, 1, reduce=None)

    for key in range(8):
        corr = jaxsal.randomization_test(explain, m, key=key, mode="gaussian", layers=["bn"])
        var = np.asarray(seen[-1]["bn"]["var"])
        assert (var >= 0).all() and not np.allclose(var, np.asarray(params["bn"]["var"]))
        np.testing.assert_array_equal(np.asarray(seen[-1]["bn"]["gamma"]), 1.0)  # constant
        assert np.isfinite(np.asarray(corr["bn"])).all()


def _mlp(seed=0):
    rng = np.random.default_rng(seed)
    params = {"d1": {"kernel": jnp.asarray(rng.normal(size=(12, 8)), jnp.float32),
                     "bias": jnp.asarray(rng.normal(size=(8,)), jnp.float32)},
              "d2": {"kernel": jnp.asarray(rng.normal(size=(8, 3)), jnp.float32)}}

    def f(p, x):
        h = jnp.tanh(x.reshape(len(x), -1) @ p["d1"]["kernel"] + p["d1"]["bias"])
        return h @ p["d2"]["kernel"]

    return jaxsal.FunctionModel(f, params)


def test_cascade_randomizes_from_the_output_down_with_the_documented_draws():
    m = _mlp()
    x = np.random.default_rng(1).normal(size=(4, 3, 4, 1)).astype(np.float32)
    seen = []

    def explain(mm):
        seen.append(mm.params)
        return jaxsal.saliency(mm, x, [0, 2], reduce=None)

    corr = jaxsal.randomization_test(explain, m, key=3, batch_dims=2)
    assert list(corr) == ["d2", "d1"] and corr["d1"].shape == (4, 2)
    # (first traced once, with abstract params, to find the order the layers are read in)
    assert isinstance(seen[0]["d1"]["kernel"], jax.core.Tracer)
    seen = seen[1:]
    assert len(seen) == 3
    p0, p1, p2 = seen
    # step 1: d2 shuffled (same values, other places), d1 untouched
    d2 = np.asarray(p1["d2"]["kernel"])
    assert not np.array_equal(d2, np.asarray(p0["d2"]["kernel"]))
    np.testing.assert_array_equal(np.sort(d2.ravel()), np.sort(np.asarray(
        p0["d2"]["kernel"]).ravel()))
    assert p1["d1"] is p0["d1"]
    # step 2 (cascade): d2 stays randomized, d1 shuffled too
    np.testing.assert_array_equal(np.asarray(p2["d2"]["kernel"]), d2)
    assert not np.array_equal(np.asarray(p2["d1"]["kernel"]), np.asarray(p0["d1"]["kernel"]))
    # the values are the rank correlations of those maps with the first ones
    maps = [np.asarray(jaxsal.saliency(m.with_params(p), x, [0, 2], reduce=None))
            for p in seen]
    np.testing.assert_allclose(corr["d1"], jaxsal.rank_correlation(maps[0], maps[2],
                                                                   batch_dims=2), rtol=1e-6)
    # independent: d1 alone, d2 as trained
    alone = jaxsal.randomization_test(explain, m, key=3, cascade=False, layers=["d1"])
    assert list(alone) == ["d1"] and seen[-1]["d2"] is p0["d2"]
    # the same key gives the same values
    again = jaxsal.randomization_test(lambda mm: jaxsal.saliency(mm, x, [0, 2], reduce=None),
                                      m, key=3, batch_dims=2)
    np.testing.assert_array_equal(again["d1"], corr["d1"])


def test_a_layers_draw_is_its_own_whatever_layers_are_randomized_and_repeats_are_refused():
    """A layer's key was folded from its position in the order randomized: layers=["d1"]
    drew other values for d1 than the full run with the same key, and a cascade's step drew
    other values than the same layer alone. layers=["d2", "d2", "d1"] returned two entries
    without a word (the cascade shuffled d2 twice)."""
    m = _mlp()
    x = np.random.default_rng(1).normal(size=(2, 3, 4, 1)).astype(np.float32)
    seen = {}

    def explain(mm):
        seen.setdefault("all", []).append(mm.params)
        return jaxsal.saliency(mm, x, 0)

    jaxsal.randomization_test(explain, m, key=3, cascade=False)
    full = {n: p[n] for n, p in zip(["d2", "d1"], seen.pop("all")[2:])}
    for cascade in (False, True):
        jaxsal.randomization_test(explain, m, key=3, cascade=cascade, layers=["d1"])
        jax.tree_util.tree_map(np.testing.assert_array_equal, seen.pop("all")[-1]["d1"],
                               full["d1"])
    with pytest.raises(ValueError, match=r"layers= names \['d2'\] more than once"):
        jaxsal.randomization_test(explain, m, key=3, layers=["d2", "d2", "d1"])


def test_a_map_that_ignores_the_model_stays_identical_and_guided_backprop_stays_closer(
        mnist, mnist_digits):
    """A model-free map keeps correlation 1 at every step (it fails the check); saliency's
    maps drift as more layers are randomized, and guided backprop's stay closer to the
    original than saliency's, the paper's finding (on 6 digits, measured: saliency 0.70 after
    the last layer and 0.43 after all, guided backprop 0.88 and 0.74)."""
    x = mnist_digits[:6]
    t = np.asarray(mnist(x)).argmax(1)[:, None]
    lm = mnist.with_head("logits")
    edge = jaxsal.randomization_test(lambda mm: jnp.abs(jnp.diff(jnp.asarray(x), axis=1)),
                                     lm, key=0)
    assert all(np.allclose(v, 1.0) for v in edge.values())
    sal = jaxsal.randomization_test(lambda mm: jaxsal.saliency(mm, x, t)[:, 0], lm, key=0,
                                    mode="gaussian")
    gbp = jaxsal.randomization_test(lambda mm: jaxsal.guided_backprop(mm, x, t)[:, 0], lm,
                                    key=0, mode="gaussian")
    assert list(sal) == ["dense_2", "dense_1", "conv2d_2", "conv2d_1"]
    s_first, s_last = float(sal["dense_2"].mean()), float(sal["conv2d_1"].mean())
    assert s_last < s_first - 0.1
    assert float(gbp["conv2d_1"].mean()) > s_last + 0.1


def test_errors():
    m = _mlp()
    x = np.ones((2, 3, 4, 1), np.float32)
    with pytest.raises(ValueError, match="have no parameters"):
        jaxsal.randomization_test(lambda mm: jaxsal.saliency(mm, x, 0), m, key=0, layers=["x"])
    with pytest.raises(ValueError, match="unknown mode"):
        jaxsal.randomization_test(lambda mm: jaxsal.saliency(mm, x, 0), m, key=0, mode="zero")
    f = jaxsal.FunctionModel(lambda p, v: v.reshape(len(v), -1) @ p, jnp.ones((12, 2)))
    with pytest.raises(TypeError, match="dict keyed by layer.*got ArrayImpl"):
        jaxsal.randomization_test(lambda mm: jaxsal.saliency(mm, x, 0), f, key=0)


def test_the_layers_of_a_nested_model_are_randomized_one_by_one(tmp_path):
    """A model wrapping another (a pretrained base with a new head: ``Sequential([VGG16,
    Dense])``) keeps the base's parameters under its name; the base was one unit, all its
    layers randomized at once, and its layers (``"base/c1"``, as ``layer_names`` lists them)
    could not be named in ``layers=``."""
    import keras
    from model_import import load_keras

    keras.utils.set_random_seed(0)
    bi = keras.Input((6, 5, 2))
    h = keras.layers.Conv2D(3, 3, activation="relu", name="c1")(bi)
    base_model = keras.Model(bi, keras.layers.Conv2D(4, 3, activation="relu", name="c2")(h),
                             name="base")
    i = keras.Input((6, 5, 2))
    h = keras.layers.GlobalAveragePooling2D()(base_model(i))
    keras.Model(i, keras.layers.Dense(2, name="out")(h)).save(tmp_path / "nested.keras")
    m = load_keras(tmp_path / "nested.keras").with_head("logits")
    x = np.random.default_rng(0).normal(size=(3, 6, 5, 2)).astype(np.float32)
    seen = []

    def explain(mm):
        seen.append(mm.params)
        return jaxsal.saliency(mm, x, 1)

    corr = jaxsal.randomization_test(explain, m, key=0)
    assert list(corr) == ["out", "base/c2", "base/c1"]
    p0, _, p2, _ = seen
    # step 2 randomized c2 (and kept out), not c1
    assert p2["base"]["c1"] is p0["base"]["c1"]
    assert not np.array_equal(p2["base"]["c2"]["kernel"], p0["base"]["c2"]["kernel"])
    alone = jaxsal.randomization_test(explain, m, key=0, layers=["base/c1"], cascade=False)
    assert list(alone) == ["base/c1"]
    assert seen[-1]["base"]["c2"] is p0["base"]["c2"] and seen[-1]["out"] is p0["out"]
    np.testing.assert_array_equal(np.sort(np.ravel(seen[-1]["base"]["c1"]["kernel"])),
                                  np.sort(np.ravel(p0["base"]["c1"]["kernel"])))
    # the whole nested model is still one unit when named
    whole = jaxsal.randomization_test(explain, m, key=0, layers="base")
    assert list(whole) == ["base"] and seen[-1]["out"] is p0["out"]
    assert not np.array_equal(seen[-1]["base"]["c1"]["kernel"], p0["base"]["c1"]["kernel"])
    with pytest.raises(ValueError, match="base/c1"):
        jaxsal.randomization_test(explain, m, key=0, layers=["base/c3"])


def test_layers_of_a_dict_are_ordered_by_the_forward_pass():
    """Flax variables after a tree_map or a jit (sorted keys: BatchNorm_0, Conv_0, Dense_0)
    and a plain dict listed input-last: the cascade followed the dict's order and
    randomized the convolution before the batch norm after it. Ordered by the traced forward
    pass, output first."""
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, v):
            v = nn.Conv(3, (3, 3))(v)
            v = nn.relu(nn.BatchNorm(use_running_average=True)(v))
            return nn.Dense(4)(v.mean((1, 2)))

    x = jax.random.normal(jax.random.key(0), (3, 6, 6, 2))
    net = Net()
    variables = jax.tree_util.tree_map(lambda a: a, net.init(jax.random.key(1), x))
    assert list(variables["params"]) == ["BatchNorm_0", "Conv_0", "Dense_0"]  # sorted
    corr = jaxsal.randomization_test(lambda mm: jaxsal.saliency(mm, x, 0),
                                     jaxsal.FunctionModel(net.apply, variables), key=0)
    assert list(corr) == ["Dense_0", "BatchNorm_0", "Conv_0"]
    m = _mlp()
    flipped = jaxsal.FunctionModel(m.fn, {"d2": m.params["d2"], "d1": m.params["d1"]})
    xs = np.ones((2, 3, 4, 1), np.float32)
    assert list(jaxsal.randomization_test(lambda mm: jaxsal.saliency(mm, xs, 0), flipped,
                                          key=0)) == ["d2", "d1"]
    # an explain that cannot be traced (np.asarray of its maps) fell back to the dict's
    # order without a word: here from the input up. It now warns, saying why, the order
    # and the remedies; a model that knows its input shape is traced instead
    def untraceable(mm):
        return np.asarray(jaxsal.saliency(mm, xs, 0))

    with pytest.warns(UserWarning, match=r"explain\(model\) could not be traced .*"
                                         r"TracerArrayConversionError.*last key first: "
                                         r"\['d1', 'd2'\].*pass layers="):
        assert list(jaxsal.randomization_test(untraceable, flipped, key=0)) == ["d1", "d2"]
    shaped = jaxsal.FunctionModel(m.fn, flipped.params, input_shape=(3, 4, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(jaxsal.randomization_test(untraceable, shaped, key=0)) == ["d2", "d1"]


def test_maps_of_several_inputs_or_a_list_x_are_refused():
    """randomization_test stacked several inputs' maps into one array (one correlation per
    input, pooled over the examples); sensitivity_max stacked a list x as one batch."""
    m = jaxsal.FunctionModel(lambda p, v: jnp.concatenate(
        [v[0].reshape(len(v[0]), -1), v[1]], 1) @ p["d"]["kernel"],
        {"d": {"kernel": jnp.ones((7, 2))}})
    x = [np.ones((5, 2, 2), np.float32), np.ones((5, 3), np.float32)]
    with pytest.raises(ValueError, match=r"explain returned list of 2 maps \(a model of several "
                                         r"inputs\).*jaxsal.saliency\(m, x, 3\)\[0\]"):
        jaxsal.randomization_test(lambda mm: jaxsal.saliency(mm, x, 0), m, key=0)
    with pytest.raises(TypeError, match=r"sensitivity_max evaluates the maps of one input "
                                        r"array .* cannot evaluate a list of 2 arrays"):
        jaxsal.sensitivity_max(lambda v: v, x, key=0)


_SHUFFLE_PEAK = """
import os, resource, sys
import jax, jax.numpy as jnp
from jaxsal._src.randomization import _shuffled
a = jnp.arange(2**23, dtype=jnp.float32).reshape(2048, 4096)  # 32 MiB, a Dense kernel
jax.block_until_ready(_shuffled(jax.random.key(1), a[:2]))  # anything compiled once, here
with open("/proc/self/clear_refs", "w") as f:  # the peak RSS from here on
    f.write("5")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
b = jax.block_until_ready(_shuffled(jax.random.key(0), a))
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux peak RSS")
def test_permuting_a_large_array_takes_a_few_copies_of_it():
    """``mode="permute"`` shuffles each array with a few copies of it in memory: JAX's
    sort-based permutation peaked at 14x the array (VGG16's 392 MiB ``fc1`` kernel: 5.6 GB
    of RSS and 317 s on the 2-core VM)."""
    out = subprocess.run([sys.executable, "-c", _SHUFFLE_PEAK], capture_output=True,
                         text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=600,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    grown = int(out.stdout.split()[-1])
    assert grown < 5 * 2**25, f"shuffling 32 MiB grew the peak RSS by {grown / 2**20:.0f} MiB"
    a = jnp.arange(2**12, dtype=jnp.float32).reshape(64, 64)
    b = randomization._shuffled(jax.random.key(0), a)
    assert b.shape == a.shape and b.dtype == a.dtype
    np.testing.assert_array_equal(np.sort(np.asarray(b).ravel()), np.asarray(a).ravel())
    assert np.mean(np.asarray(b) == np.asarray(a)) < 0.01  # moved, not kept in place
    np.testing.assert_array_equal(randomization._shuffled(jax.random.key(0), a), b)
