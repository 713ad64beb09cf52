"""Models whose outputs mix the examples of a batch (``tf.nn.l2_loss``, a sum over the batch
axis, ``h / l2_loss(h)``) are refused by every method before anything is compiled; models
that keep the examples apart are not (jaxsal/_src/per_example.py)."""

import json
import shutil

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
from jaxsal import cli
from model_import import load_keras
from tfops_helpers import D, config

RNG = np.random.default_rng(0)
W = {"w": jnp.asarray(RNG.normal(size=(16, 3)), jnp.float32)}
X = jnp.asarray(RNG.uniform(size=(3, 4, 4, 1)), jnp.float32)


def _logits(p, x, relu=jax.nn.relu):
    return relu(x.reshape(x.shape[0], -1) @ p["w"])


# A model of (N, 4, 4, 1) images and 3 classes, each way of mixing the batch
MIXED = {
    "l2_loss": lambda p, x, relu=jax.nn.relu: jnp.sum(_logits(p, x, relu) ** 2) / 2,
    "sum_axis0_keepdims": lambda p, x, relu=jax.nn.relu: jnp.sum(_logits(p, x, relu), 0,
                                                                 keepdims=True),
    # (3,) for a batch of 3: looked like one score per input
    "sum_axis0": lambda p, x, relu=jax.nn.relu: jnp.sum(_logits(p, x, relu), 0),
    # the shape of a classifier's
    "scaled": lambda p, x, relu=jax.nn.relu: _logits(p, x, relu) / jnp.sum(
        _logits(p, x, relu) ** 2),
    "centred": lambda p, x, relu=jax.nn.relu: _logits(p, x, relu) - jnp.mean(
        _logits(p, x, relu), 0),
    "softmax_axis0": lambda p, x, relu=jax.nn.relu: jax.nn.softmax(_logits(p, x, relu), 0),
    "cumsum_axis0": lambda p, x, relu=jax.nn.relu: jnp.cumsum(_logits(p, x, relu), 0),
    "gram": lambda p, x, relu=jax.nn.relu: (_logits(p, x, relu) @ _logits(p, x, relu).T),
    "rnn_over_batch": lambda p, x, relu=jax.nn.relu: jax.lax.scan(
        lambda c, xi: (c + xi.reshape(-1) @ p["w"], c), jnp.zeros(3), x)[1],
}


@pytest.mark.parametrize("name", list(MIXED))
def test_models_mixing_the_batch_are_refused(name):
    m = jaxsal.FunctionModel(MIXED[name], W)
    with pytest.raises(ValueError, match=r"for a batch of 3 inputs.*expected outputs with the "
                                         r"batch axis first.*each computed from its own input "
                                         r"alone.*jax\.vmap\(lambda xi: model\.apply"):
        jaxsal.saliency(m, X, lambda y: y.reshape(len(y), -1)[:, 0] if y.ndim else y)


def test_the_error_says_what_mixes_the_batch():
    m = jaxsal.FunctionModel(MIXED["scaled"], W)
    with pytest.raises(ValueError, match=r"the model's output \(shape \(3, 3\) for a batch of 3 "
                                         r"inputs\) mixes the inputs of the batch: reduce_sum "
                                         r"over the batch axis at .*test_per_example\.py"):
        jaxsal.saliency(m, X, 0)


def test_a_batch_of_one_is_checked_as_a_batch():
    """A sum over the batch axis keeps (1, K) for one input, and DeepLIFT, which runs the
    input and its reference in one batch of 2, failed with a raw JAX shape error."""
    m = jaxsal.FunctionModel(MIXED["sum_axis0_keepdims"], W, relu_kwarg="relu")
    for method in (jaxsal.deeplift, jaxsal.saliency, jaxsal.integrated_gradients):
        with pytest.raises(ValueError, match=r"\(shape \(1, 3\) for a batch of 1 input\) mixes "
                                             r"the inputs of the batch: reduce_sum"):
            method(m, X[:1], 0)


def _split_model(couple):
    """A model with a features layer (for CAMs and layer methods) whose head may mix the
    batch."""
    def features(p, x, relu=jax.nn.relu):
        return relu(x * p["a"])

    def head(p, a, relu=jax.nn.relu):
        y = a.reshape(a.shape[0], -1) @ p["w"]
        return y / jnp.sum(y * y) if couple else y

    return jaxsal.FunctionModel(params={**W, "a": jnp.ones((1, 1, 1))}, features=features,
                                head_fn=head, layer="features", relu_kwarg="relu")


