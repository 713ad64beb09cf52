"""Models with several inputs: the input-gradient methods give one map per input (in the
caller's list, tuple or dict), the gradient CAMs and Eigen-CAM upsample to the input with the
layer's spatial axes, everything else refuses clearly. Also (N, D) feature inputs: kept per
feature by the channel reductions, ablated feature by feature by occlusion."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal

WA = np.array([[1.0, -2.0], [0.5, 3.0], [-1.5, 0.25]], np.float32)  # (3 features, 2 classes)
WB = np.array([[2.0, 1.0], [-0.5, 4.0]], np.float32)  # (2 features, 2 classes)


def _linear(p, x):
    return x["a"] @ p["wa"] + x["b"] @ p["wb"]


@pytest.fixture(scope="module")
def linear():
    return jaxsal.FunctionModel(_linear, {"wa": jnp.asarray(WA), "wb": jnp.asarray(WB)})


@pytest.fixture(scope="module")
def xl():
    rng = np.random.default_rng(0)
    return {"a": rng.normal(size=(4, 3)).astype(np.float32),
            "b": rng.normal(size=(4, 2)).astype(np.float32)}


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """A Keras 3 model of an image and a feature vector (saved and re-imported)."""
    import keras

    from model_import import load_keras

    keras.utils.set_random_seed(1)
    img = keras.Input((8, 8, 3), name="img")
    vec = keras.Input((5,), name="vec")
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(img)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    v = keras.layers.Dense(4, activation="tanh", name="dv")(vec)
    z = keras.layers.Concatenate(name="cat")([h, v])
    out = keras.layers.Dense(3, activation="softmax", name="out")(z)
    model = keras.Model([img, vec], out)
    path = tmp_path_factory.mktemp("multi_input") / "two.keras"
    model.save(path)
    rng = np.random.default_rng(2)
    x = [rng.normal(size=(3, 8, 8, 3)).astype(np.float32),
         rng.normal(size=(3, 5)).astype(np.float32)]
    expected = np.asarray(model.predict(x, verbose=0))
    m = load_keras(path)
    np.testing.assert_allclose(np.asarray(m(x)), expected, rtol=1e-5, atol=1e-6)
    return m.with_head("logits"), x


def _grads(m, x, cls):
    """Per-input gradients of the logit ``cls`` by ``jax.grad`` (the reference), in one jitted
    program per model (the class an argument): eagerly, each of the model's operations was
    compiled on its own (70 small programs)."""
    if id(m) not in _GRADS:
        def f(p, a, b, c):
            return jnp.take(m.apply(p, [a, b]), c, axis=1).sum()

        _GRADS[id(m)] = m, jax.jit(jax.grad(f, argnums=(1, 2)))  # (m kept: its id stays its)
    return [np.asarray(g) for g in _GRADS[id(m)][1](m.params, *x, cls)]


_GRADS: dict = {}


def test_linear_gradients_are_the_weights(linear, xl):
    g = jaxsal.saliency(linear, xl, [0, 1], reduce=None)
    assert set(g) == {"a", "b"}
    assert g["a"].shape == (4, 2, 3) and g["b"].shape == (4, 2, 2)
    for t in range(2):
        np.testing.assert_allclose(g["a"][:, t], np.broadcast_to(WA[:, t], (4, 3)))
        np.testing.assert_allclose(g["b"][:, t], np.broadcast_to(WB[:, t], (4, 2)))
    # gradient x input over every input sums to the score of a linear model (no bias)
    gi = jaxsal.gradient_x_input(linear, xl, 1)
    score = np.asarray(_linear({"wa": WA, "wb": WB}, xl))[:, 1]
    np.testing.assert_allclose(gi["a"].sum(-1) + gi["b"].sum(-1), score, rtol=1e-5, atol=1e-6)


def test_features_are_never_reduced(linear, xl):
    # (N, D) inputs have no channel axis: every reduction keeps one value per feature
    for reduce in ("max_abs", "sum", None):
        g = jaxsal.saliency(linear, xl, 0, reduce=reduce)
        assert g["a"].shape == (4, 3) and g["b"].shape == (4, 2)
    one = jaxsal.FunctionModel(lambda p, x: x @ p, jnp.asarray(WA))
    np.testing.assert_allclose(jaxsal.saliency(one, xl["a"], 1),
                               np.broadcast_to(np.abs(WA[:, 1]), (4, 3)))


def test_feature_ablation_of_a_linear_model(xl):
    """Occlusion of (N, D) features, one at a time by default: for a linear model the drop
    is x_d * w_d (fill 0) or (x_d - fill_d) * w_d."""
    one = jaxsal.FunctionModel(lambda p, x: x @ p, jnp.asarray(WA))
    x = xl["a"]
    got = jaxsal.occlusion(one, x, [0, 1])
    np.testing.assert_allclose(got, x[:, None, :] * WA.T[None], rtol=1e-5, atol=1e-6)
    mean = np.array([0.5, -1.0, 2.0], np.float32)
    got = jaxsal.occlusion(one, x, 1, fill=mean)
    np.testing.assert_allclose(got, (x - mean) * WA[:, 1], rtol=1e-5, atol=1e-6)
    # one patch over every feature: each feature's map is the whole drop
    whole = jaxsal.occlusion(one, x, 1, patch=3)
    np.testing.assert_allclose(whole, np.repeat((x @ WA[:, 1])[:, None], 3, 1),
                               rtol=1e-5, atol=1e-6)



def test_feature_ablation_of_several_feature_inputs(linear, xl):
    """Occlusion of a model of several (N, D) feature inputs, in a dict, a list or a tuple:
    each feature's drop x_d * w_d. A dict (NumPy reads it as a scalar) and a list of inputs
    of one shape (as one array of one more axis) asked for spatial inputs."""
    wa, wb = np.asarray(WA), np.asarray(WB)
    want = {"a": xl["a"][:, None, :] * wa.T[None], "b": xl["b"][:, None, :] * wb.T[None]}
    got = jaxsal.occlusion(linear, xl, [0, 1])
    for k in "ab":
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)
    same = {"a": xl["a"][:, :2], "b": xl["b"]}  # two inputs of one shape (4, 2)
    two_by_two = jaxsal.FunctionModel(_linear, {"wa": jnp.asarray(WA[:2]),
                                                "wb": jnp.asarray(WB)})
    listed = jaxsal.FunctionModel(lambda p, x: _linear(p, dict(zip("ab", x))),
                                  two_by_two.params)
    for x in ([same["a"], same["b"]], (same["a"], same["b"])):
        got = jaxsal.occlusion(listed, x, 1)
        assert type(got) is type(x)
        np.testing.assert_allclose(got[0], same["a"] * wa[:2, 1], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[1], same["b"] * wb[:, 1], rtol=1e-5, atol=1e-6)

def test_keras_model_matches_jax_grad(two):
    m, x = two
    g = jaxsal.saliency(m, x, [0, 2], reduce=None)
    assert isinstance(g, list) and len(g) == 2
    for t, cls in enumerate([0, 2]):
        ref = _grads(m, x, cls)
        np.testing.assert_allclose(g[0][:, t], ref[0], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(g[1][:, t], ref[1], rtol=1e-5, atol=1e-7)
    # default reduction: the image's channels collapse, the feature vector stays whole
    d = jaxsal.saliency(m, tuple(x), 2)
    assert isinstance(d, tuple)
    ref = _grads(m, x, 2)
    np.testing.assert_allclose(d[0], np.abs(ref[0]).max(-1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(d[1], np.abs(ref[1]), rtol=1e-5, atol=1e-7)
    # a dict keyed by the input names gives a dict
    k = jaxsal.gradient_x_input(m, {"vec": x[1], "img": x[0]}, 2, reduce=None)
    np.testing.assert_allclose(k["img"], ref[0] * x[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(k["vec"], ref[1] * x[1], rtol=1e-5, atol=1e-7)


def test_rows_classes_and_sub_batches_agree(two):
    m, x = two
    full = jaxsal.guided_backprop(m, x, [0, 1, 2])
    split = jaxsal.guided_backprop(m, x, [0, 1, 2], memory_budget=1000, chunk_size=1)
    for a, b in zip(full, split):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    for i in range(3):  # one input at a time == its row of the batched call
        row = jaxsal.guided_backprop(m, [a[i:i + 1] for a in x], [0, 1, 2])
        for a, b in zip(full, row):
            np.testing.assert_allclose(a[i:i + 1], b, rtol=1e-5, atol=1e-7)
    for t in range(3):  # one class at a time == its column
        col = jaxsal.guided_backprop(m, x, t)
        for a, b in zip(full, col):
            np.testing.assert_allclose(a[:, t], b, rtol=1e-5, atol=1e-7)


def test_integrated_gradients_completeness_over_all_inputs(two):
    m, x = two
    y = np.asarray(m.apply(m.params, x))
    for baseline, starts in [(None, [np.zeros_like(a) for a in x]),
                             (0.5, [np.full_like(a, 0.5) for a in x]),
                             ({"img": 0.1, "vec": np.ones(5, np.float32)},
                              [np.full_like(x[0], 0.1), np.ones_like(x[1])])]:
        xx = x if not isinstance(baseline, dict) else {"img": x[0], "vec": x[1]}
        ig = jaxsal.integrated_gradients(m, xx, [0, 2], baseline=baseline, steps=256)
        maps = list(ig.values()) if isinstance(ig, dict) else ig
        total = maps[0].sum((-2, -1)) + maps[1].sum(-1)
        y0 = np.asarray(m.apply(m.params, starts))
        gap = (y - y0)[:, [0, 2]]
        np.testing.assert_allclose(total, gap, atol=0.01 * np.abs(gap).max())
    with pytest.raises(ValueError, match="baseline: expected one value per input, a list of 2"):
        jaxsal.integrated_gradients(m, x, 0, baseline=[0.0])


def test_a_baseline_per_input_by_position_in_a_list_for_inputs_in_a_tuple(two):
    """Baselines by position are a list for inputs in a list or a tuple (the container
    explain_to_file passes an option per input in): the same maps. A tuple of baselines is
    one value for every input (test_a_tuple_is_one_value_for_every_input_in_every_method)."""
    m, x = two
    vec = np.linspace(-1, 1, 5, dtype=np.float32)
    want = jaxsal.integrated_gradients(m, x, 1, baseline=[0.5, vec], steps=4)
    got = jaxsal.integrated_gradients(m, tuple(x), 1, baseline=[0.5, vec], steps=4)
    assert type(got) is tuple
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)
    dist = [np.zeros((2, 8, 8, 3), np.float32), np.stack([vec, -vec])]
    want = jaxsal.gradient_shap(m, x, 1, key=0, baselines=dist, n=2)
    for g, w in zip(jaxsal.gradient_shap(m, tuple(x), 1, key=0, baselines=dist, n=2), want):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)


def _linear_any(p, x, relu=None):
    a, b = (x["a"], x["b"]) if isinstance(x, dict) else x
    return a @ p["wa"] + b @ p["wb"]


def test_a_baseline_per_input_may_be_python_lists_or_none(xl):
    """An input's baseline given as Python lists (one example's values; rows of a
    distribution) or ``None`` inside the per-input list or dict was refused: the structure
    check read the lists as more tree nodes and said "expected ... a list of 2 ... got list"
    of a list of 2 (of a dict too). Each entry is now the input's own value, as
    ``np.asarray`` of it; ``None`` is zeros (as ``baseline=None`` is for every input). For a
    linear score each method's map is ``(x - b) * w`` exactly. (One method per check:
    ``check_baseline`` serves IG, DeepLIFT, the conductance methods and SmoothGrad's IG,
    ``check_baselines`` GradientSHAP and DeepLIFT-SHAP.)"""
    lin = jaxsal.FunctionModel(_linear_any, {"wa": jnp.asarray(WA), "wb": jnp.asarray(WB)},
                               relu_kwarg="relu")
    bb = [0.25, -0.5]  # b's baseline, a Python list
    want = [xl["a"] * WA[:, 1], (xl["b"] - np.asarray(bb)) * WB[:, 1]]
    xs = [xl["a"], xl["b"]]
    for got in (jaxsal.integrated_gradients(lin, xs, 1, baseline=[None, bb], steps=2),
                jaxsal.deeplift(lin, xl, 1, baseline={"a": None, "b": bb}),
                jaxsal.gradient_shap(lin, xl, 1, key=0, n=2,
                                     baselines={"a": [[0.0] * 3] * 2, "b": [bb, bb]})):
        got = [got["a"], got["b"]] if isinstance(got, dict) else got
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


def test_a_tuple_is_one_value_for_every_input_in_every_method(xl):
    """A tuple option meant one value per input by position in the baseline methods (IG,
    DeepLIFT, the conductance methods, GradientSHAP) but one value for every input in
    ``occlusion`` (and the README): the same ``(0.0, 1.0)`` gave different references
    without a word (and refused it for a dict of inputs). A tuple is now one value for
    every input everywhere (one per feature or channel here; a list or a dict is one per
    input). Linear score ``S = a.wa + b.wb``: the maps are ``(x - r) * w`` with
    ``r = (0, 1)`` for both inputs."""
    lin = jaxsal.FunctionModel(_linear_any, {"wa": jnp.asarray(WB), "wb": jnp.asarray(WB)},
                               relu_kwarg="relu")
    a, b = xl["b"], xl["b"] * 0.5 + 1.0  # two (N, 2) inputs
    ref = np.array([0.0, 1.0], np.float32)
    want = [(a - ref) * WB[:, 0], (b - ref) * WB[:, 0]]
    bl = (0.0, 1.0)
    for got in (jaxsal.deeplift(lin, [a, b], 0, baseline=bl),
                jaxsal.integrated_gradients(lin, {"a": a, "b": b}, 0, baseline=bl, steps=2),
                jaxsal.gradient_shap(lin, [a, b], 0, key=0, n=2, baselines=bl),
                jaxsal.occlusion(lin, [a, b], 0, fill=bl)):
        got = [got["a"], got["b"]] if isinstance(got, dict) else got
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    # a tuple meant one per input: refused by the input it does not fit, saying so
    lin3 = jaxsal.FunctionModel(_linear_any, {"wa": jnp.asarray(WA), "wb": jnp.asarray(WB)})
    for f, kw in ((jaxsal.integrated_gradients, {"baseline": (0.5, b[0])}),
                  (jaxsal.gradient_shap, {"baselines": (0.5, b[0]), "key": 0})):
        with pytest.raises((TypeError, ValueError), match=r"A tuple baselines? is one value for "
                           r"every input .*pass a list of 2 in the inputs' order"):
            f(lin3, [xl["a"], b], 0, **kw)


def test_a_baseline_per_input_mixed_with_a_number_is_split_with_the_inputs(two):
    """A structure of baselines, one with a row per input and one number: sub-batches take
    the rows of the first and share the second (it used to be passed whole, and failed)."""
    m, x = two
    b = [np.random.default_rng(4).normal(size=x[0].shape).astype(np.float32), 0.5]
    for f, kw in ((jaxsal.integrated_gradients, {"steps": 4}), (jaxsal.deeplift, {})):
        whole = f(m, x, [0, 2], baseline=b, **kw)
        split = f(m, x, [0, 2], baseline=b, memory_budget=1, **kw)
        for a, c in zip(split, whole):
            np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6 * np.abs(c).max())


def test_deeplift_summation_to_delta_over_all_inputs(two):
    """DeepLIFT's maps of every input add up to S(x) - S(x') exactly (ReLU and tanh, one
    per input branch), per-input references in x's structure, and DeepLIFT-SHAP's to
    S(x) - mean S(b) over a distribution given per input."""
    m, x = two
    y = np.asarray(m.apply(m.params, x))
    refs = [np.full_like(x[0], 0.3), np.linspace(-1, 1, 5, dtype=np.float32)]
    dl = jaxsal.deeplift(m, {"img": x[0], "vec": x[1]}, [0, 2],
                         baseline={"img": 0.3, "vec": refs[1]})
    total = dl["img"].sum((-2, -1)) + dl["vec"].sum(-1)
    gap = (y - np.asarray(m.apply(m.params, [r * np.ones_like(a) for r, a in zip(refs, x)])))
    np.testing.assert_allclose(total, gap[:, [0, 2]], atol=1e-5 * np.abs(gap).max())
    rng = np.random.default_rng(3)
    dist = [rng.normal(size=(4, 8, 8, 3)).astype(np.float32),
            rng.normal(size=(4, 5)).astype(np.float32)]
    shap = jaxsal.deeplift_shap(m, x, 1, baselines=dist)
    total = shap[0].sum((-2, -1)) + shap[1].sum(-1)
    gap = y[:, 1] - np.asarray(m.apply(m.params, dist))[:, 1].mean()
    np.testing.assert_allclose(total, gap, atol=1e-5 * np.abs(gap).max())


def test_smoothgrad_noise_per_input_and_reproducible(linear):
    # d(a.b)/da = b: with identical inputs, the same noise on both would give equal maps
    prod = jaxsal.FunctionModel(lambda p, x: (x[0] * x[1]).sum(-1, keepdims=True) * p, 1.0)
    a = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    x = [a, a.copy()]
    opts = dict(targets=lambda y: y[:, 0], key=3, n=4, reduce=None, abs_first=False)
    sg = jaxsal.smoothgrad(prod, x, **opts)
    assert not np.allclose(sg[0], sg[1])
    again = jaxsal.smoothgrad(prod, x, **opts)
    for u, v in zip(sg, again):
        np.testing.assert_array_equal(u, v)
    tail = jaxsal.smoothgrad(prod, [v[1:] for v in x], index_offset=1, **opts)
    for u, v in zip(sg, tail):
        np.testing.assert_allclose(u[1:], v, rtol=1e-6)
    ig = jaxsal.smoothgrad(prod, x, method="integrated_gradients", variant="vargrad",
                           method_options={"steps": 4}, **{k: v for k, v in opts.items()
                                                          if k != "abs_first"})
    assert ig[0].shape == (2, 4) and ig[1].shape == (2, 4)


def test_gradient_cams_upsample_to_the_image(two):
    m, x = two
    other = jnp.asarray(x[1])
    single = jaxsal.FunctionModel(lambda p, img: m.apply(p, [img, other]), m.params)
    ref = jaxsal.gradient_x_input(single, x[0], [0, 1], reduce=None)  # same function of img
    got = jaxsal.gradient_x_input(m, x, [0, 1], reduce=None)[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-7)
    cam = jaxsal.gradcam(m, x, [0, 1])
    small = jaxsal.gradcam(m, x, [0, 1], upsample=False)
    assert cam.shape == (3, 2, 8, 8) and small.shape == (3, 2, 6, 6)
    # Grad-CAM by hand from the conv output and its gradient
    A = m.intermediates(x, ["conv"])["conv"]

    def score(a):
        return m.apply(m.params, x, perturb={"conv": a - A})[:, 1].sum()

    G = jax.grad(score)(A)
    hand = jax.nn.relu(jnp.einsum("nhwk,nk->nhw", A, G.mean((1, 2))))
    np.testing.assert_allclose(small[:, 1], hand, rtol=1e-5, atol=1e-7)
    # attribution at the layer: one map of the layer's shape, whatever the inputs
    at = jaxsal.saliency(m, x, 1, layer="conv", reduce=None)
    np.testing.assert_allclose(at, G, rtol=1e-5, atol=1e-7)
    assert jaxsal.eigencam(m, x).shape == (3, 8, 8)
    for f in (jaxsal.eigengradcam, jaxsal.gradcam_elementwise, jaxsal.ablationcam):
        assert f(m, x, [0, 1]).shape == (3, 2, 8, 8), f.__name__
    assert jaxsal.layercam(m, {"img": x[0], "vec": x[1]}, 1).shape == (3, 8, 8)


def test_refusals(two, tmp_path):
    m, x = two
    with pytest.raises(TypeError, match="2 inputs"):
        jaxsal.saliency(m, x[0], 0)
    with pytest.raises(ValueError, match="expected a list of 2"):
        jaxsal.saliency(m, x[:1], 0)
    with pytest.raises(ValueError, match="input names"):
        jaxsal.saliency(m, {"img": x[0], "other": x[1]}, 0)
    with pytest.raises(ValueError, match="same batch size"):
        jaxsal.saliency(m, [x[0], x[1][:2]], 0)
    with pytest.raises(ValueError, match=r"input 'vec' of shape \(N, 5\)"):
        jaxsal.saliency(m, [x[0], x[1][:, :4]], 0)
    bad = [x[0], x[1].copy()]
    bad[1][0, 0] = np.nan
    with pytest.raises(ValueError, match="'vec' contains NaN"):
        jaxsal.saliency(m, bad, 0)
    for f in (jaxsal.scorecam, jaxsal.guided_gradcam):
        # the message lists the methods that take several inputs (it left out the CAMs
        # tested above, ablationcam among them, and the layer methods)
        with pytest.raises(TypeError, match=r"explains one input array.*eigengradcam.*"
                                            r"ablationcam, layer_conductance"):
            f(m, x, 0)
    maps = jaxsal.saliency(m, x, 0)  # inputs of different ranks: not one array to np.ndim
    for f in (lambda: jaxsal.rise(m, x, 0, key=0, n=4),
              lambda: jaxsal.deletion(m, x, maps, 0), lambda: jaxsal.insertion(m, x, maps, 0),
              lambda: jaxsal.infidelity(m, x, maps, 0, key=0)):
        with pytest.raises(TypeError, match="(explains|evaluates the maps of) one input array"):
            f()
    with pytest.raises(TypeError, match="scorecam explains one input array"):  # (not work)
        jaxsal.explain_to_file(jaxsal.scorecam, m, x, tmp_path / "maps.npy")
    with pytest.raises(ValueError, match="one input image"):
        jaxsal.maximize(m, [0], steps=2, key=0)


def _one_input_methods() -> list[str]:
    """The public functions that explain (or evaluate the maps of) one input array: those with
    a ``one_input`` attribute (why), found here so that a new one is tested too."""
    return sorted(n for n in jaxsal.__all__ if getattr(getattr(jaxsal, n), "one_input", None))


def test_the_methods_of_one_input_array_are_found():
    assert set(_one_input_methods()) >= {
        "blur_integrated_gradients", "guided_integrated_gradients", "scorecam", "guided_gradcam",
        "fullgrad", "rise", "shapley_values", "shapley_value_sampling", "kernel_shap", "lime",
        "feature_permutation", "xrai", "deletion", "insertion", "infidelity", "sensitivity_max"}


@pytest.mark.parametrize("name", _one_input_methods())
def test_a_method_of_one_input_array_names_itself_and_why(two, tmp_path, name):
    """A direct call of a method of one input array with a model's several inputs (a list, a
    tuple, a dict) names the method, its reason (``one_input``), what it got and the remedy,
    as a batch job over those inputs does (one helper). Its error was a generic 'this method
    takes one input array' for most of them (their own words for a few)."""
    import inspect

    m, x = two
    method = getattr(jaxsal, name)
    params = inspect.signature(method).parameters
    values = {"model": m, "explain": lambda a: jaxsal.saliency(m, a, 0),
              "maps": np.zeros((3, 8, 8), np.float32)}
    kw = {"targets": 0} if "targets" in params else {}
    kw.update({"key": 0} if "key" in params else {})
    evaluates = "maps" in params or "explain" in params
    verb = "evaluates the maps of" if evaluates else "explains"
    listed = ("" if "model" not in params
              else " (this model's inputs: img (N, 8, 8, 3), vec (N, 5))")
    for xs, given in ((x, "a list of 2 arrays of shapes (3, 8, 8, 3), (3, 5)"),
                      (tuple(x), "a tuple of 2 arrays of shapes (3, 8, 8, 3), (3, 5)"),
                      ({"vec": x[1], "img": x[0]},
                       "a dict of 2 arrays of shapes 'vec': (3, 5), 'img': (3, 8, 8, 3)")):
        args = [xs if p == "x" else values[p] for p, v in params.items()
                if v.default is v.empty and v.kind == v.POSITIONAL_OR_KEYWORD]
        with pytest.raises(TypeError) as err:
            method(*args, **kw)
        msg = str(err.value)
        assert msg.startswith(f"{name} {verb} one input array ({method.one_input}), so it "
                              f"cannot {verb.split()[0][:-1]} {given}{listed}. "), msg
        assert "jaxsal.FunctionModel(lambda p, img: model.apply(" in msg  # the remedy
        if not evaluates:  # the methods that take several inputs, named as a batch job does
            assert ". Use a method that gives a map per input (saliency," in msg
        # (a whole_batch reason: no batch job; a function of the options: Score-CAM's top_k)
        if not evaluates and not isinstance(getattr(method, "whole_batch", None), str):
            with pytest.raises(TypeError) as job:
                jaxsal.explain_to_file(method, m, xs, tmp_path / "maps.npy", **kw)
            assert str(job.value).startswith(
                f"{name} explains one input array ({method.one_input}), so it cannot explain "
                "this job's 2 inputs (img (N, 8, 8, 3), vec (N, 5)). Use "), str(job.value)
            assert str(job.value).partition(". Use ")[2] == msg.partition(". Use ")[2]
    if "model" in params:
        # one array, the image: the message said to pass a list of every input, which this
        # method refuses too; it names the method, why and the wrap
        args = [x[0] if p == "x" else values[p] for p, v in params.items()
                if v.default is v.empty and v.kind == v.POSITIONAL_OR_KEYWORD]
        given = ("this model of 2 inputs (img (N, 8, 8, 3), vec (N, 5)), given one ndarray "
                 "of shape (3, 8, 8, 3). ")
        with pytest.raises(TypeError) as err:
            method(*args, **kw)
        assert str(err.value).startswith(f"{name} {verb} one input array ("
                                         f"{method.one_input}), so it cannot "
                                         f"{verb.split()[0][:-1]} {given}"), str(err.value)
        assert "jaxsal.FunctionModel(lambda p, img: model.apply(" in str(err.value)
        if not evaluates and not isinstance(getattr(method, "whole_batch", None), str):
            with pytest.raises(TypeError) as job:
                jaxsal.explain_to_file(method, m, x[0], tmp_path / "maps.npy", **kw)
            assert str(job.value) == str(err.value)
    assert not list(tmp_path.iterdir())


