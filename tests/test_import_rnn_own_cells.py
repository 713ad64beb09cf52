"""``keras.layers.RNN(cell)`` with cells of the user's own (keras.io's "Working with RNNs"
guide: a Layer with ``state_size`` whose ``call(inputs, states)`` returns ``(output,
new_states)``), converted by a converter returning ``model_import.CellImpl``, against real
Keras 3 (NumPy backend unless ``KERAS_BACKEND`` says otherwise: see conftest.py), layer by
layer, from ``.keras`` and legacy ``.h5``.

Two cells: the guide's ``MinimalRNNCell`` (one state, the output; here with a ``tanh``) and
``TwoStateCell``, whose output ``h * sigmoid(c)`` is not its first state ``h``: at masked
steps Keras 3's scan on JAX/NumPy outputs the first state as it is at that step, its
unrolled loop the previous output (zeros before the first unmasked step). Tokens are padded
with id 0 at the end, the start and the middle (``Embedding(mask_zero=True)``) so that masks
change every recurrence. Variants: ``return_sequences``, ``return_state``, ``go_backwards``,
``unroll``, ``initial_state``, ``Bidirectional`` (concatenated and summed),
``StackedRNNCells([own, LSTMCell])`` and ``[LSTMCell, own]``. Then: the converters' rules
reach inside the cells (DeepLIFT's summation-to-delta and LRP's conservation hold, and fail
with the same step computed without ``rt``), ``saliency`` and ``integrated_gradients``
(completeness), and the refusals.
"""

import json
import warnings

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers, ops  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jaxsal  # noqa: E402
from import_helpers import (keras_outputs, layer_errors, padded_tokens,  # noqa: E402
                            perturb_keras, rel_err)
from model_import import (BackendWarning, CellImpl, KerasImportError,  # noqa: E402
                          LayerImpl, build_model, load_keras)
from own_cells import CELLS, minimal_cell, two_state_cell  # noqa: E402

TOL = 1e-5
T = 7

pytestmark = pytest.mark.filterwarnings("ignore:.*does not support masking:UserWarning")


# ---------------------------------------------------------------------- the Keras cells
@keras.saving.register_keras_serializable(package="jaxsal_own_cells")
class MinimalRNNCell(layers.Layer):
    """keras.io's MinimalRNNCell, with a tanh."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.state_size = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")
        self.recurrent_kernel = self.add_weight(shape=(self.units, self.units),
                                                name="recurrent_kernel")

    def call(self, inputs, states):
        h = ops.tanh(ops.matmul(inputs, self.kernel) + ops.matmul(states[0],
                                                                  self.recurrent_kernel))
        return h, [h]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="jaxsal_own_cells")
class TwoStateCell(layers.Layer):
    """Two states ``h, c``: ``h = tanh(x W + h U + b)``, ``c = c + h``; outputs
    ``h * sigmoid(c)``, which is not its first state."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.state_size = [units, units]

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")
        self.recurrent_kernel = self.add_weight(shape=(self.units, self.units),
                                                name="recurrent_kernel")
        self.bias = self.add_weight(shape=(self.units,), name="bias")

    def call(self, inputs, states):
        h, c = states
        h = ops.tanh(ops.matmul(inputs, self.kernel) + ops.matmul(h, self.recurrent_kernel)
                     + self.bias)
        c = c + h
        return h * ops.sigmoid(c), [h, c]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


# ---------------------------------------------------------------------- the zoo
def _tokens():
    return padded_tokens(t=T, vocab=20)