K = dict(key=0)
METHODS = {
    "saliency": lambda m, x, tmp: jaxsal.saliency(m, x, 0),
    "gradient_x_input": lambda m, x, tmp: jaxsal.gradient_x_input(m, x, 0),
    "guided_backprop": lambda m, x, tmp: jaxsal.guided_backprop(m, x, 0),
    "deconvnet": lambda m, x, tmp: jaxsal.deconvnet(m, x, 0),
    "smoothgrad": lambda m, x, tmp: jaxsal.smoothgrad(m, x, 0, n=2, **K),
    "integrated_gradients": lambda m, x, tmp: jaxsal.integrated_gradients(m, x, 0, steps=2),
    "blur_integrated_gradients": lambda m, x, tmp: jaxsal.blur_integrated_gradients(m, x, 0,
                                                                               steps=2),
    "guided_integrated_gradients": lambda m, x, tmp: jaxsal.guided_integrated_gradients(
        m, x, 0, steps=2),
    "gradient_shap": lambda m, x, tmp: jaxsal.gradient_shap(m, x, 0, n=2, **K),
    "deeplift": lambda m, x, tmp: jaxsal.deeplift(m, x, 0),
    "deeplift_shap": lambda m, x, tmp: jaxsal.deeplift_shap(m, x, 0, baselines=jnp.zeros((2, 4, 4,
                                                                                     1))),
    "fullgrad": lambda m, x, tmp: jaxsal.fullgrad(m, x, 0),
    "gradcam": lambda m, x, tmp: jaxsal.gradcam(m, x, 0),
    "gradcam_plus_plus": lambda m, x, tmp: jaxsal.gradcam_plus_plus(m, x, 0),
    "scorecam": lambda m, x, tmp: jaxsal.scorecam(m, x, 0),
    "eigencam": lambda m, x, tmp: jaxsal.eigencam(m, x, 0),
    "ablationcam": lambda m, x, tmp: jaxsal.ablationcam(m, x, 0),
    "guided_gradcam": lambda m, x, tmp: jaxsal.guided_gradcam(m, x, 0),
    "layer_conductance": lambda m, x, tmp: jaxsal.layer_conductance(m, x, 0, layer="features",
                                                               steps=2),
    "occlusion": lambda m, x, tmp: jaxsal.occlusion(m, x, 0, patch=2),
    "lime": lambda m, x, tmp: jaxsal.lime(m, x, 0, n=8, patch=2, **K),
    "kernel_shap": lambda m, x, tmp: jaxsal.kernel_shap(m, x, 0, n=8, patch=2, **K),
    "rise": lambda m, x, tmp: jaxsal.rise(m, x, 0, n=4, **K),
    "shapley_values": lambda m, x, tmp: jaxsal.shapley_values(m, x, 0, patch=2),
    "shapley_value_sampling": lambda m, x, tmp: jaxsal.shapley_value_sampling(m, x, 0, n=1,
                                                                         patch=2, **K),
    "feature_permutation": lambda m, x, tmp: jaxsal.feature_permutation(m, x, 0, patch=2, **K),
    "deletion": lambda m, x, tmp: jaxsal.deletion(m, x, jnp.ones((len(x), 4, 4)), 0, steps=2),
    "insertion": lambda m, x, tmp: jaxsal.insertion(m, x, jnp.ones((len(x), 4, 4)), 0, steps=2),
    "infidelity": lambda m, x, tmp: jaxsal.infidelity(m, x, jnp.ones((len(x), 4, 4)), 0, n=2, **K),
    "sensitivity_max": lambda m, x, tmp: jaxsal.sensitivity_max(
        lambda v: jaxsal.saliency(m, v, 0), x, n=2, **K),
    "explain_to_file": lambda m, x, tmp: jaxsal.explain_to_file(
        jaxsal.saliency, m, np.asarray(x), tmp / "maps.npy", targets=0),
}


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_refuses_a_model_mixing_the_batch(method, tmp_path):
    """Before anything is compiled: each call is a trace of the model's shapes."""
    with pytest.raises(ValueError, match="mixes the inputs of the batch: reduce_sum over the "
                                         "batch axis"):
        METHODS[method](_split_model(True), X[:2], tmp_path)
    assert not list(tmp_path.iterdir())  # explain_to_file: nothing written


def test_per_example_models_are_accepted():
    """The fix the error suggests (the model run on one input at a time, jax.vmap) gives each
    input the maps of that input alone; computations that keep the examples apart -- an
    inference-mode normalization, lax.map, take_along_axis, a TimeDistributed reshape -- are
    not refused."""
    from jaxsal._src.per_example import check_per_example

    f = MIXED["scaled"]
    wrapped = jaxsal.FunctionModel(
        lambda p, x: jax.vmap(lambda xi: f(p, xi[None]).reshape(-1))(x), W)
    got = jaxsal.saliency(wrapped, X, 1)
    alone = np.concatenate([jaxsal.saliency(wrapped, X[i:i + 1], 1) for i in range(3)])
    np.testing.assert_allclose(got, alone, rtol=1e-5, atol=1e-6)
    for fn in (lambda p, x: (_logits(p, x) - 0.5) / 2.0,
               lambda p, x: jax.lax.map(lambda xi: xi.reshape(-1) @ p["w"], x),
               lambda p, x: jnp.take_along_axis(_logits(p, x), jnp.argsort(_logits(p, x), 1),
                                                1),
               lambda p, x: (x.reshape(-1, 4) @ p["w"][:4]).reshape(len(x), 4, 3).sum(1)):
        check_per_example(jaxsal.FunctionModel(fn, W), X)
    bn = load_keras(D.parent / "keras2" / "bn_axes_tfkeras2.h5")  # BatchNormalization
    check_per_example(bn, np.load(D.parent / "keras2" / "bn_axes_tfkeras2.expected.npz")["x"])


