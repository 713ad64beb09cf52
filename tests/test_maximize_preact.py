"""Pre-activation values: ``apply(capture_pre=...)`` in the importer, ``pre_activation=True``
objectives and ``maximize(..., pre_activation=True)`` (a channel whose ReLU output is zero on
the starting image has no gradient; its pre-activation has one)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
from model_import import load_keras

keras = pytest.importorskip("keras")

import preact_models  # noqa: E402
from preact_models import DEAD  # noqa: E402

PLAIN = dict(transforms=jaxsal.identity(), regularizers=())


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return preact_models.save(tmp_path_factory.mktemp("preact"))


@pytest.fixture(scope="module")
def model(files):
    return load_keras(files / "relu.keras")


# ---------------------------------------------------------------- objectives
def test_pre_objectives_read_pre_activations(model):
    x = preact_models.inputs(1)
    _, acts, pre = model.apply(model.params, x, capture=["conv"], capture_pre=["conv"])
    a, z = acts["conv"][0], pre["conv"][0]
    d = jnp.linspace(-1.0, 1.0, 4)
    cases = [
        (jaxsal.channel_objective("conv", DEAD, pre_activation=True), z[..., DEAD].mean()),
        (jaxsal.neuron_objective("conv", 1, (2, 5), pre_activation=True), z[2, 5, 1]),
        (jaxsal.direction_objective("conv", d, pre_activation=True), (z @ d).mean()),
        # pre and post terms of one layer in one objective
        (jaxsal.channel_objective("conv", 1, pre_activation=True)
         - 0.5 * jaxsal.channel_objective("conv", 1), z[..., 1].mean() - 0.5 * a[..., 1].mean()),
    ]
    for obj, want in cases:
        got = obj(None, {"conv": a}, {"conv": z})
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=repr(obj))
    o = jaxsal.channel_objective("conv", 1, pre_activation=True) + jaxsal.channel_objective(
        "conv", 1)
    assert o.needed_layers == ("conv",) and o.needed_pre_layers == ("conv",)
    assert "pre-activation" in repr(o)


def test_pre_flag_is_static_structure():
    pre = jaxsal.channel_objective("conv", 1, pre_activation=True)
    post = jaxsal.channel_objective("conv", 1)
    assert jax.tree_util.tree_structure(pre) != jax.tree_util.tree_structure(post)
    assert (jax.tree_util.tree_structure(pre)
            == jax.tree_util.tree_structure(jaxsal.channel_objective("conv", 3,
                                                                     pre_activation=True)))
    stacked = jaxsal.stack_objectives([pre, jaxsal.channel_objective("conv", 3,
                                                                     pre_activation=True)])
    assert stacked.pre == (True,) and (2.0 * stacked).pre == (True,)
    with pytest.raises(ValueError, match="same"):
        jaxsal.stack_objectives([pre, post])
    with pytest.raises(TypeError, match="pre_activation as a bool"):
        jaxsal.channel_objective("conv", 1, pre_activation="yes")


# ---------------------------------------------------------------- maximize
def _nested(tmp_path):
    keras.utils.set_random_seed(1)
    ii = keras.Input((8, 8, 2))
    inner = keras.Model(ii, keras.layers.Conv2D(3, 3, activation="relu", name="c")(ii),
                        name="inner")
    i = keras.Input((8, 8, 2))
    out = keras.layers.Dense(2)(keras.layers.Flatten()(inner(i)))
    keras.Model(i, out).save(tmp_path / "nested.keras")
    return load_keras(tmp_path / "nested.keras")


def test_a_nested_models_layer_pre_activation_rises(tmp_path):
    m = _nested(tmp_path)
    res = jaxsal.maximize(m, [0], layer="inner/c", pre_activation=True, steps=10, key=0,
                          **PLAIN)
    assert float(res.trajectory[0, -1]) > float(res.trajectory[0, 0])
    x = res.images
    _, _, pre = m.apply(m.params, x, capture_pre=["inner/c"])
    np.testing.assert_allclose(res.scores[0], pre["inner/c"][0, ..., 0].mean(), rtol=1e-4,
                               atol=1e-4)


def test_activation_layers_and_unknown_layers_are_refused_by_maximize(tmp_path):
    i = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(2, 3, name="conv")(i)
    h = keras.layers.ReLU(name="relu")(h)
    keras.Model(i, keras.layers.Activation("relu", name="act")(h)).save(tmp_path / "s.keras")
    m = load_keras(tmp_path / "s.keras")
    for name in ("relu", "act"):
        with pytest.raises(ValueError, match="layer before it"):
            jaxsal.maximize(m, [0], layer=name, pre_activation=True, steps=1)
        with pytest.raises(ValueError, match="layer before it"):
            jaxsal.maximize(m, jaxsal.channel_objective(name, 0, pre_activation=True), steps=1)
    with pytest.raises(ValueError, match="unknown layer 'nope'"):
        jaxsal.maximize(m, [0], layer="nope", pre_activation=True, steps=1)
    with pytest.raises(ValueError, match="nested model"):
        jaxsal.maximize(_nested(tmp_path), [0], layer="inner", pre_activation=True, steps=1)


def test_a_dead_channel_has_gradient_only_before_its_relu(model):
    """At the start the post-ReLU channel is zero everywhere: no gradient, and the image
    does not move from its seed; the pre-activation objective has a gradient and rises."""
    seed = jnp.full((10, 10, 3), 0.5)
    post = jaxsal.channel_objective("conv", DEAD)
    pre = jaxsal.channel_objective("conv", DEAD, pre_activation=True)

    def value(obj, x):
        _, acts, z = model.apply(model.params, x[None], capture=["conv"], capture_pre=["conv"])
        return obj(None, {k: v[0] for k, v in acts.items()}, {k: v[0] for k, v in z.items()})

    assert float(jnp.abs(jax.grad(lambda x: value(post, x))(seed)).max()) == 0.0
    assert float(jnp.abs(jax.grad(lambda x: value(pre, x))(seed)).max()) > 1e-3

    kw = dict(layer="conv", steps=30, key=0, seed_images=seed, **PLAIN)
    still = jaxsal.maximize(model, [DEAD], **kw)
    np.testing.assert_array_equal(still.images[0], seed)
    assert float(still.scores[0]) == 0.0
    moved = jaxsal.maximize(model, [DEAD], pre_activation=True, **kw)
    assert float(jnp.abs(moved.images[0] - seed).max()) > 0.1
    start = float(value(pre, seed))
    assert float(moved.scores[0]) > start + 0.5, (start, moved.scores)
    np.testing.assert_allclose(moved.scores[0], value(pre, moved.images[0]), rtol=1e-4,
                               atol=1e-4)
    # the same as the Objective form
    same = jaxsal.maximize(model, pre, steps=30, key=0, seed_images=seed, **PLAIN)
    np.testing.assert_allclose(same.images, moved.images, rtol=1e-5, atol=1e-6)


def test_mixed_pre_and_post_terms_are_vmapped_and_scored(model):
    objs = [jaxsal.channel_objective("conv", c, pre_activation=True)
            + 0.5 * jaxsal.channel_objective("conv", c) - 0.1 * jaxsal.output_objective(k)
            for c, k in [(DEAD, 0), (1, 1)]]
    res = jaxsal.maximize(model, objs, steps=4, key=0, **PLAIN)
    _, acts, pre = model.apply(model.params, res.images, capture=["conv"],
                               capture_pre=["conv"])
    logits = model.with_head("logits")(res.images)
    want = [pre["conv"][i, ..., c].mean() + 0.5 * acts["conv"][i, ..., c].mean()
            - 0.1 * logits[i, k] for i, (c, k) in enumerate([(DEAD, 0), (1, 1)])]
    np.testing.assert_allclose(res.scores, want, rtol=1e-4, atol=1e-4)


def test_neuron_objective_pre_activation_through_maximize(model):
    res = jaxsal.maximize(model, [0, DEAD], layer="conv2", objective="neuron",
                          pre_activation=True, steps=3, key=0, **PLAIN)
    _, _, pre = model.apply(model.params, res.images, capture_pre=["conv2"])
    np.testing.assert_allclose(res.scores, [pre["conv2"][0, 3, 3, 0], pre["conv2"][1, 3, 3, DEAD]],
                               rtol=1e-4, atol=1e-4)


def test_pre_activation_maximize_compiles_once(model, compiles):
    kw = dict(layer="conv", pre_activation=True, steps=3, key=0, **PLAIN)
    first = jaxsal.maximize(model, [1, DEAD], **kw)
    compiles.n = 0
    second = jaxsal.maximize(model, [1, DEAD], **kw)
    assert compiles.n == 0
    np.testing.assert_array_equal(first.images, second.images)


def test_pre_activation_refusals(model):
    with pytest.raises(ValueError, match="pre_activation=True.*without layer="):
        jaxsal.maximize(model, [0], pre_activation=True, steps=1)
    with pytest.raises(ValueError, match="Objectives.*pre_activation=True"):
        jaxsal.maximize(model, jaxsal.channel_objective("conv", 0), pre_activation=True,
                        steps=1)
    with pytest.raises(TypeError, match="pre_activation: expected a bool"):
        jaxsal.maximize(model, [0], layer="conv", pre_activation=1, steps=1)
    lm = model.with_head("logits")
    fm = jaxsal.FunctionModel(
        features=lambda p, x: lm.apply(p, x, capture=["conv"])[1]["conv"],
        head_fn=lambda p, a: a.mean((1, 2)), layer="conv",
        params=model.params, input_shape=(10, 10, 3))
    assert jaxsal.maximize(fm, [0], layer="conv", steps=1, **PLAIN).images.shape[0] == 1
    with pytest.raises(ValueError, match="captures pre-activation values"):
        jaxsal.maximize(fm, jaxsal.channel_objective("conv", 0, pre_activation=True), steps=1)


# ---------------------------------------------------------------- feature maps
def test_feature_maps_before_the_relu(model, tmp_path):
    x = preact_models.inputs()
    _, _, pre = model.apply(model.params, x, capture_pre=["conv"])
    maps = jaxsal.feature_maps(model, x, "conv", pre_activation=True)
    np.testing.assert_allclose(maps, jnp.moveaxis(pre["conv"], -1, 1), rtol=1e-5, atol=1e-5)
    one = jaxsal.feature_maps(model, x[0], "conv", pre_activation=True)
    np.testing.assert_allclose(one, maps[0], rtol=1e-5, atol=1e-5)
    assert float(maps[:, DEAD].max()) < -5  # the dead channel, zero after its ReLU:
    assert float(jaxsal.feature_maps(model, x, "conv")[:, DEAD].max()) == 0.0
    i = keras.Input((6, 6, 1))
    h = keras.layers.ReLU(name="relu")(keras.layers.Conv2D(2, 3, name="c")(i))
    keras.Model(i, h).save(tmp_path / "r.keras")
    with pytest.raises(ValueError, match="layer before it"):
        jaxsal.feature_maps(load_keras(tmp_path / "r.keras"), jnp.ones((6, 6, 1)), "relu",
                            pre_activation=True)
    fm = jaxsal.FunctionModel(
        features=lambda p, x: model.apply(p, x, capture=["conv"])[1]["conv"],
        head_fn=lambda p, a: a.mean((1, 2)), layer="conv", params=model.params,
        input_shape=(10, 10, 3))
    with pytest.raises(ValueError, match="captures pre-activation values"):
        jaxsal.feature_maps(fm, x, "conv", pre_activation=True)