def _zoo():
    tok = keras.Input((T,), dtype="int32", name="tok")
    seq = keras.Input((T, 3), name="seq")  # unmasked floats
    e = layers.Embedding(20, 4, mask_zero=True, name="emb")(tok)
    a = layers.RNN(MinimalRNNCell(4), return_sequences=True, name="rnn_minimal")(e)
    b = layers.RNN(MinimalRNNCell(3), return_sequences=True, return_state=True,
                   go_backwards=True, name="rnn_minimal_back_state")(a)
    c = layers.RNN(TwoStateCell(3), return_sequences=True, return_state=True,
                   name="rnn_two_state")(e)
    d = layers.RNN(TwoStateCell(3), go_backwards=True, name="rnn_two_state_back")(e)
    u = layers.RNN(TwoStateCell(2), return_sequences=True, unroll=True,
                   name="rnn_two_state_unrolled")(e)
    bi = layers.Bidirectional(layers.RNN(MinimalRNNCell(2), return_sequences=True),
                              name="bi_minimal")(e)
    bs = layers.Bidirectional(layers.RNN(TwoStateCell(2)), merge_mode="sum",
                              name="bi_two_state_sum")(e)
    # a stack with the own cell first reads floats without a mask: Keras 3's scan reads the
    # first cell's state at masked steps when it is a bare tensor (an int state_size)
    s1 = layers.RNN(layers.StackedRNNCells([MinimalRNNCell(2), layers.LSTMCell(3)]),
                    return_sequences=True, name="stack_minimal_lstm")(seq)
    s2 = layers.RNN(layers.StackedRNNCells([TwoStateCell(2), layers.LSTMCell(3)]),
                    return_sequences=True, go_backwards=True, name="stack_two_lstm")(e)
    s3 = layers.RNN(layers.StackedRNNCells([layers.LSTMCell(3), TwoStateCell(2)]),
                    return_state=True, name="stack_lstm_two")(e)
    p = layers.GlobalAveragePooling1D(name="gap_e")(e)
    h0 = layers.Dense(3, activation="tanh", name="h0")(p)
    init = layers.RNN(TwoStateCell(3), return_sequences=True, name="rnn_two_state_init")(
        e, initial_state=[h0, h0])
    pooled = layers.GlobalAveragePooling1D(name="gap")(layers.Concatenate(name="cat_seq")(
        [b[0], c[0], u, bi, s1, s2, init]))
    out = layers.Concatenate(name="cat_out")([pooled, *b[1:], *c[1:], d, bs,
                                              *keras.tree.flatten(s3)])
    return keras.Model([tok, seq], layers.Dense(3, name="out")(out), name="zoo_own_cells")


def _inputs():
    return [_tokens(), np.random.default_rng(5).normal(size=(4, T, 3)).astype("float32")]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    km = _zoo()
    perturb_keras(km, seed=1, kernels=True)
    x = _inputs()
    names = [lay.name for lay in km.layers if not isinstance(lay, layers.InputLayer)]
    ref = keras_outputs(km, names, x)
    d = tmp_path_factory.mktemp("own_cells")
    km.save(d / "own.keras")
    km.save(d / "own.h5")
    return km, x, ref, d


@pytest.mark.parametrize("ext", [".keras", ".h5"])
def test_own_cells_every_layer_matches_keras(zoo, ext):
    km, x, ref, d = zoo
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always", BackendWarning)
        m = load_keras(d / f"own{ext}", custom_layers=CELLS)
    # a .keras archive records no backend: warned where Keras's scan and the loops of
    # TensorFlow and PyTorch differ (the two-state cell last, on a masked input, not
    # unrolled), not for the minimal cell, whose output is its state
    named = sorted(str(w.message).split("'")[1].split("/")[0] for w in record
                   if w.category is BackendWarning)
    assert named == ([] if ext == ".h5" else [
        "bi_two_state_sum", "bi_two_state_sum", "rnn_two_state", "rnn_two_state_back",
        "stack_lstm_two"]), named
    y, acts = m.apply(m.params, x, capture=list(ref))
    errs = layer_errors(acts, ref)
    assert not {n: e for n, e in errs.items() if not e <= TOL}, errs
    assert rel_err(y, np.asarray(km(x, training=False))) <= TOL
    # the cases the zoo is there for: masked steps of a cell whose output is not its first
    # state (the scan outputs that state, the unrolled loop the previous output, zeros first)
    h = ref["rnn_two_state"][0]
    u = ref["rnn_two_state_unrolled"]
    assert np.abs(h[2, 3] - h[2, 2]).min() > 1e-3 and np.all(u[2, 3] == u[2, 2])
    assert len(ref["stack_lstm_two"]) == 5  # out, h1, c1, h2, c2
    params = m.layer("stack_two_lstm").params
    assert sorted(params) == ["cell_0/bias", "cell_0/kernel", "cell_0/recurrent_kernel",
                              "cell_1/bias", "cell_1/kernel", "cell_1/recurrent_kernel"]
    k = km.get_layer("stack_two_lstm").get_weights()
    assert np.array_equal(params["cell_1/kernel"], k[3])


