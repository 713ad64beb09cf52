"""Models whose inputs or outputs are nested structures (``Model(a, [d1, [d2, d3]])``, a dict
of lists, ``Model([[a, b]], ...)``, an RNN's ``[seq, [h, c], h2]`` states) take and return
them flattened in ``keras.tree.flatten``'s order, compared with Keras; a nested model built on
a list of inputs and called with a dict reads it by the inputs' names, as Keras does."""

import json

import numpy as np
import pytest

import keras  # noqa: E402  (tests/conftest.py picks the backend)
from keras import layers  # noqa: E402

from import_helpers import relabel_h5, relabel_keras, save_keras_and_h5  # noqa: E402
from model_import import KerasImportError, load_keras  # noqa: E402


def _case(kind):
    """(model, inputs as Keras takes them, inputs flattened as the import takes them)."""
    rng = np.random.default_rng(0)
    xa, xb = (rng.normal(size=(2, 4)).astype(np.float32) for _ in range(2))
    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    if kind == "nested_outputs":
        return keras.Model(a, [layers.Dense(2)(a), [layers.Dense(3)(a), layers.Dense(1)(a)]]), \
            xa, xa
    if kind == "dict_of_lists":
        out = {"q": [layers.Dense(3)(a), layers.Dense(1)(a)], "p": layers.Dense(2)(a)}
        return keras.Model(a, out), xa, xa
    if kind == "nested_inputs":
        return keras.Model([[a, b]], layers.Dense(3)(layers.Subtract()([a, b]))), \
            [[xa, xb]], [xa, xb]
    if kind == "inner_model_nested_inputs":  # a nested model called on [[x, y]]
        ia, ib = keras.Input((4,)), keras.Input((4,))
        inner = keras.Model([[ia, ib]], layers.Subtract()([ia, ib]), name="inner")
        return keras.Model([a, b], layers.Dense(3)(inner([[a, b]]))), [xa, xb], [xa, xb]
    if kind == "one_nested_list_output":  # one top-level entry holding two outputs
        return keras.Model(a, [[layers.Dense(2)(a), layers.Dense(3)(a)]]), xa, xa
    if kind == "one_key_dict_of_list":
        return keras.Model(a, {"k": [layers.Dense(2)(a), layers.Dense(3)(a)]}), xa, xa
    if kind in ("inner_model_nested_list_output", "inner_model_dict_of_list"):
        # the outer model reads the inner one's second output, then its first
        ia = keras.Input((4,))
        p, q = layers.Dense(2, name="p")(ia), layers.Dense(2, name="q")(ia)  # same shape
        nested = kind == "inner_model_nested_list_output"
        inner = keras.Model(ia, [[p, q]] if nested else {"k": [p, q]}, name="inner")
        o = inner(a)[0 if nested else "k"]
        return keras.Model(a, layers.Concatenate()([o[1], o[0]])), xa, xa
    if kind == "inner_model_list_called_with_dict":  # read by the inputs' names, unsorted
        iz, ia = keras.Input((4,), name="zz"), keras.Input((4,), name="aa")
        inner = keras.Model([iz, ia], layers.Subtract()([iz, ia]), name="inner")  # zz - aa
        return keras.Model([a, b], inner({"zz": a, "aa": b})), [xa, xb], [xa, xb]
    if kind in ("inner_model_rank_squeezed", "inner_model_rank_expanded"):
        # Keras drops (adds) a trailing axis of 1 that the inner model's Input lacks (has)
        squeeze = kind == "inner_model_rank_squeezed"
        ia = keras.Input((4,) if squeeze else (4, 1))
        inner = keras.Model(ia, layers.Dense(2)(ia), name="inner")  # (N, 2) or (N, 4, 2)
        return keras.Model(a, inner(layers.Reshape((4, 1))(a) if squeeze else a)), xa, xa
    seq = keras.Input((5, 4))  # an RNN over stacked cells returning its states
    cells = layers.StackedRNNCells([layers.LSTMCell(3), layers.GRUCell(2)])
    x = rng.normal(size=(2, 5, 4)).astype(np.float32)
    return keras.Model(seq, layers.RNN(cells, return_sequences=True, return_state=True)(seq)), \
        x, x


