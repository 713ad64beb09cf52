"""tf_keras (tf.keras 2.21) files with the model's own classes and activation functions,
written once by tests/fixtures/keras2_custom/make_custom_fixtures.py: without converters they
are refused naming what to register (never computed by Keras's converter of a class named
alike); with converters written here in JAX (the same math as the classes) they reproduce
what tf_keras computed, from its ``.keras`` archive and from its legacy ``.h5``."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
from import_helpers import check_expected, rel_err
from model_import import KerasImportError, LayerImpl, UnsupportedLayerError, load_keras
from model_import._layers import activations

D = pathlib.Path(__file__).parent / "fixtures" / "keras2_custom"
TOL = 1e-4  # as tests/test_import_keras2.py
FORMS = ["keras", "h5"]


def _channel_affine(config, ctx):
    return LayerImpl(call=lambda p, x, *, rt: x * p["scale"] + p["shift"],
                     convert_weights=lambda w: {"scale": w[0], "shift": w[1]}, n_weights=2)


def _offset(config, ctx):
    return LayerImpl(call=lambda p, x, *, rt: x - p["b"],
                     convert_weights=lambda w: {"b": w[0]}, n_weights=1)


def _layer_scale(config, ctx):  # the model's own: x * gamma + 1, not Keras 3's x * gamma
    assert config["dim"] == 4
    return LayerImpl(call=lambda p, x, *, rt: x * p["gamma"] + 1.0,
                     convert_weights=lambda w: {"gamma": w[0]}, n_weights=1)


def _leaky(x, rt):
    return rt.act(lambda v: jnp.where(v > 0, v, 0.3 * v), x)


def _relu(config, ctx):  # the model's own "ReLU": leaky, slope 0.3
    return LayerImpl(call=lambda p, x, *, rt: _leaky(x, rt))


def _layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps) * gamma + beta


BLOCK_NAMES = ("g", "k", "b", "gamma", "beta", "k1", "b1", "k2", "b2")


def _block(config, ctx):
    """h = norm(proj(x)); (h + ffn(h)) * g, ffn a Sequential of Dense(2u, relu), Dense(u)."""
    def call(p, x, *, rt):
        h = _layer_norm(x @ p["k"] + p["b"], p["gamma"], p["beta"], 1e-3)
        f = rt.relu(h @ p["k1"] + p["b1"]) @ p["k2"] + p["b2"]
        return (h + f) * p["g"]

    return LayerImpl(call=call, convert_weights=lambda w: dict(zip(BLOCK_NAMES, w)),
                     n_weights=9,
                     weight_groups=("proj", "norm", "ffn/layers/dense", "ffn/layers/dense_1"))


def _attention_pool(config, ctx):
    def call(p, x, *, rt):
        a = rt.softmax_of(x @ p["w"], 1)
        return jnp.sum(x * a[..., None], axis=1)

    return LayerImpl(call=call, convert_weights=lambda w: {"w": w[0]}, n_weights=1)


def _mish(x):
    return x * jnp.tanh(jax.nn.softplus(x))


def _swishy(x):
    return x * jax.nn.sigmoid(2.0 * x)


CUSTOM = {"tfk_custom>ChannelAffine": _channel_affine, "Offset": _offset,
          "tfk_custom>LayerScale": _layer_scale, "tfk_custom>ReLU": _relu,
          "tfk_custom>Block": _block}
OWN_NAMES = {"ReLU": _relu, "Attention": _attention_pool}


@pytest.fixture
def own_activations(monkeypatch):
    """The two activation functions registered (in a copy of the global registry)."""
    monkeypatch.setattr(activations, "_CUSTOM", {})
    activations.register_activation("tfk_custom>mish", _mish)
    activations.register_activation("swishy", _swishy)


@pytest.fixture
def no_own_activations(monkeypatch):
    monkeypatch.setattr(activations, "_CUSTOM", {})


@pytest.mark.parametrize("form", FORMS)
def test_custom_model_is_refused_naming_each_class_and_function_to_register(
        no_own_activations, form):
    path = D / f"custom_tfkeras2.{form}"
    # converters given one by one: each load names the next class (or function) missing
    # registered classes named like Keras's (LayerScale, ReLU) are never given Keras's
    # converter: the archive records module null and the registered name, the .h5 the
    # registered name as the class
    evidence = {"keras": r"the file records module null \(a class of the script that saved "
                         r"the model, its __main__\) and registered name 'tfk_custom>{0}'",
                "h5": r"the file names it 'tfk_custom>{0}', a class registered with "
                      r"keras.saving.register_keras_serializable"}[form]
    steps = [
        ("tfk_custom>ChannelAffine", r"layer 'affine' of class 'ChannelAffine'.*no converter"),
        ("Offset", r"layer 'offset' of class 'Offset'.*no converter"
                   + (r" .*\(module 'tfk_user_layers'\)" if form == "keras" else "")),
        ("tfk_custom>LayerScale", r"layer 'scale' of class 'tfk_custom>LayerScale'.*named like "
                                  r"Keras's LayerScale \(" + evidence.format("LayerScale")),
        ("tfk_custom>ReLU", r"layer 'leaky' of class 'tfk_custom>ReLU'.*named like Keras's "
                            r"ReLU \(" + evidence.format("ReLU")),
        ("tfk_custom>Block", r"layer 'block' of class 'Block'.*no converter"),
    ]
    given = {}
    for name, message in steps:
        with pytest.raises(UnsupportedLayerError, match=message) as info:
            load_keras(path, custom_layers=given)
        assert info.value.needs in (name, name.split(">")[-1])
        given[name] = CUSTOM[name]
    # "mish" is a Keras activation too: the file's name for the model's own is the one to use
    with pytest.raises(KerasImportError, match=r"'d_mish'.*unknown activation "
                       r"'tfk_custom>mish'.*register_activation\('tfk_custom>mish', fn\) "
                       r"\(the model's own function.*Keras's 'mish'"):
        load_keras(path, custom_layers=given)
    activations.register_activation("tfk_custom>mish", _mish)
    with pytest.raises(KerasImportError, match=r"'d_swishy'.*unknown activation 'swishy'"):
        load_keras(path, custom_layers=given)


@pytest.mark.parametrize("form", FORMS)
def test_custom_model_with_converters_matches_tfkeras(own_activations, form):
    m = load_keras(D / f"custom_tfkeras2.{form}", custom_layers=CUSTOM)
    assert str(m.keras_version).startswith("2.")
    check_expected(m, np.load(D / "custom_tfkeras2.expected.npz"), TOL)


@pytest.mark.parametrize("form", FORMS)
def test_own_classes_named_like_tfkeras_layers(form):
    path = D / f"own_names_tfkeras2.{form}"
    # a Dense layer's activation given as a layer: tf_keras writes its config with its module
    # (null: __main__) in the .h5 too, which tells it from Keras's ReLU
    with pytest.raises(UnsupportedLayerError, match=r"'d_own_relu'.*its activation is a layer "
                       r"of the model's own code, 'ReLU'") as info:
        load_keras(path)
    assert info.value.needs == "ReLU"
    if form == "keras":  # module 'tfk_user_layers': not tf.keras's Attention
        message = (r"layer 'pool' of class 'Attention'.*named like Keras's Attention \(the "
                   r"file records module 'tfk_user_layers'")
    else:  # an unregistered class is its bare name: told by the weights Keras's lacks
        message = (r"layer 'pool' of class 'Attention'.*the weights file holds weights for "
                   r"\['pool'\].*1 array\(s\) \(shapes \[\(6,\)\]\), where Keras's "
                   r"Attention.*has none. Either it is a class of the model's own code named "
                   r"like Keras's Attention")
    with pytest.raises(UnsupportedLayerError, match=message) as info:
        load_keras(path, custom_layers={"ReLU": _relu})
    assert info.value.needs == "Attention"
    m = load_keras(path, custom_layers=OWN_NAMES)
    check_expected(m, np.load(D / "own_names_tfkeras2.expected.npz"), TOL)


def test_unregistered_weightless_class_named_like_a_keras_layer_in_h5():
    # the .h5 records the bare class name "ReLU" only: tf_keras reloads Keras's ReLU there,
    # and so does the importer (a converter under that name serves the model's own); the
    # archive records module null and is refused
    ref = np.load(D / "bare_relu_tfkeras2.expected.npz")
    keras_relu = ref["y_reloaded_as_keras_relu"]
    assert rel_err(keras_relu, ref["y"]) > 1e-3  # not what the model computed
    assert rel_err(np.asarray(load_keras(D / "bare_relu_tfkeras2.h5")(ref["x"])),
                   keras_relu) < TOL
    check_expected(load_keras(D / "bare_relu_tfkeras2.h5", custom_layers={"ReLU": _relu}),
                   ref, TOL)
    with pytest.raises(UnsupportedLayerError, match=r"layer 'own_relu' of class 'ReLU'.*the "
                       r"file records module null"):
        load_keras(D / "bare_relu_tfkeras2.keras")
    check_expected(load_keras(D / "bare_relu_tfkeras2.keras", custom_layers={"ReLU": _relu}),
                   ref, TOL)


def _bn_block(config, ctx):
    """proj(bn(x)) * g: the arrays in the archive's order (the layer's own, then each
    sublayer's, as weight_groups names them), which the .h5 is read in too."""
    names = ("g", "gamma", "beta", "mean", "var", "k", "b")

    def call(p, x, *, rt):
        h = (x - p["mean"]) / jnp.sqrt(p["var"] + 1e-3) * p["gamma"] + p["beta"]
        return (h @ p["k"] + p["b"]) * p["g"]

    return LayerImpl(call=call, convert_weights=lambda w: dict(zip(names, w)), n_weights=7,
                     weight_groups=("bn", "proj"))


