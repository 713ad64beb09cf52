"""Gradient methods, targets, heads, chunking, compilation cache: analytic cases and
consistency properties (jit == eager, vmap == loop, T classes == T single calls)."""

import pathlib
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
from small_models import grid_regions, smooth_model
from model_import import load_keras

FIX = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def x4():
    return np.load(FIX / "reference" / "saliency_linear.npz")["x"][:4]


def _linear(seed=0, shape=(5, 4, 2), k=3, bias=True):
    rng = np.random.default_rng(seed)
    d = int(np.prod(shape))
    params = {"w": jnp.asarray(rng.normal(size=(d, k)), jnp.float32),
              "b": jnp.asarray(rng.normal(size=(k,)) if bias else np.zeros(k), jnp.float32)}

    def f(p, x):
        return x.reshape(x.shape[0], -1) @ p["w"] + p["b"]

    return jaxsal.FunctionModel(f, params, input_shape=shape), params


def _x(shape=(5, 4, 2), n=3, seed=1):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


# ------------------------------------------------------------------ analytic truths
def test_linear_model_gradient_is_weights():
    m, p = _linear()
    x = _x()
    g = jaxsal.saliency(m, x, targets=[0, 1, 2], reduce=None)  # (N, T, 5, 4, 2)
    assert g.shape == (3, 3, 5, 4, 2)
    w = np.asarray(p["w"]).T.reshape(3, 5, 4, 2)
    for n in range(3):
        np.testing.assert_allclose(g[n], w, rtol=1e-6, atol=1e-6)
    # default reduction: max of |g| over channels
    np.testing.assert_allclose(jaxsal.saliency(m, x, 1), np.abs(w[1]).max(-1)[None].repeat(3, 0),
                               rtol=1e-6)


def test_gradient_x_input_sums_to_score_without_bias():
    m, p = _linear(bias=False)
    x = _x()
    maps = jaxsal.gradient_x_input(m, x, targets=[0, 2])  # signed channel sum
    y = np.asarray(m(x))
    np.testing.assert_allclose(maps.sum(axis=(2, 3)), y[:, [0, 2]], rtol=1e-5, atol=1e-5)


def test_integrated_gradients_completeness_smooth():
    m = smooth_model()
    x = _x()
    base = np.full((5, 4, 2), 0.3, np.float32)
    ig = jaxsal.integrated_gradients(m, x, targets=[0, 3], baseline=base, steps=64)
    y, y0 = np.asarray(m(x)), np.asarray(m(np.broadcast_to(base, x.shape)))
    np.testing.assert_allclose(ig.sum(axis=(2, 3)), (y - y0)[:, [0, 3]], rtol=1e-3, atol=1e-4)


def test_integrated_gradients_completeness_relu_cnn(mnist, x4):
    lm = mnist.with_head("logits")
    ig = jaxsal.integrated_gradients(lm, x4[:2], targets=[1, 5], steps=128)
    y = np.asarray(lm(x4[:2]))
    y0 = np.asarray(lm(np.zeros_like(x4[:2])))
    diff = (y - y0)[:, [1, 5]]
    np.testing.assert_allclose(ig.sum(axis=(2, 3)), diff, rtol=0.02, atol=0.05)


@pytest.mark.parametrize("rule", ["left", "right", "middle", "gausslegendre"])
def test_integrated_gradients_rules_converge(rule):
    m = smooth_model()
    x = _x()
    ig = jaxsal.integrated_gradients(m, x, 2, steps=256, rule=rule)
    d = np.asarray(m(x))[:, 2] - np.asarray(m(np.zeros_like(x)))[:, 2]
    np.testing.assert_allclose(ig.sum(axis=(1, 2)), d, rtol=2e-2, atol=2e-2)


def test_gauss_legendre_quadrature_is_exact_for_polynomials_of_degree_2n_minus_1():
    from jaxsal._src.integrated import quadrature

    alphas, w = (np.asarray(v, np.float64) for v in quadrature(3, "gausslegendre"))
    assert np.all((alphas > 0) & (alphas < 1))  # never the endpoints
    for d in range(6):  # int_0^1 a^d da = 1 / (d + 1)
        assert abs(np.sum(w * alphas ** d) - 1.0 / (d + 1)) < 1e-6, d
    assert abs(np.sum(w * alphas ** 6) - 1.0 / 7) > 1e-4  # degree 2n is not (3.6e-4 off)


# ------------------------------------------------------------------ modified backprop
def test_guided_and_deconvnet_vjps_match_definitions():
    rng = np.random.default_rng(0)
    z = jnp.asarray(rng.normal(size=(50,)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(50,)), jnp.float32)
    y, vjp = jax.vjp(jaxsal.guided_relu, z)
    np.testing.assert_array_equal(y, np.maximum(z, 0))
    np.testing.assert_array_equal(vjp(g)[0], np.where((g > 0) & (z > 0), g, 0))
    y, vjp = jax.vjp(jaxsal.deconvnet_relu, z)
    np.testing.assert_array_equal(y, np.maximum(z, 0))
    np.testing.assert_array_equal(vjp(g)[0], np.maximum(g, 0))


def _two_layer(relu_kwarg=True):
    rng = np.random.default_rng(5)
    params = {"w1": jnp.asarray(rng.normal(size=(12, 8)), jnp.float32),
              "w2": jnp.asarray(rng.normal(size=(8, 3)), jnp.float32)}

    def f(p, x, relu=jax.nn.relu):
        return relu(x.reshape(x.shape[0], -1) @ p["w1"]) @ p["w2"]

    return jaxsal.FunctionModel(f, params, relu_kwarg="relu" if relu_kwarg else None), params


