"""Keras 3's CategoryEncoding, Discretization and IntegerLookup against real Keras 3 (NumPy
backend unless ``KERAS_BACKEND`` says otherwise: see conftest.py), saved as ``.keras``, legacy
``.h5`` and ``.weights.h5``: a small tabular model whose encodings are outputs and feed a Dense
head. Every encoding must equal Keras's exactly, dtype included.

Cases: one_hot of a ``(N, 1)`` column (the axis dropped) and of ``(N, 3)`` ids (an axis
added), multi_hot and count (negative ids encode nothing), count with ``count_weights``,
multi_hot of float ids (truncated), an int32 and a mixed_float16 dtype policy; Discretization
of floats (inputs on boundaries, NaN, infinities, a repeated boundary and one that float32
cannot hold), of integers, in every output mode, and of a layer adapted on data (its
boundaries are in the config).

IntegerLookup needs TensorFlow, which this environment lacks: its cases are files written by
Keras 3.15 on TensorFlow with Keras's outputs (``fixtures/keras3_lookup``, see the script
there): default OOV index, a mask token with three floormod OOV indices, a vocabulary that
starts with the special tokens, one_hot/multi_hot/count, padding to ``max_tokens``, and
``num_oov_indices=0``.
"""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

from import_helpers import (keras_outputs, load_saved, perturb_keras, rel_err,  # noqa: E402
                            save_all_formats)
from model_import import UnsupportedLayerError, load_keras  # noqa: E402
from model_import._layers.encoding import digitize, encode  # noqa: E402

N = 6
K = 7  # num_tokens
LOOKUP = Path(__file__).parent / "fixtures" / "keras3_lookup"
BOUNDS = [-1.0, 0.0, 0.7, 0.7, 2.5]  # 0.7 is not a float32: its float32 is below it
CE = layers.CategoryEncoding


def _adapted():
    d = layers.Discretization(num_bins=4, epsilon=0.05, name="disc_adapted")
    # what adapt() does with an array (adapt itself wants TensorFlow for its dataset check)
    d.update_state(np.random.default_rng(5).normal(0.0, 1.0, (200, 4)).astype("float32"))
    d.finalize_state()
    return d


def _model():
    ids = keras.Input((3,), dtype="int32", name="ids")
    col = keras.Input((1,), dtype="int32", name="col")
    fids = keras.Input((4,), name="fids")
    cw = keras.Input((3,), name="cw")
    num = keras.Input((4,), name="num")
    inum = keras.Input((3,), dtype="int32", name="inum")
    outs = {
        "ce_onehot_col": CE(K, output_mode="one_hot", name="ce_onehot_col")(col),
        "ce_onehot": CE(K, output_mode="one_hot", name="ce_onehot")(ids),
        "ce_multi": CE(K, output_mode="multi_hot", name="ce_multi")(ids),
        "ce_count": CE(K, output_mode="count", name="ce_count")(ids),
        "ce_count_w": CE(K, output_mode="count", name="ce_count_w")(ids, count_weights=cw),
        "ce_multi_float": CE(K, name="ce_multi_float")(fids),
        "ce_int32": CE(K, output_mode="count", dtype="int32", name="ce_int32")(ids),
        # a mixed policy: float32 (the variable dtype), float16 with count_weights
        "ce_mixed": CE(K, output_mode="count", dtype="mixed_float16", name="ce_mixed")(ids),
        "ce_mixed_w": CE(K, output_mode="count", dtype="mixed_float16", name="ce_mixed_w")(
            ids, count_weights=cw),
        "disc_int": layers.Discretization(BOUNDS, name="disc_int")(num),
        "disc_onehot": layers.Discretization(BOUNDS, output_mode="one_hot",
                                             name="disc_onehot")(num),
        "disc_multi": layers.Discretization(BOUNDS, output_mode="multi_hot",
                                            name="disc_multi")(num),
        "disc_count": layers.Discretization(BOUNDS, output_mode="count", name="disc_count")(num),
        "disc_ints": layers.Discretization([-0.5, 1.5, 2.0, 1e10], name="disc_ints")(inum),
        "disc_adapted": _adapted()(num),
    }
    feats = [layers.Flatten(name=f"flat_{k}")(v) for k, v in outs.items()
             if k in ("ce_onehot", "ce_multi", "ce_count_w", "disc_onehot", "disc_count")]
    head = layers.Dense(3, name="head")(layers.Concatenate(name="cat")(feats))
    return keras.Model([ids, col, fids, cw, num, inum], [head, *outs.values()],
                       name="encoding_zoo"), list(outs)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(-1, K, (N, 3)).astype("int32")
    ids[0] = [2, 2, 5]  # a repeated id: multi_hot 1, count 2
    col = rng.integers(0, K, (N, 1)).astype("int32")
    fids = rng.uniform(-0.9, K - 0.01, (N, 4)).astype("float32")
    fids[0] = [0.0, 1.7, -0.5, 6.99]
    cw = rng.normal(0.0, 1.0, (N, 3)).astype("float32")
    num = rng.normal(0.5, 1.5, (N, 4)).astype("float32")
    num[0] = [-1.0, 0.0, 2.5, np.float32(0.70001)]  # on float32 boundaries, near 0.7
    num[1] = [np.nan, np.inf, -np.inf, 0.69]
    inum = rng.integers(-3, 4, (N, 3)).astype("int32")
    inum[0] = [2, -1, np.iinfo(np.int32).max]
    return [ids, col, fids, cw, num, inum]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    km, names = _model()
    perturb_keras(km)
    x = _data()
    ref = keras_outputs(km, names, x)
    return km, names, x, ref, save_all_formats(km, tmp_path_factory.mktemp("enc"), "enc")


