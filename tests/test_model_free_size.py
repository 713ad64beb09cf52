"""Models whose input size is free (None): shapes are probed abstractly, None where they vary."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from model_import import load_keras  # noqa: E402


@pytest.fixture(scope="module")
def free_size_model(tmp_path_factory):
    inp = keras.Input((None, None, 3))
    h = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="c1")(inp)
    h = keras.layers.Conv2D(6, 3, padding="valid", name="c2")(h)
    out = keras.layers.Dense(5, activation="softmax", name="d")(
        keras.layers.GlobalAveragePooling2D(name="gap")(h))
    km = keras.Model(inp, out)
    path = tmp_path_factory.mktemp("free") / "free.keras"
    km.save(path)
    return km, load_keras(path)


def test_shapes_with_free_input_size(free_size_model):
    km, m = free_size_model
    assert m.output_shape == (5,)
    assert m.layer("c1").output_shape == (None, None, 4)
    assert m.layer("gap").output_shape == (6,)
    assert "(None, None, 6)" in m.summary()


def test_free_size_model_runs_at_any_size(free_size_model):
    km, m = free_size_model
    for size in (17, 40):
        x = np.random.default_rng(size).random((2, size, size + 3, 3), dtype=np.float32)
        np.testing.assert_allclose(np.asarray(m(x)), np.asarray(km(x)), atol=1e-6)