def test_outputs_with_the_batch_on_another_axis_are_refused():
    square = jaxsal.FunctionModel(lambda p, x: _logits(p, x).T, W)  # (3, 3) for 3 inputs
    with pytest.raises(ValueError, match=r"has no row per input: its inputs are on axis 1"):
        jaxsal.saliency(square, X, 0)



# ------------------------------------------------------------- rows reordered or selected
PERM = np.array([2, 0, 1])  # row i of x[PERM] is input PERM[i]

# A model of (N, 4, 4, 1) images, its rows reordered; for 3 inputs: the first row i that is
# not input i, the input it is computed from, and the operation the check names
REORDERED = {
    "reversed_inputs": (lambda p, x: _logits(p, x[::-1]), 0, 2, "rev"),
    "reversed_outputs": (lambda p, x: _logits(p, x)[::-1], 0, 2, "rev"),
    "take": (lambda p, x: jnp.take(_logits(p, x), PERM, axis=0), 0, 2, "a gather"),
    "take_clip": (lambda p, x: jnp.take(_logits(p, x), PERM, axis=0, mode="clip"), 0, 2,
                  "a gather"),
    "fancy_index": (lambda p, x: _logits(p, x[PERM]), 0, 2, "a gather"),
    "roll": (lambda p, x: jnp.roll(_logits(p, x), 1, axis=0), 0, 2, "a slice"),
    "slices_concatenated": (lambda p, x: _logits(p, jnp.concatenate([x[1:], x[:1]])), 0, 1,
                            "a slice"),
    "dynamic_slice": (lambda p, x: _logits(p, jax.lax.dynamic_slice_in_dim(
        jnp.concatenate([x, x]), 1, len(x), axis=0)), 0, 1, "dynamic_slice"),
    "first_row_broadcast": (lambda p, x: jnp.broadcast_to(_logits(p, x)[:1], (len(x), 3)),
                            1, 0, "a slice"),
    "second_half_of_a_split": (lambda p, x: jnp.split(_logits(p, jnp.concatenate(
        [x, x[::-1]])), 2)[1], 0, 2, "rev"),
    "tiled_then_sliced": (lambda p, x: jnp.tile(_logits(p, x), (2, 1))[1:len(x) + 1], 0, 1,
                          "a slice"),
}


@pytest.mark.parametrize("name", list(REORDERED))
def test_models_reordering_the_batch_are_refused(name):
    """Row i of the outputs computed from another input than i: every method would explain
    that input's score as input i's. The error names the row, its input and the operation."""
    fn, row, src, op = REORDERED[name]
    m = jaxsal.FunctionModel(fn, W)
    with pytest.raises(ValueError, match=(
            rf"the model's output \(shape \(3, 3\) for a batch of 3 inputs\) does not keep the "
            rf"inputs in their order: in a batch of 3 inputs, its row {row} is computed from "
            rf"input {src}, not input {row} \(the rows reordered or selected by {op}[^;]* at "
            r".*test_per_example\.py.*\); expected outputs with the batch axis first.*Make the "
            r"model return row i for input i")):
        jaxsal.saliency(m, X, 0)


def test_explain_to_file_refuses_a_reordered_model(tmp_path):
    """Before the first chunk, as a model, not as chunk 0's failure; nothing written."""
    m = jaxsal.FunctionModel(REORDERED["roll"][0], W)
    with pytest.raises(ValueError, match=r"does not keep the inputs in their order: in a batch "
                                         r"of 2 inputs, its row 0 is computed from input 1"):
        jaxsal.explain_to_file(jaxsal.saliency, m, np.asarray(X), tmp_path / "maps.npy",
                               targets=0, batch_size=2)
    assert not list(tmp_path.iterdir())


def test_a_reordered_batch_of_one_is_refused():
    """Reversing a batch of one changes nothing, but the methods' own batches are larger
    (DeepLIFT: the input and its reference): the check traces a batch of 2."""
    m = jaxsal.FunctionModel(REORDERED["reversed_inputs"][0], W)
    for method in (jaxsal.saliency, jaxsal.deeplift):
        with pytest.raises(ValueError, match=r"\(shape \(1, 3\) for a batch of 1 input\) does "
                                             r"not keep the inputs in their order: in a batch "
                                             r"of 2 inputs, its row 0 is computed from input 1"):
            method(m, X[:1], 0)