@pytest.mark.parametrize("kind", ["nested_outputs", "dict_of_lists", "nested_inputs",
                                  "inner_model_nested_inputs", "stacked_rnn_states",
                                  "one_nested_list_output", "one_key_dict_of_list",
                                  "inner_model_nested_list_output", "inner_model_dict_of_list",
                                  "inner_model_list_called_with_dict",
                                  "inner_model_rank_squeezed", "inner_model_rank_expanded"])
def test_nested_structures_flatten_as_keras(kind, tmp_path):
    keras.utils.set_random_seed(0)
    model, x_keras, x_flat = _case(kind)
    want = [np.asarray(w) for w in keras.tree.flatten(model(x_keras))]
    for ext, path in save_keras_and_h5(model, tmp_path, kind).items():
        m = load_keras(path)
        got = m(x_flat)
        got = [np.asarray(g) for g in (got if isinstance(got, list) else [got])]
        assert [g.shape for g in got] == [w.shape for w in want], ext
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=ext)


def test_nested_model_called_with_a_dict_lacking_an_input_name_is_refused(tmp_path):
    """Keras 3 refuses to call a model built on inputs [zz, aa] on a dict without "aa" (the
    config here is edited so: Keras would not write it)."""
    keras.utils.set_random_seed(0)
    model, _, _ = _case("inner_model_list_called_with_dict")
    model.save_weights(tmp_path / "m.weights.h5")
    cfg = model.to_json().replace('"aa": {"class_name": "__keras_tensor__"',
                                  '"bb": {"class_name": "__keras_tensor__"')
    assert '"bb"' in cfg
    with pytest.raises(KerasImportError, match=r"takes the inputs \['zz', 'aa'\].*\['aa'\] "
                       "missing"):
        load_keras(tmp_path / "m.weights.h5", config=json.loads(cfg))


@pytest.mark.parametrize("version, sign", [("3.3.0", 1), ("3.5.0", -1), ("3.7.0", 1)])
def test_dict_call_of_a_nested_list_model_follows_the_files_keras_version(version, sign,
                                                                          tmp_path):
    """``inner({"zz": a, "aa": b})`` of ``Model([zz, aa], zz - aa)``: Keras 3.0-3.3 and 3.7+
    take the dict by the inputs' names (``a - b``, Keras 3.15's ``predict``), Keras 3.4-3.6
    by sorted key (``Functional._flatten_to_reference_inputs``/``_standardize_inputs`` are
    ``tree.flatten``: ``b - a``)."""
    keras.utils.set_random_seed(0)
    model, x, _ = _case("inner_model_list_called_with_dict")
    want = sign * np.asarray(model.predict(x, verbose=0))
    paths = save_keras_and_h5(model, tmp_path, "m")
    relabel_keras(paths[".keras"], version)
    relabel_h5(paths[".h5"], version)
    for ext, path in paths.items():
        m = load_keras(path)
        assert m.keras_version == version, ext
        np.testing.assert_allclose(np.asarray(m(x)), want, rtol=1e-5, atol=1e-6, err_msg=ext)


def _masked_case(kind):
    """A mask_zero embedding's output entering a nested model (an LSTM reads the mask) called
    with a dict or a nested list, and token ids with padding."""
    sa, sb = keras.Input((5, 4), name="a"), keras.Input((5, 4), name="b")
    i = keras.Input((5,), dtype="int32")
    e = layers.Embedding(8, 4, mask_zero=True)(i)
    if kind == "one_key_dict":
        inner = keras.Model({"a": sa}, layers.LSTM(3)(sa), name="inner")
        return keras.Model(i, inner({"a": e}))
    lstm = layers.LSTM(3)(layers.Add()([sa, sb]))
    if kind == "dict":
        inner = keras.Model({"a": sa, "b": sb}, lstm, name="inner")
        return keras.Model(i, inner({"a": e, "b": layers.Dense(4)(e)}))
    inner = keras.Model([[sa, sb]], lstm, name="inner")
    return keras.Model(i, inner([[e, layers.Dense(4)(e)]]))


