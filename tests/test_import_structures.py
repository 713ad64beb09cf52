"""Model structures and files that used to load with wrong numbers or fail unclearly, each
compared with Keras 3 itself: dict inputs and outputs, a softmax output that feeds another
output (the logits head), ensembles, ``Softmax(axis=1)`` outputs, weights of another
architecture, bfloat16 weights, empty batches and the layout of BatchNormalization models."""

import jax
import numpy as np
import pytest

import keras  # noqa: E402  (tests/conftest.py picks the backend)
from keras import layers  # noqa: E402

from import_helpers import perturb_keras, save_keras_and_h5  # noqa: E402
from model_import import KerasImportError, load_keras  # noqa: E402

EXTS = (".keras", ".h5")


def _x(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _close(a, b, tol=1e-5):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=tol * max(1.0, float(np.abs(b).max())), rtol=0)


@pytest.fixture(scope="module")
def dict_io(tmp_path_factory):
    """Inputs given as {"b": ..., "a": ...} (config order b, a; Keras's order a, b) and
    outputs {"reg": ..., "cls": ...}."""
    ib, ia = keras.Input((3,), name="b"), keras.Input((5,), name="a")
    h = layers.Dense(8, activation="relu", name="h")(layers.Concatenate(name="cat")([ib, ia]))
    out = {"reg": layers.Dense(1, name="reg_layer")(h),
           "cls": layers.Dense(3, activation="softmax", name="cls_layer")(h)}
    model = keras.Model({"b": ib, "a": ia}, out)
    perturb_keras(model, 1)
    return model, save_keras_and_h5(model, tmp_path_factory.mktemp("dict_io"), "dict_io")


@pytest.mark.parametrize("ext", EXTS)
def test_dict_inputs_and_outputs_follow_keras_order(dict_io, ext):
    model, paths = dict_io
    xa, xb = _x(4, 5), _x(4, 3, seed=1)
    ref = model({"a": xa, "b": xb})
    m = load_keras(paths[ext])
    assert m.input_names == ["a", "b"]  # Keras's model.inputs order, not the config's
    assert m.output_names == ["cls", "reg"]  # sorted keys, as Keras flattens them
    for x in ([xa, xb], {"a": xa, "b": xb}):
        ys = m(x)
        assert isinstance(ys, list) and len(ys) == 2
        _close(ys[0], ref["cls"])
        _close(ys[1], ref["reg"])
    _close(m.with_output("reg")(x), ref["reg"])
    with pytest.raises(ValueError, match=r"expected the inputs \['a', 'b'\].*keys \['a', 'c'\]"):
        m({"a": xa, "c": xb})


@pytest.fixture(scope="module")
def probs_feed_score(tmp_path_factory):
    inp = keras.Input((6,))
    dense = layers.Dense(4, activation="softmax", name="probs")
    probs = dense(inp)
    score = layers.Dense(1, name="score")(probs)
    model = keras.Model(inp, [probs, score])
    perturb_keras(model, 2)
    return model, dense, save_keras_and_h5(model, tmp_path_factory.mktemp("pfs"), "pfs")


@pytest.mark.parametrize("ext", EXTS)
def test_logits_head_keeps_activations_other_selected_outputs_need(probs_feed_score, ext):
    model, dense, paths = probs_feed_score
    x = _x(5, 6)
    probs, score = model(x)
    kernel, bias = (np.asarray(w) for w in dense.get_weights())
    m = load_keras(paths[ext])
    # both outputs: the softmax also feeds `score`, which needs the probabilities
    with pytest.raises(ValueError, match="'probs'.*feeds other layers.*'score'.*with_output"):
        m.with_head("logits")(x)
    # one output: only its own head is removed
    _close(m.with_output("score").with_head("logits")(x), score)
    _close(m.with_output("probs").with_head("logits")(x), x @ kernel + bias)
    _close(m.with_output(1).with_head("saved")(x), score)


@pytest.mark.parametrize("ext", EXTS)
def test_logits_head_refuses_an_ensemble_of_probabilities(tmp_path, ext):
    inp = keras.Input((6,))
    a = layers.Dense(3, activation="softmax", name="member_a")(inp)
    b = layers.Dense(3, activation="softmax", name="member_b")(inp)
    model = keras.Model(inp, layers.Average(name="ensemble")([a, b]))
    m = load_keras(save_keras_and_h5(model, tmp_path, "ens")[ext])
    x = _x(2, 6)
    _close(m(x), model(x))
    with pytest.raises(ValueError, match="'ensemble'.*probabilities of.*member_a"):
        m.with_head("logits")(x)


