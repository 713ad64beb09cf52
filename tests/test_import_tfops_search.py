"""tf.keras 2 ``TFOpLambda`` layers of ``tf.searchsorted``, ``tf.math.bincount``, TF 1's
resize kernels (``tf.compat.v1.image.resize_*``), ``tf.signal.stft`` and the YIQ
conversions, against TensorFlow 2.12 and 2.21's outputs
(tests/fixtures/keras2_tfops/make_tfops_search.py: ``search``, ``spectra``,
``legacy_resize``, ``counts``, every such layer's output compared; ``search_calls``, TF's
results of single calls on edge cases: ties, values outside the sequence, NaN, values
above ``maxlength``, every resize kernel and mode); gradients and attribution through
them; and the values refused at load, with the reason."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from import_helpers import rel_err
from model_import import KerasImportError, UnsupportedLayerError, load_keras
from tfops_helpers import (D, check_every_layer, check_refused, config, layer, load,
                           recorded_calls, tf_function)

MODELS = [("search", "tf212"), ("search", "tf221"), ("spectra", "tf212"),
          ("spectra", "tf221"), ("legacy_resize", "tf212"), ("legacy_resize", "tf221"),
          ("counts", "tf221")]  # TF 2.12 cannot record bincount on a symbolic tensor
TAGS = ("tf212", "tf221")


@pytest.mark.parametrize("name,tag", MODELS)
def test_every_tf_function_layer_matches_tensorflow(name, tag):
    check_every_layer(name, tag, "versions_search")


def _args(x, kw):
    """A recorded call's arguments: ``values`` (searchsorted's) as the first argument's
    dtype, as TF converts them."""
    kw = dict(kw)
    if "values" in kw:
        kw["values"] = jnp.asarray(np.asarray(kw["values"], x.dtype))
    return kw


@pytest.mark.parametrize("tag", TAGS)
def test_single_calls_match_tensorflow(tag):
    """Each recorded call of ``search_calls_<tag>.npz`` against TF's result: integers and
    the kept integer dtype exactly, floats within 1e-5 of the largest value (NaN, infinite
    values in the same places)."""
    ref, spec = recorded_calls("search", tag)
    assert len(spec) >= (55 if tag == "tf221" else 15)
    for case, fn, kw in spec:
        x = ref[f"{case}__x"]
        got, want = np.asarray(tf_function(fn)(jnp.asarray(x), **_args(x, kw))), ref[case]
        assert got.shape == want.shape, (case, got.shape, want.shape)
        if want.dtype.kind == "c":
            assert got.dtype == np.complex64, case
            assert rel_err(got.view(np.float32), want.view(np.float32)) <= 1e-5, case
        elif want.dtype.kind == "f" and want.size:
            assert got.dtype == np.float32, case
            assert rel_err(got, want) <= 1e-5, (case, rel_err(got, want))
        else:  # indices (int64 computed as int32), counts, nearest of uint8: exactly
            assert got.dtype.kind == want.dtype.kind, case
            if want.dtype != np.int64:
                assert got.dtype == want.dtype, case
            np.testing.assert_array_equal(got, want, err_msg=case)


def test_the_fixtures_exercise_what_they_are_for():
    """Ties on both sides, values outside the sequence (0 and its length), NaN values,
    values at and above maxlength, a resize to one row with align_corners."""
    ref = np.load(D / "search_calls_tf221.npz")
    left, right = ref["ss_left"], ref["ss_right"]
    assert (left != right).any() and (left == 0).any() and (right == 6).any()
    assert left[0, 6] == 0 and right[0, 6] == 6  # NaN: TF's binary search's ends
    assert (ref["bc_all__x"] >= 4).any() and ref["bc_none"].shape == (0,)
    assert ref["bilinear_1_1x6"].shape == (2, 1, 6, 2)
    m = np.load(D / "search_tf221.expected.npz")
    bucket = m["act__tf.searchsorted_4"]
    assert (bucket == 0).any() and (bucket == 6).any()
    assert (m["act__tf.searchsorted"] != m["act__tf.searchsorted_1"]).any() or (
        m["act__tf.searchsorted_2"] != m["act__tf.searchsorted_3"]).any()


def test_searchsorted_is_the_count_below_and_at_most():
    """Against NumPy's ``searchsorted`` per row (an independent reference) on random sorted
    rows with repeated entries, both sides."""
    rng = np.random.default_rng(5)
    seq = np.sort(rng.integers(-3, 4, size=(3, 2, 7)).astype(np.float32), -1)
    vals = rng.integers(-5, 6, size=(3, 2, 9)).astype(np.float32)
    for side in ("left", "right"):
        got = np.asarray(tf_function("searchsorted")(jnp.asarray(seq), jnp.asarray(vals),
                                                     side=side))
        want = np.stack([np.searchsorted(s, v, side=side) for s, v in
                         zip(seq.reshape(6, 7), vals.reshape(6, 9))]).reshape(vals.shape)
        np.testing.assert_array_equal(got, want)
        assert got.dtype == np.int32


def test_bincount_is_numpys():
    """Against NumPy's ``bincount`` (an independent reference), with weights, per row."""
    rng = np.random.default_rng(6)
    v = rng.integers(0, 7, size=(3, 8)).astype(np.int32)
    w = rng.normal(size=(3, 8)).astype(np.float32)
    got = tf_function("math.bincount")(jnp.asarray(v), weights=jnp.asarray(w), minlength=5,
                                       maxlength=5, axis=-1)
    want = np.stack([np.bincount(r[r < 5], wr[r < 5], minlength=5) for r, wr in zip(v, w)])
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6)


