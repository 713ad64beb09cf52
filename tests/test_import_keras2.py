"""Keras 2 (tf.keras 2.21) files, written once by tests/fixtures/keras2/make_keras2_fixtures.py
with TensorFlow, load without TensorFlow and reproduce what tf.keras computed."""

import json
import pathlib

import jax
import numpy as np
import pytest

from import_helpers import check_expected, rel_err
from model_import import load_keras

K2 = pathlib.Path(__file__).parent / "fixtures" / "keras2"
TOL = 1e-4
NAMES = ["zoo_tfkeras2", "seq_tfkeras2", "mobilenetv2_tfkeras2", "mobilenetv3small_tfkeras2",
         "transfer_frozen_tfkeras2", "transfer_mobilenet_tfkeras2", "channels_first_tfkeras2",
         "transfer_functional_tfkeras2", "nested_wrappers_tfkeras2"]
# the same models in tf_keras's other file forms: its own .keras archive (model.save("m.keras"),
# tf.keras 2.13+) and save_weights("m.weights.h5") (the new layout) with the to_json()
ARCHIVES = ["zoo_tfkeras2", "transfer_frozen_tfkeras2", "transfer_functional_tfkeras2",
            "nested_wrappers_tfkeras2"]
NEW_WEIGHTS = {"zoo_tfkeras2": "zoo_config.json",
               "transfer_functional_tfkeras2": "transfer_functional_tfkeras2.json",
               "nested_wrappers_tfkeras2": "nested_wrappers_tfkeras2.json"}
FILES = ([(n, "h5") for n in NAMES] + [(n, "keras") for n in ARCHIVES]
         + [(n, "weights.h5") for n in NEW_WEIGHTS])


def _load(name, form):
    if form == "weights.h5":
        return load_keras(K2 / f"{name}.weights.h5", config=K2 / NEW_WEIGHTS[name])
    return load_keras(K2 / f"{name}.{form}")


@pytest.mark.parametrize("name,form", FILES)
def test_tfkeras2_file_matches_tfkeras(name, form):
    ref = np.load(K2 / f"{name}.expected.npz")
    m = _load(name, form)
    assert str(m.keras_version).startswith("2.")
    check_expected(m, ref, TOL, require_logits=False)


def test_tfkeras2_zoo_contains_tf_op_layers():
    m = load_keras(K2 / "zoo_tfkeras2.h5")
    classes = {info.class_name for info in m.layers}
    assert {"TFOpLambda", "SlicingOpLambda", "DepthwiseConv2D", "SeparableConv2D",
            "LayerNormalization", "PReLU", "UpSampling2D", "ThresholdedReLU"} <= classes
    # tf.keras lists TFOpLambda layers in model.layers: so do we
    assert "tf.math.multiply_1" in m.layer_names


def test_tfkeras2_mobilenetv3_uses_tf_ops():
    m = load_keras(K2 / "mobilenetv3small_tfkeras2.h5")
    fns = {info.config.get("function") for info in m.layers if info.class_name == "TFOpLambda"}
    assert {"__operators__.add", "math.multiply"} <= fns


def test_frozen_nested_base_is_addressable():
    m = load_keras(K2 / "transfer_frozen_tfkeras2.h5")
    assert "base/b_bn2" in m.layer_names
    assert m.resolve_layer("b_bn2") == "base/b_bn2"
    bn = m.layer("base/b_bn2").params
    assert set(bn) == {"gamma", "beta", "moving_mean", "moving_variance"}
    ref = np.load(K2 / "transfer_frozen_tfkeras2.expected.npz")
    # intermediate inside the nested model: the nested model's output feeds "gap"
    y, acts = m.apply(m.params, ref["x"], capture=["base", "base/b_relu2"])
    np.testing.assert_array_equal(np.asarray(acts["base"]), np.asarray(acts["base/b_relu2"]))
    assert rel_err(y, ref["y"]) <= TOL


@pytest.mark.parametrize("config_kind", ["json_string", "json_path", "dict"])
def test_tfkeras2_save_weights_with_separate_config(config_kind):
    cfg_path = K2 / "zoo_config.json"
    config = {"json_string": cfg_path.read_text(), "json_path": str(cfg_path),
              "dict": json.loads(cfg_path.read_text())}[config_kind]
    m = load_keras(K2 / "zoo_weights.h5", config=config)
    ref = np.load(K2 / "zoo_tfkeras2.expected.npz")
    assert rel_err(m(ref["x"]), ref["y"]) <= TOL


def test_tfkeras2_weights_only_without_config_says_what_to_do():
    from model_import import KerasImportError

    with pytest.raises(KerasImportError, match="config="):
        load_keras(K2 / "zoo_weights.h5")


