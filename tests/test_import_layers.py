"""Layer zoo: every converter against real Keras 3 (NumPy backend unless ``KERAS_BACKEND``
says otherwise: see conftest.py), layer by layer.

Each zoo is a small Functional model; every one of its layers' outputs is compared with the
Keras output of that layer (a Keras sub-model with all layer outputs), after saving as
``.keras`` and ``.h5``. Weights are perturbed (BN statistics, biases, gammas) so that wrong
formulas or weight orders show.
"""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers, ops  # noqa: E402

import model_import  # noqa: E402
from import_helpers import perturb_keras, rel_err, save_keras_and_h5  # noqa: E402
from model_import import ACTIVATION_NAMES, load_keras  # noqa: E402

TOL = 1e-4


def _zoo_2d():
    inp = keras.Input((12, 10, 3), name="img")
    x = layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="c_same_s2")(inp)
    y = layers.Conv2D(6, (3, 2), padding="same", dilation_rate=(2, 1), name="c_dil")(inp)
    y = layers.BatchNormalization(epsilon=1e-2, name="bn")(y)
    y = layers.BatchNormalization(center=False, name="bn_nocenter")(y)
    y = layers.BatchNormalization(scale=False, name="bn_noscale")(y)
    y = layers.Conv2D(6, 3, groups=3, padding="same", use_bias=False, name="c_groups")(y)
    y = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", strides=2,
                               name="dw_mult")(y)
    y = layers.SeparableConv2D(6, 3, padding="same", depth_multiplier=2, activation="elu",
                               name="sep")(y)
    x = layers.Add(name="add")([x, layers.Conv2D(6, 1, strides=2, name="proj")(inp)])
    x = layers.ZeroPadding2D(((1, 0), (2, 1)), name="zpad")(x)
    x = layers.Cropping2D(((1, 0), (2, 1)), name="crop")(x)
    a = layers.MaxPooling2D(3, strides=2, padding="same", name="maxp_same")(x)
    b = layers.AveragePooling2D(3, strides=2, padding="same", name="avgp_same")(y)
    c = layers.Subtract(name="sub")([a, b])
    d = layers.Multiply(name="mul")([a, b])
    e = layers.Average(name="avg")([a, b, c])
    f = layers.Maximum(name="max")([a, b])
    g = layers.Minimum(name="min")([a, b])
    h = layers.Concatenate(axis=-1, name="cat")([c, d, e, f, g])
    h = layers.UpSampling2D(2, name="up_nearest")(h)
    h2 = layers.UpSampling2D((2, 3), interpolation="bilinear", name="up_bilinear")(h)
    h2 = layers.AveragePooling2D((2, 3), name="avgp")(h2)
    h = layers.Concatenate(axis=1, name="cat_axis1")([h, h2])
    h = layers.LayerNormalization(axis=[1, 2, 3], name="ln_multi")(h)
    h = layers.LayerNormalization(epsilon=1e-3, center=False, name="ln")(h)
    # rms_scaling: Keras creates gamma whatever `scale`/`center` say, and never beta
    h = layers.LayerNormalization(rms_scaling=True, name="ln_rms")(h)
    h = layers.LayerNormalization(rms_scaling=True, scale=False, axis=[1, 2], name="ln_rms_ns")(h)
    h = layers.RMSNormalization(axis=[2, 3], name="rmsn")(h)
    h = layers.GroupNormalization(groups=5, name="gn")(h)
    h = layers.ReLU(max_value=1.5, negative_slope=0.1, threshold=0.2, name="relu_full")(h)
    h = layers.LeakyReLU(negative_slope=0.15, name="leaky")(h)
    h = layers.PReLU(shared_axes=[1, 2], name="prelu")(h)
    h = layers.ELU(alpha=0.7, name="elu")(h)
    p = layers.GlobalMaxPooling2D(keepdims=True, name="gmp")(h)
    h = layers.Multiply(name="se_mul")([h, p])
    h = layers.MaxPooling2D(2, name="maxp")(h)
    r = layers.Reshape((-1, 5), name="reshape")(h)
    r = layers.Permute((2, 1), name="permute")(r)
    r = layers.Flatten(name="flat_seq")(r)
    q = layers.GlobalAveragePooling2D(name="gap")(h)
    q = layers.Dense(8, activation="tanh", name="dense")(q)
    q = layers.RepeatVector(3, name="repeat")(q)
    q = layers.Flatten(name="flat_rep")(q)
    o = layers.Concatenate(name="cat_out")([r, q])
    o = layers.Dropout(0.5, name="drop")(o)
    o = layers.UnitNormalization(name="unitnorm")(o)
    o = layers.Dense(5, name="logits")(o)
    o = layers.Softmax(name="softmax")(o)
    return keras.Model(inp, o, name="zoo2d")


