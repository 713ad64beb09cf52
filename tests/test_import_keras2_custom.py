"""tf_keras (tf.keras 2.21) files with the model's own classes and activation functions,
written once by tests/fixtures/keras2_custom/make_custom_fixtures.py: without converters they
are refused naming what to register (never computed by Keras's converter of a class named
alike); with converters written here in JAX (the same math as the classes) they reproduce
what tf_keras computed, from its ``.keras`` archive and from its legacy ``.h5``, its
``save_weights`` files with the ``to_json()`` architecture, as a Sequential, with sublayers
kept in a list and a dict attribute (one converter for both files where it names a dict's
sublayers in tf.keras's ``layer.weights`` order, by sorted key), and from the ``.keras``
archives of tf.keras 2.13, 2.14 and 2.15 (``tf213/``, ``tf214/``, ``tf215/``) and the
``.h5`` of 2.13 and 2.15."""

import dataclasses
import functools
import json
import pathlib
import zipfile

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


def _refused_class_by_class(path, form):
    """Load ``path`` (custom_tfkeras2 of some tf.keras) with converters given one by one:
    each load names the next class missing; returns the converters, all given."""
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
    return given


@pytest.mark.parametrize("form", FORMS)
def test_custom_model_is_refused_naming_each_class_and_function_to_register(
        no_own_activations, form):
    path = D / f"custom_tfkeras2.{form}"
    given = _refused_class_by_class(path, form)
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


# --- sublayers_tfkeras2: the layouts of a layer made of sublayers that the .h5 regroups ---

def _own_stats(config, ctx):
    """proj(x) * g + c: own g (trainable), c (not trainable), then proj's kernel, bias."""
    names = ("g", "c", "k", "b")
    return LayerImpl(call=lambda p, x, *, rt: (x @ p["k"] + p["b"]) * p["g"] + p["c"],
                     convert_weights=lambda w: dict(zip(names, w)), n_weights=4,
                     weight_groups=("proj",))


def _frozen_proj(config, ctx, groups=("norm", "proj")):
    """norm(proj(x)), proj frozen; ``groups``: the order the converter names them in, by
    default norm first, as tf.keras's .h5 lists them (the frozen proj after it)."""
    names = {"proj": ("k", "b"), "norm": ("gamma", "beta")}

    def call(p, x, *, rt):
        return _layer_norm(x @ p["k"] + p["b"], p["gamma"], p["beta"], 1e-3)

    return LayerImpl(call=call, n_weights=4, weight_groups=groups,
                     convert_weights=lambda w: dict(zip([n for g in groups for n in names[g]],
                                                        w)))


def _outer(config, ctx):
    """post(inner(x)), inner = bn(proj(x)) * s: a sublayer's sublayers, groups two deep."""
    names = ("s", "k", "b", "gamma", "beta", "mean", "var", "k2", "b2")

    def call(p, x, *, rt):
        h = x @ p["k"] + p["b"]
        h = (h - p["mean"]) / jnp.sqrt(p["var"] + 1e-3) * p["gamma"] + p["beta"]
        return (h * p["s"]) @ p["k2"] + p["b2"]

    return LayerImpl(call=call, convert_weights=lambda w: dict(zip(names, w)), n_weights=9,
                     weight_groups=("inner", "inner/proj", "inner/bn", "post"))


def _late(config, ctx):
    """proj(x) * g + h: own h (made in __init__) and g (made after building proj)."""
    names = ("h", "g", "k", "b")
    return LayerImpl(call=lambda p, x, *, rt: (x @ p["k"] + p["b"]) * p["g"] + p["h"],
                     convert_weights=lambda w: dict(zip(names, w)), n_weights=4,
                     weight_groups=("proj",))


SUBLAYERS = {"tfk_custom>OwnStats": _own_stats, "tfk_custom>FrozenProj": _frozen_proj,
             "tfk_custom>Outer": _outer, "tfk_custom>Late": _late}


@pytest.mark.parametrize("form", FORMS)
def test_sublayer_layouts_one_converter_reads_keras_and_h5(form):
    # a non-trainable weight of the layer's own (after proj's kernel in the .h5), a frozen
    # sublayer, a BatchNormalization two deep (its statistics after post's kernel), weights
    # of its own made after its sublayer (h:0 without a scope, first in the .h5)
    m = load_keras(D / f"sublayers_tfkeras2.{form}", custom_layers=SUBLAYERS)
    ref = np.load(D / "sublayers_tfkeras2.expected.npz")
    check_expected(m, ref, TOL)  # also each of the four layers' outputs
    assert m.layer("outer").params["var"].min() > 0.3  # the variances, not a kernel


