"""tf.keras 2 (tf_keras 2.21) sequence models, written once by
tests/fixtures/keras2/make_keras2_fixtures.py (group ``sequence``) with TensorFlow: token
models padded with 0 at the end, the start and the middle (``Embedding(mask_zero=True)``),
and a float series with ``Masking``. Every recorded layer and the outputs must match what
tf.keras computed, from the ``.h5`` and the tf_keras ``.keras`` archive.

What these files pin down (tf.keras 2's rules, not Keras 3's): merges AND their inputs'
masks; ``MultiHeadAttention`` reads the query/value masks and leaves its inputs' masks in
place; ``Bidirectional`` configs without ``backward_layer``; ``go_backwards`` outputs in
processing order; ``GRU`` with ``reset_after`` True and False; ``initial_state`` recorded as
the list ``[x, *states]``, and zeros (not the initial state) as the output of masked steps
before the first unmasked one.
"""

import pathlib

import jax
import numpy as np
import pytest

from import_helpers import rel_err
from model_import import load_keras

K2 = pathlib.Path(__file__).parent / "fixtures" / "keras2"
TOL = 1e-4
# h5 only: time_major ((time, batch, features) arrays through Masking, LSTM, GRU and
# Bidirectional) and states (return_state, initial_state, merge_mode=None)
FILES = ([(n, f) for n in ("rnn_tfkeras2", "attention_tfkeras2", "masking_tfkeras2")
          for f in ("h5", "keras")] + [("time_major_tfkeras2", "h5"), ("states_tfkeras2", "h5")])


@pytest.mark.parametrize("name,form", FILES)
def test_tfkeras2_sequence_file_matches_tfkeras(name, form):
    ref = np.load(K2 / f"{name}.expected.npz")
    m = load_keras(K2 / f"{name}.{form}")
    assert str(m.keras_version).startswith("2.")
    acts = [k[len("act__"):] for k in ref.files if k.startswith("act__")]
    lm = m.with_head("logits")
    fn = jax.jit(lambda p, x: (m.apply(p, x, capture=acts), lm.apply(p, x)))
    (y, got), logits = fn(m.params, ref["x"])
    bad = {n: rel_err(got[n], ref[f"act__{n}"]) for n in acts}
    bad = {n: e for n, e in bad.items() if not e <= TOL}
    assert not bad
    assert rel_err(y, ref["y"]) <= TOL
    assert rel_err(logits, ref["logits"]) <= TOL
    assert np.std(ref["logits"]) > 0.05
    for n in acts:  # static shapes (None where Keras's is: time_major's "batch" axis)
        shape = m.layer(n).output_shape
        assert len(shape) == ref[f"act__{n}"].ndim - 1, n
        assert all(a in (None, b) for a, b in zip(shape, ref[f"act__{n}"].shape[1:])), n


def test_tfkeras2_sequence_inputs_are_padded_tokens():
    x = np.load(K2 / "rnn_tfkeras2.expected.npz")["x"]
    assert np.issubdtype(x.dtype, np.integer)
    assert (x[0, -1] == 0) and (x[1, 0] == 0) and (x[2, 3] == 0) and (x[3] != 0).all()