def _zoo_channels_first():
    inp = keras.Input((3, 11, 9), name="img_cf")
    x = layers.Conv2D(4, 3, strides=2, padding="same", data_format="channels_first",
                      activation="relu", name="cf_conv")(inp)
    x = layers.BatchNormalization(axis=1, name="cf_bn")(x)
    x = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2,
                               data_format="channels_first", name="cf_dw")(x)
    x = layers.SeparableConv2D(5, 3, padding="same", data_format="channels_first",
                               name="cf_sep")(x)
    x = layers.ZeroPadding2D(((1, 2), (0, 1)), data_format="channels_first", name="cf_pad")(x)
    x = layers.Cropping2D(((0, 1), (1, 0)), data_format="channels_first", name="cf_crop")(x)
    x = layers.UpSampling2D(2, data_format="channels_first", name="cf_up")(x)
    a = layers.MaxPooling2D(2, data_format="channels_first", name="cf_maxp")(x)
    b = layers.AveragePooling2D(3, strides=2, padding="same", data_format="channels_first",
                                name="cf_avgp")(x)
    x = layers.Concatenate(axis=1, name="cf_cat")([a, b])
    g = layers.GlobalAveragePooling2D(data_format="channels_first", name="cf_gap")(x)
    f = layers.Flatten(data_format="channels_first", name="cf_flat")(x)
    o = layers.Concatenate(name="cf_out_cat")([g, f])
    o = layers.Dense(4, activation="softmax", name="cf_dense")(o)
    return keras.Model(inp, o, name="zoo_cf")


def _zoo_1d():
    inp = keras.Input((20, 3), name="seq")
    x = layers.Conv1D(5, 3, padding="causal", dilation_rate=2, activation="relu",
                      name="c1_causal")(inp)
    y = layers.Conv1D(5, 4, strides=3, padding="same", name="c1_same")(inp)
    z = layers.SeparableConv1D(5, 3, padding="same", depth_multiplier=2, name="sep1")(inp)
    z = layers.DepthwiseConv1D(3, padding="same", depth_multiplier=1, name="dw1")(z)
    z = layers.MaxPooling1D(3, strides=3, padding="same", name="mp1")(z)
    y = layers.Add(name="add1")([y, z])
    x = layers.AveragePooling1D(2, name="ap1")(x)
    x = layers.ZeroPadding1D((1, 2), name="zp1")(x)
    x = layers.Cropping1D((2, 0), name="crop1")(x)
    x = layers.UpSampling1D(2, name="up1")(x)
    x = layers.MaxPooling1D(2, padding="valid", name="mp1b")(x)
    x = layers.AveragePooling1D(2, strides=1, padding="same", name="ap1_same")(x)
    x = layers.GlobalMaxPooling1D(name="gmp1")(x)
    y = layers.GlobalAveragePooling1D(name="gap1")(y)
    w = layers.Conv1D(4, 3, data_format="channels_first", name="c1_cf")(inp)
    w = layers.Flatten(name="flat1")(w)
    dt = layers.Dot(axes=1, name="dot")([x, y])
    dn = layers.Dot(axes=-1, normalize=True, name="dot_norm")([x, y])
    o = layers.Concatenate(name="cat1")([x, y, w, dt, dn])
    o = layers.Dense(3, activation="sigmoid", name="out1")(o)
    return keras.Model(inp, o, name="zoo1d")


def _zoo_activations():
    inp = keras.Input((7,), name="vec")
    outs = []
    for name in ACTIVATION_NAMES:
        outs.append(layers.Dense(6, activation=name, name=f"dense_{name}")(inp))
        pre = layers.Dense(6, name=f"pre_{name}")(inp)
        outs.append(layers.Activation(name, name=f"act_{name}")(pre))
    # an activation given as a layer is saved as that layer's config, named by the layer
    # ("relu" here), not by its function
    for act in (layers.LeakyReLU(0.1, name="relu"), layers.ELU(alpha=0.3, name="elu"),
                layers.ReLU(max_value=0.5, name="sigmoid"), layers.Softmax(name="softmax_l")):
        outs.append(layers.Dense(6, activation=act, name=f"dense_layer_{act.name}")(inp))
    o = layers.Concatenate(name="acts")(outs)
    return keras.Model(inp, o, name="zoo_act")


