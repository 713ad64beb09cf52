"""A model with several outputs viewed through ``with_output``: the layers of the other
outputs' branches cannot change the selected output. The default CAM layer is not taken from
them (its maps would be 0), methods reading gradients or ablations at such a layer refuse it,
and the randomization test does not spend its first steps on them (a rank correlation of 1
that would read as a failed sanity check)."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal


@pytest.fixture(scope="module")
def two_heads(tmp_path_factory):
    """A shared trunk, then ``conv_a -> cls`` (3 classes) and ``conv_b -> reg`` (1 unit); the
    ``conv_b`` branch is built last, so it holds the model's last convolution."""
    import keras
    from model_import import load_keras

    keras.utils.set_random_seed(0)
    i = keras.Input((8, 8, 2), name="img")  # (named: Keras numbers unnamed inputs per process)
    t = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="trunk")(i)
    a = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="conv_a")(t)
    b = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_b")(t)
    cls = keras.layers.Dense(3, name="cls")(keras.layers.GlobalAveragePooling2D(name="gap_a")(a))
    reg = keras.layers.Dense(1, name="reg")(keras.layers.GlobalAveragePooling2D(name="gap_b")(b))
    path = tmp_path_factory.mktemp("branches") / "two_heads.keras"
    keras.Model(i, [cls, reg]).save(path)
    return load_keras(path)


X = np.random.default_rng(0).normal(size=(2, 8, 8, 2)).astype(np.float32)


def test_used_layers_follow_the_selected_output(two_heads):
    m = two_heads
    assert m.used_layers == m.layer_names  # every layer feeds one of the two outputs
    assert m.with_output("cls").used_layers == ["img", "trunk", "conv_a", "gap_a", "cls"]
    assert m.with_output(1).used_layers == ["img", "trunk", "conv_b", "gap_b", "reg"]
    assert m.with_output("cls").with_head("logits").used_layers == \
        m.with_output("cls").used_layers


def test_the_default_cam_layer_is_on_the_selected_outputs_branch(two_heads):
    cls = two_heads.with_output("cls").with_head("logits")
    reg = two_heads.with_output("reg")
    assert jaxsal.default_cam_layer(cls) == "conv_a"
    assert jaxsal.default_cam_layer(reg) == "conv_b"
    maps = np.asarray(jaxsal.gradcam(cls, X, [0, 2]))
    np.testing.assert_array_equal(maps, np.asarray(jaxsal.gradcam(cls, X, [0, 2],
                                                                  layer="conv_a")))
    assert np.abs(maps).max() > 0


def test_the_default_cam_layer_is_on_the_branch_the_score_reads(two_heads):
    """Of all outputs (no ``with_output``), a score function reading one output, or a unit of
    a layer, took the last convolution of every branch, ``conv_b``, whose gradients are 0 for
    the ``cls`` score: every gradient CAM was 0 everywhere, without a word. The default is
    now the last convolution among the layers the scores depend on (traced, nothing
    computed): the maps of ``layer="conv_a"``."""
    for targets in (lambda o: o[0][:, 1], jaxsal.neuron("conv_a", 1)):
        got = np.asarray(jaxsal.gradcam(two_heads, X, targets))
        assert np.abs(got).max() > 0
        np.testing.assert_array_equal(got, np.asarray(jaxsal.gradcam(two_heads, X, targets,
                                                                     layer="conv_a")))
    # (every CAM finds its layer in one place, _cam_layer: one more of them)
    assert np.abs(np.asarray(jaxsal.layercam(two_heads, X, lambda o: o[0][:, 1]))).max() > 0
    # a score of both outputs reads both branches: the model's default, the last of them
    both = np.asarray(jaxsal.gradcam(two_heads, X, lambda o: o[0][:, 1] + o[1][:, 0]))
    np.testing.assert_array_equal(both, np.asarray(jaxsal.gradcam(
        two_heads, X, lambda o: o[0][:, 1] + o[1][:, 0], layer="conv_b")))
    with pytest.raises(ValueError, match="no spatial layer the scores depend on"):
        jaxsal.gradcam(two_heads, X, lambda o: jnp.ones(o[0].shape[:1]))


