"""Bad inputs give a clear KerasImportError that names the file and the problem (for a layer:
its name and class, and how to supply a converter); custom converters can be registered;
loading never touches the network."""

import json
import os
import re
import shutil
import socket
import warnings
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest

import model_import
from model_import import KerasImportError, LayerImpl, UnsupportedLayerError, load_keras
from model_import._layers import registry

keras = pytest.importorskip("keras")

GOOD_H5 = "mnist_cnn_keras3.h5"
GOOD_KERAS = "mnist_cnn_keras3.keras"


def _raises_import_error(path, match=None, **kw):
    with pytest.raises(KerasImportError, match=match) as info:
        load_keras(path, **kw)
    assert str(path) in str(info.value)  # the message names the file
    return info.value


def test_missing_file(tmp_path):
    _raises_import_error(tmp_path / "nope.h5", "no such file")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.h5"
    p.write_bytes(b"")
    _raises_import_error(p, "empty")


def test_text_and_png_are_not_keras_files(tmp_path):
    t = tmp_path / "model.h5"
    t.write_text("this is not a model\n")
    _raises_import_error(t, "not a Keras file")
    png = tmp_path / "model.keras"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(64)))
    _raises_import_error(png, "not a Keras file")


def test_directory_like_savedmodel(tmp_path):
    d = tmp_path / "saved_model_dir"
    (d / "variables").mkdir(parents=True)
    (d / "saved_model.pb").write_bytes(b"\x08\x01")
    _raises_import_error(d, "SavedModel")


def test_zip_that_is_not_a_keras_archive(tmp_path):
    p = tmp_path / "model.keras"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("readme.txt", "hello")
    _raises_import_error(p, "config.json")


def test_keras_archive_with_broken_config(tmp_path, fixtures_dir):
    src = zipfile.ZipFile(fixtures_dir / GOOD_KERAS)
    p = tmp_path / "broken.keras"
    with zipfile.ZipFile(p, "w") as z:
        for n in src.namelist():
            data = src.read(n)
            z.writestr(n, data[: len(data) // 2] if n == "config.json" else data)
    _raises_import_error(p, "cannot be read|JSON|malformed")


def test_hdf5_without_keras_content(tmp_path):
    import h5py

    p = tmp_path / "data.h5"
    with h5py.File(p, "w") as f:
        f["x"] = np.zeros(3)
    error = _raises_import_error(p, "without Keras content")
    # the refused file is closed, also while the error (its traceback) lives: it was held
    # open, and writing it again failed ("unable to truncate a file which is already open")
    with h5py.File(p, "w") as f:
        f["x"] = np.ones(3)
    del error


@pytest.mark.parametrize("name", [GOOD_H5, GOOD_KERAS, "mnist_cnn_tfkeras2.h5"])
@pytest.mark.parametrize("frac", [0.02, 0.3, 0.6, 0.97])
def test_truncated_files(tmp_path, fixtures_dir, name, frac):
    data = (fixtures_dir / name).read_bytes()
    p = tmp_path / name
    p.write_bytes(data[: int(len(data) * frac)])
    _raises_import_error(p)


@pytest.mark.parametrize("name", [GOOD_H5, GOOD_KERAS])
def test_corrupted_bytes_never_surface_bare_errors(tmp_path, fixtures_dir, name):
    data = bytearray((fixtures_dir / name).read_bytes())
    rng = np.random.default_rng(0)
    for trial in range(12):
        buf = bytearray(data)
        start = int(rng.integers(0, len(buf) - 512))
        buf[start:start + 256] = rng.integers(0, 256, 256, dtype=np.uint8).tobytes()
        p = tmp_path / f"c{trial}_{name}"
        p.write_bytes(bytes(buf))
        try:
            m = load_keras(p)
            m(np.zeros((1, 28, 28, 1), np.float32))  # corrupted weight values still load
        except KerasImportError as e:
            assert str(p) in str(e)


def _custom_model(tmp_path):
    @keras.saving.register_keras_serializable(package="jaxsal_test")
    class ChannelScale(keras.layers.Layer):
        def build(self, input_shape):
            self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones",
                                         name="scale")

        def call(self, x):
            return x * self.scale + 1.0

    inp = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(3, 3, name="conv")(inp)
    h = ChannelScale(name="my_scale")(h)
    h = keras.layers.Flatten()(h)
    out = keras.layers.Dense(4, name="out")(h)
    m = keras.Model(inp, out)
    m.get_layer("my_scale").set_weights([np.array([0.5, -2.0, 3.0], np.float32)])
    paths = [tmp_path / "custom.keras", tmp_path / "custom.h5"]
    for p in paths:
        m.save(p)
    return m, paths


def _channel_scale_converter(config, ctx):
    def call(params, x, *, rt):
        return x * params["scale"] + 1.0

    return LayerImpl(call=call, convert_weights=lambda w: {"scale": w[0]}, n_weights=1)


def test_custom_converters_reach_wrapped_and_pipeline_layers(tmp_path):
    # `custom_layers=` serves a custom layer inside TimeDistributed and inside a Pipeline as
    # it serves one in the model itself
    @keras.saving.register_keras_serializable(package="jaxsal_test")
    class ShapedScale(keras.layers.Layer):  # TimeDistributed needs the output shape
        def build(self, input_shape):
            self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones",
                                         name="scale")

        def call(self, x):
            return x * self.scale + 1.0

        def compute_output_shape(self, input_shape):
            return input_shape

    scale_cls = ShapedScale
    inp = keras.Input((3, 6, 6, 2))
    h = keras.layers.TimeDistributed(scale_cls(name="inner"), name="td")(inp)
    h = keras.layers.Reshape((18, 6, 2))(h)
    h = keras.layers.Pipeline([scale_cls(name="p_scale"), keras.layers.Rescaling(0.5)],
                              name="prep")(h)
    km = keras.Model(inp, keras.layers.Dense(3)(keras.layers.Flatten()(h)))
    km.get_layer("td").layer.set_weights([np.array([0.5, -2.0], np.float32)])
    km.get_layer("prep").layers[0].set_weights([np.array([1.5, 0.25], np.float32)])
    x = np.random.default_rng(1).normal(size=(2, 3, 6, 6, 2)).astype(np.float32)
    ref = np.asarray(km.predict(x, verbose=0))
    for ext in (".keras", ".h5"):
        p = tmp_path / f"wrapped_custom{ext}"
        km.save(p)
        err = _raises_import_error(p)
        assert isinstance(err, UnsupportedLayerError) and "custom_layers" in str(err)
        m = load_keras(p, custom_layers={"ShapedScale": _channel_scale_converter})
        np.testing.assert_allclose(np.asarray(m(x)), ref, rtol=1e-5, atol=1e-5)