def _zoo_preprocessing():
    inp = keras.Input((6, 5, 3), name="raw")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(inp)
    # NumPy arrays in a config and as an op operand are saved as {"class_name": "__numpy__"
    # or "__tensor__", ...}
    x = layers.Rescaling(np.array([0.5, 2.0, -1.0], "float32"),
                         offset=np.array([0.1, 0.0, -0.2], "float32"), name="rescale_np")(x)
    x = (x - np.array([0.3, -0.1, 0.2], "float32")) / np.array([1.5, 0.5, 2.0], "float32")
    x = layers.Normalization(mean=[0.1, -0.2, 0.3], variance=[0.5, 2.0, 1.5], name="norm_cfg")(x)
    n = layers.Normalization(axis=-1, name="norm_adapt")
    n.adapt(np.random.default_rng(0).normal(1.0, 2.0, (16, 6, 5, 3)).astype("float32"))
    x = n(x)
    x = layers.Normalization(mean=[0.2, 0.1, 0.0], variance=[1.0, 4.0, 0.25], invert=True,
                             name="norm_invert")(x)
    x = layers.RandomFlip(name="aug_flip")(x)
    x = layers.Identity(name="ident")(x)
    # Keras 3 operations on symbolic tensors (recorded as keras.src.ops nodes)
    h = ops.relu(x + 3.0) * (1.0 / 6.0)
    h = h * x
    h = 1.0 - h
    h = h / 2.0
    h = ops.mean(h, axis=[1, 2], keepdims=True) + ops.sigmoid(h) ** 2
    s = ops.reshape(h, (-1, 90))[:, 3:40]
    t = ops.transpose(h, (0, 3, 1, 2))
    t = ops.concatenate([ops.reshape(t, (-1, 90)), s, ops.max(x, axis=(1, 2))], axis=-1)
    t = ops.softmax(t, axis=-1) + ops.gelu(t) - ops.clip(t, -0.5, 0.5)
    o = layers.Dense(4, name="pp_out")(t)
    return keras.Model(inp, o, name="zoo_pp")


def _zoo_3d():
    inp = keras.Input((6, 7, 5, 2), name="vol")
    x = layers.Conv3D(3, 3, padding="same", strides=(2, 1, 1), activation="relu",
                      name="c3")(inp)
    x = layers.ZeroPadding3D(((1, 0), (0, 1), (1, 1)), name="zp3")(x)
    x = layers.Cropping3D(((0, 1), (1, 0), (0, 1)), name="crop3")(x)
    x = layers.SpatialDropout3D(0.2, name="sdrop3")(x)
    a = layers.MaxPooling3D(2, padding="same", name="mp3")(x)
    a = layers.UpSampling3D((1, 2, 1), name="up3")(a)
    b = layers.AveragePooling3D(2, name="ap3")(x)
    o = layers.Concatenate(name="cat3")([layers.GlobalMaxPooling3D(name="gmp3")(a),
                                         layers.GlobalAveragePooling3D(name="gap3")(b)])
    return keras.Model(inp, layers.Dense(2, name="out3")(o), name="zoo3d")


def _zoo_convnext_block():
    from keras.src.applications.convnext import LayerScale, StochasticDepth

    inp = keras.Input((6, 6, 8), name="feat")
    x = layers.DepthwiseConv2D(7, padding="same", name="dw7")(inp)
    x = layers.LayerNormalization(epsilon=1e-6, name="ln_cn")(x)
    x = layers.Dense(16, activation="gelu", name="pw1")(x)
    x = layers.Dense(8, name="pw2")(x)
    x = LayerScale(0.5, 8, name="layer_scale")(x)
    x = StochasticDepth(0.3, name="stoch_depth")(x)
    x = layers.Add(name="residual")([inp, x])
    return keras.Model(inp, layers.GlobalAveragePooling2D(name="gap_cn")(x), name="zoo_cn")


def _zoo_upsampling():
    """Transposed convolutions (paddings, strides, output_padding, dilation, kernels smaller
    than the stride), Resizing (every Keras 3 interpolation, up and down, odd sizes,
    antialias, crop/pad to aspect ratio) and CenterCrop (smaller and larger targets)."""
    inp = keras.Input((7, 9, 3), name="img_up")
    a = layers.Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu",
                               name="ct_same_s2")(inp)
    b = layers.Conv2DTranspose(4, (3, 2), strides=(2, 3), output_padding=(1, 2),
                               name="ct_valid_op")(inp)
    c = layers.Conv2DTranspose(3, 4, strides=3, padding="same", output_padding=(2, 0),
                               use_bias=False, name="ct_same_op")(inp)
    d = layers.Conv2DTranspose(3, 3, dilation_rate=(2, 1), padding="same", name="ct_dil")(inp)
    e = layers.Conv2DTranspose(3, 1, strides=3, name="ct_k1_s3")(inp)
    f = layers.Conv2DTranspose(3, 2, padding="same", output_padding=0, name="ct_same_even")(inp)
    outs = [a, b, c, d, e, f]
    outs.append(layers.Resizing(5, 6, name="rs_bilinear_down")(inp))
    outs.append(layers.Resizing(13, 4, interpolation="nearest", name="rs_nearest")(inp))
    outs.append(layers.Resizing(11, 5, interpolation="nearest", name="rs_nearest_b")(a))
    outs.append(layers.Resizing(10, 17, interpolation="bicubic", name="rs_bicubic")(inp))
    outs.append(layers.Resizing(4, 14, interpolation="lanczos3", name="rs_lanczos3")(inp))
    outs.append(layers.Resizing(9, 5, interpolation="lanczos5", name="rs_lanczos5")(inp))
    outs.append(layers.Resizing(4, 5, antialias=True, name="rs_antialias")(inp))
    outs.append(layers.Resizing(3, 7, interpolation="bicubic", antialias=True,
                                name="rs_bicubic_aa")(a))
    outs.append(layers.Resizing(6, 5, crop_to_aspect_ratio=True, name="rs_crop")(inp))
    outs.append(layers.Resizing(5, 11, interpolation="nearest", crop_to_aspect_ratio=True,
                                name="rs_crop_nearest")(inp))
    outs.append(layers.Resizing(8, 6, pad_to_aspect_ratio=True, fill_value=0.5,
                                name="rs_pad_h")(inp))
    outs.append(layers.Resizing(5, 9, interpolation="bicubic", pad_to_aspect_ratio=True,
                                fill_value=-1.0, name="rs_pad_w")(inp))
    outs.append(layers.CenterCrop(4, 6, name="cc_crop")(inp))
    outs.append(layers.CenterCrop(6, 9, name="cc_crop_odd")(a))
    outs.append(layers.CenterCrop(9, 5, name="cc_taller")(inp))  # smaller input: resized
    outs.append(layers.CenterCrop(10, 12, name="cc_larger")(inp))
    pooled = [layers.GlobalAveragePooling2D(name=f"up_gap_{i}")(o)
              for i, o in enumerate(outs)]
    o = layers.Concatenate(name="up_cat")(pooled)
    return keras.Model(inp, layers.Dense(3, name="up_out")(o), name="zoo_up")