@pytest.mark.parametrize("ext", [".keras", ".h5", ".weights.h5"])
def test_encodings_match_keras_exactly(zoo, ext):
    km, names, x, ref, paths = zoo
    m = load_saved(paths, ext, km)
    y, acts = m.apply(m.params, x, capture=names)
    for n in names:
        got = np.asarray(acts[n])
        assert got.dtype == ref[n].dtype, (n, got.dtype, ref[n].dtype)
        assert got.shape == ref[n].shape, (n, got.shape, ref[n].shape)
        assert np.array_equal(got, ref[n]), n
    want = km(x, training=False)
    assert rel_err(y[0], np.asarray(want[0])) <= 1e-5
    jitted = m(x)
    for a, b, w in zip(y[1:], jitted[1:], want[1:]):  # the encodings are model outputs too
        assert np.array_equal(np.asarray(a), np.asarray(w))
        assert np.array_equal(np.asarray(b), np.asarray(w))  # jit == eager


def test_ranks_keras_reduces_strangely():
    """Keras reduces multi_hot and count over axis 1, whatever the rank: over the batch for
    a rank-1 input, over the second axis of a rank-3 one."""
    rng = np.random.default_rng(2)
    for shape in [(5,), (2, 3, 4)]:
        ids = rng.integers(0, K, shape).astype("int32")
        for mode in ("one_hot", "multi_hot", "count"):
            want = np.asarray(CE(K, output_mode=mode)(ids))
            got = np.asarray(encode(ids, mode, K, np.float32))
            assert got.shape == want.shape and np.array_equal(got, want), (shape, mode)


def test_boundaries_compared_exactly():
    """An input equal to a boundary's float32 rounding lies below the boundary when float32
    rounds it down, as NumPy's digitize (Keras's NumPy backend) places it; with
    ``as_float32`` (its other backends) on it."""
    b = np.array([0.7, 0.3])
    b.sort()
    x = np.array([np.float32(0.3), np.float32(0.7)], np.float32)
    assert float(np.float32(0.3)) > 0.3 and float(np.float32(0.7)) < 0.7
    assert np.asarray(digitize(x, b)).tolist() == np.digitize(x, b).tolist() == [1, 1]
    assert np.asarray(digitize(x, b, as_float32=True)).tolist() == [1, 2]