@pytest.mark.parametrize("ext", EXTS)
def test_softmax_head_uses_the_models_softmax_axis(tmp_path, ext):
    inp = keras.Input((4, 5))  # channels-first classes: softmax over axis 1
    model = keras.Model(inp, layers.Softmax(axis=1, name="sm")(layers.Dense(5, name="d")(inp)))
    perturb_keras(model, 3)
    m = load_keras(save_keras_and_h5(model, tmp_path, "sm_axis")[ext])
    x = _x(3, 4, 5)
    _close(m.with_head("softmax")(x), model(x))
    _close(m(x), model(x))


def test_weights_of_another_architecture_are_refused(tmp_path):
    def build(k):
        inp = keras.Input((8, 8, 3))
        return keras.Model(inp, layers.Dense(2, name="d")(layers.Flatten()(
            layers.Conv2D(4, k, name="c")(inp))))

    big, small = build(5), build(3)
    big.save_weights(tmp_path / "big.weights.h5")
    with pytest.raises(KerasImportError,
                       match=r"'c' \(Conv2D\).*\(3, 3, '\?', 4\).*\(5, 5, 3, 4\)"):
        load_keras(tmp_path / "big.weights.h5", config=small.to_json())


@pytest.mark.parametrize("ext", EXTS)
def test_bfloat16_weights_are_widened_exactly(tmp_path, ext):
    inp = keras.Input((6,))
    dense = layers.Dense(4, dtype="bfloat16", name="d16")
    model = keras.Model(inp, layers.Dense(2, name="d32")(dense(inp)))
    perturb_keras(model, 4)
    path = save_keras_and_h5(model, tmp_path, "bf16")[ext]
    m = load_keras(path)
    kernel = np.asarray(dense.kernel.numpy()).astype(np.float32)  # bfloat16 values
    np.testing.assert_array_equal(np.asarray(m.params["d16"]["kernel"]), kernel)
    x = _x(3, 6)
    # jaxsal computes in float32: equal to the float32 model with the same (bfloat16) weights
    d32 = model.get_layer("d32")
    w, b = (np.asarray(v, np.float32) for v in d32.get_weights())
    ref = (x @ kernel + np.asarray(dense.bias.numpy(), np.float32)) @ w + b
    _close(m(x), ref)


@pytest.mark.parametrize("ext", EXTS)
def test_empty_batch(tmp_path, ext):
    inp = keras.Input((6, 6, 2))
    h = layers.MaxPooling2D(2)(layers.Conv2D(2, 1)(inp))
    h = layers.Reshape((-1, 2))(h)
    model = keras.Model(inp, layers.Dense(3)(layers.Flatten()(h)))
    m = load_keras(save_keras_and_h5(model, tmp_path, "empty")[ext])
    assert np.asarray(m(np.zeros((0, 6, 6, 2), np.float32))).shape == (0, 3)


def test_batch_normalization_axis_1_is_a_layout_only_with_spatial_axes(tmp_path):
    inp = keras.Input((6,))
    tab = keras.Model(inp, layers.Dense(2)(layers.BatchNormalization(axis=1)(inp)))
    m = load_keras(save_keras_and_h5(tab, tmp_path, "tab")[".keras"])
    assert m.data_format == "channels_last"
    # (N, 5, 3) normalized over axis 1, then a channels-last Conv1D: the convolution decides
    inp = keras.Input((5, 3))
    seq = keras.Model(inp, layers.Conv1D(2, 3, name="conv")(layers.BatchNormalization(axis=1)(inp)))
    m = load_keras(save_keras_and_h5(seq, tmp_path, "seq")[".keras"])
    assert m.data_format == "channels_last"
    assert m.channels_last().input_shape == (5, 3)
    # a channels-first image model keeps its layout from the BatchNormalization alone
    inp = keras.Input((3, 4, 4))
    img = keras.Model(inp, layers.Flatten()(layers.BatchNormalization(axis=1)(inp)))
    assert load_keras(save_keras_and_h5(img, tmp_path, "img")[".keras"]).data_format == \
        "channels_first"


