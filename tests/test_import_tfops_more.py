"""tf.keras 2 ``TFOpLambda`` layers of the TF functions that ViT / Swin / attention blocks and
image code written with raw ``tf.*`` calls use, against TensorFlow 2.12 and 2.21's outputs
(tests/fixtures/keras2_tfops/make_tfops_more.py: ``tokens``, a ViT-style block with
``tf.shape`` sizes, splits, gathers, ``top_k``, reductions and elementwise functions;
``image_ops``, pads, poolings, flips, depth/space blocks and patches), every such layer's
output compared; and the keyword values without a translation, refused at load."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model_import import KerasImportError, load_keras
from tfops_helpers import (D, check_attribution, check_every_layer, check_gradients,
                           check_refused, config, layer, load)

CASES = [(n, t) for n in ("tokens", "image_ops", "sizes", "extras", "pools")
         for t in ("tf212", "tf221")]


@pytest.mark.parametrize("name,tag", CASES)
def test_every_tf_function_layer_matches_tensorflow(name, tag):
    check_every_layer(name, tag, "versions_more")


@pytest.mark.parametrize("name", ["tokens", "image_ops", "sizes", "extras", "pools"])
def test_gradients_are_finite_and_not_zero(name):
    check_gradients(name)


@pytest.mark.parametrize("name", ["tokens", "sizes"])
def test_sizes_from_tf_shape_follow_the_batch(name):
    """``tf.reshape(p, [tf.shape(p)[0], -1, 48])``, ``[-1, tf.shape(h)[1] // 2, 32]``, a
    ``tf.stack`` of sizes, ``tf.broadcast_to(..., tf.shape(x))``: the sizes are read from
    each call's shapes, so the whole batch, its first example alone and a vmap of single
    examples give the same outputs."""
    m, ref = load(name, "tf221")
    x = jnp.asarray(ref["x"])
    full = m(x)
    one = m(x[:1])
    mapped = jax.vmap(lambda xi: m(xi[None]))(x)
    for y, y1, ym, want in zip(full, one, mapped, [ref[f"y{i}"] for i in range(len(full))]):
        assert y.shape[0] == x.shape[0] and y1.shape[0] == 1
        np.testing.assert_allclose(np.asarray(y1), np.asarray(y)[:1], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(ym)[:, 0], np.asarray(y), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(y), want, rtol=1e-4, atol=1e-5)


def test_attribution_through_pools_pads_and_patches():
    """DeepLIFT and LRP reach the input through the pools (``rt.pool``), pads, flips and
    blocks: finite maps of the input's shape; DeepLIFT's maps sum to the score's change from
    the zero baseline (the image_ops classifier: convolution, pads, pools, a dense layer)."""
    check_attribution("image_ops", (2, 2, 8, 8, 4))


# ----------------------------------------------------------------- refused keyword values
@pytest.mark.parametrize("name,layer,function,key,value,why", [
    ("image_ops", "tf.compat.v1.pad", "compat.v1.pad", "mode", "WRAP", "is not supported"),
    ("image_ops", "tf.compat.v1.pad_1", "compat.v1.pad", "paddings",
     [[0, 0], [9, 0], [0, 0], [0, 0]], "exceed"),
    ("image_ops", "tf.nn.max_pool2d", "nn.max_pool2d", "padding",
     [[0, 0], [1, 1], [1, 1], [0, 0]], "is not supported"),
    ("image_ops", "tf.nn.avg_pool2d", "nn.avg_pool2d", "data_format", "NCHW",
     "is not supported"),
    ("image_ops", "tf.nn.max_pool2d_1", "nn.max_pool2d", "ksize", [2, 2, 2, 2],
     "is not supported"),
    ("image_ops", "tf.image.extract_patches", "image.extract_patches", "sizes",
     [2, 3, 2, 1], "must be [1, rows, cols, 1]"),
    ("image_ops", "tf.nn.depth_to_space", "nn.depth_to_space", "data_format", "NCHW",
     "is not supported"),
    ("image_ops", "tf.nn.bias_add", "nn.bias_add", "bias", [0.1, 0.2],
     "is not one value per channel"),
    ("pools", "tf.nn.max_pool3d", "nn.max_pool3d", "data_format", "NCDHW",
     "is not supported"),
    ("pools", "tf.nn.avg_pool", "nn.avg_pool", "padding", "same", "is not supported"),
    ("tokens", "tf.split", "split", "num", 5, "is not the number of pieces"),
    ("tokens", "tf.split_1", "split", "num_or_size_splits", [4, -1, -1], "one may be -1"),
    ("tokens", "tf.unstack", "unstack", "num", 3, "is not the size"),
    ("tokens", "tf.math.top_k", "math.top_k", "sorted", False, "is not supported"),
    ("tokens", "tf.math.argmin", "math.argmin", "output_type", "int16", "is not supported"),
    ("tokens", "tf.compat.v1.gather_1", "compat.v1.gather", "indices", [0, 9],
     "out of range"),
    ("tokens", "tf.compat.v1.gather_1", "compat.v1.gather", "validate_indices", True,
     "validate_indices only at None"),
    ("tokens", "tf.math.l2_normalize", "math.l2_normalize", "keepdims", True,
     "keywords translated: axis, dim, epsilon"),
    ("tokens", "tf.compat.v1.shape", "compat.v1.shape", "out_type", "float32",
     "is not supported"),
    ("extras", "tf.compat.v1.norm_3", "compat.v1.norm", "ord", 2, "is not supported"),
    ("extras", "tf.compat.v1.norm", "compat.v1.norm", "ord", "fro",
     "is not supported for a vector norm"),
    ("extras", "tf.compat.v1.norm", "compat.v1.norm", "keep_dims", True, "are both given"),
    ("extras", "tf.slice", "slice", "size", [-1, 3, 9], "out of range"),
    ("extras", "tf.sort", "sort", "direction", "UP", "is not supported"),
    ("sizes", "tf.range_1", "range", "limit", ["input_1", 0, 0], "would depend on the values"),
    ("image_ops", "tf.nn.local_response_normalization", "nn.local_response_normalization",
     "depth_radius", -1, "must be >= 0"),
    # a shape read from a tensor's values (argmax indices), not from shapes: no static size
    ("tokens", "tf.reshape_1", "reshape", "shape", ["tf.math.argmax", 0, 0],
     "depends on the values of a tensor"),
])
def test_unsupported_values_are_refused_at_load(name, layer, function, key, value, why):
    check_refused(name, layer, function, key, value, why)


def test_einsum_is_refused_with_the_reason():
    """tf.keras records ``tf.einsum``'s equation but not its operands (extra positional
    arguments): the file cannot be read back, by tf.keras either."""
    cfg = config("tokens")
    layer(cfg, "tf.linalg.matmul")["config"]["function"] = "einsum"
    with pytest.raises(KerasImportError, match=r"tf\.einsum, which cannot be imported: "
                                               r"tf\.keras records only its equation"):
        load_keras(D / "tokens_tf221.h5", config=cfg)


def test_runtime_rules_reach_the_new_functions():
    """The new elementwise math functions go through ``Runtime.elementwise`` (checked for
    every one of ``tf_ops._ACTIVATIONS`` in test_deeplift.py); the piecewise constant ones
    and ``stop_gradient`` do not; ``floormod`` and ``divide_no_nan`` of two tensors go
    through ``Runtime.pairwise``, of a tensor and a constant through ``elementwise``; max
    pooling goes through ``Runtime.max_pool`` (average pooling does not); ``l2_normalize``
    holds its inverse norm (``Runtime.hold``) and
    multiplies through ``Runtime.pairwise``, as ``UnitNormalization`` does."""
    from model_import import Runtime
    from model_import._layers.registry import ConvertContext, lookup

    calls = {"act": 0, "pool": 0, "hold": 0, "pair": 0}

    def count(kind, f):
        def rule(*a):
            calls[kind] += 1
            return f(*a)
        return rule

    rt = Runtime(elementwise=count("act", lambda f, x: f(x)),
                 max_pool=count("pool", lambda p, x: p(x)),
                 hold=count("hold", lambda v: v),
                 pairwise=count("pair", lambda f, a, b: f(a, b)))

    def run(fn, *args, **kw):
        for k in calls:
            calls[k] = 0
        impl = lookup("TFOpLambda")({"function": fn}, ConvertContext(
            layer_name="t", class_name="TFOpLambda"))
        impl.call({}, *args, rt=rt, **kw)
        return dict(calls)

    x = jnp.linspace(-2.0, 2.0, 2 * 4 * 4 * 3).reshape(2, 4, 4, 3)
    for fn in ("math.sin", "math.erf", "math.reciprocal", "math.log_sigmoid", "nn.softsign"):
        assert run(fn, x)["act"] == 1, fn
    for fn in ("math.floor", "math.ceil", "math.round", "math.rint", "math.sign",
               "stop_gradient"):
        assert run(fn, x)["act"] == 0, fn
    for fn in ("math.floormod", "math.divide_no_nan"):  # like tf.math.truediv
        assert run(fn, x, y=x + 3.0) == {"act": 0, "pool": 0, "hold": 0, "pair": 1}, fn
        assert run(fn, x, y=2.0) == {"act": 1, "pool": 0, "hold": 0, "pair": 0}, fn
    assert run("nn.max_pool2d", x, ksize=2, strides=2, padding="VALID")["pool"] == 1
    assert run("nn.max_pool2d", x, ksize=3, strides=1, padding="SAME")["pool"] == 1
    assert run("nn.avg_pool2d", x, ksize=2, strides=2, padding="VALID")["pool"] == 0
    assert run("nn.max_pool1d", x[:, 0], ksize=2, strides=1, padding="VALID")["pool"] == 1
    assert run("nn.max_pool3d", x[..., None], ksize=2, strides=2, padding="VALID")["pool"] == 1
    assert run("nn.avg_pool", x[:, 0], ksize=2, strides=1, padding="SAME")["pool"] == 0
    got = run("math.l2_normalize", x, axis=-1)
    assert got["hold"] == 1 and got["pair"] == 1 and got["act"] == 2