def test_outputs_with_missing_or_extra_rows_say_which():
    """Rows selected (x[1:]) or stacked (the batch and its reversal): the number of rows is
    wrong, and the error says where the rows come from."""
    for fn, why in ((lambda p, x: _logits(p, x)[1:], r"\(2, 3\) for a batch of 3 inputs.*Why: "
                     r"in a batch of 3 inputs, its row 0 is computed from input 1, not input 0"),
                    (lambda p, x: jnp.concatenate([_logits(p, x), _logits(p, x)[::-1]]),
                     r"\(6, 3\) for a batch of 3 inputs.*Why: in a batch of 3 inputs, its row 3 "
                     r"is computed from input 2 \(the rows reordered or selected by rev")):
        with pytest.raises(ValueError, match=why):
            jaxsal.saliency(jaxsal.FunctionModel(fn, W), X, 0)


@pytest.mark.parametrize("fn", [lambda p, x: _logits(p, x) - _logits(p, x)[:1],
                                lambda p, x: _logits(p, x) + _logits(p, x)[::-1],
                                lambda p, x: jnp.concatenate([_logits(p, x),
                                                              _logits(p, x[::-1])], 1)],
                         ids=["minus_first_row", "plus_reversed", "concatenated_features"])
def test_rows_of_different_inputs_combined_are_refused(fn):
    """An operation combining row i with a row of another input mixes the two inputs."""
    with pytest.raises(ValueError, match=r"mixes the inputs of the batch: (sub|add|"
                                         r"concatenate) combining rows of different inputs "
                                         r"\(the rows of one reordered or selected by (a slice|"
                                         r"rev)"):
        jaxsal.saliency(jaxsal.FunctionModel(fn, W), X, 0)


def _net(p, x):
    return jnp.tanh(x.reshape(x.shape[0], -1) @ p["w"])


# Test-time augmentation inside the model: the batch and its mirror images in one pass, the
# two halves of the outputs averaged; three ways of splitting them
TTA = {
    "split": lambda p, x: sum(jnp.split(_net(p, jnp.concatenate([x, x[:, :, ::-1]])), 2)) / 2,
    "slices": lambda p, x: (lambda y: (y[:len(x)] + y[len(x):]) / 2)(
        _net(p, jnp.concatenate([x, x[:, :, ::-1]]))),
    "reshape_mean": lambda p, x: _net(p, jnp.concatenate([x, x[:, :, ::-1]])).reshape(
        2, len(x), 3).mean(0),
    "reversed_and_back": lambda p, x: (_net(p, jnp.concatenate([x, x[::-1, :, ::-1]]))[:len(x)]
                                       + _net(p, jnp.concatenate([x, x[::-1, :, ::-1]]))[
                                           len(x):][::-1]) / 2,
}


@pytest.mark.parametrize("name", list(TTA))
def test_test_time_augmentation_keeps_the_rows(name):
    """Rows that come back in their order are followed (one row per input, not merely
    unknown) and not refused; the maps are each input's alone: by hand, the gradient of
    (net(x_i) + net(mirror(x_i))) / 2 for one input at a time."""
    from jaxsal._src import per_example as pe

    m = jaxsal.FunctionModel(TTA[name], W)
    assert pe.output_states(m, pe._analysis_inputs(X)) == [(pe.Rows(0), (3, 3))]
    got = np.asarray(jaxsal.saliency(m, X, 1, reduce=None))

    def score(xi):  # one input, (4, 4, 1)
        y = (_net(W, xi[None]) + _net(W, xi[None, :, ::-1])) / 2
        return y[0, 1]

    want = np.stack([np.asarray(jax.grad(score)(X[i])) for i in range(3)])  # signed
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-5, atol=1e-7)


def test_unknown_indices_are_not_refused():
    """A gather along the batch axis whose indices the check cannot compute (a parameter) is
    not followed: the model is not refused (nor vouched for)."""
    from jaxsal._src import per_example as pe

    m = jaxsal.FunctionModel(lambda p, x: _logits(p, x)[p["perm"]],
                             {**W, "perm": jnp.asarray(PERM)})
    assert pe.output_states(m, pe._analysis_inputs(X)) == [(pe.UNKNOWN, (3, 3))]
    pe.check_per_example(m, X)


def test_a_keras_model_flipping_the_batch_is_refused(tmp_path):
    """keras.ops.flip along the batch axis in a Functional model: the error names the layer
    the importer gave the operation."""
    keras = pytest.importorskip("keras")
    inp = keras.Input((4, 4, 1), name="x")
    h = keras.layers.Dense(3, name="dense")(keras.layers.Flatten(name="flatten")(inp))
    keras.Model(inp, keras.ops.flip(h, axis=0)).save(tmp_path / "flip.keras")
    m = load_keras(tmp_path / "flip.keras")
    with pytest.raises(ValueError, match=r"its row 0 is computed from input 2, not input 0 "
                                         r"\(the rows reordered or selected by rev along the "
                                         r"batch axis in layer 'flip'\)"):
        jaxsal.saliency(m, np.asarray(X), 0)