def _per_input_option_methods() -> list[str]:
    """The public methods that take an option one value per input (``several_input_options``),
    found here so that a new one is tested too."""
    return sorted(n for n in jaxsal.__all__
                  if getattr(getattr(jaxsal, n), "several_input_options", None))


def test_the_methods_of_per_input_options_are_found():
    assert set(_per_input_option_methods()) >= {
        "integrated_gradients", "deeplift", "deeplift_shap", "gradient_shap", "occlusion",
        "layer_conductance", "internal_influence", "neuron_conductance", "smoothgrad"}


@pytest.mark.parametrize("name", _per_input_option_methods())
def test_an_option_per_input_is_a_list_in_the_model_s_order_or_a_dict_for_any_inputs(two,
                                                                                      name):
    """A direct call took an option one value per input (a baseline, a fill) only in the
    inputs' own container, a list for a list and a dict for a dict, where
    ``explain_to_file`` takes either form for either: both now take a list in the model's
    input order or a dict keyed by its input names, whatever container the inputs come in
    (a dict of them in another key order too), for the same maps."""
    m, x = two
    vmean = x[1].mean(0)
    per_input = {  # method: (its options, given the per-input values as opt)
        "integrated_gradients": (lambda o: dict(baseline=o, steps=4), {"img": 0.5, "vec": vmean}),
        "deeplift": (lambda o: dict(baseline=o), {"img": 0.5, "vec": vmean}),
        "deeplift_shap": (lambda o: dict(baselines=o),
                          {"img": np.zeros((2, 8, 8, 3), np.float32), "vec": x[1][:2]}),
        "gradient_shap": (lambda o: dict(baselines=o, key=0, n=2),
                          {"img": np.zeros((2, 8, 8, 3), np.float32), "vec": x[1][:2]}),
        "occlusion": (lambda o: dict(patch=o["patch"], stride=o["stride"], fill=o["fill"]),
                      None),
        "layer_conductance": (lambda o: dict(layer="conv", baseline=o, steps=4),
                              {"img": 0.5, "vec": vmean}),
        "internal_influence": (lambda o: dict(layer="conv", baseline=o, steps=4),
                               {"img": 0.5, "vec": vmean}),
        "neuron_conductance": (lambda o: dict(layer="cat", neuron=(1,), baseline=o, steps=4),
                               {"img": 0.5, "vec": vmean}),
        "smoothgrad": (lambda o: dict(key=0, n=2, method="integrated_gradients",
                                      method_options=dict(baseline=o, steps=4)),
                       {"img": 0.5, "vec": vmean}),
    }
    assert name in per_input, f"{name}: give the test its options"
    options, values = per_input[name]
    method = getattr(jaxsal, name)
    if name == "occlusion":  # each option by name, in both forms
        def call(xs, form):
            opts = {"patch": {"img": 4, "vec": 1}, "stride": {"img": 2, "vec": 1},
                    "fill": {"img": 0.5, "vec": vmean}}
            if form is list:
                opts = {k: [v["img"], v["vec"]] for k, v in opts.items()}
            return method(m, xs, [0, 2], **opts)
    else:
        def call(xs, form):
            o = [values["img"], values["vec"]] if form is list else dict(values)
            return method(m, xs, [0, 2], **options(o))

    by_dict = {"vec": x[1], "img": x[0]}  # (not the model's input order)
    want = call(x, list)
    want = [np.asarray(a) for a in want] if isinstance(want, (list, tuple)) else [want]
    for xs in (x, tuple(x), by_dict):
        for form in (list, dict):
            got = call(xs, form)
            got = ([got["img"], got["vec"]] if isinstance(got, dict) else list(got)
                   if isinstance(got, (list, tuple)) else [got])
            assert len(got) == len(want), (name, type(xs), form)
            for g, w in zip(got, want):
                np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6 * np.abs(w).max(),
                                           err_msg=f"{name}: x {type(xs)}, option {form}")


