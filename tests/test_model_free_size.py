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


def _nested_at_fixed_size(kind, tmp_path, ext):
    """A model of free size (``Input((None, None, 3))``) calling a nested model built on
    ``Input((12, 12, 3))``, saved and loaded back: Keras and the importer."""
    L = keras.layers
    if kind == "functional":
        i = keras.Input((12, 12, 3), name="image_12")
        inner = keras.Model(i, L.Dense(2)(L.GlobalAveragePooling2D()(L.Conv2D(4, 3)(i))),
                            name="inner")
    else:
        inner = keras.Sequential([keras.Input((12, 12, 3)), L.Conv2D(4, 3),
                                  L.GlobalAveragePooling2D(), L.Dense(2)], name="inner")
    inp = keras.Input((None, None, 3))
    km = keras.Model(inp, L.Activation("softmax")(inner(inp)))
    km.save(tmp_path / f"m{ext}")
    return keras.saving.load_model(tmp_path / f"m{ext}"), load_keras(tmp_path / f"m{ext}")


@pytest.mark.parametrize("ext", [".keras", ".h5"])
def test_nested_functional_of_fixed_size_is_refused_at_other_sizes_as_keras_does(tmp_path,
                                                                                  ext):
    km, m = _nested_at_fixed_size("functional", tmp_path, ext)
    assert m.output_shape == (2,)  # the model loads (Keras builds it on free sizes)
    x = np.random.default_rng(0).random((2, 12, 12, 3), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(m(x)), km.predict(x, verbose=0), atol=1e-6)
    x = np.random.default_rng(1).random((2, 16, 12, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="incompatible with the layer"):
        km.predict(x, verbose=0)
    with pytest.raises(ValueError, match=r"'inner' \(Functional\) was built for inputs of "
                       r"shape \(N, 12, 12, 3\).*got \(2, 16, 12, 3\)") as info:
        m(x)
    assert "keras.Input(shape=(None, 12, 3))" in str(info.value)


def test_nested_sequential_of_fixed_size_computes_at_other_sizes_as_keras_does(tmp_path):
    # Keras checks no declared input shape of a nested Sequential model
    km, m = _nested_at_fixed_size("sequential", tmp_path, ".keras")
    x = np.random.default_rng(2).random((2, 16, 20, 3), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(m(x)), km.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize("tag", ["tf221", "tf212"])
def test_tfkeras2_nested_functional_of_fixed_size_computes_at_other_sizes(fixtures_dir, tag):
    # tf.keras 2 does not refuse the call (fixtures/keras2_nested_size: TensorFlow's outputs)
    d = fixtures_dir / "keras2_nested_size"
    m = load_keras(d / f"nested_size_{tag}.h5")
    ref = np.load(d / f"nested_size_{tag}.expected.npz")
    for k in ("12", "16"):
        np.testing.assert_allclose(np.asarray(m(ref["x" + k])), ref["y" + k], atol=1e-6)
