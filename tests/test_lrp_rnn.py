"""LRP through recurrent layers (Arras, Montavon, Müller & Samek 2017, "Explaining Recurrent
Neural Network Predictions in Sentiment Analysis"): the gates are held and get no relevance
(signal-take-all), every affine step of a cell (the input and recurrent projections, the
state updates) splits its relevance by the epsilon rule, tanh and the other activations pass
it on (``Runtime.rule`` and ``Runtime.held`` in the cells of ``model_import``).

The truths: an LSTM's relevance equals a NumPy transcription of that algorithm; bias-free
SimpleRNN, LSTM, GRU (reset after and before), stacked cells, bidirectional layers (merged by
concatenation, by a sum, and by a product: the uniform rule, half to each direction) and a
ConvLSTM2D conserve
the score at the input, where the plain gradient times input does not (checked, so that the
test can fail); forward values are unchanged.
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

EPS = 1e-9


def _rnn(kind):
    nb = {"use_bias": False}
    if kind == "convlstm":  # (N, T, H, W, C) -> ConvLSTM2D -> global average pooling
        inp = keras.Input((4, 5, 5, 2))
        h = layers.ConvLSTM2D(3, 3, padding="same", **nb)(inp)
        h = layers.GlobalAveragePooling2D()(h)
        return keras.Model(inp, layers.Dense(2, use_bias=False, name="out")(h))
    inp = keras.Input((6, 3))
    if kind == "simple":
        h = layers.SimpleRNN(5, **nb)(inp)
    elif kind == "lstm":
        h = layers.LSTM(5, **nb)(inp)
    elif kind == "gru":
        h = layers.GRU(5, **nb)(inp)
    elif kind == "gru_before":
        h = layers.GRU(5, reset_after=False, **nb)(inp)
    elif kind == "stacked":
        h = layers.RNN(layers.StackedRNNCells([layers.LSTMCell(4, **nb),
                                               layers.GRUCell(5, **nb)]))(inp)
    elif kind == "bidirectional":  # over the sequence, then its mean over time
        h = layers.Bidirectional(layers.LSTM(4, return_sequences=True, **nb))(inp)
        h = layers.GlobalAveragePooling1D()(h)
    elif kind == "bidirectional_mul":  # the two directions' last outputs multiplied
        h = layers.Bidirectional(layers.GRU(4, **nb), merge_mode="mul")(inp)
    else:  # the two directions' last outputs summed
        h = layers.Bidirectional(layers.GRU(4, **nb), merge_mode="sum")(inp)
    return keras.Model(inp, layers.Dense(2, use_bias=False, name="out")(h))


@pytest.fixture(scope="module", params=["simple", "lstm", "gru", "gru_before", "stacked",
                                        "bidirectional", "bidirectional_sum", "bidirectional_mul",
                                        "convlstm"])
def rnn(request, tmp_path_factory):
    km = _rnn(request.param)
    perturb_keras(km, seed=2, kernels=True)
    m = _load(km, tmp_path_factory.mktemp("rnn"), request.param)
    x = np.random.default_rng(0).normal(size=(3,) + km.input_shape[1:]).astype(np.float32)
    np.testing.assert_allclose(np.asarray(m(x)), np.asarray(km(x)), rtol=1e-5, atol=1e-6)
    return request.param, m, x


def test_recurrent_layers_conserve_relevance(rnn):
    kind, m, x = rnn
    y = np.asarray(m(x))
    r = np.asarray(jaxsal.lrp(m, x, [0, 1], epsilon=EPS, reduce=None))  # (N, 2, *x[1:])
    axes = tuple(range(2, r.ndim))
    np.testing.assert_allclose(r.sum(axes), y, rtol=1e-3, atol=1e-4 * np.abs(y).max())
    g = np.asarray(jaxsal.gradient_x_input(m, x, [0, 1], reduce=None))
    assert np.abs(g.sum(axes) - y).max() > 1e-2 * np.abs(y).max()


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _stab(z):
    return z + EPS * np.where(z >= 0, 1.0, -1.0)


def test_lstm_relevance_is_arras_et_al(tmp_path):
    """NumPy: forward, then backwards through the steps: ``R_c += R_h``; ``c = f c' + i g``
    gives ``f c' R_c / c`` to ``c'`` and ``i g R_c / c`` to ``g`` (the gates none);
    ``z_g = x K_g + h' U_g + b_g`` gives ``x K_g R_g / z_g`` to ``x`` and ``h' U_g R_g / z_g``
    to ``h'`` (the bias absorbs its share)."""
    inp = keras.Input((4, 3))
    h = layers.LSTM(5, name="lstm")(inp)
    km = keras.Model(inp, layers.Dense(2, use_bias=False, name="out")(h))
    perturb_keras(km, seed=3, kernels=True)
    m = _load(km, tmp_path, "lstm_ref")
    x = np.random.default_rng(1).normal(size=(2, 4, 3)).astype(np.float64)
    kern, rec, bias = (np.asarray(a, np.float64) for a in km.get_layer("lstm").get_weights())
    w = np.asarray(km.get_layer("out").get_weights()[0], np.float64)
    u = 5
    for n in range(2):
        hs, cs, gs, zs, fs, is_ = [np.zeros(u)], [np.zeros(u)], [], [], [], []
        for t in range(4):
            z = x[n, t] @ kern + hs[-1] @ rec + bias
            i, f, g, o = (z[k * u:(k + 1) * u] for k in range(4))
            i, f, o, g = _sigmoid(i), _sigmoid(f), _sigmoid(o), np.tanh(g)
            cs.append(f * cs[-1] + i * g)
            hs.append(o * np.tanh(cs[-1]))
            zs.append(z[2 * u:3 * u])
            gs.append(g), fs.append(f), is_.append(i)
        score = hs[-1] @ w[:, 1]
        r_h, r_c = hs[-1] * w[:, 1] * score / _stab(score), np.zeros(u)
        r_x = np.zeros((4, 3))
        for t in reversed(range(4)):
            r_c = r_c + r_h
            share = r_c / _stab(cs[t + 1])
            r_cprev, r_g = fs[t] * cs[t] * share, is_[t] * gs[t] * share
            s = r_g / _stab(zs[t])
            r_x[t] = x[n, t] * (kern[:, 2 * u:3 * u] @ s)
            r_h = hs[t] * (rec[:, 2 * u:3 * u] @ s)
            r_c = r_cprev
        got = np.asarray(jaxsal.lrp(m, x[n:n + 1].astype(np.float32), 1, epsilon=EPS,
                                    reduce=None))[0]
        np.testing.assert_allclose(got, r_x, rtol=2e-3, atol=2e-4 * np.abs(r_x).max())


def test_cell_steps_take_the_epsilon_rule_whatever_the_composite(rnn):
    """A weight rule everywhere reaches the cells' steps as the epsilon rule (a gate's
    product or a state update has no weights); conservation still holds (z-plus on the
    Dense and the input projection)."""
    kind, m, x = rnn
    y = np.asarray(m(x))[:, 0]
    r = np.asarray(jaxsal.lrp(m, x, 0, rule=jaxsal.lrp_zplus(EPS), reduce=None))
    assert np.isfinite(r).all()
    if kind == "lstm":
        np.testing.assert_allclose(r.sum((-2, -1)), y, rtol=1e-2,
                                   atol=1e-3 * np.abs(y).max())