# ------------------------------------------------------------- rows of no input, rows written
def _state(fn):
    """The check's state of ``fn``'s one output for ``X`` (:func:`output_states`)."""
    from jaxsal._src import per_example as pe

    return pe.output_states(jaxsal.FunctionModel(fn, W), pe._analysis_inputs(X))[0][0]


def _refused_order(fn, row, got, op):
    """``fn`` refused: its ``row`` is computed from ``got`` (``"input 1"``, ``"no input"``), the
    rows reordered or selected by ``op``, named at this file's line."""
    with pytest.raises(ValueError, match=(
            rf"does not keep the inputs in their order: in a batch of 3 inputs, its row {row} is "
            rf"computed from {got}, not input {row} \(the rows reordered or selected by {op}"
            r"[^;]* at .*test_per_example\.py")):
        jaxsal.saliency(jaxsal.FunctionModel(fn, W), X, 0)


# Padding rows (of no input) added to the batch axis and sliced off again, an input's row
# replaced by padding and the batch added back: each row still comes from its own input
PADDED_KEPT = {
    "pad_sliced_off": lambda p, x: jnp.pad(_logits(p, x), ((1, 2), (0, 0)))[1:len(x) + 1],
    "interior_pad_strided": lambda p, x: jax.lax.pad(_logits(p, x), 0.0,
                                                     ((0, 0, 1), (0, 0, 0)))[::2],
    "negative_pad_back": lambda p, x: jax.lax.pad(jnp.pad(_logits(p, x), ((2, 0), (0, 0))),
                                                  0.0, ((-2, 0, 0), (0, 0, 0))),
    "images_padded": lambda p, x: _logits(p, jnp.pad(x, ((1, 1), (0, 0), (0, 0), (0, 0)),
                                                     constant_values=0.5)[1:-1]),
    "first_row_padded_plus_rows": lambda p, x: jnp.pad(_logits(p, x)[1:], ((1, 0), (0, 0)))
    + _logits(p, x),
}


@pytest.mark.parametrize("name", list(PADDED_KEPT))
def test_padding_rows_sliced_off_keep_the_rows(name):
    """Followed to one row per input (not merely unknown), and not refused."""
    from jaxsal._src import per_example as pe

    assert _state(PADDED_KEPT[name]) == pe.Rows(0)
    pe.check_per_example(jaxsal.FunctionModel(PADDED_KEPT[name], W), X)


# The rows shifted by padding: an output row of padding, or of the next input
NO_INPUT = r"no input \(a row of padding or constants\)"
PADDED_SHIFTED = {
    "padded_then_cut": (lambda p, x: jnp.pad(_logits(p, x), ((1, 0), (0, 0)))[:len(x)], 0,
                        NO_INPUT),
    "interior_then_cut": (lambda p, x: jax.lax.pad(_logits(p, x), 0.0,
                                                   ((0, 0, 1), (0, 0, 0)))[:len(x)], 1,
                          NO_INPUT),
    "negative_low_padding": (lambda p, x: jax.lax.pad(_logits(p, x), 0.0,
                                                      ((-1, 1, 0), (0, 0, 0))), 0, "input 1"),
}


@pytest.mark.parametrize("name", list(PADDED_SHIFTED))
def test_rows_shifted_by_padding_are_refused(name):
    fn, row, got = PADDED_SHIFTED[name]
    _refused_order(fn, row, got, "pad")


DUS = jax.lax.dynamic_update_slice

# Rows written into a buffer along the batch axis (constant start indices) and read back in
# their order, or parts of the rows written over (each row's own)
WRITTEN_KEPT = {
    "dus_into_buffer_sliced_back": lambda p, x: DUS(jnp.zeros((len(x) + 2, 3)), _logits(p, x),
                                                    (1, 0))[1:len(x) + 1],
    "dus_reversed_twice": lambda p, x: DUS(jnp.zeros((len(x), 3)), _logits(p, x)[::-1],
                                           (0, 0))[::-1],
    "dus_own_rows_over_a_column": lambda p, x: DUS(_logits(p, x), _logits(p, x)[:, 1:] * 2,
                                                   (0, 0)),
    "scatter_permuted_back": lambda p, x: jnp.zeros((len(x), 3)).at[PERM].set(
        _logits(p, x)[PERM]),
    "scatter_reversed_back": lambda p, x: _logits(p, x).at[::-1].set(_logits(p, x)[::-1] * 2),
    "scatter_add_in_order": lambda p, x: jnp.ones((len(x), 3)).at[jnp.arange(len(x))].add(
        _logits(p, x)),
    "scatter_into_buffer_sliced_back": lambda p, x: jnp.zeros((len(x) + 2, 3)).at[
        1:len(x) + 1].set(_logits(p, x))[1:len(x) + 1],
    "scatter_constant_column": lambda p, x: _logits(p, x).at[:, 0].set(0.0),
    "scatter_own_column": lambda p, x: _logits(p, x).at[:, 0].add(_logits(p, x)[:, 1]),
}