@pytest.mark.parametrize("mode", ["guided", "deconvnet"])
def test_guided_backprop_on_function_model_by_hand(mode):
    m, p = _two_layer()
    x = np.random.default_rng(2).normal(size=(4, 3, 2, 2)).astype(np.float32)
    fn = jaxsal.guided_backprop if mode == "guided" else jaxsal.deconvnet
    got = fn(m, x, targets=1, reduce=None)
    w1, w2 = np.asarray(p["w1"]), np.asarray(p["w2"])
    z = x.reshape(4, -1) @ w1
    dy = np.broadcast_to(w2[:, 1], z.shape)  # upstream gradient at the ReLU output
    if mode == "guided":
        dz = dy * (dy > 0) * (z > 0)
    else:
        dz = dy * (dy > 0)
    np.testing.assert_allclose(got.reshape(4, -1), dz @ w1.T, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="relu_kwarg"):
        jaxsal.guided_backprop(_two_layer(False)[0], x, 1)


def test_guided_backprop_keras_differs_from_saliency(mnist, x4):
    g = jaxsal.guided_backprop(mnist, x4, 3, reduce=None)
    s = jaxsal.saliency(mnist, x4, 3, reduce=None)
    assert g.shape == s.shape == (4, 28, 28, 1)
    assert np.all(np.isfinite(g)) and not np.allclose(g, s)


def test_a_leaky_relu_layer_keeps_its_gradient_under_the_relu_rules(tmp_path):
    """ReLU(negative_slope=0.1) is LeakyReLU(0.1): guided backprop and deconvnet gated its
    ReLU part and passed the leak plainly, so two equal models gave two maps. A leaky ReLU
    is not a ReLU for these rules (LeakyReLU, leaky_relu keep the plain gradient): the two
    layers now give the same maps, the plain gradient, and a relu layer still differs."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(1)
    maps, weights = {}, None
    for name, act in (("relu_slope", keras.layers.ReLU(negative_slope=0.1)),
                      ("leaky", keras.layers.LeakyReLU(negative_slope=0.1)),
                      ("relu", keras.layers.ReLU())):
        i = keras.Input((6, 6, 2))
        h = act(keras.layers.Conv2D(4, 3, name="conv")(i))
        km = keras.Model(i, keras.layers.Dense(3, name="out")(keras.layers.Flatten()(h)))
        if weights is not None:  # the same weights in every model
            km.set_weights(weights)
        weights = km.get_weights()
        km.save(tmp_path / f"{name}.keras")
        m = load_keras(tmp_path / f"{name}.keras")
        x = np.random.default_rng(0).normal(size=(2, 6, 6, 2)).astype(np.float32)
        maps[name] = [np.asarray(f(m, x, [0, 2], reduce=None)) for f in (
            jaxsal.guided_backprop, jaxsal.deconvnet, jaxsal.saliency)]
    for a, b in zip(maps["relu_slope"], maps["leaky"]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(maps["leaky"][0], maps["leaky"][2], rtol=1e-6, atol=1e-7)
    assert not np.allclose(maps["relu"][0], maps["relu"][2])


# ------------------------------------------------------------------ targets and heads
def test_predicted_targets_equal_explicit_argmax(mnist, x4):
    pred = np.asarray(mnist(x4)).argmax(-1)
    a = jaxsal.saliency(mnist, x4)
    b = jaxsal.saliency(mnist, x4, targets=pred[:, None])[:, 0]
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)


def test_score_function_targets(mnist, x4):
    lm = mnist.with_head("logits")
    a = jaxsal.saliency(lm, x4, targets=jaxsal.class_score(4))
    b = jaxsal.saliency(lm, x4, targets=4)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    c = jaxsal.saliency(lm, x4, targets=[jaxsal.class_score(4), jaxsal.class_score(2)])
    np.testing.assert_allclose(c, jaxsal.saliency(lm, x4, targets=[4, 2]), rtol=1e-6)


def test_neuron_score_at_intermediate_layer(mnist, x4):
    got = jaxsal.saliency(mnist, x4, targets=jaxsal.neuron("dense_1", (7,)), reduce=None)
    act = lambda x, n: mnist.apply(mnist.params, x, capture=[n])[1][n]  # noqa: E731
    want = jax.jit(jax.grad(lambda x: act(x, "dense_1")[:, 7].sum()))(jnp.asarray(x4))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    ch = jaxsal.saliency(mnist, x4, targets=jaxsal.neuron("conv2d_2", 5), reduce=None)
    want = jax.jit(jax.grad(lambda x: act(x, "conv2d_2")[..., 5].mean(axis=(1, 2)).sum()))(
        jnp.asarray(x4))
    np.testing.assert_allclose(ch, want, rtol=1e-5, atol=1e-8)


def test_two_d_targets_per_input(mnist, x4):
    lm = mnist.with_head("logits")
    t = np.array([[0, 1], [2, 3], [4, 5], [6, 7]])
    got = jaxsal.saliency(lm, x4, targets=t)
    assert got.shape == (4, 2, 28, 28)
    for n in range(4):
        for j in range(2):
            np.testing.assert_allclose(got[n, j], jaxsal.saliency(lm, x4[n:n + 1], int(t[n, j]))[0],
                                       rtol=1e-5, atol=1e-7)


def test_head_option_equals_with_head(mnist, x4):
    a = jaxsal.saliency(mnist, x4, 3, head="logits")
    b = jaxsal.saliency(mnist.with_head("logits"), x4, 3)
    np.testing.assert_array_equal(a, b)
    c = jaxsal.saliency(mnist, x4, 3, head="softmax")
    assert not np.allclose(a, c)


def test_binary_model_class_ids_and_heads():
    m = load_keras(FIX / "binary_cnn_keras3.keras")
    x = np.load(FIX / "binary_cnn_keras3.expected.npz")["x"][:3]
    xj = jnp.asarray(x)
    lm = m.with_head("logits")
    z = lambda x: lm.apply(lm.params, x)[:, 0].sum()  # noqa: E731
    p = lambda x: jax.nn.sigmoid(lm.apply(lm.params, x)[:, 0]).sum()  # noqa: E731
    gz, gp = jax.jit(jax.grad(z))(xj), jax.jit(jax.grad(p))(xj)
    kw = dict(reduce=None)
    # class 1: the unit (logit or probability); class 0: its complement
    # atol relative to the map's scale: jaxsal's CPU programs use XLA's own convolution
    # kernels (base.CPU_COMPILER_OPTIONS), jax.grad here YNNPACK's: sums differ in order
    az, ap = 1e-5 * np.abs(gz).max(), 1e-5 * np.abs(gp).max()
    np.testing.assert_allclose(jaxsal.saliency(lm, x, 1, **kw), gz, rtol=1e-5, atol=az)
    np.testing.assert_allclose(jaxsal.saliency(lm, x, 0, **kw), -gz, rtol=1e-5, atol=az)
    np.testing.assert_allclose(jaxsal.saliency(m, x, 1, **kw), gp, rtol=1e-5, atol=ap)
    np.testing.assert_allclose(jaxsal.saliency(m, x, 0, **kw), -gp, rtol=1e-5, atol=ap)
    comp = m.with_head("sigmoid_complement")
    np.testing.assert_allclose(jaxsal.saliency(comp, x, 0, **kw), -gp, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(jaxsal.saliency(m, x, 0, head="sigmoid_complement", **kw), -gp,
                               rtol=1e-5, atol=1e-9)
    both = jaxsal.saliency(m, x, [0, 1], **kw)
    np.testing.assert_allclose(both[:, 0], -both[:, 1], rtol=1e-6, atol=1e-9)
    # predicted class: p > 0.5
    pred = (np.asarray(m(x))[:, 0] > 0.5).astype(int)
    np.testing.assert_allclose(jaxsal.saliency(m, x, **kw),
                               jaxsal.saliency(m, x, pred[:, None], **kw)[:, 0], rtol=1e-6)
    with pytest.raises(ValueError, match="binary"):
        jaxsal.saliency(m, x, 2)
    with pytest.raises(ValueError, match="one-unit"):
        jaxsal.saliency(m, x, 0, head="softmax")


# ------------------------------------------------------------------ consistency properties
def x4_refs():
    """Two reference digits for GradientSHAP's baselines."""
    return np.load(FIX / "reference" / "saliency_linear.npz")["x"][4:6]