@pytest.mark.parametrize("ext", EXTS)
def test_output_kind_reads_an_activation_layer_by_its_class(tmp_path, ext):
    # Dense(activation=ReLU(name="sigmoid")): a ReLU, not a sigmoid, although named so
    from jaxsal._src.base import output_kind

    inp = keras.Input((4,))
    relu = keras.Model(inp, layers.Dense(1, activation=layers.ReLU(name="sigmoid"))(inp))
    soft = keras.Model(inp, layers.Dense(3, activation=layers.Softmax(name="s1"))(inp))
    assert output_kind(load_keras(save_keras_and_h5(relu, tmp_path, "r")[ext]))[0] == "logit"
    m = load_keras(save_keras_and_h5(soft, tmp_path, "s")[ext])
    assert output_kind(m)[0] == "prob"
    x = _x(2, 4)
    _close(m(x), soft(x))


@pytest.mark.parametrize("ext", EXTS)
def test_maximum_and_minimum_of_masked_sequences(tmp_path, ext):
    # Keras 3.4+: where an input is masked the running result stands in for it, so the
    # values at masked steps (read here by Flatten and a sequence output) are not max(a, b)
    tok = keras.Input((6,), dtype="int32")
    e = layers.Embedding(10, 4, mask_zero=True)(tok)
    a, b = layers.Dense(4, name="a")(e), layers.Dense(4, name="b")(e)
    m1 = layers.Maximum(name="max")([a, b])
    m2 = layers.Flatten()(layers.Minimum(name="min")([a, b, layers.Dense(4, name="c")(e)]))
    model = keras.Model(tok, [m1, m2])
    perturb_keras(model, 5)
    x = np.array([[3, 5, 7, 2, 0, 0], [1, 4, 9, 0, 0, 0]], dtype=np.int32)
    ref = model(x)
    m = load_keras(save_keras_and_h5(model, tmp_path, "extremum")[ext])
    for y, r in zip(m(x), ref):
        _close(y, r)


@pytest.mark.parametrize("ext", EXTS)
def test_layers_called_by_keyword(tmp_path, ext):
    # `layer(inputs=x)`, `lstm(sequences=x)`, `mha(query=x, value=y)`: Keras takes the first
    # parameter as the main input, and the output carries its mask (read here by the
    # pooling: without it the average would run over the padding)
    tok = keras.Input((6,), dtype="int32")
    e = layers.Embedding(20, 8, mask_zero=True)(tok)
    d = layers.Dense(8)(inputs=e)
    r = layers.LSTM(8, return_sequences=True)(sequences=d)
    a = layers.MultiHeadAttention(2, 4)(query=r, value=d)
    g = layers.GroupQueryAttention(4, 2, 2)(query=a, value=r)
    model = keras.Model(tok, layers.Dense(3)(layers.GlobalAveragePooling1D()(g)))
    perturb_keras(model, 6)
    x = np.array([[3, 5, 7, 0, 0, 0], [1, 4, 9, 11, 12, 0]], dtype=np.int32)
    m = load_keras(save_keras_and_h5(model, tmp_path, "keywords")[ext])
    _close(m(x), model(x))


@pytest.mark.parametrize("ext", EXTS)
def test_logits_head_on_one_output_of_a_nested_multi_output_model(tmp_path, ext):
    # the selection reaches the nested model: only its selected output's head is removed
    i = keras.Input((6,))
    dense = layers.Dense(3, activation="softmax", name="probs")
    probs = dense(i)
    inner = keras.Model(i, [probs, layers.Dense(2, name="o2")(probs)], name="inner")
    j = keras.Input((6,))
    r = inner(j)
    model = keras.Model(j, [r[0], r[1]])
    perturb_keras(model, 6)
    x = _x(4, 6)
    _, o2 = model(x)
    kernel, bias = (np.asarray(w) for w in dense.get_weights())
    m = load_keras(save_keras_and_h5(model, tmp_path, "nested_heads")[ext])
    _close(m.with_output(0).with_head("logits")(x), x @ kernel + bias)
    _close(m.with_output(1).with_head("logits")(x), o2)
    with pytest.raises(ValueError, match="'probs'.*feeds other layers"):
        m.with_head("logits")(x)