def test_unknown_custom_class_names_file_layer_class_and_fix(tmp_path):
    _, paths = _custom_model(tmp_path)
    for p in paths:
        err = _raises_import_error(p)
        assert isinstance(err, UnsupportedLayerError)
        assert err.layer_name == "my_scale" and err.class_name == "ChannelScale"
        msg = str(err)
        assert "'my_scale'" in msg and "'ChannelScale'" in msg
        assert "register_layer('ChannelScale')" in msg and "custom_layers" in msg


def test_custom_converter_via_argument_and_registry(tmp_path, monkeypatch):
    km, paths = _custom_model(tmp_path)
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 2)).astype(np.float32)
    ref = np.asarray(km(x))
    for p in paths:
        m = load_keras(p, custom_layers={"ChannelScale": _channel_scale_converter})
        np.testing.assert_allclose(np.asarray(m(x)), ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(m.layer("my_scale").params["scale"]),
                                      [0.5, -2.0, 3.0])
    # the global registry (restored after the test)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    model_import.register_layer("ChannelScale")(_channel_scale_converter)
    assert "ChannelScale" in model_import.registered_classes()
    m = load_keras(paths[0])
    np.testing.assert_allclose(np.asarray(m(x)), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="already registered"):
        model_import.register_layer("ChannelScale")(_channel_scale_converter)


def test_a_converter_for_the_load_beats_the_global_registry(tmp_path, monkeypatch):
    """``custom_layers={"pkg>Class": ...}`` serves the layer where ``register_layer("Class")``
    registered another converter globally, and beats ``custom_layers={"Class": ...}`` given
    beside it. Before, the bare class name was looked up first, in both, and won."""
    km, paths = _custom_model(tmp_path)
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 2)).astype(np.float32)
    ref = np.asarray(km(x))

    def wrong(config, ctx):  # leaves out the + 1.0
        return LayerImpl(call=lambda params, x, *, rt: x * params["scale"],
                         convert_weights=lambda w: {"scale": w[0]}, n_weights=1)

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # restored after
    model_import.register_layer("ChannelScale")(wrong)
    for p in paths:
        right = _channel_scale_converter
        for custom in ({"jaxsal_test>ChannelScale": right},
                       {"ChannelScale": wrong, "jaxsal_test>ChannelScale": right}):
            m = load_keras(p, custom_layers=custom)
            np.testing.assert_allclose(np.asarray(m(x)), ref, rtol=1e-5, atol=1e-5)


def test_lambda_layer_is_reported(tmp_path):
    inp = keras.Input((4,))
    out = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inp)
    m = keras.Model(inp, keras.layers.Dense(2)(out))
    for p in (tmp_path / "lam.keras", tmp_path / "lam.h5"):
        m.save(p)
        err = _raises_import_error(p, "Lambda")
        assert isinstance(err, UnsupportedLayerError) and err.layer_name == "double"
        assert "register_layer('Lambda')" in str(err)


def test_lambda_of_a_named_function_is_reported_by_that_name(tmp_path):
    # Lambda(keras.applications.mobilenet_v2.preprocess_input): Keras 3 records a def by its
    # name only (no code, module "builtins"), not bytecode as for a lambda
    inp = keras.Input((4, 4, 3))
    h = keras.layers.Lambda(keras.applications.mobilenet_v2.preprocess_input, name="prep")(inp)
    m = keras.Model(inp, keras.layers.Dense(2)(h))
    for p in (tmp_path / "fn.keras", tmp_path / "fn.h5"):
        m.save(p)
        msg = str(_raises_import_error(p, "Lambda"))
        assert "'preprocess_input'" in msg and "by its name only" in msg, msg
        assert "bytecode" not in msg and "without a Lambda" in msg and "config['name']" in msg


def test_several_lambdas_by_name(tmp_path):
    """One converter serves every Lambda layer; it tells them apart by the config's name."""
    inp = keras.Input((4,))
    h = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inp)
    h = keras.layers.Dense(3, name="d")(h)
    h = keras.layers.Lambda(lambda t: t - 1.0, name="shift")(h)
    m = keras.Model(inp, h)
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    ref = np.asarray(m.predict(x, verbose=0))
    fns = {"double": lambda t: t * 2.0, "shift": lambda t: t - 1.0}

    def lam(config, ctx):
        fn = fns[config["name"]]
        return model_import.LayerImpl(call=lambda params, t, *, rt: fn(t))

    for p in (tmp_path / "two.keras", tmp_path / "two.h5"):
        m.save(p)
        err = _raises_import_error(p, "Lambda")
        assert "config['name']" in str(err)
        got = load_keras(p, custom_layers={"Lambda": lam})(x)
        np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-6)


def test_unsupported_layer_in_config_only(tmp_path):
    """A layer class without converter in an architecture given as JSON."""
    cfg = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 3], "name": "in"}},
        {"class_name": "QuantumDense", "config": {"name": "qd_1", "units": 2}}]}}
    with pytest.raises(UnsupportedLayerError, match="'qd_1' of class 'QuantumDense'"):
        model_import.build_model(cfg, None, path="inline")


