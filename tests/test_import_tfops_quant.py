"""tf.keras 2 ``TFOpLambda`` layers of fake quantization, ``fused_batch_norm`` at inference,
complex parts and ``tf.signal.inverse_stft``, ``dilation2d`` / ``erosion2d``, histograms,
``in_top_k``, ``set_diag`` / ``cholesky`` / ``solve`` / ``eigvalsh`` / singular values, the
cross entropies and TF 1's ``crop_and_resize`` / ``resize_image_with_pad``, against
TensorFlow 2.12 and 2.21's outputs (tests/fixtures/keras2_tfops/make_tfops_quant.py: every
such layer's output compared; ``quant_calls``, TF's results and ``tf.GradientTape``
gradients of single calls on edge cases); gradients and attribution through them; and the
values refused at load, with the reason."""


import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model_import import KerasImportError, load_keras
from tfops_helpers import (D, check_every_layer, check_finite_attribution, check_refused,
                           close_where_finite, config, layer, load, recorded_calls,
                           tf_function)

NAMES = ("quant", "fused_bn", "complex", "morph", "linalg", "scores", "crops_v1", "qdq",
         "fused_nchw")
TAGS = ("tf212", "tf221")


@pytest.mark.parametrize("tag", TAGS)
@pytest.mark.parametrize("name", NAMES)
def test_every_tf_function_layer_matches_tensorflow(name, tag):
    check_every_layer(name, tag, "versions_quant")


@functools.partial(jax.jit, static_argnums=(0, 1))
def _quantizations(keys, calls, xs, los, his):
    """Each recorded call ``(function, keywords as JSON)`` of ``calls`` on its input of ``xs``
    compiled as a model runs under jaxsal's methods: its range ``keys`` (``min``/``max``,
    ``input_min``/``input_max``) the arguments ``los``/``his`` (traced, as a model's weights
    are), and its range constant as recorded; and the gradients of the first's sum with
    respect to the input and the range. One program for every call of a fixture."""
    out = []
    for (fn, kw), x, lo, hi in zip(calls, xs, los, his):
        impl, kw = tf_function(fn), json.loads(kw)
        y, pull = jax.vjp(lambda x, lo, hi: impl(x, **{**kw, keys[0]: lo, keys[1]: hi}),
                          x, lo, hi)
        out.append((y, impl(x, **kw), *pull(jnp.ones_like(y))))
    return out


@functools.lru_cache(maxsize=None)
def compiled_quantizations(name):
    """``{case: (traced, constant, grad, grad_min, grad_max)}`` of the fake quantizations
    (``quant``) or ``quantize_and_dequantize`` calls (``qdq``) of ``<name>_calls_<tag>.npz``
    for both TF versions (the same call on the same input in both; :func:`_quantizations`:
    one program, run once for the tests of outputs and gradients)."""
    cases, xs = {}, {}
    for tag in TAGS:
        ref, spec = recorded_calls(name, tag)
        for case, fn, kw in spec:
            if "quantiz" in fn:
                assert cases.setdefault(case, (fn, kw)) == (fn, kw), case
                x = xs.setdefault(case, ref[f"{case}__x"])
                np.testing.assert_array_equal(x, ref[f"{case}__x"], err_msg=case)
    keys = ("min", "max") if name == "quant" else ("input_min", "input_max")
    los, his = ([np.asarray(kw[k], np.float32) for _, kw in cases.values()] for k in keys)
    got = _quantizations(keys, tuple((fn, json.dumps(kw)) for fn, kw in cases.values()),
                         list(xs.values()), los, his)
    return {case: tuple(np.asarray(v) for v in g) for case, g in zip(cases, got)}