METHODS = {
    "saliency": lambda m, x, t, **kw: jaxsal.saliency(m, x, t, **kw),
    "gradient_x_input": lambda m, x, t, **kw: jaxsal.gradient_x_input(m, x, t, **kw),
    "guided_backprop": lambda m, x, t, **kw: jaxsal.guided_backprop(m, x, t, **kw),
    "deconvnet": lambda m, x, t, **kw: jaxsal.deconvnet(m, x, t, **kw),
    "smoothgrad": lambda m, x, t, **kw: jaxsal.smoothgrad(m, x, t, key=jax.random.key(1), n=3,
                                                          **kw),
    "integrated_gradients": lambda m, x, t, **kw: jaxsal.integrated_gradients(m, x, t, steps=4,
                                                                              **kw),
    "gradient_shap": lambda m, x, t, **kw: jaxsal.gradient_shap(m, x, t, key=2, n=3,
                                                                baselines=0.5 * x4_refs(), **kw),
    "deeplift": lambda m, x, t, **kw: jaxsal.deeplift(m, x, t, baseline=0.5 * x4_refs()[0],
                                                      **kw),
    "lrp": lambda m, x, t, **kw: jaxsal.lrp(m, x, t, epsilon=0.01, **kw),
    "deeplift_shap": lambda m, x, t, **kw: jaxsal.deeplift_shap(m, x, t, baselines=x4_refs(),
                                                                **kw),
    "blur_integrated_gradients": lambda m, x, t, **kw: jaxsal.blur_integrated_gradients(
        m, x, t, steps=4, **kw),
    "guided_integrated_gradients": lambda m, x, t, **kw: jaxsal.guided_integrated_gradients(
        m, x, t, steps=4, **kw),
    "gradcam": lambda m, x, t, **kw: jaxsal.gradcam(m, x, t, **kw),
    "gradcam_plus_plus": lambda m, x, t, **kw: jaxsal.gradcam_plus_plus(m, x, t, **kw),
    "layercam": lambda m, x, t, **kw: jaxsal.layercam(m, x, t, **kw),
    "hirescam": lambda m, x, t, **kw: jaxsal.hirescam(m, x, t, **kw),
    "xgradcam": lambda m, x, t, **kw: jaxsal.xgradcam(m, x, t, **kw),
    "scorecam": lambda m, x, t, **kw: jaxsal.scorecam(m, x, t, top_k=6, top_k_mode="per_sample",
                                                      **{k: v for k, v in kw.items()
                                                         if k != "chunk_size"}),
    "eigencam": lambda m, x, t, **kw: jaxsal.eigencam(m, x, t),
    "eigengradcam": lambda m, x, t, **kw: jaxsal.eigengradcam(m, x, t, **kw),
    "gradcam_elementwise": lambda m, x, t, **kw: jaxsal.gradcam_elementwise(m, x, t, **kw),
    "ablationcam": lambda m, x, t, **kw: jaxsal.ablationcam(m, x, t, **{
        k: v for k, v in kw.items() if k != "chunk_size"}),
    "guided_gradcam": lambda m, x, t, **kw: jaxsal.guided_gradcam(m, x, t, **kw),
    "fullgrad": lambda m, x, t, **kw: jaxsal.fullgrad(m, x, t, **kw),
    "occlusion": lambda m, x, t, **kw: jaxsal.occlusion(m, x, t, patch=7, **{
        k: v for k, v in kw.items() if k != "chunk_size"}),
    "rise": lambda m, x, t, **kw: jaxsal.rise(m, x, t, key=1, n=8, grid=4, **{
        k: v for k, v in kw.items() if k != "chunk_size"}),
    # 28x28 in 4 groups of 14x14: 15 coalitions per input (patch=7, 16 groups: 65535)
    "shapley_values": lambda m, x, t, **kw: jaxsal.shapley_values(m, x, t, patch=14, **{
        k: v for k, v in kw.items() if k != "chunk_size"}),
    "shapley_value_sampling": lambda m, x, t, **kw: jaxsal.shapley_value_sampling(
        m, x, t, key=1, n=3, patch=14, **{k: v for k, v in kw.items() if k != "chunk_size"}),
    "kernel_shap": lambda m, x, t, **kw: jaxsal.kernel_shap(
        m, x, t, key=1, n=8, patch=14, **{k: v for k, v in kw.items() if k != "chunk_size"}),
    "lime": lambda m, x, t, **kw: jaxsal.lime(
        m, x, t, key=1, n=8, patch=14, **{k: v for k, v in kw.items() if k != "chunk_size"}),
    "layer_conductance": lambda m, x, t, **kw: jaxsal.layer_conductance(
        m, x, t, layer="conv2d_2", baseline=0.5 * x4_refs()[0], steps=3, **kw),
    "internal_influence": lambda m, x, t, **kw: jaxsal.internal_influence(
        m, x, t, layer="conv2d_2", steps=3, **kw),
    "xrai": lambda m, x, t, **kw: jaxsal.xrai(m, x, t, segments=grid_regions(), steps=4,
                                              min_pixel_diff=5, **kw),
}