def test_an_option_per_input_refused_with_the_same_error_in_a_call_and_a_job(two, tmp_path):
    """Names other than the inputs' and a list of another count: one error, the direct
    call's and the batch job's (one rule, ``validate.arrange_per_input``), naming the option,
    the inputs in order and what was wrong."""
    m, x = two
    for xs in (x, {"img": x[0], "vec": x[1]}):
        for bad, words in (({"img": 0.0, "other": 1.0},
                            r"option baseline: expected one value per input, as a dict keyed "
                            r"by the model's input names \(img, vec\) or a list in that "
                            r"order; got 'other', not an input of the model; no value for "
                            r"'vec'"),
                           ([0.0],
                            r"option baseline: expected one value per input, a list of 2 in "
                            r"the order of the model's inputs \(img, vec\) or a dict keyed by "
                            r"those names; got a list of 1")):
            with pytest.raises(ValueError, match=words) as call:
                jaxsal.integrated_gradients(m, xs, 0, baseline=bad, steps=2)
            with pytest.raises(ValueError) as job:
                jaxsal.explain_to_file(jaxsal.integrated_gradients, m, xs,
                                       tmp_path / "ig.npy", baseline=bad, steps=2)
            assert str(job.value) == str(call.value)
    assert not list(tmp_path.iterdir())


