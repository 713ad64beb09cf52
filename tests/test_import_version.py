"""The recorded Keras version, parsed once (model_import/_version.py), and the rules that
depend on the release that wrote a file."""

import pytest

from model_import._layers.masking import _keras3_before_3_4, _keras3_masked_merges
from model_import._version import KerasVersion, is_version_string, keras_major, parse_version


@pytest.mark.parametrize("text, parsed", [
    ("2.2.4", KerasVersion(2, 2, False)), ("2.15.0-tf", KerasVersion(2, 15, True)),
    ("3.4.1", KerasVersion(3, 4, False)), ("3.1rc0", KerasVersion(3, 1, False)),
    ("3", KerasVersion(3, None, False)), ("2", KerasVersion(2, None, False)),
    ("3.x", KerasVersion(3, None, False)), ("1.2.2", KerasVersion(1, 2, False)),
    ("", KerasVersion(3, None, False)), ("keras", KerasVersion(3, None, False))])
def test_parse_version(text, parsed):
    assert parse_version(text) == parsed
    assert keras_major(text) == parsed.major


def test_before_reads_an_unrecorded_minor_as_told():
    assert parse_version("3.13.2").before(3, 14, unrecorded=False)
    assert not parse_version("3.14.0").before(3, 14, unrecorded=False)
    assert parse_version("2.15.0").before(3, 0, unrecorded=False)  # an older major
    assert not parse_version("4.0").before(3, 14, unrecorded=True)  # a newer major
    assert parse_version("3").before(3, 14, unrecorded=True)
    assert not parse_version("3").before(3, 14, unrecorded=False)


@pytest.mark.parametrize("value, ok", [("2.15.0", True), ("3", True), ("3.", True),
                                       ("3x", False), ("v3", False), ("", False), (3, False)])
def test_is_version_string(value, ok):
    assert is_version_string(value) is ok


@pytest.mark.parametrize("version, before_3_4, masked_merges", [
    ("3.0.5", True, False), ("3.1rc0", True, False), ("3.3.3", True, False),
    ("3.4.1", False, True), ("3.13.2", False, True), ("3.14.0", False, True),
    ("3.15.1", False, True), ("3", False, True), ("2.15.0", False, False),
    ("2.2.4-tf", False, False)])
def test_merge_rules_by_version(version, before_3_4, masked_merges):
    assert _keras3_before_3_4(version) is before_3_4
    assert _keras3_masked_merges(version) is masked_merges


_K3_INPUT = {"class_name": "InputLayer", "config": {"batch_shape": [None, 5], "name": "in"}}
_K2_INPUT = {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 5],
                                                    "dtype": "float32", "name": "in"}}
_K3_DENSE = {"class_name": "Dense", "config": {"units": 3, "dtype": {
    "module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}}}}


@pytest.mark.parametrize("cfg, version", [
    ({"module": "keras.src.models.functional", "class_name": "Functional",
      "config": {"layers": []}}, "3"),
    ({"class_name": "Functional", "config": {"layers": [_K3_INPUT]}}, "3"),
    ({"class_name": "Sequential", "config": {"layers": [_K3_DENSE]}}, "3"),
    ({"class_name": "Functional", "config": {"layers": [_K2_INPUT]}}, None),
    ({"class_name": "Functional", "keras_version": "2.15.0",
      "config": {"layers": [_K3_INPUT]}}, "2.15.0"),
    ({"module": "keras.src.engine.functional", "class_name": "Functional",
      "config": {"layers": [_K3_DENSE]}}, "2.13"),
])
def test_a_keras_3_config_is_told_by_its_marks(cfg, version):
    """A Keras 3 to_json() records no version: it read as None, so a legacy tf.keras
    weights .h5 (recording 2.x) decided, and Keras 2's semantics ran a Keras 3
    architecture. Its marks (model module, InputLayer batch_shape, DTypePolicy dtypes) now
    say "3"; Keras 2's records keep theirs."""
    from model_import._files import config_keras_version

    assert config_keras_version(cfg) == version


def test_keras_3_architecture_with_tf_keras_weights_computes_as_keras_3(tmp_path):
    """load_keras(tf.keras weights .h5, config=Keras 3 to_json()): the .h5's keras_version
    2.15.0 decided, so hard_sigmoid was Keras 2's (0.2 x + 0.5; Keras 3's is x / 6 + 0.5) and
    the output was off by 0.07 from Keras 3 loading the same files. Now Keras 3's, with a
    warning that the file records another major version; of the same major (a Keras 3
    weights .h5), the file's full version is kept, without a warning."""
    import warnings

    import h5py
    import numpy as np

    keras = pytest.importorskip("keras")
    from keras.src.legacy.saving import legacy_h5_format

    from model_import import load_keras

    inp = keras.Input((5,))
    model = keras.Model(inp, keras.layers.Dense(3, activation="hard_sigmoid")(inp))
    x = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32) * 3
    config = model.to_json()
    for recorded in ("2.15.0", "3.12.4"):
        weights = tmp_path / f"w{recorded}.h5"
        with h5py.File(weights, "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, model)
            f.attrs["keras_version"] = recorded  # as that Keras writes it
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m = load_keras(weights, config=config)
        np.testing.assert_allclose(m(x), model(x), rtol=1e-6, atol=1e-6)
        told = [str(w.message) for w in caught if "records Keras" in str(w.message)]
        if recorded.startswith("2"):
            assert m.keras_version == "3"
            assert len(told) == 1 and "config= is Keras 3's" in told[0]
        else:
            assert m.keras_version == "3.12.4" and not told


def test_h5_without_keras_version_attribute_is_told_by_its_config(tmp_path):
    """A Keras 3 .h5 whose keras_version attribute is gone was read as Keras 2 (hard_sigmoid
    0.2 x + 0.5, not Keras 3's x / 6 + 0.5): its config's Keras 3 marks decide, as for a
    .keras archive without metadata.json."""
    import h5py
    import numpy as np

    keras = pytest.importorskip("keras")
    from model_import import load_keras

    inp = keras.Input((5,))
    model = keras.Model(inp, keras.layers.Dense(3, activation="hard_sigmoid")(inp))
    x = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32) * 3
    path = tmp_path / "m.h5"
    model.save(path)
    with h5py.File(path, "r+") as f:
        del f.attrs["keras_version"]
    m = load_keras(path)
    assert m.keras_version == "3"
    np.testing.assert_allclose(m(x), model(x), rtol=1e-6, atol=1e-6)
