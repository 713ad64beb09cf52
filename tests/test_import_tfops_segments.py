"""tf.keras 2 ``TFOpLambda`` layers of segment reductions, scatters, ``crop_and_resize``,
``max_pool_with_argmax`` and the DCTs, against TensorFlow 2.12 and 2.21's outputs
(tests/fixtures/keras2_tfops/make_tfops_segments.py: ``segments``, ``scatters``, ``crops``,
``signals``, every such layer's output compared; ``calls``, TF's results of single calls on
edge cases: empty segments, repeated indices, halves, ties, every DCT type); gradients and
attribution through them; and the values refused at load, with the reason."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from import_helpers import rel_err
from model_import import KerasImportError, load_keras
from tfops_helpers import (D, check_attribution, check_every_layer, check_gradients,
                           check_refused, config, layer, load, tf_function)

NAMES = ("segments", "scatters", "crops", "signals")
TAGS = ("tf212", "tf221")


@pytest.mark.parametrize("name,tag", [(n, t) for n in NAMES for t in TAGS])
def test_every_tf_function_layer_matches_tensorflow(name, tag):
    check_every_layer(name, tag, "versions_segments")


@pytest.mark.parametrize("tag", TAGS)
def test_single_calls_match_tensorflow(tag):
    """Each recorded call of ``calls_<tag>.npz`` against TF's result: the empty segments'
    values (the dtype's lowest and highest for the unsorted max and min: exactly), integer
    data, repeated scatter indices, crops outside the image and on halves, argmax ties and
    padding, the DCTs."""
    ref = np.load(D / f"calls_{tag}.npz")
    spec = json.loads(str(ref["spec"]))
    assert len(spec) > 35
    calls = jax.jit(lambda xs: [tf_function(fn)(x, **kw) for x, (_, fn, kw) in zip(xs, spec)])
    for (case, fn, kw), got in zip(spec, calls([ref[f"{c}__x"] for c, _, _ in spec])):
        wants = ([ref[f"{case}__{i}"] for i in range(len(got))] if isinstance(got, tuple)
                 else [ref[case]])
        for g, want in zip(got if isinstance(got, tuple) else [got], wants):
            g = np.asarray(g)
            assert g.shape == want.shape and g.dtype.kind == want.dtype.kind, (case, g.shape)
            huge = np.abs(want) > 1e30  # an unsorted max / min's empty segment: exactly
            np.testing.assert_array_equal(g[huge], want[huge], err_msg=case)
            if want.dtype.kind == "f" and (~huge).any():
                assert rel_err(g[~huge], want[~huge]) <= 1e-5, (case, rel_err(g[~huge],
                                                                            want[~huge]))
            else:
                np.testing.assert_array_equal(g, want, err_msg=case)


def test_the_fixtures_exercise_what_they_are_for():
    """Empty segments in both kinds of reductions (and the fill values), halves for the
    nearest crop, equal maxima in the argmax windows, samples outside the image."""
    ref = np.load(D / "calls_tf221.npz")
    assert (ref["unsorted_max"] == np.finfo(np.float32).min).any()
    assert (ref["unsorted_min"] == np.finfo(np.float32).max).any()
    assert (ref["unsorted_max_int"] == np.iinfo(np.int32).min).any()
    assert (ref["segment_max"][1] == 0).all() and (ref["segment_prod"][1] == 1).all()
    assert (ref["crop_bilinear"] == -2.5).any()
    windows = ref["argmax_valid__x"][:, :4, :4].reshape(2, 2, 2, 2, 2, 2)
    assert any(len(set(w.ravel())) < 4 for w in windows.transpose(0, 1, 3, 5, 2, 4).reshape(
        -1, 4))
    m = np.load(D / "crops_tf221.expected.npz")
    assert (m["act__tf.image.crop_and_resize_1"] == -1.0).any()


@pytest.mark.parametrize("name", NAMES)
def test_gradients_are_finite_and_not_zero(name):
    check_gradients(name)


def test_attribution_through_crops():
    """DeepLIFT's maps through a per-example ``crop_and_resize`` (the ``crops``
    classifier: boxes of a ``tf.tile``, box indices of ``tf.range(tf.shape(x)[0])``) sum to
    the score's change from the zero baseline; LRP is finite."""
    check_attribution("crops", (2, 2, 6, 6, 2))