def test_gradients():
    """The weighted counts' gradient is the weights' (the sum of a bin's weights has
    gradient 1 for each weight in it); searchsorted's and the counts' indices are integers
    (no gradient), so a float cast of them passes a zero, finite gradient; STFT's
    magnitudes and the legacy resizes have finite, non-zero gradients."""
    v = jnp.asarray([[0, 2, 2, 5], [1, 1, 3, 0]], jnp.int32)
    bc = tf_function("math.bincount")
    g = jax.grad(lambda w: jnp.sum(bc(v, weights=w, minlength=4, maxlength=4, axis=-1)
                                   * jnp.arange(4.0)))(jnp.ones((2, 4)))
    np.testing.assert_array_equal(np.asarray(g), np.where(np.asarray(v) < 4, v, 0))
    ss = tf_function("searchsorted")
    x = jnp.asarray([[0.3, -1.0, 2.0, 0.7]])
    g = jax.grad(lambda x: jnp.sum(ss(jnp.sort(x), x).astype(jnp.float32) * x))(x)
    np.testing.assert_array_equal(np.asarray(g), np.asarray(ss(jnp.sort(x), x), np.float32))
    for name in ("spectra", "legacy_resize", "counts"):
        m, ref = load(name, "tf221")
        g = jax.jit(jax.grad(lambda x: jnp.sum(m.apply(m.params, x)[0])))(jnp.asarray(ref["x"]))
        assert np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).max() > 0, name


@pytest.mark.parametrize("name,shape", [("search", (2, 2, 6)), ("counts", (2, 2, 5)),
                                        ("spectra", (2, 2, 32)),
                                        ("legacy_resize", (2, 2, 5, 4, 3))])
def test_attribution_does_not_crash(name, shape):
    """Saliency, DeepLIFT and LRP through each classifier (integer buckets and counts
    cast to floats; STFT magnitudes; legacy resizes): finite maps of the input's shape."""
    import jaxsal

    m, ref = load(name, "tf221")
    head = m.with_output(0)
    x = jnp.asarray(ref["x"][:2])
    for method in (jaxsal.saliency, jaxsal.deeplift, jaxsal.lrp):
        a = np.asarray(method(head, x, [0, 2], reduce=None) if method is jaxsal.deeplift
                       else method(head, x, [0, 2]))
        assert a.shape[:1] == (2,) and np.isfinite(a).all(), method.__name__
    dl = np.asarray(jaxsal.deeplift(head, x, [0, 2], reduce=None))
    assert dl.shape == shape