def test_a_layer_the_output_does_not_depend_on_is_refused_where_it_would_give_zeros(
        two_heads):
    cls = two_heads.with_output("cls").with_head("logits")
    match = "layer 'conv_b' does not feed the model's output 'cls'.*with_output"
    for method in (jaxsal.gradcam, jaxsal.gradcam_plus_plus, jaxsal.layercam,
                   jaxsal.ablationcam, jaxsal.guided_gradcam):
        with pytest.raises(ValueError, match=match):
            method(cls, X, 0, layer="conv_b")
    for method in (jaxsal.saliency, jaxsal.integrated_gradients, jaxsal.internal_influence):
        with pytest.raises(ValueError, match=match):
            method(cls, X, 0, layer="conv_b")
    # methods that read the layer's activations alone take any layer
    assert np.abs(np.asarray(jaxsal.eigencam(cls, X, layer="conv_b"))).max() > 0
    score = np.asarray(jaxsal.scorecam(cls, X, 0, layer="conv_b"))
    assert score.shape == (2, 8, 8) and np.isfinite(score).all()
    # the same layer is fine for the output it feeds
    assert np.abs(np.asarray(jaxsal.gradcam(two_heads.with_output("reg"), X, 0,
                                            layer="conv_b"))).max() > 0


def test_the_randomization_test_randomizes_the_selected_outputs_layers(two_heads):
    cls = two_heads.with_output("cls").with_head("logits")
    corr = jaxsal.randomization_test(lambda m: jaxsal.saliency(m, X, 0), cls, key=0)
    assert list(corr) == ["cls", "conv_a", "trunk"]
    assert all(np.all(np.asarray(v) < 0.999) for v in corr.values())
    reg = two_heads.with_output("reg")
    assert list(jaxsal.randomization_test(lambda m: jaxsal.saliency(m, X, 0), reg,
                                          key=0)) == ["reg", "conv_b", "trunk"]
    # named explicitly (a negative control), another branch's layer is still randomized
    alone = jaxsal.randomization_test(lambda m: jaxsal.saliency(m, X, 0), cls, key=0,
                                      layers=["conv_b"])
    np.testing.assert_array_equal(np.asarray(alone["conv_b"]), [1.0, 1.0])


def test_a_nested_model_used_through_one_of_its_outputs(tmp_path):
    """A nested model with two outputs, of which the outer model uses the first: the
    second's branch inside it is not used."""
    import keras
    from model_import import load_keras

    keras.utils.set_random_seed(1)
    i = keras.Input((8, 8, 2))
    t = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="trunk")(i)
    a = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="conv_a")(t)
    b = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_b")(t)
    inner = keras.Model(i, [a, b], name="inner")
    o = keras.Input((8, 8, 2))
    feats = inner(o)[0]
    out = keras.layers.Dense(3, name="out")(keras.layers.GlobalAveragePooling2D()(feats))
    keras.Model(o, out).save(tmp_path / "nested.keras")
    m = load_keras(tmp_path / "nested.keras").with_head("logits")
    assert "inner/conv_a" in m.used_layers and "inner/trunk" in m.used_layers
    assert "inner/conv_b" not in m.used_layers and "inner/conv_b" in m.layer_names
    assert jaxsal.default_cam_layer(m) == "inner/conv_a"
    with pytest.raises(ValueError, match="'inner/conv_b' does not feed"):
        jaxsal.gradcam(m, X, 0, layer="inner/conv_b")
    assert list(jaxsal.randomization_test(lambda mm: jaxsal.saliency(mm, X, 0), m, key=0)) \
        == ["out", "inner/conv_a", "inner/trunk"]


def test_keras_operation_nodes_on_the_outputs_branch_are_taken(tmp_path):
    """Keras 3 operation nodes (``ops.relu(x)``, ``x * 2.0``) are not in ``layer_names`` (nor
    ``used_layers``), but ``layer=`` takes them: one on the selected output's branch is not
    refused as feeding no output (it was, wrongly); one on another output's branch is."""
    import keras
    from model_import import load_keras

    keras.backend.clear_session()  # the nodes' names, without the suffixes of earlier ones
    keras.utils.set_random_seed(2)
    i = keras.Input((8, 8, 2), name="x")
    a = keras.layers.Conv2D(5, 3, padding="same", name="conv_a")(i)
    b = keras.layers.Conv2D(6, 3, padding="same", name="conv_b")(i)
    a = keras.ops.relu(a) * 2.0
    b = keras.ops.sigmoid(b)
    cls = keras.layers.Dense(3, name="cls")(keras.layers.GlobalAveragePooling2D(name="gap_a")(a))
    reg = keras.layers.Dense(1, name="reg")(keras.layers.GlobalAveragePooling2D(name="gap_b")(b))
    keras.Model(i, [cls, reg]).save(tmp_path / "ops.keras")
    m = load_keras(tmp_path / "ops.keras")
    cls = m.with_output("cls").with_head("logits")
    assert cls.used_layers == ["x", "conv_a", "gap_a", "cls"]
    for op in ("relu", "multiply"):
        assert np.abs(np.asarray(jaxsal.gradcam(cls, X, 0, layer=op))).max() > 0
        assert np.abs(np.asarray(jaxsal.saliency(cls, X, 0, layer=op))).max() > 0
    with pytest.raises(ValueError, match="layer 'sigmoid' does not feed the model's output "
                                         "'cls'"):
        jaxsal.gradcam(cls, X, 0, layer="sigmoid")
    assert np.abs(np.asarray(jaxsal.gradcam(m.with_output("reg"), X, 0,
                                            layer="sigmoid"))).max() > 0