@pytest.mark.parametrize("name", list(WRITTEN_KEPT))
def test_rows_written_back_in_their_order_are_followed(name):
    from jaxsal._src import per_example as pe

    assert _state(WRITTEN_KEPT[name]) == pe.Rows(0)
    pe.check_per_example(jaxsal.FunctionModel(WRITTEN_KEPT[name], W), X)


# Rows written elsewhere than their own position: the first row of the output that is not
# its input's, what it is computed from, and the operation named
WRITTEN_REORDERED = {
    "dus_reversed_rows": (lambda p, x: DUS(jnp.zeros((len(x), 3)), _logits(p, x)[::-1],
                                           (0, 0)), 0, "input 2", "rev"),
    "dus_shifted": (lambda p, x: DUS(jnp.zeros((len(x) + 1, 3)), _logits(p, x),
                                     (1, 0))[:len(x)], 0, NO_INPUT, "dynamic_update_slice"),
    "dus_row_over_another": (lambda p, x: DUS(_logits(p, x), _logits(p, x)[2:], (0, 0)), 0,
                             "input 2", "a slice"),
    "scatter_permuted": (lambda p, x: jnp.zeros((len(x), 3)).at[PERM].set(_logits(p, x)), 0,
                         "input 1", "scatter"),
    "scatter_reversed": (lambda p, x: jnp.zeros((len(x), 3)).at[::-1].set(_logits(p, x)), 0,
                         "input 2", "rev"),
    "scatter_row_over_another": (lambda p, x: _logits(p, x).at[np.array([0])].set(
        _logits(p, x)[2:]), 0, "input 2", "a slice"),
    "scatter_shifted": (lambda p, x: jnp.zeros((len(x) + 1, 3)).at[1:].set(
        _logits(p, x))[:len(x)], 0, NO_INPUT, "scatter"),
}


@pytest.mark.parametrize("name", list(WRITTEN_REORDERED))
def test_rows_written_out_of_their_order_are_refused(name):
    fn, row, got, op = WRITTEN_REORDERED[name]
    _refused_order(fn, row, got, op)


# Part of a row written over with another input's row
WRITTEN_MIXED = {
    "dus_column_of_another_row": (lambda p, x: DUS(_logits(p, x), _logits(p, x)[::-1, :1],
                                                   (0, 0)), "dynamic_update_slice"),
    "scatter_add_two_rows_into_one": (lambda p, x: jnp.zeros((len(x), 3)).at[
        np.array([0, 0, 1])].add(_logits(p, x)), "scatter-add"),
    "scatter_add_permuted": (lambda p, x: _logits(p, x).at[PERM].add(_logits(p, x)),
                             "scatter-add"),
    "scatter_column_of_another_row": (lambda p, x: _logits(p, x).at[:, 0].set(
        _logits(p, x)[::-1, 1]), "scatter"),
}


@pytest.mark.parametrize("name", list(WRITTEN_MIXED))
def test_rows_written_into_other_inputs_rows_are_refused(name):
    fn, op = WRITTEN_MIXED[name]
    with pytest.raises(ValueError, match=rf"mixes the inputs of the batch: {op} [^;]*combining "
                                         r"rows of different inputs in one row[^;]* at "
                                         r".*test_per_example\.py"):
        jaxsal.saliency(jaxsal.FunctionModel(fn, W), X, 0)


def test_scatters_the_check_cannot_map_are_not_refused():
    """Two inputs set into one row (which one JAX keeps is not defined) and indices from a
    parameter: not followed, neither refused nor vouched for."""
    from jaxsal._src import per_example as pe

    for fn, params in (
            (lambda p, x: jnp.zeros((len(x), 3)).at[np.array([0, 0, 1])].set(_logits(p, x)), W),
            (lambda p, x: jnp.zeros((len(x), 3)).at[p["perm"]].set(_logits(p, x)),
             {**W, "perm": jnp.asarray(PERM)})):
        m = jaxsal.FunctionModel(fn, params)
        assert pe.output_states(m, pe._analysis_inputs(X)) == [(pe.UNKNOWN, (3, 3))]
        pe.check_per_example(m, X)


def _row(p, xi):
    """One input's logits, in a loop over the batch."""
    return xi.reshape(-1) @ p["w"]


def _scan_rows(p, xs, **kw):
    """``lax.scan`` of :func:`_row` over ``xs``, its outputs stacked (no carry)."""
    return jax.lax.scan(lambda c, xi: (c, _row(p, xi)), 0.0, xs, **kw)[1]


