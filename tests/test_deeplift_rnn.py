"""DeepLIFT through recurrent layers: the products inside the cells (an LSTM's ``f * c + i *
g`` and ``o * tanh(c)``, a GRU's reset and interpolation) and a ``Bidirectional`` layer's
``mul`` merge take ``ProductRule``'s midpoint gradient through ``Runtime.rule``, their
activations (gates included) the rescale rule, so the multipliers sum to the score difference through the whole
sequence; with the products' gradient (``products="gradient"``, Captum's behaviour) they do
not (checked, so that the test can fail).

The truth: summation-to-delta, ``sum(map) == S(x) - S(x')``, for SimpleRNN, LSTM, GRU
(reset after and before), stacked cells, bidirectional layers (concatenated, summed and
multiplied), a biased bidirectional LSTM, a ConvLSTM2D and a CNN-LSTM (``TimeDistributed``
convolution, ``ReLU`` layer and max pooling, then an LSTM: the wrapped layers' rules must pair
each step of an input with the same step of its reference), with a random reference.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "numpy")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import layers  # noqa: E402

import jaxsal  # noqa: E402
from import_helpers import perturb_keras  # noqa: E402
from test_lrp import _load  # noqa: E402
from test_lrp_rnn import _rnn  # noqa: E402


def _model(kind):
    if kind == "td_cnn_lstm":  # every step through Conv2D, ReLU() and MaxPooling2D
        keras.utils.set_random_seed(0)
        inp = keras.Input((3, 6, 6, 2))
        h = layers.TimeDistributed(layers.Conv2D(3, 3))(inp)
        h = layers.TimeDistributed(layers.ReLU())(h)
        h = layers.TimeDistributed(layers.MaxPooling2D(2))(h)
        h = layers.LSTM(4)(layers.TimeDistributed(layers.Flatten())(h))
        return keras.Model(inp, layers.Dense(2, name="out")(h))
    if kind != "biased":
        return _rnn(kind)
    inp = keras.Input((6, 3))  # biased LSTMs, then a biased Dense
    h = layers.Bidirectional(layers.LSTM(4))(inp)
    return keras.Model(inp, layers.Dense(2, name="out")(h))


@pytest.mark.parametrize("kind", ["simple", "lstm", "gru", "gru_before", "stacked",
                                  "bidirectional", "bidirectional_sum", "bidirectional_mul", "biased",
                                  "convlstm", "td_cnn_lstm"])
def test_recurrent_layers_sum_to_delta(tmp_path, kind):
    km = _model(kind)
    perturb_keras(km, seed=4, kernels=True)
    m = _load(km, tmp_path, kind)
    rng = np.random.default_rng(1)
    x, x0 = (rng.normal(size=(3,) + km.input_shape[1:]).astype(np.float32) for _ in "ab")
    delta = np.asarray(m(x) - m(x0))  # (3, 2)
    scale = np.abs(delta).max()
    axes = tuple(range(2, x.ndim + 1))
    attr = np.asarray(jaxsal.deeplift(m, x, [0, 1], baseline=x0, reduce=None))
    np.testing.assert_allclose(attr.sum(axes), delta, rtol=1e-4, atol=1e-4 * scale)
    if kind != "simple":  # a SimpleRNN has no products: both rules are its gradient
        grad = np.asarray(jaxsal.deeplift(m, x, [0, 1], baseline=x0, reduce=None,
                                          products="gradient"))
        assert np.abs(grad.sum(axes) - delta).max() > 1e-2 * scale