def _zoo_upsampling_cf():
    inp = keras.Input((3, 7, 9), name="img_up_cf")
    cf = {"data_format": "channels_first"}
    a = layers.Conv2DTranspose(4, 3, strides=2, padding="same", output_padding=1,
                               activation="tanh", name="cf_ct", **cf)(inp)
    b = layers.Conv2DTranspose(2, (2, 3), strides=(3, 1), name="cf_ct_valid", **cf)(inp)
    outs = [a, b, layers.Resizing(5, 13, name="cf_rs", **cf)(inp),
            layers.Resizing(4, 4, interpolation="nearest", name="cf_rs_nearest", **cf)(a),
            layers.Resizing(6, 4, interpolation="bicubic", crop_to_aspect_ratio=True,
                            name="cf_rs_crop", **cf)(inp),
            layers.Resizing(8, 5, pad_to_aspect_ratio=True, fill_value=0.25,
                            name="cf_rs_pad", **cf)(inp),
            layers.CenterCrop(5, 4, name="cf_cc", **cf)(inp),
            layers.CenterCrop(6, 11, name="cf_cc_wider", **cf)(inp)]
    pooled = [layers.GlobalMaxPooling2D(name=f"cf_gmp_{i}", **cf)(o) for i, o in enumerate(outs)]
    return keras.Model(inp, layers.Concatenate(name="cf_up_cat")(pooled), name="zoo_up_cf")


def _zoo_transpose_1d():
    inp = keras.Input((9, 3), name="seq_t")
    a = layers.Conv1DTranspose(4, 3, strides=2, padding="same", activation="relu",
                               name="ct1_same")(inp)
    b = layers.Conv1DTranspose(2, 4, strides=3, output_padding=2, name="ct1_valid_op")(inp)
    c = layers.Conv1DTranspose(3, 3, dilation_rate=3, padding="same", use_bias=False,
                               name="ct1_dil")(inp)
    d = layers.Conv1DTranspose(3, 2, strides=2, data_format="channels_first",
                               name="ct1_cf")(inp)
    pooled = [layers.GlobalAveragePooling1D(name="gap1_a")(a),
              layers.GlobalAveragePooling1D(name="gap1_b")(b),
              layers.GlobalAveragePooling1D(name="gap1_c")(c),
              layers.Flatten(name="flat1_d")(d)]
    return keras.Model(inp, layers.Concatenate(name="cat1_t")(pooled), name="zoo_t1d")


def _zoo_transpose_3d():
    inp = keras.Input((4, 5, 3, 2), name="vol_t")
    a = layers.Conv3DTranspose(3, 3, strides=(2, 1, 2), padding="same", activation="relu",
                               name="ct3_same")(inp)
    b = layers.Conv3DTranspose(2, (2, 3, 1), strides=(1, 2, 3), output_padding=(0, 1, 2),
                               name="ct3_valid_op")(inp)
    c = layers.Conv3DTranspose(2, 2, padding="same", data_format="channels_first",
                               name="ct3_cf")(inp)
    pooled = [layers.GlobalAveragePooling3D(name="gap3_a")(a),
              layers.GlobalAveragePooling3D(name="gap3_b")(b),
              layers.Flatten(name="flat3_c")(c)]
    return keras.Model(inp, layers.Concatenate(name="cat3_t")(pooled), name="zoo_t3d")