@pytest.fixture(scope="module")
def lm(mnist):
    return mnist.with_head("logits")


@pytest.mark.parametrize("name", sorted(METHODS))
def test_t_classes_equal_single_calls_and_vmap_equals_loop(name, lm, x4):
    f = METHODS[name]
    x = x4[:3]
    classes = [2, 0, 7]
    many = np.asarray(f(lm, x, classes))
    assert many.shape[:2] == (3, 3) and np.all(np.isfinite(many))
    for j, c in enumerate(classes):
        one = np.asarray(f(lm, x, c))
        scale = max(np.abs(one).max(), 1e-12)
        np.testing.assert_allclose(many[:, j], one, atol=2e-5 * scale, rtol=1e-4)
    if name in ("smoothgrad", "gradient_shap", "shapley_value_sampling", "rise",
                "kernel_shap", "lime"):
        return  # draws keyed by the input's index in the batch; covered by their own tests
    loop = np.stack([np.asarray(f(lm, x[i:i + 1], classes))[0] for i in range(3)])
    scale = max(np.abs(many).max(), 1e-12)
    # Ablation-CAM's weights are differences of scores, (S - S_k) / S: the float32 rounding
    # of the forward passes, which changes with their batch size, is not negligible there
    # (measured 5e-5 * scale between a batch of 3 and 1)
    tol = 2e-4 if name == "ablationcam" else 2e-5
    np.testing.assert_allclose(many, loop, atol=tol * scale, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_compiles_nothing_for_new_values_of_the_same_shapes(name, lm, x4, compiles):
    """A second call with other inputs and other target classes of the same shapes reuses
    the first call's programs: the values are arguments, not constants baked in (and no
    check of the inputs compiles a program of its own for their values)."""
    f = METHODS[name]
    # the shapes (3 inputs, 3 classes) of test_t_classes_equal_single_calls_and_vmap_equals_loop
    # and test_large_batches_split_under_memory_budget: one program for the three tests
    jax.block_until_ready(f(lm, x4[:3], [2, 0, 7]))
    n = compiles.n
    jax.block_until_ready(f(lm, x4[1:4], [5, 0, 9]))
    jax.block_until_ready(f(lm, np.asarray(x4[:3]) * 0.5, [9, 2, 1]))
    assert compiles.n == n, f"{name}: {compiles.n - n} programs compiled for new values"


@pytest.mark.parametrize("name", ["saliency", "gradcam", "integrated_gradients", "smoothgrad"])
def test_chunked_targets_equal_unchunked(name, lm, x4):
    f = METHODS[name]
    full = np.asarray(f(lm, x4[:2], list(range(10))))
    chunked = np.asarray(f(lm, x4[:2], list(range(10)), chunk_size=3))
    np.testing.assert_allclose(chunked, full, rtol=1e-5, atol=1e-6 * np.abs(full).max())


@pytest.mark.parametrize("name", ["saliency", "gradcam", "scorecam"])
def test_jit_equals_eager(name, lm, x4):
    f = METHODS[name]
    eager = f(lm, x4[:2], [1, 3])
    jitted = jax.jit(lambda x: f(lm, x, [1, 3]))(jnp.asarray(x4[:2]))
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6 * np.abs(eager).max())


def test_jax_vmap_over_inputs_equals_loop(lm, x4):
    x = jnp.asarray(x4[:3])
    vm = jax.vmap(lambda xi: jaxsal.saliency(lm, xi[None], [1, 4])[0])(x)
    loop = np.stack([np.asarray(jaxsal.saliency(lm, x4[i:i + 1], [1, 4])[0]) for i in range(3)])
    np.testing.assert_allclose(vm, loop, rtol=1e-5, atol=1e-7)