def test_scores_of_a_layer_s_unit_read_any_branch(tmp_path):
    """A ``jaxsal.neuron`` score reads a layer's unit, not the selected output: a layer on
    another output's branch feeds it, and is not refused (it was: 'does not feed the model's
    output'); the default CAM layer is then the last convolution of every branch, not one of
    the selected output's, whose gradients are 0 (it was: maps of zeros)."""
    import keras
    from model_import import load_keras

    keras.utils.set_random_seed(3)
    i = keras.Input((8, 8, 2))
    t = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="trunk")(i)
    a = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="conv_a")(t)
    b1 = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_b1")(t)
    b2 = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_b2")(b1)
    cls = keras.layers.Dense(3, name="cls")(keras.layers.GlobalAveragePooling2D()(a))
    reg = keras.layers.Dense(1, name="reg")(keras.layers.GlobalAveragePooling2D()(b2))
    keras.Model(i, [cls, reg]).save(tmp_path / "units.keras")
    m = load_keras(tmp_path / "units.keras")
    unit = jaxsal.neuron("conv_b2", 1)
    cls = m.with_output("cls")
    for method in (jaxsal.saliency, jaxsal.integrated_gradients, jaxsal.gradcam):
        got = np.asarray(method(cls, X, unit, layer="conv_b1"))
        np.testing.assert_allclose(got, np.asarray(method(m, X, unit, layer="conv_b1")))
        assert np.abs(got).max() > 0
    default = np.asarray(jaxsal.gradcam(cls, X, unit))
    np.testing.assert_allclose(default, np.asarray(jaxsal.gradcam(cls, X, unit,
                                                                  layer="conv_b2")))
    assert np.abs(default).max() > 0
    # the selected output's scores still refuse that branch
    with pytest.raises(ValueError, match="layer 'conv_b1' does not feed the model's output"):
        jaxsal.gradcam(cls, X, 0, layer="conv_b1")


def test_the_used_layers_are_found_once_per_output_for_every_variant(two_heads, monkeypatch):
    """Every method call makes variants of the model (another head, rule or params): they
    share what the graph alone decides, and InceptionResNetV2's walk takes ~12 ms."""
    from model_import._graph import Graph

    walks = []
    real = Graph.reaching
    monkeypatch.setattr(Graph, "reaching", lambda self, *a, **k: walks.append(a) or
                        real(self, *a, **k))
    m = two_heads.with_output("reg").with_params(two_heads.params)
    first = m.used_layers
    assert m.with_head("logits").used_layers == first
    assert m.with_backprop("guided").with_params(m.params).used_layers == first
    assert len(walks) <= 1


def test_eigencam_without_targets_takes_the_default_layer_of_a_model_of_several_outputs(
        tmp_path):
    """``eigencam(model, x)`` (``targets=None``) reads no output, so a model of several
    outputs needs no score function (README). Its stand-in score reads nothing either, and
    the default layer was sought among the layers that score depends on: none, refused ("no
    spatial layer the scores depend on"). Checked against the first principal component of
    the layer's activations from Keras, in NumPy."""
    import keras
    from model_import import load_keras

    keras.utils.set_random_seed(2)
    i = keras.Input((8, 8, 1), name="img")
    conv = keras.layers.Conv2D(3, 3, activation="relu", name="c")
    h = conv(i)
    g = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    keras.Model(i, [keras.layers.Dense(2, name="a")(g),
                    keras.layers.Dense(3, name="b")(g)]).save(tmp_path / "two.keras")
    m = load_keras(tmp_path / "two.keras")
    x = np.random.default_rng(3).random((2, 8, 8, 1), np.float32)
    A = np.asarray(keras.Model(i, h)(x), np.float64)  # (2, 6, 6, 3)
    got = np.asarray(jaxsal.eigencam(m, x, upsample=False))
    assert got.shape == (2, 6, 6)
    for n in range(2):
        X = A[n].reshape(-1, 3)
        Xc = X - X.mean(0)
        proj = Xc @ np.linalg.svd(Xc, full_matrices=False)[2][0]
        ref = X.sum(-1) - X.sum(-1).mean()
        proj = proj if proj @ ref >= 0 else -proj
        np.testing.assert_allclose(got[n], np.maximum(proj, 0).reshape(6, 6), rtol=1e-3,
                                   atol=1e-5)
    assert jaxsal.eigencam(m, x).shape == (2, 8, 8)
