"""The logits head on models whose output layer only reshapes or passes on the activated
values (``Dense(softmax) -> Reshape``): it removes the activation before them, compared with
Keras's own pre-activation values."""

import json
from pathlib import Path

import numpy as np
import pytest

import keras  # noqa: E402  (tests/conftest.py picks the backend)
from keras import layers  # noqa: E402

from import_helpers import relabel_h5, save_keras_and_h5  # noqa: E402
from model_import import load_keras  # noqa: E402


def _dense_z(x, dense):
    """The pre-activation output of a Keras ``Dense`` layer."""
    kernel, bias = (np.asarray(w) for w in dense.get_weights())
    return x @ kernel + bias


def _case(kind):
    """(model, function of x giving the Keras pre-activation values at the output)."""
    inp = keras.Input((6,))
    if kind == "fused_softmax_reshape":
        dense = layers.Dense(8, activation="softmax")
        out = layers.Reshape((2, 4))(dense(inp))
        return keras.Model(inp, out), lambda x: _dense_z(x, dense).reshape(-1, 2, 4)
    if kind == "activation_dropout_flatten":
        seq = layers.Reshape((2, 3))(inp)
        dense = layers.Dense(4)
        act = layers.Activation("sigmoid")(dense(seq))
        out = layers.Flatten()(layers.Dropout(0.5)(act))
        return keras.Model(inp, out), lambda x: _dense_z(x.reshape(-1, 2, 3), dense).reshape(-1, 8)
    if kind == "softmax_layer_permute":
        seq = layers.Reshape((2, 3))(inp)
        dense = layers.Dense(5)
        out = layers.Permute((2, 1))(layers.Softmax(axis=1)(dense(seq)))
        return (keras.Model(inp, out),
                lambda x: _dense_z(x.reshape(-1, 2, 3), dense).transpose(0, 2, 1))
    if kind == "nested_model_reshape":
        sub_in = keras.Input((6,))
        dense = layers.Dense(8, activation="softmax")
        sub = keras.Model(sub_in, dense(sub_in), name="classifier")
        out = layers.Reshape((8, 1))(sub(inp))
        return keras.Model(inp, out), lambda x: _dense_z(x, dense).reshape(-1, 8, 1)
    if kind == "ops_softmax":  # keras.ops.softmax: an op node, not a layer's activation
        dense = layers.Dense(8)
        return keras.Model(inp, keras.ops.softmax(dense(inp))), lambda x: _dense_z(x, dense)
    if kind == "activations_sigmoid_reshape":  # keras.activations.* on a tensor is an op too
        dense = layers.Dense(8)
        out = layers.Reshape((4, 2))(keras.activations.sigmoid(dense(inp)))
        return keras.Model(inp, out), lambda x: _dense_z(x, dense).reshape(-1, 4, 2)
    if kind == "fused_softmax_linear_activation":
        dense = layers.Dense(8, activation="softmax")
        out = layers.Activation("linear")(dense(inp))
        return keras.Model(inp, out), lambda x: _dense_z(x, dense)
    if kind == "softmax_last_step":  # x[:, -1] of a sequence classifier's probabilities
        seq = layers.Reshape((2, 3))(inp)
        dense = layers.Dense(4, activation="softmax")
        return (keras.Model(inp, dense(seq)[:, -1]),
                lambda x: _dense_z(x.reshape(-1, 2, 3), dense)[:, -1])
    if kind == "softmax_cropping_transpose":
        seq = layers.Reshape((3, 2))(inp)
        dense = layers.Dense(4, activation="softmax")
        out = keras.ops.transpose(layers.Cropping1D((1, 0))(dense(seq)), (0, 2, 1))
        return (keras.Model(inp, out),
                lambda x: _dense_z(x.reshape(-1, 3, 2), dense)[:, 1:].transpose(0, 2, 1))
    if kind == "softmax_split_unstack_flips":  # multi-output and identity operations, merges
        # of one tensor, nearest resizes, patches without padding
        dense = layers.Dense(12)
        ops = keras.ops

        def moves(t):  # (N, 12) -> (N, 3): each operation only moves or selects values
            t = ops.split(ops.copy(t), [4], axis=-1)[1]  # (N, 8)
            t = ops.nn.depth_to_space(ops.reshape(t, (-1, 1, 1, 8)), 2)  # (N, 2, 2, 2)
            t = ops.unstack(ops.fliplr(ops.stop_gradient(t)), axis=-1)[1]  # (N, 2, 2)
            t = ops.cast(ops.ravel(ops.diagonal(t, axis1=1, axis2=2)), "float32")
            t = ops.reshape(layers.UpSampling1D(3)(ops.reshape(t, (-1, 2, 1))), (-1, 6))
            # merges of one tensor, nearest resizes, patches without padding
            t = layers.Concatenate()([ops.concatenate([ops.stack([t], axis=1)], axis=1)])
            t = ops.reshape(ops.vstack([ops.hstack([ops.dstack([t])])]), (-1, 1, 6))
            t = ops.image.resize(ops.expand_dims(t, -1), (2, 5), interpolation="nearest",
                                 crop_to_aspect_ratio=True)  # (N, 2, 5, 1)
            t = layers.Resizing(3, 4, interpolation="nearest")(t)
            t = ops.reshape(ops.image.extract_patches(t, 2, strides=1), (-1, 24))
            return ops.array_split(t, 2, axis=-1)[0]

        z = dense(inp)
        logits = keras.Model(inp, moves(z))  # Keras's own values of the same operations
        return keras.Model(inp, moves(ops.softmax(z))), lambda x: logits.predict(x, verbose=0)
    if kind == "linear_reshape":  # nothing to remove: logits == the saved output
        dense = layers.Dense(8)
        out = layers.Reshape((4, 2))(dense(inp))
        return keras.Model(inp, out), lambda x: _dense_z(x, dense).reshape(-1, 4, 2)
    raise ValueError(kind)