def test_smoothgrad_same_key_same_map(lm, x4):
    a = jaxsal.smoothgrad(lm, x4[:2], 3, key=jax.random.key(7), n=4)
    b = jaxsal.smoothgrad(lm, x4[:2], 3, key=jax.random.key(7), n=4)
    c = jaxsal.smoothgrad(lm, x4[:2], 3, key=jax.random.key(8), n=4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # batching the samples does not change the noise
    d = jaxsal.smoothgrad(lm, x4[:2], 3, key=jax.random.key(7), n=4, batch_samples=1)
    np.testing.assert_allclose(a, d, rtol=1e-5, atol=1e-7)


def test_key_forms_give_one_program_and_traced_seeds_work(lm, x4, compiles):
    """A legacy jax.random.PRNGKey compiled the method again after a jax.random.key call
    (raw uint32 data, another argument type) for the same maps; a seed traced by the caller's
    jax.jit or vmap failed converting it to an int. Same maps, nothing compiled again; a
    traced seed is jax.random.key(seed)."""
    a = jaxsal.smoothgrad(lm, x4[:2], 3, key=jax.random.key(7), n=4)
    n = compiles.n
    b = jaxsal.smoothgrad(lm, x4[:2], 3, key=jax.random.PRNGKey(7), n=4)
    assert compiles.n == n
    np.testing.assert_array_equal(a, b)
    jitted = jax.jit(lambda s: jaxsal.smoothgrad(lm, x4[:2], 3, key=s, n=4))(7)
    np.testing.assert_allclose(jitted, a, rtol=1e-5, atol=1e-7)
    per_seed = jax.vmap(lambda s: jaxsal.smoothgrad(lm, x4[:2], 3, key=s, n=4))(
        jnp.array([7, 8]))
    np.testing.assert_allclose(per_seed[0], a, rtol=1e-5, atol=1e-7)
    assert not np.allclose(per_seed[1], a)


def _smoothgrad_by_hand(lm, x, target, key, n, sigma):
    """max over channels of the mean |gradient| at x + sigma * eps, jaxsal's noise keys."""
    total = 0
    grad = jax.jit(jax.grad(lambda xx: lm.apply(lm.params, xx)[:, target].sum()))
    for k in range(n):
        kk = jax.random.fold_in(key, k)
        eps = np.stack([jax.random.normal(jax.random.fold_in(kk, i), x.shape[1:])
                        for i in range(len(x))])
        total = total + np.abs(np.asarray(grad(x + sigma * eps)))
    return (total / n).max(-1)


def test_smoothgrad_matches_its_definition(lm, x4):
    x = x4[:2]
    key = jax.random.key(3)
    n, level = 5, 0.2
    got = jaxsal.smoothgrad(lm, x, 6, key=key, n=n, noise_level=level)
    sigma = level * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))[:, None, None, None]
    np.testing.assert_allclose(got, _smoothgrad_by_hand(lm, x, 6, key, n, sigma),
                               rtol=1e-4, atol=1e-7)
    # noise_std: the standard deviation itself (Captum's stdevs), whatever the input range
    got = jaxsal.smoothgrad(lm, x * 3.0, 6, key=key, n=n, noise_std=0.05)
    np.testing.assert_allclose(got, _smoothgrad_by_hand(lm, x * 3.0, 6, key, n, 0.05),
                               rtol=1e-4, atol=1e-7)
    sq = jaxsal.smoothgrad(lm, x, 6, key=key, n=n, variant="sg_squared", reduce=None)
    vg = jaxsal.smoothgrad(lm, x, 6, key=key, n=n, variant="vargrad", reduce=None)
    assert sq.shape == vg.shape == (2, 28, 28, 1)
    assert np.all(np.asarray(vg) >= 0) and np.all(np.asarray(sq) >= np.asarray(vg) - 1e-6)


def test_vargrad_without_variance_is_refused():
    """The variance of one noisy map, of noiseless copies or of a constant input's copies
    (noise_level is relative to its max - min) is 0 at every pixel: VarGrad returned 0 maps
    for them. noise_std gives a constant input its noise."""
    m, _ = _linear()
    x = _x()
    for kw, match in ((dict(n=1), r"expected n >= 2, got n=1"),
                      (dict(noise_level=0.0), r"got noise_level=0, whose copies are x itself"),
                      (dict(noise_std=0.0), r"got noise_std=0")):
        with pytest.raises(ValueError, match=rf"variant='vargrad'.*{match}"):
            jaxsal.smoothgrad(m, x, 0, key=0, variant="vargrad", **dict(dict(n=4), **kw))
    flat = np.concatenate([x[:1], np.full_like(x[:1], 0.5)])
    with pytest.raises(ValueError, match="input 1 is constant, so its noise is 0"):
        jaxsal.smoothgrad(m, flat, 0, key=0, n=4, variant="vargrad")
    assert np.isfinite(np.asarray(jaxsal.smoothgrad(m, flat, 0, key=0, n=4, noise_std=0.1,
                                                    variant="vargrad"))).all()


def test_abs_first_is_refused_where_it_would_do_nothing():
    """abs_first averages absolute maps; VarGrad and SmoothGrad-squared square them, so
    abs_first=True changed nothing there: refused, saying why. Left out (its default) or
    False, they run."""
    m, _ = _linear()
    x = _x()
    for variant in ("vargrad", "sg_squared"):
        with pytest.raises(ValueError, match=rf"abs_first=True averages absolute maps, for "
                           rf"variant='smoothgrad'; variant='{variant}' squares the maps"):
            jaxsal.smoothgrad(m, x, 0, key=0, n=4, variant=variant, abs_first=True)
        a = jaxsal.smoothgrad(m, x, 0, key=0, n=4, variant=variant, reduce="max_abs")
        b = jaxsal.smoothgrad(m, x, 0, key=0, n=4, variant=variant, abs_first=False)
        np.testing.assert_array_equal(a, b)


