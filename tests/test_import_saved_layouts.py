"""Layouts Keras 3 saves a model in besides one ``.keras``/``.h5`` file: an unzipped
``.keras`` directory (``model.save(dir, zipped=False)``, the Hugging Face Hub layout), compared
with what Keras computes from the same model."""

import numpy as np
import pytest

from import_helpers import perturb_keras, rel_err
from model_import import KerasImportError, load_keras

keras = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def small():
    L = keras.layers
    inp = keras.Input((6, 6, 2))
    h = L.Conv2D(3, 3, activation="relu")(inp)
    h = L.BatchNormalization()(h)
    out = L.Dense(4, activation="softmax")(L.Flatten()(h))
    model = keras.Model(inp, out)
    perturb_keras(model, seed=5, kernels=True)
    x = np.random.default_rng(5).normal(size=(3, 6, 6, 2)).astype("float32")
    return model, x, model.predict(x, verbose=0)


def test_unzipped_keras_directory_loads_like_the_archive(small, tmp_path):
    model, x, ref = small
    d = tmp_path / "saved"
    model.save(d, zipped=False)  # config.json, metadata.json, model.weights.h5
    m = load_keras(d)
    assert rel_err(m(x), ref) < 1e-6
    assert m.keras_version == keras.__version__
    z = load_keras(d, head="logits")
    assert rel_err(z(x), load_keras(tmp_path / "saved").with_head("logits")(x)) == 0.0


def test_directory_without_a_keras_model_is_refused(small, tmp_path):
    model, _, _ = small
    d = tmp_path / "saved"
    model.save(d, zipped=False)
    (d / "model.weights.h5").unlink()
    with pytest.raises(KerasImportError, match="model.weights.h5") as info:
        load_keras(d)
    assert str(d) in str(info.value)
