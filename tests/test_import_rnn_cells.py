"""``keras.layers.RNN(cell)`` with the built-in cells (``SimpleRNNCell``, ``LSTMCell``,
``GRUCell``) and ``StackedRNNCells`` of them, against real Keras 3 (NumPy backend unless
``KERAS_BACKEND`` says otherwise: see conftest.py), layer by layer, from ``.keras``, ``.h5``
and ``.weights.h5`` + config.

Token inputs are padded with id 0 at the end, the start and the middle
(``Embedding(mask_zero=True)``) so that masks change every recurrence; kernels keep Keras's
random initial values, biases and embeddings are randomized; the ``.h5`` and ``.weights.h5`` forms must give the ``.keras`` form's params bit
for bit. The zoo has two cells of the same class in one stack (the ``.keras`` keys
``lstm_cell``, ``lstm_cell_1``), ``go_backwards``, ``return_state`` of a stack (states flat,
in cell order), ``initial_state`` of a stack (nested per cell) after masked leading steps,
``unroll`` (masked leading steps output zeros there, the initial state without it),
``zero_output_for_mask`` and ``Bidirectional(RNN(cell))``.

``ConvLSTM1D/2D/3D``: ``valid``/``same`` padding with strides, dilation, ``go_backwards``,
``return_state``, ``initial_state`` (channels-last and channels-first), relu/hard_sigmoid, no
bias, channels_first; masks (which Keras 3 applies to the wrong axes of the states) and
stateful layers are refused.
"""

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

from import_helpers import (keras_outputs, layer_errors, padded_tokens,  # noqa: E402
                            perturb_keras, rel_err, save_all_formats)
from model_import import KerasImportError, build_model, load_keras  # noqa: E402

TOL = 1e-5
T = 7

pytestmark = pytest.mark.filterwarnings("ignore:.*does not support masking:UserWarning")


def _tokens():
    return padded_tokens(t=T, vocab=20)


def _zoo_cells():
    tok = keras.Input((T,), dtype="int32", name="tok")
    e = layers.Embedding(20, 4, mask_zero=True, name="emb")(tok)
    s = layers.RNN(layers.LSTMCell(4), return_sequences=True, name="rnn_lstm")(e)
    st = layers.RNN(layers.StackedRNNCells([
        layers.GRUCell(3), layers.SimpleRNNCell(2, activation="relu"),
        layers.GRUCell(3, reset_after=False, recurrent_activation="hard_sigmoid")]),
        return_sequences=True, go_backwards=True, name="rnn_stack_back")(s)
    two = layers.RNN(layers.StackedRNNCells([layers.LSTMCell(2), layers.LSTMCell(3)]),
                     return_state=True, name="rnn_two_lstm_cells")(e)
    g = layers.RNN(layers.GRUCell(3, use_bias=False), return_state=True, go_backwards=True,
                   name="rnn_gru_state")(s)
    z = layers.RNN(layers.SimpleRNNCell(2), return_sequences=True, zero_output_for_mask=True,
                   name="rnn_zero")(e)
    bi = layers.Bidirectional(layers.RNN(layers.GRUCell(2), return_sequences=True),
                              name="bi_gru_cell")(e)
    bs = layers.Bidirectional(layers.RNN(layers.StackedRNNCells(
        [layers.LSTMCell(2), layers.SimpleRNNCell(2)])), merge_mode="sum", name="bi_stack")(e)
    # initial states (computed from the embedding) for a stack, after masked leading steps:
    # Keras 3's scan outputs the initial state there, its unrolled loop zeros
    p = layers.GlobalAveragePooling1D(name="gap_e")(e)
    h0 = [layers.Dense(u, activation="tanh", name=f"s0_{i}")(p) for i, u in enumerate((3, 3, 2))]
    m = keras.ops.not_equal(tok, 0)
    scan = layers.RNN(layers.StackedRNNCells([layers.LSTMCell(3), layers.GRUCell(2)]),
                      return_sequences=True, name="rnn_init")(
        e, initial_state=[[h0[0], h0[1]], [h0[2]]], mask=m)
    unrolled = layers.RNN(layers.StackedRNNCells([layers.LSTMCell(3), layers.GRUCell(2)]),
                          return_sequences=True, unroll=True, name="rnn_init_unrolled")(
        e, initial_state=[[h0[0], h0[1]], [h0[2]]], mask=m)
    single = layers.RNN(layers.SimpleRNNCell(2), return_sequences=True, unroll=True,
                        name="rnn_unrolled")(e, initial_state=[h0[2]], mask=m)
    seq = layers.Concatenate(name="cat_seq")([st, z, bi, scan, unrolled, single])
    pooled = layers.GlobalAveragePooling1D(name="gap_seq")(seq)
    out = layers.Concatenate(name="cat_out")([pooled, *keras.tree.flatten(two), *g, bs])
    return keras.Model(tok, layers.Dense(3, name="out")(out), name="zoo_rnn_cells")