ZOOS = {"2d": (_zoo_2d, (12, 10, 3)), "convnext_block": (_zoo_convnext_block, (6, 6, 8)), "3d": (_zoo_3d, (6, 7, 5, 2)), "channels_first": (_zoo_channels_first, (3, 11, 9)),
        "1d": (_zoo_1d, (20, 3)), "activations": (_zoo_activations, (7,)),
        "preprocessing": (_zoo_preprocessing, (6, 5, 3)),
        "upsampling": (_zoo_upsampling, (7, 9, 3)),
        "upsampling_cf": (_zoo_upsampling_cf, (3, 7, 9)),
        "transpose_1d": (_zoo_transpose_1d, (9, 3)),
        "transpose_3d": (_zoo_transpose_3d, (4, 5, 3, 2))}


@pytest.fixture(scope="module", params=sorted(ZOOS))
def zoo(request, tmp_path_factory):
    make, shape = ZOOS[request.param]
    m = make()
    perturb_keras(m, seed=1)
    x = np.random.default_rng(2).normal(0.0, 1.5, (3, *shape)).astype("float32")
    names = [lay.name for lay in m.layers if not isinstance(lay, layers.InputLayer)]
    ref = keras.Model(m.input, [m.get_layer(n).output for n in names])(x, training=False)
    ref = {n: np.asarray(r) for n, r in zip(names, ref)}
    d = tmp_path_factory.mktemp(f"zoo_{request.param}")
    return m, x, ref, save_keras_and_h5(m, d, request.param)


@pytest.mark.parametrize("ext", [".keras", ".h5"])
def test_zoo_every_layer_matches_keras(zoo, ext):
    km, x, ref, paths = zoo
    m = load_keras(paths[ext])
    names = list(ref)
    y, acts = m.apply(m.params, x, capture=names)
    bad = {n: rel_err(acts[n], ref[n]) for n in names if rel_err(acts[n], ref[n]) > TOL}
    assert not bad, bad
    assert rel_err(y, np.asarray(km(x, training=False))) <= TOL
    for n in names:  # output shapes without batch, as Keras reports them
        assert m.layer(n).output_shape == tuple(ref[n].shape[1:]), n
    if km.name == "zoo_cf":
        assert m.layer("cf_conv").data_format == "channels_first"
        assert m.layer("cf_bn").data_format == "channels_first"
        assert m.layer("cf_gap").output_shape == (10,)  # 5 + 5 channels on axis 1


@pytest.mark.parametrize("zoo", ["upsampling", "upsampling_cf", "transpose_1d", "transpose_3d"],
                         indirect=True)
def test_zoo_gradients_through_upsampling_layers(zoo):
    """Saliency flows through transposed convolutions, Resizing and CenterCrop: under jit,
    the summed outputs are Keras's and their input gradient is finite and not zero (eager ==
    jit gradients, and their values, are checked layer by layer in
    test_import_upsampling.py)."""
    import jax
    import jax.numpy as jnp

    km, x, ref, paths = zoo
    m = load_keras(paths[".keras"])

    @jax.jit
    def value_and_grad(params, v):
        return jax.value_and_grad(lambda u: jnp.sum(m.apply(params, u)))(v)

    total, g = value_and_grad(m.params, x)
    g, y = np.asarray(g), np.asarray(km(x, training=False))
    assert abs(float(total) - float(y.sum())) <= 1e-4 * max(1.0, float(np.abs(y).sum()))
    assert g.shape == x.shape and np.isfinite(g).all() and np.abs(g).max() > 0


# Registered classes that the zoos do not build, and where they are tested instead.
_COVERED_ELSEWHERE = {
    "TFOpLambda": "tf.keras fixtures in test_import_keras2.py",
    "ThresholdedReLU": "tf.keras zoo in test_import_keras2.py (Keras 3 has no such layer)",
    "SlicingOpLambda": "tf.keras fixtures in test_import_keras2.py",
    "InputLayer": "every model",
    "CustomScaleLayer": "InceptionResNetV2 in test_import_apps.py (keras.applications' own)",
    "CuDNNLSTM": "test_import_sequence.py against LSTM (tf.keras 1 only; Keras 3 has none)",
    "CuDNNGRU": "test_import_sequence.py against GRU (tf.keras 1 only; Keras 3 has none)",
    "GroupQueryAttention": "test_import_gqa.py",
    "ReversibleEmbedding": "test_import_gqa.py",
    **{f"Adaptive{k}Pooling{d}D": "test_import_adaptive_pooling.py"
       for k in ("Average", "Max") for d in (1, 2, 3)},
    "SpectralNormalization": "test_import_spectral_norm.py",
    "CategoryEncoding": "test_import_encoding.py",
    "Discretization": "test_import_encoding.py",
    "IntegerLookup": "test_import_encoding.py (files written by Keras 3 on TensorFlow)",
    "STFTSpectrogram": "test_import_audio.py",
    "MelSpectrogram": "test_import_audio.py",
}
_ALIASES = {"Convolution1D", "Convolution2D", "Convolution3D", "SeparableConvolution1D",
            "SeparableConvolution2D", "MaxPool1D", "MaxPool2D", "MaxPool3D", "AvgPool1D",
            "AvgPool2D", "AvgPool3D", "GlobalAvgPool1D", "GlobalAvgPool2D", "GlobalAvgPool3D",
            "GlobalMaxPool1D", "GlobalMaxPool2D", "GlobalMaxPool3D", "SyncBatchNormalization",
            "Convolution1DTranspose", "Convolution2DTranspose", "Convolution3DTranspose",
            "GroupedQueryAttention"}