KINDS = ["fused_softmax_reshape", "activation_dropout_flatten", "softmax_layer_permute",
         "nested_model_reshape", "ops_softmax", "activations_sigmoid_reshape",
         "fused_softmax_linear_activation", "softmax_last_step", "softmax_cropping_transpose",
         "softmax_split_unstack_flips", "linear_reshape"]


@pytest.mark.parametrize("kind", KINDS)
def test_logits_head_looks_through_pass_through_layers(kind, tmp_path):
    keras.utils.set_random_seed(0)
    model, pre_activation = _case(kind)
    x = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)
    saved = np.asarray(model(x))
    z = pre_activation(x)
    if kind != "linear_reshape":
        assert np.abs(saved - z).max() > 0.1  # the activation matters: the test can fail
    for path in save_keras_and_h5(model, tmp_path, kind).values():
        m = load_keras(path)
        np.testing.assert_allclose(np.asarray(m(x)), saved, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(m.with_head("logits")(x)), z,
                                   rtol=1e-5, atol=1e-5)


def test_logits_head_refuses_an_activation_other_layers_need(tmp_path):
    inp = keras.Input((6,))
    probs = layers.Dense(8, activation="softmax", name="probs")(inp)
    out = layers.Dense(8)(probs)
    model = keras.Model(inp, [layers.Reshape((2, 4))(probs), out])
    x = np.ones((2, 6), np.float32)
    for path in save_keras_and_h5(model, tmp_path, "shared").values():
        m = load_keras(path)
        saved = m(x)  # the saved head is unaffected
        np.testing.assert_allclose(np.asarray(saved[0]), np.asarray(model(x)[0]), rtol=1e-5)
        with pytest.raises(ValueError, match="'probs'.*feeds other layers.*head='saved'"):
            m.with_head("logits")(x)
        # each output alone has its logits: the head can be chosen before the output
        both = load_keras(path, head="logits")
        np.testing.assert_allclose(np.asarray(both.with_output(1)(x)), np.asarray(saved[1]),
                                   rtol=1e-5)
        z = np.asarray(both.with_output(0)(x)).reshape(-1, 8)
        np.testing.assert_allclose(np.exp(z) / np.exp(z).sum(-1, keepdims=True),
                                   np.asarray(saved[0]).reshape(-1, 8), rtol=1e-5)


@pytest.mark.parametrize("pool", ["global_average", "max_pooling", "ops_mean"])
def test_logits_head_refuses_pooled_probabilities(pool, tmp_path):
    """The mean (or max) of softmax outputs over a sequence has no pre-activation, as an
    ``Average`` of classifiers has none: refused when the head is chosen, not computed as
    the probabilities."""
    inp = keras.Input((3, 2))
    probs = layers.Dense(4, activation="softmax", name="probs")(inp)
    out = {"global_average": lambda: layers.GlobalAveragePooling1D()(probs),
           "max_pooling": lambda: layers.MaxPooling1D(3)(probs),
           "ops_mean": lambda: keras.ops.mean(probs, axis=1)}[pool]()
    model = keras.Model(inp, out)
    x = np.random.default_rng(0).normal(size=(2, 3, 2)).astype(np.float32)
    for path in save_keras_and_h5(model, tmp_path, pool).values():
        m = load_keras(path)
        np.testing.assert_allclose(np.asarray(m(x)), np.asarray(model(x)), rtol=1e-5)
        with pytest.raises(ValueError, match="pools the probabilities of \\['probs'\\]"):
            m.with_head("logits")
        with pytest.raises(ValueError, match="pools the probabilities"):
            load_keras(path, head="logits")
        # the refusal names the head asked for (the others apply to the logits)
        for head in ("softmax", "sigmoid", "sigmoid_complement"):
            with pytest.raises(ValueError, match=f"the '{head}' head \\(applied to the "
                               "logits\\) cannot undo"):
                m.with_head(head)


def _softmax_case(kind):
    inp = keras.Input((6,))
    seq = layers.Reshape((2, 3))(inp)
    if kind == "fused_softmax_permute":  # (2, 3) probabilities over the last axis -> (3, 2)
        return keras.Model(inp, layers.Permute((2, 1))(layers.Dense(3, activation="softmax")(
            seq)))
    if kind == "fused_softmax_flatten":
        return keras.Model(inp, layers.Flatten()(layers.Dense(4, activation="softmax")(seq)))
    if kind == "time_distributed_flatten":  # the activation is the wrapped layer's
        return keras.Model(inp, layers.Flatten()(layers.TimeDistributed(
            layers.Dense(4, activation="softmax"))(seq)))
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["fused_softmax_permute", "fused_softmax_flatten",
                                  "time_distributed_flatten"])
def test_softmax_head_keeps_the_models_own_softmax(kind, tmp_path):
    """``head="softmax"`` on an output that is already the model's softmax gives that output
    (over its own axis, through the layers that move its values), not a softmax over the
    last axis of what reaches the output."""
    keras.utils.set_random_seed(0)
    model = _softmax_case(kind)
    x = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)
    saved = np.asarray(model(x))
    for path in save_keras_and_h5(model, tmp_path, kind).values():
        m = load_keras(path, head="softmax")
        np.testing.assert_allclose(np.asarray(m(x)), saved, rtol=1e-5, atol=1e-6)
        z = np.asarray(load_keras(path, head="logits")(x))
        last_axis = np.exp(z) / np.exp(z).sum(-1, keepdims=True)  # what it was before
        assert np.abs(last_axis - saved).max() > 0.05  # the test can fail


