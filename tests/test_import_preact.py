"""``KerasModel.apply(capture_pre=...)``: a layer's values before its fused activation
(``Conv2D(..., activation="relu")`` before its ReLU), against a linear twin of the model, a
convolution computed from the weights, nested models and the refusals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model_import import load_keras

keras = pytest.importorskip("keras")

import preact_models  # noqa: E402
from preact_models import DEAD  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return preact_models.save(tmp_path_factory.mktemp("preact"))


@pytest.fixture(scope="module")
def model(files):
    return load_keras(files / "relu.keras")


# ---------------------------------------------------------------- the importer
@pytest.mark.parametrize("ext", [".keras", ".h5"])
def test_captured_pre_activations_equal_the_linear_twin(files, ext):
    m, twin = load_keras(files / f"relu{ext}"), load_keras(files / "linear.keras")
    x = preact_models.inputs()
    y, acts, pre = m.apply(m.params, x, capture=["conv"], capture_pre=["conv", "out"])
    assert set(acts) == {"conv"} and set(pre) == {"conv", "out"}
    # the twin: the same weights, every activation linear
    _, lin = twin.apply(twin.params, x, capture=["conv"])
    np.testing.assert_allclose(pre["conv"], lin["conv"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(acts["conv"], jax.nn.relu(pre["conv"]), rtol=1e-6, atol=1e-6)
    assert float(pre["conv"][..., DEAD].max()) < -5 and float(acts["conv"][..., DEAD].max()) == 0
    # the output layer's pre-activation: the logits, as the logits head gives them
    np.testing.assert_allclose(pre["out"], m.with_head("logits")(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y, jax.nn.softmax(pre["out"]), rtol=1e-5, atol=1e-6)


def test_pre_activation_by_hand_and_through_the_logits_head(model):
    """conv's pre-activation is its convolution plus bias, computed here from its weights;
    the logits head (which strips the output's softmax) gives the same values."""
    x = preact_models.inputs()
    p = model.layer("conv").params
    by_hand = jax.lax.conv_general_dilated(
        x, p["kernel"], (1, 1), "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["bias"]
    for m in (model, model.with_head("logits")):
        _, acts, pre = m.apply(m.params, x, capture_pre=["conv", "out"])
        assert acts == {}
        np.testing.assert_allclose(pre["conv"], by_hand, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(pre["out"], model.with_head("logits")(x), rtol=1e-5,
                                   atol=1e-5)


def test_a_layer_without_activation_gives_its_output(model):
    _, acts, pre = model.apply(model.params, preact_models.inputs(), capture=["gap"],
                               capture_pre=["gap"])
    np.testing.assert_array_equal(pre["gap"], acts["gap"])


def test_capture_pre_jit_equals_eager_and_default_return_unchanged(model):
    x = preact_models.inputs()
    f = jax.jit(lambda p, x: model.apply(p, x, capture_pre=["conv2"]))
    eager = model.apply(model.params, x, capture_pre=["conv2"])
    jitted = f(model.params, x)
    np.testing.assert_allclose(jitted[2]["conv2"], eager[2]["conv2"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jitted[0], eager[0], rtol=1e-5, atol=1e-6)
    assert len(model.apply(model.params, x, capture=["conv"])) == 2


@pytest.mark.parametrize("ext", [".keras", ".h5"])
def test_nested_model_layers(tmp_path, ext):
    keras.utils.set_random_seed(1)
    ii = keras.Input((8, 8, 2))
    inner = keras.Model(ii, keras.layers.Conv2D(3, 3, activation="relu", name="c")(ii),
                        name="inner")
    i = keras.Input((8, 8, 2))
    h = inner(i)
    out = keras.layers.Dense(2)(keras.layers.Flatten()(h))
    keras.Model(i, out).save(tmp_path / f"nested{ext}")
    m = load_keras(tmp_path / f"nested{ext}")
    x = preact_models.inputs(2, 3)[..., :2][:, :8, :8]
    p = m.layer("inner/c").params
    by_hand = jax.lax.conv_general_dilated(
        x, p["kernel"], (1, 1), "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["bias"]
    _, acts, pre = m.apply(m.params, x, capture=["inner/c"], capture_pre=["inner/c", "c"])
    np.testing.assert_allclose(pre["inner/c"], by_hand, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(pre["c"], pre["inner/c"])
    np.testing.assert_allclose(acts["inner/c"], jax.nn.relu(by_hand), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="nested model.*name a layer inside it"):
        m.apply(m.params, x, capture_pre=["inner"])


def test_a_shared_layer_gives_its_first_call(tmp_path):
    """A layer called twice: its pre-activation is that of its first call, as ``capture``
    gives that call's output."""
    keras.utils.set_random_seed(2)
    i = keras.Input((5,))
    shared = keras.layers.Dense(4, activation="relu", name="shared")
    a = shared(i)
    b = shared(keras.layers.Rescaling(-3.0, name="flip")(i))
    keras.Model(i, keras.layers.Add()([a, b])).save(tmp_path / "shared.keras")
    m = load_keras(tmp_path / "shared.keras")
    x = jax.random.normal(jax.random.key(4), (3, 5))
    p = m.layer("shared").params
    _, acts, pre = m.apply(m.params, x, capture=["shared"], capture_pre=["shared"])
    np.testing.assert_allclose(pre["shared"], x @ p["kernel"] + p["bias"], rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(acts["shared"], jax.nn.relu(pre["shared"]), rtol=1e-6)


def test_a_nested_model_called_twice_gives_its_first_call(tmp_path):
    keras.utils.set_random_seed(1)
    ii = keras.Input((3,))
    inner = keras.Model(ii, keras.layers.Dense(2, activation="relu", name="c")(ii),
                        name="inner")
    i = keras.Input((3,))
    out = keras.layers.Add()([inner(i), inner(keras.layers.Rescaling(-2.0)(i))])
    keras.Model(i, out).save(tmp_path / "twice.keras")
    m = load_keras(tmp_path / "twice.keras")
    x = jax.random.normal(jax.random.key(5), (4, 3))
    p = m.layer("inner/c").params
    _, _, pre = m.apply(m.params, x, capture_pre=["inner/c"])
    np.testing.assert_allclose(pre["inner/c"], x @ p["kernel"] + p["bias"], rtol=1e-5,
                               atol=1e-5)


def test_channels_last_view_moves_pre_activations(tmp_path):
    keras.utils.set_random_seed(3)
    i = keras.Input((2, 6, 7))
    h = keras.layers.Conv2D(3, 3, activation="relu", data_format="channels_first",
                            name="conv")(i)
    keras.Model(i, keras.layers.Dense(2)(keras.layers.Flatten()(h))).save(tmp_path / "cf.keras")
    m = load_keras(tmp_path / "cf.keras")
    x = jax.random.uniform(jax.random.key(6), (2, 2, 6, 7))
    _, acts, pre = m.apply(m.params, x, capture=["conv"], capture_pre=["conv"])
    assert pre["conv"].shape == (2, 3, 4, 5)
    np.testing.assert_allclose(acts["conv"], jax.nn.relu(pre["conv"]), rtol=1e-6)
    v = m.channels_last()
    _, _, pre_v = v.apply(v.params, jnp.moveaxis(x, 1, -1), capture_pre=["conv"])
    np.testing.assert_allclose(pre_v["conv"], jnp.moveaxis(pre["conv"], 1, -1), rtol=1e-5,
                               atol=1e-6)


def test_wrapped_and_recurrent_layers(tmp_path):
    """TimeDistributed(Dense(relu)) applies the wrapped ReLU after the wrapper: its
    pre-activation is the Dense per step; a recurrent layer (and a Bidirectional one)
    computes its activation inside its steps: refused rather than its output given."""
    keras.utils.set_random_seed(4)
    i = keras.Input((4, 6))
    td = keras.layers.TimeDistributed(keras.layers.Dense(3, activation="relu"), name="td")(i)
    rnn = keras.layers.LSTM(2, name="lstm")(i)
    bi = keras.layers.Bidirectional(keras.layers.SimpleRNN(2, activation="relu"), name="bi")(i)
    keras.Model(i, [td, rnn, bi]).save(tmp_path / "seq.keras")
    m = load_keras(tmp_path / "seq.keras")
    x = jax.random.normal(jax.random.key(7), (2, 4, 6))
    p = m.layer("td").params
    _, acts, pre = m.apply(m.params, x, capture=["td"], capture_pre=["td"])
    np.testing.assert_allclose(pre["td"], x @ p["kernel"] + p["bias"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(acts["td"], jax.nn.relu(pre["td"]), rtol=1e-6)
    for name in ("lstm", "bi"):
        with pytest.raises(ValueError, match="computed inside the layer's own call"):
            m.apply(m.params, x, capture_pre=[name])


def test_activation_layers_and_unknown_layers_are_refused(tmp_path):
    i = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(2, 3, name="conv")(i)
    h = keras.layers.ReLU(name="relu")(h)
    h = keras.layers.Activation("relu", name="act")(h)
    h = keras.layers.Softmax(name="smx")(h)  # the masking wrapper's call is no _identity
    keras.Model(i, h).save(tmp_path / "sep.keras")
    m = load_keras(tmp_path / "sep.keras")
    x = jnp.ones((1, 6, 6, 1))
    for name in ("relu", "act", "smx"):
        with pytest.raises(ValueError, match=f"{name!r}.*activation layer.*layer before it"):
            m.apply(m.params, x, capture_pre=[name])
    with pytest.raises(ValueError, match="unknown layer 'nope'"):
        m.apply(m.params, x, capture_pre=["nope"])
    # the layer before them: its output (it has no fused activation)
    _, acts, pre = m.apply(m.params, x, capture=["conv"], capture_pre=["conv"])
    np.testing.assert_array_equal(pre["conv"], acts["conv"])
