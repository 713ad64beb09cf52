"""Layers that Keras 3 computes differently on its backends, in files written by Keras
3.15.1 on TensorFlow 2.21 and on PyTorch 2.13 (tests/fixtures/keras3_backends, written once
by make_backend_fixtures.py there).

TensorFlow reads bicubic resizing kernels from a 1024-step table and, in unrolled RNNs with
``zero_output_for_mask``, zeroes the outputs at masked steps; PyTorch's bicubic takes
a = -0.75 and repeats border pixels, its layer/RMS normalization over a contiguous set of
axes normalizes the last ones, its asymmetric "same" average pooling repeats the edges and
averages over them, and its "symmetric" padding repeats the edge. A legacy ``.h5`` records the backend, a ``.keras``
archive does not: it is read as on JAX/NumPy, with a ``BackendWarning`` naming each such
layer, unless ``load_keras(keras_backend=...)`` says otherwise.
"""

import pathlib
import warnings

import numpy as np
import pytest

from import_helpers import rel_err
from model_import import BackendWarning, load_keras

D = pathlib.Path(__file__).parent / "fixtures" / "keras3_backends"
K2 = pathlib.Path(__file__).parent / "fixtures" / "keras2_random"
TOL = 1e-5
# outputs of backends_tensorflow.npz (make_backend_fixtures.py gives the order)
TF_BICUBIC, TF_OPS_BICUBIC, TF_BI_UNROLLED, TF_GRU_ZERO = 2, 7, 8, 10


def _errors(model, ref):
    got = model([ref[f"in{i}"] for i in range(4)])
    n = len([k for k in ref.files if k.startswith("y")])
    assert len(got) == n
    return [rel_err(g, ref[f"y{i}"]) for i, g in enumerate(got)]


def _load_quietly(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendWarning)
        return load_keras(path, **kw)


@pytest.mark.parametrize("backend", ["tensorflow", "torch"])
def test_h5_files_record_their_backend(backend):
    ref = np.load(D / f"backends_{backend}.npz")
    model = _load_quietly(D / f"backends_{backend}.h5")
    assert model.keras_backend == backend
    assert f"on {backend}" in model.summary().splitlines()[0]
    errs = _errors(model, ref)
    assert max(errs) <= TOL, errs


def test_keras_archive_is_read_as_jax_with_a_warning_unless_told():
    ref = np.load(D / "backends_tensorflow.npz")
    with pytest.warns(BackendWarning) as record:
        model = load_keras(D / "backends_tensorflow.keras")
    named = {str(w.message).split("'")[1] for w in record
             if issubclass(w.category, BackendWarning)}  # not others (old jax's deprecations)
    assert named == {"rs_bicubic", "up_bicubic", "resize", "bi_unrolled/forward_lstm",
                     "bi_unrolled/backward_lstm", "gru_zero_back", "gru_zero", "ln_axis1",
                     "rms_axis1", "ln_axes12", "avg_same", "pad"}, named
    assert model.keras_backend is None
    errs = _errors(model, ref)
    # JAX's exact kernel is up to ~1e-3 from TensorFlow's table; TensorFlow zeroes the
    # unrolled outputs at masked steps where JAX repeats the previous output
    assert 1e-5 < errs[TF_BICUBIC] < 3e-3 and 1e-5 < errs[TF_OPS_BICUBIC] < 3e-3, errs
    assert errs[TF_BI_UNROLLED] > 1e-2 and errs[TF_GRU_ZERO] > 1e-2, errs
    told = _load_quietly(D / "backends_tensorflow.keras", keras_backend="TensorFlow")
    assert told.keras_backend == "tensorflow"
    errs = _errors(told, ref)
    assert max(errs) <= TOL, errs


def test_the_callers_backend_wins_over_the_files():
    ref = np.load(D / "backends_torch.npz")
    model = _load_quietly(D / "backends_torch.h5", keras_backend="jax")
    assert model.keras_backend == "jax"
    errs = _errors(model, ref)
    assert errs[2] > 1e-2, errs  # PyTorch's bicubic (a = -0.75) is far from JAX's
    assert max(errs[:2]) <= TOL, errs  # bilinear and nearest agree