def test_build_model_without_weights_refuses_weighted_layers_naming_them():
    """``build_model(config, None)`` is for a model without weights: on layers that take
    weights it failed in the forward check with "layer 'd' (Dense) failed on inputs of shape
    ((1, 3),): 'kernel'"; refused now, naming them; a weightless architecture still builds."""
    def seq(*layers):
        return {"class_name": "Sequential", "config": {"name": "s", "layers": [
            {"class_name": "InputLayer", "config": {"batch_shape": [None, 3], "name": "in"}},
            *layers]}}
    dense = {"class_name": "Dense", "config": {"name": "d", "units": 2}}
    relu = {"class_name": "ReLU", "config": {"name": "r"}}
    with pytest.raises(KerasImportError, match=r"builds a model without weights, but .* "
                                               r"weights: 'd' \(Dense\)\. Pass .*load_keras"):
        model_import.build_model(seq(relu, dense, relu | {"config": {"name": "r2"}}), None)
    x = np.array([[-1.0, 0.5, 2.0]], np.float32)
    np.testing.assert_array_equal(model_import.build_model(seq(relu), None)(x),
                                  np.maximum(x, 0))


@pytest.mark.parametrize("layer, match", [
    ({"class_name": "Conv1D", "config": {"name": "c", "filters": 2, "kernel_size": 3,
                                         "padding": "reflect"}},
     r"expected padding 'valid', 'same' or 'causal'.*got 'reflect'; save the layer with"),
    ({"class_name": "Attention", "config": {"name": "a"}},
     r"expected a list \[query, value\] .*got one tensor of shape \(1, 5, 3\); call the layer "
     r"on such a list")])
def test_bad_layer_configs_say_what_was_expected_got_and_the_fix(layer, match):
    """A convolution's unknown padding and an ``Attention`` called on one tensor (in a
    Sequential): the messages said only 'unknown padding' and what was expected."""
    cfg = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 5, 3], "name": "in"}},
        layer]}}
    with pytest.raises(KerasImportError, match=match):
        model_import.build_model(cfg, None, path="inline")


def _two_models():
    def make(units):
        inp = keras.Input((5,))
        h = keras.layers.Dense(units, name="hidden")(inp)
        return keras.Model(inp, keras.layers.Dense(2, name="out")(h))
    return make(3), make(4)


def test_weights_architecture_mismatch(tmp_path):
    a, b = _two_models()
    a.save_weights(tmp_path / "a.weights.h5")
    a.save(tmp_path / "a.h5")
    err = _raises_import_error(tmp_path / "a.weights.h5", config=b.to_json())
    assert "hidden" in str(err) or "out" in str(err)
    err = _raises_import_error(tmp_path / "a.h5", config=b.to_json())
    assert "hidden" in str(err) or "out" in str(err)
    # an architecture with a layer the weights file does not have
    inp = keras.Input((5,))
    c = keras.Model(inp, keras.layers.Dense(2, name="other")(inp))
    _raises_import_error(tmp_path / "a.h5", "no weights found for layer 'other'",
                         config=c.to_json())


@pytest.mark.parametrize("where", ["inbound", "output"])
def test_tensor_index_past_a_layers_outputs_is_refused(tmp_path, where):
    """A reference to tensor 4 of a one-output layer (an edited config): Keras refuses to
    build the model; the importer read tensor 0 silently and computed."""
    inp = keras.Input((4,), name="inp")
    model = keras.Model(inp, keras.layers.Dense(2, name="d2")(keras.layers.Dense(4,
                                                                         name="d1")(inp)))
    model.save_weights(tmp_path / "m.weights.h5")
    cfg = json.loads(model.to_json())
    if where == "inbound":
        d2 = [lc for lc in cfg["config"]["layers"] if lc["name"] == "d2"][0]
        d2["inbound_nodes"][0]["args"][0]["config"]["keras_history"] = ["d1", 0, 4]
    else:
        cfg["config"]["output_layers"] = ["d2", 0, 7]
    with pytest.raises((ValueError, IndexError)):  # the reference: Keras refuses it too
        keras.models.model_from_json(json.dumps(cfg))
    ref = "['d1', 0, 4]" if where == "inbound" else "['d2', 0, 7]"
    err = _raises_import_error(tmp_path / "m.weights.h5", "has 1 output", config=cfg)
    assert ref in str(err) and "save the model again" in str(err)


def test_bad_config_argument(tmp_path, fixtures_dir):
    _raises_import_error(fixtures_dir / GOOD_H5, "not valid JSON", config="{not json")
    _raises_import_error(fixtures_dir / GOOD_H5, "Sequential or Functional",
                         config=json.dumps({"class_name": "MySubclassedModel", "config": {}}))
    with pytest.raises(TypeError, match="config must be"):
        load_keras(fixtures_dir / GOOD_H5, config=42)


@pytest.mark.parametrize("given", ["typo", "typo_path", "keras", "h5", "bom", "dir", "empty_dir"])
def test_config_paths_of_each_kind(tmp_path, fixtures_dir, given):
    """config= as a path: a path that does not exist was parsed as JSON text ("not valid
    JSON"), a .keras or .h5 gave a bare UnicodeDecodeError, a config.json with a byte-order
    mark was "not valid JSON", a directory an IsADirectoryError. Now: a missing file says so
    with the accepted forms, a .keras archive or unzipped directory gives its config.json,
    an HDF5 file is refused naming the first argument, a BOM is skipped."""
    import pathlib

    weights = fixtures_dir / GOOD_H5
    with zipfile.ZipFile(fixtures_dir / GOOD_KERAS) as z:
        config_json = z.read("config.json").decode()
    if given in ("typo", "typo_path"):
        config = str(tmp_path / "confg.json")
        err = _raises_import_error(weights, "no such file.*expected a dict, a model.to_json",
                                   config=config if given == "typo" else pathlib.Path(config))
        assert "confg.json" in str(err)
        return
    if given == "h5":
        _raises_import_error(weights, r"is an HDF5 file.*pass it as the first argument",
                             config=str(weights))
        return
    if given == "empty_dir":
        _raises_import_error(weights, "a directory without a config.json", config=tmp_path)
        return
    config = {"keras": fixtures_dir / GOOD_KERAS, "bom": tmp_path / "config.json",
              "dir": tmp_path}[given]
    (tmp_path / "config.json").write_text(config_json, encoding="utf-8-sig")
    m = load_keras(weights, config=config)
    x = np.random.default_rng(0).random((1, 28, 28, 1), np.float32)
    np.testing.assert_array_equal(m(x), load_keras(weights)(x))