def test_attribution_on_the_argmax_indices_is_zero():
    """``max_pool_with_argmax``'s indices are integers: scored through a float mean of
    them, the gradient methods and LRP (whose relevance seed multiplies the output) give
    zero, finite maps."""
    import jaxsal

    m, ref = load("crops", "tf221")
    head = m.with_output(8)  # the SAME pooling's indices (include_batch_in_index)
    assert head(jnp.asarray(ref["x"][:1])).dtype == jnp.int32

    def score(out):
        return out[..., 0].reshape(len(out), -1).mean(1)

    for method in (jaxsal.saliency, jaxsal.lrp):
        a = np.asarray(method(head, jnp.asarray(ref["x"][:2]), score))
        assert a.shape == (2, 6, 6) and np.isfinite(a).all() and not a.any()


def test_per_example_segments_and_crops_keep_the_examples_apart():
    """Segment ids ``ids + 2 * tf.range(batch)`` (``2 * batch`` segments) and crops of
    box ``b`` from example ``tf.range(batch)[b]``: the whole batch, its first example and a
    vmap over single examples agree, as attribution methods that map over examples need."""
    for name, outs in (("segments", (13, 14)), ("crops", (0, 4))):
        m, ref = load(name, "tf221")
        x = jnp.asarray(ref["x"])
        full = m(x)
        mapped = jax.vmap(lambda xi: m(xi[None]))(x)
        for i in outs:
            np.testing.assert_allclose(np.asarray(mapped[i])[:, 0], np.asarray(full[i]),
                                       rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(np.asarray(full[i]), ref[f"y{i}"], rtol=1e-4,
                                       atol=1e-5)


def test_max_pool_with_argmax_gradients():
    """The values' gradient is max pooling's (``tf.nn.max_pool2d``); the indices are
    integers, so a float cast of them passes a zero (finite) gradient."""
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 5, 5, 3)), jnp.float32)
    both, pool = tf_function("nn.max_pool_with_argmax"), tf_function("nn.max_pool2d")
    kw = {"ksize": 3, "strides": 2, "padding": "SAME"}
    g = jax.grad(lambda v: jnp.sum(both(v, **kw)[0] ** 2))(x)
    np.testing.assert_allclose(np.asarray(g), np.asarray(jax.grad(
        lambda v: jnp.sum(pool(v, **kw) ** 2))(x)), rtol=1e-6)
    g = jax.grad(lambda v: jnp.sum(both(v, **kw)[1].astype(jnp.float32) * v.mean()))(x)
    assert np.isfinite(np.asarray(g)).all()
    np.testing.assert_allclose(np.asarray(g), np.full(x.shape, np.asarray(
        both(x, **kw)[1]).sum() / x.size), rtol=1e-5)  # only the mean's factor