@pytest.mark.parametrize("tag", TAGS)
def test_single_calls_match_tensorflow(tag):
    """Each recorded call of ``quant_calls_<tag>.npz`` against TF's result: integers,
    booleans and fake quantizations exactly (also compiled, with the range traced or
    constant: :func:`compiled_quantizations`), floats within 1e-5 of the largest value, NaN
    and infinities in the same places; complex parts and angles of ``-1 +- 0j`` exactly as
    TF."""
    ref, spec = recorded_calls("quant", tag)
    assert len(spec) >= 45
    compiled = compiled_quantizations("quant")
    for case, fn, kw in spec:
        x = ref[f"{case}__x"]
        got = tf_function(fn)(jnp.asarray(x), **kw)
        wants = ([ref[f"{case}__{i}"] for i in range(3)] if f"{case}__0" in ref.files
                 else [ref[case]])
        gots = list(got) if isinstance(got, tuple) else [got]
        assert len(gots) == len(wants), case
        for g, want in zip(gots, wants):
            g = np.asarray(g)
            assert g.shape == want.shape, (case, g.shape, want.shape)
            if want.dtype.kind == "c":
                assert g.dtype == np.complex64, case
                np.testing.assert_array_equal(g, want, err_msg=case)
            elif "fake_quant" in fn:
                assert g.dtype == np.float32, case
                for how, v in zip(("eager", "traced range", "constant range"),
                                  (g, *compiled[case][:2])):
                    off = v != want
                    assert not off.any(), (case, how, x[off], v[off], want[off])
            elif want.dtype.kind == "f":
                assert g.dtype == np.float32, case
                close_where_finite(g, want, case, 1e-5)
            else:  # counts and bins (int64 computed as int32), booleans: exactly
                assert g.dtype.kind == want.dtype.kind, case
                np.testing.assert_array_equal(g, want, err_msg=case)


@pytest.mark.parametrize("tag", TAGS)
def test_gradients_match_tensorflow(tag):
    """The gradient of the sum of each float call's (first) output with respect to its
    input, as ``tf.GradientTape`` gave it: fake quantization's straight-through gradient
    (1 inside the nudged range, ends included, 0 outside) exactly, and with a tensor range
    the gradients of its ends (the counts of values below and above it, per channel),
    eagerly and compiled with the range traced (:func:`compiled_quantizations`); the others
    within 1e-4 of the largest (morphology away from ties: the fixtures' values are
    distinct)."""
    ref, spec = recorded_calls("quant", tag)
    compiled = compiled_quantizations("quant")
    checked = 0
    for case, fn, kw in spec:
        if f"grad__{case}" not in ref.files:
            continue
        x = jnp.asarray(ref[f"{case}__x"])
        impl = tf_function(fn)
        if "_vars" in fn:
            def total(x, lo, hi):
                return jnp.sum(impl(x, **{**kw, "min": lo, "max": hi}))

            lo, hi = (jnp.asarray(kw[k], jnp.float32) for k in ("min", "max"))
            gx, glo, ghi = jax.grad(total, argnums=(0, 1, 2))(x, lo, hi)
            for lo_hi in ((glo, ghi), compiled[case][3:]):
                np.testing.assert_array_equal(np.asarray(lo_hi[0]), ref[f"grad_min__{case}"],
                                              case)
                np.testing.assert_array_equal(np.asarray(lo_hi[1]), ref[f"grad_max__{case}"],
                                              case)
        else:
            def first(x):
                y = impl(x, **kw)
                y = y[0] if isinstance(y, tuple) else y
                return jnp.sum(jnp.where(jnp.isnan(y), 0.0, y))

            gx = jax.grad(first)(x)
        want = ref[f"grad__{case}"]
        gx = np.asarray(gx)
        if "fake_quant" in fn:
            np.testing.assert_array_equal(gx, want, err_msg=case)
            np.testing.assert_array_equal(compiled[case][2], want, err_msg=f"{case} compiled")
            assert want.any() and not want.all(), case  # inside and outside the range
        else:  # (a fused batch norm's variance and epsilon of 0: infinite gradients)
            close_where_finite(gx, want, case, 1e-4)
        checked += 1
    assert checked >= 25


