"""Random Keras 3 architectures against real Keras 3 (NumPy backend unless ``KERAS_BACKEND``
says otherwise: see conftest.py), and one regression test per importer bug such a sweep found.

``tests/random_models.py`` draws a small valid Functional model from a seed (random layers
and options, branches, nested models, shared layers, ``keras.ops`` calls), gives it random
weights, saves it as ``.keras`` and legacy ``.h5`` and compares ``load_keras``'s outputs with
Keras's. A fixed set of seeds runs here; the script sweeps any range of seeds.
"""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

import random_models  # noqa: E402
from import_helpers import perturb_keras, rel_err, save_keras_and_h5  # noqa: E402
from model_import import load_keras  # noqa: E402

TOL = 1e-4

#: Seeds of the sweep kept in CI (each model loads from ``.keras`` and ``.h5`` in about a
#: second).
SEEDS = list(range(36))


@pytest.mark.parametrize("seed", SEEDS)
def test_random_model_matches_keras(seed, tmp_path):
    res = random_models.check(seed, tmp_path)
    assert res["status"] in ("ok", "skip"), (
        f"seed {seed}: {res['status']}: {res['detail']}\n  " + "\n  ".join(res["log"]))


# ------------------------------------------------------------------ regressions
def _compare(model, x, tmp_path, name):
    want = np.asarray(model(x, training=False))
    for ext, path in save_keras_and_h5(model, tmp_path, name).items():
        assert rel_err(load_keras(path)(x), want) <= TOL, ext


@pytest.mark.parametrize("wrapped", ["TimeDistributed", "LSTM", "Bidirectional",
                                     "MultiHeadAttention"])
def test_nested_model_wrapper_weights_in_legacy_h5(wrapped, tmp_path):
    """A nested model's legacy ``.h5`` names a wrapper's weights after the wrapper and its
    inner layers (``td/batch_normalization/gamma``, ``lstm/lstm_cell/kernel``,
    ``mha/query/kernel``): they were matched to no layer, and the file refused."""
    make = {
        "TimeDistributed": lambda: layers.TimeDistributed(layers.BatchNormalization(),
                                                          name="wrapped"),
        "LSTM": lambda: layers.LSTM(3, return_sequences=True, name="wrapped"),
        "Bidirectional": lambda: layers.Bidirectional(
            layers.GRU(2, return_sequences=True), name="wrapped"),
        "MultiHeadAttention": lambda: layers.MultiHeadAttention(2, 3, name="wrapped"),
    }[wrapped]
    sub_in = keras.Input((4, 3))
    lay = make()
    y = lay(sub_in, sub_in) if wrapped == "MultiHeadAttention" else lay(sub_in)
    inner = keras.Model(sub_in, layers.Dense(2, name="d")(y), name="inner")
    inp = keras.Input((4, 3))
    model = keras.Model(inp, inner(inp))
    perturb_keras(model)
    x = np.random.default_rng(0).normal(size=(2, 4, 3)).astype("float32")
    _compare(model, x, tmp_path, wrapped)


def test_rms_normalization_scale_broadcasts_like_keras(tmp_path):
    """Keras's ``RMSNormalization(axis=1)`` normalizes over axis 1 but multiplies its scale
    (shaped like axis 1) along the *last* axis (plain broadcasting in
    ``ops.rms_normalization``); the port scaled axis 1. Here both axes have 3 entries."""
    inp = keras.Input((3, 3, 3))
    out = layers.RMSNormalization(axis=1, name="rms")(inp)
    out = layers.RMSNormalization(axis=[1, 2], name="rms_two")(out)
    model = keras.Model(inp, out)
    perturb_keras(model)
    x = np.random.default_rng(1).normal(size=(2, 3, 3, 3)).astype("float32")
    _compare(model, x, tmp_path, "rms")


def test_rms_normalization_keras_cannot_run_is_refused(tmp_path):
    from model_import import KerasImportError

    inp = keras.Input((6, 3))
    path = tmp_path / "rms.keras"
    keras.Model(inp, layers.RMSNormalization(axis=1)(inp)).save(path)
    with pytest.raises(KerasImportError, match=r"scale of shape \(6,\) along the last axes"):
        load_keras(path)


def test_multiply_of_masked_sequences(tmp_path):
    """Keras 3.4+'s ``Multiply`` counts a masked input as 1 at its masked steps, and gives 0
    where every input is masked; the port multiplied the values as they were."""
    ids = keras.Input((5,), dtype="int32")
    emb = layers.Embedding(9, 3, mask_zero=True, name="emb")(ids)
    masked = layers.Dense(3, name="dense")(emb)  # passes the mask on
    unmasked = layers.Conv1D(3, 1, name="conv")(emb)  # drops it
    one = layers.Multiply(name="one_masked")([emb, unmasked])
    both = layers.Multiply(name="all_masked")([emb, masked, emb])
    model = keras.Model(ids, layers.Concatenate()([one, both]))
    perturb_keras(model)
    x = np.array([[3, 5, 1, 0, 0], [2, 0, 8, 4, 7]], "int32")
    _compare(model, x, tmp_path, "multiply")


def test_unrolled_bidirectional_repeats_outputs_at_masked_steps(tmp_path):
    """Keras 3's unrolled RNN loop (JAX/NumPy backends) ignores the ``zero_output_for_mask``
    that ``Bidirectional`` sets: masked steps repeat the previous output. The port output
    zeros there (found while checking the tf.keras 2 sweep's fix of the same loop)."""
    inp = keras.Input((4, 3))
    t = layers.Masking(0.0)(inp)
    out = layers.Bidirectional(layers.LSTM(2, return_sequences=True, unroll=True))(t)
    model = keras.Model(inp, out)
    perturb_keras(model)
    x = np.random.default_rng(0).normal(size=(3, 4, 3)).astype("float32")
    x[0, -1] = 0.0
    x[1, 0] = 0.0
    _compare(model, x, tmp_path, "bidir_unroll")