def test_softmax_head_of_a_sigmoid_output_normalizes_its_last_axis(tmp_path):
    inp = keras.Input((6,))
    dense = layers.Dense(4, activation="sigmoid")
    model = keras.Model(inp, layers.Flatten()(dense(layers.Reshape((2, 3))(inp))))
    x = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)
    z = _dense_z(x.reshape(-1, 2, 3), dense).reshape(-1, 8)
    m = load_keras(save_keras_and_h5(model, tmp_path, "sig")[".keras"], head="softmax")
    want = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(m(x)), want, rtol=1e-5, atol=1e-6)


def _binary(kind):
    inp = keras.Input((4,))
    dense = layers.Dense(1, activation="sigmoid")
    if kind == "flatten":
        out = layers.Flatten()(layers.Reshape((1, 1))(dense(inp)))
    elif kind == "ops_sigmoid":
        dense = layers.Dense(1)
        out = keras.ops.sigmoid(dense(inp))
    else:  # a nested classifier
        sub_in = keras.Input((4,))
        out = keras.Model(sub_in, dense(sub_in), name="classifier")(inp)
    model = keras.Model(inp, out)
    dense.set_weights([np.array([[1.0], [-1.0], [0.5], [0.0]], np.float32),
                       np.zeros(1, np.float32)])
    return model


@pytest.mark.parametrize("kind", ["flatten", "nested", "ops_sigmoid"])
def test_saved_probabilities_behind_pass_through_layers_predict_by_probability(kind, tmp_path):
    """A one-unit sigmoid behind Flatten/Reshape, or inside a nested model, holds
    probabilities: the predicted class is p > 0.5 (read as a logit, every p > 0 would
    predict class 1)."""
    import jaxsal
    from jaxsal._src import base

    model = _binary(kind)
    x = np.array([[0.0, 2.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]], np.float32)  # p < .5, p > .5
    p = np.asarray(model(x))[:, 0]
    assert p[0] < 0.5 < p[1]
    m = load_keras(save_keras_and_h5(model, tmp_path, kind)[".keras"])
    assert base.output_kind(m) == ("prob", False)
    both = np.asarray(jaxsal.saliency(m, x, [0, 1], reduce=None))
    top1 = np.asarray(jaxsal.saliency(m, x, reduce=None))
    np.testing.assert_allclose(top1[0], both[0, 0], rtol=1e-6)  # class 0: 1 - p
    np.testing.assert_allclose(top1[1], both[1, 1], rtol=1e-6)
    assert not np.allclose(both[0, 0], both[0, 1])


def test_logits_head_looks_through_values_taken_by_index_tensors(tmp_path):
    """keras.ops.take_along_axis(probs, ids) with ids an input: the logits are the taken
    pre-softmax values (the probabilities were returned); with ids = argsort(probs), which
    reads the probabilities, the logits head is refused."""
    keras.utils.set_random_seed(0)
    inp, ids = keras.Input((6,)), keras.Input((2,), dtype="int32")
    dense = layers.Dense(5, activation="softmax")
    model = keras.Model([inp, ids], keras.ops.take_along_axis(dense(inp), ids, axis=1))
    x = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)
    i = np.array([[0, 4], [2, 2], [3, 1]], np.int32)
    m = load_keras(save_keras_and_h5(model, tmp_path, "take")[".keras"])
    np.testing.assert_allclose(np.asarray(m.with_head("logits")([x, i])),
                               np.take_along_axis(_dense_z(x, dense), i, axis=1),
                               rtol=1e-5, atol=1e-5)
    probs = dense(inp)
    order = keras.ops.argsort(probs, axis=-1)[:, :2]
    sorted_model = keras.Model(inp, keras.ops.take_along_axis(probs, order, axis=1))
    m = load_keras(save_keras_and_h5(sorted_model, tmp_path, "sorted")[".keras"])
    with pytest.raises(ValueError, match="cannot remove the activation"):
        m.with_head("logits")


def test_a_sigmoid_behind_a_split_holds_probabilities(tmp_path):
    """One unit of a Dense(2, sigmoid) selected by keras.ops.split: the saved output holds
    probabilities, so the predicted class is p > 0.5 (it was read as a logit, where every
    p > 0 predicts class 1; the logits head returned the probabilities)."""
    from jaxsal._src import base

    inp = keras.Input((4,))
    model = keras.Model(inp, keras.ops.split(layers.Dense(2, activation="sigmoid")(inp), 2,
                                             axis=-1)[1])
    m = load_keras(save_keras_and_h5(model, tmp_path, "split")[".keras"])
    assert base.output_kind(m) == ("prob", False)


KERAS2 = Path(__file__).parent / "fixtures" / "keras2"