def test_the_fixtures_exercise_what_they_are_for():
    """Values beyond the range and on half steps; a fused batch norm's variance 0 with
    epsilon 0 (infinities: TF does not raise epsilon); values at bin edges and outside the
    histogram's range; in_top_k ties and non-finite rows; angles of -1 +- 0j."""
    ref, _ = recorded_calls("quant", "tf221")
    assert not np.isfinite(ref["fbn__0"][..., 0]).any()
    assert np.isfinite(ref["fbn__0"][..., 1]).all()
    assert ref["hist_bins"].min() == 0 and ref["hist_bins"].max() == 4
    assert ref["angle_c"][0] == np.float32(np.pi) and ref["angle_c"][1] == -np.float32(np.pi)
    assert ref["angle_r"][1] == 0  # -0.0
    assert not ref["in_top_k_4"][2] and not ref["in_top_k_4"][3]  # inf, NaN rows
    assert ref["in_top_k_1"][1] and ref["in_top_k_1"][0]  # ties
    q = np.load(D / "quant_tf221.expected.npz")
    h = q["act__tf.math.multiply"]
    assert (h > 6).any() or (h < -6).any() or (h > 1.5).any()


def test_fake_quantization_by_hand():
    """Against NumPy by hand: 2 bits on [0, 3] (levels 0, 1, 2, 3: rounding half up, as
    TF), ``narrow_range`` dropping the lowest level, a range without 0 moved to start at 0
    (TF's nudge), and a range per channel."""
    fq = tf_function("quantization.fake_quant_with_min_max_args")
    x = jnp.asarray([-1.0, 0.0, 0.49, 0.5, 1.5, 2.6, 3.0, 4.0])
    np.testing.assert_array_equal(np.asarray(fq(x, min=0.0, max=3.0, num_bits=2)),
                                  [0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 3.0, 3.0])
    # narrow: levels 1..3 on [-1.5, 1.5], step 1.5: -1.5, 0, 1.5
    np.testing.assert_array_equal(
        np.asarray(fq(jnp.asarray([-2.0, -0.8, 0.7, 0.8, 2.0]), min=-1.5, max=1.5,
                      num_bits=2, narrow_range=True)), [-1.5, -1.5, 0.0, 1.5, 1.5])
    # [1, 4] on 2 bits: step 1, moved to [0, 3]
    np.testing.assert_array_equal(np.asarray(fq(jnp.asarray([-0.4, 0.6, 3.5]), min=1.0,
                                                max=4.0, num_bits=2)), [0.0, 1.0, 3.0])
    pc = tf_function("quantization.fake_quant_with_min_max_vars_per_channel")
    y = pc(jnp.asarray([[0.4, 0.4], [2.9, 2.9]]), min=[0.0, 0.0], max=[3.0, 0.3],
           num_bits=2)
    np.testing.assert_allclose(np.asarray(y), [[0.0, 0.4 - 0.1], [3.0, 0.3]], atol=1e-6)


