"""tf.keras 2 ``TFOpLambda`` / ``SlicingOpLambda`` calls whose keyword arguments, constant
operands or slices change the result, against tf.keras 2.21's own outputs
(tests/fixtures/keras2/make_keras2_fixtures.py, group ``tf_op_args``; ``act__<layer>`` is the
output of each TF-function layer); and keyword arguments without a translation, which are
refused when the file is loaded instead of dropped."""

import json
import pathlib

import h5py
import jax
import numpy as np
import pytest

from import_helpers import rel_err
from model_import import KerasImportError, load_keras

K2 = pathlib.Path(__file__).parent / "fixtures" / "keras2"
TOL = 1e-5


def _check(name, form, functions):
    """Load ``name.form``; each layer computing one of ``functions`` (and the output) must
    match tf.keras. Returns the model and the reference arrays."""
    ref = np.load(K2 / f"{name}.expected.npz")
    m = load_keras(K2 / f"{name}.{form}")
    names = [info.name for info in m.layers if info.config.get("function") in functions]
    assert names, f"{name} has no layer computing {functions}"
    assert {f"act__{n}" for n in names} <= set(ref.files)
    for n in names:  # the output shape is known at load (and right)
        assert m.layer(n).output_shape == ref[f"act__{n}"].shape[1:], n
    y, got = jax.jit(lambda p, x: m.apply(p, x, capture=names))(m.params, ref["x"])
    for n in names:
        assert rel_err(got[n], ref[f"act__{n}"]) <= TOL, n
    return m, ref, y


@pytest.mark.parametrize("form", ["h5", "keras"])
def test_matmul_transposes_and_adjoints(form):
    # tf.matmul(x, d, transpose_b=True), (d, x, transpose_a=True, output_type=None),
    # tf.linalg.matmul(x, d, adjoint_a=True, adjoint_b=True): square operands, so that a
    # dropped keyword gives wrong numbers, not a shape error
    m, _, _ = _check("tfop_args_tfkeras2", form, {"linalg.matmul"})
    assert len([i for i in m.layers if i.config.get("function") == "linalg.matmul"]) == 3


@pytest.mark.parametrize("form", ["h5", "keras"])
def test_softmax_axis_none_is_the_last_axis(form):
    _check("tfop_args_tfkeras2", form, {"nn.softmax", "nn.log_softmax"})


@pytest.mark.parametrize("form", ["h5", "keras"])
def test_keyword_model_output(form):
    # transpose(conjugate=True, name="transpose") too, and their sum (tf.add_n)
    _, ref, y = _check("tfop_args_tfkeras2", form, {"compat.v1.transpose", "math.add_n"})
    assert rel_err(y, ref["y"]) <= TOL


def test_resize_preserve_aspect_ratio():
    # 5x9 into 4x4 -> 2x4 (antialiased); 2x4 into 7x5 -> scale 1.25: 2.5 rows, rounded
    # half to even as TF does -> 2x5
    m, ref, y = _check("tfop_resize_tfkeras2", "h5", {"image.resize"})
    assert ref["y"].shape[1:] == (2, 5, 2)
    assert m.output_shape == (2, 5, 2)
    assert rel_err(y, ref["y"]) <= TOL


def test_slice_with_ellipsis_in_h5():
    # x[..., 1:3]: tf.keras writes the Ellipsis as {"class_name": "__ellipsis__"}
    _, ref, y = _check("tfop_ellipsis_tfkeras2", "h5", {"__operators__.getitem"})
    assert rel_err(y, ref["y"]) <= TOL


def test_constant_list_operands():
    # x * tf.constant([...]), tf.maximum(y, [[...]]), y + tf.constant(...),
    # tf.constant(...) - y (the constant first), tf.matmul(y, tf.constant(3x2))
    _, ref, y = _check("tfop_const_tfkeras2", "h5",
                       {"math.multiply", "math.maximum", "__operators__.add", "math.subtract",
                        "linalg.matmul"})
    assert rel_err(y, ref["y"]) <= TOL


def test_one_element_lists():
    # tf.add_n([x]) and tf.stack([a], axis=1) (batch 4, 5 features): a list of one tensor,
    # not the tensor (model_import._graph._parse_node)
    _, ref, y = _check("tfop_single_tfkeras2", "h5", {"math.add_n", "stack"})
    assert rel_err(y, ref["y"]) <= TOL