@pytest.mark.parametrize("ext", [".h5", ".keras"])
def test_tf_keras_output_computed_by_a_tf_function(ext):
    """tf_keras 2.21 files whose output is ``tf.nn.softmax(z)`` / ``tf.math.sigmoid(z)``
    (``TFOpLambda``): the logits head gives ``z``; the saved one-unit sigmoid counts as a
    probability (``tests/fixtures/keras2/make_keras2_fixtures.py``, group ``tf_heads``)."""
    import jaxsal
    from jaxsal._src import base

    for name in ("tfop_softmax_tfkeras2", "tfop_sigmoid_tfkeras2"):
        d = np.load(KERAS2 / f"{name}.expected.npz")
        m = load_keras(KERAS2 / f"{name}{ext}")
        np.testing.assert_allclose(np.asarray(m(d["x"])), d["y"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(m.with_head("logits")(d["x"])),
                                   d["act__z"].reshape(d["y"].shape), rtol=1e-5, atol=1e-5)
        assert base.output_kind(m) == ("prob", False)
    p = d["y"][:, 0]  # the sigmoid model: predicted class 1 exactly where p > 0.5
    assert 0 < (p > 0.5).sum() < len(p)
    both = np.asarray(jaxsal.saliency(m, d["x"], [0, 1], reduce=None))
    top1 = np.asarray(jaxsal.saliency(m, d["x"], reduce=None))
    np.testing.assert_allclose(top1, both[np.arange(len(p)), (p > 0.5).astype(int)],
                               rtol=1e-6)


def _tf_keras_config(name):
    """The architecture of the tf_keras 2.21 fixture ``name`` (tests/fixtures/keras2), to
    extend with ``TFOpLambda`` layers after its activation."""
    import h5py

    with h5py.File(KERAS2 / f"{name}.h5", "r") as f:
        return json.loads(f.attrs["model_config"])


def _tf_op(cfg, name, function, source, /, **kwargs):
    """Append a tf.keras ``TFOpLambda`` layer ``name`` calling ``tf.<function>`` on
    ``source`` (``[layer, node, tensor]``, or a list of them: ``tf.concat([a, b])``) with
    ``kwargs`` as tf.keras 2 records them (a tensor: its ``[layer, node, tensor]``; with each
    tensor of a list); its output tensor ``[name, 0, 0]``."""
    cls = "SlicingOpLambda" if function == "__operators__.getitem" else "TFOpLambda"
    node = [[*t, kwargs] for t in source] if isinstance(source[0], list) else [*source, kwargs]
    cfg["config"]["layers"].append({
        "class_name": cls, "name": name, "inbound_nodes": [node],
        "config": {"name": name, "trainable": True, "dtype": "float32",
                   "function": function}})
    return [name, 0, 0]


def _tf_moves(cfg, p, ids):
    """``p`` (N, 8) through the value-moving tf functions tf.keras records as TFOpLambda and
    SlicingOpLambda layers, ids (N, 2, 1) int32 indices given as an input; and the same in
    NumPy (``moves(p, ids)``)."""
    t = _tf_op(cfg, "split", "split", p, num_or_size_splits=[2, 6], axis=-1)[:2] + [1]
    n = _tf_op(cfg, "shape", "compat.v1.shape", t)  # tf.shape(t)[0]: reads no values
    n = _tf_op(cfg, "batch", "__operators__.getitem", n, slice_spec=0)
    t = _tf_op(cfg, "reshape", "reshape", t, shape=[n, 2, 3])
    t = _tf_op(cfg, "reverse", "reverse", t, axis=[2], name=None)
    t = _tf_op(cfg, "gather", "compat.v1.gather", t, indices=[2, 0, 0], validate_indices=None,
               name=None, axis=2, batch_dims=0)
    t = _tf_op(cfg, "tile", "tile", t, multiples=[1, 1, 2], name=None)
    t = _tf_op(cfg, "roll", "roll", t, shift=1, axis=2)
    t = _tf_op(cfg, "slice", "slice", t, begin=[0, 0, 1], size=[-1, 2, 4])
    t = _tf_op(cfg, "strided", "strided_slice", t, begin=[0, 0, 0], end=[0, 2, 4],
               strides=[1, 1, 2], begin_mask=1, end_mask=1)  # (N, 2, 2)
    t = _tf_op(cfg, "getitem", "__operators__.getitem", t,
               slice_spec=[{"start": None, "stop": None, "step": None},
                           {"start": None, "stop": None, "step": -1}])
    t = _tf_op(cfg, "cast", "cast", t, dtype="float32")
    t = _tf_op(cfg, "stop", "stop_gradient", t)
    t = _tf_op(cfg, "gather_nd", "compat.v1.gather_nd", t, indices=ids, name=None,
               batch_dims=1)
    t = _tf_op(cfg, "unstack", "unstack", t, axis=1)[:2] + [1]  # (N, 2)
    t = _tf_op(cfg, "expand_dims", "expand_dims", t, axis=-1)
    t = _tf_op(cfg, "repeat", "repeat", t, repeats=3, axis=2)
    t = _tf_op(cfg, "adjoint", "linalg.adjoint", t)  # (N, 3, 2)
    t = _tf_op(cfg, "ensure_shape", "ensure_shape", t, shape=[None, 3, 2])
    t = _tf_op(cfg, "broadcast_to", "broadcast_to", t, shape=[n, 3, 2], name=None)
    t = _tf_op(cfg, "fftshift", "signal.fftshift", t, axes=2)
    t = _tf_op(cfg, "flatten", "keras.backend.batch_flatten", t)  # (N, 6)
    t = _tf_op(cfg, "convert", "convert_to_tensor", t, dtype="float32")
    t = _tf_op(cfg, "identity", "identity", t)
    t = _tf_op(cfg, "image", "reshape", t, shape=[-1, 1, 6, 1])
    t = _tf_op(cfg, "resize", "image.resize", t, size=[2, 6], method="nearest")
    t = _tf_op(cfg, "resize_nn", "compat.v1.image.resize_nearest_neighbor", t, size=[2, 3])
    t = _tf_op(cfg, "resize_v1", "compat.v1.image.resize_images", t, size=[4, 3], method=1)
    t = _tf_op(cfg, "patches", "image.extract_patches", t, sizes=[1, 2, 2, 1],
               strides=[1, 2, 1, 1], rates=[1, 1, 1, 1], padding="VALID")  # (N, 2, 2, 4)
    t = _tf_op(cfg, "to_batch", "space_to_batch_nd", t, block_shape=[2], paddings=[[0, 0]])
    t = _tf_op(cfg, "to_space", "compat.v1.batch_to_space_nd", t, block_shape=[2],
               crops=[[0, 0]])
    t = _tf_op(cfg, "frame", "signal.frame", t, frame_length=3, frame_step=1)
    t = _tf_op(cfg, "identity_n", "identity_n", [ids, t])[:2] + [1]
    t = _tf_op(cfg, "concat", "concat", [t], axis=-1)  # merges of one tensor
    t = _tf_op(cfg, "stack", "stack", [t], axis=1)
    t = _tf_op(cfg, "add_n", "math.add_n", [t])
    t = _tf_op(cfg, "flatten_frames", "keras.backend.batch_flatten", t)  # (N, 24)

    def moves(v, i):
        v = v[:, 2:].reshape(-1, 2, 3)[:, :, ::-1][:, :, [2, 0, 0]]
        v = np.roll(np.tile(v, (1, 1, 2)), 1, axis=2)[:, :, 1:5][:, :, ::2][:, ::-1]
        v = v[np.arange(len(v))[:, None], i[:, :, 0]][:, 1]  # gather_nd by i, unstack [1]
        v = np.repeat(v[:, :, None], 3, axis=2).transpose(0, 2, 1)
        v = np.fft.fftshift(v, axes=2).reshape(len(v), 1, 6)
        v = v[:, [0, 0]][:, :, [0, 2, 4]][:, [0, 0, 1, 1]]  # the nearest resizes: (N, 4, 3)
        v = np.stack([v[:, a:a + 3:2, b:b + 2] for a in range(2) for b in range(2)], -1)
        return np.stack([v[..., f:f + 3] for f in range(2)], -2).reshape(len(v), 24)

    return t, moves


def test_logits_head_looks_through_tf_keras_value_moving_functions():
    """tf.keras files (TFOpLambda / SlicingOpLambda layers) whose softmax output is split,
    reshaped by its own tf.shape, reversed, gathered (by constant indices and by indices
    given as an input), tiled, rolled, sliced, cast, unstacked, repeated, transposed,
    broadcast, flattened...: the logits head gives the pre-softmax values moved the same way
    (the probabilities were returned); also nearest resizes, patches and frames without
    padding, space_to_batch_nd and back, identity_n, tf.concat/stack/add_n of one tensor;
    Graph.position_source follows the same values. With indices computed from the
    probabilities (tf.argsort) the head is refused; a sigmoid behind tf.gather holds
    probabilities."""
    from jaxsal._src import base

    d = np.load(KERAS2 / "tfop_softmax_tfkeras2.expected.npz")
    cfg = _tf_keras_config("tfop_softmax_tfkeras2")
    cfg["config"]["layers"].append({
        "class_name": "InputLayer", "name": "ids", "inbound_nodes": [],
        "config": {"batch_input_shape": [None, 2, 1], "dtype": "int32", "name": "ids"}})
    out, moves = _tf_moves(cfg, ["tf.nn.softmax", 0, 0], ["ids", 0, 0])
    cfg["config"]["input_layers"].append(["ids", 0, 0])
    cfg["config"]["output_layers"] = [out]
    ids = np.array([[[1], [0]], [[0], [0]], [[1], [1]]], np.int32)
    z = d["act__z"]  # TF's pre-softmax values
    probs = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    m = load_keras(KERAS2 / "tfop_softmax_tfkeras2.h5", config=cfg)
    np.testing.assert_allclose(np.asarray(m([d["x"], ids])), moves(probs, ids),
                               rtol=1e-5, atol=1e-6)
    want = moves(z, ids)
    assert np.abs(want - moves(probs, ids)).max() > 0.1  # the test can fail
    np.testing.assert_allclose(np.asarray(m.with_head("logits")([d["x"], ids])), want,
                               rtol=1e-5, atol=1e-5)
    assert m.graph.position_source(m.graph.outputs[0])[0].layer == "z"

    cfg = _tf_keras_config("tfop_softmax_tfkeras2")  # indices that read the probabilities
    order = _tf_op(cfg, "argsort", "argsort", ["tf.nn.softmax", 0, 0], axis=-1)
    cfg["config"]["output_layers"] = [_tf_op(
        cfg, "gather", "compat.v1.gather", ["tf.nn.softmax", 0, 0], indices=order,
        validate_indices=None, name=None, axis=1, batch_dims=1)]
    with pytest.raises(ValueError, match="cannot remove the activation.*'argsort'"):
        load_keras(KERAS2 / "tfop_softmax_tfkeras2.h5", config=cfg, head="logits")

    cfg = _tf_keras_config("tfop_sigmoid_tfkeras2")  # Dense(1) -> sigmoid -> Reshape((1,))
    cfg["config"]["output_layers"] = [_tf_op(
        cfg, "gather", "compat.v1.gather", ["reshape", 0, 0], indices=[0],
        validate_indices=None, name=None, axis=1, batch_dims=0)]
    m = load_keras(KERAS2 / "tfop_sigmoid_tfkeras2.h5", config=cfg)
    assert base.output_kind(m) == ("prob", False)


def test_tf_keras_pooled_probabilities_follow_the_keras_3_rules():
    """tf.math.reduce_mean of a one-unit sigmoid's probabilities is a probability (as
    keras.ops.mean's: it was read as a logit); tf.math.reduce_logsumexp of softmax
    probabilities has no logits (as keras.ops.logsumexp's: the probabilities were returned),
    nor have tf.concat, tf.stack, +, tf.math.add_n, tf.math.multiply, tf.math.maximum of
    them and other values (as the merge layers': the probabilities were returned); the
    maximum of probabilities holds probabilities."""
    from jaxsal._src import base

    cfg = _tf_keras_config("tfop_sigmoid_tfkeras2")  # Dense(1) -> sigmoid -> Reshape((1,))
    cfg["config"]["output_layers"] = [_tf_op(cfg, "mean", "math.reduce_mean", ["reshape", 0, 0],
                                             axis=-1, keepdims=True)]
    m = load_keras(KERAS2 / "tfop_sigmoid_tfkeras2.h5", config=cfg)
    assert base.output_kind(m) == ("prob", False)
    cfg = _tf_keras_config("tfop_softmax_tfkeras2")
    cfg["config"]["output_layers"] = [_tf_op(cfg, "lse", "math.reduce_logsumexp",
                                             ["tf.nn.softmax", 0, 0], axis=-1)]
    m = load_keras(KERAS2 / "tfop_softmax_tfkeras2.h5", config=cfg)
    with pytest.raises(ValueError, match="pools the probabilities of \\['tf.nn.softmax'\\]"):
        m.with_head("logits")

    cfg, p, z = _tf_keras_config("tfop_softmax_tfkeras2"), ["tf.nn.softmax", 0, 0], ["z", 0, 0]
    cfg["config"]["output_layers"] = [
        _tf_op(cfg, "concat", "concat", [p, z], axis=-1, name="concat"),
        _tf_op(cfg, "stack", "stack", [p, p], axis=1),
        _tf_op(cfg, "add", "__operators__.add", z, y=p, name=None),
        _tf_op(cfg, "add_n", "math.add_n", [p, p]),
        _tf_op(cfg, "multiply", "math.multiply", p, y=p, name=None),
        _tf_op(cfg, "maximum", "math.maximum", p, y=p, name=None)]
    m = load_keras(KERAS2 / "tfop_softmax_tfkeras2.h5", config=cfg)
    for i, fn in enumerate(["concat", "stack", "__operators__.add", "math.add_n",
                            "math.multiply", "math.maximum"]):
        with pytest.raises(ValueError, match=f"\\(tf.{fn}\\): it merges the probabilities of "
                           "\\['tf.nn.softmax'"):
            m.with_output(i).with_head("logits")
    assert base.output_kind(m.with_output(5)) == ("prob", False)


def test_tf_keras_softmax_over_an_axis_of_one_value_is_refused():
    """tf.nn.softmax(tf.reshape(z, [-1, 1, 8]), axis=1) is 1.0 for every input: its maps
    were all 0 (the axis, a call argument of the TFOpLambda, was not read, and the output has
    8 values). Refused now, as a Softmax layer over that axis is; over axis=-1 it is not."""
    import jaxsal

    x = np.random.default_rng(0).normal(size=(2, 6)).astype(np.float32)
    for axis, constant in ((1, True), (-1, False)):
        cfg = _tf_keras_config("tfop_softmax_tfkeras2")
        cfg["config"]["layers"] = cfg["config"]["layers"][:2]  # (input, Dense z)
        r = _tf_op(cfg, "r", "reshape", ["z", 0, 0], shape=[-1, 1, 8])
        cfg["config"]["output_layers"] = [_tf_op(cfg, "sm", "nn.softmax", r, axis=axis)]
        m = load_keras(KERAS2 / "tfop_softmax_tfkeras2.h5", config=cfg)
        if constant:
            with pytest.raises(ValueError, match="softmax over an axis of one value"):
                jaxsal.saliency(m, x, lambda out: out[:, 0, 0])
        else:
            assert np.abs(np.asarray(jaxsal.saliency(m, x, lambda out: out[:, 0, 0]))).max() > 0


def test_logits_refusal_follows_the_tensors_between_activation_and_output(tmp_path):
    """A Reshape of the softmax that another output reads changes too when the softmax is
    removed: refused for both outputs together, each output alone has its logits."""
    inp = keras.Input((6,))
    probs = layers.Dense(3, activation="softmax", name="p")(inp)
    moved = layers.Reshape((3,), name="pr")(probs)
    model = keras.Model(inp, [moved, layers.Dense(2, name="q")(moved)])
    x = np.random.default_rng(0).normal(size=(2, 6)).astype(np.float32)
    saved = [np.asarray(a) for a in model(x)]
    m = load_keras(save_keras_and_h5(model, tmp_path, "chain")[".keras"], head="logits")
    with pytest.raises(ValueError, match="'p' \\(it reaches the output through \\['pr'\\]\\)"):
        m(x)
    np.testing.assert_allclose(np.asarray(m.with_output("q")(x)), saved[1], rtol=1e-5,
                               atol=1e-6)
    z = np.asarray(m.with_output("pr")(x))
    np.testing.assert_allclose(np.exp(z) / np.exp(z).sum(-1, keepdims=True), saved[0],
                               rtol=1e-5, atol=1e-6)


def _ensemble(kind):
    inp = keras.Input((3, 2))
    if kind == "average_reshape":
        a, b = (layers.Dense(4, activation="softmax")(inp) for _ in range(2))
        return keras.Model(inp, layers.Reshape((12,))(layers.Average()([a, b])))
    if kind == "nested_members":
        members = []
        for i in range(2):
            sub_in = keras.Input((3, 2))
            members.append(keras.Model(sub_in, layers.Dense(4, activation="softmax")(sub_in),
                                       name=f"member{i}")(inp))
        return keras.Model(inp, layers.Average()(members))
    if kind == "ops_merges":  # the operations merging tensors as the merge layers do
        a, b = (layers.Dense(4, activation="softmax")(inp) for _ in range(2))
        ops, z = keras.ops, layers.Dense(4)(inp)
        return keras.Model(inp, [ops.concatenate([a, b]), ops.stack([a, z], axis=1), a + b,
                                 ops.subtract(z, b), ops.multiply(a, b), ops.maximum(a, b),
                                 ops.minimum(a, b), ops.append(a, b), ops.hstack([a, b]),
                                 ops.vstack([z, b]), ops.dstack([a, z]), 2.0 * a])
    pooled = layers.GlobalAveragePooling1D()(layers.Dense(4, activation="softmax")(inp))
    return keras.Model(inp, layers.Flatten()(layers.Reshape((4, 1))(pooled)))


@pytest.mark.parametrize("kind", ["average_reshape", "nested_members", "pooled_flatten",
                                  "ops_merges"])
def test_merged_probabilities_behind_moves_or_nested_are_refused(kind, tmp_path):
    """Also where keras.ops.concatenate/stack/hstack/vstack/dstack/add/subtract/multiply/
    maximum/minimum/append merge probabilities (with probabilities, or other values):
    refused as the merge layers are (the probabilities were returned); ``2 * p`` merges
    nothing (returned as saved); a maximum of probabilities holds probabilities, as a
    ``Maximum`` layer's."""
    from jaxsal._src import base

    model = _ensemble(kind)
    for path in save_keras_and_h5(model, tmp_path, kind).values():
        if kind != "ops_merges":
            with pytest.raises(ValueError, match="(merges|pools) the probabilities"):
                load_keras(path, head="logits")
            continue
        m = load_keras(path)
        for i in range(len(model.outputs) - 1):
            with pytest.raises(ValueError, match="cannot undo.*: it merges the probabilities"):
                m.with_output(i).with_head("logits")
        m.with_output(len(model.outputs) - 1).with_head("logits")
        assert base.output_kind(m.with_output(5)) == ("prob", False)


def test_head_before_output_selection_on_a_model_with_an_unloggable_output(tmp_path):
    """load_keras(head="logits").with_output("r") (the CLI's --head/--output order) works
    where another output, an ensemble mean, has no logits."""
    inp = keras.Input((4,))
    avg = layers.Average(name="avg")([layers.Dense(3, activation="softmax")(inp)
                                      for _ in range(2)])
    model = keras.Model(inp, [avg, layers.Dense(2, name="r")(inp)])
    x = np.ones((2, 4), np.float32)
    m = load_keras(save_keras_and_h5(model, tmp_path, "two")[".keras"], head="logits")
    np.testing.assert_allclose(np.asarray(m.with_output("r")(x)), np.asarray(model(x)[1]),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="merges the probabilities"):
        m(x)


def test_an_ensemble_mean_of_sigmoids_holds_probabilities(tmp_path):
    from jaxsal._src import base

    inp = keras.Input((4,))
    members = [layers.Dense(1, activation="sigmoid")(inp) for _ in range(2)]
    model = keras.Model(inp, layers.Average()(members))
    m = load_keras(save_keras_and_h5(model, tmp_path, "ens")[".keras"])
    assert base.output_kind(m) == ("prob", False)


def test_logits_of_a_masked_softmax_keep_its_mask(tmp_path):
    """A masked output ``Softmax`` under ``logits``: Keras's pre-softmax values, the logits
    where the mask is on and Keras's additive -1e9 where it is off, with no gradient there
    (the README's Heads section)."""
    import jax
    import jax.numpy as jnp

    inp, keep = keras.Input((5,)), keras.Input((5,), dtype="bool")
    dense = layers.Dense(5)
    model = keras.Model([inp, keep], layers.Softmax()(dense(inp), mask=keep))
    x = np.random.default_rng(0).normal(size=(2, 5)).astype(np.float32)
    mask = np.array([[1, 1, 0, 1, 0], [1, 0, 1, 1, 1]], bool)
    for path in save_keras_and_h5(model, tmp_path, "masked").values():
        m = load_keras(path)
        np.testing.assert_allclose(np.asarray(m([x, mask])), np.asarray(model([x, mask])),
                                   rtol=1e-5, atol=1e-7)
        lg = m.with_head("logits")
        z = np.asarray(lg([x, mask]))
        np.testing.assert_allclose(z[mask], _dense_z(x, dense)[mask], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(z[~mask], -1e9, rtol=1e-6)
        grad = jax.grad(lambda a: lg([a, jnp.asarray(mask)])[0, 2])(jnp.asarray(x))
        np.testing.assert_array_equal(np.asarray(grad), 0.0)


@pytest.mark.parametrize("version", [None, "3.12.4", "3.9.2", "2.21.0"])
def test_a_numeric_softmax_mask_follows_the_keras_version(tmp_path, version):
    """A ``Softmax`` layer's float mask: Keras 3.13 and later (the installed Keras, ``None``)
    keep the entries whose mask is ``> 0.5`` and zero the others after the softmax (the
    importer kept every nonzero entry: 0.3 counted as on). Keras 3.10-3.12 add
    ``(1 - mask) * -1e9`` and multiply the probabilities by the mask; Keras 3.0-3.9 only add
    it (a fully masked row stays a softmax, uniform here). The references of the older
    releases are those formulas (keras/src/layers/activations/softmax.py at v3.9.2, v3.12.4),
    on the same file with its recorded version changed. "2.21.0": tf-keras 2.21's
    ``Softmax(robust_masking=True)`` (set in the config; tf_keras/layers/activation/softmax.py
    at v2.21.0): the entries ``> 0.5`` kept, the others -1e9, nothing zeroed."""
    inp, keep = keras.Input((4,)), keras.Input((4,))
    model = keras.Model([inp, keep], layers.Softmax()(inp, mask=keep))
    x = np.array([[0.5, -1.0, 2.0, 0.25], [1.0, 2.0, 3.0, 4.0], [0.3, 0.1, -0.2, 0.0]],
                 np.float32)
    mask = np.array([[1, 1, 0.3, 0], [1, 0, 0.7, 1], [0, 0, 0, 0]], np.float32)
    paths = save_keras_and_h5(model, tmp_path, "softmask")
    if version is None:
        ref = np.asarray(model.predict([x, mask], verbose=0))
        assert ref[0, 2] == 0.0 and ref[1, 2] > 0.1 and not ref[2].any()  # Keras 3.15
    else:
        robust = version.startswith("2.")
        z = (np.where(mask > 0.5, x, np.float32(-1e9)) if robust
             else x + (1.0 - mask) * np.float32(-1e9))
        e = np.exp(z - z.max(-1, keepdims=True))
        ref = e / e.sum(-1, keepdims=True)
        ref = ref * mask if version.startswith("3.12") else ref
        relabel_h5(paths[".h5"], version, ("Softmax", "robust_masking") if robust else None)
        paths = {".h5": paths[".h5"]}
    for path in paths.values():
        np.testing.assert_allclose(np.asarray(load_keras(path)([x, mask])), ref, rtol=1e-6,
                                   atol=1e-7)


def test_predicted_label_of_a_multi_label_model_under_each_head(tmp_path):
    """Several sigmoid units: ``targets=None`` picks the largest score of the head's
    output, the most likely label under ``sigmoid`` / ``logits`` and the most confidently
    absent one under ``sigmoid_complement`` (the README's "Heads and binary models")."""
    import jaxsal

    inp = keras.Input((6,))
    model = keras.Model(inp, layers.Dense(4, activation="sigmoid")(inp))
    x = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)
    p = np.asarray(model(x))
    assert not np.array_equal(p.argmax(-1), (1 - p).argmax(-1))  # the test can fail
    m = load_keras(save_keras_and_h5(model, tmp_path, "multi_label")[".keras"])
    for head, picked in (("sigmoid", p.argmax(-1)), ("logits", p.argmax(-1)),
                         ("sigmoid_complement", (1 - p).argmax(-1))):
        got = jaxsal.saliency(m, x, head=head, reduce=None)
        want = jaxsal.saliency(m, x, picked[:, None], head=head, reduce=None)[:, 0]
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


def _nested_two_outputs(second_reads_probs):
    """A nested model with outputs [Dense(3, softmax), second], its second output read by an
    outer Dense: second is a linear Dense of the input, or of the probabilities."""
    inner_in = keras.Input((6,))
    probs = layers.Dense(3, activation="softmax", name="cls")(inner_in)
    second = layers.Dense(2, name="second")(probs if second_reads_probs else inner_in)
    sub = keras.Model(inner_in, [probs, second], name="sub")
    inp = keras.Input((6,))
    cls, other = sub(inp)
    return keras.Model(inp, [cls, layers.Dense(2, name="outer")(other)]), sub


def test_logits_of_one_output_of_a_nested_model_leave_its_other_outputs(tmp_path):
    """Removing the softmax behind a nested model's first output changes none of its other
    outputs that do not read it: the outer Dense reading the second output keeps its values
    (it was refused: 'its output also feeds other layers (['outer'])')."""
    keras.utils.set_random_seed(0)
    model, sub = _nested_two_outputs(second_reads_probs=False)
    x = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)
    _, outer = model.predict(x, verbose=0)
    z = _dense_z(x, sub.get_layer("cls"))
    m = load_keras(save_keras_and_h5(model, tmp_path, "nested_two")[".keras"])
    logits = m.with_head("logits")(x)
    np.testing.assert_allclose(np.asarray(logits[0]), z, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(logits[1]), outer, rtol=1e-5, atol=1e-5)
    # where the second output reads the probabilities, stripping them would change it
    dep, _ = _nested_two_outputs(second_reads_probs=True)
    m = load_keras(save_keras_and_h5(dep, tmp_path, "nested_dep")[".keras"])
    with pytest.raises(ValueError, match=r"cannot remove the activation of layer 'sub'.*"
                                         r"\['outer'\]"):
        m.with_head("logits")(x)