def test_morphology_by_hand():
    """Dilation: the maximum of input + filter over the window (SAME: -inf beyond the
    edges); erosion: the minimum of input - filter, reflected, by NumPy loops."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 4, 5, 2)).astype(np.float32)
    k = rng.normal(size=(2, 3, 2)).astype(np.float32)
    kw = dict(filters=k.tolist(), strides=[1, 1, 1, 1], padding="SAME", data_format="NHWC",
              dilations=[1, 1, 1, 1])
    dil = np.asarray(tf_function("nn.dilation2d")(jnp.asarray(x), **kw))
    ero = np.asarray(tf_function("nn.erosion2d")(jnp.asarray(x), **kw))
    pad = np.full((1, 5, 7, 2), -np.inf, np.float32)
    pad[:, 0:4, 1:6] = x  # pads: rows (0, 1), columns (1, 1)
    want_d = np.full_like(x, -np.inf)
    for i in range(2):
        for j in range(3):
            want_d = np.maximum(want_d, pad[:, i:i + 4, j:j + 5] + k[i, j])
    np.testing.assert_allclose(dil, want_d, rtol=1e-6)
    padn = np.full((1, 5, 7, 2), np.inf, np.float32)
    padn[:, 0:4, 1:6] = x  # the same pads
    want_e = np.full_like(x, np.inf)
    for i in range(2):
        for j in range(3):
            want_e = np.minimum(want_e, padn[:, i:i + 4, j:j + 5] - k[1 - i, 2 - j])
    np.testing.assert_allclose(ero, want_e, rtol=1e-6)


def test_histogram_is_numpys_away_from_edges():
    """Against NumPy's ``histogram`` (an independent reference) for values away from bin
    edges, with values outside the range counted in the end bins, as TF does."""
    rng = np.random.default_rng(4)
    v = rng.uniform(-2, 3, size=200).astype(np.float32)
    got = np.asarray(tf_function("histogram_fixed_width")(jnp.asarray(v),
                                                          value_range=[-1.0, 2.0], nbins=6))
    want, _ = np.histogram(np.clip(v, -1.0, 1.999), bins=6, range=(-1.0, 2.0))
    np.testing.assert_array_equal(got, want)


def test_gradients_through_the_models():
    """Finite, non-zero gradients of each classifier through the translated functions
    (fake quantization passes the values inside its range straight through; the complex
    parts, inverse STFT and Cholesky factor; morphology; cross entropies)."""
    for name in NAMES:
        m, ref = load(name, "tf221")
        g = jax.jit(jax.grad(lambda x: jnp.sum(m.apply(m.params, x)[0])))(jnp.asarray(ref["x"]))
        assert np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).max() > 0, name


@pytest.mark.parametrize("name,shape", [("quant", (2, 2, 8)), ("fused_bn", (2, 2, 5, 5, 3)),
                                        ("complex", (2, 2, 32)), ("morph", (2, 2, 6, 6, 3)),
                                        ("linalg", (2, 2, 9)), ("scores", (2, 2, 8)),
                                        ("crops_v1", (2, 2, 6, 5, 3)), ("qdq", (2, 2, 8)),
                                        ("fused_nchw", (2, 2, 5, 4, 3))])
def test_attribution_gives_finite_maps(name, shape):
    """Saliency, DeepLIFT and LRP through each classifier: finite maps of the input's
    shape."""
    check_finite_attribution(name, shape)


# ----------------------------------------------------------------- refused values
@pytest.mark.parametrize("name,layer,function,key,value,why", [
    ("quant", "tf.quantization.fake_quant_with_min_max_args",
     "quantization.fake_quant_with_min_max_args", "num_bits", 1, "(2 to 16, as TF requires)"),
    ("quant", "tf.quantization.fake_quant_with_min_max_args_1",
     "quantization.fake_quant_with_min_max_args", "max", -1.0, "min must be below max"),
    ("quant", "tf.quantization.fake_quant_with_min_max_vars_per_channel",
     "quantization.fake_quant_with_min_max_vars_per_channel", "min", [0.0, 1.0],
     "expected shape (8,) (one value per channel of the last axis"),
    ("fused_bn", "tf.compat.v1.nn.fused_batch_norm", "compat.v1.nn.fused_batch_norm",
     "is_training", True, "each example's output depends on the others in its batch"),
    ("fused_bn", "tf.compat.v1.nn.fused_batch_norm", "compat.v1.nn.fused_batch_norm",
     "mean", None, "without mean= and variance="),
    ("fused_bn", "tf.compat.v1.nn.fused_batch_norm", "compat.v1.nn.fused_batch_norm",
     "data_format", "NCDHW", "('NHWC', 'NCHW', 'NDHWC', 'NCDHW' of inputs of rank 4 or 5)"),
    ("qdq", "tf.quantization.quantize_and_dequantize_v2",
     "quantization.quantize_and_dequantize_v2", "num_bits", 62,
     "(1 to 61 with signed_input=True, as TF requires)"),
    ("qdq", "tf.quantization.quantize_and_dequantize_v2_1",
     "quantization.quantize_and_dequantize_v2", "round_mode", "HALF_DOWN",
     "('HALF_TO_EVEN', 'HALF_UP', as in TF)"),
    ("qdq", "tf.quantization.quantize_and_dequantize_v2",
     "quantization.quantize_and_dequantize_v2", "input_min", 2.0,
     "input_min must not be above input_max (TF refuses it too)"),
    ("qdq", "tf.quantization.quantize_and_dequantize_v2_4",
     "quantization.quantize_and_dequantize_v2", "input_min", [0.0, 0.0],
     "expected () or (8,) (a scalar, or one value per slice of axis)"),
    ("qdq", "tf.histogram_fixed_width", "histogram_fixed_width", "value_range",
     [0.0, 1.0, 2.0], "is not two values lo < hi"),
    ("complex", "tf.signal.inverse_stft", "signal.inverse_stft", "window_fn",
     "inverse_stft_window_fn_inner", "without its frame_step and forward window"),
    ("morph", "tf.nn.dilation2d", "nn.dilation2d", "strides", [2, 1, 1, 1],
     "([1, height, width, 1], as TF requires)"),
    ("morph", "tf.nn.erosion2d", "nn.erosion2d", "filters", [[[1.0]]],
     "expected (height, width, 3)"),
    ("linalg", "tf.linalg.svd", "linalg.svd", "compute_uv", True,
     "each singular vector's sign is the SVD routine's choice"),
    ("linalg", "tf.linalg.set_diag", "linalg.set_diag", "k", 1, "(0, the main diagonal)"),
    ("scores", "tf.histogram_fixed_width", "histogram_fixed_width", "value_range",
     [1.0, 1.0], "is not two values lo < hi"),
    ("scores", "tf.histogram_fixed_width_bins", "histogram_fixed_width_bins", "nbins", 0,
     "must be positive"),
    ("crops_v1", "tf.compat.v1.image.crop_and_resize", "compat.v1.image.crop_and_resize",
     "box_indices", [0, 0, 0], "give exactly one of box_ind and box_indices"),
])
def test_unsupported_values_are_refused_at_load(name, layer, function, key, value, why):
    check_refused(name, layer, function, key, value, why)


def test_eigenvectors_are_refused_with_the_reason():
    """``tf.linalg.eigh``'s eigenvectors have no sign TF and JAX agree on: refused at load,
    naming the function and the translated ``eigvalsh``."""
    cfg = config("linalg")
    layer(cfg, "tf.linalg.eigvalsh")["config"]["function"] = "linalg.eigh"
    with pytest.raises(KerasImportError, match=r"tf\.linalg\.eigh, which cannot be imported: "
                                               r"each eigenvector's sign .*eigvalsh"):
        load_keras(D / "linalg_tf221.h5", config=cfg)


# ------------------------------------- quantize_and_dequantize, histograms of a tensor range
def _qdq_args(kw):
    """The recorded keywords as a call passes them: the histograms' ``tensor_range`` as a
    tensor (a range computed in the model), the other values as tf.keras records them."""
    kw = dict(kw)
    if kw.pop("tensor_range", False):
        kw["value_range"] = jnp.asarray(kw["value_range"], jnp.float32)
    return kw


@pytest.mark.parametrize("tag", TAGS)
def test_quantize_and_dequantize_calls_match_tensorflow(tag):
    """Each call of ``qdq_calls_<tag>.npz`` against TF's result, exactly:
    ``quantize_and_dequantize_v2`` and the deprecated ``quantize_and_dequantize`` on a grid
    of half steps, at and beyond the range's ends, for 1 to 16 bits, signed or not, narrow
    or not, both rounding modes, with the range given or the tensor's own (per slice of
    ``axis`` too; a range per slice given: TF 2.12 only, 2.21's kernel refuses it); and
    histograms whose ``value_range`` is a tensor, at bin edges and outside the range.
    ``quantize_and_dequantize`` also compiled, with the range traced or constant
    (:func:`compiled_quantizations`)."""
    ref, spec = recorded_calls("qdq", tag)
    assert len(spec) >= 35 + (tag == "tf212")
    compiled = compiled_quantizations("qdq")
    for case, fn, kw in spec:
        x = ref[f"{case}__x"]
        got = np.asarray(tf_function(fn)(jnp.asarray(x), **_qdq_args(kw)))
        want = ref[case]
        assert got.shape == want.shape and got.dtype.kind == want.dtype.kind, case
        np.testing.assert_array_equal(got, want, err_msg=case)
        if fn.startswith("quantization."):
            for how, v in zip(("traced range", "constant range"), compiled[case][:2]):
                np.testing.assert_array_equal(v, want, err_msg=f"{case} compiled, {how}")


@pytest.mark.parametrize("tag", TAGS)
def test_quantize_and_dequantize_gradients_match_tensorflow(tag):
    """``jax.grad`` against ``tf.GradientTape``, exactly: ``quantize_and_dequantize_v2``
    passes the gradient where ``input_min <= x <= input_max`` (the range as given, ends
    included, also with ``range_given=False``, as TF's registered gradient does) and 0
    elsewhere, and gives the range's ends 0; the deprecated ``quantize_and_dequantize``
    passes it everywhere; also compiled with the range traced
    (:func:`compiled_quantizations`). Histograms: no gradient (zero)."""
    ref, spec = recorded_calls("qdq", tag)
    compiled = compiled_quantizations("qdq")
    checked = 0
    for case, fn, kw in spec:
        x = jnp.asarray(ref[f"{case}__x"])
        impl = tf_function(fn)
        if fn.startswith("histogram"):
            def count(x, kw=kw):
                return jnp.sum(impl(x, **_qdq_args(kw)).astype(jnp.float32))

            assert not np.asarray(jax.grad(count)(x)).any(), case
            continue

        def total(x, lo, hi, kw=kw):
            return jnp.sum(impl(x, **{**kw, "input_min": lo, "input_max": hi}))

        lo, hi = (jnp.asarray(kw[k], jnp.float32) for k in ("input_min", "input_max"))
        gx, glo, ghi = jax.grad(total, argnums=(0, 1, 2))(x, lo, hi)
        for g in (gx, glo, ghi), compiled[case][2:]:
            np.testing.assert_array_equal(np.asarray(g[0]), ref[f"grad__{case}"], case)
            if f"grad_min__{case}" in ref.files:
                np.testing.assert_array_equal(np.asarray(g[1]), ref[f"grad_min__{case}"], case)
                np.testing.assert_array_equal(np.asarray(g[2]), ref[f"grad_max__{case}"], case)
        checked += 1
    assert checked >= 25


def test_quantize_and_dequantize_fixtures_exercise_what_they_are_for():
    """TF's straight-through gradient is 0 beyond the given range and 1 at its ends; the
    deprecated function's is 1 everywhere; rounding half up and half to even differ on
    the fixture's grid; the histograms' tensor ranges put values at and outside the edges."""
    ref, _ = recorded_calls("qdq", "tf221")
    g = ref["grad__qdq_3sT_-1.0_1.0_given"]
    x = ref["qdq_3sT_-1.0_1.0_given__x"]
    assert (g[(x < -1) | (x > 1)] == 0).all() and (g[(x >= -1) & (x <= 1)] == 1).all()
    assert (ref["grad__qdq1_4sT_0.0_0.0_data"] == 1).all()
    assert (ref["qdq_3sT_-1.0_1.0_given"] != ref["qdq_3sU_-1.0_1.0_given"]).any()
    assert ref["hist_bins_t0"].min() == 0 and ref["hist_bins_t0"].max() == 4


def test_quantize_and_dequantize_by_hand():
    """Against NumPy by hand: 3 signed bits on [-1, 1] (grid -4..3: the scale 3 from the
    max side, so the range becomes [-4/3, 1]), half to even and half up; unsigned 3 bits on
    [0, 1.5] (scale 7 / 1.5); the tensor's own range (no clamp)."""
    f = tf_function("quantization.quantize_and_dequantize_v2")
    x = jnp.asarray([-3.0, -1.2, -0.5, 0.5, 1.0 / 6, 0.2, 2.0])
    got = f(x, input_min=-1.0, input_max=1.0, num_bits=3, range_given=True)
    want = np.asarray([-4, -4, -2, 2, 0, 1, 3], np.float32) / 3  # -1.5 and 1.5: to even
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)
    up = f(x, input_min=-1.0, input_max=1.0, num_bits=3, range_given=True, round_mode="HALF_UP")
    np.testing.assert_allclose(np.asarray(up), np.asarray([-4, -4, -1, 2, 1, 1, 3]) / 3,
                               rtol=1e-6)
    u = f(x, input_min=0.0, input_max=1.5, num_bits=3, signed_input=False, range_given=True)
    want = np.round(np.clip(np.asarray(x), 0, 1.5) * (7 / 1.5)) / (7 / 1.5)
    np.testing.assert_allclose(np.asarray(u), want, rtol=1e-6)
    own = f(x, input_min=0.0, input_max=0.0, num_bits=3)  # [-3, 2]: scale 4/3 from the min
    np.testing.assert_allclose(np.asarray(own), np.round(np.asarray(x) * 4 / 3) * 0.75,
                               rtol=1e-6)