@pytest.mark.parametrize("form", FORMS)
def test_sublayer_with_non_trainable_weights(own_activations, form):
    # tf.keras's .h5 lists the BatchNormalization sublayer's moving statistics after the Dense
    # sublayer's kernel and bias (trainable first); the same converter reads both files
    m = load_keras(D / f"bn_block_tfkeras2.{form}",
                   custom_layers={"tfk_custom>BNBlock": _bn_block})
    check_expected(m, np.load(D / "bn_block_tfkeras2.expected.npz"), TOL)
    assert m.layer("bn_block").params["var"].min() > 0.3  # the variances, not a kernel


def test_saliency_on_a_custom_model(own_activations):
    m = load_keras(D / "custom_tfkeras2.keras", custom_layers=CUSTOM)
    x = np.load(D / "custom_tfkeras2.expected.npz")["x"]
    maps = jaxsal.saliency(m, x, 1, reduce=None, head="logits")
    # the gradient of the logit by finite differences in one input coordinate
    lm = m.with_head("logits")
    eps = 1e-2
    dx = np.zeros_like(x)
    dx[:, 2, 1] = eps
    fd = (np.asarray(lm(x + dx))[:, 1] - np.asarray(lm(x - dx))[:, 1]) / (2 * eps)
    assert np.asarray(maps).shape == x.shape
    assert rel_err(np.asarray(maps)[:, 2, 1], fd) < 1e-2
