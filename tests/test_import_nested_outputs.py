"""A nested Functional model whose call is itself an output of the outer model.

Keras 3 numbers such a call from 1 in ``output_layers`` (the nested model's node 0 is the
one built with it) but from 0 in the inbound nodes; these files failed to load before.
Checked against Keras 3 (built here) and a file written by Keras 3.1.1
(``tests/fixtures/keras3_1``).
"""

from pathlib import Path

import numpy as np
import pytest

import keras  # noqa: E402  (tests/conftest.py picks the backend)
from keras import layers  # noqa: E402

from import_helpers import save_keras_and_h5  # noqa: E402
from model_import import load_keras  # noqa: E402

KERAS3_1 = Path(__file__).parent / "fixtures" / "keras3_1"


def _block(name="block"):
    sub_in = keras.Input((4,))
    return keras.Model(sub_in, layers.Dense(3, activation="relu")(sub_in), name=name)


def _output_is_nested():
    inp = keras.Input((4,))
    return keras.Model(inp, _block()(layers.Dense(4)(inp)))


def _shared_with_later_call_as_output():
    block = _block()
    inp = keras.Input((4,))
    a = block(inp)
    b = block(layers.Dense(4)(a[:, :1] * 0 + inp))
    c = block(layers.Add()([layers.Dense(4)(b[:, :1]), inp]))
    return keras.Model(inp, [layers.Concatenate()([a, b]), c, a])


def _first_of_two_calls_as_output():
    """Read as 0-based, the output reference would silently name the second call."""
    block = _block()
    inp = keras.Input((4,))
    a = block(inp)
    b = block(layers.Dense(4)(inp))
    return keras.Model(inp, [a, layers.Dense(2)(b)])


@pytest.mark.parametrize("build", [_output_is_nested, _shared_with_later_call_as_output,
                                   _first_of_two_calls_as_output])
def test_nested_model_call_as_output_matches_keras(build, tmp_path):
    keras.utils.set_random_seed(0)
    model = build()
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    ref = model(x)
    ref = [np.asarray(r) for r in (ref if isinstance(ref, (list, tuple)) else [ref])]
    for path in save_keras_and_h5(model, tmp_path, build.__name__).values():
        out = load_keras(path)(x)
        out = [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]
        assert len(out) == len(ref)
        for o, r in zip(out, ref):
            np.testing.assert_allclose(o, r, rtol=1e-5, atol=1e-6)


def test_keras_3_1_file_with_a_shared_nested_model():
    d = np.load(KERAS3_1 / "nested_shared.expected.npz")
    y0, y1 = load_keras(KERAS3_1 / "nested_shared.keras")(d["x"])
    assert np.abs(d["y1"]).max() > 0.1  # not all zero after the ReLU: the test can fail
    np.testing.assert_allclose(np.asarray(y0), d["y0"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(y1), d["y1"], rtol=1e-5, atol=1e-6)


def test_keras_3_1_merge_layers_have_no_output_mask():
    # Keras 3.0-3.3 read the mask of a list argument as None: Add and Concatenate of masked
    # sequences had no mask there, so the pooling and the LSTM after them saw every step
    # (from Keras 3.4 on, the masks are merged; tests/test_import_sequence.py)
    ref = np.load(KERAS3_1 / "merge_masks.expected.npz")
    m = load_keras(KERAS3_1 / "merge_masks.keras")
    assert m.keras_version == "3.1.1"
    y0, y1 = m(ref["x"])
    np.testing.assert_allclose(np.asarray(y0), ref["y0"], atol=1e-5)
    np.testing.assert_allclose(np.asarray(y1), ref["y1"], atol=1e-5)
