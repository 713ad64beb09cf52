"""tf.keras 2 ``TFOpLambda`` layers that a survey of about 240 commonly used ``tf.*`` calls
found untranslated: ``tf.math.bessel_i0/i1``, ``xdivy``, ``accumulate_n``, ``zero_fraction``,
``tf.nn.weighted_cross_entropy_with_logits``, ``log_poisson_loss``, ``tf.signal.fftshift /
ifftshift``, ``tf.reverse_sequence``, ``tf.identity_n``, ``tf.convert_to_tensor``,
``tf.linalg.adjoint``, ``triangular_solve``, ``cholesky_solve``, ``tensor_diag``, against
TensorFlow 2.12 and 2.21's outputs (tests/fixtures/keras2_tfops/make_tfops_survey.py: every
such layer's output compared; ``survey_calls``, TF's results and ``tf.GradientTape``
gradients of single calls); gradients and attribution through them; the values refused
at load, with the reason; and a function still without a translation, refused naming it."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model_import import KerasImportError, UnsupportedLayerError, load_keras
from tfops_helpers import (D, check_every_layer, check_finite_attribution, check_gradients,
                           check_refused, close_where_finite, config, layer, recorded_calls,
                           tf_function)

NAMES = ("survey", "survey_linalg")
TAGS = ("tf212", "tf221")


@pytest.mark.parametrize("tag", TAGS)
@pytest.mark.parametrize("name", NAMES)
def test_every_tf_function_layer_matches_tensorflow(name, tag):
    check_every_layer(name, tag, "versions_survey")


def _args(kw):
    """A recorded call's second tensor (``y``, ``logits``...) as an array, as a layer passes
    a tensor; the other keywords as recorded."""
    return {k: jnp.asarray(v, jnp.float32) if k in ("y", "logits", "log_input", "rhs") else v
            for k, v in kw.items()}


@pytest.mark.parametrize("tag", TAGS)
def test_single_calls_match_tensorflow(tag):
    """Each call of ``survey_calls_<tag>.npz`` against TF's result, within 1e-5 of the
    largest value (reorderings exactly): Bessel functions from -30 to 40, ``xdivy`` by 0,
    cross entropies of logits of +-100, Stirling's term on both sides of 1, triangular
    solves with the other triangle set, sequences reversed along either axis with lengths
    0 and full."""
    ref, spec = recorded_calls("survey", tag)
    assert len(spec) >= 17
    for case, fn, kw in spec:
        got = np.asarray(tf_function(fn)(jnp.asarray(ref[f"{case}__x"]), **_args(kw)))
        want = ref[case]
        assert got.shape == want.shape and got.dtype == want.dtype, (case, got.shape,
                                                                     want.shape)
        if fn in ("signal.fftshift", "signal.ifftshift", "reverse_sequence", "linalg.adjoint",
                  "linalg.tensor_diag"):
            np.testing.assert_array_equal(got, want, err_msg=case)
        else:  # (xdivy by 0: infinities in the same places)
            close_where_finite(got, want, case, 1e-5)


@pytest.mark.parametrize("tag", TAGS)
def test_gradients_match_tensorflow(tag):
    """``jax.grad`` of each call's sum against ``tf.GradientTape``'s, within 1e-4 of the
    largest (``xdivy``'s 0 where ``x`` is 0 and infinite where only ``y`` is, as TF). One
    difference: TF's gradient of ``log_poisson_loss(compute_full_loss=True)`` is NaN at
    targets of 0 (its Stirling term, log 0 there, is masked by a ``where`` whose other
    branch's gradient is NaN); here it is the gradient of the loss it computes, finite."""
    ref, spec = recorded_calls("survey", tag)
    checked = 0
    for case, fn, kw in spec:
        if f"grad__{case}" not in ref.files:
            continue
        impl = tf_function(fn)
        g = jax.grad(lambda x: jnp.sum(impl(x, **_args(kw))))(jnp.asarray(ref[f"{case}__x"]))
        want, g = ref[f"grad__{case}"], np.asarray(g)
        if case == "lpl":
            assert np.isnan(want).sum() == 2 and np.isfinite(g).all()
            want = np.where(np.isnan(want), g, want)
        close_where_finite(g, want, case, 1e-4)
        checked += 1
    assert checked >= 15


def test_the_fixtures_exercise_what_they_are_for():
    """Zeros divided by zeros; a sequence length 0 and one of the whole axis; targets below
    and above 1 for Stirling's term."""
    ref, _ = recorded_calls("survey", "tf221")
    x = ref["xdivy0__x"]
    assert (x == 0).any() and (ref["xdivy0"][x == 0] == 0).all()
    assert (np.abs(ref["lpl__x"]) > 1).any() and (np.abs(ref["lpl__x"]) < 1).any()
    m = np.load(D / "survey_tf221.expected.npz")
    assert 0 < float(m["act__tf.math.zero_fraction"]) < 1


def test_gradients_through_the_models():
    for name in NAMES:
        check_gradients(name)


@pytest.mark.parametrize("name,shape", [("survey", (2, 2, 4, 5)), ("survey_linalg", (2, 2, 9))])
def test_attribution_gives_finite_maps(name, shape):
    """Saliency, DeepLIFT and LRP through each classifier: finite maps of the input's
    shape (the survey's classifier reads ``weighted_cross_entropy_with_logits`` of two
    tensors, which has no DeepLIFT rule of its own: its sums are not checked)."""
    check_finite_attribution(name, shape)



def test_reverse_sequence_by_hand():
    """The first ``length`` elements of each row reversed, the rest kept, by NumPy."""
    x = np.arange(24, dtype=np.float32).reshape(2, 4, 3)
    got = np.asarray(tf_function("reverse_sequence")(jnp.asarray(x), seq_lengths=[3, 1],
                                                     seq_axis=1, batch_axis=0))
    want = x.copy()
    want[0, :3] = x[0, 2::-1]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name,layer,function,key,value,why", [
    ("survey", "tf.reverse_sequence", "reverse_sequence", "seq_axis", None,
     "seq_axis=None is not supported"),
    ("survey", "tf.reverse_sequence_1", "reverse_sequence", "seq_axis", 2,
     "is batch_axis (TF refuses it too)"),
])
def test_unsupported_values_are_refused_at_load(name, layer, function, key, value, why):
    check_refused(name, layer, function, key, value, why)


def test_untranslated_functions_are_refused_naming_them():
    """A function the survey found and that is still untranslated (``tf.linalg.expm``) is
    refused at load, naming the layer and the function; ``tf.meshgrid``, whose other
    tensors tf.keras does not record, with that reason."""
    cfg = config("survey_linalg")
    layer(cfg, "tf.linalg.adjoint")["config"]["function"] = "linalg.expm"
    with pytest.raises(UnsupportedLayerError,
                       match=r"layer 'tf\.linalg\.adjoint'.*TensorFlow function tf\.linalg\."
                             r"expm, which has no JAX translation here"):
        load_keras(D / "survey_linalg_tf221.h5", config=cfg)
    layer(cfg, "tf.linalg.adjoint")["config"]["function"] = "meshgrid"
    with pytest.raises(KerasImportError, match=r"tf\.meshgrid, which cannot be imported: "
                                               r"tf\.keras records only its first tensor"):
        load_keras(D / "survey_linalg_tf221.h5", config=cfg)
