"""Odd and bad arguments over the public methods: every one gets a clear error before any heavy
compute (what was expected, what was given, how to fix it) or the same maps as the plain
float32 call; nothing is silently truncated, clipped or broadcast to another shape.

Regression tests of an input sweep (x dtypes and shapes, targets, options, maximize,
post-processing, explain_to_file, FunctionModel). Tiny models; the MNIST fixture only where the
error is raised before compiling."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal

FIX = pathlib.Path(__file__).parent / "fixtures"


def _conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.fixture(scope="module")
def split():
    """A conv layer "conv" (5 channels, float32 kernel) and a 3-class head."""
    k1, k2 = jax.random.split(jax.random.key(0))
    params = {"k": jax.random.normal(k1, (3, 3, 2, 5)), "w": jax.random.normal(k2, (5, 3))}
    return jaxsal.FunctionModel(features=lambda p, x: jax.nn.relu(_conv(x, p["k"])),
                                head_fn=lambda p, a: a.mean(axis=(1, 2)) @ p["w"],
                                params=params, layer="conv", input_shape=(6, 6, 2))


@pytest.fixture(scope="module")
def xs():
    return np.random.RandomState(0).rand(2, 6, 6, 2).astype(np.float32)


@pytest.fixture(scope="module")
def m(mnist):
    return mnist.with_head("logits")


@pytest.fixture(scope="module")
def x():
    return np.load(FIX / "reference" / "gradcam.npz")["x"][:2].astype(np.float32)


ALL = [jaxsal.saliency, jaxsal.gradient_x_input, jaxsal.guided_backprop, jaxsal.deconvnet,
       jaxsal.smoothgrad, jaxsal.integrated_gradients, jaxsal.gradcam,
       jaxsal.gradcam_plus_plus, jaxsal.layercam, jaxsal.hirescam, jaxsal.xgradcam,
       jaxsal.scorecam, jaxsal.eigencam, jaxsal.guided_gradcam, jaxsal.occlusion,
       jaxsal.eigengradcam, jaxsal.gradcam_elementwise, jaxsal.ablationcam,
       jaxsal.gradient_shap, jaxsal.blur_integrated_gradients,
       jaxsal.guided_integrated_gradients, jaxsal.shapley_values,
       jaxsal.shapley_value_sampling, jaxsal.fullgrad, jaxsal.rise, jaxsal.deeplift,
       jaxsal.deeplift_shap, jaxsal.lrp, jaxsal.kernel_shap, jaxsal.lime,
       jaxsal.layer_conductance, jaxsal.internal_influence, jaxsal.feature_permutation,
       jaxsal.neuron_conductance]
OPTS = {jaxsal.smoothgrad: dict(key=0, n=2), jaxsal.integrated_gradients: dict(steps=4),
        jaxsal.gradient_shap: dict(key=0, n=2), jaxsal.blur_integrated_gradients: dict(steps=4),
        jaxsal.guided_integrated_gradients: dict(steps=4),
        jaxsal.occlusion: dict(patch=3), jaxsal.rise: dict(key=0, n=2),
        jaxsal.scorecam: dict(top_k=2),
        jaxsal.shapley_values: dict(patch=3), jaxsal.shapley_value_sampling: dict(key=0, n=2,
                                                                                  patch=3),
        jaxsal.kernel_shap: dict(key=0, n=2, patch=3), jaxsal.lime: dict(key=0, n=2, patch=3),
        jaxsal.layer_conductance: dict(layer="conv2d_2", steps=2),
        jaxsal.internal_influence: dict(layer="conv2d_2", steps=2),
        jaxsal.feature_permutation: dict(key=0, patch=7),
        jaxsal.neuron_conductance: dict(layer="conv2d_2", neuron=0, steps=2)}


def _name(f):
    return f.__name__


# ---------------------------------------------------------------- x: shapes and dtypes
@pytest.mark.parametrize("method", ALL, ids=_name)
def test_empty_batch_is_refused_by_every_method(m, x, method):
    """N = 0: a clear error, the same for every method (README "Attribution methods")."""
    with pytest.raises(ValueError, match=r"at least one input.*\(0, 28, 28, 1\)"):
        method(m, x[:0], 3, **OPTS.get(method, {}))


@pytest.mark.parametrize("method", ALL + [jaxsal.feature_maps], ids=_name)
def test_integer_images_are_refused_by_every_method(m, x, method):
    """uint8 images given to a model of float inputs: refused by every method, also by those
    that take token ids (occlusion, the Shapley methods, the CAMs, layer=): they computed
    maps of the unscaled images (occlusion's 260x too large)."""
    u8 = (x * 255).astype(np.uint8)
    args = ("conv2d_1",) if method is jaxsal.feature_maps else (3,)
    with pytest.raises(TypeError, match=r"expected a floating-point input, got integer dtype "
                                        r"uint8; this model reads its input with a Conv2D "
                                        r"layer.*x\.astype\(np\.float32\) / 255"):
        method(m, u8, *args, **OPTS.get(method, {}))
    if method is jaxsal.saliency:  # also where it takes token ids
        with pytest.raises(TypeError, match="floating-point"):
            method(m, u8, 3, layer="conv2d_2")


@pytest.mark.parametrize("method", [jaxsal.deletion, jaxsal.insertion], ids=_name)
def test_integer_images_are_refused_by_the_curves(m, x, method):
    with pytest.raises(TypeError, match="expected a floating-point input"):
        method(m, (x * 255).astype(np.uint8), np.ones(x.shape[:3], np.float32), 3)


def test_missing_channel_axis_is_named(m, x):
    with pytest.raises(ValueError, match=r"got \(2, 28, 28\)\. x lacks the channel axis "
                                         r"\(1 channel\): add it with x\[\.\.\., None\]"):
        jaxsal.saliency(m, x[..., 0], 3)
    with pytest.raises(ValueError, match=r"got \(2, 28, 28\)\. x lacks the channel axis"):
        jaxsal.gradcam(m, x[..., 0], 3)
    with pytest.raises(ValueError, match=r"got \(28, 28, 1\)\. Add a batch axis.*x\[None\]"):
        jaxsal.saliency(m, x[0], 3)
    with pytest.raises(ValueError, match=r"got \(2, 28, 28, 3\)\.$"):
        jaxsal.saliency(m, np.repeat(x, 3, -1), 3)



def test_a_list_of_examples_is_told_to_be_stacked(m, x):
    """A list of example arrays (images of one size, or of several sizes for a free-size
    model) read as a list of model inputs: the error said "pass the array itself"."""
    for method in (jaxsal.saliency, jaxsal.gradcam):
        with pytest.raises(TypeError, match=r"list of 2 arrays of shapes \(28, 28, 1\), "
                                            r"\(28, 28, 1\); .*np\.stack\(x\)"):
            method(m, [x[0], x[1]], 3)
    with pytest.raises(TypeError, match=r"list of 1 arrays of shapes \(2, 28, 28, 1\); pass "
                                        r"the array itself"):
        jaxsal.saliency(m, [x], 3)


HALF = [jaxsal.saliency, jaxsal.smoothgrad, jaxsal.integrated_gradients,
        jaxsal.gradcam_plus_plus, jaxsal.scorecam, jaxsal.occlusion]


@pytest.mark.parametrize("dtype", [np.float16, jnp.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("method", HALF, ids=_name)
def test_half_precision_inputs_are_widened_to_float32(split, xs, method, dtype):
    """float16/bfloat16 x is computed in float32 (exactly widened), like the float32 array
    with the same values: it used to return float16 maps, round the gradients at the layer
    (Grad-CAM++), fail inside a FunctionModel with float32 weights, or break occlusion's loop
    (a float16 carry)."""
    half = jnp.asarray(xs, dtype)
    want = method(split, np.asarray(half.astype(jnp.float32)), [0, 2], **OPTS.get(method, {}))
    got = method(split, half, [0, 2], **OPTS.get(method, {}))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", [jaxsal.saliency, jaxsal.gradcam, jaxsal.occlusion],
                         ids=_name)
def test_other_array_likes_match_float32(split, xs, method):
    want = method(split, xs, [0, 2], **OPTS.get(method, {}))
    for v in (xs.astype(np.float64), xs.tolist(), jnp.asarray(xs)):
        got = method(split, v, [0, 2], **OPTS.get(method, {}))
        assert got.dtype == jnp.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    # targets as NumPy/JAX integers and 0-d arrays: the same maps as Python ints
    for t in (np.int64(1), np.array(1), jnp.array(1), np.uint8(1)):
        np.testing.assert_array_equal(method(split, xs, t, **OPTS.get(method, {})),
                                      method(split, xs, 1, **OPTS.get(method, {})))
    np.testing.assert_array_equal(method(split, xs, np.array([0, 2], np.int32),
                                         **OPTS.get(method, {})), want)


# ---------------------------------------------------------------- model outputs
def test_outputs_without_the_batch_axis_are_refused(xs):
    """A function mixing the batch (here: 2 inputs -> 5 rows) gave maps from scores read
    across inputs for a score function, and a broadcasting error deep in JAX for class ids."""
    bad = jaxsal.FunctionModel(lambda p, v: v.reshape(-1, 3)[:5] * p, jnp.ones(()))
    for t in (0, lambda y: y[:, 0]):
        with pytest.raises(ValueError, match=r"outputs of shape \(5, 3\) for a batch of 2 "
                                             r"inputs.*batch axis first"):
            jaxsal.saliency(bad, xs, t)


# ---------------------------------------------------------------- targets
def test_ragged_targets_are_refused_clearly(split, xs, tmp_path):
    with pytest.raises(ValueError, match="ragged sequence"):
        jaxsal.saliency(split, xs, [[0, 1], [2]])
    with pytest.raises(ValueError, match="ragged sequence"):
        jaxsal.explain_to_file(jaxsal.saliency, split, xs, tmp_path / "r.npy",
                               targets=[[0, 1], [2]])


def test_repeated_class_ids_are_refused_with_the_per_input_form(split, xs, tmp_path):
    """Per-input labels passed as a 1-D sequence (Captum's form) listed classes for every
    input: (N, N, ...) maps, silently. Repeats are refused; the (N, 1) form explains them."""
    labels = np.array([2, 2])  # one label per input (N = 2)
    for call in (lambda t: jaxsal.saliency(split, xs, t),
                 lambda t: jaxsal.gradcam(split, xs, t),
                 lambda t: jaxsal.explain_to_file(jaxsal.saliency, split, xs,
                                                  tmp_path / "r.npy", targets=t)):
        with pytest.raises(ValueError, match=r"distinct class ids.*repeat \[2\].*"
                                             r"targets=np.asarray\(y\)\[:, None\]"):
            call(labels)
    with pytest.raises(ValueError, match=r"repeat \[1\]\. Otherwise drop the repeats"):
        jaxsal.saliency(split, xs, [0, 1, 1])  # not one per input: no per-input hint
    per_input = jaxsal.saliency(split, xs, labels[:, None])
    assert per_input.shape == (2, 1, 6, 6)
    np.testing.assert_array_equal(per_input[:, 0], jaxsal.saliency(split, xs, 2))


@pytest.mark.parametrize("method", [jaxsal.gradcam, jaxsal.saliency, jaxsal.scorecam])
def test_a_layer_index_is_refused_naming_the_ways_to_name_it(split, xs, method):
    """tf-keras-vis takes penultimate_layer=-1; jaxsal takes names only."""
    with pytest.raises(TypeError, match=r"got int\. A layer index .*penultimate_layer=-1.*"
                                         r"model\.layer_names\[i\].*default_cam_layer"):
        method(split, xs, 1, layer=-1)
    with pytest.raises(TypeError, match=r"got float\.$"):  # not an index: no index advice
        method(split, xs, 1, layer=1.0)


def test_ids_and_score_functions_in_one_list_are_refused(split, xs):
    with pytest.raises(TypeError, match="not both in one list.*class_score"):
        jaxsal.saliency(split, xs, [jaxsal.class_score(1), 2])


# ---------------------------------------------------------------- options
@pytest.mark.parametrize("call", [
    lambda m, x: jaxsal.integrated_gradients(m, x, 3, baseline=np.zeros((28, 28))),
    lambda m, x: jaxsal.occlusion(m, x, 3, patch=7, fill=np.zeros((28, 28))),
    lambda m, x: jaxsal.occlusion(m, x, 3, patch=7, fill=np.zeros(5)),
], ids=["ig-baseline", "occlusion-fill-hw", "occlusion-fill-5"])
def test_baseline_and_fill_must_broadcast_to_x(m, x, call):
    """(28, 28) broadcasts with (2, 28, 28, 1) to (2, 28, 28, 28): refused by name, not by
    JAX's broadcast_to in the middle of the method."""
    with pytest.raises(ValueError, match=r"(baseline|fill) of shape \((28, 28|5,)\) does not "
                                         r"broadcast to x of shape \(2, 28, 28, 1\)"):
        call(m, x)


def test_non_numeric_and_non_finite_baseline_and_fill(split, xs):
    with pytest.raises(TypeError, match="baseline as a number or an array"):
        jaxsal.integrated_gradients(split, xs, 1, baseline="zeros", steps=4)
    with pytest.raises(TypeError, match="fill as a number or an array"):
        jaxsal.occlusion(split, xs, 1, patch=3, fill="black")
    # a NaN fill made every map NaN without a word
    with pytest.raises(ValueError, match="fill contains NaN"):
        jaxsal.occlusion(split, xs, 1, patch=3, fill=np.nan)
    with pytest.raises(ValueError, match="baseline contains NaN"):
        jaxsal.integrated_gradients(split, xs, 1, baseline=np.full((6, 6, 2), np.inf), steps=4)
    # valid broadcasting shapes still work: one value per channel, one per input
    a = jaxsal.occlusion(split, xs, 1, patch=3, fill=np.zeros(2))
    np.testing.assert_array_equal(a, jaxsal.occlusion(split, xs, 1, patch=3, fill=0.0))
    b = jaxsal.integrated_gradients(split, xs, 1, baseline=np.zeros((2, 1, 1, 1)), steps=4)
    np.testing.assert_array_equal(b, jaxsal.integrated_gradients(split, xs, 1, steps=4))


@pytest.mark.parametrize("method, kw", [
    (jaxsal.gradcam, dict(upsample="False")),
    (jaxsal.eigencam, dict(upsample="no")),
    (jaxsal.scorecam, dict(upsample="False")),
    (jaxsal.scorecam, dict(softmax="no")),
    (jaxsal.smoothgrad, dict(key=0, n=2, abs_first="yes")),
    (jaxsal.saliency, dict(check_finite="no")),
    (jaxsal.occlusion, dict(patch=3, check_finite=None)),
], ids=["gradcam-upsample", "eigencam-upsample", "scorecam-upsample", "scorecam-softmax",
        "smoothgrad-abs_first", "saliency-check_finite", "occlusion-check_finite"])
def test_flags_refuse_strings(split, xs, method, kw):
    """upsample="False" is a true string: it used to upsample."""
    name = next(k for k in kw if k not in ("key", "n", "patch"))
    with pytest.raises(TypeError, match=f"expected {name} as a bool"):
        method(split, xs, 1, **kw)


def test_flags_take_bools_and_0_1(split, xs):
    low = jaxsal.gradcam(split, xs, 1, upsample=False)
    np.testing.assert_array_equal(jaxsal.gradcam(split, xs, 1, upsample=0), low)
    np.testing.assert_array_equal(jaxsal.gradcam(split, xs, 1, upsample=np.False_), low)


@pytest.mark.parametrize("level", ["x", np.array([0.1, 0.2]), True, float("nan"), -0.1,
                                   float("inf")])
@pytest.mark.parametrize("name", ["noise_level", "noise_std"])
def test_noise_level_must_be_a_number(split, xs, level, name):
    with pytest.raises(ValueError, match=f"expected {name} >= 0 \\(a finite number"):
        jaxsal.smoothgrad(split, xs, 1, key=0, n=2, **{name: level})


def test_noise_level_and_noise_std_are_exclusive(split, xs):
    with pytest.raises(ValueError, match="pass one"):
        jaxsal.smoothgrad(split, xs, 1, key=0, n=2, noise_level=0.1, noise_std=0.1)


def test_smoothgrad_ig_steps_are_not_truncated(split, xs):
    with pytest.raises(ValueError, match=r"expected steps as an int >= 1 .*got 2.5"):
        jaxsal.smoothgrad(split, xs, 1, key=0, n=2, method="integrated_gradients",
                          method_options={"steps": 2.5})


def test_raw_key_data_of_the_wrong_length(split, xs):
    with pytest.raises(TypeError, match=r"raw key data.*got shape \(3,\)"):
        jaxsal.smoothgrad(split, xs, 1, key=np.zeros(3, np.uint32), n=2)
    # the valid spellings give the same maps
    want = jaxsal.smoothgrad(split, xs, 1, key=0, n=2)
    for k in (np.int64(0), jnp.array(0), jax.random.key(0)):
        np.testing.assert_array_equal(jaxsal.smoothgrad(split, xs, 1, key=k, n=2), want)


@pytest.mark.parametrize("key, match", [
    (1.5, r"got float 1\.5: a seed is an int \(key=0\)$"),
    ("0", r"got str '0': a seed is an int \(key=0\)$"),
    (np.float32(2), r"got float32 of shape \(\) and dtype float32: a seed is an int"),
    (np.zeros((2, 2), np.int32), r"got ndarray of shape \(2, 2\) and dtype int32; for several "
                                 r"inputs pass one key"),
    ([0, 1], r"got a list; for several inputs pass one key, not one per input$"),
])
def test_a_key_of_the_wrong_type_is_refused_saying_what_it_is(split, xs, key, match):
    """A float or a str key was described as "of shape None and dtype None; for several inputs
    pass one key": shape and dtype only for arrays, the per-input hint only for several
    values, and for a float or a str that a seed is an int."""
    with pytest.raises(TypeError, match=match):
        jaxsal.smoothgrad(split, xs, 1, key=key, n=2)


# ---------------------------------------------------------------- maximize
@pytest.mark.parametrize("kw, err, match", [
    (dict(targets=3.0), TypeError, "unit indices"),
    (dict(targets=None), TypeError, "unit indices"),
    (dict(targets=jaxsal.class_score(1)), TypeError, "unit indices"),
    (dict(layer=3), TypeError, "layer name"),
    (dict(image_shape=(14.5, 14, 1)), ValueError, "three ints"),
    (dict(image_shape="abc"), ValueError, "three ints"),
    (dict(learning_rate=-1.0), ValueError, "learning_rate"),
    (dict(learning_rate=float("nan")), ValueError, "learning_rate"),
    (dict(learning_rate="x"), ValueError, "learning_rate"),
    (dict(upscale_blur="x"), ValueError, "upscale_blur"),
    (dict(upscaling_steps=2, upscaling_factor="x"), ValueError, "upscaling_factor"),
    (dict(seed_images=np.full((28, 28, 1), np.nan)), ValueError, "seed_images contains NaN"),
    (dict(unit_chunk=True), ValueError, "unit_chunk"),  # was taken for chunks of 1 unit
    (dict(unit_chunk=2.0), ValueError, "unit_chunk"),
], ids=lambda v: str(v)[:30])
def test_maximize_refuses_bad_arguments(m, kw, err, match):
    kw = {"targets": 3, **kw}
    with pytest.raises(err, match=match):
        jaxsal.maximize(m, kw.pop("targets"), steps=2, **kw)


# ---------------------------------------------------------------- post-processing
def test_postprocess_odd_inputs():
    maps = np.random.RandomState(0).rand(2, 3, 5, 5)
    mask = maps > 0.5
    np.testing.assert_array_equal(jaxsal.normalize(mask), jaxsal.normalize(mask.astype(float)))
    np.testing.assert_array_equal(jaxsal.clip_percentile(mask, 10, 90),
                                  jaxsal.clip_percentile(mask.astype(np.float32), 10, 90))
    with pytest.raises(ValueError, match=r"normalize: axis=\(-2, -1\).*rank 1.*axis=-1"):
        jaxsal.normalize(np.ones(5))
    np.testing.assert_allclose(jaxsal.normalize(np.arange(5.0), axis=-1),
                               np.arange(5.0) / (4 + 1e-7), rtol=1e-6)
    with pytest.raises(ValueError, match="clip_percentile: axis=7"):
        jaxsal.clip_percentile(maps, axis=7)
    with pytest.raises(ValueError, match=r"normalize: axis=\(1, 1\)"):
        jaxsal.normalize(maps, axis=(1, 1))
    with pytest.raises(TypeError, match="expected axis as an int"):
        jaxsal.normalize(maps, axis="x")
    with pytest.raises(TypeError, match="expected axis as one int"):
        jaxsal.reduce_channels(maps, axis=(1, 2))
    with pytest.raises(TypeError, match="expected axis as an int"):
        jaxsal.reduce_channels(maps, axis=1.5)
    with pytest.raises(ValueError, match="reduce_channels: axis=4"):
        jaxsal.reduce_channels(maps, axis=4)
    with pytest.raises(ValueError, match=r"clip_percentile: expected lower in \[0, 100\] "
                       r"\(a finite number: a percentile\), got .x."):
        jaxsal.clip_percentile(maps, lower="x")
    for size in [(0, 7), (-1, 7), (7.5, 7), "ab", 7, None]:
        with pytest.raises(ValueError, match="size=.*positive ints"):
            jaxsal.resize(maps, size)
    assert jaxsal.resize(maps, np.array([7, 6])).shape == (2, 3, 7, 6)


# ---------------------------------------------------------------- explain_to_file, models
def test_explain_to_file_checks_inputs_and_method(m, x, tmp_path):
    with pytest.raises(ValueError, match=r"got shape \(28, 28, 1\) \(one example: pass "
                                         r"inputs\[None\]\)"):
        jaxsal.explain_to_file(jaxsal.saliency, m, x[0], tmp_path / "a.npy", targets=3)
    with pytest.raises(ValueError, match=r"a batch \(N, \.\.\.\).*got shape \(\)"):
        jaxsal.explain_to_file(jaxsal.saliency, m, np.float32(1), tmp_path / "b.npy")
    with pytest.raises(TypeError, match="attribution function"):
        jaxsal.explain_to_file("saliency", m, x, tmp_path / "c.npy")


def test_function_model_arguments():
    with pytest.raises(TypeError, match="fn as a function"):
        jaxsal.FunctionModel(3, {})
    with pytest.raises(TypeError, match="head_fn as a function"):
        jaxsal.FunctionModel(features=lambda p, x: x, head_fn="dense", params={})
    for bad in (5, "hwc", (28, 0, 1), (28.0, 28, 1)):
        with pytest.raises(ValueError, match="input_shape as one example's shape"):
            jaxsal.FunctionModel(lambda p, x: x, {}, input_shape=bad)
    assert jaxsal.FunctionModel(lambda p, x: x, {}, input_shape=[np.int64(4), None]
                                ).input_shape == (4, None)


def test_function_model_without_input_shape_names_the_batch_axis():
    """A FunctionModel made without input_shape cannot have x's shape checked: one example
    (H, W, C) runs as H examples and fails inside the function. The error says how x was read
    and the two fixes (it named only JAX's shape error)."""
    w = jnp.ones((6 * 6 * 2, 3))
    bare = jaxsal.FunctionModel(lambda p, v: v.reshape(v.shape[0], -1) @ p, w)
    one = np.zeros((6, 6, 2), np.float32)
    with pytest.raises(ValueError, match=r"6 examples of shape \(6, 2\)\. For one example add "
                       r"its batch axis, x\[None\]; FunctionModel\(\.\.\., input_shape="):
        jaxsal.saliency(bare, one, 0)
    assert jaxsal.saliency(bare, one[None], 0).shape == (1, 6, 6)
    checked = jaxsal.FunctionModel(lambda p, v: v.reshape(v.shape[0], -1) @ p, w,
                                   input_shape=(6, 6, 2))
    with pytest.raises(ValueError, match=r"got \(6, 6, 2\)\. Add a batch axis"):
        jaxsal.saliency(checked, one, 0)


def test_function_model_given_a_list_of_examples_says_to_stack_them():
    """A FunctionModel cannot know that it takes one input: a list of examples reaches its
    function as several inputs, which failed there with the function's own AttributeError
    ('list' object has no attribute 'reshape'), nothing saying why x was a list."""
    bare = jaxsal.FunctionModel(lambda p, v: v.reshape(v.shape[0], -1) @ p,
                                jnp.ones((6 * 6 * 2, 3)))
    examples = list(np.zeros((3, 1, 6, 6, 2), np.float32))
    with pytest.raises(ValueError, match=r"has no attribute 'reshape'\. A list x reaches a "
                       r"FunctionModel's function as it is, as a model's several inputs "
                       r"\(3 here, each batch first\).*np\.stack\(x\)"):
        jaxsal.saliency(bare, examples, 0)


def test_big_endian_maps_and_params_are_read_by_value(split, xs):
    """Big-endian maps given to deletion/infidelity/sensitivity_max's x and big-endian params
    of a FunctionModel (JAX reads no other byte order) were refused with JAX's 'Error
    interpreting argument' (the params: 'the model cannot be applied')."""
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(2, 6, 6)).astype(np.float32)
    for fn in (jaxsal.deletion, jaxsal.insertion):
        np.testing.assert_array_equal(np.asarray(fn(split, xs, maps.astype(">f4"), 0,
                                                    steps=3).scores),
                                      np.asarray(fn(split, xs, maps, 0, steps=3).scores))
    np.testing.assert_array_equal(
        np.asarray(jaxsal.infidelity(split, xs, maps.astype(">f4"), 0, key=0, n=2)),
        np.asarray(jaxsal.infidelity(split, xs, maps, 0, key=0, n=2)))
    explain = lambda v: jaxsal.saliency(split, v, 0)  # noqa: E731
    np.testing.assert_array_equal(
        np.asarray(jaxsal.sensitivity_max(explain, xs.astype(">f4"), key=0, n=2)),
        np.asarray(jaxsal.sensitivity_max(explain, xs, key=0, n=2)))
    w = rng.normal(size=(6 * 6 * 2, 3)).astype(np.float32)
    f = lambda p, v: v.reshape(v.shape[0], -1) @ p["w"]  # noqa: E731
    want = np.asarray(jaxsal.saliency(jaxsal.FunctionModel(f, {"w": w}), xs, 0))
    big = jaxsal.FunctionModel(f, {"w": w.astype(">f4")})
    np.testing.assert_array_equal(np.asarray(jaxsal.saliency(big, xs, 0)), want)
    np.testing.assert_array_equal(np.asarray(jaxsal.saliency((f, {"w": w.astype(">f4")}), xs,
                                                             0)), want)


def test_big_endian_params_of_a_keras_model(m, x):
    """KerasModel.with_params (randomization_test's way in) of big-endian weights: refused
    with JAX's 'Error interpreting argument' before."""
    params = jax.tree_util.tree_map(np.asarray, m.params)
    big = jax.tree_util.tree_map(lambda a: a.astype(a.dtype.newbyteorder(">")), params)
    np.testing.assert_array_equal(np.asarray(m.with_params(big)(x)),
                                  np.asarray(m.with_params(params)(x)))


def test_cli_option_reads_python_booleans():
    """``--option upsample=False`` was the string "False", which upsampled."""
    from jaxsal.cli import _parse_option

    assert _parse_option("upsample=False") == ("upsample", False)
    assert _parse_option("upsample=false") == ("upsample", False)
    assert _parse_option("abs_first=True") == ("abs_first", True)
    assert _parse_option("reduce=None") == ("reduce", None)
    assert _parse_option("reduce=sum") == ("reduce", "sum")


def test_cli_option_reads_python_number_literals_as_numbers():
    """``--option noise_level=.1`` (also ``1.``, ``+0.1``: numbers to Python, not JSON) was
    the string '.1', refused as not a number, or converted later (``fill=.5``), making
    another job than ``fill=0.5``. Read as Python's ``int``/``float`` read them; a word, an
    underscore (``1_0``) and ``nan``/``inf`` are kept as written."""
    from jaxsal.cli import _parse_option

    for text in (".1", "1.", "+0.1", "-.5", "1e3", "1E-2", "+3", "-0", "2.50"):
        want = int(text) if text.lstrip("+-").isdigit() else float(text)
        name, got = _parse_option(f"x={text}")
        assert (name, got, type(got)) == ("x", want, type(want)), text
    for text in ("sum", "1_0", "nan", "inf", "1e", ".", "+", "1.2.3", "0x10"):
        assert _parse_option(f"x={text}") == ("x", text), text


def test_a_fractional_count_is_named_as_the_option_to_pass(split, xs):
    """The fix in the message is valid Python: "pass e.g. n=4", not "n (noisy samples)=4"."""
    with pytest.raises(ValueError, match=r"got 2\.5; a count is a whole number: pass an int, "
                                         r"e\.g\. n=round\(\.\.\.\)$"):
        jaxsal.smoothgrad(split, xs, 0, key=0, n=2.5)


def test_raw_integer_images_are_refused_as_images_with_the_ways_that_work(tmp_path):
    """A model of raw uint8 images (a uint8 InputLayer, then Rescaling): the methods that
    need a gradient of x or fractions of its pixels (RISE's and Score-CAM's masks,
    infidelity's noise) refuse them naming images and the way on, attribution at the
    Rescaling layer (which works), not token ids and an embedding the model lacks."""
    keras = pytest.importorskip("keras")
    from model_import import load_keras

    inp = keras.Input((6, 6, 2), dtype="uint8")
    h = keras.layers.Rescaling(1 / 255.0, name="scale")(inp)
    h = keras.layers.Conv2D(3, 3, activation="relu", name="conv")(h)
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(h))
    keras.Model(inp, out).save(tmp_path / "u8.keras")
    m = load_keras(tmp_path / "u8.keras")
    u8 = np.random.default_rng(0).integers(0, 256, (2, 6, 6, 2)).astype(np.uint8)
    for call in (lambda: jaxsal.saliency(m, u8, 1), lambda: jaxsal.rise(m, u8, 1, key=0, n=2),
                 lambda: jaxsal.scorecam(m, u8, 1, layer="conv")):
        with pytest.raises(TypeError) as err:
            call()
        msg = str(err.value)
        assert "raw integer images (uint8)" in msg and "layer='scale'" in msg, msg
        assert "token" not in msg and "embedding" not in msg, msg
    at = jaxsal.saliency(m, u8, 1, layer="scale", reduce=None)
    assert at.shape == (2, 6, 6, 2) and np.isfinite(np.asarray(at)).all()
    # float images (already scaled) given to it: the raw pixels are asked for, not ids
    with pytest.raises(TypeError, match=r"raw integer images \(uint8\).*scales them itself.*"
                                        r"x\.astype\(np\.uint8\)") as err:
        jaxsal.occlusion(m, u8 / 255.0, 1, patch=3)
    assert "token" not in str(err.value)


