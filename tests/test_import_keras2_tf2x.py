"""Files written by tf.keras in TensorFlow 2.4, 2.8 and 2.11 (written once by
tests/fixtures/keras2_tf2x/make_tf2x_fixtures.py, one run per TensorFlow version) load without
TensorFlow and reproduce what that tf.keras computed."""

import json
import pathlib

import jax
import numpy as np
import pytest

from import_helpers import check_expected, rel_err
from model_import import load_keras

D = pathlib.Path(__file__).parent / "fixtures" / "keras2_tf2x"
TOL = 1e-4
TAGS = {"tf24": "2.4.", "tf28": "2.8.", "tf211": "2.11."}  # the keras_version each records
MODELS = ["zoo", "seq", "transfer", "attention"]


def _versions(tag):
    return json.loads((D / f"versions_{tag}.json").read_text())


@pytest.mark.parametrize("tag", TAGS)
@pytest.mark.parametrize("name", MODELS)
def test_tf2x_file_matches_tfkeras(name, tag):
    m = load_keras(D / f"{name}_{tag}.h5")
    recorded = _versions(tag)["files"][f"{name}_{tag}.h5"]["keras_version"]
    assert m.keras_version == recorded and recorded.startswith(TAGS[tag])
    check_expected(m, np.load(D / f"{name}_{tag}.expected.npz"))


@pytest.mark.parametrize("tag", TAGS)
def test_tf2x_save_weights_with_to_json(tag):
    # legacy save_weights HDF5 + to_json(): the JSON records the Keras version
    m = load_keras(D / f"transfer_weights_{tag}.h5", config=D / f"transfer_config_{tag}.json")
    assert m.keras_version == _versions(tag)["files"][f"transfer_weights_{tag}.h5"][
        "keras_version"]
    assert m.keras_version.startswith(TAGS[tag])
    ref = np.load(D / f"transfer_{tag}.expected.npz")
    assert rel_err(m(ref["x"]), ref["y"]) <= TOL
    assert m.resolve_layer("b_dw_bn") == "base/b_dw_bn"


@pytest.mark.parametrize("tag", TAGS)
def test_tf2x_zoo_tf_function_layers(tag):
    # TF functions on Keras tensors are TFOpLambda / SlicingOpLambda layers from TF 2.4 on,
    # named and configured as in tf_keras 2.21
    m = load_keras(D / f"zoo_{tag}.h5")
    recorded = _versions(tag)["files"][f"zoo_{tag}.h5"]["tf_op_layers"]
    assert set(recorded.values()) == {
        "TFOpLambda(__operators__.add)", "TFOpLambda(nn.relu6)", "TFOpLambda(math.multiply)",
        "TFOpLambda(math.reduce_mean)", "SlicingOpLambda(__operators__.getitem)"}
    for name, kind in recorded.items():
        info = m.layer(name)
        assert f"{info.class_name}({info.config['function']})" == kind


@pytest.mark.parametrize("tag", TAGS)
def test_tf2x_multi_head_attention_output_mask(tag):
    # tf.keras before 2.10: MultiHeadAttention ignored the Keras masks and its output had no
    # mask, so a GlobalAveragePooling1D after it averages every step; from 2.10 on the
    # output carries the query's mask (the importer gave the output the mask for every
    # version, 7e-2 off on the TF 2.4 and 2.8 files)
    ref = np.load(D / f"attention_{tag}.expected.npz")
    sa, gap = ref["act__mha_self"], ref["act__gap_sa"]
    keep = (ref["x"] != 0)[..., None]
    masked = (sa * keep).sum(1) / keep.sum(1)
    if tag in ("tf24", "tf28"):
        np.testing.assert_allclose(gap, sa.mean(1), atol=1e-6)
        assert np.abs(gap - masked).max() > 1e-2  # the fixture tells the two apart
    else:
        np.testing.assert_allclose(gap, masked, atol=1e-6)
    m = load_keras(D / f"attention_{tag}.h5")
    _, got = jax.jit(lambda p, x: m.apply(p, x, capture=["gap_sa"]))(m.params, ref["x"])
    assert rel_err(got["gap_sa"], gap) <= TOL


def test_tf2x_fixture_budget():
    files = list(D.iterdir())
    assert all(p.stat().st_size < 200e3 for p in files if p.suffix == ".h5")
    assert sum(p.stat().st_size for p in files) < 1.5e6
