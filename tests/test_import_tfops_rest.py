"""tf.keras 2 ``TFOpLambda`` layers of the TF functions translated last, against TensorFlow
2.12 and 2.21's outputs and every such layer's output (tests/fixtures/keras2_tfops/
make_tfops_rest.py: ``rest``, the inverse trig functions, ``tf.argsort``,
``tf.linalg.normalize``, ``tf.clip_by_norm``, ``tf.strided_slice`` called directly, nearest
and area resizing, small image and matrix functions; ``convs``, ``tf.nn.conv*`` with a
constant kernel, which tf.keras records as a nested list; ``misc``, image preprocessing,
gathers, masks, separable convolutions; ``blocks``, ``space_to_batch_nd`` and atrous
convolutions, ``tf.nn.pool``, ``resize_with_pad``, inverses; ``scans``, lanczos resizing,
``cumulative_logsumexp``, ``weighted_moments``, ``tf.signal.frame``; ``tail``,
``tf.unstack`` of sizes, ``tf.tensordot``, the DCT, YUV); their gradients (also against
finite differences); and the values and functions refused at load, with the reason."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model_import import UnsupportedLayerError, load_keras
from tfops_helpers import (D, check_attribution, check_every_layer, check_gradients,
                           check_refused, config, layer, load, tf_function)

CASES = [(n, t) for n in ("rest", "convs", "misc", "blocks", "scans", "tail")
         for t in ("tf212", "tf221")]


@pytest.mark.parametrize("name,tag", CASES)
def test_every_tf_function_layer_matches_tensorflow(name, tag):
    check_every_layer(name, tag, "versions_rest")


def test_the_fixtures_exercise_what_they_are_for():
    """Ties for the argsorts (their order is TF's stable one), NaNs for is_nan, zeros for
    reciprocal_no_nan, norms above and below the clip, grey and black pixels for
    rgb_to_hsv, the nearest resize on both sides."""
    ref = np.load(D / "rest_tf221.expected.npz")
    rounded = np.round(ref["act__tf.math.round"])
    assert any(len(set(r)) < len(r) for r in rounded.reshape(-1, 6))
    assert np.isnan(ref["act__tf.math.log"]).any() and not np.isnan(ref["act__tf.math.log"]).all()
    assert (ref["act__tf.math.rint"] == 0).any()
    assert ref["act__tf.image.resize"].shape[1:3] == (7, 9)
    norms = ref["act__tf.linalg.normalize__1"]  # clip_by_norm(h, 3.0, axes=[2])
    assert (norms > 3.0).any() and (norms < 3.0).any()
    hsv = np.load(D / "tail_tf221.expected.npz")["y7"]  # a grey pixel, a black one: s = 0
    assert (hsv[:, 0, :2, 1] == 0).all() and (hsv[:, 0, 1, 2] == 0).all()
    assert (hsv[:, 1:, :, 1] > 0).all()
    x = np.asarray([0.0, 1.0, 2.0, 3.0, 4.0])  # 5 -> 7 rows: repeats; 5 -> 3: skips
    assert set(x[_nearest_rows(5, 7)]) == set(x) and len(set(x[_nearest_rows(5, 3)])) == 3


def _nearest_rows(n_in, n_out):
    from model_import._layers.tf_ops import _nearest_tf
    return _nearest_tf(n_in, n_out)


def test_blocks_of_the_batch_keep_the_examples_apart():
    """``tf.nn.atrous_conv2d`` moves blocks of each image to the batch axis
    (``space_to_batch_nd``) and back: the outputs of the whole batch, of its first example
    and of a vmap over single examples agree (and with TF's), as attribution methods that
    map over examples need."""
    m, ref = load("blocks", "tf221")
    x = jnp.asarray(ref["x"])
    full = m(x)
    mapped = jax.vmap(lambda xi: m(xi[None]))(x)
    for i in (0, 1, 3):  # the atrous convolutions, the round trip of space_to_batch_nd
        np.testing.assert_allclose(np.asarray(mapped[i])[:, 0], np.asarray(full[i]),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(full[i]), ref[f"y{i}"], rtol=1e-4, atol=1e-5)
    assert full[2].shape[0] == 6 * x.shape[0]  # space_to_batch_nd alone: blocks x batch


@pytest.mark.parametrize("name", ["rest", "convs", "misc", "blocks", "scans", "tail"])
def test_gradients_are_finite_and_not_zero(name):
    check_gradients(name)


def test_attribution_through_constant_kernel_convolutions():
    """The classifier of ``convs`` (``tf.nn.conv2d`` with a constant kernel, ReLU, pooling,
    Dense): DeepLIFT's maps sum to the score's change from the zero baseline, and LRP,
    which gives the convolution its rule, is finite."""
    m = check_attribution("convs", (2, 2, 6, 6, 4))
    assert m.layer("tf.compat.v1.nn.conv2d").config["function"] == "compat.v1.nn.conv2d"


# ----------------------------------------------------------------- refused values
@pytest.mark.parametrize("name,layer,function,key,value,why", [
    ("rest", "tf.argsort", "argsort", "direction", "UP", "is not supported"),
    ("rest", "tf.strided_slice", "strided_slice", "strides", [1, 0, 1], "zero stride"),
    ("rest", "tf.strided_slice", "strided_slice", "end", [0, 5], "differ in length"),
    ("rest", "tf.strided_slice_2", "strided_slice", "ellipsis_mask", 3,
     "more than one ellipsis"),
    ("rest", "tf.strided_slice_4", "strided_slice", "begin", [0, -7], "out of range"),
    ("rest", "tf.strided_slice_3", "strided_slice", "new_axis_mask", 0,
     "indexes 4 axes of a rank-3 input"),
    ("rest", "tf.image.resize", "image.resize", "method", "gaussian", "is not supported"),
    ("rest", "tf.image.central_crop", "image.central_crop", "central_fraction", 0.0,
     "must be in (0, 1]"),
    ("rest", "tf.image.crop_to_bounding_box", "image.crop_to_bounding_box",
     "target_height", 9, "is not inside"),
    ("rest", "tf.linalg.diag_part", "linalg.diag_part", "k", 1, "k only at 0"),
    ("rest", "tf.linalg.normalize", "linalg.normalize", "ord", 2.0 ** 0.5 - 9,
     "is not supported for a vector norm"),
    ("convs", "tf.compat.v1.nn.conv2d", "compat.v1.nn.conv2d", "data_format", "NCHW",
     "is not supported (channels last"),
    ("convs", "tf.compat.v1.nn.conv2d", "compat.v1.nn.conv2d", "padding", "CAUSAL",
     "is not supported ('VALID', 'SAME'"),
    ("convs", "tf.compat.v1.nn.conv2d", "compat.v1.nn.conv2d", "strides", [2, 1, 1, 1],
     "is not supported (an int, 2 ints"),
    ("convs", "tf.compat.v1.nn.conv2d", "compat.v1.nn.conv2d", "filter", [[[[1.0]]]],
     "takes 1 input channels, the input has 4"),
    ("convs", "tf.compat.v1.nn.depthwise_conv2d_2", "compat.v1.nn.depthwise_conv2d",
     "dilations", [2, 2], "are both given"),
    ("convs", "tf.compat.v1.nn.depthwise_conv2d_2", "compat.v1.nn.depthwise_conv2d",
     "strides", [1, 2, 2, 1], "documents strides of 1 where the rate is above 1"),
    ("convs", "tf.nn.conv2d_transpose", "nn.conv2d_transpose", "output_shape",
     [2, 13, 13, 4], "not the input's"),
    ("convs", "tf.nn.conv2d_transpose", "nn.conv2d_transpose", "output_shape",
     [2, 12, 12, 3], "4 channels of the filters"),
    ("misc", "tf.sequence_mask", "sequence_mask", "maxlen", None, "depends on the data"),
    ("misc", "tf.compat.v1.gather_nd_1", "compat.v1.gather_nd", "indices", [[0, 1], [6, 4]],
     "out of range"),
    ("misc", "tf.compat.v1.gather_nd_1", "compat.v1.gather_nd", "bad_indices_policy",
     "IGNORE", "bad_indices_policy only at ''"),
    ("misc", "tf.image.convert_image_dtype", "image.convert_image_dtype", "dtype", "uint8",
     "is not supported"),
    ("misc", "tf.image.pad_to_bounding_box", "image.pad_to_bounding_box", "target_height", 6,
     "does not fit in the box"),
    ("misc", "tf.image.resize_with_crop_or_pad", "image.resize_with_crop_or_pad",
     "target_width", 0, "must be positive"),
    ("misc", "tf.compat.v1.nn.separable_conv2d_2", "compat.v1.nn.separable_conv2d",
     "strides", [1, 2, 2, 1], "documents strides of 1 where the rate is above 1"),
    ("misc", "tf.compat.v1.nn.separable_conv2d", "compat.v1.nn.separable_conv2d",
     "pointwise_filter", [[[[1.0]]]], "takes 1 input channels, the input has 6"),
    ("misc", "tf.linalg.diag", "linalg.diag", "k", 1, "k only at 0"),
    ("blocks", "tf.space_to_batch_nd_2", "space_to_batch_nd", "paddings",
     [[1, 0], [0, 0]], "does not divide"),
    ("blocks", "tf.compat.v1.batch_to_space_nd_2", "compat.v1.batch_to_space_nd", "crops",
     [[1, 1], [5, 2]], "exceed"),
    ("blocks", "tf.compat.v1.nn.pool", "compat.v1.nn.pool", "dilation_rate", [2, 2],
     "windows without gaps"),
    ("blocks", "tf.compat.v1.nn.pool", "compat.v1.nn.pool", "pooling_type", "L2",
     "is not supported"),
    ("blocks", "tf.image.resize_with_pad", "image.resize_with_pad", "target_width", 0,
     "must be positive"),
    ("blocks", "tf.image.resize_with_pad", "image.resize_with_pad", "method", "gaussian",
     "is not supported"),
    ("scans", "tf.signal.frame", "signal.frame", "frame_step", 0, "must be positive"),
    ("scans", "tf.compat.v1.nn.weighted_moments", "compat.v1.nn.weighted_moments",
     "keepdims", False, "are both given"),
    ("scans", "tf.image.resize", "image.resize", "method", "mitchellcubic",
     "is not supported"),
    ("tail", "tf.signal.dct", "signal.dct", "type", 5, "is not supported (1, 2, 3 or 4"),
    ("tail", "tf.signal.dct", "signal.dct", "norm", "forward", "is not supported"),
    ("tail", "tf.tensordot_1", "tensordot", "axes", [[2, 3], [0]], "of one length"),
    ("tail", "tf.image.adjust_gamma", "image.adjust_gamma", "gamma", -1.0,
     "must be non-negative"),
])
def test_unsupported_values_are_refused_at_load(name, layer, function, key, value, why):
    check_refused(name, layer, function, key, value, why)


def test_random_and_data_dependent_functions_are_refused_with_the_reason():
    """``tf.nn.dropout`` drops at random at inference too, ``tf.random.normal`` and the
    other random functions draw at every call; ``tf.nn.embedding_lookup``'s
    constant table comes back from tf.keras's file as shards (another function);
    ``tf.boolean_mask`` (a ``SlicingOpLambda``) has a data-dependent shape."""
    cfg = config("rest")
    layer(cfg, "tf.math.tan")["config"]["function"] = "nn.dropout"
    with pytest.raises(UnsupportedLayerError, match=r"tf\.nn\.dropout, which cannot be "
                                                    r"imported: it drops a random part"):
        load_keras(D / "rest_tf221.h5", config=cfg)
    cfg = config("rest")  # a table recorded as a list, read back as shards by tf.keras
    layer(cfg, "tf.math.tan")["config"]["function"] = "compat.v1.nn.embedding_lookup"
    with pytest.raises(UnsupportedLayerError, match=r"reads each row back as a shard .* use "
                                                    r"tf\.gather\(table, ids\)"):
        load_keras(D / "rest_tf221.h5", config=cfg)
    for fn in ("random.normal", "random.uniform", "image.random_flip_left_right"):
        cfg = config("rest")  # (a VAE's sampling, written with tf.random.normal)
        layer(cfg, "tf.math.tan")["config"]["function"] = fn
        with pytest.raises(UnsupportedLayerError, match=r"which cannot be imported: it draws "
                                                        r"random numbers on every call"):
            load_keras(D / "rest_tf221.h5", config=cfg)
    cfg = config("rest")
    layer(cfg, "tf.__operators__.getitem")["config"]["function"] = "compat.v1.boolean_mask"
    with pytest.raises(UnsupportedLayerError, match=r"tf\.boolean_mask, which is not "
                                                    r"supported: .* depends on the data"):
        load_keras(D / "rest_tf221.h5", config=cfg)


_X = np.random.default_rng(0).normal(size=(2, 3, 3, 2)).astype(np.float32)
_K = np.random.default_rng(1).normal(size=(3, 3, 4, 2)).round(3)
_DK = _K[:, :, :2, :1].tolist()  # (3, 3, 2 channels, 1 multiplier)
_ROWS = _X.reshape(4, 9) * np.asarray([[0.1], [1.0], [2.0], [0.3]], np.float32)  # norms 0.3-6
_GRAD_CASES = {  # name: (function of one tensor, its input)
    "conv2d_transpose": (lambda f, v: f(v, filters=_K.tolist(), output_shape=[2, 6, 6, 4],
                                        strides=2, padding="SAME"), _X),
    "compat.v1.nn.depthwise_conv2d": (lambda f, v: f(v, filter=_DK, strides=[1, 1, 1, 1],
                                                     padding="SAME"), _X),
    "compat.v1.nn.separable_conv2d": (lambda f, v: f(
        v, depthwise_filter=_DK, pointwise_filter=np.ones((1, 1, 2, 3)).tolist(),
        strides=[1, 1, 1, 1], padding="SAME"), _X),
    "clip_by_norm": (lambda f, v: f(v, clip_norm=1.0, axes=[1]), _ROWS),  # both sides
    "linalg.normalize": (lambda f, v: f(v, axis=-1)[0] + f(v, axis=-1)[1], _ROWS),
    "strided_slice": (lambda f, v: f(v, begin=[0, 8], end=[0, 1], strides=[1, -3],
                                     begin_mask=1, end_mask=1), _ROWS),
    "math.asin": (lambda f, v: f(v), np.tanh(_ROWS) * 0.9),
    "math.acos": (lambda f, v: f(v), np.tanh(_ROWS) * 0.9),
    "math.atanh": (lambda f, v: f(v), np.tanh(_ROWS) * 0.9),
    "math.acosh": (lambda f, v: f(v), _ROWS ** 2 + 2.0),
    "image.per_image_standardization": (lambda f, v: f(v), _X),
    "image.adjust_contrast": (lambda f, v: f(v, contrast_factor=1.5), _X),
    "math.xlogy": (lambda f, v: f(v, y=jnp.abs(v) + 0.5), _X),
    "linalg.inv": (lambda f, v: f(v + 3.0 * jnp.eye(3)), _X[:, :, :, 0]),
    "math.cumulative_logsumexp": (lambda f, v: f(v, axis=1, exclusive=True)[:, 1:], _ROWS),
    "compat.v1.nn.weighted_moments": (lambda f, v: jnp.stack(f(
        v, axes=[1], frequency_weights=jnp.abs(v) + 0.1)), _ROWS),
    "signal.frame": (lambda f, v: f(v, frame_length=3, frame_step=2, pad_end=True), _ROWS),
    "signal.dct": (lambda f, v: f(v, norm="ortho"), _ROWS),
    "image.adjust_gamma": (lambda f, v: f(jnp.abs(v) + 0.1, gamma=2.0, gain=0.5), _X),
    "space_to_batch_nd": (lambda f, v: f(v, block_shape=[2, 2], paddings=[[1, 0], [1, 0]]),
                          _X),
}


@pytest.mark.parametrize("fn", sorted(_GRAD_CASES))
def test_gradients_of_the_new_functions_match_finite_differences(fn):
    """Reverse-mode gradients against finite differences (float32 tolerances): the
    transposed convolution (an input gradient of a convolution itself), the depthwise and
    separable ones, ``clip_by_norm`` on both sides of the clip, ``tf.linalg.normalize``, a
    strided slice with a negative stride, the inverse trig functions,
    ``per_image_standardization``, ``adjust_contrast`` and ``xlogy``."""
    from jax.test_util import check_grads

    call, x = _GRAD_CASES[fn]
    impl = tf_function("nn.conv2d_transpose" if fn == "conv2d_transpose" else fn)
    check_grads(jax.jit(lambda v: call(impl, v)), (jnp.asarray(x),), order=1, modes=("rev",),
                eps=1e-2 if fn == "math.acosh" else None)


def test_clip_by_norm_and_argsort_gradients():
    """``clip_by_norm``'s gradient is finite (zero) for an all-zero row, as TF's formula
    makes it; ``argsort``'s indices pass none."""
    clip = tf_function("clip_by_norm")
    zero = jnp.asarray(_ROWS).at[2].set(0.0)
    g = jax.jit(jax.grad(lambda v: jnp.sum(clip(v, clip_norm=1.0, axes=[1]) ** 2)))(zero)
    assert np.isfinite(np.asarray(g)).all() and not np.asarray(g)[2].any()
    order = tf_function("argsort")
    rows = jnp.asarray(_ROWS)
    g = jax.jit(jax.grad(lambda v: jnp.sum(order(v).astype(jnp.float32) * v)))(rows)
    np.testing.assert_array_equal(np.asarray(g), np.asarray(
        order(rows).astype(jnp.float32)))  # only the product's own factor


def _tf_rgb_to_hsv(x):
    """TF's ``RGBToHSV`` kernel, pixel by pixel in NumPy: hue, saturation, value."""
    out = np.zeros_like(x)
    for at in np.ndindex(x.shape[:-1]):
        r, g, b = x[at]
        v, spread = max(r, g, b), max(r, g, b) - min(r, g, b)
        if spread > 0:
            h = (g - b if r == v else b - r + 2 * spread if g == v else r - g + 4 * spread)
            h = h / (6 * spread)
        else:
            h = 0.0
        out[at] = (h + 1 if h < 0 else h, spread / v if v > 0 else 0.0, v)
    return out


def test_rgb_to_hsv_after_a_recomputed_producer():
    """``tf.image.rgb_to_hsv`` of a per-channel affine map (a normalization before it), whose
    values XLA may compute twice with other roundings: values and (float32) gradients equal
    TF's kernel's in NumPy (float64 central differences for the gradient). Comparing the
    channels with their maximum computed apart gave 2 of 18 pixels another channel's
    formula and a wrong hue (0.5 for 0.498 and 0.483; suite flags, jax 0.10.2)."""
    rng = np.random.default_rng(0)
    z, w = rng.normal(size=(3, 6, 3)), rng.normal(size=(3, 6, 3))
    scale, shift = rng.normal(size=3), rng.normal(size=3)
    z, w, scale, shift = (v.astype(np.float32) for v in (z, w, scale, shift))
    hsv = tf_function("image.rgb_to_hsv")

    def f(u):
        return hsv(u * scale + shift)

    y, g = jax.jit(lambda u: (f(u), jax.grad(lambda u: jnp.sum(f(u) * w))(u)))(z)
    np.testing.assert_allclose(y, _tf_rgb_to_hsv(z * scale + shift), rtol=1e-5, atol=1e-6)
    z, w, scale, shift = (v.astype(np.float64) for v in (z, w, scale, shift))
    eps, want = 1e-6, np.zeros_like(z)
    for at in np.ndindex(z.shape):
        up, down = z.copy(), z.copy()
        up[at] += eps
        down[at] -= eps
        want[at] = np.sum((_tf_rgb_to_hsv(up * scale + shift)
                           - _tf_rgb_to_hsv(down * scale + shift)) * w) / (2 * eps)
    np.testing.assert_allclose(g, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
