"""Keras 3.0-3.14 do not save a transposed convolution's ``output_padding``; the importer
restores it from the shapes the config records around the layer and computes the model as
it was saved (``keras.models.load_model`` computes it without). Files written once by Keras
3.4.1 and 3.11.3 on JAX (tests/fixtures/output_padding_k3/make_output_padding_fixtures.py);
the outputs are those of the model as built, before saving.
"""

import itertools
import json
import pathlib
import warnings

import h5py
import numpy as np
import pytest

from import_helpers import rel_err
from model_import import KerasImportError, load_keras
from model_import._layers.conv import transpose_output_size
from model_import._output_padding import _infer, restore_output_padding

D = pathlib.Path(__file__).parent / "fixtures" / "output_padding_k3"
VERSIONS = ["3.4.1", "3.11.3"]


def _load(path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_keras(path)
    return model, [str(w.message) for w in caught if "output_padding" in str(w.message)]


@pytest.mark.parametrize("ext", ["keras", "h5"])
@pytest.mark.parametrize("version", VERSIONS)
def test_functional_model_computes_as_saved(version, ext):
    ref = np.load(D / f"op_func_{version}.npz")
    model, warned = _load(D / f"op_func_{version}.{ext}")
    got = model([ref[f"x{i}"] for i in range(6)])
    errs = [rel_err(g, ref[f"y{i}"]) for i, g in enumerate(got)]
    assert max(errs) <= 1e-5, errs
    # one warning per restored layer, naming it and the padding found
    assert sorted(m.split("layer ")[1].split(" ")[0] for m in warned) == [
        "'ct1'", "'ct2'", "'ct3'", "'ct4'", "'ct5'"]
    assert any("'ct2'" in m and "output_padding=(1, 2)" in m for m in warned)
    assert all(f"Keras {version} did not save" in m for m in warned)


@pytest.mark.parametrize("version", VERSIONS)
def test_sequential_keras_archive_computes_as_saved(version):
    ref = np.load(D / f"op_seq_{version}.npz")
    model, warned = _load(D / f"op_seq_{version}.keras")
    assert rel_err(model(ref["x"]), ref["y"]) <= 1e-5
    assert rel_err(ref["reload"], ref["y"]) > 0.05  # Keras's reload differs: the case is real
    assert len(warned) == 1 and "'ct'" in warned[0]


@pytest.mark.parametrize("version", VERSIONS)
def test_sequential_h5_records_no_shapes_and_computes_as_keras_reloads(version):
    # Keras 3's legacy .h5 drops build_config and a Sequential records no call shapes:
    # nothing shows the padding, so the model computes as keras.models.load_model does
    ref = np.load(D / f"op_seq_{version}.npz")
    model, warned = _load(D / f"op_seq_{version}.h5")
    assert rel_err(model(ref["x"]), ref["reload"]) <= 1e-5
    assert warned == []


def _tensor(layer, node, shape):
    return {"class_name": "__keras_tensor__",
            "config": {"shape": shape, "dtype": "float32", "keras_history": [layer, node, 0]}}


def _entries(out_shapes, in_shapes=((None, 4, 2),), **conv):
    """A Functional config's layers: Conv1DTranspose 'ct' (called once per input shape)
    followed by one consumer per recorded output shape."""
    ct = {"class_name": "Conv1DTranspose", "name": "ct",
          "config": {"name": "ct", "filters": 1, "kernel_size": [3], "strides": [2],
                     "padding": "valid", **conv},
          "inbound_nodes": [{"args": [_tensor("x", 0, list(s))], "kwargs": {}}
                            for s in in_shapes]}
    users = [{"class_name": "Flatten", "name": f"f{i}", "config": {"name": f"f{i}"},
              "inbound_nodes": [{"args": [_tensor("ct", i, list(s))], "kwargs": {}}]}
             for i, s in enumerate(out_shapes)]
    return [ct, *users]


def test_restore_leaves_configs_alone_unless_the_shapes_show_a_padding():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for entries in (_entries([(None, 9, 1)]),  # the default size: nothing to restore
                        _entries([(None, None, 1)]),  # an unknown size
                        _entries([(None, 10, 1), (None, 13, 1)],  # calls that disagree
                                 in_shapes=[(None, 4, 2), (None, 5, 2)]),
                        _entries([(None, 8, 1)]),  # smaller than any padding gives
                        _entries([(None, 10, 1)], output_padding=None)):  # saved (3.15+)
            assert restore_output_padding(entries, sequential=False, keras_version="3.9.0",
                                          model_name="m") == entries
    with pytest.warns(UserWarning, match=r"'ct' \(Conv1DTranspose\): Keras 3.9.0 did not save"):
        out = restore_output_padding(_entries([(None, 10, 1), (None, 12, 1)],
                                              in_shapes=[(None, 4, 2), (None, 5, 2)]),
                                     sequential=False, keras_version="3.9.0", model_name="m")
    assert out[0]["config"]["output_padding"] == [1]


@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_infer_recovers_every_padding_up_to_equivalence(padding):
    # whatever padding gave the recorded size, the one inferred gives that size again
    for n, k, s, d, op in itertools.product((1, 3, 4), (1, 2, 3), (1, 2, 3), (1, 2), (0, 1, 2)):
        if d > 1 and s > 1:
            continue  # Keras refuses dilation with strides
        n_out = transpose_output_size(n, k, s, padding, op, d)
        if n_out < 1:
            continue  # an empty output
        cfg = {"kernel_size": k, "strides": s, "dilation_rate": d, "padding": padding}
        pad = _infer(cfg, 1, [((None, n, 1), (None, n_out, 1))])
        if n_out == transpose_output_size(n, k, s, padding, None, d):
            assert pad is None
        else:
            assert transpose_output_size(n, k, s, padding, pad[0], d) == n_out


@pytest.mark.parametrize("version", VERSIONS)
def test_unrecorded_padding_refusal_says_why_and_config_fixes_it(version):
    path = D / f"op_flat_{version}.h5"
    with pytest.raises(KerasImportError, match=(
            rf"layer 'd' \(Dense\) failed.*Keras {version} does not save the output_padding "
            r"of transposed convolutions \('ct'\).*load_keras\(\.\.\., config=\.\.\.\)")):
        load_keras(path)
    with h5py.File(path, "r") as f:
        config = json.loads(f.attrs["model_config"])
    ct = next(lc for lc in config["config"]["layers"] if lc["config"]["name"] == "ct")
    ct["config"]["output_padding"] = [1]
    ref = np.load(D / f"op_flat_{version}.npz")
    assert rel_err(load_keras(path, config=config)(ref["x"]), ref["y"]) <= 1e-5


def _strip_output_padding(o):
    """``o`` (a config) with every transposed convolution's ``output_padding`` removed, at
    any depth, as Keras 3.0-3.14 write it."""
    if isinstance(o, dict):
        if str(o.get("class_name", "")).startswith(("Conv1DT", "Conv2DT", "Conv3DT")):
            o.get("config", {}).pop("output_padding", None)
        for v in o.values():
            _strip_output_padding(v)
    elif isinstance(o, list):
        for v in o:
            _strip_output_padding(v)
    return o


def _saved_as_314(model, tmp_path, ext="keras"):
    """``model`` saved (Keras 3.15+), rewritten as Keras 3.14 writes it: no
    ``output_padding``, version 3.14.0. Returns the rewritten file's path."""
    import zipfile

    src, dst = tmp_path / f"m.{ext}", tmp_path / f"m_314.{ext}"
    model.save(src)
    if ext == "keras":
        with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w") as zo:
            for item in zi.infolist():
                data = zi.read(item.filename)
                if item.filename == "config.json":
                    data = json.dumps(_strip_output_padding(json.loads(data))).encode()
                elif item.filename == "metadata.json":
                    data = json.dumps({**json.loads(data), "keras_version": "3.14.0"}).encode()
                zo.writestr(item, data)
    else:
        dst.write_bytes(src.read_bytes())
        with h5py.File(dst, "r+") as f:
            f.attrs["model_config"] = json.dumps(
                _strip_output_padding(json.loads(f.attrs["model_config"])))
            f.attrs["keras_version"] = "3.14.0"
    return dst


@pytest.mark.parametrize("between", ["LeakyReLU", "Dropout"])
def test_sequential_restores_across_layers_that_record_no_shape(between, tmp_path):
    # shape-keeping layers save no build_config; the next layer that does records the
    # transposed convolution's output size (10 = 9 + output_padding 1)
    import keras

    L = keras.layers
    mid = L.LeakyReLU(0.1) if between == "LeakyReLU" else L.Dropout(0.5)
    model = keras.Sequential([keras.Input((4, 2)), L.Conv1DTranspose(3, 3, strides=2,
                                                                     output_padding=1),
                              mid, L.Activation("tanh"), L.Conv1D(2, 3)])
    x = np.random.default_rng(0).normal(size=(2, 4, 2)).astype("float32")
    jax_model, warned = _load(_saved_as_314(model, tmp_path))
    assert rel_err(jax_model(x), model(x)) <= 1e-5
    assert len(warned) == 1 and "output_padding=(1,)" in warned[0]


def test_sequential_does_not_look_past_a_layer_that_changes_the_shape(tmp_path):
    # Reshape saves no build_config either, but the Conv1D after it records Reshape's
    # output, not the transposed convolution's: nothing to restore (output_padding=None)
    import keras

    L = keras.layers
    model = keras.Sequential([keras.Input((4, 2)), L.Conv1DTranspose(3, 3, strides=2),
                              L.Reshape((27, 1)), L.Conv1D(2, 3)])
    x = np.random.default_rng(0).normal(size=(2, 4, 2)).astype("float32")
    jax_model, warned = _load(_saved_as_314(model, tmp_path))
    assert rel_err(jax_model(x), model(x)) <= 1e-5
    assert warned == []


@pytest.mark.parametrize("ext", ["keras", "h5"])
def test_time_distributed_transposed_convolution_is_restored(ext, tmp_path):
    # the recorded (None, 3, 10, 2) into the pooling, without the time axis: 10 = 9 + 1
    import keras

    L = keras.layers
    inp = keras.Input((3, 4, 2))
    h = L.TimeDistributed(L.Conv1DTranspose(2, 3, strides=2, output_padding=1), name="td")(inp)
    model = keras.Model(inp, L.Dense(2)(L.GlobalAveragePooling2D()(h)))
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 2)).astype("float32")
    jax_model, warned = _load(_saved_as_314(model, tmp_path, ext))
    assert rel_err(jax_model(x), model(x)) <= 1e-5
    assert len(warned) == 1 and "'td'" in warned[0] and "output_padding=(1,)" in warned[0]


def test_unrestored_time_distributed_padding_is_named_in_the_refusal(tmp_path):
    # a Sequential .h5 records no shapes: the Dense after Flatten gets 54 features, not 60
    import keras

    L = keras.layers
    model = keras.Sequential([keras.Input((3, 4, 2)), L.TimeDistributed(
        L.Conv1DTranspose(2, 3, strides=2, output_padding=1), name="td"), L.Flatten(),
        L.Dense(2, name="d")])
    with pytest.raises(KerasImportError, match=r"layer 'd' \(Dense\) failed.*does not save "
                       r"the output_padding of transposed convolutions \('td'\)"):
        load_keras(_saved_as_314(model, tmp_path, "h5"))