def test_attribution_on_the_indices_is_zero():
    """``tf.searchsorted``'s indices are integers: scored through a float mean of them,
    saliency and LRP give zero, finite maps (as for ``tf.argsort``)."""
    import jaxsal

    m, ref = load("search", "tf221")
    head = m.with_output(5)  # the bucket of each value among constant edges
    assert head(jnp.asarray(ref["x"][:1])).dtype == jnp.int32

    def score(out):
        return out.astype(jnp.float32).mean(1)

    for method in (jaxsal.saliency, jaxsal.lrp):
        a = np.asarray(method(head, jnp.asarray(ref["x"][:2]), score))
        assert a.shape == (2, 6) and np.isfinite(a).all() and not a.any()


# ----------------------------------------------------------------- refused values
@pytest.mark.parametrize("name,layer,function,key,value,why", [
    ("search", "tf.searchsorted", "searchsorted", "side", "middle",
     "('left' or 'right', as in TF)"),
    ("search", "tf.searchsorted", "searchsorted", "out_type", "float32",
     "is not supported (supported: 'int32', 'int64'"),
    ("search", "tf.searchsorted", "searchsorted", "values", [[0.0, 1.0], [2.0, 3.0]],
     "of shape (2, 2) have 1 and 2 rows"),
    ("counts", "tf.math.bincount", "math.bincount", "maxlength", 6,
     "give minlength and maxlength equal"),
    ("counts", "tf.math.bincount_2", "math.bincount", "maxlength", None,
     "would depend on the values of a tensor"),
    ("counts", "tf.math.bincount_1", "math.bincount", "weights", [1.0, 2.0, 3.0, 4.0, 5.0],
     "with binary_output=True is not supported"),
    ("counts", "tf.math.bincount", "math.bincount", "axis", 1, "(None, 0 or -1, as in TF)"),
    ("counts", "tf.math.bincount", "math.bincount", "weights", [1.0, 2.0],
     "do not have the shape of arr"),
    ("legacy_resize", "tf.compat.v1.image.resize_bilinear",
     "compat.v1.image.resize_bilinear", "half_pixel_centers", True,
     "align_corners=True with half_pixel_centers=True"),
    ("legacy_resize", "tf.compat.v1.image.resize_area", "compat.v1.image.resize_area",
     "align_corners", True, "is not supported with area resizing"),
    ("legacy_resize", "tf.compat.v1.image.resize_images", "compat.v1.image.resize_images",
     "method", 4, "(0 bilinear, 1 nearest, 2 bicubic, 3 area"),
    ("legacy_resize", "tf.compat.v1.image.resize_bicubic", "compat.v1.image.resize_bicubic",
     "size", [0, 3], "is not two positive sizes"),
    ("spectra", "tf.signal.stft", "signal.stft", "window_fn", "my_window",
     "(the default Hann window, 'hann_window', 'hamming_window' or None)"),
    ("spectra", "tf.signal.stft", "signal.stft", "fft_length", 0, "must be positive"),
])
def test_unsupported_values_are_refused_at_load(name, layer, function, key, value, why):
    check_refused(name, layer, function, key, value, why)


def test_data_dependent_shapes_are_refused_with_the_reason():
    """``tf.unique`` / ``tf.unique_with_counts`` (as many values as there are distinct
    ones), ``tf.where`` without x and y (the indices of the true elements) and
    ``tf.math.bincount`` without a fixed number of bins have shapes that depend on the
    data: refused at load, naming the function and why."""
    for fn in ("unique", "unique_with_counts"):
        cfg = config("search")
        layer(cfg, "tf.sort")["config"]["function"] = fn
        with pytest.raises(UnsupportedLayerError, match=rf"tf\.{fn}, which cannot be "
                                                        r"imported: its output's shape "
                                                        r"depends on the data"):
            load_keras(D / "search_tf221.h5", config=cfg)
    cfg = config("search")
    node = layer(cfg, "tf.math.round")
    node["config"]["function"] = "where"
    with pytest.raises(KerasImportError, match=r"tf\.where: tf\.where\(condition\) without "
                                               r"x and y .* depends on the data"):
        load_keras(D / "search_tf221.h5", config=cfg)