#: the zoos, in the form of test_import_sequence.ZOOS (a layer coverage check can use them)
ZOOS = {"rnn_cells": (_zoo_cells, _tokens)}  # + "convlstm" below


def _randomize(m, seed):
    perturb_keras(m, seed=seed)  # biases
    rng = np.random.default_rng(seed + 1)
    for v in m.weights:
        if v.name.split("/")[-1] == "embeddings":
            a = np.asarray(v.numpy())
            v.assign(rng.normal(0.0, 1.0, a.shape).astype(a.dtype))


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    make, data = ZOOS["rnn_cells"]
    km = make()
    _randomize(km, seed=1)
    x = data()
    names = [lay.name for lay in km.layers
             if not isinstance(lay, layers.InputLayer) and not lay.name.startswith("not_equal")]
    ref = keras_outputs(km, names, x)
    return km, x, ref, save_all_formats(km, tmp_path_factory.mktemp("rnn_cells"), "cells")


def _same_model_from_every_form(km, paths):
    """The ``.h5`` and ``.weights.h5`` forms give the ``.keras`` form's layers and params,
    bit for bit (so the layer-by-layer comparison of the ``.keras`` form covers them)."""
    import jax

    m = load_keras(paths[".keras"])
    for ext in (".h5", ".weights.h5"):
        kw = {"config": km.to_json()} if ext == ".weights.h5" else {}
        other = load_keras(paths[ext], **kw)
        assert other.layer_names == m.layer_names, ext
        a, b = jax.tree_util.tree_flatten_with_path(m.params), \
            jax.tree_util.tree_flatten_with_path(other.params)
        assert [k for k, _ in a[0]] == [k for k, _ in b[0]], ext
        for (k, u), (_, v) in zip(a[0], b[0]):
            assert np.array_equal(np.asarray(u), np.asarray(v)), (ext, k)
    return m


def test_rnn_cells_every_layer_matches_keras(zoo):
    km, x, ref, paths = zoo
    m = _same_model_from_every_form(km, paths)
    y, acts = m.apply(m.params, x, capture=list(ref))
    errs = layer_errors(acts, ref)
    assert not {n: e for n, e in errs.items() if not e <= TOL}, errs
    assert rel_err(y, np.asarray(km(x, training=False))) <= TOL
    # the cases the zoo is there for really differ from the naive result
    scan, unrolled = ref["rnn_init"], ref["rnn_init_unrolled"]
    assert np.abs(scan[1, :3]).min() > 0 and np.all(unrolled[1, :3] == 0)
    assert np.all(ref["rnn_zero"][0, 5:] == 0)
    assert len(ref["rnn_two_lstm_cells"]) == 5  # out, h1, c1, h2, c2
    for n, r in ref.items():
        if not isinstance(r, tuple):
            assert m.layer(n).output_shape == tuple(r.shape[1:]), n


def test_rnn_cells_params_are_named_per_cell(zoo):
    km, x, ref, paths = zoo
    m = load_keras(paths[".keras"])
    one = m.layer("rnn_lstm").params
    assert sorted(one) == ["bias", "kernel", "recurrent_kernel"]
    k, rk, b = km.get_layer("rnn_lstm").get_weights()
    assert np.array_equal(one["kernel"], k) and np.array_equal(one["bias"], b)
    two = m.layer("rnn_two_lstm_cells").params
    assert sorted(two) == [f"cell_{i}/{w}" for i in range(2)
                           for w in ("bias", "kernel", "recurrent_kernel")]
    w = km.get_layer("rnn_two_lstm_cells").get_weights()
    assert two["cell_1/recurrent_kernel"].shape == (3, 12)
    assert np.array_equal(two["cell_1/kernel"], w[3])


