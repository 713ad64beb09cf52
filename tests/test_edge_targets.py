"""Edge cases of targets and arguments: indices JAX would clamp, binary class ids in
``maximize``, multi-output Score-CAM, occlusion strides, post-processing of odd inputs and
argument validation. Tiny models built in-test."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal


def _conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.fixture(scope="module")
def split():
    """A conv layer "conv" (5 channels) and a 3-class head, split for the CAMs."""
    k1, k2 = jax.random.split(jax.random.key(0))
    params = {"k": jax.random.normal(k1, (3, 3, 2, 5)), "w": jax.random.normal(k2, (5, 3))}

    def features(p, x):
        return jax.nn.relu(_conv(x, p["k"]))

    def head_fn(p, a):
        return a.mean(axis=(1, 2)) @ p["w"]

    return jaxsal.FunctionModel(features=features, head_fn=head_fn, params=params,
                                layer="conv")


@pytest.fixture(scope="module")
def x():
    return np.random.RandomState(0).rand(2, 6, 6, 2).astype(np.float32)


# ---------------------------------------------------------------- indices JAX would clamp
@pytest.mark.parametrize("method", [jaxsal.saliency, jaxsal.gradcam, jaxsal.occlusion])
def test_class_score_out_of_range_raises(split, x, method):
    opts = {"patch": 3} if method is jaxsal.occlusion else {}
    with pytest.raises(ValueError, match=r"class_score index out of range.*0 <= index < 3.*got 5"):
        method(split, x, jaxsal.class_score(5), **opts)
    with pytest.raises(ValueError, match="got -1"):
        method(split, x, [jaxsal.class_score(0), jaxsal.class_score(-1)], **opts)


def test_neuron_out_of_range_raises(split, x):
    with pytest.raises(ValueError, match=r"channel 99 out of range.*5 channels"):
        jaxsal.saliency(split, x, jaxsal.neuron("conv", 99))
    with pytest.raises(ValueError, match=r"index 7 out of range on axis 2.*0 <= index < 5"):
        jaxsal.saliency(split, x, jaxsal.neuron("conv", (1, 2, 7)))
    with pytest.raises(ValueError, match="expected 3 indices, got 2"):
        jaxsal.saliency(split, x, jaxsal.neuron("conv", (1, 2)))
    # in range: the same map as the equivalent score written by hand
    got = jaxsal.saliency(split, x, jaxsal.neuron("conv", (1, 2, 4)), reduce=None)
    g = jax.grad(lambda xx: split.features(split.params, xx)[:, 1, 2, 4].sum())(x)
    np.testing.assert_allclose(got, g, rtol=1e-5, atol=1e-6)


def test_score_factories_take_integer_indices_only(split, x):
    """class_score and neuron index units as class ids do: a fraction or a bool is refused
    (int() made class_score(2.7) unit 2 and neuron("conv", True) channel 1, where
    targets=2.7 and targets=True are refused); NumPy and 0-d JAX integers are ids."""
    for bad in (2.7, 1.0, True, np.bool_(False), "1"):
        with pytest.raises(TypeError, match="expected an integer index"):
            jaxsal.class_score(bad)
        with pytest.raises(TypeError, match="expected an integer index"):
            jaxsal.neuron("conv", bad)
    with pytest.raises(TypeError, match=r"neuron\('conv', \(1, 2.5, 0\)\).*integer index"):
        jaxsal.neuron("conv", (1, 2.5, 0))
    assert jaxsal.class_score(np.int64(2)) == jaxsal.class_score(jnp.int32(2))
    assert jaxsal.neuron("conv", [np.int32(1), 2, jnp.int32(4)]) == jaxsal.neuron("conv",
                                                                                  (1, 2, 4))
    # a unit as a 1-D integer array is the tuple (it was refused, told to use int(...));
    # other arrays are refused with what works
    for unit in (np.array([1, 2, 4]), jnp.array([1, 2, 4], jnp.int32)):
        assert jaxsal.neuron("conv", unit) == jaxsal.neuron("conv", (1, 2, 4))
    with pytest.raises(TypeError, match=r"1-D array of integer indices, got dtype float.*"
                                        r"\.astype\(int\)"):
        jaxsal.neuron("conv", np.array([1.0, 2.0, 4.0]))
    with pytest.raises(TypeError, match=r"array of shape \(1, 3\); one unit is a tuple"):
        jaxsal.neuron("conv", np.array([[1, 2, 4]]))
    with pytest.raises(TypeError, match=r"array of shape \(2,\); for several units.*"
                                        r"class_score\(i\) for i in ids"):
        jaxsal.class_score(np.asarray([1, 2]))


def test_a_score_object_with_a_layer_attribute_scores_the_outputs(split, x):
    """Only a ``jaxsal.neuron`` score reads a layer: a score object of the user's own with a
    ``layer`` field (a label of theirs) is given the outputs, as every score function is (it
    was given that layer's activation, silently)."""
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Score:
        unit: int
        layer: str = "conv"

        def __call__(self, y):
            return y.reshape(len(y), -1)[:, self.unit]  # (N,) of outputs or of any layer

    got = jaxsal.saliency(split, x, Score(1), reduce=None)
    head = lambda xx: split.head_fn(split.params, split.features(split.params, xx))  # noqa
    want = jax.grad(lambda xx: head(xx)[:, 1].sum())(x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_neuron_channel_of_a_channels_first_layer(split, x):
    """An int index is a channel: axis 1 of a channels-first layer, not its last axis."""
    cf = jaxsal.FunctionModel(
        features=lambda p, xx: jnp.moveaxis(split.features(p, jnp.moveaxis(xx, 1, -1)), -1, 1),
        head_fn=lambda p, a: split.head_fn(p, jnp.moveaxis(a, 1, -1)), params=split.params,
        layer="conv", data_format="channels_first")
    xc = np.moveaxis(x, -1, 1)
    a = jaxsal.saliency(split, x, jaxsal.neuron("conv", 4), reduce=None)
    b = jaxsal.saliency(cf, xc, jaxsal.neuron("conv", 4), reduce=None)
    np.testing.assert_allclose(np.moveaxis(np.asarray(b), 1, -1), a, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="has 5 channels"):
        jaxsal.saliency(cf, xc, jaxsal.neuron("conv", 5))


# ---------------------------------------------------------------- multi-output
@pytest.fixture(scope="module")
def two_outputs(split):
    return jaxsal.FunctionModel(
        features=split.features, params=split.params, layer="conv",
        head_fn=lambda p, a: [split.head_fn(p, a), a.max(axis=(1, 2, 3))[:, None]])


@pytest.mark.parametrize("kind", ["list", "dict"])
def test_scorecam_multi_output_softmax_is_refused_clearly(two_outputs, split, x, kind):
    """A dict of outputs slipped past the check (lists and tuples only) and failed inside the
    traced program with jax.nn.softmax's TypeError on a dict."""
    model, first = two_outputs, "[0]"
    if kind == "dict":
        model, first = jaxsal.FunctionModel(
            features=split.features, params=split.params, layer="conv",
            head_fn=lambda p, a: {"cls": split.head_fn(p, a)}), "['cls']"
    score = lambda outs: jax.tree_util.tree_leaves(outs)[0][:, 1]  # noqa: E731
    with pytest.raises(ValueError, match="softmax=False") as e:
        jaxsal.scorecam(model, x, score)
    assert f"jax.nn.softmax(outs{first})" in str(e.value)
    assert jaxsal.scorecam(model, x, score, softmax=False).shape == (2, 6, 6)


def test_multi_output_hint_fits_the_model_type(two_outputs, x):
    with pytest.raises(ValueError, match="2 outputs") as e:
        jaxsal.saliency(two_outputs, x, 1)
    assert "with_output" not in str(e.value) and "FunctionModel(lambda p, x" in str(e.value)
    with pytest.raises(ValueError, match="2 outputs"):
        jaxsal.saliency(two_outputs, x, jaxsal.class_score(0))


# ---------------------------------------------------------------- occlusion
@pytest.mark.parametrize("side,overlap", [((4, 5), True), ((6, 6), False), ((6, 7), True)])
def test_occlusion_stride_refusal_says_whether_its_patch_overlaps(side, overlap):
    """patch=2, stride=3 on a 4x5 input was told "or patch=3 for non-overlapping patches",
    but patches of 3 at stride 3 start at rows 0, 1 and columns 0, 2 (the last one aligned
    to the border): they overlap. A patch of the stride tiles an axis only where its side is
    a multiple of the stride (6 = 2 x 3); elsewhere the refusal says that they overlap."""
    m = jaxsal.FunctionModel(lambda p, v: v.sum((1, 2)), None)
    with pytest.raises(ValueError, match=r"stride 3 is larger than the patch 2") as e:
        jaxsal.occlusion(m, np.ones((1, *side, 1), np.float32), 0, patch=2, stride=3)
    msg = str(e.value)
    assert "or patch=3" in msg
    assert ("non-overlapping" in msg) is not overlap, msg
    if overlap:
        assert re.search(r"they overlap at the border of spatial axis \d: its side [457] is no "
                         r"multiple of 3", msg), msg


def test_occlusion_stride_larger_than_patch_is_refused(split, x):
    with pytest.raises(ValueError, match=r"stride 4 is larger than the patch 2"):
        jaxsal.occlusion(split, x, 0, patch=2, stride=4)
    # a patch spanning the whole side leaves nothing uncovered: any stride is fine there
    out = jaxsal.occlusion(split, x, 0, patch=(6, 2), stride=(9, 2))
    assert np.isfinite(np.asarray(out)).all()


# ---------------------------------------------------------------- maximize: binary class ids
def test_maximize_binary_class_ids_follow_the_methods():
    """One logit z = <w, x>: class 1 maximizes z (x = [w > 0]), class 0 maximizes -z
    (x = [w < 0]), as saliency reads class 0 of a one-unit model."""
    w = jax.random.normal(jax.random.key(1), (36, 1))
    m = jaxsal.FunctionModel(lambda p, xx: xx.reshape(len(xx), -1) @ p, w, input_shape=(6, 6, 1))
    plain = dict(steps=60, key=0, regularizers=(), transforms=jaxsal.identity())
    res = jaxsal.maximize(m, "all", **plain)
    assert res.images.shape == (2, 6, 6, 1)
    want1 = (np.asarray(w)[:, 0] > 0).reshape(6, 6, 1)
    np.testing.assert_allclose(res.images[1], want1, atol=0.05)
    np.testing.assert_allclose(res.images[0], ~want1, atol=0.05)
    z = np.asarray(m(res.images))[:, 0]
    np.testing.assert_allclose(res.scores, [-z[0], z[1]], rtol=1e-5)
    g0 = jaxsal.saliency(m, res.images[:1], 0, reduce="sum")  # d(-z)/dx: class 0's score
    np.testing.assert_allclose(np.asarray(g0)[0], -np.asarray(w).reshape(6, 6), rtol=1e-5)
    with pytest.raises(ValueError, match="classes 0 .* and 1"):
        jaxsal.maximize(m, [2], steps=2)


# ---------------------------------------------------------------- post-processing
def test_resize_integer_maps_in_float():
    a = np.arange(12).reshape(3, 4)
    got = jaxsal.resize(a, (5, 7))
    np.testing.assert_allclose(got, jaxsal.resize(a.astype(np.float32), (5, 7)))
    np.testing.assert_allclose(np.asarray(got)[0], [0, 0.5, 1, 1.5, 2, 2.5, 3])
    assert jaxsal.resize(a, (5, 7), method="nearest").dtype == jnp.float32


def test_axis_as_a_list():
    maps = np.random.RandomState(0).rand(2, 3, 4, 4).astype(np.float32)
    np.testing.assert_array_equal(jaxsal.normalize(maps, axis=[1, 2, 3]),
                                  jaxsal.normalize(maps, axis=(1, 2, 3)))
    np.testing.assert_array_equal(jaxsal.clip_percentile(maps, 1, 90, axis=[1, 2, 3]),
                                  jaxsal.clip_percentile(maps, 1, 90, axis=(1, 2, 3)))


# ---------------------------------------------------------------- argument validation
@pytest.mark.parametrize("kw, match", [
    (dict(chunk_size=0), "chunk_size"), (dict(chunk_size=-3), "chunk_size"),
    (dict(chunk_size=2.7), "chunk_size"), (dict(chunk_size=True), "chunk_size"),
    (dict(memory_budget=0), "memory_budget"), (dict(memory_budget=-1), "memory_budget"),
    (dict(memory_budget=float("nan")), "memory_budget")])
def test_bad_chunk_size_and_memory_budget_are_refused(split, x, kw, match):
    with pytest.raises(ValueError, match=match):
        jaxsal.saliency(split, x, [0, 1, 2], **kw)


def test_numpy_integers_are_accepted(split, x):
    ref = jaxsal.scorecam(split, x, 1, top_k=4, batch_size=8)
    np.testing.assert_allclose(
        jaxsal.scorecam(split, x, 1, top_k=np.int64(4), batch_size=np.int64(8)), ref)
    jaxsal.occlusion(split, x, 1, patch=3, batch_size=np.int32(8))
    jaxsal.saliency(split, x, [0, 1, 2], chunk_size=np.int64(2), memory_budget=2e8)
    jaxsal.smoothgrad(split, x, 1, key=0, n=np.int64(2))


def test_int_seed_is_a_key_everywhere(split, x):
    np.testing.assert_array_equal(jaxsal.smoothgrad(split, x, 1, key=3, n=2),
                                  jaxsal.smoothgrad(split, x, 1, key=jax.random.key(3), n=2))
    for bad in (True, 1.5, jnp.zeros((2,), jnp.float32), jax.random.split(jax.random.key(0))):
        with pytest.raises(TypeError, match="PRNG key"):
            jaxsal.smoothgrad(split, x, 1, key=bad, n=2)
    with pytest.raises(ValueError, match="explicit PRNG key"):
        jaxsal.smoothgrad(split, x, 1, n=2)
    # JAX's default 32-bit mode keeps 32 bits of a seed: key(2**32) and key(2**40) are key(0),
    # key(-1) is key(2**32 - 1). Such seeds gave another seed's draws without a word
    if not jax.config.jax_enable_x64:
        for bad in (2**32, 2**70, -1, np.int64(2**40)):
            with pytest.raises(ValueError, match=r"int seed in \[0, 2\*\*32\).*seed % 2\*\*32"):
                jaxsal.smoothgrad(split, x, 1, key=bad, n=2)
    top = np.uint32(2**32 - 1)
    np.testing.assert_array_equal(jaxsal.rise(split, x, 1, key=top, n=2),
                                  jaxsal.rise(split, x, 1, key=jax.random.key(top), n=2))


_CELLS = np.arange(36).reshape(6, 6) // 12 * 3 + np.arange(6) // 2  # XRAI: 3x3 cells of 2x2
_CELLS = jaxsal.segment_masks(_CELLS[None], dilation=None)[0]


@pytest.mark.parametrize("method", [
    jaxsal.saliency, jaxsal.scorecam, jaxsal.layercam, jaxsal.eigencam, jaxsal.occlusion,
    lambda m, x, t, **kw: jaxsal.integrated_gradients(m, x, t, steps=3, **kw),
    lambda m, x, t, **kw: jaxsal.smoothgrad(m, x, t, key=0, n=2, **kw),
    lambda m, x, t, **kw: jaxsal.xrai(m, x, t, segments=_CELLS, steps=3, min_pixel_diff=1, **kw)])
def test_class_ids_traced_under_jit_and_vmap(split, x, method):
    """Labels passed to a jitted function (a training step's ``y``) are traced class ids.
    They were refused, with the advice of a score function of the traced ids, which fails
    wherever a method runs the model on more rows than the inputs (integration steps, noisy
    or masked copies; any method once the memory budget splits the batch). Now an (N, T)
    array or one id works under jit and vmap; an id out of range, which cannot be checked
    there, gives NaN maps (not a clamped class's, nor 0s from a ReLU that drops the NaN).
    Eigen-CAM, whose map reads no class, gave an out-of-range id the finite map."""
    ids = np.array([[2, 0], [1, 2]])
    want = np.asarray(method(split, x, ids))
    run = jax.jit(lambda xx, t, **kw: method(split, xx, t, **kw))
    np.testing.assert_allclose(run(x, jnp.asarray(ids)), want, rtol=1e-5, atol=1e-6)
    small = jax.jit(lambda xx, t: method(split, xx, t, memory_budget=1))(x, jnp.asarray(ids))
    np.testing.assert_allclose(small, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run(x, jnp.int32(2)), method(split, x, 2), rtol=1e-5, atol=1e-6)
    per = jax.vmap(lambda xi, t: method(split, xi[None], t[None, None])[0, 0])(
        jnp.asarray(x), jnp.asarray(ids[:, 1]))
    np.testing.assert_allclose(per, [method(split, x[i:i + 1], ids[i:i + 1, 1:])[0, 0]
                                     for i in range(2)], rtol=1e-5, atol=1e-6)
    bad = np.asarray(run(x, jnp.array([[2, 3], [-1, 1]])))  # 3 classes: ids 3 and -1
    assert np.isnan(bad[0, 1]).all() and np.isnan(bad[1, 0]).all()
    np.testing.assert_allclose(bad[0, 0], want[0, 0], rtol=1e-5, atol=1e-6)


def test_channel_norm_of_a_traced_id_out_of_range_is_nan(split, x):
    """reduce="l2" kept the NaN maps of an id out of range as 0s (the norm of NaN)."""
    out = np.asarray(jax.jit(lambda xx, t: jaxsal.saliency(split, xx, t, reduce="l2"))(
        x, jnp.array([[2], [3]])))  # 3 classes: id 3 is out of range
    assert np.isfinite(out[0]).all() and np.isnan(out[1]).all()


def test_vargrad_of_a_traced_id_out_of_range_is_nan(fixtures_dir):
    """VarGrad's variance is clipped at 0 by a maximum that XLA:CPU fuses and that then
    dropped the NaN of an out-of-range traced id (seen on this binary model): its maps were
    finite. They are NaN."""
    from model_import import load_keras

    m = load_keras(fixtures_dir / "binary_cnn_keras3.keras")
    xs = np.random.default_rng(0).random((2, 32, 32, 3)).astype(np.float32)
    out = jax.jit(lambda xx, t: jaxsal.smoothgrad(m, xx, t, key=2, n=5, variant="vargrad"))(
        xs, jnp.array([[1], [2]]))  # two classes: id 2 is out of range
    assert np.isfinite(out[0]).all() and np.isnan(out[1]).all()


def test_lrp_traced_id_out_of_range_leaves_the_row_s_other_targets_alone(fixtures_dir):
    """LRP seeds a one-unit model's output with the target's score, picked from the (N, T)
    scores by the one-hot cotangent: ``sum(ct * s)`` put 0 * NaN (the score of an
    out-of-range traced id in the same row) into the valid target's seed, whose maps were NaN
    too. Only the out-of-range target's maps are NaN."""
    from model_import import load_keras

    m = load_keras(fixtures_dir / "binary_cnn_keras3.keras")
    xs = np.random.default_rng(0).random((2, 32, 32, 3)).astype(np.float32)
    run = jax.jit(lambda xx, t: jaxsal.lrp(m, xx, t))  # one program for both calls
    good = np.asarray(run(xs, jnp.array([[1, 0], [1, 0]])))
    bad = np.asarray(run(xs, jnp.array([[1, 0], [1, 2]])))  # two classes: id 2 is out of range
    assert np.isfinite(good).all() and np.isnan(bad[1, 1]).all()
    np.testing.assert_array_equal(bad[0], good[0])
    np.testing.assert_array_equal(bad[1, 0], good[1, 0])


def test_traced_ids_for_every_input_are_refused(split, x):
    """A traced 1-D array would list classes for every input ((N, N, ...) maps of labels
    ``y``); it cannot be checked for repeats, so it is refused, pointing to ``y[:, None]``."""
    with pytest.raises(ValueError, match=r"\(N, T\) array with N = 2.*got shape \(2,\).*"
                                         r"y\[:, None\]"):
        jax.jit(lambda xx, t: jaxsal.saliency(split, xx, t))(x, jnp.array([1, 2]))
    with pytest.raises(TypeError, match="integer class ids"):
        jax.jit(lambda xx, t: jaxsal.saliency(split, xx, t))(x, jnp.ones((2, 1)))


def test_occlusion_keeps_a_non_finite_drop_where_its_patch_is():
    """An occluded input whose score is NaN or infinite marks the positions its patch covers
    and no others (a product with the other positions' zero mask gave NaN everywhere)."""
    m = jaxsal.FunctionModel(
        lambda p, x: jnp.stack([jnp.log(x) @ p, jnp.sqrt(x - 0.5) @ p], axis=1),
        jnp.ones(3))
    x = np.array([[1.0, 2.0, 3.0]], np.float32)
    fill = np.array([0.0, 2.0, 3.0], np.float32)  # only feature 0 changes: log(0) = -inf
    np.testing.assert_array_equal(jaxsal.occlusion(m, x, 0, fill=fill), [[np.inf, 0, 0]])
    # sqrt of a negative number: NaN at feature 0 only
    np.testing.assert_array_equal(np.isnan(jaxsal.occlusion(m, x, 1, fill=fill)),
                                  [[True, False, False]])
    # every feature filled with 0: each one's own infinite drop
    np.testing.assert_array_equal(jaxsal.occlusion(m, x, 0, fill=0.0), [[np.inf] * 3])
    finite = np.asarray(jaxsal.occlusion(m, x, 0, fill=1.5))  # all finite: unchanged
    np.testing.assert_allclose(finite, np.log(x) - np.log(1.5), rtol=1e-6)


@pytest.mark.parametrize("kind", ["fused", "layer"])
def test_saved_softmax_over_one_unit_is_refused_like_the_softmax_head(kind, tmp_path):
    """Dense(1, activation="softmax") (a classic slip for a binary classifier) outputs 1.0
    for every input: its saved head gave all-zero maps without a word, where head="softmax"
    is refused. It is refused the same way, with the heads that explain it; a softmax over
    several steps of which the output keeps one is not constant and still runs."""
    keras = pytest.importorskip("keras")
    from model_import import load_keras

    inp = keras.Input((6, 6, 2))
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(3, 3, name="conv")(inp))
    out = (keras.layers.Dense(1, activation="softmax")(h) if kind == "fused"
           else keras.layers.Softmax()(keras.layers.Dense(1)(h)))
    keras.Model(inp, out).save(tmp_path / "one.keras")
    m = load_keras(tmp_path / "one.keras")
    xs = np.random.RandomState(0).rand(2, 6, 6, 2).astype(np.float32)
    np.testing.assert_allclose(m(xs), 1.0)
    for method in (jaxsal.saliency, jaxsal.occlusion):
        with pytest.raises(ValueError, match=r"softmax over one unit.*constant.*'logits'"):
            method(m, xs, 1)
    assert np.abs(np.asarray(jaxsal.saliency(m, xs, 1, head="logits"))).max() > 0
    # a softmax over 3 units of which the output keeps the last: a probability, explained
    seq = keras.Input((3, 2))
    p = keras.layers.Softmax(axis=1)(keras.layers.Dense(1)(seq))  # (N, 3, 1)
    last = keras.layers.Flatten()(keras.layers.Cropping1D((2, 0))(p))  # (N, 1)
    keras.Model(seq, last).save(tmp_path / "pick.keras")
    pick = load_keras(tmp_path / "pick.keras")
    seqs = np.random.RandomState(1).rand(2, 3, 2).astype(np.float32)
    assert np.abs(np.asarray(jaxsal.saliency(pick, seqs, 1))).max() > 0


def test_a_softmax_over_one_channel_of_a_map_is_refused(tmp_path):
    """A one-channel segmentation map under a softmax, ``Conv2D(1, 1, activation="softmax")``
    saved or a sigmoid one under head="softmax", is 1.0 everywhere: every map was 0 without a
    word (the refusals read one-unit outputs ``(N, 1)`` only). Refused, when the model is
    made and by the methods; a softmax over another axis of such a shape is not constant
    (a ``Softmax(axis=1)`` over 3 steps of ``(N, 3, 1)``) and is not refused."""
    keras = pytest.importorskip("keras")
    from model_import import load_keras

    inp = keras.Input((4, 4, 2))
    h = keras.layers.Conv2D(3, 3, padding="same", activation="relu")(inp)
    for act in ("softmax", "sigmoid"):
        out = keras.layers.Conv2D(1, 1, activation=act)(h)
        keras.Model(inp, out).save(tmp_path / f"{act}.keras")
    xs = np.random.RandomState(0).rand(2, 4, 4, 2).astype(np.float32)
    score = lambda y: y[:, 1:3, 1:3, 0].sum(axis=(1, 2))  # noqa: E731
    saved = load_keras(tmp_path / "softmax.keras")
    np.testing.assert_allclose(saved(xs), 1.0)
    with pytest.raises(ValueError, match=r"saved output \(shape \(4, 4, 1\) per example\) is a "
                                         r"softmax over an axis of one value.*'logits'"):
        jaxsal.occlusion(saved, xs, score, patch=2)
    sigmoid = tmp_path / "sigmoid.keras"
    with pytest.raises(ValueError, match=r"normalizes the output's last axis, of one value"):
        load_keras(sigmoid).with_head("softmax")
    with pytest.raises(ValueError, match=r"normalizes the output's last axis, of one value"):
        jaxsal.saliency(load_keras(sigmoid), xs, score, head="softmax")
    seq = keras.Input((3, 2))
    keras.Model(seq, keras.layers.Softmax(axis=1)(keras.layers.Dense(1)(seq))).save(
        tmp_path / "steps.keras")
    steps = load_keras(tmp_path / "steps.keras", head="softmax")  # kept: (N, 3, 1), not 1.0
    seqs = np.random.RandomState(1).rand(2, 3, 2).astype(np.float32)
    assert np.abs(np.asarray(jaxsal.saliency(steps, seqs, lambda y: y[:, 0, 0]))).max() > 0


def test_constant_one_unit_output_read_by_a_score_function_is_refused(tmp_path):
    """Of a model of several outputs, a score function reading a one-unit output that is
    constant gave all-zero maps without a word: under head="softmax" (a linear ``Dense(1)``
    becomes softmax(z) = 1.0) and as saved (``Dense(1, activation="softmax")``). Refused as
    for one output; scores reading only the other outputs still run."""
    keras = pytest.importorskip("keras")
    from model_import import load_keras

    inp = keras.Input((5,))
    h = keras.layers.Dense(4, activation="relu")(inp)
    outs = [keras.layers.Dense(3, activation="softmax", name="cls")(h),
            keras.layers.Dense(1, name="reg")(h),
            keras.layers.Dense(1, activation="softmax", name="bin")(h)]
    model = keras.Model(inp, outs)
    model.save(tmp_path / "three.keras")
    m = load_keras(tmp_path / "three.keras")
    xs = np.random.RandomState(0).randn(2, 5).astype(np.float32)
    np.testing.assert_allclose(model(xs)[2], 1.0)  # Keras: the saved 'bin' is constant
    reg, bin_ = (lambda o: o[1][:, 0]), (lambda o: o[2][:, 0])
    for method in (jaxsal.saliency, jaxsal.occlusion):
        with pytest.raises(ValueError, match=r"'bin'.*softmax over one unit.*constant"):
            method(m, xs, bin_)
    with pytest.raises(ValueError, match=r"'reg'.*head='softmax' on a one-unit output is const"):
        jaxsal.saliency(m, xs, reg, head="softmax")
    with pytest.raises(ValueError, match=r"'bin'.*softmax over one unit.*constant"):
        jaxsal.saliency(m, xs, [lambda o: o[0][:, 1], bin_], head="softmax")
    cls = jaxsal.saliency(m, xs, lambda o: o[0][:, 1], head="softmax")
    assert np.abs(np.asarray(cls)).max() > 0
    assert np.abs(np.asarray(jaxsal.saliency(m, xs, reg))).max() > 0


def test_score_functions_must_return_real_floats(split, x):
    """A score function returning integers or booleans (an argmax, a comparison) has a zero
    gradient: the gradient methods gave all-zero maps without a word, and occlusion failed
    in a JAX subtraction (booleans) or returned complex maps (complex scores). Refused in
    every method, naming the dtype and the cast."""
    for bad, dtype in ((lambda y: jnp.argmax(y, 1), "int32"), (lambda y: y[:, 0] > 0, "bool"),
                       (lambda y: y[:, 0].astype(jnp.complex64), "complex64")):
        for method, kw in ((jaxsal.saliency, {}), (jaxsal.occlusion, dict(patch=3)),
                           (jaxsal.integrated_gradients, dict(steps=2))):
            with pytest.raises(TypeError, match=rf"real floating-point scores.*{dtype}.*astype"):
                method(split, x, bad, **kw)
    # a half-precision score is a float: widened as before
    half = jaxsal.saliency(split, x, lambda y: y[:, 1].astype(jnp.float16))
    assert half.dtype == jnp.float32 and float(jnp.abs(half).max()) > 0


def test_function_model_perturbation_must_keep_the_features_shape(split):
    # as KerasModel.apply: a delta that broadcast A to more rows gave more outputs than inputs
    x = jax.random.uniform(jax.random.key(3), (1, 6, 6, 2))
    a = split.apply(split.params, x, capture=["conv"])[1]["conv"]
    with pytest.raises(ValueError, match=r"perturb\['conv'\]: expected .* shape \(1, 6, 6, 5\)"):
        split.apply(split.params, x, perturb={"conv": jnp.zeros((3,) + a.shape[1:])})
    assert split.apply(split.params, x, perturb={"conv": jnp.zeros(a.shape[1:])}).shape == (1, 3)


def test_occlusion_refuses_a_non_finite_clean_score():
    """A NaN score on the clean input (every occluded copy finite) gave all-NaN maps without
    a word; it is refused naming the input, and check_finite=False or the caller's jit return
    the maps as computed."""
    m = jaxsal.FunctionModel(lambda p, x: jnp.stack([jnp.sqrt(p - x.sum(1)), x.sum(1)], 1),
                             jnp.float32(3.5))
    x = np.array([[1.0, 1.0, 1.0, 1.0], [0.5, 0.5, 0.5, 0.5]], np.float32)  # sums 4 and 2
    with pytest.raises(jaxsal.NonFiniteMaps, match=r"occlusion: the maps of input 0 are not "
                                                   r"finite: the model's score on the clean "
                                                   r"input is NaN/inf") as e:
        jaxsal.occlusion(m, x, [0, 1])
    assert e.value.rows == [0]
    got = np.asarray(jaxsal.occlusion(m, x, [0, 1], check_finite=False))
    assert np.isnan(got[0, 0]).all() and np.isfinite(got[[0, 1, 1], [1, 0, 1]]).all()
    np.testing.assert_allclose(got[1, 0], np.sqrt(1.5) - np.sqrt(2.0), rtol=1e-6)
    traced = jax.jit(lambda v: jaxsal.occlusion(m, v, [0, 1]))(x)
    np.testing.assert_array_equal(traced, got)


def test_bools_among_class_ids_and_ids_beyond_int64_are_refused():
    """A bool in a list of ids is refused as a bool target is (not read as 0/1); an id beyond
    int64 (NumPy makes an object array of it) says it is out of range."""
    m = jaxsal.FunctionModel(lambda p, x: x @ p, np.ones((5, 4), np.float32))
    x = np.ones((3, 5), np.float32)
    for bad in ([True, 0], (0, np.bool_(False)), [[0], [True], [1]]):
        with pytest.raises(TypeError, match=r"expected targets as class ids \(int\), got a bool"):
            jaxsal.saliency(m, x, bad)
    for big in (2**70, [0, 2**70], -2**70):
        with pytest.raises(ValueError, match=r"target ids out of range: expected 0 <= id < 4"):
            jaxsal.saliency(m, x, big)


@pytest.mark.parametrize("patch,stride", [(2, 9), (2, 4), ((4, 2), 9)])
def test_occlusion_stride_refusal_offers_a_patch_and_stride_that_work(split, x, patch, stride):
    """The refusal of stride > patch offered "patch=9 for non-overlapping patches", larger
    than the 6-pixel side (refused in turn), and stride=4 for patch (4, 2), larger than the
    2 of the other axis. Each alternative, applied as written with the other option kept,
    is taken."""
    with pytest.raises(ValueError, match="is larger than the patch") as e:
        jaxsal.occlusion(split, x, 0, patch=patch, stride=stride)
    fix = re.search(r"e\.g\. stride=(\(.+?\)|\d+), or patch=(\(.+?\)|\d+)", str(e.value))
    for kw in ({"patch": patch, "stride": eval(fix.group(1))},  # noqa: S307
               {"patch": eval(fix.group(2)), "stride": stride}):  # noqa: S307
        assert np.isfinite(np.asarray(jaxsal.occlusion(split, x, 0, **kw))).all(), kw