def test_abs_first_default_covers_every_reduction_that_drops_the_sign():
    """By default SmoothGrad averages |g| where the channel reduction keeps only magnitudes
    (tf-keras-vis's gradient_modifier=abs, then its max over channels): "max_abs",
    "abs_sum" and "l2", whose norm of the mean signed map it took instead."""
    rng = np.random.default_rng(0)
    p = {"w": jnp.asarray(rng.normal(size=(40, 6)), jnp.float32),
         "v": jnp.asarray(rng.normal(size=(6, 2)), jnp.float32)}
    m = jaxsal.FunctionModel(lambda p, x: jnp.tanh(x.reshape(len(x), -1) @ p["w"]) @ p["v"], p)
    x = _x(n=2)
    kw = dict(key=0, n=4, noise_std=1.0, reduce="l2")
    got = np.asarray(jaxsal.smoothgrad(m, x, 0, **kw))
    np.testing.assert_array_equal(got, jaxsal.smoothgrad(m, x, 0, abs_first=True, **kw))
    signed = np.asarray(jaxsal.smoothgrad(m, x, 0, abs_first=False, **kw))
    assert np.all(got >= signed - 1e-6) and not np.allclose(got, signed, rtol=1e-3)


def test_vargrad_keeps_the_digits_of_small_variances():
    """VarGrad as E[g^2] - E[g]^2 in float32 gave rounding noise where the variance is small
    next to the squared mean: a linear model (constant gradient, variance 0) got nonzero maps
    that normalize made look like attributions; g = 30 + 0.05 x under noise of std 0.2
    (variance 1e-4) got multiples of one ulp of 900. The moments are now taken about the
    map at the clean input."""
    m, _ = _linear()
    x = _x()
    vg = np.asarray(jaxsal.smoothgrad(m, x, [0, 2], key=0, n=25, variant="vargrad",
                                      reduce=None))
    np.testing.assert_array_equal(vg, 0.0)
    quad = jaxsal.FunctionModel(lambda p, v: (30.0 * v + 0.025 * v * v).sum(-1)[:, None], 0.0)
    xq = np.linspace(-1, 1, 6, dtype=np.float32)[None]
    got = np.asarray(jaxsal.smoothgrad(quad, xq, 0, key=1, n=1024, noise_std=0.2,
                                       variant="vargrad", reduce=None))
    np.testing.assert_allclose(got, 1e-4, rtol=0.15)  # sampling error of 1024 draws: ~5%


def test_smoothgrad_over_other_methods(lm, x4):
    for method in ["gradient_x_input", jaxsal.guided_backprop, "integrated_gradients"]:
        out = jaxsal.smoothgrad(lm, x4[:2], [1, 2], key=jax.random.key(0), n=2, method=method,
                                method_options={"steps": 3} if method == "integrated_gradients"
                                else None)
        assert out.shape == (2, 2, 28, 28) and np.all(np.isfinite(out))


def test_programs_are_keyed_by_the_input_signature():
    """One plain function taking (N, D) features and then (N, H, W, C) images: the second
    call gets a program of its own (it was served the first one's channel axes and kept the
    channels: (2, 2, 3, 2) instead of (2, 2, 3))."""
    def f(p, x):
        flat = x.reshape(x.shape[0], -1)
        return jnp.stack([jnp.sum(flat * p, axis=1), -jnp.sum(flat, axis=1)], 1)

    fm = jaxsal.FunctionModel(f, 2.0)
    assert jaxsal.saliency(fm, np.ones((2, 6), np.float32), 0).shape == (2, 6)
    assert jaxsal.saliency(fm, np.ones((2, 2, 3, 2), np.float32), 0).shape == (2, 2, 3)
    cams = jaxsal.FunctionModel(features=lambda p, x: x * p,
                                head_fn=lambda p, a: a.mean((1, 2)), params=2.0)
    for size in (4, 6):
        x = np.random.default_rng(size).normal(size=(2, size, size, 2)).astype(np.float32)
        assert jaxsal.gradcam(cams, x, 1).shape == (2, size, size)


def _flat_linear(p, x):
    return x.reshape(x.shape[0], -1) @ p["w"]