def test_keras_backend_is_checked():
    with pytest.raises(ValueError, match="keras_backend is 'theano'; expected one of"):
        load_keras(D / "backends_torch.h5", keras_backend="theano")


def test_keras2_files_compute_as_tensorflow_whatever_is_passed():
    name = "tf_resize_bicubic"  # tf.image.resize bicubic in a tf.keras 2.21 file
    ref = np.load(K2 / f"{name}.expected.npz")
    with pytest.warns(UserWarning, match="keras_backend='jax' is ignored"):
        got = _load_quietly(K2 / f"{name}.h5", keras_backend="jax")(ref["x0"])
    got = got if isinstance(got, (list, tuple)) else [got]
    ys = [ref[f"y{i}"] for i in range(len(got))]
    for g, y in zip(got, ys):
        assert rel_err(g, y) <= TOL


def test_keras2_files_show_tensorflow_as_their_backend():
    """README: Keras 2 files always compute as TensorFlow, and ``model.keras_backend`` and the
    first line of ``model.summary()`` show the choice. Before, they showed the value given
    (``"jax"``) or ``None`` for a tf.keras 2 ``.keras`` archive, which records none."""
    fixtures = pathlib.Path(__file__).parent / "fixtures"
    with pytest.warns(UserWarning, match=r"keras_backend='jax' is ignored.*Keras 2"):
        told = load_keras(fixtures / "mnist_cnn_tfkeras2.h5", keras_backend="jax")
    with warnings.catch_warnings():
        # none where nothing, or TensorFlow, is given (UserWarning only: the oldest h5py
        # releases allowed warn of NumPy's deprecated np.product while they read)
        warnings.simplefilter("error", UserWarning)
        archive = load_keras(fixtures / "keras2" / "rnn_tfkeras2.keras")
        load_keras(fixtures / "mnist_cnn_tfkeras2.h5", keras_backend="tensorflow")
    for model in (told, archive):
        assert model.keras_backend == "tensorflow"
        assert model.summary().splitlines()[0].endswith("on tensorflow)")


def _gru_with_initial_state(unroll):
    """A masked GRU whose initial state is computed from the tokens, the leading steps of
    row 1 padded: Keras's scan on JAX/NumPy outputs the initial state there, the loops of
    TensorFlow and PyTorch (and every unrolled loop) zeros."""
    import keras
    from keras import layers

    tok = keras.Input((6,), dtype="int32", name="tok")
    e = layers.Embedding(9, 3, mask_zero=True, name="emb")(tok)
    h0 = layers.Dense(4, activation="tanh", name="h0")(layers.Flatten(name="flat")(e))
    y = layers.GRU(4, return_sequences=True, unroll=unroll, name="gru")(
        e, initial_state=[h0], mask=keras.ops.not_equal(tok, 0))
    return keras.Model(tok, y)


def test_masked_rnn_with_initial_state_follows_the_backends_loop(tmp_path):
    pytest.importorskip("keras")
    from import_helpers import perturb_keras

    scan, unrolled = _gru_with_initial_state(False), _gru_with_initial_state(True)
    perturb_keras(scan, seed=2, kernels=True)
    unrolled.set_weights(scan.get_weights())
    x = np.array([[1, 2, 3, 4, 5, 6], [0, 0, 7, 8, 0, 3]], "int32")
    ref_scan, ref_loop = np.asarray(scan(x)), np.asarray(unrolled(x))
    assert np.abs(ref_scan[1, :2]).min() > 0 and np.all(ref_loop[1, :2] == 0)
    scan.save(tmp_path / "gru.keras")
    for backend in ("tensorflow", "torch"):
        got = _load_quietly(tmp_path / "gru.keras", keras_backend=backend)(x)
        assert rel_err(got, ref_loop) <= TOL, backend
    assert rel_err(_load_quietly(tmp_path / "gru.keras", keras_backend="numpy")(x),
                   ref_scan) <= TOL
    with pytest.warns(BackendWarning, match="'gru'.*initial_state"):
        unknown = load_keras(tmp_path / "gru.keras")
        assert rel_err(unknown(x), ref_scan) <= TOL