def test_stacked_cells_jit_and_gradient_at_the_embedding(tmp_path):
    """A small stacked-cell text model: jit == eager; the gradient at the embedding output is
    finite, nonzero at tokens and exactly zero at padding (masked steps)."""
    import jax
    import jax.numpy as jnp

    tok = keras.Input((T,), dtype="int32", name="tok")
    e = layers.Embedding(20, 4, mask_zero=True, name="emb")(tok)
    h = layers.RNN(layers.StackedRNNCells([layers.LSTMCell(3), layers.GRUCell(2)]),
                   name="rnn")(e)
    km = keras.Model(tok, layers.Dense(2, name="out")(h))
    _randomize(km, seed=4)
    km.save(tmp_path / "text.keras")
    x = _tokens()
    m = load_keras(tmp_path / "text.keras")
    eager = np.asarray(m.apply(m.params, x))
    assert rel_err(eager, np.asarray(km(x))) <= TOL
    assert rel_err(m(x), eager) <= 1e-5

    def score(delta):
        return jnp.sum(m.apply(m.params, x, perturb={"emb": delta})[:, 0])

    g = np.asarray(jax.jit(jax.grad(score))(jnp.zeros((x.shape[0], T, 4))))
    assert np.isfinite(g).all()
    assert np.all(g[x == 0] == 0) and np.abs(g[x != 0]).sum(-1).min() > 0


def _lstm_cell_model(**rnn_kwargs):
    x = keras.Input((T, 3), name="x")
    return keras.Model(x, layers.RNN(layers.LSTMCell(2), name="rnn", **rnn_kwargs)(x))


def _with_cell_class(cfg, cls, stacked=False):
    cfg = json.loads(json.dumps(cfg))
    for lc in cfg["config"]["layers"]:
        if lc["class_name"] == "RNN":
            cell = lc["config"]["cell"]
            if stacked:
                cell = {"class_name": "StackedRNNCells",
                        "config": {"cells": [json.loads(json.dumps(cell)), cell]}}
                lc["config"]["cell"] = cell
                cell = cell["config"]["cells"][1]
            cell["class_name"] = cls
    return cfg


@pytest.mark.parametrize("stacked", [False, True])
def test_unknown_cell_is_refused_naming_layer_and_cell(stacked):
    cfg = json.loads(_lstm_cell_model().to_json())
    with pytest.raises(KerasImportError) as e:
        build_model(_with_cell_class(cfg, "PeepholeLSTMCell", stacked), None)
    msg = str(e.value)
    assert "'rnn'" in msg and "RNN" in msg and "PeepholeLSTMCell" in msg
    assert "LSTMCell" in msg and "custom_layers" in msg
    if stacked:
        assert "cell 1 in the StackedRNNCells" in msg


def test_stateful_rnn_cell_is_refused():
    x = keras.Input((T, 3), batch_size=2, name="x")
    km = keras.Model(x, layers.RNN(layers.GRUCell(2), stateful=True, name="rnn")(x))
    with pytest.raises(KerasImportError, match="stateful=False"):
        build_model(json.loads(km.to_json()), None)


def test_wrong_initial_state_count_names_the_sizes(tmp_path):
    x = keras.Input((T, 3), name="x")
    h = keras.Input((2,), name="h")
    c = keras.Input((3,), name="c")
    km = keras.Model([x, h, c], layers.RNN(layers.StackedRNNCells(
        [layers.GRUCell(2), layers.LSTMCell(3)]), name="rnn")(x, initial_state=[[h], [c, c]]))
    cfg = json.loads(km.to_json())
    for lc in cfg["config"]["layers"]:
        if lc["class_name"] == "RNN":  # drop the LSTM cell's carry state
            lc["inbound_nodes"][0]["kwargs"]["initial_state"][1].pop()
    km.save_weights(tmp_path / "w.weights.h5")
    with pytest.raises(KerasImportError, match=r"3 initial states \(of sizes \[2, 3, 3\]\)"):
        load_keras(tmp_path / "w.weights.h5", config=cfg)