def test_one_function_with_params_of_other_shapes():
    """One plain function, params of 1 and then 2 output units: the second model's output
    shape is its own (its class 0 was once explained as the first one's binary complement:
    the cached output shape was keyed by the function alone)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 4, 1)).astype(np.float32)
    w1 = rng.normal(size=(16, 1)).astype(np.float32)
    w2 = rng.normal(size=(16, 2)).astype(np.float32)
    g1 = jaxsal.gradient_x_input(jaxsal.FunctionModel(_flat_linear, {"w": w1}), x, 0,
                                 reduce=None)
    np.testing.assert_allclose(g1, -x * w1[:, 0].reshape(4, 4, 1), rtol=1e-5, atol=1e-6)
    g2 = jaxsal.gradient_x_input(jaxsal.FunctionModel(_flat_linear, {"w": w2}), x, 0,
                                 reduce=None)
    np.testing.assert_allclose(g2, x * w2[:, 0].reshape(4, 4, 1), rtol=1e-5, atol=1e-6)
    w10 = rng.normal(size=(16, 10)).astype(np.float32)  # class 7 exists here
    assert jaxsal.saliency(jaxsal.FunctionModel(_flat_linear, {"w": w10}), x, 7).shape == (
        2, 4, 4)


def test_a_model_without_cache_key_is_held_by_its_cache_entries():
    """A model known only by identity (``apply`` and ``params``, no ``cache_key``) is kept
    alive by its cached entries, so a new model cannot reuse its address and be served its
    shapes and programs."""
    import gc
    import weakref

    from jaxsal._src import base

    class Plain:
        def __init__(self, w):
            self.params = {"w": w}

        def apply(self, params, x, capture=(), perturb=None):
            return _flat_linear(params, x)

    m = Plain(np.ones((16, 2), np.float32))
    ref = weakref.ref(m)
    base.model_shapes(m, jnp.ones((1, 4, 4, 1)))  # a cached entry and no program (as after
    key = base.model_key(m)                       # a call refused by validation)
    del m
    gc.collect()
    assert ref() is not None  # held by the cache until evicted
    assert key == base.model_key(ref()) and key != base.model_key(Plain(None))
    base.clear_caches()
    gc.collect()


def test_no_recompile_on_second_call(lm, x4, compiles):
    calls = [lambda: jaxsal.saliency(lm, x4, [1, 2]),
             lambda: jaxsal.gradcam(lm, x4, 5),
             lambda: jaxsal.smoothgrad(lm, x4, 3, key=jax.random.key(0), n=2),
             lambda: jaxsal.scorecam(lm, x4, [0, 1], top_k=4)]
    for c in calls:
        jax.block_until_ready(c())
    first = compiles.n
    assert first > 0
    for c in calls:
        jax.block_until_ready(c())
    # new class ids and a new model object with the same structure reuse the programs
    jax.block_until_ready(jaxsal.saliency(lm, x4, [7, 9]))
    jax.block_until_ready(jaxsal.saliency(lm.with_head("logits"), x4, [3, 4]))
    assert compiles.n == first


SCALE = 1.0  # a module-level variable a model function reads, as in a notebook


def test_a_reassigned_variable_a_function_reads_is_not_baked_in(lm, x4, compiles):
    """A model function reading a module-level variable, a score function reading a closure
    variable: reassigned, they are traced again (the programs kept the old values: maps of
    the old model, the old class); called again with the same values, they compile
    nothing."""
    global SCALE
    fm = jaxsal.FunctionModel(lambda p, img: lm.apply(p, img * SCALE), lm.params)
    SCALE = 1.0
    first = jaxsal.saliency(fm, x4, 3, reduce=None)
    SCALE = 0.5
    half = jaxsal.saliency(fm, x4, 3, reduce=None)
    np.testing.assert_allclose(half, 0.5 * jaxsal.saliency(lm, 0.5 * x4, 3, reduce=None),
                               rtol=1e-5, atol=1e-7)
    assert not np.allclose(half, first)
    k = 3
    score = lambda out: out[:, k]  # noqa: E731
    np.testing.assert_allclose(jaxsal.saliency(lm, x4, score), jaxsal.saliency(lm, x4, 3),
                               rtol=1e-6)
    k = 7
    np.testing.assert_allclose(jaxsal.saliency(lm, x4, score), jaxsal.saliency(lm, x4, 7),
                               rtol=1e-6)
    n = compiles.n
    jax.block_until_ready(jaxsal.saliency(lm, x4, score))
    jax.block_until_ready(jaxsal.saliency(fm, x4, 3, reduce=None))
    assert compiles.n == n


class _Scaled:
    """A model object whose ``apply`` reads an attribute; also a score object."""

    def __init__(self, lm, scale, k):
        self.lm, self.scale, self.k = lm, scale, k

    def apply(self, p, img):
        return self.lm.apply(p, img * self.scale)

    def __call__(self, out):
        return out[:, self.k]

    def score(self, out):
        return out[:, self.k]

    def _scaled(self, out):
        return out * self.cfg.factor

    def scaled(self, out):  # reads self.cfg.factor through a helper method
        return self._scaled(out)[:, 0]


def test_a_reassigned_attribute_of_a_bound_object_is_not_baked_in(lm, x4, compiles):
    """``net.apply`` and a score object or method read their object's attributes: one
    reassigned (``net.scale = 0.5``, ``score.k = 7``), they are traced again, as a
    reassigned variable is; with the same values they compile nothing."""
    net = _Scaled(lm, 1.0, 3)
    first = jaxsal.saliency(jaxsal.FunctionModel(net.apply, lm.params), x4, 3, reduce=None)
    net.scale = 0.5
    half = jaxsal.saliency(jaxsal.FunctionModel(net.apply, lm.params), x4, 3, reduce=None)
    np.testing.assert_allclose(half, 0.5 * jaxsal.saliency(lm, 0.5 * x4, 3, reduce=None),
                               rtol=1e-5, atol=1e-7)
    assert not np.allclose(half, first)
    for score in (net, net.score):
        net.k = 3
        np.testing.assert_allclose(jaxsal.saliency(lm, x4, score), jaxsal.saliency(lm, x4, 3),
                                   rtol=1e-6)
        net.k = 7
        np.testing.assert_allclose(jaxsal.saliency(lm, x4, score), jaxsal.saliency(lm, x4, 7),
                                   rtol=1e-6)
    n = compiles.n
    jax.block_until_ready(jaxsal.saliency(lm, x4, net))
    jax.block_until_ready(jaxsal.saliency(jaxsal.FunctionModel(net.apply, lm.params), x4, 3,
                                          reduce=None))
    net.calls = 12  # an attribute no code of the call reads: nothing compiled again
    jax.block_until_ready(jaxsal.saliency(lm, x4, net))
    assert compiles.n == n
    # read through a helper method, from an object in the object: traced again when the
    # object or its attribute is reassigned
    net.cfg = types.SimpleNamespace(factor=1.0)
    one = np.asarray(jaxsal.saliency(lm, x4, net.scaled, reduce=None))
    net.cfg.factor = 2.0
    np.testing.assert_allclose(jaxsal.saliency(lm, x4, net.scaled, reduce=None), 2 * one,
                               rtol=1e-5, atol=1e-7)
    net.cfg = types.SimpleNamespace(factor=3.0)
    np.testing.assert_allclose(jaxsal.saliency(lm, x4, net.scaled, reduce=None), 3 * one,
                               rtol=1e-5, atol=1e-7)


def test_another_load_of_the_same_file_reuses_the_programs(x4, compiles):
    """Two loads of one file compute one function: the second reuses the first's compiled
    programs (``Graph.fingerprint``), and its own weights, not the first's, are used."""
    from jaxsal._src import base
    from model_import import load_keras

    path = FIX / "mnist_cnn_tfkeras2.h5"
    first = load_keras(path, head="logits")
    a = np.asarray(jaxsal.saliency(first, x4, [1, 2]))
    second = load_keras(path).with_head("logits")
    scaled = second.with_params(jax.tree_util.tree_map(lambda w: np.asarray(w) * 0.5,
                                                       second.params))
    n = compiles.n
    assert second.graph is not first.graph
    np.testing.assert_array_equal(np.asarray(jaxsal.saliency(second, x4, [1, 2])), a)
    b = np.asarray(jaxsal.saliency(scaled, x4, [1, 2]))
    assert compiles.n == n
    assert np.abs(b - a).max() > 0.1 * np.abs(a).max()  # the other weights are used
    other = load_keras(FIX / "mnist_cnn_keras3.keras", head="logits")  # another architecture
    assert base.model_key(other) != base.model_key(first)