def test_discretization_follows_the_backend(tmp_path):
    """Keras's NumPy backend compares with the exact boundaries (``np.digitize``), its JAX
    backend ``jnp.digitize(x, bins)`` with both made tensors (boundaries float32, integers
    promoted to float32) and its TensorFlow backend ``tf.raw_ops.Bucketize`` (boundaries a
    float32 list, ``upper_bound`` of the input converted to float). The NumPy truth is Keras
    (the backend the ``.h5`` records); the others those formulas. Keras 3.15.1 on JAX gave
    ``[[2, 3, 1], [1, 2, 3]]`` for ``d`` below and ``2`` for every integer of ``i``."""
    import jax.numpy as jnp
    from model_import import BackendWarning

    fb, ib = [0.1, 0.7, 2.3], [16777219.5, 16777221.0, 33554435.0]
    f_in, i_in = keras.Input((4,)), keras.Input((3,), dtype="int32")
    km = keras.Model([f_in, i_in], [layers.Discretization(fb)(f_in),
                                    layers.Discretization(ib)(i_in)])
    d = np.array([[0.7, 2.3, 0.1, np.nan], [0.69, 2.29, 5.0, -np.inf]], "float32")
    i = np.array([[16777219, 16777220, 33554434], [16777221, 16777222, 33554433]], "int32")
    km.save(tmp_path / "d.keras")
    km.save(tmp_path / "d.h5")  # records "numpy"
    truth = {"numpy": [np.asarray(a) for a in km([d, i])],
             "jax": [np.asarray(jnp.digitize(jnp.asarray(x), jnp.asarray(b, jnp.float32)))
                     for x, b in ((d, fb), (i, ib))],
             "tensorflow": [np.searchsorted(np.float32(b), x.astype(np.float32), "right")
                            for x, b in ((d, fb), (i, ib))]}
    assert not np.array_equal(truth["numpy"][0], truth["jax"][0])  # the test can fail
    assert not np.array_equal(truth["numpy"][1], truth["jax"][1])
    got = {"numpy": load_keras(tmp_path / "d.h5")([d, i])}
    for be in ("jax", "tensorflow", "torch", "numpy"):
        got[be] = load_keras(tmp_path / "d.keras", keras_backend=be)([d, i])
    with pytest.warns(BackendWarning, match="not float32 values"):
        got[None] = load_keras(tmp_path / "d.keras")([d, i])
    for be, want in [("numpy", "numpy"), ("jax", "jax"), ("tensorflow", "tensorflow"),
                     ("torch", "jax"), (None, "jax")]:
        for a, b in zip(got[be], truth[want]):
            assert np.asarray(a).tolist() == np.asarray(b).tolist(), (be, a, b)


def _config_with(km, name, **changes):
    cfg = json.loads(km.to_json())
    for lc in cfg["config"]["layers"]:
        if lc["name"] == name:
            lc["config"].update(changes)
    return cfg


@pytest.mark.parametrize("name, changes, match", [
    ("ce_multi", {"sparse": True}, "sparse"),
    ("disc_count", {"sparse": True}, "sparse"),
    ("disc_adapted", {"bin_boundaries": None}, "bin_boundaries"),
    ("disc_int", {"bin_boundaries": [1.0, 0.0]}, "non-decreasing"),
])
def test_refused_configs(zoo, name, changes, match):
    km, names, x, ref, paths = zoo
    with pytest.raises(UnsupportedLayerError, match=match):
        load_keras(paths[".weights.h5"], config=_config_with(km, name, **changes))


@pytest.mark.parametrize("cls", ["StringLookup", "Hashing", "HashedCrossing",
                                 "TextVectorization"])
def test_string_and_hashing_layers_have_no_converter(zoo, cls):
    km, names, x, ref, paths = zoo
    cfg = json.loads(km.to_json())
    for lc in cfg["config"]["layers"]:
        if lc["name"] == "ce_multi":
            lc["class_name"] = cls
    with pytest.raises(UnsupportedLayerError, match=cls) as info:
        load_keras(paths[".weights.h5"], config=cfg)
    # why (strings have no JAX array form) and what to do: load the model after the layer
    assert "strings" in str(info.value) and "keras.Model(" in str(info.value)


@pytest.mark.parametrize("fname", ["integer_lookup.keras", "integer_lookup.h5"])
def test_integer_lookup_matches_keras_exactly(fname):
    ref = np.load(LOOKUP / "integer_lookup.expected.npz")
    m = load_keras(LOOKUP / fname)
    ys = m([ref["ids"], ref["col"], ref["known"]])
    assert len(ys) == 8
    for i, y in enumerate(ys):  # Keras's int64 as int32: the same values
        y = np.asarray(y)
        assert y.dtype == np.int32 and y.shape == ref[f"y{i}"].shape, (i, y.dtype, y.shape)
        assert np.array_equal(y, ref[f"y{i}"]), i


@pytest.mark.parametrize("name, changes, match", [
    ("il_int", {"vocabulary": None}, "vocabulary"),  # adapted: the vocabulary is an asset
    ("il_int", {"invert": True}, "invert"),
    ("il_count", {"output_mode": "tf_idf", "idf_weights": [1.0] * 7}, "tf_idf"),
    ("il_mask_oov3", {"oov_method": "farmhash"}, "farmhash"),
    ("il_multi", {"sparse": True}, "sparse"),
])
def test_integer_lookup_refused_configs(name, changes, match):
    cfg = json.loads(zipfile.ZipFile(LOOKUP / "integer_lookup.keras").read("config.json"))
    for lc in cfg["config"]["layers"]:
        if lc["name"] == name:
            lc["config"].update(changes)
    with pytest.raises(UnsupportedLayerError, match=match):
        load_keras(LOOKUP / "integer_lookup.keras", config=cfg)