def test_occlusion_of_each_input(two):
    """Each input occluded in turn, the others unchanged, against brute force; per-input
    patch and fill in a list or dict; sub-batches agree."""
    m, x = two
    occ = jaxsal.occlusion(m, x, [0, 2], patch=[4, None])  # 4x4 on the image, 1 feature
    assert occ[0].shape == (3, 2, 8, 8) and occ[1].shape == (3, 2, 5)
    y = np.asarray(m(x))[:, [0, 2]]
    for d in range(5):
        v = x[1].copy()
        v[:, d] = 0.0
        drop = y - np.asarray(m([x[0], v]))[:, [0, 2]]
        np.testing.assert_allclose(occ[1][:, :, d], drop, rtol=1e-5, atol=1e-6)
    img = x[0].copy()
    img[:, 4:8, 0:4] = 0.0
    drop = y - np.asarray(m([img, x[1]]))[:, [0, 2]]
    np.testing.assert_allclose(occ[0][:, :, 5, 2], drop, rtol=1e-5, atol=1e-6)
    same = jaxsal.occlusion(m, {"img": x[0], "vec": x[1]}, [0, 2], patch={"img": 4, "vec": 1},
                            fill={"img": 0.0, "vec": np.zeros((3, 5), np.float32)},
                            memory_budget=1000)
    np.testing.assert_allclose(same["img"], occ[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(same["vec"], occ[1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="option patch: expected one value per input, a "
                                         "list of 2 in the order of the model's inputs"):
        jaxsal.occlusion(m, x, 0, patch=[4])
    with pytest.raises(ValueError, match="does not broadcast to input 'vec'"):
        jaxsal.occlusion(m, x, 0, fill=[0.0, np.zeros(4, np.float32)])
    # one value for every input that does not fit one of them: named, and the per-input forms
    with pytest.raises(ValueError, match=r"expected patch for input 'vec' as a positive int "
                       r"or 1 of them .*got \(4, 4\); with several inputs a dict by input "
                       r"name"):
        jaxsal.occlusion(m, {"img": x[0], "vec": x[1]}, 0, patch=(4, 4))


def test_cam_upsampling_needs_one_input_size():
    def feats(p, x):
        return jnp.concatenate([x[0][:, :4, :4], x[1][:, :4, :4]], -1) * p

    mm = jaxsal.FunctionModel(features=feats, head_fn=lambda p, a: a.mean((1, 2)), params=1.0)
    x = [np.ones((2, 4, 4, 1), np.float32), np.ones((2, 6, 6, 1), np.float32)]
    with pytest.raises(ValueError, match="upsample=False"):
        jaxsal.gradcam(mm, x, 0)
    assert jaxsal.gradcam(mm, x, 0, upsample=False).shape == (2, 4, 4)


def test_no_recompile_on_second_call(two, compiles):
    m, x = two
    calls = [lambda: jaxsal.saliency(m, x, [0, 1]),
             lambda: jaxsal.integrated_gradients(m, x, 1, steps=4),
             lambda: jaxsal.smoothgrad(m, x, 1, key=0, n=2)]
    for c in calls:
        jax.block_until_ready(c())
    first = compiles.n
    for c in calls:
        jax.block_until_ready(c())
    jax.block_until_ready(jaxsal.saliency(m, x, [2, 0]))
    assert compiles.n == first


def test_a_dict_of_inputs_in_another_order_than_the_model_s(tmp_path):
    """Inputs ``[meta, img]`` (not in sorted order), the image channels-first: a dict gives
    the list's maps (its leaves come in sorted order, and the layouts were matched to them by
    position: the image was read channels-last, its maps (N, T, C, H) reduced over W), and
    the random methods draw each input's noise by its position in the model."""
    import keras

    from model_import import load_keras

    keras.utils.set_random_seed(3)
    meta = keras.Input((4,), name="meta")
    img = keras.Input((2, 6, 6), name="img")
    h = keras.layers.Conv2D(3, 3, data_format="channels_first", activation="relu",
                            name="conv")(img)
    h = keras.layers.GlobalAveragePooling2D(data_format="channels_first")(h)
    z = keras.layers.Concatenate()([h, keras.layers.Dense(3, activation="tanh")(meta)])
    model = keras.Model([meta, img], keras.layers.Dense(3)(z))
    model.save(tmp_path / "cf.keras")
    m = load_keras(tmp_path / "cf.keras")
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(2, 4)).astype(np.float32),
          rng.normal(size=(2, 2, 6, 6)).astype(np.float32)]
    xd = {"img": xs[1], "meta": xs[0]}
    for method, kw in ((jaxsal.saliency, {}), (jaxsal.gradcam, {}),
                       (jaxsal.smoothgrad, dict(key=0, n=3)),
                       (jaxsal.gradient_shap, dict(key=0, n=3,
                                                   baselines=[np.zeros((1, 4), np.float32),
                                                              np.zeros((1, 2, 6, 6),
                                                                       np.float32)]))):
        if method is jaxsal.gradient_shap:
            kwd = dict(kw, baselines={"meta": kw["baselines"][0], "img": kw["baselines"][1]})
        else:
            kwd = kw
        by_list = method(m, xs, [0, 2], **kw)
        by_dict = method(m, xd, [0, 2], **kwd)
        got = by_dict["img"] if isinstance(by_dict, dict) else by_dict
        want = by_list[1] if isinstance(by_list, (list, tuple)) else by_list
        assert np.shape(got) == (2, 2, 6, 6), method.__name__
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7, err_msg=method.__name__)