def test_zoos_cover_the_converters():
    """Every registered layer class (and the common Keras 3 ops) is in some zoo (here, in
    test_import_sequence.py or test_import_rnn_cells.py; layers inside wrappers count), except the identity-at-inference
    layers, aliases and those tested elsewhere (all registered)."""
    from test_import_rnn_cells import ZOOS as RNN_CELL_ZOOS
    from test_import_sequence import ZOOS as SEQUENCE_ZOOS
    from test_import_augment import COVERED as AUGMENT_COVERED

    seen = set()

    def visit(lay):
        mod = str(lay.get("module", ""))
        seen.add(("ops." if mod.startswith("keras.src.ops") else "") + lay["class_name"])
        for key in ("layer", "backward_layer"):  # TimeDistributed, Bidirectional
            if isinstance(lay.get("config", {}).get(key), dict):
                visit(lay["config"][key])

    for make, _ in [*ZOOS.values(), *SEQUENCE_ZOOS.values(), *RNN_CELL_ZOOS.values()]:
        km = make()
        for lay in km.get_config()["layers"]:
            visit(lay)
    wanted = {c for c in model_import.registered_classes()
              if not c.startswith("ops.")}
    wanted -= set(_COVERED_ELSEWHERE) | _ALIASES
    # regularization layers, the identity at inference
    identity = {"SpatialDropout1D", "SpatialDropout2D", "GaussianNoise", "GaussianDropout",
                "AlphaDropout", "ActivityRegularization"}
    wanted -= AUGMENT_COVERED  # augmentation layers: test_import_augment.py
    excluded = set(_COVERED_ELSEWHERE) | _ALIASES | identity | AUGMENT_COVERED
    stale = excluded - set(model_import.registered_classes())
    assert not stale, f"excluded from the coverage check but not registered: {sorted(stale)}"
    wanted -= identity
    missing = wanted - seen
    assert not missing, f"layer classes not exercised by any zoo: {sorted(missing)}"
    for op in ("ops.Add", "ops.Multiply", "ops.Subtract", "ops.TrueDivide", "ops.Relu",
               "ops.Mean", "ops.Reshape", "ops.GetItem", "ops.Transpose", "ops.Concatenate",
               "ops.Softmax", "ops.Gelu", "ops.Clip", "ops.Power", "ops.Sigmoid", "ops.Max"):
        assert op in seen, op


def test_every_activation_string_is_exercised():
    import keras.src.activations as ka

    keras_names = set(ka.ALL_OBJECTS_DICT) - {"threshold"}  # needs arguments: not a string
    assert keras_names <= set(ACTIVATION_NAMES), keras_names - set(ACTIVATION_NAMES)


def test_registered_classes_lists_builtin_converters():
    names = model_import.registered_classes()
    assert names == sorted(names)
    for cls in ("Conv2D", "BatchNormalization", "LayerScale", "TFOpLambda", "ops.Add",
                "Concatenate", "UpSampling2D", "Normalization", "Rescaling"):
        assert cls in names


def test_unit_normalization_of_small_vectors_follows_the_keras_version(tmp_path):
    """Keras 3.6 computes ``UnitNormalization`` with ``ops.normalize(epsilon=1e-12)``,
    ``x * min(rsqrt(ss), 1e12)``: a vector of norm 5e-8 comes out of norm 1. Keras 3.0-3.5
    (and tf.keras's ``l2_normalize``) used ``x * rsqrt(max(ss, 1e-12))``: norm 0.05. The
    importer used the old formula for every file."""
    import h5py

    inp = keras.Input((3,))
    model = keras.Model(inp, layers.UnitNormalization(name="unit")(inp))
    x = np.array([[3e-8, 4e-8, 0.0], [3.0, -4.0, 1.0], [0.0, 0.0, 0.0]], np.float32)
    ref = np.asarray(model.predict(x, verbose=0))
    np.testing.assert_allclose(np.linalg.norm(ref[0]), 1.0, rtol=1e-5)  # Keras >= 3.6
    for path in save_keras_and_h5(model, tmp_path, "unit").values():
        np.testing.assert_allclose(np.asarray(load_keras(path)(x)), ref, rtol=1e-5, atol=0)
    old = tmp_path / "unit.h5"
    with h5py.File(old, "r+") as f:  # the same file as Keras 3.5 wrote it
        f.attrs["keras_version"] = "3.5.0"
    np.testing.assert_allclose(np.asarray(load_keras(old)(x))[0], x[0] * 1e6, rtol=1e-5)