def test_fill_outside_the_integer_inputs_range_is_refused():
    """An occlusion fill or an insertion baseline for integer inputs (raw uint8 pixels, ids)
    outside their dtype's range: an array was cast with wrap-around (300 -> 44, -1 -> 255)
    and the model explained with another fill without a word; a Python int raised
    OverflowError. Refused with the range; values in it are taken as given."""
    w = jnp.asarray(np.random.default_rng(0).normal(size=(72, 2)), jnp.float32)
    m = jaxsal.FunctionModel(lambda p, v: v.reshape(len(v), -1).astype(jnp.float32) @ p, w)
    u8 = np.random.default_rng(1).integers(0, 256, (2, 6, 6, 2)).astype(np.uint8)
    for fill in (300, -1, np.full((6, 6, 2), 300.0), np.full((2,), -1, np.int32), 2**70,
                 -2**70):  # (beyond int64: a bare OverflowError from NumPy)
        with pytest.raises(ValueError, match=r"fill.*uint8's range \[0, 255\].*got"):
            jaxsal.occlusion(m, u8, 1, patch=3, fill=fill)
    with pytest.raises(ValueError, match=r"baseline.*uint8's range \[0, 255\]"):
        jaxsal.insertion(m, u8, np.zeros((2, 6, 6), np.float32), 1, baseline=256)
    ok = jaxsal.occlusion(m, u8, 1, patch=3, fill=np.full((6, 6, 2), 255.0))
    np.testing.assert_allclose(ok, jaxsal.occlusion(m, u8, 1, patch=3, fill=255))