def test_frozen_sublayer_named_before_the_trainable_one():
    # tf.keras's .h5 lists a frozen sublayer after the trainable ones; the archive keeps
    # groups by name, read in any order: a converter naming proj first reads the archive,
    # and the .h5 is refused saying in which order its sublayers come
    groups = ("proj", "norm")
    custom = {**SUBLAYERS, "tfk_custom>FrozenProj": functools.partial(_frozen_proj,
                                                                      groups=groups)}
    check_expected(load_keras(D / "sublayers_tfkeras2.keras", custom_layers=custom),
                   np.load(D / "sublayers_tfkeras2.expected.npz"), TOL)
    with pytest.raises(KerasImportError, match=r"layer 'frozen' .*failed.*weight_groups="
                       r"\('proj', 'norm'\).*legacy \.h5, regrouped by sublayer.*"
                       r"frozen/layer_normalization/gamma:0 \(6,\), .*frozen/dense_\d+/kernel:0 "
                       r"\(6, 6\).*trainable=False.*name weight_groups in that order"):
        load_keras(D / "sublayers_tfkeras2.h5", custom_layers=custom)


# --- sequential_tfkeras2: a Sequential of the model's own classes ---

@pytest.mark.parametrize("form", FORMS)
def test_sequential_with_own_classes(no_own_activations, form):
    path = D / f"sequential_tfkeras2.{form}"
    ref = np.load(D / "sequential_tfkeras2.expected.npz")
    with pytest.raises(UnsupportedLayerError, match=r"layer 'affine' of class 'ChannelAffine'"):
        load_keras(path)
    given = {"tfk_custom>ChannelAffine": _channel_affine}
    with pytest.raises(UnsupportedLayerError, match=r"layer 'offset' of class 'Offset'"):
        load_keras(path, custom_layers=given)
    given["Offset"] = _offset
    if form == "keras":  # the unregistered ReLU of __main__: module null
        with pytest.raises(UnsupportedLayerError, match=r"layer 'own_relu' of class 'ReLU'.*"
                           r"the file records module null"):
            load_keras(path, custom_layers=given)
    activations.register_activation("swishy", _swishy)
    if form == "h5":  # the .h5 records "ReLU" only: Keras's, as tf_keras reloads it
        m = load_keras(path, custom_layers=given)
        assert rel_err(np.asarray(m(ref["x"])), ref["y"]) > 1e-3
    check_expected(load_keras(path, custom_layers={**given, "ReLU": _relu}), ref, TOL)


# --- bn_block_tfkeras2 as save_weights files with the to_json() architecture ---

@pytest.mark.parametrize("weights", [".weights.h5", "_weights.h5"])
def test_save_weights_with_to_json_refused_naming_what_to_register(no_own_activations,
                                                                   weights):
    path, config = D / f"bn_block_tfkeras2{weights}", D / "bn_block_tfkeras2.json"
    with pytest.raises(UnsupportedLayerError, match=r"layer 'bn_block' of class 'BNBlock'"):
        load_keras(path, config=config)
    custom = {"tfk_custom>BNBlock": _bn_block}
    with pytest.raises(KerasImportError, match=r"unknown activation 'tfk_custom>mish'"):
        load_keras(path, config=config, custom_layers=custom)


@pytest.mark.parametrize("weights", [".weights.h5", "_weights.h5"])
def test_save_weights_with_to_json_matches_tfkeras(own_activations, weights):
    # the new layout keeps the BatchNormalization sublayer's arrays together; the legacy
    # save_weights file lists its moving statistics last, as the .h5 does
    m = load_keras(D / f"bn_block_tfkeras2{weights}", config=D / "bn_block_tfkeras2.json",
                   custom_layers={"tfk_custom>BNBlock": _bn_block})
    assert m.keras_version == json.loads((D / "bn_block_tfkeras2.json").read_text())[
        "keras_version"]
    check_expected(m, np.load(D / "bn_block_tfkeras2.expected.npz"), TOL)
    assert m.layer("bn_block").params["var"].min() > 0.3


# --- custom_tfkeras2 as written by tf.keras 2.13 and 2.15 ---

TAGS = ["tf213", "tf214", "tf215"]


@pytest.mark.parametrize("tag", TAGS)
def test_older_tfkeras_archive_refused_as_tf_keras_221s(no_own_activations, tag):
    path = D / tag / "custom_tfkeras2.keras"
    given = _refused_class_by_class(path, "keras")
    # tf.keras 2.13/2.15 write the registered mish by its bare name, Keras's: computed as
    # Keras's (and reloaded so by that tf.keras), here the same function
    with zipfile.ZipFile(path) as z:
        config = json.loads(z.read("config.json"))
    acts = {lay["config"]["name"]: lay["config"].get("activation")
            for lay in config["config"]["layers"]}
    assert acts["d_mish"] == "mish" and acts["d_swishy"]["config"] == "swishy"
    with pytest.raises(KerasImportError, match=r"'d_swishy'.*unknown activation 'swishy'"):
        load_keras(path, custom_layers=given)