def _two_state_rnn(unroll):
    tok = keras.Input((T,), dtype="int32", name="tok")
    e = layers.Embedding(20, 4, mask_zero=True, name="emb")(tok)
    return keras.Model(tok, layers.RNN(TwoStateCell(2), return_sequences=True, unroll=unroll,
                                       name="rnn")(e))


def test_own_cell_follows_the_loop_of_the_backend_given(tmp_path):
    """At masked steps the loops of TensorFlow and PyTorch output the previous output, as
    Keras's unrolled loop does (the reference: NumPy's, with the same weights); the scan of
    JAX/NumPy the cell's first state."""
    scan, unrolled = _two_state_rnn(False), _two_state_rnn(True)
    perturb_keras(scan, seed=3, kernels=True)
    unrolled.set_weights(scan.get_weights())
    x = _tokens()
    ref_scan, ref_loop = np.asarray(scan(x)), np.asarray(unrolled(x))
    assert np.abs(ref_scan - ref_loop).max() > 1e-2
    scan.save(tmp_path / "two.keras")
    for backend, ref in (("tensorflow", ref_loop), ("torch", ref_loop), ("jax", ref_scan)):
        m = load_keras(tmp_path / "two.keras", custom_layers=CELLS, keras_backend=backend)
        assert rel_err(m(x), ref) <= TOL, backend


def test_own_cell_jit_and_a_missing_converter(zoo):
    km, x, ref, d = zoo
    with pytest.raises(KerasImportError) as e:
        load_keras(d / "own.keras", custom_layers={"TwoStateCell": two_state_cell})
    msg = str(e.value)
    assert "'rnn_minimal'" in msg and "MinimalRNNCell" in msg and "CellImpl" in msg
    # registered with Keras under a package: the file names it so
    assert "register_layer('jaxsal_own_cells>MinimalRNNCell')" in msg and "custom_layers" in msg
    m = load_keras(d / "own.keras", custom_layers=CELLS)
    eager = np.asarray(m.apply(m.params, x))
    assert rel_err(jax.jit(m.apply)(m.params, x), eager) <= 1e-5


def _with_cell_class(cfg, cls, *, stacked=False):
    cfg = json.loads(json.dumps(cfg))
    for lc in cfg["config"]["layers"]:
        if lc["class_name"] == "RNN":
            cell = lc["config"]["cell"]
            if stacked:
                lc["config"]["cell"] = {"class_name": "StackedRNNCells", "module":
                                        "keras.layers", "config": {"cells": [
                                            json.loads(json.dumps(cell)), cell]}}
            cell.update(class_name=cls, module=None, registered_name=cls)
    return cfg


def _lstm_cell_config():
    x = keras.Input((T, 3), name="x")
    return json.loads(keras.Model(x, layers.RNN(layers.LSTMCell(2), name="rnn")(x)).to_json())


@pytest.mark.parametrize("stacked", [False, True])
def test_unregistered_own_cell_is_refused_with_how_to_register(stacked):
    cfg = _with_cell_class(_lstm_cell_config(), "PeepholeCell", stacked=stacked)
    with pytest.raises(KerasImportError) as e:
        build_model(cfg, None)
    msg = str(e.value)
    assert "'rnn'" in msg and "PeepholeCell" in msg and "CellImpl" in msg
    assert "@register_layer('PeepholeCell')" in msg and "custom_layers" in msg
    assert e.value.needs == "PeepholeCell"
    if stacked:
        assert "cell 1 in the StackedRNNCells" in msg


def test_own_cell_named_like_keras_cell_is_not_keras_cell():
    """A cell of the model's own code named ``LSTMCell`` (``module: null``) is not Keras's."""
    cfg = _with_cell_class(_lstm_cell_config(), "LSTMCell")
    with pytest.raises(KerasImportError, match="own code named like Keras's LSTMCell"):
        build_model(cfg, None)