def test_finite_fill_beyond_the_float_inputs_range_is_refused_naming_the_range():
    """A finite fill or baseline beyond float32's range (1e39, 10**39) for float32 inputs was
    cast to inf first, then refused as holding "NaN or infinite values" with np.nan_to_num as
    the fix. Refused naming the range; a NaN or inf fill keeps its own message."""
    w = jnp.ones((4, 3), jnp.float32)
    m = jaxsal.FunctionModel(lambda p, v: jnp.tanh(v.reshape(len(v), -1)) @ p, w)
    x = np.full((2, 2, 2, 1), 0.5, np.float32)
    calls = {"fill": [lambda f: jaxsal.occlusion(m, x, 0, patch=1, fill=f),
                      lambda f: jaxsal.deletion(m, x, np.ones((2, 2, 2)), 0, steps=2, fill=f)],
             "baseline": [lambda f: jaxsal.integrated_gradients(m, x, 0, steps=2, baseline=f)]}
    for name, fs in calls.items():
        for f in fs:
            for big in (1e39, -10**39, np.full((2, 2, 1), 1e39)):
                with pytest.raises(ValueError, match=name + r" holds values up to 1e\+39 in "
                                                     r"magnitude, beyond float32's range"):
                    f(big)
            with pytest.raises(ValueError, match=name + " contains NaN or infinite values"):
                f(np.inf)