def test_relu_threshold_gives_zero_at_the_threshold(tmp_path):
    """Keras 3's ``ReLU`` and ``activations.relu`` (and tf.keras 2's ``backend.relu``) keep
    ``x > threshold``: ``x == threshold`` gives 0, with or without ``negative_slope`` and
    ``max_value`` (the importer kept ``x >= threshold``: 1.0 at a threshold of 1.0). A
    negative threshold (``activations.relu`` only) with ``max_value`` clips ``(t, 0)`` to 0."""
    from keras import activations

    inp = keras.Input((9,))
    outs = [layers.ReLU(threshold=1.0)(inp),
            layers.ReLU(threshold=1.0, negative_slope=0.1)(inp),
            layers.ReLU(threshold=1.0, max_value=3.0)(inp),
            layers.ReLU(threshold=1.0, negative_slope=0.2, max_value=3.0)(inp),
            activations.relu(inp, threshold=0.5),
            activations.relu(inp, threshold=-1.0, max_value=2.0),
            activations.relu(inp, threshold=-1.0, negative_slope=0.3, max_value=2.0),
            activations.relu(inp, threshold=-1.0, negative_slope=0.3)]
    model = keras.Model(inp, layers.Concatenate()(outs))
    x = np.array([[-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 4.0]], np.float32)
    ref = np.asarray(model.predict(x, verbose=0))
    assert ref[0, 5] == 0.0 and ref[0, 9 + 5] == 0.0  # Keras: 0 at x == threshold == 1
    for path in save_keras_and_h5(model, tmp_path, "relu_tie").values():
        np.testing.assert_array_equal(np.asarray(load_keras(path)(x)), ref)


def test_group_normalization_of_an_unbuilt_config_with_groups_minus_one(tmp_path):
    """``GroupNormalization(groups=-1)`` (one group per channel) stays -1 in an unbuilt
    model's config (Keras sets the count when it builds): a weights file loaded with that
    config gives Keras's values (the importer reshaped to -1 groups: a raw reshape error).
    A count that does not divide the channels is refused saying what Keras expects."""
    model = keras.Sequential([layers.GroupNormalization(groups=-1)])
    cfg = model.to_json()
    assert '"groups": -1' in cfg
    model.build((None, 3, 6))
    model.layers[0].set_weights([np.arange(6, dtype=np.float32) + 1,
                                 np.arange(6, dtype=np.float32)])
    path = tmp_path / "gn.weights.h5"
    model.save_weights(path)
    x = np.random.default_rng(0).normal(size=(2, 3, 6)).astype(np.float32)
    ref = np.asarray(model.predict(x, verbose=0))
    # Keras's x * inv - mean * inv rounds differently (3.5e-5 relative at one entry)
    np.testing.assert_allclose(np.asarray(load_keras(path, config=cfg)(x)), ref, rtol=TOL,
                               atol=TOL)
    bad = keras.Sequential([layers.GroupNormalization(groups=4)]).to_json()
    with pytest.raises(Exception, match=r"divides the 6 channels.*got 4"):
        load_keras(path, config=bad)(x)