def test_token_ids_outside_the_vocabulary_are_refused(tmp_path):
    tok = keras.Input((5,), dtype="int32")
    e = layers.Embedding(20, 4, name="emb")(tok)
    model = keras.Model(tok, layers.Dense(2)(layers.GlobalAveragePooling1D()(e)))
    m = load_keras(save_keras_and_h5(model, tmp_path, "tok")[".keras"])
    ok = np.array([[1, 2, 3, 0, 19]], np.int32)
    _close(m(ok), model(ok))
    import jaxsal

    for bad, shown in (([[1, 2, 25, 0, 0]], "from 0 to 25"), ([[1, -1, 2, 0, 0]], "from -1")):
        bad = np.array(bad, np.int32)
        with pytest.raises(ValueError, match=rf"\[0, 20\) for Embedding 'emb'.*{shown}"):
            m(bad)
        # intermediates gave the out-of-range rows as NaN, without a word
        with pytest.raises(ValueError, match=rf"\[0, 20\) for Embedding 'emb'.*{shown}"):
            m.intermediates(bad, "emb")
        # the saliency at the embedding does not depend on its values: it was finite
        with pytest.raises(ValueError, match=r"token ids must be in \[0, 20\)"):
            jaxsal.saliency(m, bad, 0, layer="emb")
    # traced ids are not checked: out-of-range rows (negative ones too) are NaN
    y = jax.jit(m.apply)(m.params, np.array([[1, -1, 2, 0, 25]], np.int32))
    assert np.isnan(np.asarray(y)).all()


def test_calls_read_big_endian_inputs_and_reuse_their_programs(tmp_path, compiles):
    """``m(x)`` and ``m.intermediates(x, ...)`` of a big-endian array (``'>f4'``: a .npy
    written on a big-endian machine) after a call of the same shape: the compiled program
    read its bytes as native ones, silently (probabilities [0, 1, 0] for [0.08, 0.49,
    0.43]). ``intermediates`` compiled a new program on every call, and so did a variant
    made per call, ``m.with_head("logits")(x)``."""
    inp = keras.Input((4,))
    h = layers.Dense(5, activation="relu", name="h")(inp)
    model = keras.Model(inp, layers.Dense(3, activation="softmax", name="p")(h))
    model.save(tmp_path / "be.keras")
    m = load_keras(tmp_path / "be.keras")
    x = _x(2, 4) * 3
    xb = x.astype(">f4")
    ref, hidden = model(x), keras.Model(inp, h)(x)
    _close(m(x), ref)
    _close(m(xb), ref)
    _close(m.intermediates(x, "h")["h"], hidden)
    _close(m.intermediates(xb, ["h"])["h"], hidden)
    _close(m.apply(m.params, xb), ref)
    logits = m.with_head("logits")(x)
    compiles.n = 0
    for a in (x, xb):
        _close(m(a), ref)
        _close(m.intermediates(a, "h")["h"], hidden)
        _close(m.with_head("logits")(a), logits)
        _close(m.with_params(m.params)(a), ref)
    assert compiles.n == 0


def test_calls_of_a_dict_a_list_and_a_tuple_share_one_program(tmp_path, compiles):
    """``m(x)`` and ``m.intermediates(x, ...)`` jitted the inputs as given, so a dict, a list
    and a tuple of the same arrays (forms ``apply`` takes alike) were three input structures,
    each compiled again; a single-input model's bare array and ``[x]`` too."""
    a, b = keras.Input((3,), name="a"), keras.Input((5,), name="b")
    h = layers.Dense(4, activation="relu", name="h")(layers.Concatenate()([a, b]))
    model = keras.Model([a, b], layers.Dense(2, name="p")(h))
    model.save(tmp_path / "two.keras")
    one = keras.Sequential([keras.Input((3,)), layers.Dense(2, name="d")])
    one.save(tmp_path / "one.keras")
    m, m1 = load_keras(tmp_path / "two.keras"), load_keras(tmp_path / "one.keras")
    xa, xb, x1 = _x(2, 3), _x(2, 5, seed=1), _x(2, 3, seed=2)
    ref, hidden, ref1 = model([xa, xb]), keras.Model([a, b], h)([xa, xb]), one(x1)
    _close(m({"a": xa, "b": xb}), ref)  # compiled here
    _close(m.intermediates({"a": xa, "b": xb}, "h")["h"], hidden)
    _close(m1(x1), ref1)
    compiles.n = 0
    for x in ([xa, xb], (xa, xb), {"b": xb, "a": xa}):
        _close(m(x), ref)
        _close(m.intermediates(x, "h")["h"], hidden)
    for x in ([x1], (x1,)):
        _close(m1(x), ref1)
    assert compiles.n == 0