@pytest.mark.skipif(jax.config.jax_enable_x64, reason="narrowing happens without x64 only")
def test_64_bit_inputs_beyond_the_32_bit_range_are_refused():
    """Without jax_enable_x64 JAX computes float64 in float32 and int64 (uint64) in int32
    (uint32). A float64 input beyond float32's range (1e39) passed the finite check and became
    inf (saliency gave zeros, integrated gradients blamed the model); an int64 id of 2**32 + 1
    wrapped to 1, and so did int64 maps. Refused naming the range; values in it are taken."""
    w = jnp.ones((4, 3), jnp.float32)
    m = jaxsal.FunctionModel(lambda p, v: jnp.tanh(v.astype(jnp.float32)) @ p, w)
    for big in (1e39, -1e39):
        x = np.full((2, 4), 0.5)
        x[1, 2] = big
        with pytest.raises(ValueError, match=r"x holds values up to 1e\+39 in magnitude, "
                                             r"beyond float32's range \(3.4e\+38\).*"
                                             r"rescale.*jax_enable_x64"):
            jaxsal.saliency(m, x, 0)
    x[1, 2] = np.nan  # NaN stays a NaN, not a range error; so in a NumPy bfloat16 array
    for v in (x, np.asarray(jnp.asarray(x, jnp.bfloat16))):
        with pytest.raises(ValueError, match="NaN or infinite"):
            jaxsal.saliency(m, v, 0)
    ids = np.array([[2**32 + 1, 2, 3, 4], [1, 2, 3, 4]], np.int64)
    for bad in (ids, ids.astype(np.uint64), -ids):
        with pytest.raises(ValueError, match=r"x holds .*beyond u?int32's range \[.*\].*"
                                             r"jax_enable_x64"):
            jaxsal.occlusion(m, bad, 0, patch=1, fill=0)
    ok = jaxsal.occlusion(m, ids % 7, 0, patch=1, fill=0)
    np.testing.assert_array_equal(ok, jaxsal.occlusion(m, (ids % 7).astype(np.int32), 0,
                                                       patch=1, fill=0))
    with pytest.raises(ValueError, match=r"maps hold .*beyond int32's range"):
        jaxsal.deletion(m, ids % 7, ids.astype(np.int64), 0, fill=0)