def test_the_methods_for_several_inputs_named_in_errors_are_the_ones_that_take_them():
    """Every method of the command line either takes several inputs, and the refusals of the
    others name it (SEVERAL_INPUT_METHODS), or refuses them saying why (``one_input``); the
    probe of every method on a model of two inputs found this split."""
    import re

    from jaxsal import cli
    from jaxsal._src.validate import SEVERAL_INPUT_METHODS

    named = set(re.findall(r"[a-z_]+[a-z]", SEVERAL_INPUT_METHODS)) & set(cli.METHODS)
    refusing = {n for n in cli.METHODS
                if getattr(getattr(jaxsal, n), "one_input", None)}
    assert named.isdisjoint(refusing), named & refusing
    assert named | refusing == set(cli.METHODS), set(cli.METHODS) - named - refusing


def test_the_methods_that_take_several_inputs_say_so_in_their_type_hints():
    """``x`` of the methods that take several inputs is ``jaxsal.Inputs`` (a baseline too),
    and those giving a map per input return ``jaxsal.Maps``; the methods of one input array
    keep ``ArrayLike`` and return no ``Maps``."""
    import re
    import typing

    from jaxsal import cli
    from jaxsal._src.validate import SEVERAL_INPUT_METHODS

    per_input, at_layer = SEVERAL_INPUT_METHODS.split(" or one map at a layer ")
    per_input = set(re.findall(r"[a-z_]+[a-z]", per_input)) & set(cli.METHODS)
    at_layer = set(re.findall(r"[a-z_]+[a-z]", at_layer)) & set(cli.METHODS)
    assert len(per_input) >= 10 and len(at_layer) >= 10
    for name in sorted(per_input | at_layer):
        hints = typing.get_type_hints(getattr(jaxsal, name))
        assert hints["x"] == jaxsal.Inputs, name
        for b in ("baseline", "baselines"):
            if b in hints:
                assert hints[b] == typing.Optional[jaxsal.Inputs], (name, b)
        assert hints["return"] == (jaxsal.Maps if name in per_input else jax.Array), name
    for name in sorted(set(cli.METHODS) - per_input - at_layer):
        hints = typing.get_type_hints(getattr(jaxsal, name))
        assert hints["x"] != jaxsal.Inputs, name
        assert hints["return"] != jaxsal.Maps, name  # (xrai said Maps, returning one Array)