# Loops over the batch axis: each iteration's outputs come from the example it is given
SCANNED_KEPT = {
    "map_in_order": lambda p, x: jax.lax.map(lambda xi: _row(p, xi), x),
    "scan_in_reverse": lambda p, x: _scan_rows(p, x, reverse=True),
    "scan_over_reversed_then_back": lambda p, x: _scan_rows(p, x[::-1])[::-1],
    "map_over_permuted_then_back": lambda p, x: jax.lax.map(lambda xi: _row(p, xi),
                                                            x[PERM])[np.argsort(PERM)],
    "map_over_padded_then_cut": lambda p, x: jax.lax.map(
        lambda xi: _row(p, xi), jnp.pad(x, ((1, 0), (0, 0), (0, 0), (0, 0))))[1:],
}


@pytest.mark.parametrize("name", list(SCANNED_KEPT))
def test_loops_over_the_batch_keep_the_rows(name):
    from jaxsal._src import per_example as pe

    assert _state(SCANNED_KEPT[name]) == pe.Rows(0)
    pe.check_per_example(jaxsal.FunctionModel(SCANNED_KEPT[name], W), X)


SCANNED_REORDERED = {
    "scan_over_reversed": (lambda p, x: _scan_rows(p, x[::-1]), 0, "input 2", "rev"),
    "map_over_permuted": (lambda p, x: jax.lax.map(lambda xi: _row(p, xi), x[PERM]), 0,
                          "input 2", "a gather"),
}


@pytest.mark.parametrize("name", list(SCANNED_REORDERED))
def test_loops_over_a_reordered_batch_are_refused(name):
    """Row i of the stacked outputs comes from the example of iteration i."""
    fn, row, got, op = SCANNED_REORDERED[name]
    _refused_order(fn, row, got, op)


def test_a_loop_carrying_values_over_a_reordered_batch_is_refused():
    """An RNN run over the batch axis, reversed: it still carries one example's values into
    the next one's outputs."""
    fn = MIXED["rnn_over_batch"]
    m = jaxsal.FunctionModel(lambda p, x: fn(p, x[::-1]), W)
    with pytest.raises(ValueError, match=r"mixes the inputs of the batch: a loop over the batch "
                                         r"axis carrying values from one example to the next"):
        jaxsal.saliency(m, X, 0)


# ------------------------------------------------------------- choices made on the whole batch
# One choice for every row, made on a predicate computed from all the inputs: row i's value
# then depends on the other inputs (whether jnp.where picks the value, lax.cond the branch or
# the loop's condition the number of iterations), as in a batch of masked copies or a chunk
# of another size. The text after "which decides" in the error
DECIDED = {
    "where_on_the_batch_mean": (lambda p, x: jnp.where(jnp.mean(x) > 0, _logits(p, x),
                                                       -_logits(p, x)),
                                "the values select_n \\(jnp.where\\) picks"),
    "cond_on_the_whole_batch": (lambda p, x: jax.lax.cond(jnp.all(x > -1), lambda: _logits(
        p, x), lambda: -_logits(p, x)), "the branch of cond"),
    "switch_on_the_batch_max": (lambda p, x: jax.lax.switch(
        (jnp.max(x) > 0.5).astype(int), [lambda: _logits(p, x), lambda: 2 * _logits(p, x)]),
                                "the branch of cond"),
    "while_until_the_whole_batch_is_small": (lambda p, x: jax.lax.while_loop(
        lambda h: jnp.max(jnp.abs(h)) > 0.1, lambda h: h / 2, _logits(p, x)),
                                             "how many iterations of while"),
}


@pytest.mark.parametrize("name", list(DECIDED))
def test_choices_made_on_the_whole_batch_are_refused(name):
    """Before anything is compiled (saliency would refuse the while loop's reverse pass)."""
    from jaxsal._src.per_example import check_per_example

    fn, what = DECIDED[name]
    with pytest.raises(ValueError, match=rf"mixes the inputs of the batch: reduce_\w+ over the "
                                         rf"batch axis at [^;]*test_per_example\.py[^;]*, which "
                                         rf"decides {what}"):
        check_per_example(jaxsal.FunctionModel(fn, W), X)