@pytest.mark.parametrize("tag", TAGS)
def test_older_tfkeras_archive_with_converters_matches_it(own_activations, tag):
    # tf.keras 2.13 keeps the layers under _layer_checkpoint_dependencies, keys numbered
    # with gaps (dense, dense_2, dense_4), a nested Sequential's too; 2.14 there too, without
    # gaps (dense, dense_1, dense_2); 2.15 as 2.21
    path = D / tag / "custom_tfkeras2.keras"
    m = load_keras(path, custom_layers=CUSTOM)
    versions = json.loads((D / tag / "versions.json").read_text())
    assert m.keras_version == versions["keras"]
    check_expected(m, np.load(D / tag / "custom_tfkeras2.expected.npz"), TOL)


def test_tfkeras213_weights_h5_with_its_config(own_activations, tmp_path):
    # tf.keras 2.13's save_weights("m.weights.h5") writes what its archive holds as
    # model.weights.h5 (the _layer_checkpoint_dependencies layout): read with a config=
    with zipfile.ZipFile(D / "tf213" / "custom_tfkeras2.keras") as z:
        (tmp_path / "m.weights.h5").write_bytes(z.read("model.weights.h5"))
        (tmp_path / "config.json").write_bytes(z.read("config.json"))
    m = load_keras(tmp_path / "m.weights.h5", config=tmp_path / "config.json",
                   custom_layers=CUSTOM)
    assert str(m.keras_version).startswith("2.")
    check_expected(m, np.load(D / "tf213" / "custom_tfkeras2.expected.npz"), TOL)


@pytest.mark.parametrize("tag", ["tf213", "tf215"])
def test_older_tfkeras_h5_of_a_layer_made_of_sublayers(own_activations, tag):
    # their .h5 lists the BatchNormalization sublayer's moving statistics last, as 2.21's:
    # the converter of the archive reads it
    m = load_keras(D / tag / "bn_block_tfkeras2.h5",
                   custom_layers={"tfk_custom>BNBlock": _bn_block})
    assert m.keras_version == json.loads((D / tag / "versions.json").read_text())["keras"]
    check_expected(m, np.load(D / tag / "bn_block_tfkeras2.expected.npz"), TOL)
    assert m.layer("bn_block").params["var"].min() > 0.3


# --- containers_tfkeras2: sublayers in a list and a dict attribute, a list of own layers ---

def _list_dict(config, ctx, heads=("heads/dense_1", "heads/dense")):
    """relu(Dense) x 3 (a list), times g, then concat([start(h), end(h)]) of a dict
    {"start": Dense(2), "end": Dense(3)}. The archive keys the list's and the dict's
    sublayers by class, numbered in list and insertion order (``heads/dense`` is
    ``start``); ``heads``: the order the converter names the dict's in, by default
    tf.keras's ``layer.weights`` order, sorted by key (``end`` first)."""
    order = {"heads/dense": ("ks", "bs"), "heads/dense_1": ("ke", "be")}
    names = ("g", "k0", "b0", "k1", "b1", "k2", "b2") + order[heads[0]] + order[heads[1]]

    def call(p, x, *, rt):
        for i in range(3):
            x = rt.relu(x @ p[f"k{i}"] + p[f"b{i}"])
        x = x * p["g"]
        return jnp.concatenate([x @ p["ks"] + p["bs"], x @ p["ke"] + p["be"]], -1)

    # the heads' shapes, so that arrays given in another order are refused, not swapped
    return LayerImpl(call=call, convert_weights=lambda w: dict(zip(names, w)), n_weights=11,
                     weight_groups=("blocks/dense", "blocks/dense_1", "blocks/dense_2")
                     + heads, param_shapes={"ks": (6, 2), "ke": (6, 3)})


def _stack(config, ctx):
    """stages[1](stages[0](x)), each a Unit: bn(proj(x)) * s (a list of own layers, each
    with a weight of its own and two sublayers)."""
    names = [f"{n}{i}" for i in range(2) for n in ("s", "k", "b", "gamma", "beta", "mean",
                                                  "var")]

    def call(p, x, *, rt):
        for i in range(2):
            h = x @ p[f"k{i}"] + p[f"b{i}"]
            h = (h - p[f"mean{i}"]) / jnp.sqrt(p[f"var{i}"] + 1e-3) * p[f"gamma{i}"]
            x = (h + p[f"beta{i}"]) * p[f"s{i}"]
        return x

    groups = tuple(g for unit in ("stages/unit", "stages/unit_1")
                   for g in (unit, f"{unit}/proj", f"{unit}/bn"))
    return LayerImpl(call=call, convert_weights=lambda w: dict(zip(names, w)), n_weights=14,
                     weight_groups=groups)


