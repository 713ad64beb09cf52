"""Legacy ``.h5`` files whose nested models' layers are not named as the file names their
weights. Keras's ``load_weights`` (and ``load_model``) gives a nested model's weights to its
layers by position: the file lists the trainable weights of every layer, then the
non-trainable ones, and Keras cuts that list by each layer's counts, whatever the names. The
importer does the same where the names do not identify every layer; a file Keras refuses
(another number of weights) is refused, saying what was expected and found.

The tf.keras 2 files (TF 2.21 and 2.12, ``fixtures/keras2_renamed/``) come from three
everyday situations: an ensemble of two members whose layers were renamed
(``layer._name``), weights loaded into the same architecture built again in a session
(Keras numbered the names on), and a model whose nested Normalization was adapted before
use (tf.keras names those weights without the layer's name).
"""

import pathlib

import numpy as np
import pytest

from import_helpers import perturb_keras, rel_err
from model_import import KerasImportError, load_keras

D = pathlib.Path(__file__).parent / "fixtures" / "keras2_renamed"


@pytest.mark.parametrize("tag", ["tf221", "tf212"])
@pytest.mark.parametrize("name", ["ensemble", "adapted", "rebuilt"])
def test_tfkeras2_files_load_as_tensorflow_loads_them(name, tag):
    if name == "rebuilt":  # save_weights of one build, to_json of the next
        m = load_keras(D / f"rebuilt_weights_{tag}.h5", config=D / f"rebuilt_config_{tag}.json")
    else:
        m = load_keras(D / f"{name}_{tag}.h5")
    ref = np.load(D / f"{name}_{tag}.expected.npz")
    assert rel_err(m(ref["x"]), ref["y"]) < 1e-5


keras = pytest.importorskip("keras")
L = keras.layers


def _model(names, inner_layers=None, inner_name="inner"):
    """A model around a nested Sequential ``inner`` whose layer names are ``names``: a
    TimeDistributed BatchNormalization, a Dense with LoRA (its kernel frozen), a frozen Dense
    and a nested Sequential (Dense, BatchNormalization), as the weights file orders them
    trainable first. ``inner_layers``: other layers for ``inner``; ``inner_name``: its
    name."""
    if inner_layers is None:
        frozen = L.Dense(4, name=names[2])
        frozen.trainable = False
        inner_layers = [
            L.TimeDistributed(L.BatchNormalization(name=names[0]), name=f"td_{names[0]}"),
            L.Dense(4, name=names[1]), frozen,
            keras.Sequential([L.Dense(4, name=names[3]), L.BatchNormalization(name=names[4])],
                             name=names[5])]
    inner = keras.Sequential([keras.Input((3, 4))] + inner_layers, name=inner_name)
    if len(inner_layers) == 4:
        inner.layers[1].enable_lora(2)
    inp = keras.Input((3, 4))
    return keras.Model(inp, L.Dense(2, name="out")(L.Flatten(name="flat")(inner(inp))))


def test_keras3_h5_into_an_architecture_whose_nested_names_are_shifted(tmp_path):
    # the names overlap shifted by one ("dense_1" is the LoRA Dense in one, the frozen Dense
    # in the other): matched by name, weights would go to the wrong layers. The nested
    # model itself is renamed too (the file's group "inner" for the layer "inner_1")
    saved = _model(["bn", "dense", "dense_1", "dense_2", "bn_1", "seq"])
    rebuilt = _model(["bn_1", "dense_1", "dense_2", "dense_3", "bn_2", "seq_1"],
                     inner_name="inner_1")
    perturb_keras(saved, seed=4, kernels=True)
    saved.save(tmp_path / "m.h5")
    x = np.random.default_rng(4).normal(size=(2, 3, 4)).astype("float32")
    ref = saved.predict(x, verbose=0)
    rebuilt.load_weights(tmp_path / "m.h5")
    assert rel_err(rebuilt.predict(x, verbose=0), ref) < 1e-6
    m = load_keras(tmp_path / "m.h5", config=rebuilt.to_json())
    assert rel_err(m(x), ref) < 1e-5


def test_nested_weights_of_another_count_are_refused_as_keras_does(tmp_path):
    saved = _model(None, [L.Dense(4, name="a"), L.Dense(4, name="b")])
    saved.save(tmp_path / "m.h5")
    rebuilt = _model(None, [L.Dense(4, name="c")])
    with pytest.raises(ValueError, match="count mismatch"):
        rebuilt.load_weights(tmp_path / "m.h5")
    with pytest.raises(KerasImportError, match=r"take 2 arrays \(c: 2\).* holds 4 \(") as info:
        load_keras(tmp_path / "m.h5", config=rebuilt.to_json())
    assert "'inner'" in str(info.value) and "another architecture" in str(info.value)


def test_nested_weights_that_do_not_line_up_are_refused_as_keras_does(tmp_path):
    # as many arrays, other layers: by position the batch norm's four arrays would go to two
    # Dense layers (Keras: a shape mismatch)
    saved = _model(None, [L.Dense(4, name="a"), L.BatchNormalization(name="bn")])
    saved.save(tmp_path / "m.h5")
    rebuilt = _model(None, [L.Dense(4, name=n) for n in ("c", "d", "e")])
    with pytest.raises(ValueError, match="hape"):
        rebuilt.load_weights(tmp_path / "m.h5")
    with pytest.raises(KerasImportError, match="'inner/bn' would go to 2 layers") as info:
        load_keras(tmp_path / "m.h5", config=rebuilt.to_json())
    assert "'d', 'e'" in str(info.value)


def test_a_nested_layer_of_unknown_weight_counts_is_named(tmp_path):
    # SpectralNormalization's converter takes its arrays in either order (its count is not
    # fixed): the layers cannot be lined up, which the refusal says
    def build(names):
        return _model(None, [L.Dense(4, name=names[0]),
                             L.SpectralNormalization(L.Dense(4, name=names[1]), name=names[2])])

    saved, rebuilt = build(["a", "b", "sn"]), build(["c", "d", "sn_1"])
    saved.save(tmp_path / "m.h5")
    with pytest.raises(KerasImportError, match="other layer names") as info:
        load_keras(tmp_path / "m.h5", config=rebuilt.to_json())
    msg = str(info.value)
    assert "by position" in msg and "'inner/sn_1' (SpectralNormalization)" in msg
    assert ".weights.h5" in msg


def test_renamed_fixture_budget():
    assert sum(p.stat().st_size for p in D.iterdir()) < 400e3