# The same choices made for each row on its own input (jax.vmap turns a cond on one input into
# select_n, and gives a while loop on one input a predicate per row), or on constants
DECIDED_PER_ROW = {
    "where_per_row": lambda p, x: jnp.where(jnp.mean(x, (1, 2, 3))[:, None] > 0.5,
                                            _logits(p, x), -_logits(p, x)),
    "vmapped_cond": lambda p, x: jax.vmap(lambda xi: jax.lax.cond(
        jnp.all(xi > 0.5), lambda: _row(p, xi), lambda: -_row(p, xi)))(x),
    "vmapped_while": lambda p, x: jax.vmap(lambda xi: jax.lax.while_loop(
        lambda h: jnp.max(jnp.abs(h)) > 0.1, lambda h: h / 2, _row(p, xi)))(x),
    "cond_on_a_parameter": lambda p, x: jax.lax.cond(jnp.sum(p["w"]) > 0, lambda: _logits(
        p, x), lambda: -_logits(p, x)),
    "while_counting": lambda p, x: jax.lax.while_loop(lambda c: c[0] < 3, lambda c: (
        c[0] + 1, c[1] / 2), (0, _logits(p, x)))[1],
}


@pytest.mark.parametrize("name", list(DECIDED_PER_ROW))
def test_choices_made_for_each_row_keep_the_rows(name):
    from jaxsal._src import per_example as pe

    assert _state(DECIDED_PER_ROW[name]) == pe.Rows(0)
    pe.check_per_example(jaxsal.FunctionModel(DECIDED_PER_ROW[name], W), X)


# ------------------------------------------------------------- tf.keras TFOpLambda models
def _misc_with_output(tmp_path, layer):
    """The tf.keras 2 fixture of raw tf.* calls (tests/fixtures/keras2_tfops), its output
    set to one of its layers: tf.nn.l2_loss (over every element, the batch too) or
    tf.math.truediv (h / tf.nn.l2_loss(h))."""
    cfg = config("misc")
    cfg["config"]["output_layers"] = [[layer, 0, 0]]
    path = tmp_path / f"{layer}.h5"
    shutil.copy(D / "misc_tf221.h5", path)
    with h5py.File(path, "r+") as f:
        f.attrs["model_config"] = json.dumps(cfg)
    return path


@pytest.mark.parametrize("layer,shape", [("tf.nn.l2_loss", "()"),
                                         ("tf.math.truediv", r"\(3, 6, 5, 3\)")])
def test_tf_keras_models_mixing_the_batch_are_refused(tmp_path, capsys, layer, shape):
    path = _misc_with_output(tmp_path, layer)
    m = load_keras(path)
    x = np.load(D / "misc_tf221.expected.npz")["x"]
    why = r"reduce_sum over the batch axis in layer 'tf\.nn\.l2_loss'"
    for method in (jaxsal.deeplift, jaxsal.lrp, jaxsal.saliency):
        with pytest.raises(ValueError, match=rf"{shape} for a batch of 3 inputs.*{why}"):
            method(m, x, lambda y: y.reshape(len(y), -1).sum(1))
    np.save(tmp_path / "x.npy", x)
    for targets in ("0", "all"):  # (all: no classes to count, no IndexError either)
        assert cli.main(["explain", str(path), str(tmp_path / "x.npy"), "--method",
                         "deeplift", "--targets", targets,
                         "--out", str(tmp_path / "maps.npy")]) == 2
        err = capsys.readouterr().err
        if shape == "()":
            assert "mixes the inputs" in err or "It mixes the inputs" in err, err
            assert "layer 'tf.nn.l2_loss'" in err and "chunk 0" not in err, err
        else:  # class ids cannot index a spatial output: refused first, before the job
            assert "the command line explains class outputs" in err, err
            assert "chunk 0" not in err, err
        assert not (tmp_path / "maps.npy").exists()


def test_every_output_is_checked():
    """The fixture's output 5 holds the batch on its axis 1 and its output 8 is h /
    tf.nn.l2_loss(h): the whole model is refused, naming how to pick another output; its
    output 0 alone is not."""
    m = load_keras(D / "misc_tf221.h5")
    x = np.load(D / "misc_tf221.expected.npz")["x"]
    with pytest.raises(ValueError, match=r"outputs of shape \(2, 3, 3\) for a batch of 3 "
                                         r"inputs.*Every output of the model is checked; to "
                                         r"explain one that keeps the inputs apart, pick one "
                                         r"with model\.with_output"):
        jaxsal.saliency(m, x, lambda ys: ys[0].reshape(3, -1).sum(1))
    from jaxsal._src.per_example import check_per_example

    check_per_example(m.with_output(0), x)


def test_maximize_runs_one_image_at_a_time():
    """maximize runs the model on a batch of one image: a model that mixes a batch computes
    its value on that image alone (well defined), but its outputs need the batch axis."""
    from jaxsal._src.maximize import maximize_program  # maximize's checks, not compiled

    scaled = jaxsal.FunctionModel(MIXED["scaled"], W, input_shape=(4, 4, 1))
    maximize_program(scaled, [0], steps=2)
    l2 = jaxsal.FunctionModel(MIXED["l2_loss"], W, input_shape=(4, 4, 1))
    with pytest.raises(ValueError, match=r"outputs of shape \(\) for a batch of 1 input.*"
                                         r"It mixes the inputs: reduce_sum over the batch"):
        jaxsal.maximize(l2, [0], steps=2)