def test_codes_reaching_a_nested_embedding_through_a_later_split_part(tmp_path):
    """Float-declared ids split in two, ``ops.split(ids, 2)[1]`` read by an Embedding inside a
    nested model: the input takes integer codes. Only the split's first part was followed
    into nested models, so integer ids were refused as unconverted pixels ("expected a
    floating-point input"). Read only that way, float ids are refused as such."""
    t = keras.Input((3,))
    enc = keras.Model(t, layers.Flatten()(layers.Embedding(10, 2, name="emb")(t)), name="enc")
    ids = keras.Input((6,))
    first, second = keras.ops.split(ids, 2, axis=-1)
    model = keras.Model(ids, layers.Dense(2)(layers.Concatenate()([enc(second), first])))
    model.save(tmp_path / "split.keras")
    m = load_keras(tmp_path / "split.keras")
    assert m.graph.takes_codes(0)
    import jaxsal

    x = np.array([[0.5, 0.1, 0.2, 1, 2, 3], [0.3, 0.4, 0.9, 9, 0, 4]], np.float32)
    _close(m(x), model(x))
    maps = jaxsal.saliency(m, x.astype(np.int32), 0, layer="enc/emb")  # integer ids taken
    assert np.asarray(maps).shape == (2, 3)
    # read only through the split by the embedding: the input gradient is zero, refused
    # (the split was taken for a reader of floats, and saliency gave all-zero maps)
    keras.Model(ids, enc(second)).save(tmp_path / "split_only.keras")
    with pytest.raises(TypeError, match="declared float but read only by Embedding 'enc/emb'"):
        jaxsal.saliency(load_keras(tmp_path / "split_only.keras"), x, 0)
    # an encoder of [tokens, features] given the input and a reshape of it: the encoder was
    # looked into for the first of the two tensors only, so its other reader was missed
    # (the Dense: float ids were refused as read only by the embedding; or the embedding:
    # integer ids were refused as pixels), depending on the order
    a, b = keras.Input((3,)), keras.Input((3,))
    two = keras.Model([a, b], layers.Concatenate()([
        layers.Flatten()(layers.Embedding(10, 2, name="emb")(a)), layers.Dense(2)(b)]))
    t = keras.Input((3,))
    # an encoder that also returns its input as it is: the Dense after it reads the ids
    echo = keras.Model(t, [layers.Flatten()(enc(t)), t])
    t3 = keras.Input((3,))
    x3 = x[:, 3:]
    for k, out in enumerate((two([t3, layers.Reshape((3,))(t3)]),
                             two([layers.Reshape((3,))(t3), t3]),
                             layers.Concatenate()(echo(t3)))):
        keras.Model(t3, layers.Dense(2)(out)).save(tmp_path / f"twice{k}.keras")
        m = load_keras(tmp_path / f"twice{k}.keras")
        assert m.graph.takes_codes(0)
        grad = jax.grad(lambda v: m(v)[:, 0].sum())(x3)
        assert np.abs(grad).min() > 0  # (the Dense's path: features, not ids)
        _close(jaxsal.saliency(m, x3, 0), np.abs(grad))


def test_attribution_at_a_layer_with_several_outputs_is_refused(tmp_path):
    tok = keras.Input((5,), dtype="int32")
    e = layers.Embedding(20, 4, name="emb")(tok)
    seq, h, c = layers.LSTM(3, return_sequences=True, return_state=True, name="lstm")(e)
    model = keras.Model(tok, layers.Dense(2)(layers.Concatenate()([h, c])))
    m = load_keras(save_keras_and_h5(model, tmp_path, "tuple")[".keras"])
    import jaxsal

    with pytest.raises(ValueError, match="'lstm' has 3 outputs"):
        jaxsal.saliency(m, np.array([[1, 2, 3, 4, 5]], np.int32), 0, layer="lstm")