def test_softmax_head_on_one_unit_is_refused_when_the_model_is_made(tmp_path):
    """head="softmax" on a one-unit output is constant (1.0), its gradients zero: README says
    it is rejected, but load_keras(head="softmax") and with_head("softmax") accepted it
    (m(x) gave 1.0; only jaxsal's methods refused it when they ran). Of a model of several
    outputs, the one-unit output is refused when it is selected."""
    inp = keras.Input((4,))
    binary = keras.Model(inp, layers.Dense(1, activation="sigmoid")(inp))
    binary.save(tmp_path / "binary.keras")
    with pytest.raises(ValueError, match="head='softmax' on a one-unit output is constant"):
        load_keras(tmp_path / "binary.keras", head="softmax")
    m = load_keras(tmp_path / "binary.keras")
    with pytest.raises(ValueError, match="use head='sigmoid', 'sigmoid_complement' or"):
        m.with_head("softmax")
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    np.testing.assert_allclose(m.with_head("sigmoid")(x), binary(x), rtol=1e-6)
    both = keras.Model(inp, [layers.Dense(1, activation="sigmoid")(inp),
                             layers.Dense(3, activation="softmax")(inp)])
    both.save(tmp_path / "both.keras")
    mm = load_keras(tmp_path / "both.keras", head="softmax")  # several outputs: per selection
    np.testing.assert_allclose(mm.with_output(1)(x), both(x)[1], rtol=1e-5)
    with pytest.raises(ValueError, match="one-unit output is constant"):
        mm.with_output(0)