# ---------------------------------------------------------------------- ConvLSTM1D/2D/3D
def _zoo_convlstm():
    x1 = keras.Input((5, 9, 2), name="seq1d")
    a = layers.ConvLSTM1D(3, 3, padding="same", strides=2, return_sequences=True,
                          name="cl1_same_stride")(x1)
    b = layers.ConvLSTM1D(2, 2, dilation_rate=2, go_backwards=True, activation="relu",
                          recurrent_activation="hard_sigmoid", name="cl1_dilated_back")(a)
    x2 = keras.Input((4, 6, 5, 2), name="seq2d")
    c = layers.ConvLSTM2D(3, (3, 2), padding="same", strides=(2, 1), return_sequences=True,
                          name="cl2_same_stride")(x2)
    d = layers.ConvLSTM2D(2, 2, return_state=True, use_bias=False, name="cl2_state")(c)
    # initial states (h = c) computed from the first frame, in the states' shape
    first = layers.Reshape((3, 5, 3), name="first_frame")(
        layers.Cropping3D(((0, 3), (0, 0), (0, 0)), name="crop0")(c))
    s0 = layers.Conv2D(2, 3, padding="same", activation="tanh", name="frame0_h")(first)
    e = layers.ConvLSTM2D(2, (2, 3), padding="same", return_sequences=True,
                          name="cl2_init")(c, initial_state=[s0, s0])
    x3 = keras.Input((3, 4, 5, 4, 2), name="seq3d")
    f = layers.ConvLSTM3D(2, 2, padding="same", return_sequences=True, name="cl3")(x3)
    x4 = keras.Input((4, 2, 6, 5), name="seq2d_cf")
    g = layers.ConvLSTM2D(2, 3, padding="same", data_format="channels_first",
                          return_sequences=True, go_backwards=True, name="cl2_cf")(x4)
    s_cf = keras.Input((2, 5, 4), name="state_cf")  # (filters, h, w): channels-first states
    h = layers.ConvLSTM2D(2, 2, data_format="channels_first", return_state=True,
                          name="cl2_cf_state")(g, initial_state=[s_cf, s_cf])
    outs = [b, *d, e, f, *h]
    return keras.Model([x1, x2, x3, x4, s_cf], outs, name="zoo_convlstm")


def _volumes(seed=6):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(2,) + shape).astype("float32")
            for shape in ((5, 9, 2), (4, 6, 5, 2), (3, 4, 5, 4, 2), (4, 2, 6, 5), (2, 5, 4))]


ZOOS["convlstm"] = (_zoo_convlstm, _volumes)


@pytest.fixture(scope="module")
def convlstm_zoo(tmp_path_factory):
    make, data = ZOOS["convlstm"]
    km = make()
    perturb_keras(km, seed=2)
    x = data()
    names = [lay.name for lay in km.layers if not isinstance(lay, layers.InputLayer)]
    ref = keras_outputs(km, names, x)
    return km, x, ref, save_all_formats(km, tmp_path_factory.mktemp("convlstm"), "convlstm")


def test_convlstm_every_layer_matches_keras(convlstm_zoo):
    km, x, ref, paths = convlstm_zoo
    m = _same_model_from_every_form(km, paths)
    ys, acts = m.apply(m.params, x, capture=list(ref))
    errs = layer_errors(acts, ref)
    assert not {n: e for n, e in errs.items() if not e <= TOL}, errs
    for y, r in zip(ys, km(x, training=False)):
        assert rel_err(y, np.asarray(r)) <= TOL
    assert m.layer("cl2_cf").output_shape == (4, 2, 6, 5)  # channels-first sequence
    assert m.layer("cl1_same_stride").output_shape == (5, 5, 3)  # ceil(9 / 2)


def test_convlstm_with_a_mask_is_refused(tmp_path):
    x = keras.Input((T, 4, 4, 1), name="x")
    m = layers.Masking(0.0, name="masking")(x)
    km = keras.Model(x, layers.ConvLSTM2D(2, 2, name="clstm")(m))
    km.save_weights(tmp_path / "w.weights.h5")
    with pytest.raises(KerasImportError, match="'clstm'.*mask.*expected no mask"):
        load_keras(tmp_path / "w.weights.h5", config=km.to_json())


def test_stateful_convlstm_is_refused():
    x = keras.Input((T, 4, 4, 1), name="x")
    cfg = json.loads(keras.Model(x, layers.ConvLSTM2D(2, 2, name="clstm")(x)).to_json())
    for lc in cfg["config"]["layers"]:
        if lc["class_name"] == "ConvLSTM2D":
            lc["config"]["stateful"] = True
    with pytest.raises(KerasImportError, match="stateful=False"):
        build_model(cfg, None)


def test_keras2_nested_inbound_node():
    """tf.keras 2 records ``RNN(StackedRNNCells)(x, initial_state=[[h, c], g])`` with the
    nesting kept, ``[x, [h, c], g]``; it is read as that nested list of tensors (checked by
    hand against tf_keras 2.21 files, which the shipped fixtures cannot hold)."""
    from model_import._graph import Ref, _parse_node

    node = [["emb", 0, 0, {}], [["s0_0", 0, 0, {}], ["s0_1", 0, 0, {}]], ["s0_2", 0, 0, {}]]
    args, kwargs = _parse_node(node)
    assert args == ([Ref("emb", 0, 0), [Ref("s0_0", 0, 0), Ref("s0_1", 0, 0)],
                     Ref("s0_2", 0, 0)],) and kwargs == {}
    args, kwargs = _parse_node([["emb", 0, 0, {"training": False}]])
    assert args == (Ref("emb", 0, 0),) and kwargs == {}