def test_bad_cell_converters_are_refused():
    cfg = _with_cell_class(_lstm_cell_config(), "MinimalRNNCell")
    layer_conv = {"MinimalRNNCell": lambda c, ctx: LayerImpl(call=lambda p, x, *, rt: x)}
    with pytest.raises(KerasImportError, match="returned a LayerImpl.*must return.*CellImpl"):
        build_model(cfg, None, custom_layers=layer_conv)
    bad_size = {"MinimalRNNCell": lambda c, ctx: CellImpl(step=None, state_size="8")}
    with pytest.raises(KerasImportError, match=r"state_size .*got '8'"):
        build_model(cfg, None, custom_layers=bad_size)
    x = keras.Input((T, 3), name="x")
    as_layer = json.loads(keras.Model(x, layers.Dense(2, name="cell")(x)).to_json())
    with pytest.raises(KerasImportError, match="returns a CellImpl.*inside an RNN layer"):
        build_model(as_layer, None, custom_layers={"Dense": minimal_cell})


def test_wrong_number_of_new_states_is_refused(tmp_path):
    x = keras.Input((T, 3), name="x")
    km = keras.Model(x, layers.RNN(TwoStateCell(2), name="rnn")(x))
    km.save(tmp_path / "two.keras")

    def one_state(config, ctx):
        impl = two_state_cell(config, ctx)
        return CellImpl(step=lambda p, x, s, *, rt: (lambda o, n: (o, n[:1]))(
            *impl.step(p, x, s, rt=rt)), state_size=impl.state_size,
            convert_weights=impl.convert_weights, n_weights=3)

    with pytest.raises(KerasImportError, match="'rnn'.*returned 1 new states, expected 2"):
        load_keras(tmp_path / "two.keras", custom_layers={"TwoStateCell": one_state})


# ---------------------------------------------------------------------- attributions
def _classifier(tmp_path, cell):
    x = keras.Input((T, 3), name="x")
    h = layers.RNN(cell, name="rnn")(x)
    km = keras.Model(x, layers.Dense(2, name="out")(h))
    perturb_keras(km, seed=4, kernels=True)
    km.save(tmp_path / "clf.keras")
    return km


def test_saliency_and_integrated_gradients_on_an_own_cell(tmp_path):
    km = _classifier(tmp_path, MinimalRNNCell(4))
    m = load_keras(tmp_path / "clf.keras", custom_layers=CELLS)
    x = np.random.default_rng(2).normal(size=(3, T, 3)).astype(np.float32)
    assert rel_err(m(x), np.asarray(km(x))) <= TOL
    sal = np.asarray(jaxsal.saliency(m, x, [0, 1], reduce=None))
    fd = np.zeros_like(x[0])  # finite differences of the first score of sample 0
    for idx in np.ndindex(*x.shape[1:]):
        dx = np.zeros_like(x)
        dx[(0,) + idx] = 1e-2
        fd[idx] = (np.asarray(km(x + dx))[0, 0] - np.asarray(km(x - dx))[0, 0]) / 2e-2
    np.testing.assert_allclose(sal[0, 0], fd, rtol=1e-2, atol=1e-3)
    ig = np.asarray(jaxsal.integrated_gradients(m, x, [0, 1], steps=64, reduce=None))
    delta = np.asarray(m(x) - m(np.zeros_like(x)))
    np.testing.assert_allclose(ig.sum(axis=(2, 3)), delta, rtol=1e-3,
                               atol=1e-3 * np.abs(delta).max())