def test_bad_head_and_inputs(fixtures_dir):
    with pytest.raises(ValueError, match="unknown head"):
        load_keras(fixtures_dir / GOOD_H5, head="probabilities")
    m = load_keras(fixtures_dir / GOOD_H5)
    with pytest.raises(ValueError, match=r"expected shape \(N, 28, 28, 1\)"):
        m(np.zeros((28, 28, 1), np.float32))
    with pytest.raises(ValueError, match="unknown layer"):
        m.layer("conv99")


def test_loading_needs_no_network(monkeypatch, fixtures_dir, tmp_path):
    def no_network(*args, **kwargs):
        raise AssertionError("model_import tried to open a network connection")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    for name in (GOOD_H5, GOOD_KERAS, "mnist_cnn_tfkeras2.h5"):
        shutil.copy(fixtures_dir / name, tmp_path / name)
        m = load_keras(tmp_path / name)
        m(np.zeros((1, 28, 28, 1), np.float32))
        m.with_head("logits").summary()


def test_register_layer_refuses_what_registers_nothing(monkeypatch):
    # `@register_layer` without the class name registered the converter under no Keras class
    # (the function itself became the key) and replaced it by the decorator: loads failed
    # later with an UnsupportedLayerError that did not say why
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    before = dict(registry._REGISTRY)
    with pytest.raises(TypeError, match=r"@register_layer\('ClassName'\)"):
        model_import.register_layer(_channel_scale_converter)
    with pytest.raises(TypeError, match="expected at least one Keras class name"):
        model_import.register_layer()
    with pytest.raises(TypeError, match="expected Keras class names as non-empty strings"):
        model_import.register_layer("ChannelScale", 3)
    with pytest.raises(TypeError, match="expected a converter function"):
        model_import.register_layer("ChannelScale")("not a function")
    # a name already taken refuses the whole call: no other name is registered by it
    with pytest.raises(ValueError, match="already registered"):
        model_import.register_layer("ChannelScale", "Dense")(_channel_scale_converter)
    assert registry._REGISTRY == before


@pytest.mark.parametrize("custom", [["ChannelScale"], {"Conv2D": "not a function"},
                                    {"Conv2D": None}, {3: _channel_scale_converter}])
def test_custom_layers_must_map_class_names_to_converters(fixtures_dir, custom):
    # these failed as "its config could not be converted", a dict-update error or "no
    # converter is registered", or (an int key) were ignored
    with pytest.raises(TypeError, match=r"expected custom_layers as \{class_name: converter"):
        load_keras(fixtures_dir / "mnist_cnn_tfkeras2.h5", custom_layers=custom)


@pytest.mark.parametrize("kw", ["perturb", "perturb_pre"])
def test_a_perturbation_must_keep_the_layer_output_shape(fixtures_dir, kw):
    # a delta that broadcast the output to another shape changed the model's result shape
    # silently: 3 rows of outputs for one input, or (1, 10, 10) logits
    m = load_keras(fixtures_dir / "mnist_cnn_tfkeras2.h5")
    x = np.zeros((1, 28, 28, 1), np.float32)
    for layer, shape in (("conv2d_2", (3, 24, 24, 64)), ("dense_2", (1, 10, 1)),
                         ("dense_2", (1, 3))):
        with pytest.raises(ValueError, match=rf"{kw}\['{layer}'\]: expected .* shape "
                                             rf"\(1, .*got {re.escape(str(shape))}"):
            m.apply(m.params, x, **{kw: {layer: np.zeros(shape, np.float32)}})
    # deltas that broadcast to the output's own shape stay accepted
    y = m.apply(m.params, x, **{kw: {"conv2d_2": np.zeros((24, 24, 64), np.float32)}})
    assert np.shape(y) == (1, 10)


def test_a_wrong_input_shape_gets_the_fix_that_fits(fixtures_dir):
    # every wrong shape was told to add a batch axis (x[None]), also one that has it
    m = load_keras(fixtures_dir / "mnist_cnn_tfkeras2.h5")
    for shape, fix in (((28, 28, 1), r"x\[None\]"), ((2, 28, 28), r"x\[\.\.\., None\]"),
                       ((2, 27, 28, 1), None)):
        with pytest.raises(ValueError, match=r"expected shape \(N, 28, 28, 1\)") as e:
            m(np.zeros(shape, np.float32))
        msg = str(e.value)
        assert (re.search(fix, msg) is not None) if fix else ("x[None]" not in msg), msg


def test_intermediates_takes_one_layer_name_as_apply_does(fixtures_dir):
    # a str was iterated letter by letter: "unknown layer 'c'"
    m = load_keras(fixtures_dir / "mnist_cnn_tfkeras2.h5")
    x = np.zeros((1, 28, 28, 1), np.float32)
    assert list(m.intermediates(x, "conv2d_2")) == ["conv2d_2"]


