"""Files of the standalone Keras 2 library (``import keras`` 2.1.6, 2.2.4 and 2.3.1 on
TensorFlow 1.15, the keras-vis era), written once by
tests/fixtures/keras2_legacy/make_legacy_fixtures.py, load without TensorFlow and reproduce
what that Keras computed."""

import json
import pathlib

import h5py
import jax
import numpy as np
import pytest

from import_helpers import check_expected
from model_import import KerasImportError, load_keras

LEGACY = pathlib.Path(__file__).parent / "fixtures" / "keras2_legacy"
TOL = 1e-4
VERSIONS = {"keras216": "2.1.6", "keras224": "2.2.4", "keras231": "2.3.1"}
MODELS = ["cnn", "zoo", "seq", "nested", "nestedseq"]
FILES = [(m, t) for t in VERSIONS for m in MODELS]


@pytest.mark.parametrize("name,tag", FILES)
def test_legacy_keras_file_matches_keras(name, tag):
    m = load_keras(LEGACY / f"{name}_{tag}.h5")
    assert m.keras_version == VERSIONS[tag]
    check_expected(m, np.load(LEGACY / f"{name}_{tag}.expected.npz"))


@pytest.mark.parametrize("tag", VERSIONS)
def test_legacy_save_weights_with_to_json(tag):
    # save_weights("cnn_<tag>_weights.h5") + to_json(): Keras 2.1's Sequential config is a
    # bare list of layers, 2.2+'s a dict
    cfg = json.loads((LEGACY / f"cnn_{tag}.json").read_text())
    assert isinstance(cfg["config"], list) == (tag == "keras216")
    m = load_keras(LEGACY / f"cnn_{tag}_weights.h5", config=LEGACY / f"cnn_{tag}.json")
    h = load_keras(LEGACY / f"cnn_{tag}.h5")  # compared with Keras above
    assert m.keras_version == VERSIONS[tag]
    assert m.layer_names == h.layer_names
    lw, lh = (jax.tree_util.tree_leaves_with_path(a.params) for a in (m, h))
    assert [p for p, _ in lw] == [p for p, _ in lh]
    for (_, a), (_, b) in zip(lw, lh):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("tag", VERSIONS)
def test_legacy_nested_sequential_in_sequential(tag):
    # Keras 2.1 writes a Sequential nested in a Sequential as {"class_name": "Sequential",
    # "config": [layers...]}: no name (its weights group has one: the file's layer_names)
    # and no input shape of its own (that of its first layer)
    m = load_keras(LEGACY / f"nestedseq_{tag}.h5")
    assert "inner/in_bn" in m.layer_names
    assert m.input_shape == (5,)
    assert set(m.layer("inner/in_bn").params) == {"gamma", "beta", "moving_mean",
                                                   "moving_variance"}


def test_legacy_gru_defaults_are_covered():
    # standalone Keras 2 GRUs reset before the recurrent matmul (reset_after=False) and,
    # before 2.3, use hard_sigmoid (Keras 2's clip(0.2 x + 0.5)) as recurrent activation
    def gru(tag, name):
        with h5py.File(LEGACY / f"seq_{tag}.h5", "r") as f:
            cfg = json.loads(f.attrs["model_config"])
        return [lay["config"] for lay in cfg["config"]["layers"] if lay["name"] == name][0]

    for tag, ract in [("keras216", "hard_sigmoid"), ("keras224", "hard_sigmoid"),
                      ("keras231", "sigmoid")]:
        assert gru(tag, "gru")["reset_after"] is False
        assert gru(tag, "gru")["recurrent_activation"] == ract
        assert gru(tag, "gru_zero_mask")["reset_after"] is True


def test_keras1_file_is_refused_with_advice(tmp_path):
    # a Keras 1 file: Keras 1 layer configs (Convolution2D, nb_filter, output_dim...) and
    # weight names; refused by version, not by a KeyError somewhere in a converter
    cfg = {"class_name": "Sequential", "config": [
        {"class_name": "Dense", "config": {"name": "dense_1", "output_dim": 2,
                                           "input_dim": 3, "activation": "linear",
                                           "batch_input_shape": [None, 3], "bias": True}}]}
    path = tmp_path / "keras1.h5"
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"1.2.2"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps(cfg).encode()
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = [b"dense_1"]
        d = g.create_group("dense_1")
        d.attrs["weight_names"] = [b"dense_1_W:0", b"dense_1_b:0"]
        d["dense_1_W:0"] = np.zeros((3, 2), np.float32)
        d["dense_1_b:0"] = np.zeros((2,), np.float32)
    with pytest.raises(KerasImportError,
                       match=r"Keras 1\.2\.2: Keras 1 files are not supported.*Keras 2"):
        load_keras(path)


def test_legacy_fixture_budget():
    # three Keras versions x five small models (+ one save_weights file each): 0.98 MB
    total = sum(p.stat().st_size for p in LEGACY.iterdir())
    assert total < 1.5e6
