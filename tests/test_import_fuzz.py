"""Damaged and edited Keras files give a KerasImportError that names the file, the layer and
the problem: never a bare KeyError/TypeError/AttributeError/ValueError/RuntimeError from inside
the importer or h5py, and never a silently different model.

Each case is one distinct failure found by a seeded sweep of mutants of the committed fixtures
(configs with keys deleted, nulled or retyped, classes renamed, layers dropped or renamed,
references broken, sizes changed; weights deleted, reshaped, retyped; archive members removed;
bits flipped), rebuilt here from those fixtures in ``tmp_path``.
"""

import json
import pathlib
import shutil
import zipfile

import h5py
import numpy as np
import pytest

from model_import import KerasImportError, load_keras

F = pathlib.Path(__file__).parent / "fixtures"
SEQ = "keras2/seq_tfkeras2.h5"  # tf.keras 2 Functional: Conv1D, BatchNormalization, Dense
MNIST_H5 = "mnist_cnn_keras3.h5"  # Keras 3, legacy .h5 writer
MNIST_KERAS = "mnist_cnn_keras3.keras"
CNN_SEQ = "keras2_legacy/cnn_keras224.h5"  # Keras 2.2.4 Sequential


def _raises(path, *words, **kw) -> str:
    with pytest.raises(KerasImportError) as info:
        load_keras(path, **kw)
    msg = str(info.value)
    assert str(path) in msg
    for w in words:
        assert w in msg, (w, msg)
    return msg


def _copy(tmp_path, rel) -> pathlib.Path:
    p = tmp_path / pathlib.Path(rel).name
    shutil.copy(F / rel, p)
    return p


def _h5(tmp_path, rel, edit) -> pathlib.Path:
    p = _copy(tmp_path, rel)
    with h5py.File(p, "r+") as f:
        edit(f)
    return p