# ----------------------------------------------------------------- refused values
@pytest.mark.parametrize("name,layer,function,key,value,why", [
    ("segments", "tf.math.segment_sum", "math.segment_sum", "segment_ids",
     [0, 1, 1, 0, 2, 2], "are not sorted non-negative ids"),
    ("segments", "tf.math.segment_max", "math.segment_max", "segment_ids", [0, 0, 1],
     "is not one id per row of data of shape (6, 1, 4)"),
    ("segments", "tf.math.segment_mean", "math.segment_mean", "segment_ids",
     ["tf.__operators__.add", 0, 0], "unsorted_segment_mean(data, segment_ids, "
                                      "num_segments), whose number of segments is given"),
    ("segments", "tf.math.unsorted_segment_sum", "math.unsorted_segment_sum", "segment_ids",
     [2, 0, -1, 2, 0, 5], "at or above num_segments=5"),
    ("segments", "tf.math.unsorted_segment_sum", "math.unsorted_segment_sum", "segment_ids",
     [2.0, 0.0, 1.0, 2.0, 0.0, 4.0], "are not integers"),
    ("segments", "tf.math.unsorted_segment_sum_1", "math.unsorted_segment_sum",
     "segment_ids", [0, 1, 2], "are not of the shape of the leading axes"),
    ("segments", "tf.math.unsorted_segment_max", "math.unsorted_segment_max",
     "num_segments", ["tf.math.greater", 0, 0], "depends on the values of a tensor"),
    ("scatters", "tf.tensor_scatter_nd_update", "tensor_scatter_nd_update", "indices",
     [[1], [1]], "repeat an index: TF leaves which of its updates is kept unspecified"),
    ("scatters", "tf.tensor_scatter_nd_add", "tensor_scatter_nd_add", "indices",
     [[0], [5], [0]], "out of range"),
    ("scatters", "tf.tensor_scatter_nd_add", "tensor_scatter_nd_add", "indices",
     [[0], [4]], "take updates of shape (2, 1, 3)"),
    ("scatters", "tf.tensor_scatter_nd_max", "tensor_scatter_nd_max", "indices",
     ["tf.__operators__.getitem_3", 0, 0], "constant indices only"),
    ("scatters", "tf.tensor_scatter_nd_sub", "tensor_scatter_nd_sub", "bad_indices_policy",
     "IGNORE", "bad_indices_policy only at ''"),
    ("crops", "tf.image.crop_and_resize", "image.crop_and_resize", "method", "bicubic",
     "is not supported ('bilinear', 'nearest'"),
    ("crops", "tf.image.crop_and_resize", "image.crop_and_resize", "box_indices", [0, 1, 0],
     "out of range for a batch of 1"),
    ("crops", "tf.image.crop_and_resize", "image.crop_and_resize", "crop_size", [0, 3],
     "is not two positive sizes"),
    ("crops", "tf.image.crop_and_resize_2", "image.crop_and_resize", "boxes",
     [[0.1, 0.2, 0.3]], "are not of shape (boxes, 4)"),
    ("crops", "tf.nn.max_pool_with_argmax", "nn.max_pool_with_argmax", "data_format",
     "NCHW", "is not supported ('NHWC'"),
    ("crops", "tf.nn.max_pool_with_argmax", "nn.max_pool_with_argmax", "output_dtype",
     "float32", "is not supported ('int32', 'int64'"),
    ("signals", "tf.signal.dct", "signal.dct", "type", 5, "is not supported (1, 2, 3 or 4"),
    ("signals", "tf.signal.dct", "signal.dct", "norm", "ortho", "not supported for type=1"),
    ("signals", "tf.signal.dct_1", "signal.dct", "n", 1, "too short for a DCT of type 1"),
    ("signals", "tf.signal.idct", "signal.idct", "axis", 1, "is not supported (-1"),
    ("signals", "tf.ensure_shape", "ensure_shape", "shape", [None, 4, 7],
     "does not fit the input's (1, 4, 8)"),
])
def test_unsupported_values_are_refused_at_load(name, layer, function, key, value, why):
    check_refused(name, layer, function, key, value, why)


def test_unknown_functions_are_refused_with_the_list():
    """A TF function without a translation names itself and the supported ones, the new
    functions among them."""
    cfg = config("signals")
    layer(cfg, "tf.math.ndtri")["config"]["function"] = "linalg.qr"
    with pytest.raises(KerasImportError, match=r"tf\.linalg\.qr, which has no JAX "
                                               r"translation here; supported: .*"
                                               r"math\.unsorted_segment_sqrt_n"):
        load_keras(D / "signals_tf221.h5", config=cfg)