def test_params_without_the_models_entries_are_refused_by_name(fixtures_dir):
    """apply(None, x), one layer's dict for the whole model or a dict of some layers failed
    in the first layer that read it with a bare "'kernel'" or "'NoneType' object has no
    attribute 'get'"; now the error names what is missing and what to pass, also for a
    with_params(None) model run by a method. A tree of the same keys still runs."""
    import jax
    import jaxsal

    m = load_keras(fixtures_dir / "mnist_cnn_keras3.keras")
    x = np.zeros((1, 28, 28, 1), np.float32)
    with pytest.raises(TypeError, match=r"params: expected a dict like model.params \(keys "
                                        r"\['conv2d_1', 'conv2d_2', 'dense'\]\), got NoneType"):
        m.apply(None, x)
    with pytest.raises(ValueError, match=r"params lacks \['conv2d_2', 'dense'\] \(it has "
                                         r"\['conv2d_1'\]\)"):
        m.apply({"conv2d_1": m.params["conv2d_1"]}, x)
    inner = {**m.params, "dense": {"kernel": m.params["dense"]["kernel"]}}
    with pytest.raises(ValueError, match=r"params\['dense'\] lacks \['bias'\]"):
        m.apply(inner, x)
    with pytest.raises(ValueError, match=r"got NoneType"):
        jaxsal.saliency(m.with_params(None), x, 0)
    doubled = jax.tree_util.tree_map(lambda a: 2 * a, m.params)
    assert m.with_params(doubled).apply(doubled, x).shape == (1, 10)


@pytest.mark.parametrize("ext", [".keras", ".h5"])
def test_an_operation_with_the_declared_batch_size_is_refused_saying_why(tmp_path, ext):
    # keras.Input(batch_size=3) lets Keras run ops.reshape(x, (3, 8)); the importer runs any
    # batch size (it traces on a batch of one), so the error names the declared batch size
    inp = keras.Input((2, 4), batch_size=3)
    model = keras.Model(inp, keras.layers.Dense(2)(keras.ops.reshape(inp, (3, 8))))
    model.save(tmp_path / f"m{ext}")
    err = _raises_import_error(tmp_path / f"m{ext}", "reshape")
    assert "batch_size=3" in str(err) and "-1" in str(err)


@pytest.mark.parametrize("op,start,need,hint", [
    ("slice", 1, 3, "x[:, 1:3, 2:4]"),
    ("slice_update", 0, 2, "keras.ops.zeros_like(x[:, 1:3, 2:4])"),
    ("slice", "tensor", 2, "size -1 along axis 0"),
    ("slice", "vector", 2, "size -1 along axis 0"),
    ("slice_update", "tensor", 2, "axis 0 as long as the batch"),
])
def test_a_slice_with_a_batch_extent_names_the_batch_it_needs(tmp_path, op, start, need, hint):
    # Keras runs ops.slice(x, [1, 1, 2], [2, 2, 2]) on batches of 3 or more (its output keeps
    # 2 examples); the importer traces on a batch of one: the error says so and what to write.
    # The same for slice_update with updates of 2 examples (it had a bare "no larger than"
    # error), and without the x[...] indexing where a start is a tensor (for a tensor of
    # starts it suggested x[:, ..., ...]; a list holding a tensor failed with a
    # ConcretizationTypeError)
    inp = keras.Input((4, 5))
    s = (keras.ops.cast(keras.ops.argmax(inp[0, :, 0]), "int32") * 0 + 1
         if start in ("tensor", "vector") else 1)
    starts = [0 if start in ("tensor", "vector") else start, s, 2]
    if start == "vector":  # one tensor of starts
        starts = keras.ops.stack([s * 0, s, s * 0 + 2])
    if op == "slice":
        out = keras.ops.slice(inp, starts, [2, 2, 2])
    else:
        out = keras.ops.slice_update(inp * 1.0, starts, keras.ops.zeros((2, 2, 2)))
    model = keras.Model(inp, keras.layers.Flatten()(out))
    model.save(tmp_path / "m.keras")
    err = _raises_import_error(tmp_path / "m.keras", op)
    assert f"batches of at least {need} examples" in str(err), err
    assert hint in str(err), err
    if start in ("tensor", "vector"):
        assert "x[" not in str(err), err


@pytest.mark.parametrize("declared", [None, 8])
def test_a_broadcast_along_the_batch_axis_is_refused_saying_why(tmp_path, declared):
    # Keras runs ops.broadcast_to(x, (8, 3)) on batches of 1 or 8 (NumPy's rule: axis 0 of
    # the input is 1 or 8); the importer's trace on a batch of one passes, its output's axis 0
    # (8) is not 1, and the batch of two it is then traced on fails. The error was JAX's bare
    # "Incompatible types for broadcasting" and, with a declared batch size, said the batch of
    # one failed and to write the batch axis as -1 (which broadcast_to does not take)
    inp = keras.Input((3,), batch_size=declared)
    model = keras.Model(inp, keras.ops.broadcast_to(inp, (8, 3)))
    model.save(tmp_path / "m.keras")
    assert np.asarray(model(np.zeros((1, 3), "float32"))).shape == (8, 3)  # Keras: 1 or 8
    with pytest.raises(ValueError):
        model(np.zeros((2, 3), "float32"))
    err = str(_raises_import_error(tmp_path / "m.keras", "broadcast_to"))
    assert "batches of 1 or 8 examples" in err, err
    assert "then of two" in err and "no batch axis" in err, err
    assert "-1 or None" not in err, err
    assert ("batch_size=8" in err) == (declared is not None), err


def test_tensorflow_checkpoint_files_are_named_as_such(tmp_path):
    # tf.keras 2's save_weights("ckpt") (no .h5) and ModelCheckpoint(save_weights_only=True)
    # write TensorFlow's checkpoint format: the prefix, its .index and .data files, and a
    # "checkpoint" text file (the bytes here stand in for TensorFlow's; they are not read)
    (tmp_path / "ckpt.index").write_bytes(b"\x00\x00\x06\x08\x01\x1a\x02\x08" + bytes(40))
    (tmp_path / "ckpt.data-00000-of-00001").write_bytes(bytes(range(64)))
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "ckpt"\n')
    for name in ("ckpt", "ckpt.index", "ckpt.data-00000-of-00001", "checkpoint"):
        err = _raises_import_error(tmp_path / name, "TensorFlow checkpoint")
        assert "save_weights" in str(err) and ".h5" in str(err)


