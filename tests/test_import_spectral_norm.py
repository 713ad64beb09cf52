"""Keras 3's SpectralNormalization wrapper against real Keras 3 (NumPy backend unless
``KERAS_BACKEND`` says otherwise: see conftest.py), saved as ``.keras``, legacy ``.h5`` and
``.weights.h5``.

Each wrapper is called once with ``training=True`` before saving, so that its kernel is the
normalized one and ``vector_u`` moved: at inference Keras runs the wrapped layer with the
saved kernel. Cases: Dense with and without bias and a ReLU, Conv2D, an Embedding fed integer
ids (Keras 3 casts the output to the input's dtype: integers), and a frozen wrapper (the
legacy ``.h5`` lists its weights in another order: ``kernel, vector_u, bias``).
"""

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

from import_helpers import (keras_outputs, load_saved, perturb_keras, rel_err,  # noqa: E402
                            save_all_formats)
from model_import import KerasImportError, UnsupportedLayerError, load_keras  # noqa: E402

TOL = 1e-5
NAMES = ["sn_dense", "sn_dense_nobias", "sn_conv", "sn_emb", "sn_frozen"]
SN = layers.SpectralNormalization


def _model():
    x = keras.Input((6,), name="x")
    img = keras.Input((7, 7, 2), name="img")
    tok = keras.Input((4,), dtype="int32", name="tok")
    a = SN(layers.Dense(5, activation="relu"), name="sn_dense")(x)
    b = SN(layers.Dense(1, use_bias=False), power_iterations=2, name="sn_dense_nobias")(a)
    c = SN(layers.Conv2D(3, 3, strides=2), name="sn_conv")(img)
    e = SN(layers.Embedding(9, 3), name="sn_emb")(tok)
    f = SN(layers.Dense(4), name="sn_frozen")(x)
    out = layers.Concatenate(name="cat")([a, b, layers.Flatten(name="flat_c")(c), f])
    return keras.Model([x, img, tok], [layers.Dense(3, name="head")(out), e], name="sn_zoo")


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(0.0, 1.0, (3, 6)).astype("float32"),
            rng.normal(0.0, 1.0, (3, 7, 7, 2)).astype("float32"),
            rng.integers(0, 9, (3, 4)).astype("int32")]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    km = _model()
    perturb_keras(km)
    x = _data()
    for n, inp in [("sn_dense", x[0]), ("sn_conv", x[1]), ("sn_emb", x[2]), ("sn_frozen", x[0])]:
        km.get_layer(n)(inp, training=True)  # normalize the kernel, move vector_u
    km.get_layer("sn_dense_nobias")(np.ones((1, 5), "float32"), training=True)
    emb = km.get_layer("sn_emb").layer.embeddings  # values of several units: ints after the cast
    emb.assign(np.random.default_rng(1).normal(0.0, 4.0, emb.shape).astype("float32"))
    km.get_layer("sn_frozen").trainable = False
    ref = keras_outputs(km, NAMES, x)
    assert ref["sn_emb"].dtype == np.int32 and np.abs(ref["sn_emb"]).max() >= 2
    return km, x, ref, save_all_formats(km, tmp_path_factory.mktemp("sn"), "sn")


@pytest.mark.parametrize("ext", [".keras", ".h5", ".weights.h5"])
def test_spectral_normalization_matches_keras(zoo, ext):
    km, x, ref, paths = zoo
    m = load_saved(paths, ext, km)
    y, acts = m.apply(m.params, x, capture=NAMES)
    for n in NAMES:
        assert rel_err(acts[n], ref[n]) <= TOL, (n, rel_err(acts[n], ref[n]))
    assert acts["sn_emb"].dtype == np.int32
    assert np.array_equal(np.asarray(acts["sn_emb"]), ref["sn_emb"])
    assert set(m.params["sn_dense"]) == {"kernel", "bias"}  # vector_u dropped
    want = km(x, training=False)
    assert rel_err(y[0], np.asarray(want[0])) <= TOL
    assert np.array_equal(np.asarray(y[1]), np.asarray(want[1]))


def test_unsupported_inner_layer_is_refused(zoo):
    km, x, ref, paths = zoo
    cfg = json.loads(km.to_json())
    for lc in cfg["config"]["layers"]:
        if lc["name"] == "sn_conv":
            lc["config"]["layer"]["class_name"] = "SeparableConv2D"
    with pytest.raises(UnsupportedLayerError, match="SeparableConv2D"):
        load_keras(paths[".weights.h5"], config=cfg)


def test_wrong_weight_count_is_refused(zoo):
    km, x, ref, paths = zoo
    cfg = json.loads(km.to_json())
    for lc in cfg["config"]["layers"]:
        if lc["name"] == "sn_dense_nobias":  # the file has no bias for it
            lc["config"]["layer"]["config"]["use_bias"] = True
    with pytest.raises(KerasImportError, match="sn_dense_nobias"):
        load_keras(paths[".h5"], config=cfg)