def test_fused_batch_norm_channels_first_is_channels_last_transposed():
    """``data_format="NCHW"`` (and ``"NCDHW"``) give the channels-last result with the
    channel axis moved to 1."""
    f = tf_function("compat.v1.nn.fused_batch_norm")
    rng = np.random.default_rng(9)
    kw = dict(scale=[1.5, 0.5], offset=[0.1, -0.2], mean=[0.2, -0.1], variance=[0.5, 2.0],
              is_training=False)
    for shape in ((2, 3, 4, 2), (2, 3, 2, 4, 2)):
        x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
        last = f(x, **kw, data_format="NHWC" if len(shape) == 4 else "NDHWC")[0]
        first = f(jnp.moveaxis(x, -1, 1), **kw,
                  data_format="NCHW" if len(shape) == 4 else "NCDHW")[0]
        np.testing.assert_allclose(np.asarray(jnp.moveaxis(first, 1, -1)), np.asarray(last),
                                   rtol=1e-6)


def test_histogram_of_a_tensor_range_is_the_constant_ranges():
    """A ``value_range`` computed in the model (exact comparisons with the edges) counts as
    the constant range does (TF's edges found by bisection in double), on values at, just
    below and just above every edge (float32 neighbours) and random ones, for ranges whose
    step is exact in double and ones whose step is not."""
    f = tf_function("histogram_fixed_width")
    # one program per bin count, both orders of the values through it
    compiled = jax.jit(lambda x, r, n: f(x, value_range=r, nbins=n), static_argnums=2)
    rng = np.random.default_rng(11)
    for lo, hi, n in ((-1.0, 1.0, 5), (-0.65, 1.3, 7), (0.1, 0.7, 3), (-3.0, 5.0, 16),
                      (1e-3, 2.5e3, 100), (-2.0, -1.5, 9)):
        edges = lo + (hi - lo) * np.arange(n + 1) / n
        e32 = edges.astype(np.float32)
        # 503 values in every case (the edges' 3 (n + 1), at least 200 random ones): the
        # operations run one by one, each compiled per shape, are compiled once for them all
        v = np.concatenate([e32, np.nextafter(e32, np.float32(np.inf)),
                            np.nextafter(e32, np.float32(-np.inf)),
                            rng.uniform(lo - 1, hi + 1, 503 - 3 * (n + 1)).astype(np.float32)])
        for values in (v, v[::-1]):
            want = np.asarray(f(jnp.asarray(values), value_range=[lo, hi], nbins=n))
            got = np.asarray(f(jnp.asarray(values), nbins=n,
                               value_range=jnp.asarray([lo, hi], jnp.float32)))
            np.testing.assert_array_equal(got, want, err_msg=str((lo, hi, n)))
            bins = compiled(jnp.asarray(values), jnp.asarray([lo, hi], jnp.float32), n)
            np.testing.assert_array_equal(np.asarray(bins), want)  # compiled: the same