@pytest.mark.parametrize("kind", ["dict", "nested_list", "one_key_dict"])
def test_masks_enter_a_nested_model_called_with_a_structure(kind, tmp_path):
    """The masks were dropped (a dict, a nested list: the LSTM saw the padding) or passed
    as a dict (one input: a crash)."""
    keras.utils.set_random_seed(0)
    model = _masked_case(kind)
    ids = np.array([[1, 2, 0, 0, 0], [3, 1, 4, 2, 0]], dtype=np.int32)
    model.save(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(load_keras(tmp_path / "m.keras")(ids)),
                               np.asarray(model(ids)), rtol=1e-5, atol=1e-6)


def _masked_dict_call_parts():
    """A model ``inner`` built on inputs ``[zz, aa]`` (one LSTM over each), the outer inputs
    ``i`` (ids) and ``j`` (features), ``e``: ``i``'s masked embedding, and their values."""
    keras.utils.set_random_seed(0)
    zz, aa = keras.Input((5, 4), name="zz"), keras.Input((5, 4), name="aa")
    lstm = layers.LSTM(3)
    inner = keras.Model([zz, aa], layers.Concatenate()([lstm(zz), lstm(aa)]), name="inner")
    i, j = keras.Input((5,), dtype="int32"), keras.Input((5, 4))
    e = layers.Embedding(8, 4, mask_zero=True)(i)
    ids = np.array([[1, 2, 0, 0, 0], [3, 1, 4, 2, 0]], dtype=np.int32)
    x = np.random.default_rng(0).normal(size=(2, 5, 4)).astype(np.float32)
    return inner, i, j, e, ids, x


def test_masked_dict_call_that_keras_3_pairs_with_other_masks_is_refused(tmp_path):
    """Keras 3 takes the tensors of ``inner({"zz": e, "aa": x})`` by the inputs' names but
    pairs the masks with them in sorted key order: its result is not the list call's."""
    inner, i, j, e, ids, x = _masked_dict_call_parts()
    by_dict = keras.Model([i, j], inner({"zz": e, "aa": j}))
    by_list = keras.Model([i, j], inner([e, j]))
    assert np.abs(np.asarray(by_dict([ids, x])) - np.asarray(by_list([ids, x]))).max() > 1e-3
    by_dict.save(tmp_path / "m.keras")
    with pytest.raises(KerasImportError, match="pairs their masks with them in sorted key"):
        load_keras(tmp_path / "m.keras")


@pytest.mark.parametrize("version", ["3.3.0", "3.5.0", "3.7.0"])
def test_masked_dict_call_follows_the_files_keras_version(version, tmp_path):
    """``inner({"zz": e, "aa": x})`` of a model built on ``[zz, aa]``, ``e`` masked: Keras
    3.0-3.3 take the tensors and their masks by the inputs' names (the list call
    ``inner([e, x])``), 3.4-3.6 both in sorted key order (``inner([x, e])``), 3.7+ the tensors
    by name and the masks sorted (refused, as for Keras 3.15's own file)."""
    inner, i, j, e, ids, x = _masked_dict_call_parts()
    keras.Model([i, j], inner({"zz": e, "aa": j})).save(tmp_path / "m.keras")
    relabel_keras(tmp_path / "m.keras", version)
    if version == "3.7.0":
        with pytest.raises(KerasImportError, match="pairs their masks with them in sorted"):
            load_keras(tmp_path / "m.keras")
        return
    want = keras.Model([i, j], inner([e, j] if version == "3.3.0" else [j, e]))([ids, x])
    np.testing.assert_allclose(np.asarray(load_keras(tmp_path / "m.keras")([ids, x])),
                               np.asarray(want), rtol=1e-5, atol=1e-6)
