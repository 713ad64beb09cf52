"""LoRA layers (``layer.enable_lora(rank)``) import as the sum Keras computes with, from both
file formats (the legacy .h5 writer stores the kernel and the two LoRA factors apart, a
.keras archive their sum); quantized layers (``model.quantize(...)``) are refused by name."""

import numpy as np
import pytest

import keras  # noqa: E402  (tests/conftest.py picks the backend)
from keras import layers  # noqa: E402

from import_helpers import save_keras_and_h5  # noqa: E402
from model_import import KerasImportError, UnsupportedLayerError, load_keras  # noqa: E402


def _lora_model(kind):
    if kind == "dense":
        inp = keras.Input((8,))
        hidden = layers.Dense(6, activation="relu", name="lora")(inp)
        return keras.Model(inp, layers.Dense(3)(hidden)), np.random.default_rng(1).normal(
            size=(3, 8)).astype(np.float32)
    if kind == "einsum_dense":
        inp = keras.Input((4, 5))
        out = layers.EinsumDense("abc,cd->abd", output_shape=(4, 3), bias_axes="d",
                                 name="lora")(inp)
        return keras.Model(inp, out), np.random.default_rng(1).normal(
            size=(2, 4, 5)).astype(np.float32)
    if kind == "embedding":
        inp = keras.Input((6,), dtype="int32")
        out = layers.GlobalAveragePooling1D()(layers.Embedding(10, 4, name="lora")(inp))
        return keras.Model(inp, out), np.random.default_rng(1).integers(
            0, 10, size=(2, 6)).astype(np.int32)
    inp = keras.Input((6, 6, 2))
    out = layers.Conv2D(3, 3, name="lora")(inp)
    return keras.Model(inp, out), np.random.default_rng(1).normal(
        size=(2, 6, 6, 2)).astype(np.float32)


@pytest.mark.parametrize("kind", ["dense", "einsum_dense", "embedding", "conv2d"])
@pytest.mark.parametrize("alpha", [None, 3.0])
def test_lora_layers_match_keras(kind, alpha, tmp_path):
    keras.utils.set_random_seed(0)
    model, x = _lora_model(kind)
    layer = model.get_layer("lora")
    if not hasattr(layer, "enable_lora"):
        pytest.skip(f"this Keras has no LoRA for {type(layer).__name__}")
    layer.enable_lora(2, **({} if alpha is None else {"lora_alpha": alpha}))
    rng = np.random.default_rng(0)
    for w in layer.weights:  # LoRA's b factor starts at zero: give both factors values
        if "lora" in w.path:
            w.assign(rng.normal(size=w.shape).astype("float32"))
    want = np.asarray(model(x))
    for ext, path in save_keras_and_h5(model, tmp_path, kind).items():
        np.testing.assert_allclose(np.asarray(load_keras(path)(x)), want, rtol=1e-5,
                                   atol=1e-5, err_msg=ext)


def test_quantized_layers_are_refused_by_name(tmp_path):
    inp = keras.Input((8,))
    model = keras.Model(inp, layers.Dense(3, name="head")(layers.Dense(6, name="hidden")(inp)))
    model.quantize("int8")
    for path in save_keras_and_h5(model, tmp_path, "int8").values():
        with pytest.raises(UnsupportedLayerError, match="'hidden'.*quantized \\(int8"):
            load_keras(path)


def test_quantized_refusal_offers_no_converter_it_would_ignore(tmp_path):
    """The quantization check runs before any converter is looked up, so a converter for
    the class (register_layer or custom_layers) is never called: the error must not advise
    one, and its ``needs`` is None."""
    inp = keras.Input((4,))
    model = keras.Model(inp, layers.Dense(2, name="q")(inp))
    model.quantize("int8")
    path = tmp_path / "q.keras"
    model.save(path)

    def converter(config, ctx):
        raise AssertionError("the converter of a quantized layer was called")

    with pytest.raises(UnsupportedLayerError, match="quantized") as info:
        load_keras(path, custom_layers={"Dense": converter})
    assert info.value.needs is None
    assert "register_layer" not in str(info.value)
    assert "custom_layers" not in str(info.value)
    assert "before quantization" in str(info.value)


def test_quantized_attention_is_refused_as_quantized(tmp_path):
    """The projections inside MultiHeadAttention are quantized, not the layer's own config:
    the integer arrays among its weights say so."""
    inp = keras.Input((5, 4))
    model = keras.Model(inp, layers.MultiHeadAttention(2, 2, name="mha")(inp, inp))
    model.quantize("int8")
    for path in save_keras_and_h5(model, tmp_path, "mha").values():
        with pytest.raises(KerasImportError, match="'mha'.*integer ones.*quantized model"):
            load_keras(path)