@pytest.mark.parametrize("name", ARCHIVES)
def test_tfkeras2_archive_equals_its_h5(name):
    # tf_keras's .keras archive: Keras 2 configs (list-form nodes, nested calls numbered from
    # 1) and weights keyed like Keras 3's; the metadata gives the version
    a, h = load_keras(K2 / f"{name}.keras"), load_keras(K2 / f"{name}.h5")
    assert a.keras_version == h.keras_version == "2.21.0"
    assert a.layer_names == h.layer_names
    la, lh = jax.tree_util.tree_leaves_with_path(a.params), jax.tree_util.tree_leaves_with_path(
        h.params)
    assert [p for p, _ in la] == [p for p, _ in lh]
    for (_, x), (_, y) in zip(la, lh):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_tfkeras2_new_layout_weights_take_the_configs_keras_version():
    # a .weights.h5 records no Keras version: tf.keras's to_json() does ("2.21.0"), and the
    # config.json of a tf.keras archive names Keras 2 modules. Read as Keras 3, the nested
    # base's call would be missing and hard_sigmoid would be Keras 3's.
    import zipfile

    name = "transfer_functional_tfkeras2"
    ref = np.load(K2 / f"{name}.expected.npz")
    cfg = json.loads(zipfile.ZipFile(K2 / f"{name}.keras").read("config.json"))
    assert "keras_version" not in cfg
    m = load_keras(K2 / f"{name}.weights.h5", config=cfg)
    assert m.keras_version == "2.13"
    assert rel_err(m(ref["x"]), ref["y"]) <= TOL
    assert load_keras(K2 / f"{name}.weights.h5",
                      config=K2 / f"{name}.json").keras_version == "2.21.0"


def test_keras2_fixture_budget():
    # 6.3 MB since the sequence models (0.47 MB), 6.4 MB since the tf_heads pair (0.06 MB),
    # 6.5 MB since the tf_op_args group (0.1 MB), 6.7 MB since nested_wrappers (0.18 MB)
    # and training_call (0.02 MB):
    # tf_keras's .h5 and .keras files carry a few kB of HDF5 structure per layer, whatever
    # the (here ~1500) weights
    total = sum(p.stat().st_size for p in K2.iterdir())
    assert total < 6.7e6


def test_tfkeras2_batch_normalization_several_axes_and_virtual_batch():
    # axis=[1, 3] stores its parameters broadcast, (1, 5, 1, 3); virtual_batch_size=3 saves
    # the axes and parameters of a rank-5 view (axis [4], (1, 1, 1, 1, 3)): both were read
    # onto the wrong axes (a shape error, and wrong values where channels == batch)
    ref = np.load(K2 / "bn_axes_tfkeras2.expected.npz")
    m = load_keras(K2 / "bn_axes_tfkeras2.h5")
    y, acts = m.apply(m.params, ref["x"], capture=["bn_multi", "bn_virtual"])
    assert rel_err(y, ref["y"]) <= TOL
    for name in ("bn_multi", "bn_virtual"):
        assert rel_err(acts[name], ref[f"act__{name}"]) <= TOL


def test_tfkeras2_training_true_calls_warn_and_compute_at_inference():
    # tf.keras 2 keeps a recorded `training=True` in predict (the BatchNormalization uses
    # each batch's statistics, dropout drops at random); the importer computes the inference
    # model, as Keras 3's predict does, and says so, naming the layer
    ref = np.load(K2 / "training_call_tfkeras2.expected.npz")
    assert np.abs(ref["y_predict"] - ref["y_inference"]).max() > 0.1
    with pytest.warns(UserWarning, match=r"'bn' \(BatchNormalization\).*training=True"):
        m = load_keras(K2 / "training_call_tfkeras2.h5")
    assert rel_err(m(ref["x"]), ref["y_inference"]) <= TOL
    # a frozen BatchNormalization runs at inference whatever `training` says (tf.keras 2.4+;
    # standalone Keras 2.2 used the batch statistics): nothing to warn about
    import h5py
    import warnings

    with h5py.File(K2 / "training_call_tfkeras2.h5") as f:
        cfg = json.loads(f.attrs["model_config"])
    for lc in cfg["config"]["layers"]:
        if lc["name"] == "bn":
            lc["config"]["trainable"] = False
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # (not NumPy deprecations)
        frozen = load_keras(K2 / "training_call_tfkeras2.h5", config=cfg)
    assert rel_err(frozen(ref["x"]), ref["y_inference"]) <= TOL
    with pytest.warns(UserWarning, match="'bn'"):
        load_keras(K2 / "training_call_tfkeras2.h5", config=dict(cfg, keras_version="2.2.4"))
