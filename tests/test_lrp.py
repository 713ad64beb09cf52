"""Layer-wise relevance propagation (epsilon rule) and the importer's hook for it
(``Runtime.layer_rule`` on every layer with ``LayerImpl.relevance``).

Analytic truths: on networks of convolutions, BatchNormalization, pooling, ``Add`` merges,
Dense layers and ReLUs, LRP with a vanishing epsilon is gradient times input (biases
included), in both layouts; without biases it conserves the score; the epsilon rule and the
pass-through of other activations (tanh) against a NumPy transcription. Parity with Captum
0.9.0: tests/test_reference_torch.py.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "numpy")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import layers  # noqa: E402

import jaxsal  # noqa: E402
from import_helpers import perturb_keras  # noqa: E402
from model_import import load_keras  # noqa: E402


def _load(km, tmp_path, name):
    path = tmp_path / f"{name}.keras"
    km.save(path)
    return load_keras(path).with_head("logits")


def _relu_net(data_format="channels_last", use_bias=True):
    """conv+relu -> BN -> max pool -> a residual block (conv, relu, conv, Add, relu) ->
    average pool -> conv+relu -> GAP -> Dense+relu -> Dense: every kind of rule layer. Keras
    seeded first: ``perturb_keras(kernels=True)`` scales its draws by the initial kernels'
    spread, so unseeded the weights followed whatever tests ran before in the worker (one
    such model put an element of the epsilon = 1e-9 map 1.07x the tolerance from gradient x
    input; 24 seeded models stayed within 0.1x of it)."""
    keras.utils.set_random_seed(0)
    cf = data_format == "channels_first"
    kw = {"data_format": data_format}
    inp = keras.Input((3, 12, 10) if cf else (12, 10, 3))
    h = layers.Conv2D(6, 3, padding="same", activation="relu", use_bias=use_bias, **kw)(inp)
    if use_bias:
        h = layers.BatchNormalization(axis=1 if cf else -1)(h)
    h = layers.MaxPooling2D(2, **kw)(h)
    r = layers.Conv2D(6, 3, padding="same", activation="relu", use_bias=use_bias, **kw)(h)
    r = layers.Conv2D(6, 3, padding="same", use_bias=use_bias, **kw)(r)
    h = layers.ReLU()(layers.Add()([h, r]))
    h = layers.AveragePooling2D(2, **kw)(h)
    h = layers.Conv2D(8, 2, activation="relu", use_bias=use_bias, **kw)(h)
    h = layers.GlobalAveragePooling2D(**kw)(h)
    h = layers.Dense(7, activation="relu", use_bias=use_bias)(h)
    return keras.Model(inp, layers.Dense(4, activation="softmax", use_bias=use_bias)(h))


@pytest.fixture(scope="module", params=["channels_last", "channels_first"])
def relu_net(request, tmp_path_factory):
    km = _relu_net(request.param)
    perturb_keras(km, seed=4, kernels=True)
    m = _load(km, tmp_path_factory.mktemp("lrp"), request.param)
    x = np.random.default_rng(0).normal(size=(3,) + km.input_shape[1:]).astype(np.float32)
    return m, x


def test_vanishing_epsilon_is_gradient_times_input(relu_net):
    m, x = relu_net
    classes = [0, 1, 3]
    r = np.asarray(jaxsal.lrp(m, x, classes, epsilon=1e-9, reduce=None))
    gxi = np.asarray(jaxsal.gradient_x_input(m, x, classes, reduce=None))
    np.testing.assert_allclose(r, gxi, rtol=1e-4, atol=1e-5 * np.abs(gxi).max())
    # a larger epsilon absorbs relevance: the maps change and shrink
    big = np.asarray(jaxsal.lrp(m, x, classes, epsilon=1.0, reduce=None))
    assert np.abs(big - gxi).max() > 1e-2 * np.abs(gxi).max()
    assert np.abs(big.sum(tuple(range(2, big.ndim)))).mean() < np.abs(
        gxi.sum(tuple(range(2, gxi.ndim)))).mean()


def test_without_biases_relevance_is_conserved(tmp_path):
    km = _relu_net(use_bias=False)
    perturb_keras(km, seed=6, kernels=True)
    m = _load(km, tmp_path, "nobias")
    x = np.random.default_rng(1).normal(size=(3, 12, 10, 3)).astype(np.float32)
    r = np.asarray(jaxsal.lrp(m, x, [0, 2]))
    y = np.asarray(m(x))[:, [0, 2]]
    np.testing.assert_allclose(r.sum((-2, -1)), y, rtol=1e-4, atol=1e-5 * np.abs(y).max())


def test_epsilon_rule_and_tanh_against_their_definition(tmp_path):
    inp = keras.Input((5,))
    h = layers.Dense(4, activation="tanh", name="h")(inp)
    km = keras.Model(inp, layers.Dense(3, name="out")(h))
    perturb_keras(km, seed=3, kernels=True)
    m = _load(km, tmp_path, "dense")
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), m.params)
    x = np.random.default_rng(2).normal(size=(6, 5)).astype(np.float32)
    eps = 0.5

    def stab(z):
        return z + eps * np.where(z >= 0, 1.0, -1.0)

    z1 = x @ p["h"]["kernel"] + p["h"]["bias"]
    a1 = np.tanh(z1)
    z2 = a1 @ p["out"]["kernel"] + p["out"]["bias"]
    want = []
    for t in range(3):
        r2 = np.zeros_like(z2)
        r2[:, t] = z2[:, t]  # the relevance starts as the target's score
        r1 = a1 * ((r2 / stab(z2)) @ p["out"]["kernel"].T)  # tanh passes it unchanged
        want.append(x * ((r1 / stab(z1)) @ p["h"]["kernel"].T))
    got = np.asarray(jaxsal.lrp(m, x, [0, 1, 2], epsilon=eps, reduce=None))
    np.testing.assert_allclose(got, np.stack(want, 1), rtol=1e-4, atol=1e-6)


def test_rules_leave_forward_values_unchanged_and_compare_by_value(relu_net):
    from jaxsal._src.lrp import lrp_model

    m, x = relu_net
    a, b = lrp_model(m, 0.25), lrp_model(m, 0.25)
    np.testing.assert_array_equal(np.asarray(a(x)), np.asarray(m(x)))
    assert a.runtime == b.runtime and hash(a.runtime) == hash(b.runtime)
    assert lrp_model(m, 0.5).runtime != a.runtime


def test_no_recompile_on_a_second_call(relu_net, compiles):
    m, x = relu_net
    jaxsal.lrp(m, x, [0, 1])
    compiles.n = 0
    jaxsal.lrp(m, x * 2.0, [3, 2])
    assert compiles.n == 0


def test_bad_models_and_options_are_refused(relu_net):
    m, x = relu_net
    for eps in (0.0, -1.0, float("nan"), True):
        with pytest.raises(ValueError,
                           match=r"lrp: expected epsilon > 0 \(a finite number: the stabilizer"):
            jaxsal.lrp(m, x, 0, epsilon=eps)
    fm = jaxsal.FunctionModel(lambda p, v: v.reshape(v.shape[0], -1)[:, :3] * p, 1.0)
    with pytest.raises(TypeError, match="load_keras"):
        jaxsal.lrp(fm, x, 0)


def test_layer_relevance(relu_net):
    """``layer=``: the relevance reaching a layer's output (Captum's ``LayerLRP``). With a
    vanishing epsilon on a ReLU network it is gradient times activation there."""
    m, x = relu_net
    for layer in ("max_pooling2d", "add", "dense"):
        name = next(n for n in m.layer_names if n.startswith(layer))
        kw = {"reduce": None} if layer == "dense" else {}
        r = np.asarray(jaxsal.lrp(m, x, [0, 3], layer=name, **kw))
        gxa = np.asarray(jaxsal.gradient_x_input(m, x, [0, 3], layer=name, **kw))
        np.testing.assert_allclose(r, gxa, rtol=1e-4, atol=1e-5 * np.abs(gxa).max(),
                                   err_msg=name)


def test_layer_relevance_without_biases_sums_to_the_score(tmp_path):
    """At every layer that cuts the network in two (not the convolutions inside the
    residual branch), the relevance of a bias-free network adds up to the score."""
    km = _relu_net(use_bias=False)
    perturb_keras(km, seed=6, kernels=True)
    m = _load(km, tmp_path, "nobias_layer")
    x = np.random.default_rng(5).normal(size=(3, 12, 10, 3)).astype(np.float32)
    y = np.asarray(m(x))[:, 1]
    convs = [n for n in m.layer_names if n.startswith("conv2d")]
    for name in [n for n in m.layer_names[1:-1] if n not in convs[1:3]]:
        r = np.asarray(jaxsal.lrp(m, x, 1, layer=name, reduce=None))
        np.testing.assert_allclose(r.reshape(len(x), -1).sum(-1), y, rtol=1e-4,
                                   atol=1e-5 * np.abs(y).max(), err_msg=name)


def test_relevance_starts_from_the_score_on_the_outputs(tmp_path):
    """LRP starts from ``R_y = dS/dy * y``: on a bias-free ReLU network with one output unit
    (epsilon -> 0: gradient x input), class 0 (the complement, ``-z``) gets ``-z``'s
    relevance and a score ``2 z`` twice ``z``'s (the output cotangent was scaled by ``S``,
    counting the score's factor twice: class 0 got class 1's map, ``2 z`` four times)."""
    inp = keras.Input((5,))
    h = layers.Dense(6, activation="relu", use_bias=False)(inp)
    m = _load(keras.Model(inp, layers.Dense(1, use_bias=False)(h)), tmp_path, "unit")
    x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    z = np.asarray(m(x))[:, 0]
    one = np.asarray(jaxsal.lrp(m, x, 1, epsilon=1e-9))
    np.testing.assert_allclose(one.sum(-1), z, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(jaxsal.lrp(m, x, 0, epsilon=1e-9), -one, rtol=1e-6, atol=1e-8)
    double = jaxsal.lrp(m, x, lambda y: 2.0 * y[:, 0], epsilon=1e-9)
    np.testing.assert_allclose(double, 2 * one, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(double, jaxsal.gradient_x_input(
        m, x, lambda y: 2.0 * jnp.asarray(y)[:, 0]), rtol=1e-4, atol=1e-6)


def test_lrp_of_a_one_unit_probability_head_starts_from_the_class_score(tmp_path):
    """Class 0 of a one-unit sigmoid model scores 1 - p on its saved head as on
    sigmoid_complement: LRP starts from that score (it started from -p, dS/dy * y, on the
    saved head, and class 1 from -(1 - p) on the complement head; fails before), so the maps of
    targets [0, 1] are the same on both heads and, bias-free, sum to [1 - p, p]; on the
    logits head class 0 stays -z."""
    keras.utils.set_random_seed(1)
    inp = keras.Input((5,))
    h = layers.Dense(4, activation="relu", use_bias=False)(inp)
    km = keras.Model(inp, layers.Dense(1, activation="sigmoid", use_bias=False)(h))
    km.save(tmp_path / "sig.keras")
    x = np.random.default_rng(0).normal(size=(3, 5)).astype("float32")
    p = km.predict(x, verbose=0)[:, 0]
    z = np.log(p / (1 - p))
    maps = {head: np.asarray(jaxsal.lrp(load_keras(tmp_path / "sig.keras", head=head), x,
                                        [0, 1]))
            for head in ("saved", "sigmoid_complement", "logits")}
    np.testing.assert_allclose(maps["saved"], maps["sigmoid_complement"], atol=1e-6)
    live = p != 0.5  # (an input whose ReLUs are all off has zero maps, p = 0.5)
    np.testing.assert_allclose(maps["saved"].sum(-1)[live],
                               np.stack([1 - p, p], 1)[live], atol=1e-5)
    np.testing.assert_allclose(maps["logits"].sum(-1), np.stack([-z, z], 1), atol=1e-4)
