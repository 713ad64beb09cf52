"""The shared fixture files (written by the real Keras 2 and Keras 3) load and reproduce the
outputs recorded by the library that wrote them: probabilities and logits."""

import jax
import numpy as np
import pytest

from model_import import load_keras

CASES = [
    ("mnist_cnn_tfkeras2.h5", "mnist_cnn_tfkeras2.expected.npz", "softmax"),
    ("mnist_cnn_keras3.keras", "mnist_cnn_keras3.expected.npz", "softmax"),
    ("mnist_cnn_keras3.h5", "mnist_cnn_keras3.expected.npz", "softmax"),
    ("binary_cnn_keras3.keras", "binary_cnn_keras3.expected.npz", "sigmoid"),
]


@pytest.mark.parametrize("fname, expected, act", CASES)
def test_fixture_reproduces_probs_and_logits(fixtures_dir, fname, expected, act):
    ref = np.load(fixtures_dir / expected)
    m = load_keras(fixtures_dir / fname)
    probs = np.asarray(m(ref["x"]))
    np.testing.assert_allclose(probs, ref["probs"], atol=2e-6, rtol=0)
    logits = np.asarray(m.with_head("logits")(ref["x"]))
    scale = np.abs(ref["logits"]).max()
    assert np.abs(logits - ref["logits"]).max() <= 1e-5 * scale
    # heads applied to the logits reproduce the saved head
    np.testing.assert_allclose(np.asarray(m.with_head(act)(ref["x"])), ref["probs"], atol=2e-6)
    assert m.head == "saved"  # with_head returned new models


@pytest.mark.parametrize("fname", ["mnist_cnn_tfkeras2.h5", "mnist_cnn_keras3.keras",
                                   "mnist_cnn_keras3.h5", "binary_cnn_keras3.keras"])
def test_fixture_structure_matches_manifest(fixtures_dir, fname):
    import json

    entry = json.loads((fixtures_dir / "fixtures_manifest.json").read_text())[fname]
    m = load_keras(fixtures_dir / fname)
    # layer names in Keras order; Keras's model.layers omits a Sequential's InputLayer
    names = m.layer_names[1:] if m.graph.class_name == "Sequential" else m.layer_names
    assert names == entry["layers"]
    assert m.count_params() == entry["params"]
    for info in m.layers:
        n = sum(int(np.size(a)) for a in jax.tree_util.tree_leaves(info.params))
        assert n == 0 or info.class_name in ("Conv2D", "Dense")


def test_fixture_output_shapes(fixtures_dir):
    m = load_keras(fixtures_dir / "mnist_cnn_tfkeras2.h5")
    assert m.input_shape == (28, 28, 1)
    assert m.layer("conv2d_2").output_shape == (24, 24, 64)
    assert m.layer("flatten_1").output_shape == (9216,)
    assert m.output_shape == (10,)
    assert m.layer("dense_2").activation == "softmax"
    assert m.layer("dense_1").params["kernel"].shape == (9216, 128)


def test_keras3_h5_and_keras_give_identical_params(fixtures_dir):
    a = load_keras(fixtures_dir / "mnist_cnn_keras3.keras")
    b = load_keras(fixtures_dir / "mnist_cnn_keras3.h5")
    assert a.layer_names == b.layer_names
    ta, tb = jax.tree_util.tree_structure(a.params), jax.tree_util.tree_structure(b.params)
    assert ta == tb
    for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
