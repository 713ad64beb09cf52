"""The importer's work grows linearly with the number of layers: reading a ``.keras`` archive
looks up each layer's weights by the name recorded in ``model.weights.h5`` through an index
built once per group, not by scanning every layer's attributes again (which made loading
DenseNet121 take 16 s instead of 1-2 s). Counted in HDF5 attribute reads, not seconds."""

import h5py
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from model_import import load_keras  # noqa: E402


def _attribute_reads(path, monkeypatch) -> int:
    n = 0
    get = h5py.AttributeManager.__getitem__

    def counting(self, name):
        nonlocal n
        n += 1
        return get(self, name)

    with monkeypatch.context() as m:
        m.setattr(h5py.AttributeManager, "__getitem__", counting)
        load_keras(path)
    return n


def _dense_stack(path, depth):
    inp = keras.Input((4,))
    h = inp
    for i in range(depth):
        h = keras.layers.Dense(4, name=f"d{i}")(h)
    keras.Model(inp, h).save(path)
    return path


def test_weight_lookup_is_linear_in_depth(tmp_path, monkeypatch):
    small = _attribute_reads(_dense_stack(tmp_path / "s.keras", 10), monkeypatch)
    large = _attribute_reads(_dense_stack(tmp_path / "l.keras", 80), monkeypatch)
    # 8x the layers: linear work reads about 8x the attributes, a scan per layer 64x
    assert large <= 12 * small, (small, large)
    m = load_keras(tmp_path / "l.keras")
    x = np.ones((1, 4), np.float32)
    ref = keras.saving.load_model(tmp_path / "l.keras")(x)
    np.testing.assert_allclose(np.asarray(m(x)), np.asarray(ref), rtol=1e-5, atol=1e-6)