def test_feature_maps_of_a_model_of_several_inputs(two):
    """``jaxsal.feature_maps`` takes a several-input model's inputs as every method does (a
    list, tuple or dict; a batch or one example of each): the layer's activations, as
    ``intermediates`` computes them, channels first; a wrong container is refused saying what
    the model takes."""
    m, x = two
    want = np.moveaxis(np.asarray(m.intermediates(x, ["conv"])["conv"]), -1, 1)
    for xx in (x, tuple(x), {"vec": x[1], "img": x[0]}):
        np.testing.assert_allclose(jaxsal.feature_maps(m, xx, "conv"), want, rtol=1e-6)
    one = jaxsal.feature_maps(m, [x[0][1], x[1][1]], "conv", normalize=True)
    assert one.shape == want.shape[1:]
    assert float(one.min()) == 0.0 and float(one.max()) == 1.0
    with pytest.raises(ValueError, match="3 inputs|expected a list of 2"):
        jaxsal.feature_maps(m, [x[0], x[1], x[1]], "conv")
    with pytest.raises(TypeError, match="pass x as a list in that order"):
        jaxsal.feature_maps(m, x[0], "conv")


def test_plot_feature_maps_of_a_model_of_several_inputs(two):
    """``jaxsal.plot.feature_maps`` shows one example of a several-input model's inputs (a
    batch of one or one example of each); a batch of several is refused naming ``x[:1]``."""
    import matplotlib

    matplotlib.use("Agg")
    from jaxsal import plot

    m, x = two
    for xx in ([x[0][:1], x[1][:1]], {"img": x[0][0], "vec": x[1][0]}):
        fig = plot.feature_maps(m, xx, "conv")
        assert len(fig.axes) >= 4
        matplotlib.pyplot.close(fig)
    with pytest.raises(ValueError, match=r"pass x\[:1\]"):
        plot.feature_maps(m, x, "conv")