def test_path_that_is_not_a_path(fixtures_dir):
    # an open file is read from its name; bytes in memory need a file (h5py and the .keras
    # reader take paths), and the error says so
    with open(fixtures_dir / GOOD_KERAS, "rb") as f:
        assert load_keras(f).input_shapes == load_keras(fixtures_dir / GOOD_KERAS).input_shapes
    import io

    for bad in (io.BytesIO((fixtures_dir / GOOD_KERAS).read_bytes()), None, 3):
        with pytest.raises(TypeError, match=r"a path.*got " + type(bad).__name__):
            load_keras(bad)


@pytest.mark.filterwarnings("ignore:The object being serialized includes a `lambda`")
def test_custom_activation_functions_are_registered_by_their_saved_names(tmp_path,
                                                                         monkeypatch):
    """A named function (saved as its name) and a package-registered one (saved as
    "pkg>name"): refused naming register_activation, then computed once registered; a lambda
    (its bytecode saved) is refused saying why and what to do, not with the bytecode."""
    from model_import._layers import activations

    monkeypatch.setattr(activations, "_CUSTOM", {})  # the global registry, restored after

    def doubled_tanh(t):
        return 2.0 * keras.ops.tanh(t)

    @keras.saving.register_keras_serializable(package="tests_pkg")
    def cube(t):
        return t * t * t

    inp = keras.Input((5,))
    h = keras.layers.Dense(4, activation=doubled_tanh, name="dt")(inp)
    km = keras.Model(inp, keras.layers.Dense(3, activation=cube, name="cubed")(h))
    x = np.random.default_rng(0).normal(size=(2, 5)).astype(np.float32)
    ref = np.asarray(km(x))
    paths = [tmp_path / "act.keras", tmp_path / "act.h5"]
    for p in paths:
        km.save(p)
        err = _raises_import_error(p, r"unknown activation 'doubled_tanh'.*register a JAX "
                                      r"version, model_import.register_activation\("
                                      r"'doubled_tanh', fn\)")
        assert "dt" in str(err)
    import jax.numpy as jnp

    model_import.register_activation("doubled_tanh", lambda t: 2.0 * jnp.tanh(t))
    _raises_import_error(paths[0], r"unknown activation 'tests_pkg>cube'.*register_activation"
                                   r"\('cube', fn\)")
    model_import.register_activation("cube")(lambda t: t ** 3)
    for p in paths:
        m = load_keras(p)
        np.testing.assert_allclose(np.asarray(m(x)), ref, rtol=1e-5, atol=1e-6)
        # the logits head drops the last layer's (custom) activation as it would a named one
        np.testing.assert_allclose(np.asarray(m.with_head("logits")(x)) ** 3, ref, rtol=1e-4,
                                   atol=1e-6)
    with pytest.raises(ValueError, match="'cube' is already registered; pass override=True"):
        model_import.register_activation("cube", lambda t: t)
    model_import.register_activation("cube", lambda t: t ** 3, override=True)
    with pytest.raises(ValueError, match="'relu' is a Keras activation"):
        model_import.register_activation("relu", lambda t: t)
    with pytest.raises(TypeError, match=r"@register_activation\('my_act'\)"):
        model_import.register_activation(cube)

    lam = keras.Model(inp, keras.layers.Dense(3, activation=lambda t: t * 0.5, name="l")(inp))
    lam.save(tmp_path / "lam.keras")
    err = _raises_import_error(tmp_path / "lam.keras", r"a Python lambda, stored as bytecode, "
                                                       r"which cannot be ported\. Define it as a "
                                                       r"named function")
    assert len(str(err)) < 500  # not the bytecode


def test_a_load_keeps_the_activation_registered_then(tmp_path, monkeypatch):
    """A model computes the registered function as it was when the model was loaded, in a
    fused activation, an Activation layer and inside TimeDistributed; a load after
    register_activation(..., override=True) computes the new one, and jaxsal's compiled
    programs are not shared between the two loads (their configs are equal). Before: the
    second load's saliency was the first load's (a program cached by the file's config)."""
    import jax.numpy as jnp

    import jaxsal
    from model_import._layers import activations

    monkeypatch.setattr(activations, "_CUSTOM", {})

    @keras.saving.register_keras_serializable(package="tests_reload")
    def scaled(t):
        return 2.0 * t

    inp = keras.Input((3, 4))
    h = keras.layers.Dense(5, activation=scaled)(inp)
    h = keras.layers.Activation(scaled)(h)
    h = keras.layers.TimeDistributed(keras.layers.Dense(4, activation=scaled))(h)
    km = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(h)))
    km.save(tmp_path / "m.keras")
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    model_import.register_activation("tests_reload>scaled", lambda t: 2.0 * t)
    m1 = load_keras(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(m1(x)), np.asarray(km(x)), rtol=1e-5, atol=1e-6)
    g1 = np.asarray(jaxsal.saliency(m1, x, 0, reduce=None))
    model_import.register_activation("tests_reload>scaled", lambda t: 3.0 * t, override=True)
    m2 = load_keras(tmp_path / "m.keras")
    g2 = np.asarray(jaxsal.saliency(m2, x, 0, reduce=None))
    # every layer linear, biases 0 (as Keras initializes them): the gradient and the
    # output scale by (3/2)**3, the three scaled activations (to float32 rounding of the
    # map's scale: the weights are unseeded, and a map of scale 21 missed atol=1e-6 by 4e-7)
    np.testing.assert_allclose(g2, g1 * 1.5 ** 3, rtol=1e-5, atol=1e-6 * np.abs(g2).max())
    np.testing.assert_allclose(np.asarray(m2(x)), np.asarray(m1(x)) * 1.5 ** 3, rtol=1e-5,
                               atol=1e-5)
    # the model loaded first keeps its function, also in a program traced after the override
    np.testing.assert_allclose(np.asarray(jaxsal.saliency(m1, x[:1], 0, reduce=None)),
                               g1[:1], rtol=1e-5, atol=1e-6)
    assert jnp.all(jnp.isfinite(g2))