CONTAINERS = {"tfk_custom>ListDict": _list_dict, "tfk_custom>Stack": _stack}


@pytest.mark.parametrize("form", FORMS)
def test_sublayers_in_lists_and_dicts_one_converter_reads_keras_and_h5(form):
    m = load_keras(D / f"containers_tfkeras2.{form}", custom_layers=CONTAINERS)
    check_expected(m, np.load(D / "containers_tfkeras2.expected.npz"), TOL)
    assert m.layer("stack").params["var1"].min() > 0.3  # the variances, not a kernel


def test_dict_sublayers_named_in_insertion_order_differ_in_the_h5():
    # the archive's heads/dense is the dict's first value (insertion order), tf.keras's
    # layer.weights and .h5 list "end" before "start" (sorted keys): named in insertion
    # order, the archive is read right and the .h5 swaps the heads
    ref = np.load(D / "containers_tfkeras2.expected.npz")
    custom = {**CONTAINERS, "tfk_custom>ListDict": functools.partial(
        _list_dict, heads=("heads/dense", "heads/dense_1"))}
    check_expected(load_keras(D / "containers_tfkeras2.keras", custom_layers=custom), ref, TOL)
    with pytest.raises(KerasImportError, match=r"layer 'list_dict'.*implies a ks of shape "
                       r"\(6, 2\), the weights file has \(6, 3\).*regrouped by sublayer.*"
                       r"list_dict/dense_4/kernel:0 \(6, 3\).*list_dict/dense_3/kernel:0 "
                       r"\(6, 2\).*a dict attribute's sublayers by sorted key"):
        load_keras(D / "containers_tfkeras2.h5", custom_layers=custom)
    # without the shapes it names, such a converter swaps the heads of the .h5 unnoticed
    unchecked = {**CONTAINERS, "tfk_custom>ListDict": lambda c, ctx: dataclasses.replace(
        custom["tfk_custom>ListDict"](c, ctx), param_shapes=None)}
    m = load_keras(D / "containers_tfkeras2.h5", custom_layers=unchecked)
    assert rel_err(np.asarray(m(ref["x"])), ref["y"]) > 1e-2


def test_list_and_dict_groups_listed_for_a_converter_without_weight_groups():
    def plain(config, ctx):
        impl = _list_dict(config, ctx)
        return LayerImpl(call=impl.call, convert_weights=impl.convert_weights, n_weights=11)

    with pytest.raises(KerasImportError, match=(
            r"'list_dict' \(tfk_custom>ListDict\) expects 11 weight arrays, the file has 1 "
            r".*'blocks/dense' \[\(4, 6\), \(6,\)\], 'blocks/dense_1' \[\(6, 6\), \(6,\)\], "
            r"'blocks/dense_2' .*'heads/dense' \[\(6, 2\), \(2,\)\], 'heads/dense_1' "
            r"\[\(6, 3\), \(3,\)\]\. Give .*a list or dict attribute are named "
            r"<attribute>/<class in snake_case>.*tf.keras's layer.weights lists a dict's by "
            r"sorted key")):
        load_keras(D / "containers_tfkeras2.keras", custom_layers={**CONTAINERS,
                                                                  "tfk_custom>ListDict": plain})


@pytest.mark.parametrize("form", FORMS)
def test_rnn_with_cells_of_the_users_own(form):
    """tf_keras 2.21's ``RNN`` layers with registered cells of the user's own, behind a
    ``Masking`` layer (tf.keras 2's loop: masked steps output the previous output, zeros
    before the first unmasked one), in ``Bidirectional`` and a ``StackedRNNCells``, read by
    the ``CellImpl`` converters of tests/own_cells.py. Without them the
    file is refused naming the cell (tf_keras itself does not reload its ``.h5``)."""
    from own_cells import CELLS

    path = D / f"cells_tfkeras2.{form}"
    with pytest.raises(KerasImportError, match="MinimalRNNCell.*CellImpl"):
        load_keras(path)
    m = load_keras(path, custom_layers={f"tfk_custom>{k}": v for k, v in CELLS.items()})
    check_expected(m, np.load(D / "cells_tfkeras2.expected.npz"), TOL)