def _zip(tmp_path, rel, edit) -> pathlib.Path:
    """``edit({member: bytes})`` rewrites the archive's members."""
    with zipfile.ZipFile(F / rel) as z:
        members = {n: z.read(n) for n in z.namelist()}
    edit(members)
    p = tmp_path / pathlib.Path(rel).name
    with zipfile.ZipFile(p, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    return p


def _weights(tmp_path, rel, edit) -> pathlib.Path:
    """``edit(h5py.File)`` on a .keras archive's model.weights.h5."""
    def on_members(members):
        w = tmp_path / "w.h5"
        w.write_bytes(members["model.weights.h5"])
        with h5py.File(w, "r+") as f:
            edit(f)
        members["model.weights.h5"] = w.read_bytes()
    return _zip(tmp_path, rel, on_members)


class _Replace:
    def __init__(self, value):
        self.value = value


def _config(tmp_path, rel, edit) -> pathlib.Path:
    """``edit(config dict)`` (or returns ``_Replace(new config)``) on an .h5's model_config or
    an archive's config.json."""
    def new(cfg):
        out = edit(cfg)
        return json.dumps(out.value if isinstance(out, _Replace) else cfg)
    if rel.endswith(".keras"):
        def on_members(members):
            members["config.json"] = new(json.loads(members["config.json"])).encode()
        return _zip(tmp_path, rel, on_members)

    def on_file(f):
        f.attrs["model_config"] = new(json.loads(f.attrs["model_config"]))
    return _h5(tmp_path, rel, on_file)


def _layers(cfg) -> list:
    inner = cfg["config"]
    return inner if isinstance(inner, list) else inner["layers"]


def _layer(cfg, name) -> dict:
    """The entry of layer ``name`` (nested models searched too)."""
    for lc in _layers(cfg):
        c = lc.get("config")
        if lc.get("name") == name or (isinstance(c, dict) and c.get("name") == name):
            return lc
        if lc["class_name"] in ("Functional", "Sequential", "Model"):
            try:
                return _layer(lc, name)
            except KeyError:
                pass
    raise KeyError(name)


def _set(cfg, name, **kw):
    lc = _layer(cfg, name)
    for k, v in kw.items():
        if k == "class_name":
            lc[k] = v
        else:
            lc["config"][k] = v


def _drop(cfg, name):
    def walk(c):
        ls = _layers(c)
        for i, lc in enumerate(ls):
            if lc.get("name") == name or (lc.get("config") or {}).get("name") == name:
                del ls[i]
                return True
            if lc["class_name"] in ("Functional", "Sequential") and walk(lc):
                return True
        return False
    assert walk(cfg)


def _flip(tmp_path, rel, offset, mask) -> pathlib.Path:
    data = bytearray((F / rel).read_bytes())
    data[offset] ^= mask
    p = tmp_path / pathlib.Path(rel).name
    p.write_bytes(bytes(data))
    return p


# ------------------------------------------------------------------ architecture configs
CONFIG_CASES = {
    # the whole config is not an object (was: AttributeError from inside)
    "config_not_object": (SEQ, lambda c: _Replace([1, 2]), ["JSON list", "'class_name'"]),
    "model_config_list": (MNIST_KERAS, lambda c: c.update(config=["x"]), ["'layers' is a list"]),
    "layers_not_list": (SEQ, lambda c: c["config"].update(layers="abc"), ["'layers' is a list"]),
    # a layer entry / its options null or missing (was: AttributeError, TypeError, or a
    # Flatten with default options: channels_last instead of channels_first)
    "entry_null": (SEQ, lambda c: c["config"]["layers"].__setitem__(3, None),
                   ["a layer entry is a NoneType"]),
    "options_null": ("keras2/channels_first_tfkeras2.h5",
                     lambda c: _layer(c, "cf_flat").update(config=None),
                     ["'cf_flat'", "config None"]),
    "options_missing": (CNN_SEQ, lambda c: _layers(c)[5].pop("config"), ["config None"]),
    "no_name": (MNIST_KERAS, lambda c: [_layer(c, "flatten").pop("name"),
                                        _layers(c)[5]["config"].pop("name")],
                ["'Flatten'", "name None"]),
    # broken references (was: IndexError, TypeError from inside)
    "ref_truncated": (SEQ, lambda c: _layer(c, "c1_same")["inbound_nodes"][0][0].__delitem__(
        slice(1, None)), ["'c1_same'", "tensor reference", "[layer name, node index"]),
    "history_null": (MNIST_KERAS, lambda c: _layer(c, "conv2d_2")["inbound_nodes"][0]["args"][0][
        "config"].update(keras_history=None), ["'conv2d_2'", "tensor reference is None"]),
    "node_not_node": (SEQ, lambda c: _layer(c, "out")["inbound_nodes"].__setitem__(
        0, {"a": 1}), ["'out'", "an inbound node is"]),
    "outputs_string": (SEQ, lambda c: c["config"].update(output_layers="oops"),
                       ["output_layers", "not a list of tensor references"]),
    # no outputs: loaded, then failed when called (IndexError)
    "outputs_empty": (MNIST_KERAS, lambda c: c["config"].update(output_layers=[]),
                      ["0 outputs", "at least one"]),
    # a layer's class renamed into a model class (was: ValueError "expects 0 inputs")
    "dense_as_model": (SEQ, lambda c: _set(c, "out", class_name="Functional"),
                       ["'out'", "'layers' is a list"]),
    # two layers of one name: the second replaced the first
    "duplicate_name": (SEQ, lambda c: [_layer(c, "gap1")["config"].update(name="up1"),
                                       _layer(c, "gap1").update(name="up1")],
                       ["two layers named 'up1'"]),
    # an InputLayer in the middle: an identity that dropped a layer silently
    "input_layer_called": ("keras2/random_crop_tfkeras2.h5",
                           lambda c: _set(c, "crop_down", class_name="InputLayer"),
                           ["'crop_down'", "InputLayer called on"]),
    "input_layer_in_sequential": (CNN_SEQ, lambda c: _layers(c)[3].update(
        class_name="InputLayer"), ["InputLayer after its first layer"]),
    # sizes (was: loaded, then an MLIR error when called; or a reshape ValueError)
    "negative_strides": (MNIST_H5, lambda c: _set(c, "conv2d_2", strides=[-1, -1]),
                         ["'conv2d_2'", "strides=[-1, -1]", "positive"]),
    "zero_units": (SEQ, lambda c: _set(c, "out", units=0), ["'out'", "units=0"]),
    "negative_cropping": ("keras2_legacy/zoo_keras224.h5",
                          lambda c: _set(c, "crop", cropping=[[2, 2], [-1, 3]]),
                          ["'crop'", "cropping=[[2, 2], [-1, 3]]", "sizes >= 0"]),
    # BatchNormalization over the batch axis: the statistics broadcast there (a batch of
    # one loaded; a larger one failed, or matched the size and was wrong)
    "bn_batch_axis": (SEQ, lambda c: _set(c, "bn1", axis=[0]),
                      ["'bn1'", "not the batch axis"]),
    "input_shape_string": (SEQ, lambda c: _layers(c)[0]["config"].update(
        batch_input_shape=[None, "24", 4]), ["input shape", "'24'"]),
    # a converter failing on another class's options says the config is malformed (was:
    # "could not be converted (KeyError('units'))")
    "options_of_other_class": (SEQ, lambda c: _set(c, "mp1", class_name="Dense"),
                               ["'mp1'", "'units'", "malformed"]),
    # an activation object without a name: was read as linear
    "activation_unnamed": (SEQ, lambda c: _set(c, "out", activation={"x": "softmax"}),
                           ["'out'", "unknown activation"]),
}


@pytest.mark.parametrize("name", sorted(CONFIG_CASES))
def test_damaged_config(tmp_path, name):
    rel, edit, words = CONFIG_CASES[name]
    _raises(_config(tmp_path, rel, edit), *words)


# ------------------------------------------------------------------ recorded Keras versions
@pytest.mark.parametrize("value", ["abc", "", np.int64(2)])
def test_damaged_keras_version(tmp_path, value):
    # was: read as Keras 3 semantics for a tf.keras 2 file (a different model)
    p = _h5(tmp_path, SEQ, lambda f: f.attrs.__setitem__("keras_version", value))
    _raises(p, "Keras version recorded in the keras_version attribute", "expected a version")


def test_metadata_not_an_object(tmp_path):
    # was: AttributeError: 'str' object has no attribute 'get'
    p = _zip(tmp_path, "keras2/zoo_tfkeras2.keras",
             lambda m: m.update({"metadata.json": b'"2.15.0"'}))
    _raises(p, "metadata.json", "JSON str")
    p = _zip(tmp_path, "keras2/zoo_tfkeras2.keras",
             lambda m: m.update({"metadata.json": b'{"keras_version": ["2.15.0"]}'}))
    _raises(p, "metadata.json", "expected a version")


def test_archive_without_metadata_keeps_keras2_semantics(tmp_path):
    # was: read as Keras 3 (tf.keras's archives are told by their config's modules)
    p = _zip(tmp_path, "keras2/zoo_tfkeras2.keras", lambda m: m.pop("metadata.json"))
    assert load_keras(p).keras_version.startswith("2.")


# ------------------------------------------------------------------ weights
def _del(name):
    return lambda f: f.__delitem__(name)


def _replace(name, value):
    def edit(f):
        del f[name]
        f[name] = value
    return edit


WEIGHT_CASES = {
    # weight_names lists an array the group lacks (was: "malformed Keras file: KeyError(...)")
    "listed_array_missing": (SEQ, _del("model_weights/out/out/kernel:0"),
                             ["'out'", "weight_names", "'out/kernel:0'"]),
    # strings (was: TypeError from JAX)
    "strings": (SEQ, _replace("model_weights/bn1/bn1/gamma:0",
                              np.array(["a"] * 6, dtype=h5py.string_dtype())),
                ["'bn1'", "not numbers"]),
    # a scalar or a transposed array broadcast into another layer (loaded silently)
    "bn_scalar": (SEQ, _replace("model_weights/bn1/bn1/moving_mean:0", np.float32(0.5)),
                  ["'bn1'", "of one shape"]),
    "lstm_bias_scalar": ("keras2/masking_tfkeras2.h5",
                         _replace("model_weights/lstm_last/lstm_last/lstm_cell/bias:0",
                                  np.float32(0.5)), ["'lstm_last'", "expected a bias"]),
    "gru_bias_transposed": ("keras2_tf2x/seq_tf28.h5", lambda f: _replace(
        "model_weights/gru_seq/gru_seq/gru_cell/bias:0",
        np.asarray(f["model_weights/gru_seq/gru_seq/gru_cell/bias:0"]).T.copy())(f),
        ["'gru_seq'", "expected a bias of shape (2, 12)"]),
    "depthwise_bias_scalar": ("keras2/zoo_tfkeras2.h5", _replace(
        "model_weights/dw_mult/dw_mult/bias:0", np.float32(0.5)), ["'dw_mult'", "0-d"]),
    # a converter's reshape failed (was: bare ValueError "not enough values to unpack")
    "depthwise_scalar": ("keras2/transfer_functional_tfkeras2.h5",
                         _replace("model_weights/base/b_dw/depthwise_kernel:0", np.float32(1)),
                         ["'base/b_dw'", "do not fit its config"]),
}


@pytest.mark.parametrize("name", sorted(WEIGHT_CASES))
def test_damaged_weights(tmp_path, name):
    rel, edit, words = WEIGHT_CASES[name]
    _raises(_h5(tmp_path, rel, edit), *words)


def test_keras3_vars_not_numbered(tmp_path):
    # was: bare ValueError: invalid literal for int() with base 10: 'w'
    p = _weights(tmp_path, MNIST_KERAS, lambda f: f.move("layers/dense/vars/0",
                                                         "layers/dense/vars/w"))
    _raises(p, "'/layers/dense/vars'", "expected datasets named 0, 1")


# ------------------------------------------------------------------ weights nobody takes
def test_weights_of_a_layer_turned_weightless(tmp_path):
    # BatchNormalization renamed Activation: its weights were ignored, the layer an identity
    p = _config(tmp_path, SEQ, lambda c: _set(c, "bn1", class_name="Activation"))
    _raises(p, "['bn1']", "no layer of the architecture takes")


def test_weights_of_a_dropped_layer(tmp_path):
    # Keras 2 refuses a weights file with more layers than the model; the importer dropped
    # the last Dense of a Sequential (another output size), or a nested model's layer
    p = _config(tmp_path, CNN_SEQ, lambda c: _drop(c, "preds"))
    _raises(p, "['preds']", "no layer of the architecture takes")
    for rel, words in [("keras2/transfer_frozen_tfkeras2.h5", ["base: b_bn2/gamma:0"]),
                       ("keras2/transfer_frozen_tfkeras2.keras", ["batch_normalization_1"])]:
        p = _config(tmp_path, rel, lambda c: _drop(c, "b_bn2"))
        _raises(p, "no layer of the architecture takes", *words)


# ------------------------------------------------------------------ damaged HDF5 structure
def test_hdf5_damage_in_the_metadata(tmp_path):
    # one bit of the attribute heap (was: bare RuntimeError from h5py)
    p = _flip(tmp_path, "keras2/tfop_resize_tfkeras2.h5", 818, 0x80)
    _raises(p, "HDF5 structure cannot be read", "corrupt")


@pytest.mark.parametrize("rel,offset,mask,words", [
    # a group's symbol table: bare RuntimeError
    ("keras2/rnn_tfkeras2.h5", 49707, 0x01, ["the weights cannot be read", "corrupt"]),
    # the heap ID of layer_names: bare OSError (now found before libhdf5 reads the heap)
    ("keras2/attention_tfkeras2.h5", 10732, 0x80,
     ["'layer_names' of '/model_weights'", "names object 144", "corrupt"]),
])
def test_hdf5_damage_in_the_weights(tmp_path, rel, offset, mask, words):
    _raises(_flip(tmp_path, rel, offset, mask), *words)