@pytest.mark.parametrize("option, says", [
    ("custom_objects", "custom_layers={'MyLayer': converter}"),
    ("compile", "drop compile="),
    ("safe_mode", "drop safe_mode="),
])
def test_load_model_options_are_refused_with_what_to_do_instead(option, says):
    # keras.models.load_model habits: refused (before the file is opened) with jaxsal's way
    with pytest.raises(TypeError, match=rf"no {option}= option \(it is keras\.models") as err:
        load_keras("no_such_model.keras", **{option: False})
    assert says in str(err.value)
    with pytest.raises(TypeError, match="unexpected keyword argument 'heads'.*head=, config="):
        load_keras("no_such_model.keras", heads="logits")


def test_a_layer_shared_by_a_nested_model_and_its_outer_model_is_named_in_the_refusal(tmp_path):
    """One Dense object in a nested model and in the model around it: Keras 3's .keras writes
    its weights once, and neither Keras's load_model nor the importer finds them for the
    second model; the refusal says so and what to do (the .h5 of the same model loads: the
    differential probe in the report compared it with Keras within 1e-7)."""
    from keras import layers

    shared = layers.Dense(2, name="shared")
    inner_in = keras.Input((3,))
    sub = keras.Model(inner_in, layers.Dense(3, name="inner")(shared(inner_in)), name="sub")
    inp = keras.Input((3,))
    model = keras.Model(inp, layers.Concatenate()([sub(inp), shared(inp)]))
    path = tmp_path / "shared.keras"
    model.save(path)
    with pytest.raises(ValueError, match="expected 2 variables, but received 0"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras 3.15: "Skipping nested container ..."
        keras.models.load_model(path)  # Keras cannot load its own file either
    _raises_import_error(path, match=r"no weights found for layer 'shared'.*also at "
                         r"\['sub/shared'\].*Keras's own load_model cannot load this file"
                         r".*model.save\('m.h5'\)")


class _OwnModel(keras.Model):
    """A ``keras.Model`` subclass built the Functional way: saved under its class name."""


def _wrapped_pipeline_config(model):
    """``model``'s architecture with its ``TimeDistributed`` wrapping a ``Pipeline`` (Keras
    builds no such model: ``Pipeline`` has no ``compute_output_shape``; its converter
    builds a nested graph, as a wrapped model's would be)."""
    cfg = json.loads(model.to_json())
    [td] = [lc for lc in cfg["config"]["layers"] if lc["class_name"] == "TimeDistributed"]
    td["config"]["layer"] = {"module": "keras.layers", "class_name": "Pipeline",
                             "config": {"name": "per_step", "layers": [td["config"]["layer"]]}}
    return cfg


@pytest.mark.parametrize("kind,cls", [("sequential", "Sequential"),
                                      ("functional_subclass", "_OwnModel"),
                                      ("pipeline", "Pipeline")])
def test_a_wrapper_around_a_whole_model_is_refused_without_a_converter_to_register(
        tmp_path, kind, cls):
    """TimeDistributed(Sequential(...)): refused saying a whole model is wrapped, not with
    the advice to register a converter for 'Sequential' (or 'Functional'). The same for a
    keras.Model subclass built the Functional way (it was told to register a converter for
    its class) and for a layer whose converter builds a nested graph (``Pipeline``: it had
    another message, which asked for a converter of the wrapper's own class)."""
    from keras import layers

    step = keras.Input((4,))
    if kind == "sequential":
        inner = keras.Sequential([step, layers.Dense(3)], name="per_step")
    elif kind == "functional_subclass":
        inner = _OwnModel(step, layers.Dense(3)(step), name="per_step")
    else:
        inner = layers.Dense(3)
    inp = keras.Input((3, 4))
    path = tmp_path / "wrapped_model.keras"
    model = keras.Model(inp, layers.TimeDistributed(inner, name="td")(inp))
    model.save(path)
    config = _wrapped_pipeline_config(model) if kind == "pipeline" else None
    with pytest.raises(UnsupportedLayerError, match=rf"layer 'td'.*wraps a whole model "
                       rf"\({cls} 'per_step'\).*one by one") as info:
        load_keras(path, config=config)
    assert info.value.needs is None and "register_layer" not in str(info.value)


def test_builtin_converter_passed_for_an_own_subclass_is_used(tmp_path):
    """An own subclass of LSTM, at the top level and inside Bidirectional, mapped explicitly
    to the built-in LSTM converter (``custom_layers={"pkg>MyLSTM": lookup("LSTM")}``, what
    the error asks for): used there. Before, the built-in converter was dropped for an own
    class and the error asked for the mapping it had been given."""
    from model_import._layers.registry import lookup

    @keras.saving.register_keras_serializable(package="tests_own_lstm")
    class MyLSTM(keras.layers.LSTM):
        pass

    tok = keras.Input((5,), dtype="int32")
    e = keras.layers.Embedding(10, 3, mask_zero=True)(tok)
    h = keras.layers.Bidirectional(MyLSTM(3, return_sequences=True), name="bi")(e)
    km = keras.Model(tok, MyLSTM(2, name="top")(h))
    rng = np.random.default_rng(0)
    for w in km.weights:
        w.assign(rng.normal(0.0, 0.5, w.shape).astype("float32"))
    km.save(tmp_path / "own_lstm.keras")
    x = np.array([[0, 0, 3, 4, 5], [1, 2, 0, 0, 7]], "int32")
    _raises_import_error(tmp_path / "own_lstm.keras", "tests_own_lstm>MyLSTM")
    m = load_keras(tmp_path / "own_lstm.keras",
                   custom_layers={"tests_own_lstm>MyLSTM": lookup("LSTM")})
    np.testing.assert_allclose(np.asarray(m(x)), np.asarray(km(x)), rtol=1e-5, atol=1e-6)


def _forgot_layer_impl(config, ctx):
    def call(params, x, *, rt):
        return x

    return call  # not LayerImpl(call=call)


@pytest.mark.parametrize("converter, got", [
    (lambda config, ctx: None, "None"), (_forgot_layer_impl, "a function"),
    (lambda config, ctx: {"call": lambda params, x, *, rt: x}, "a dict")])
def test_a_converter_returning_no_layer_impl_is_blamed_not_the_file(tmp_path, converter, got):
    _, (path, _) = _custom_model(tmp_path)
    err = _raises_import_error(path, custom_layers={"ChannelScale": converter})
    msg = str(err)
    assert "malformed" not in msg and "damaged" not in msg
    assert f"converter for 'ChannelScale' ({converter.__qualname__}) returned {got}" in msg
    assert "LayerImpl(call=...)" in msg
    # inside a wrapper, and as a layer's activation, the same
    scale = {"module": None, "class_name": "ChannelScale", "config": {"name": "s"}}
    for layer in ({"class_name": "TimeDistributed", "config": {"name": "td", "layer": scale}},
                  {"class_name": "Activation", "config": {"name": "a", "activation": scale}}):
        cfg = {"class_name": "Sequential", "config": {"name": "m", "layers": [
            {"class_name": "InputLayer", "config": {"name": "x", "batch_shape": [None, 3, 2]}},
            layer]}}
        with pytest.raises(KerasImportError, match=rf"converter for 'ChannelScale' "
                           rf"\({re.escape(converter.__qualname__)}\) returned {got}"):
            model_import.build_model(cfg, None, keras_version="3.15.1",
                                     custom_layers={"ChannelScale": converter})


def test_refusal_of_a_builtin_class_advises_a_registration_that_is_accepted(tmp_path):
    # a stateful LSTM is refused; register_layer('LSTM') alone raises 'already registered'
    # (the importer has its own LSTM converter): the advice must be what works
    m = keras.Sequential([keras.Input((3, 2), batch_size=1),
                          keras.layers.LSTM(2, stateful=True, name="rnn")])
    m.save(tmp_path / "st.keras")
    with pytest.raises(UnsupportedLayerError) as info:
        load_keras(tmp_path / "st.keras")
    msg = str(info.value)
    assert "register_layer('LSTM')" not in msg
    assert "register_layer('LSTM', override=True)" in msg
    assert "custom_layers={'LSTM': converter}" in msg
    builtin = registry.lookup("LSTM")
    stateless = load_keras(tmp_path / "st.keras", custom_layers={
        "LSTM": lambda cfg, ctx: builtin({**cfg, "stateful": False}, ctx)})
    x = np.random.default_rng(0).normal(size=(1, 3, 2)).astype(np.float32)
    # a stateful layer's first call starts from zero state, as a stateless one does
    np.testing.assert_allclose(np.asarray(stateless(x)), np.asarray(m(x)), atol=1e-5)


def _own_dense_model(package=None):
    """A Keras Dense layer 'real' followed by the model's own class named Dense, 'mine'
    (tanh(x @ k + b)), registered under ``package`` or not."""

    class Dense(keras.layers.Layer):  # the model's own class named like Keras's
        def __init__(self, units, **kw):
            super().__init__(**kw)
            self.units = units

        def build(self, shape):
            self.k = self.add_weight(shape=(shape[-1], self.units))
            self.b = self.add_weight(shape=(self.units,), initializer="random_normal")

        def call(self, x):
            return keras.ops.tanh(x @ self.k + self.b)

        def get_config(self):
            return {**super().get_config(), "units": self.units}

    if package:
        Dense = keras.saving.register_keras_serializable(package)(Dense)
    i = keras.Input((4,))
    return keras.Model(i, Dense(3, name="mine")(keras.layers.Dense(4, name="real")(i)))


def _own_dense_converter(config, ctx):
    return LayerImpl(call=lambda p, x, *, rt: jnp.tanh(x @ p["k"] + p["b"]),
                     convert_weights=lambda w: {"k": w[0], "b": w[1]}, n_weights=2)


def test_own_class_named_like_a_keras_class_beside_it_is_advised_a_package(tmp_path):
    # custom_layers={'Dense': ...} would serve the Keras Dense 'real' too (wrong outputs) and
    # register_layer('Dense') raises 'already registered': the advice is a package name
    m = _own_dense_model()
    m.save(tmp_path / "m.keras")
    with pytest.raises(UnsupportedLayerError) as info:
        load_keras(tmp_path / "m.keras")
    msg = str(info.value)
    assert "register_layer('Dense')" not in msg
    assert "custom_layers={'Dense': converter} to load_keras" not in msg
    assert "register_keras_serializable(package='mypkg')" in msg
    assert "custom_layers={'mypkg>Dense': converter}" in msg
    # that advice, followed, loads the model as Keras computes it
    m = _own_dense_model("mypkg")
    m.save(tmp_path / "pkg.keras")
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    got = load_keras(tmp_path / "pkg.keras", custom_layers={"mypkg>Dense": _own_dense_converter})
    np.testing.assert_allclose(np.asarray(got(x)), np.asarray(m(x)), atol=1e-5)


def test_bytes_of_a_file_are_refused_as_a_model_in_memory(fixtures_dir, tmp_path):
    # load_keras(open(f, "rb").read()) took the archive for a path: "<14 KB>: no such file",
    # with surrogates that made str(error).encode() raise
    data = (fixtures_dir / GOOD_KERAS).read_bytes()
    for contents in (data, data[:4096], b"\x89HDF\r\n\x1a\n", b"ab\0cd"):
        with pytest.raises(TypeError, match=r"got bytes of \d+ bytes that are a file's "
                           r"contents.*write it to a file first"):
            load_keras(contents)
    # a name given as bytes is still a path, shown printable and cut when long
    err = _raises_import_error(tmp_path / "nope.keras", "no such file")
    with pytest.raises(KerasImportError, match="no such file") as info:
        load_keras(os.fsencode(tmp_path) + b"/caf\xff.keras")
    assert "\\udcff" in str(info.value) and str(info.value).encode()
    long = tmp_path / ("d" * 4000)
    with pytest.raises(KerasImportError, match="no such file") as info:
        load_keras(long)
    assert len(str(info.value)) < len(str(err)) + 400 and info.value.path == str(long)