def test_deeplift_rules_reach_an_own_cell_through_rt(tmp_path):
    """Through ``rt.rule``/``rt.act``/``rt.held`` the cell's product and activations take
    DeepLIFT's rules: the map sums to the score difference; the same step computed plainly
    does not (the rules cannot see inside it)."""
    km = _classifier(tmp_path, TwoStateCell(3))
    rng = np.random.default_rng(1)
    x, x0 = (rng.normal(size=(3, T, 3)).astype(np.float32) for _ in "ab")
    sums = {}
    for plain in (False, True):
        conv = {"TwoStateCell": lambda c, ctx, plain=plain: two_state_cell(c, ctx, plain=plain)}
        m = load_keras(tmp_path / "clf.keras", custom_layers=conv)
        assert rel_err(m(x), np.asarray(km(x))) <= TOL
        delta = np.asarray(m(x) - m(x0))
        attr = np.asarray(jaxsal.deeplift(m, x, [0, 1], baseline=x0, reduce=None))
        sums[plain] = np.abs(attr.sum(axis=(2, 3)) - delta).max() / np.abs(delta).max()
    assert sums[False] <= 1e-4 and sums[True] > 1e-2, sums


def test_loads_with_other_converters_share_no_compiled_program(tmp_path):
    """Two loads of one file whose layers held by a built-in layer (an RNN's cell, a
    TimeDistributed's layer) have different converters of the user's compute different
    functions; jaxsal once reused the first load's compiled program for the second."""
    x = keras.Input((T, 3), name="x")
    km = keras.Model(x, layers.GlobalAveragePooling1D(name="gap")(
        layers.TimeDistributed(layers.Dense(2), name="td")(
            layers.RNN(MinimalRNNCell(3), return_sequences=True, name="rnn")(x))))
    km.save(tmp_path / "m.keras")
    xs = np.random.default_rng(0).normal(size=(2, T, 3)).astype(np.float32)

    def dense(scale):
        def conv(config, ctx):
            return LayerImpl(call=lambda p, v, *, rt: scale * (v @ p["kernel"] + p["bias"]),
                             convert_weights=lambda w: {"kernel": w[0], "bias": w[1]},
                             n_weights=2)
        return conv

    def cell(scale):
        def conv(config, ctx):
            impl = minimal_cell(config, ctx)
            return CellImpl(step=lambda p, v, s, *, rt: impl.step(p, scale * v, s, rt=rt),
                            state_size=impl.state_size, n_weights=2,
                            convert_weights=impl.convert_weights)
        return conv

    for key, make in (("Dense", dense), ("MinimalRNNCell", cell)):
        other = {"Dense": dense(1.0), "MinimalRNNCell": cell(1.0), key: make(2.0)}
        maps = [np.asarray(jaxsal.saliency(load_keras(tmp_path / "m.keras", custom_layers=c),
                                           xs, 0, reduce=None))
                for c in ({"Dense": dense(1.0), "MinimalRNNCell": cell(1.0)}, other)]
        assert np.abs(maps[0] - maps[1]).max() > 1e-3 * np.abs(maps[0]).max(), key


def test_lrp_conserves_relevance_through_an_own_cell(tmp_path):
    """Bias-free: through ``rt.rule`` the cell's affine step takes LRP's epsilon rule and the
    relevance at the input sums to the score; the same step computed plainly does not."""
    x = keras.Input((T, 3), name="x")
    km = keras.Model(x, layers.Dense(2, use_bias=False, name="out")(
        layers.RNN(MinimalRNNCell(4), name="rnn")(x)))
    perturb_keras(km, seed=4, kernels=True)
    km.save(tmp_path / "lrp.keras")
    xs = np.random.default_rng(3).normal(size=(3, T, 3)).astype(np.float32)

    def plain_cell(config, ctx):
        impl = minimal_cell(config, ctx)

        def step(p, v, s, *, rt):
            h = jnp.tanh(v @ p["kernel"] + s[0] @ p["recurrent_kernel"])
            return h, [h]
        return CellImpl(step=step, state_size=impl.state_size, n_weights=2,
                        convert_weights=impl.convert_weights)

    misses = {}
    for name, conv in (("rt", minimal_cell), ("plain", plain_cell)):
        m = load_keras(tmp_path / "lrp.keras", custom_layers={"MinimalRNNCell": conv})
        y = np.asarray(m(xs))
        r = np.asarray(jaxsal.lrp(m, xs, [0, 1], epsilon=1e-9, reduce=None))
        misses[name] = np.abs(r.sum(axis=(2, 3)) - y).max() / np.abs(y).max()
    assert misses["rt"] <= 1e-3 and misses["plain"] > 1e-2, misses
