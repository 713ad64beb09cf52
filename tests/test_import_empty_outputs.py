"""An input too small for a layer: the importer refuses it where Keras does (a convolution
whose output has a zero-size spatial axis, a cropping that leaves nothing) and returns the
empty output Keras returns elsewhere (depthwise and separable convolutions, pooling)."""

import numpy as np
import pytest

import keras
from model_import import load_keras

L = keras.layers

# (layer, input shape without the batch; the spatial axes are None in the model)
CASES = {
    "conv1d": (lambda: L.Conv1D(2, 3, name="lay"), (2, 1)),
    "conv2d_channels_first": (
        lambda: L.Conv2D(2, 3, data_format="channels_first", name="lay"), (1, 2, 5)),
    "conv3d_dilated": (lambda: L.Conv3D(2, 2, dilation_rate=2, name="lay"), (4, 2, 4, 1)),
    "conv2d_groups": (lambda: L.Conv2D(2, 3, groups=2, name="lay"), (5, 2, 2)),
    "conv2d_big_enough": (lambda: L.Conv2D(2, 3, name="lay"), (3, 3, 1)),
    "depthwise2d": (lambda: L.DepthwiseConv2D(3, name="lay"), (2, 5, 1)),
    "separable1d": (lambda: L.SeparableConv1D(2, 3, name="lay"), (2, 1)),
    "maxpool2d": (lambda: L.MaxPooling2D(2, name="lay"), (1, 5, 1)),
    "cropping2d_to_zero": (lambda: L.Cropping2D(((1, 1), (0, 0)), name="lay"), (2, 5, 1)),
    "cropping1d_past_the_end": (lambda: L.Cropping1D((2, 1), name="lay"), (2, 1)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_too_small_inputs_refused_where_keras_refuses_them(case, tmp_path):
    make, shape = CASES[case]
    layer = make()
    cf = layer.get_config().get("data_format") == "channels_first"
    inp = keras.Input((shape[0], *[None] * (len(shape) - 1)) if cf
                      else (*[None] * (len(shape) - 1), shape[-1]))
    km = keras.Model(inp, layer(inp))
    path = tmp_path / "m.keras"
    km.save(path)
    m = load_keras(path)
    x = np.random.default_rng(0).uniform(size=(1, *shape)).astype("float32")
    try:
        ref = np.asarray(km(x))
    except ValueError:
        ref = None
    if ref is None:
        with pytest.raises(ValueError, match=r"(?s)'lay'.*empty.*spatial axis"):
            m.apply(m.params, x)
    else:
        out = np.asarray(m.apply(m.params, x))
        assert out.shape == ref.shape
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