def test_merges_of_different_ranks_expand_at_axis_1(tmp_path):
    """Keras 3 and tf.keras 2 merge inputs of different ranks by expanding the lower-rank ones
    at axis 1 (``Add()([(N,4,3), (N,3)])`` is ``a + b[:, None, :]``, and ``(N,3)`` beside
    ``(N,2,4,3)`` becomes ``(N,1,1,3)``). The importer broadcast from the last axis: a
    broadcasting error for N=2, wrong values for N=4. Masks: an expanded input loses its
    mask in Keras; the others keep theirs (Keras 3.4+'s masked ``Maximum``/``Multiply``)."""
    a, b, c = keras.Input((4, 3)), keras.Input((3,)), keras.Input((2, 4, 3))
    ops_np = {"Add": np.add, "Subtract": np.subtract, "Multiply": np.multiply,
              "Maximum": np.maximum, "Minimum": np.minimum,
              "Average": lambda u, v: (u + v) / 2}
    outs = [getattr(layers, k)()([a, b]) for k in ops_np]
    outs.append(layers.Add()([b, c, a]))
    t = keras.Input((4,), dtype="int32")
    e = layers.Embedding(5, 3, mask_zero=True)(t)  # (N,4,3), its mask (N,4)
    outs += [layers.Maximum()([e, b]), layers.Multiply()([e, b]), layers.Minimum()([c, e])]
    model = keras.Model([a, b, c, t], outs)
    rng = np.random.default_rng(0)
    for n in (2, 4):
        xs = [rng.normal(size=(n, 4, 3)).astype(np.float32),
              rng.normal(size=(n, 3)).astype(np.float32),
              rng.normal(size=(n, 2, 4, 3)).astype(np.float32),
              np.array([[1, 2, 0, 0], [0, 3, 4, 0]] * (n // 2), np.int32)]
        ref = [np.asarray(r) for r in model.predict(xs, verbose=0)]
        for r, op in zip(ref, ops_np.values()):  # Keras's rule, independently
            np.testing.assert_allclose(r, op(xs[0], xs[1][:, None, :]), rtol=1e-6)
        np.testing.assert_allclose(ref[6], xs[1][:, None, None, :] + xs[2] + xs[0][:, None],
                                   rtol=1e-6, atol=1e-6)
        for path in save_keras_and_h5(model, tmp_path, f"ranks{n}").values():
            got = load_keras(path)(xs)
            for i, (g, r) in enumerate(zip(got, ref)):
                np.testing.assert_allclose(np.asarray(g), r, rtol=1e-6, atol=1e-6,
                                           err_msg=f"{path.suffix} N={n} output {i}")


def test_maximum_and_minimum_of_three_tied_inputs_split_their_gradient_equally(tmp_path):
    """``Maximum``/``Minimum`` of three inputs folded pairwise with ``jnp.maximum`` gave tied
    inputs ``[1/4, 1/4, 1/2]`` of the gradient, by position; they now take a max (min)
    reduction's rule, an equal split among the inputs equal to the result (``1/3`` each; the
    analytic derivative of the sum of shares). Values stay Keras's."""
    import jax
    import jax.numpy as jnp

    ins = [keras.Input((3,)) for _ in range(3)]
    model = keras.Model(ins, [layers.Maximum()(ins), layers.Minimum()(ins)])
    path = tmp_path / "ext3.keras"
    model.save(path)
    m = load_keras(path)
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(2, 3)).astype(np.float32) for _ in range(3)]
    for g, r in zip(m(xs), model.predict(xs, verbose=0)):
        np.testing.assert_array_equal(np.asarray(g), r)
    tied = jnp.array([[1.0, -2.0, 0.5]])
    tied = [tied, tied, tied.at[0, 2].set(0.25)]  # the third input loses at one position
    for out in (0, 1):
        grads = jax.grad(lambda *v: jnp.sum(m.apply(m.params, list(v))[out]),
                         argnums=(0, 1, 2))(*tied)
        # rows: inputs, columns: positions; at the third, the maximum is the first two
        # inputs' (1/2 each), the minimum the third input's alone
        third = [[1 / 2], [1 / 2], [0]] if out == 0 else [[0], [0], [1]]
        want = np.concatenate([np.full((3, 2), 1 / 3), third], axis=1)
        np.testing.assert_allclose(np.concatenate(grads), want, rtol=1e-6)


def test_normalized_dot_floors_the_norm_as_keras_3(tmp_path):
    """``Dot(normalize=True)`` in Keras 3 normalizes with ``ops.nn.normalize``, ``x *
    min(rsqrt(sum(x ** 2)), 1 / 1e-7)`` (JAX, TensorFlow, PyTorch), and on its NumPy backend
    with ``x / norm`` (a zero norm as 1); the importer used tf.keras's ``rsqrt(max(ss,
    1e-12))``, which flattens norms under 1e-6: the cosine of parallel vectors of norms 1
    and 5e-7 came out 0.5 (Keras: 1)."""
    a, b = keras.Input((3,)), keras.Input((3,))
    model = keras.Model([a, b], layers.Dot(axes=1, normalize=True)([a, b]))
    paths = save_keras_and_h5(model, tmp_path, "dotn")
    u = np.array([[0.6, 0.8, 0.0]], np.float32)
    for s in (1.0, 5e-7, 2e-7):  # every backend's formula gives 1 here
        xs = [u * s, u]
        ref = np.asarray(model.predict(xs, verbose=0))
        np.testing.assert_allclose(ref, [[1.0]], rtol=1e-6)
        for path in paths.values():
            np.testing.assert_allclose(np.asarray(load_keras(path)(xs)), ref, rtol=1e-6)
    xs = [u * 1e-8, u]  # below 1e-7 the backends differ
    ref = np.asarray(model.predict(xs, verbose=0))  # this NumPy backend: x / norm
    np.testing.assert_allclose(np.asarray(load_keras(paths[".h5"])(xs)), ref, rtol=1e-6)
    jax_rule = np.sum(u * 1e-8 * 1e7 * u)  # 0.1: ops.nn.normalize's 1 / epsilon
    for backend in ("jax", "tensorflow"):
        got = load_keras(paths[".keras"], keras_backend=backend)(xs)
        np.testing.assert_allclose(np.asarray(got), [[jax_rule]], rtol=1e-5)