def test_precision_options(lm, x4):
    a = np.asarray(jaxsal.gradcam(lm, x4, [1, 2]))
    hi = np.asarray(jaxsal.gradcam(lm, x4, [1, 2], precision="highest"))
    np.testing.assert_allclose(hi, a, rtol=1e-4, atol=1e-6 * np.abs(a).max())
    for f in (jaxsal.saliency, jaxsal.gradcam):
        ref = np.asarray(f(lm, x4, [1, 2]))
        bf = f(lm, x4, [1, 2], precision="bfloat16")
        assert bf.dtype == np.float32
        assert np.corrcoef(ref.ravel(), np.asarray(bf).ravel())[0, 1] >= 0.99
    with pytest.raises(ValueError, match="precision"):
        jaxsal.saliency(lm, x4, 1, precision="fp8")


PUBLIC_METHODS = ["saliency", "gradient_x_input", "guided_backprop", "deconvnet", "smoothgrad",
                  "integrated_gradients", "gradcam", "gradcam_plus_plus", "layercam", "hirescam",
                  "xgradcam", "scorecam", "eigencam", "guided_gradcam", "occlusion",
                  "eigengradcam", "gradcam_elementwise", "ablationcam",
                  "blur_integrated_gradients", "guided_integrated_gradients", "gradient_shap",
                  "shapley_values", "shapley_value_sampling", "fullgrad", "rise",
                  "deeplift", "deeplift_shap", "lrp", "kernel_shap", "lime",
                  "layer_conductance", "internal_influence", "feature_permutation",
                  "neuron_conductance", "xrai"]


@pytest.mark.parametrize("name", PUBLIC_METHODS)
def test_public_method_documented(name):
    import inspect
    import re

    f = getattr(jaxsal, name)
    doc = inspect.getdoc(f) or ""
    assert re.search(r"\b(19|20)\d\d\b", doc), f"{name}: docstring names no paper (year)"
    assert "(N," in doc or "(N, " in doc or "as in" in doc, f"{name}: no shapes documented"
    params = list(inspect.signature(f).parameters)
    assert params[:3] == ["model", "x", "targets"], params
    assert name in open(pathlib.Path(__file__).parents[1] / "README.md").read()


@pytest.mark.parametrize("name", sorted(METHODS))
def test_large_batches_split_under_memory_budget(name, lm, x4):
    """A tiny memory budget runs one input (and one target) at a time: same maps."""
    f = METHODS[name]
    x = x4[:3]
    # the classes of test_t_classes_equal_single_calls_and_vmap_equals_loop: its program
    full = np.asarray(f(lm, x, [2, 0, 7]))
    split = np.asarray(f(lm, x, [2, 0, 7], memory_budget=1))
    scale = max(np.abs(full).max(), 1e-12)
    np.testing.assert_allclose(split, full, atol=2e-5 * scale, rtol=1e-4)


@pytest.mark.parametrize("fn", [jaxsal.guided_backprop, jaxsal.deconvnet])
def test_modified_backprop_at_a_layer(mnist, x4, fn):
    """``layer=``: the modified gradient with respect to a layer's output. At ``dense_1``
    (ReLU fused, then dropout and the linear logits) it is the logits' weight column: the
    layer's own ReLU is before the layer's output and no ReLU follows. At ``conv2d_1`` the
    rule applies to the ReLUs after it: the saliency of the model whose ReLUs are the
    modified ones, and not the plain saliency there."""
    lm = mnist.with_head("logits")
    got = fn(lm, x4, targets=[3, 5], layer="dense_1", reduce=None)
    w2 = np.asarray(lm.params["dense_2"]["kernel"])
    np.testing.assert_allclose(got, np.broadcast_to(w2[:, [3, 5]].T, (4, 2, w2.shape[0])),
                               rtol=1e-6, atol=1e-7)
    relu = jaxsal.guided_relu if fn is jaxsal.guided_backprop else jaxsal.deconvnet_relu
    got = fn(lm, x4, targets=[3, 5], layer="conv2d_1", reduce=None)
    by_hand = jaxsal.saliency(lm.with_relu(relu), x4, targets=[3, 5], layer="conv2d_1",
                              reduce=None)
    plain = jaxsal.saliency(lm, x4, targets=[3, 5], layer="conv2d_1", reduce=None)
    assert got.shape == (4, 2, 26, 26, 32)
    np.testing.assert_allclose(got, by_hand, rtol=1e-5, atol=1e-7)
    assert not np.allclose(got, plain, atol=1e-4)