# ----------------------------------------------------------------- refused keyword arguments
def _config(name):
    with h5py.File(K2 / f"{name}.h5", "r") as f:
        return json.loads(f.attrs["model_config"])


def _set_kwarg(cfg, layer, key, value):
    lay = next(lay for lay in cfg["config"]["layers"] if lay["name"] == layer)
    node = lay["inbound_nodes"][0]
    entry = node if isinstance(node[0], str) else node[0]  # a bare entry, or a list of them
    entry[3][key] = value
    return cfg


@pytest.mark.parametrize("layer,function,key,value", [
    ("tf.linalg.matmul_1", "linalg.matmul", "output_type", "int32"),  # a TF default only
    ("tf.nn.softmax", "nn.softmax", "not_a_tf_argument", 1),
    ("tf.compat.v1.transpose", "compat.v1.transpose", "squeeze_dims", [1]),
])
def test_unsupported_keyword_is_refused_at_load(layer, function, key, value):
    cfg = _set_kwarg(_config("tfop_args_tfkeras2"), layer, key, value)
    with pytest.raises(KerasImportError) as e:
        load_keras(K2 / "tfop_args_tfkeras2.h5", config=cfg)
    msg = str(e.value)
    assert f"layer {layer!r}" in msg and "TFOpLambda" in msg, msg
    assert f"tf.{function}" in msg and f"{key}={value!r}" in msg, msg


def test_unsupported_keyword_value_is_refused_at_load():
    cfg = _set_kwarg(_config("tfop_resize_tfkeras2"), "tf.image.resize", "method", "gaussian")
    with pytest.raises(KerasImportError, match=r"tf\.image\.resize: method='gaussian' is not "):
        load_keras(K2 / "tfop_resize_tfkeras2.h5", config=cfg)


def test_unsupported_slicing_keyword_is_refused_at_load():
    cfg = _set_kwarg(_config("tfop_ellipsis_tfkeras2"), "tf.__operators__.getitem", "var",
                     "v")
    with pytest.raises(KerasImportError, match=r"SlicingOpLambda.*var='v'"):
        load_keras(K2 / "tfop_ellipsis_tfkeras2.h5", config=cfg)


def test_default_values_of_untranslated_keywords_are_accepted():
    # output_type=None is recorded in the file (tf.matmul(..., output_type=None)); an explicit
    # name= is always accepted
    cfg = _set_kwarg(_config("tfop_args_tfkeras2"), "tf.nn.softmax", "name", "probs")
    ref = np.load(K2 / "tfop_args_tfkeras2.expected.npz")
    m = load_keras(K2 / "tfop_args_tfkeras2.h5", config=cfg)
    assert rel_err(m(ref["x"]), ref["y"]) <= TOL


@pytest.mark.parametrize("tag", ["tf212", "tf221"])
def test_a_raw_image_model_with_cast_floordiv_and_log_softmax(tag):
    """tf.keras 2.12 / 2.21: ``tf.cast`` of a uint8 input, Python's ``//`` and
    ``tf.math.floordiv`` (both recorded as ``compat.v1.floor_div``) and 2.12's
    ``log_softmax_v2`` activation were refused; they compute as TensorFlow did. The cast reads
    the input as codes: uint8 images are taken by the methods (the model scales them)."""
    d = pathlib.Path(__file__).parent / "fixtures" / "keras2_tfops"
    ref = np.load(d / f"raw_image_{tag}.expected.npz")
    m = load_keras(d / f"raw_image_{tag}.h5")
    got = m(ref["x"])
    for i, y in enumerate(got):
        assert rel_err(y, ref[f"y{i}"]) <= TOL, i
    import jaxsal

    cams = jaxsal.gradcam(m.with_output(0), ref["x"], [0, 2])
    assert cams.shape == (3, 2, 5, 5) and np.isfinite(np.asarray(cams)).all()


@pytest.mark.parametrize("tag", ["tf212", "tf221"])
def test_batch_renormalization_at_inference(tag):
    """BatchNormalization(renorm=True) (tf.keras 2) was refused; at inference it normalizes
    with its moving statistics like any batch norm, its renorm arrays unused (random in the
    file, so that reading one shows)."""
    d = pathlib.Path(__file__).parent / "fixtures" / "keras2_tfops"
    ref = np.load(d / f"renorm_{tag}.expected.npz")
    m = load_keras(d / f"renorm_{tag}.h5")
    assert rel_err(m(ref["x"]), ref["y"]) <= TOL
